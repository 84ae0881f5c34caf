"""Model cards for ``AutoencoderLite`` checkpoints, built with huggingface_hub's ``ModelCard`` / ``ModelCardData``.

The card carries the Hub metadata (license, ``base_model``, tags, evaluation results in model-index form) and a body
(usage, architecture, quality and speed from a ``litevae eval`` ``summary.json``, the training record, citation):
the Jinja2 template ``model_card_template.md`` beside this module, rendered with ``ModelCard.from_template`` from
the folder's records, as diffusers renders its model cards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..file_io import flatten_dict
from ..hub_ids import is_hub_repo_id
from ..models.litevae_encoder import preset_name_of
from .settings import CardOptions

__all__ = [
    "CARD_TAGS",
    "build_model_card",
    "eval_results_from_summary",
    "metrics_by_size",
    "teacher_display_name",
    "training_sizes",
]

CARD_TAGS = ["diffusers", "litevae", "vae", "autoencoder", "image-to-image"]
TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")
_METRICS = (  # summary key, model-index metric type, display name
    ("psnr", "psnr", "PSNR (dB)"),
    ("ssim", "ssim", "SSIM"),
    ("lpips", "lpips", "LPIPS"),
    ("rfid", "fid", "rFID"),
)


def _dataset_id(summary: dict) -> tuple[str, str | None]:
    """``(dataset id for model-index, split)`` from the summary's ``dataset`` (a folder path or ``hub_id[:split]``)."""
    dataset = str(summary.get("dataset", "unknown"))
    if Path(dataset).exists() or dataset.startswith(("/", ".", "~")):
        return Path(dataset).name or dataset, None
    name, _, split = dataset.partition(":")
    return name.split("[")[0], split or None


def metrics_by_size(summary: dict) -> list[dict]:
    """Every evaluation size of a ``litevae eval`` summary, in order: ``[{"size", "preprocessing", "num_images",
    "models": {label: metrics}}]``.

    A summary from ``--resolution 256,512,native`` has one entry per size in ``summary["sizes"]``; a summary
    without ``"sizes"`` (one size, older ``litevae eval``) gives one entry from its top level.
    """
    sizes = summary.get("sizes")
    blocks = sizes.items() if isinstance(sizes, dict) and sizes else [(summary.get("resolution"), summary)]
    return [
        {
            "size": str(block.get("resolution", key)),
            "preprocessing": block.get("preprocessing"),
            "num_images": block.get("num_images", summary.get("num_images")),
            "models": block.get("models") or {},
        }
        for key, block in blocks
    ]


def eval_results_from_summary(summary: dict, label: str) -> list[EvalResult]:
    """model-index ``EvalResult`` s of model ``label`` in a ``litevae eval`` summary: every measured metric at every
    evaluation size (metrics that were not measured get no entry)."""
    dataset_type, split = _dataset_id(summary)
    results = []
    for block in metrics_by_size(summary):
        entry = block["models"].get(label) or {}
        dataset_name = f"{dataset_type} ({block['preprocessing'] or block['size']}, {block['num_images']} images)"
        for key, metric_type, metric_name in _METRICS:
            value = entry.get(key)
            if not _measured(value):
                continue  # no number in the metadata (the body says why)
            results.append(
                EvalResult(
                    task_type="image-to-image",
                    task_name="Image reconstruction",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(float(value), 4),
                    metric_config=f"resolution={block['size']}",
                )
            )
    return results


def _measured(value) -> bool:
    """``False`` for a metric that was not measured: ``None`` or not finite (NaN)."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def _fmt(value, spec: str = ".2f") -> str:
    return format(value, spec) if _measured(value) else "n/a"


def _millions(count) -> str:
    return "n/a" if count is None else f"{count / 1e6:.2f} M"


def teacher_display_name(name_or_path: str | None) -> str | None:
    """How the card names a teacher: a Hub id as it is, a bundled model by its bundled name (``"taef2"`` for a
    folder named ``taef2``, wherever it was on the training machine), any other folder by its name."""
    if not name_or_path:
        return None
    if is_hub_repo_id(name_or_path):
        return name_or_path
    return Path(name_or_path).name or name_or_path


def training_sizes(record: dict | None) -> str | None:
    """The training crop sizes of a ``distillation.json`` / ``training.json``, in words, from its
    ``resolution_schedule`` setting (``"128:3550,256"`` -> ``"128 px crops until step 3550, then 256 px crops"``)."""
    schedule = ((record or {}).get("settings") or {}).get("resolution_schedule")
    if schedule is None:
        return None
    phases = []
    for part in str(schedule).split(","):
        sizes, _, until = part.strip().partition(":")
        sizes = " / ".join(sizes.split("/"))
        phases.append(f"{sizes} px crops" + (f" until step {until}" if until else ""))
    return ", then ".join(phases) + f" (`--resolution_schedule {schedule}`)"


def _card_data(summary: dict, label: str, options: CardOptions, teacher: str | None) -> ModelCardData:
    """The card's YAML metadata; ``base_model`` is the teacher when it is a Hub repo, unless the options name one."""
    base_model = options.base_model
    if base_model is None and teacher and is_hub_repo_id(teacher):
        base_model = teacher
    return ModelCardData(
        license=options.license,
        library_name="diffusers",
        tags=list(CARD_TAGS),
        base_model=base_model,
        model_name=options.title,
        eval_results=eval_results_from_summary(summary, label) or None,
    )


def _teacher_notes(teacher: str | None, options: CardOptions) -> list[str]:
    """What the introduction says about the teacher, in brackets after its name: the options' description of it,
    and how to load it when it is bundled with diffusers-litevae."""
    from ..pretrained import list_pretrained

    notes = [options.teacher_description] if options.teacher_description else []
    if teacher and teacher in list_pretrained():
        notes.append(f'bundled with diffusers-litevae as `pretrained_path("{teacher}")`')
    return notes


def _folder_files(folder: Path, has_record: bool) -> dict:
    """What the card shows of the folder's files: all of them (and the card), the fp16 variant, the reconstruction
    grid and, with a training record, the training curve."""
    return dict(
        files=sorted({"README.md", *(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())}),
        has_fp16_variant=(folder / "diffusion_pytorch_model.fp16.safetensors").is_file(),
        grid_file="eval/grid.png" if (folder / "eval" / "grid.png").is_file() else None,
        curve_file="curve.png" if has_record and (folder / "curve.png").is_file() else None,
    )


def build_model_card(
    folder: str | Path,
    config: dict,
    encoder_parameters: int,
    decoder_parameters: int,
    summary: dict,
    label: str,
    options: CardOptions,
    distillation: dict | None = None,
    training: dict | None = None,
) -> ModelCard:
    """Build the model card (``README.md``) of the ``AutoencoderLite`` folder ``folder``, describing the folder as
    it is (its files, its grid and curve where present): write every other file first, then ``card.save``.

    Args:
        folder: the folder the card is written into.
        config: the model's config (``config.json`` contents).
        encoder_parameters: parameters of ``model.encoder``.
        decoder_parameters: parameters of ``model.decoder``, plus ``post_quant_conv`` when the model has one.
        summary: a ``litevae eval`` ``summary.json`` dict, at one size or several (``summary["sizes"]``).
        label: this model's key in ``summary["models"]``.
        options: the card's name, licence, where the model loads from, and how it presents the teacher.
        distillation: the run's ``distillation.json`` dict, if any (training section, teacher).
        training: the ``training.json`` dict of a model trained from scratch with ``litevae train``, if any.

    Raises:
        ValueError: neither ``options.repo_id`` nor ``options.bundled_name``, or ``label`` not in the summary.
    """
    if not options.repo_id and not options.bundled_name:
        raise ValueError(
            "the card needs the model's Hub repo id (owner/name) or its bundled name to show how to load it."
        )
    blocks = metrics_by_size(summary)
    models = summary.get("models") or blocks[0]["models"]
    if label not in models:
        raise ValueError(f"the summary has no model {label!r}.")
    teacher = teacher_display_name(((distillation or {}).get("teacher") or {}).get("name_or_path"))
    record = training or distillation or {}
    distilled = distillation if distillation and not training else None
    curve = (distilled or {}).get("curve") or []
    # A handful of evenly spaced points tells the shape of the curve; the full list is in distillation.json.
    picks = sorted({round(i * (len(curve) - 1) / 5) for i in range(6)}) if len(curve) > 6 else range(len(curve))
    return ModelCard.from_template(
        _card_data(summary, label, options, teacher),
        template_path=str(TEMPLATE_PATH),
        options=options,
        load=f'pretrained_path("{options.bundled_name}")' if options.bundled_name else f'"{options.repo_id}"',
        teacher=teacher,
        teacher_notes=_teacher_notes(teacher, options),
        config={key: tuple(value) if isinstance(value, list) else value for key, value in config.items()},
        class_name=config["_class_name"],
        latent_channels=config["latent_channels"],
        preset=preset_name_of(config),
        encoder_parameters=encoder_parameters,
        decoder_parameters=decoder_parameters,
        summary=summary,
        label=label,
        blocks=blocks,
        models=models,
        dataset=_dataset_id(summary)[0],
        missing_metrics={
            metric: reason
            for block in blocks
            for entry in block["models"].values()
            for metric, reason in (entry.get("missing_metrics") or {}).items()
        },
        trained_at=training_sizes(record),
        record=record,
        final=record.get("final_metrics") or {},
        settings=[(key, json.dumps(value)) for key, value in flatten_dict(record.get("settings") or {}).items()],
        scratch=training or None,
        distilled=distilled,
        curve_points=[curve[i] for i in picks],
        fmt=_fmt,
        millions=_millions,
        **_folder_files(Path(folder), bool(record)),
    )
