"""Publish an ``AutoencoderLite`` folder to the Hugging Face Hub: fp32 + fp16 weights, model card, eval evidence.

:func:`prepare_upload_folder` writes exactly what will be uploaded (all ``--dry_run`` does); :func:`push_to_hub`
validates every input first, then uploads that folder with ``HfApi``. :func:`write_model_card` writes the card of
any ``AutoencoderLite`` folder (also the bundled models'). ``docs/evaluation_and_hub.md`` lists the upload folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub import HfApi, get_token

from ..file_io import check_output_dir, save_pretrained
from ..hub_ids import is_owner_repo_id
from ..models.autoencoder_lite import AutoencoderLite
from ..models.autoencoder_lite_base import AutoencoderLiteBase
from ..runtime import cast_module
from .model_card import build_model_card
from .settings import DEFAULT_COMMIT_MESSAGE, CardOptions, PushSettings

__all__ = [
    "PushError",
    "WEIGHT_FILES",
    "load_metrics_entry",
    "prepare_upload_folder",
    "push_to_hub",
    "validate_model_folder",
    "write_model_card",
]

WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.safetensors.index.json",
)
LITEVAE_CLASSES = ("AutoencoderLite", "AutoencoderLiteTiny")


class PushError(ValueError):
    """Bad input for a push; raised before any network call, with a message naming the problem and the fix."""


def validate_model_folder(model_dir: str | os.PathLike) -> tuple[Path, dict]:
    """Check ``model_dir`` is a LiteVAE model's ``save_pretrained`` folder; returns ``(path, config dict)``.

    Raises:
        PushError: missing folder, no/invalid ``config.json``, not a LiteVAE class, or no weights file.
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
    class_name = AutoencoderLiteBase._saved_class_name(config) if isinstance(config, dict) else None
    if class_name not in LITEVAE_CLASSES:
        raise PushError(
            f"{str(path)!r} holds a {class_name!r}, not a LiteVAE model (config.json _class_name); `litevae push` "
            f"publishes {' / '.join(LITEVAE_CLASSES)} folders."
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise PushError(
            f"{str(path)!r} has a config.json but no weights ({WEIGHT_FILES[0]}); it is not a complete model folder."
        )
    return path, config


def load_metrics_entry(
    metrics_file: str | os.PathLike, label: str | None = None, model_dir: str | os.PathLike | None = None
) -> tuple[dict, str]:
    """Read a ``litevae eval`` ``summary.json`` and pick this model's entry (without ``label``: the one measured on
    ``model_dir``, else the only one, unless measured on another existing folder); returns ``(summary, label)``.

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
    if entry.get("class") not in (None, *LITEVAE_CLASSES):
        raise PushError(
            f"entry {label!r} of {str(path)!r} was measured on a {entry.get('class')}, not a LiteVAE model: these "
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
    card: CardOptions,
    metrics_label: str | None = None,
) -> Path:
    """Write the exact folder :func:`push_to_hub` uploads (fp32 + real fp16 weights, config, card, eval files) into
    the new or empty ``output_dir``; returns it as a ``Path``.

    Args:
        model_dir: ``AutoencoderLite`` folder (``config.json`` + weights, optionally ``distillation.json``).
        metrics_file: ``litevae eval`` ``summary.json`` that includes this model.
        output_dir: where to write.
        card: what the model card says; its ``repo_id`` is the target repo.
        metrics_label: this model's key in the summary (see :func:`load_metrics_entry`).
    """
    model_path, _ = validate_model_folder(model_dir)
    summary, label = load_metrics_entry(metrics_file, metrics_label, model_path)
    output = check_output_dir(output_dir, "push", PushError, empty=True)

    model = AutoencoderLite.from_pretrained(str(model_path), torch_dtype=torch.float32)
    _check_measured_parameters(summary, label, model, model_path)

    output.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, output, safe_serialization=True)
    # save_pretrained(variant="fp16") only renames the file: cast first, so the fp16 file really holds fp16 tensors.
    cast_module(model, dtype=torch.float16)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise PushError(
            f"{str(model_path)!r} has weights outside the fp16 range; they would turn into inf in the fp16 variant."
        )
    save_pretrained(model, output, safe_serialization=True, variant="fp16")
    copy_training_record(model_path, output)
    for file_name in ("per_image.csv", "grid.png"):
        source = Path(metrics_file).parent / file_name
        if source.is_file():
            (output / "eval").mkdir(exist_ok=True)
            shutil.copy2(source, output / "eval" / file_name)
    write_model_card(output, metrics_file, card, label)
    return output


def copy_training_record(model_dir: str | os.PathLike, output_dir: str | os.PathLike) -> list[str]:
    """Copy ``distillation.json`` (or ``training.json``) and ``curve.png`` from a run folder; returns the names."""
    copied = []
    for file_name in ("distillation.json", "training.json", "curve.png"):
        source = Path(model_dir) / file_name
        if source.is_file() and not (file_name == "training.json" and "distillation.json" in copied):
            shutil.copy2(source, Path(output_dir) / file_name)
            copied.append(file_name)
    return copied


def write_model_card(
    folder: str | os.PathLike, metrics_file: str | os.PathLike, card: CardOptions, metrics_label: str | None = None
) -> Path:
    """Write ``folder/README.md``, the model card of the ``AutoencoderLite`` folder ``folder``; returns its path.

    The metrics file is copied to ``folder/eval/summary.json`` (unless it is that file); the training record and
    ``curve.png`` are read from ``folder``, so everything the card names is in ``folder``.

    Args:
        folder: the model folder (``config.json`` + weights).
        metrics_file: a ``litevae eval`` ``summary.json`` that includes this model.
        card: what the card says; ``card.repo_id``, ``card.bundled_name`` or both say where the model loads from.
        metrics_label: this model's key in the summary (see :func:`load_metrics_entry`).

    Raises:
        PushError: bad folder or metrics, metrics measured on another model, or neither ``repo_id`` nor
            ``bundled_name``.
    """
    if card.repo_id is not None:
        _check_repo_id(card.repo_id)
    elif not card.bundled_name:
        raise PushError("the model card needs --repo_id owner/name (or a bundled name) to show how to load the model.")
    folder, _ = validate_model_folder(folder)
    summary, label = load_metrics_entry(metrics_file, metrics_label, folder)
    model = AutoencoderLite.from_pretrained(str(folder), torch_dtype=torch.float32)
    encoder_parameters, decoder_parameters = _check_measured_parameters(summary, label, model, folder)
    (folder / "eval").mkdir(exist_ok=True)
    if not (folder / "eval" / "summary.json").exists() or not (folder / "eval" / "summary.json").samefile(metrics_file):
        shutil.copy2(metrics_file, folder / "eval" / "summary.json")
    distillation = _load_record(folder, "distillation.json")
    training = None if distillation is not None else _load_record(folder, "training.json")
    model_card = build_model_card(
        folder, dict(model.config), encoder_parameters, decoder_parameters, summary, label, card, distillation, training
    )
    model_card.save(str(folder / "README.md"))
    return folder / "README.md"


def _check_measured_parameters(
    summary: dict, label: str, model: AutoencoderLiteBase, model_path: Path
) -> tuple[int, int]:
    """``(encoder, decoder + post_quant_conv)`` parameter counts of ``model``; a :class:`PushError` when the summary
    entry was measured on an encoder of another size."""
    encoder_parameters = sum(p.numel() for p in model.encoder.parameters())
    decoder_parameters = sum(p.numel() for p in model.decoder.parameters())
    if getattr(model, "post_quant_conv", None) is not None:
        decoder_parameters += sum(p.numel() for p in model.post_quant_conv.parameters())
    measured = summary["models"][label].get("encoder_parameters")
    if isinstance(measured, int) and measured != encoder_parameters:
        raise PushError(
            f"metrics entry {label!r} was measured on an encoder with {measured} parameters, "
            f"but {str(model_path)!r} has "
            f"{encoder_parameters}: these metrics are not for this model. Re-run `litevae eval` on it."
        )
    return encoder_parameters, decoder_parameters


def push_to_hub(
    model_dir: str | os.PathLike,
    metrics_file: str | os.PathLike,
    card: CardOptions,
    metrics_label: str | None = None,
    settings: PushSettings | None = None,
    **overrides,
) -> Path | str:
    """Validate, write the upload folder, then ``HfApi.create_repo`` + ``HfApi.upload_folder``.

    Args:
        model_dir, metrics_file, metrics_label: see :func:`prepare_upload_folder`.
        card: what the model card says; ``card.repo_id`` is the repo to upload to (also needed for a dry run).
        settings (`PushSettings`, *optional*): how to upload; ``overrides`` change its fields by name.

    Returns:
        The folder path for a dry run, else the repo URL.
    """
    settings = dataclasses.replace(settings or PushSettings(), **overrides)
    # Every check that can fail happens here, before the first network call.
    repo_id = card.repo_id
    if repo_id is None:
        raise PushError(
            "--repo_id owner/name is required (also with --dry_run: the model card's snippets load the model from it)."
        )
    _check_repo_id(repo_id)
    if settings.output_dir is not None:
        check_output_dir(settings.output_dir, "push", PushError, empty=True)
    model_path, _ = validate_model_folder(model_dir)
    load_metrics_entry(metrics_file, metrics_label, model_path)
    token = settings.token
    if not settings.dry_run:
        token = token or get_token()
        if not token:
            raise PushError("no Hugging Face token: run `hf auth login` (or `huggingface-cli login`) or pass --token.")

    temporary = settings.output_dir is None
    output_dir = (
        tempfile.mkdtemp(prefix=f"litevae-push-{model_path.resolve().name}-") if temporary else settings.output_dir
    )
    try:
        folder = prepare_upload_folder(model_path, metrics_file, output_dir, card, metrics_label)
        if settings.dry_run:
            return folder
        api = HfApi(token=token)
        api.create_repo(repo_id=repo_id, repo_type="model", private=settings.private, exist_ok=True)
        commit_message = settings.commit_message or DEFAULT_COMMIT_MESSAGE
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message=commit_message)
        return f"https://huggingface.co/{repo_id}"
    finally:
        if temporary and not settings.dry_run:
            shutil.rmtree(output_dir, ignore_errors=True)
