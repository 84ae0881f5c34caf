#!/usr/bin/env python
"""Bundle a trained AutoencoderLite folder into the package, as ``diffusers_litevae.pretrained_path(NAME)``.

Loads the model folder (``config.json`` + weights, as written by ``save_pretrained`` or ``litevae distill``), casts
the weights to float16 (half the size; load with ``torch_dtype=torch.float32`` to compute in float32) and writes
``config.json`` + ``diffusion_pytorch_model.safetensors`` into ``src/diffusers_litevae/pretrained/NAME/``, together
with copies of any extra files (model card, licences). The folder's previous contents are replaced.

Example::

    python conversion/bundle_pretrained.py outputs/litevae-s-taef2 --name litevae-s-taef2 \\
        --readme outputs/litevae-s-taef2/README.md \\
        --extra_file src/diffusers_litevae/pretrained/taef2/LICENSE:LICENSE-TAEF2
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

__all__ = ["bundle_model", "main"]


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
        readme: a model card, copied as ``README.md``.
        extra_files: more files to copy: ``{name in the bundle: source path}``, or source paths kept under their own
            names (e.g. ``{"LICENSE-TAEF2": ".../taef2/LICENSE"}``).
        output_root: where bundled folders live (default: the package's ``pretrained/`` folder in this checkout).
        dtype: dtype of the stored weights (float16 by default).
        subfolder: subfolder of ``model_dir`` holding the VAE (e.g. ``"vae"`` of a saved pipeline).

    Returns:
        The written folder. Its previous contents are removed first.
    """
    from diffusers_litevae import AutoencoderLite

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
    for dest, src in copies.items():
        shutil.copyfile(src, target / dest)

    # Read it back: the bundle must load and match the source weights (up to the dtype cast).
    reloaded = AutoencoderLite.from_pretrained(os.fspath(target), torch_dtype=torch.float32)
    source = dict(vae.state_dict())
    for key, value in reloaded.state_dict().items():
        if not torch.equal(value, source[key].float()):
            raise RuntimeError(f"bundled weights differ from the source at {key!r}.")
    return target


def _parse_extra(text: str) -> tuple[str, str]:
    source, _, dest = text.partition(":")
    return (dest or Path(source).name), source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("model_dir", help="AutoencoderLite folder (config.json + weights)")
    parser.add_argument("--name", required=True, help="bundled name, e.g. litevae-s-taef2")
    parser.add_argument("--subfolder", default=None, help="subfolder of model_dir holding the VAE (e.g. 'vae')")
    parser.add_argument("--readme", default=None, help="model card to copy as README.md")
    parser.add_argument(
        "--extra_file",
        action="append",
        default=[],
        metavar="SRC[:DEST]",
        help="file to copy into the bundle, optionally renamed (repeatable)",
    )
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"), help="stored dtype")
    parser.add_argument("--output_root", default=str(PACKAGE_PRETRAINED), help="folder holding the bundled models")
    args = parser.parse_args(argv)
    extra = dict(_parse_extra(item) for item in args.extra_file)
    try:
        target = bundle_model(
            args.model_dir, args.name, args.readme, extra, args.output_root, getattr(torch, args.dtype), args.subfolder
        )
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"bundle_pretrained: error: {error}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    print(f"wrote {target} ({', '.join(sorted(p.name for p in target.iterdir()))}; {size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
