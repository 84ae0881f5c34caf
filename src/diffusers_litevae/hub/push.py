"""Publish an ``AutoencoderLite`` folder to the Hugging Face Hub: fp32 + fp16 weights, model card, eval evidence.

:func:`prepare_upload_folder` writes exactly what will be uploaded (and is all ``--dry_run`` does);
:func:`push_to_hub` validates every input first, then creates the repo and uploads that folder with ``HfApi``.

The upload folder::

    README.md                                   model card (YAML metadata + body)
    config.json                                 AutoencoderLite config
    diffusion_pytorch_model.safetensors         fp32 weights
    diffusion_pytorch_model.fp16.safetensors    fp16 weights (cast, not renamed): variant="fp16"
    distillation.json or training.json, curve.png   the training record and curve, when the model folder has them
    eval/summary.json                           the metrics the card quotes (+ per_image.csv, grid.png when present)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub import HfApi, get_token

from ..models.autoencoder_lite import AutoencoderLite
from ..models.utils import cast_module
from .model_card import build_model_card, is_owner_repo_id

__all__ = [
    "PushError",
    "WEIGHT_FILES",
    "load_metrics_entry",
    "prepare_upload_folder",
    "push_to_hub",
    "validate_model_folder",
]

WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.safetensors.index.json",
)
DEFAULT_COMMIT_MESSAGE = "Upload AutoencoderLite with diffusers-litevae"
DRY_RUN_REPO_ID = "YOUR_USERNAME/{name}"


class PushError(ValueError):
    """Bad input for a push; raised before any network call, with a message naming the problem and the fix."""


def validate_model_folder(model_dir: str | os.PathLike) -> tuple[Path, dict]:
    """Check ``model_dir`` is an ``AutoencoderLite`` ``save_pretrained`` folder; returns ``(path, config dict)``.

    Raises:
        PushError: missing folder, no/invalid ``config.json``, a ``_class_name`` other than ``AutoencoderLite``, or no
            weights file.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise PushError(
            f"model folder not found: {str(path)!r}; pass the folder written by `litevae distill` or save_pretrained."
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PushError(
            f"{str(path)!r} is not a model folder: it has no config.json "
            "(save it with AutoencoderLite.save_pretrained)."
        )
    config = _read_json(config_file)
    class_name = config.get("_class_name") if isinstance(config, dict) else None
    if class_name != "AutoencoderLite":
        raise PushError(
            f"{str(path)!r} holds a {class_name!r}, not an AutoencoderLite (config.json _class_name); `litevae push` "
            "publishes AutoencoderLite folders."
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise PushError(
            f"{str(path)!r} has a config.json but no weights ({WEIGHT_FILES[0]}); it is not a complete model folder."
        )
    return path, config


def load_metrics_entry(
    metrics_file: str | os.PathLike, label: str | None = None, model_dir: str | os.PathLike | None = None
) -> tuple[dict, str]:
    """Read a ``litevae eval`` ``summary.json`` and pick this model's entry; returns ``(summary, label)``.

    Without ``label``: the entry whose ``name_or_path`` is ``model_dir``, else the only entry (if it was not measured
    on another existing folder).

    Raises:
        PushError: missing/invalid file, no ``models``, unknown label, ambiguous choice, or an entry without PSNR/SSIM.
    """
    path = Path(metrics_file)
    if not path.is_file():
        raise PushError(
            f"metrics file not found: {str(path)!r}; run `litevae eval --vae MODEL_DIR ... --output_dir E` and pass "
            "--metrics E/summary.json."
        )
    summary = _read_json(path)
    models = summary.get("models") if isinstance(summary, dict) else None
    if not isinstance(models, dict) or not models:
        raise PushError(f"metrics file {str(path)!r} has no 'models' entries; it is not a `litevae eval` summary.json.")
    if label is not None:
        if label not in models:
            raise PushError(f"metrics file {str(path)!r} has no entry {label!r}; its entries are {sorted(models)}.")
    else:
        target = Path(model_dir).resolve() if model_dir is not None else None
        matching = [
            name
            for name, entry in models.items()
            if target is not None and _same_path(entry.get("name_or_path"), target)
        ]
        if len(matching) == 1:
            label = matching[0]
        elif len(models) == 1:
            label = next(iter(models))
            measured = models[label].get("name_or_path")
            if target is not None and measured and Path(measured).exists() and not _same_path(measured, target):
                raise PushError(
                    f"the only entry of {str(path)!r}, {label!r}, was measured on {measured!r}, "
                    f"not on {str(model_dir)!r}; "
                    f"pass --metrics_label {label} if it is the same model."
                )
        else:
            raise PushError(
                f"metrics file {str(path)!r} has entries {sorted(models)} and none was measured on {str(model_dir)!r}; "
                "pick this model's with --metrics_label."
            )
    entry = models[label]
    if entry.get("class") not in (None, "AutoencoderLite"):
        raise PushError(
            f"entry {label!r} of {str(path)!r} was measured on a {entry.get('class')}, not an AutoencoderLite: these "
            "metrics are not for this model; pick its entry with --metrics_label."
        )
    for key in ("psnr", "ssim"):
        if not isinstance(entry.get(key), (int, float)):
            raise PushError(f"entry {label!r} of {str(path)!r} has no numeric {key!r}; re-run `litevae eval`.")
    return summary, label


def _same_path(value: str | None, target: Path) -> bool:
    return bool(value) and Path(value).exists() and Path(value).resolve() == target


def _load_record(model_dir: Path, name: str) -> dict | None:
    """``distillation.json`` (``litevae distill``) or ``training.json`` (``litevae train``), when the folder has it."""
    file = model_dir / name
    return _read_json(file) if file.is_file() else None


def _read_json(file: Path):
    """The parsed JSON of ``file``; a file that is not valid JSON is a :class:`PushError` naming it."""
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise PushError(f"{str(file)!r} is not valid JSON ({error}); fix or regenerate it.") from error


def _check_repo_id(repo_id: str) -> None:
    if not is_owner_repo_id(repo_id):
        raise PushError(
            f"--repo_id must look like 'owner/name' (your user or organisation, then the model name), got {repo_id!r}."
        )


def prepare_upload_folder(
    model_dir: str | os.PathLike,
    metrics_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    repo_id: str,
    metrics_label: str | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    pipeline_id: str | None = None,
) -> Path:
    """Write the exact folder :func:`push_to_hub` uploads: weights (fp32 + real fp16), config, card, eval files.

    Args:
        model_dir: ``AutoencoderLite`` folder (``config.json`` + weights, optionally ``distillation.json``).
        metrics_file: ``litevae eval`` ``summary.json`` that includes this model.
        output_dir: new or empty folder to write into.
        repo_id: target repo ``owner/name`` (used in the card's snippets).
        metrics_label: this model's key in the summary (see :func:`load_metrics_entry`).
        license: Hub license id for the card metadata.
        base_model: Hub id of the teacher (default: the teacher in ``distillation.json`` when it is a Hub id).
        pipeline_id: pipeline repo for the card's usage snippet.

    Returns:
        ``output_dir`` as a ``Path``.
    """
    model_path, _ = validate_model_folder(model_dir)
    summary, label = load_metrics_entry(metrics_file, metrics_label, model_path)
    distillation = _load_record(model_path, "distillation.json")
    training = None if distillation is not None else _load_record(model_path, "training.json")
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()):
        raise PushError(
            f"output folder {str(output)!r} is not empty; pass a new --output_dir (nothing is overwritten)."
        )

    model = AutoencoderLite.from_pretrained(str(model_path), torch_dtype=torch.float32)
    encoder_parameters = sum(p.numel() for p in model.encoder.parameters())
    decoder_parameters = sum(p.numel() for p in model.decoder.parameters())
    if model.post_quant_conv is not None:
        decoder_parameters += sum(p.numel() for p in model.post_quant_conv.parameters())
    entry = summary["models"][label]
    measured = entry.get("encoder_parameters")
    if isinstance(measured, int) and measured != encoder_parameters:
        raise PushError(
            f"metrics entry {label!r} was measured on an encoder with {measured} parameters, "
            f"but {str(model_path)!r} has "
            f"{encoder_parameters}: these metrics are not for this model. Re-run `litevae eval` on it."
        )

    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output), safe_serialization=True)
    # save_pretrained(variant="fp16") only renames the file: cast first, so the fp16 file really holds fp16 tensors.
    cast_module(model, dtype=torch.float16)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise PushError(
            f"{str(model_path)!r} has weights outside the fp16 range; they would turn into inf in the fp16 variant."
        )
    model.save_pretrained(str(output), safe_serialization=True, variant="fp16")
    files = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"]
    for record, name in ((distillation, "distillation.json"), (training, "training.json")):
        if record is not None:
            shutil.copy2(model_path / name, output / name)
            files.append(name)
    curve_file = None
    if (model_path / "curve.png").is_file():  # written by `litevae distill` / `litevae train` next to the record
        shutil.copy2(model_path / "curve.png", output / "curve.png")
        files.append(curve_file := "curve.png")

    eval_dir = output / "eval"
    eval_dir.mkdir()
    shutil.copy2(metrics_file, eval_dir / "summary.json")
    files.append("eval/summary.json")
    grid_file = None
    for name in ("per_image.csv", "grid.png"):
        source = Path(metrics_file).parent / name
        if source.is_file():
            shutil.copy2(source, eval_dir / name)
            files.append(f"eval/{name}")
            grid_file = f"eval/{name}" if name == "grid.png" else grid_file

    card = build_model_card(
        repo_id=repo_id,
        config=dict(model.config),
        encoder_parameters=encoder_parameters,
        decoder_parameters=decoder_parameters,
        summary=summary,
        label=label,
        distillation=distillation,
        training=training,
        license=license,
        base_model=base_model,
        pipeline_id=pipeline_id,
        grid_file=grid_file,
        curve_file=curve_file,
        files=files,
    )
    card.save(str(output / "README.md"))
    return output


def push_to_hub(
    model_dir: str | os.PathLike,
    metrics_file: str | os.PathLike,
    repo_id: str | None = None,
    metrics_label: str | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    pipeline_id: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    output_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
) -> Path | str:
    """Validate, write the upload folder, then ``HfApi.create_repo`` + ``HfApi.upload_folder``.

    Args:
        model_dir, metrics_file, metrics_label, license, base_model, pipeline_id: see :func:`prepare_upload_folder`.
        repo_id: ``owner/name``; required unless ``dry_run`` (then the card uses ``YOUR_USERNAME/<folder name>``).
        private: create the repo private.
        token: Hugging Face token (default: the one stored by ``hf auth login``).
        commit_message: commit message of the upload.
        output_dir: where to write the upload folder (default: a temporary folder, removed after a real upload).
        dry_run: only write the folder; no network.

    Returns:
        The folder path for a dry run, else the repo URL.
    """
    # Every check that can fail happens here, before the first network call.
    if repo_id is None:
        if not dry_run:
            raise PushError("--repo_id owner/name is required to upload (or pass --dry_run to only write the folder).")
        repo_id = DRY_RUN_REPO_ID.format(name=Path(model_dir).resolve().name)
    _check_repo_id(repo_id)
    model_path, _ = validate_model_folder(model_dir)
    load_metrics_entry(metrics_file, metrics_label, model_path)
    if not dry_run:
        token = token or get_token()
        if not token:
            raise PushError("no Hugging Face token: run `hf auth login` (or `huggingface-cli login`) or pass --token.")

    temporary = None
    if output_dir is None:
        temporary = tempfile.mkdtemp(prefix=f"litevae-push-{model_path.resolve().name}-")
        output_dir = temporary
    try:
        folder = prepare_upload_folder(
            model_path, metrics_file, output_dir, repo_id, metrics_label, license, base_model, pipeline_id
        )
        if dry_run:
            return folder
        api = HfApi(token=token)
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message=commit_message)
        return f"https://huggingface.co/{repo_id}"
    finally:
        if temporary is not None and not dry_run:
            shutil.rmtree(temporary, ignore_errors=True)
