#!/usr/bin/env python
"""Bundle a trained AutoencoderLite folder into the package, as ``diffusers_litevae.pretrained_path(NAME)``.

Loads the model folder (``config.json`` + weights, as written by ``save_pretrained`` or ``litevae distill``), casts
the weights to float16 (half the size; load with ``torch_dtype=torch.float32`` to compute in float32) and writes
``config.json`` + ``diffusion_pytorch_model.safetensors`` into ``src/diffusers_litevae/pretrained/NAME/``, with the
run's training record (``distillation.json`` or ``training.json``) and ``curve.png`` when the folder has them, and
copies of any extra files (licences). The folder's previous contents are replaced.

With ``--eval_image_dir`` it then measures the bundled float16 folder itself with ``litevae eval`` (by default at
256 px centre crops, 512 px centre crops and whole images, ``--no_resize``, against the ``--compare`` models) and
writes the model card (``README.md``) from that evaluation: the card quotes exactly the command that was run.
``--card_only`` does the measuring and the card for the folder already bundled, without touching its weights.

Bundle a new model and write its card, one command (what ships as ``litevae-s-taef2``)::

    python conversion/bundle_pretrained.py runs/litevae-s-taef2 --name litevae-s-taef2 \\
        --extra_file src/diffusers_litevae/pretrained/taef2/LICENSE:LICENSE-TAEF2 \\
        --eval_image_dir ../shared/data/kodak24 --compare taef2 --license mit \\
        --teacher_description "TAEF2, the Tiny AutoEncoder for FLUX.2 by Ollin Boer Bohan, MIT licence"

Re-measure the bundled model and regenerate its card (the weights stay as they are)::

    python conversion/bundle_pretrained.py --card_only --name litevae-s-taef2 \\
        --eval_image_dir ../shared/data/kodak24 --compare taef2 --license mit \\
        --teacher_description "TAEF2, the Tiny AutoEncoder for FLUX.2 by Ollin Boer Bohan, MIT licence"

``--metrics SUMMARY.json`` writes the card from an evaluation already run on the bundled folder instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

PACKAGE_PRETRAINED = Path(__file__).resolve().parents[1] / "src" / "diffusers_litevae" / "pretrained"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
RESERVED = {"config.json", WEIGHTS_NAME, "__init__.py"}
# The sizes users encode at, as the card reports them: 256 px and 512 px centre crops, and whole images.
DEFAULT_EVAL_RESOLUTIONS = "256,512,native"

__all__ = ["DEFAULT_EVAL_RESOLUTIONS", "build_parser", "bundle_model", "evaluate_bundle", "main", "write_card"]


def bundle_model(
    model_dir: str | os.PathLike,
    name: str,
    readme: str | os.PathLike | None = None,
    extra_files: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike] | None = None,
    output_root: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float16,
    subfolder: str | None = None,
) -> Path:
    """Write an ``AutoencoderLite`` folder as a bundled model ``output_root/name``.

    Args:
        model_dir: an ``AutoencoderLite`` folder (``config.json`` + weights; any stored dtype).
        name: the bundled name (a folder name such as ``"litevae-s-taef2"``; not ``"samples"``).
        readme: a model card, copied as ``README.md`` (or write one from an evaluation: :func:`write_card`).
        extra_files: more files to copy: ``{name in the bundle: source path}``, or source paths kept under their own
            names (e.g. ``{"LICENSE-TAEF2": ".../taef2/LICENSE"}``).
        output_root: where bundled folders live (default: the package's ``pretrained/`` folder in this checkout).
        dtype: dtype of the stored weights (float16 by default).
        subfolder: subfolder of ``model_dir`` holding the VAE (e.g. ``"vae"`` of a saved pipeline).

    Returns:
        The written folder. Its previous contents are removed first; ``distillation.json`` / ``training.json`` and
        ``curve.png`` are copied from ``model_dir`` when it has them.
    """
    from diffusers_litevae import AutoencoderLite
    from diffusers_litevae.hub.push import copy_training_record

    if not name or name != Path(name).name or name.startswith(("_", ".")) or name == "samples":
        raise ValueError(f"name must be a plain folder name (not 'samples', no '/'), got {name!r}.")
    copies: dict[str, Path] = {}
    if readme is not None:
        copies["README.md"] = Path(readme)
    if isinstance(extra_files, Mapping):
        copies.update({str(dest): Path(src) for dest, src in extra_files.items()})
    else:
        copies.update({Path(src).name: Path(src) for src in extra_files or ()})
    for dest, src in copies.items():
        if dest in RESERVED or dest != Path(dest).name:
            raise ValueError(f"extra file name {dest!r} is reserved or not a plain file name.")
        if not src.is_file():
            raise FileNotFoundError(f"extra file not found: {str(src)!r}.")

    vae = AutoencoderLite.from_pretrained(os.fspath(model_dir), subfolder=subfolder, torch_dtype=torch.float32)
    vae = torch.nn.Module.to(vae.eval(), dtype=dtype)
    target = Path(output_root) if output_root is not None else PACKAGE_PRETRAINED
    target = target / name
    with tempfile.TemporaryDirectory() as scratch:
        vae.save_pretrained(scratch, safe_serialization=True)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        config = json.loads((Path(scratch) / "config.json").read_text())
        config.pop("_name_or_path", None)  # a path on the machine that bundled it: meaningless elsewhere
        (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(Path(scratch) / WEIGHTS_NAME, target / WEIGHTS_NAME)
    copy_training_record(model_dir if subfolder is None else Path(model_dir) / subfolder, target)
    for dest, src in copies.items():
        shutil.copyfile(src, target / dest)

    # Read it back: the bundle must load and match the source weights (up to the dtype cast).
    reloaded = AutoencoderLite.from_pretrained(os.fspath(target), torch_dtype=torch.float32)
    source = dict(vae.state_dict())
    for key, value in reloaded.state_dict().items():
        if not torch.equal(value, source[key].float()):
            raise RuntimeError(f"bundled weights differ from the source at {key!r}.")
    return target


def evaluate_bundle(
    target: str | os.PathLike,
    label: str,
    image_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    compare: Sequence[str] = (),
    resolutions: str = DEFAULT_EVAL_RESOLUTIONS,
    eval_args: Sequence[str] = (),
) -> Path:
    """Run ``litevae eval`` on the bundled folder ``target`` (the float16 files that ship, computed in float32) and
    the ``compare`` models, full-size images cropped (``--no_resize``); returns the written ``summary.json``.

    The folder is passed by its path relative to the working directory when it lies below it, so the command the
    card quotes reads ``--vae src/diffusers_litevae/pretrained/NAME:NAME`` from a checkout.

    Raises:
        RuntimeError: ``litevae eval`` failed (its own message is printed above).
    """
    from diffusers_litevae.cli import main as litevae_main

    path = Path(target).resolve()
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    argv = ["eval", "--vae", f"{shown.as_posix()}:{label}"]
    for spec in compare:
        argv += ["--vae", spec]
    argv += ["--image_dir", os.fspath(image_dir), "--resolution", resolutions, "--no_resize"]
    argv += [*eval_args, "--output_dir", os.fspath(output_dir)]
    code = litevae_main(argv)
    if code != 0:
        raise RuntimeError(f"litevae eval exited with code {code}: {' '.join(argv)}")
    return Path(output_dir) / "summary.json"


def write_card(
    target: str | os.PathLike,
    name: str,
    metrics_file: str | os.PathLike,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    teacher_description: str | None = None,
) -> Path:
    """Write the bundled model's card ``target/README.md`` from a ``litevae eval`` summary of that folder.

    The card loads the model with ``pretrained_path(name)`` (offline), and from ``repo_id`` too when given; the
    summary is kept as ``target/eval/summary.json`` (it ships: the card's numbers and the command that made them).
    """
    from diffusers_litevae.hub import CardOptions, write_model_card

    options = CardOptions(
        repo_id=repo_id, name=name, teacher_description=teacher_description, license=license, bundled_name=name
    )
    return write_model_card(target, metrics_file, options, metrics_label=name)


def _parse_extra(text: str) -> tuple[str, str]:
    source, _, dest = text.partition(":")
    return (dest or Path(source).name), source


def build_parser() -> argparse.ArgumentParser:
    """The script's flags: what to bundle, then how to measure it and write its card."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "model_dir",
        nargs="?",
        default=None,
        help="AutoencoderLite folder (config.json + weights); not with --card_only",
    )
    parser.add_argument("--name", required=True, help="bundled name, e.g. litevae-s-taef2")
    parser.add_argument("--subfolder", default=None, help="subfolder of model_dir holding the VAE (e.g. 'vae')")
    parser.add_argument("--readme", default=None, help="model card to copy as README.md (instead of writing one)")
    parser.add_argument(
        "--extra_file",
        action="append",
        default=[],
        metavar="SRC[:DEST]",
        help="file to copy into the bundle, optionally renamed (repeatable)",
    )
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"), help="stored dtype")
    parser.add_argument("--output_root", default=str(PACKAGE_PRETRAINED), help="folder holding the bundled models")
    card = parser.add_argument_group("model card (written when --eval_image_dir or --metrics is given)")
    card.add_argument(
        "--card_only", action="store_true", help="keep the bundled weights; only re-measure and rewrite the card"
    )
    card.add_argument("--eval_image_dir", default=None, help="images to measure the bundled folder on (Kodak-24)")
    card.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="VAE[:LABEL]",
        help="another VAE for the card's table, as `litevae eval --vae` takes it, e.g. taef2 (repeatable)",
    )
    card.add_argument("--eval_resolutions", default=DEFAULT_EVAL_RESOLUTIONS, help="litevae eval --resolution")
    card.add_argument(
        "--eval_args",
        default="--skip_speed",
        help="more litevae eval flags, one string (speed on a busy machine is noise: skipped by default)",
    )
    card.add_argument("--eval_output_dir", default=None, help="where litevae eval writes (default: outputs/eval-NAME)")
    card.add_argument("--metrics", default=None, help="an existing litevae eval summary.json of the bundled folder")
    card.add_argument("--repo_id", default=None, help="the model's Hub repo 'owner/name', if it is published")
    card.add_argument("--license", default="apache-2.0", help="Hub license id of the weights")
    card.add_argument("--teacher_description", default=None, help="one sentence on the teacher, for the card")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.card_only == (args.model_dir is not None):
        parser.error("give a model_dir to bundle, or --card_only to rewrite the card of the bundled folder.")
    if args.card_only and args.eval_image_dir is None and args.metrics is None:
        parser.error("--card_only needs --eval_image_dir (to measure) or --metrics (an evaluation already run).")
    if args.readme is not None and (args.eval_image_dir is not None or args.metrics is not None):
        parser.error("--readme copies a card; --eval_image_dir / --metrics write one: pass one or the other.")
    extra = dict(_parse_extra(item) for item in args.extra_file)
    try:
        if args.card_only:
            target = Path(args.output_root) / args.name
            if not (target / "config.json").is_file():
                raise FileNotFoundError(f"no bundled model {args.name!r} in {args.output_root!r} to write a card for.")
        else:
            target = bundle_model(
                args.model_dir,
                args.name,
                args.readme,
                extra,
                args.output_root,
                getattr(torch, args.dtype),
                args.subfolder,
            )
        metrics = args.metrics
        if args.eval_image_dir is not None:
            import shlex

            metrics = evaluate_bundle(
                target,
                args.name,
                args.eval_image_dir,
                args.eval_output_dir or f"outputs/eval-{args.name}",
                args.compare,
                args.eval_resolutions,
                shlex.split(args.eval_args),
            )
        if metrics is not None:
            card = write_card(target, args.name, metrics, args.repo_id, args.license, args.teacher_description)
            print(f"wrote the model card {card}")
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as error:
        print(f"bundle_pretrained: error: {error}", file=sys.stderr)
        return 2
    files = sorted(p for p in target.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files) / 2**20
    print(f"{target}: {', '.join(p.relative_to(target).as_posix() for p in files)} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
