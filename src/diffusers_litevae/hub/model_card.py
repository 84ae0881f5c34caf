"""Model cards for ``AutoencoderLite`` checkpoints, built with huggingface_hub's ``ModelCard`` / ``ModelCardData``.

The card carries the Hub metadata (license, ``base_model`` = the teacher VAE when it is a Hub repo, tags,
``library_name: diffusers``, evaluation results in model-index form) and a body with: a usage snippet, the
architecture and parameter counts, the measured quality and speed (from a ``litevae eval`` ``summary.json``), the
training settings (from the distillation run's ``distillation.json``) and a citation.

The body's Markdown is the Jinja2 template ``model_card_template.md`` beside this module, rendered with
``ModelCard.from_template`` (as diffusers renders its model cards); the functions here decide what the card shows and
prepare those values (numbers formatted, table rows listed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

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


def _size_name(size: str) -> str:
    """``"256"`` -> ``"256 px"``; ``"native"`` -> ``"whole images"``."""
    return "whole images" if size == "native" else f"{size} px"


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


def _bundled(name: str | None) -> bool:
    from ..pretrained import list_pretrained

    return bool(name) and name in list_pretrained()


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


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for key, value in settings.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


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
    notes = [options.teacher_description] if options.teacher_description else []
    if _bundled(teacher):
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


def _shown(name: str, label: str) -> str:
    """A model's name in the card's tables, this model's in bold."""
    return f"**{name} (this model)**" if name == label else name


def _architecture(config: dict, encoder_parameters: int, decoder_parameters: int) -> dict:
    """The Architecture table's values: the config (its lists as tuples, as the card prints them), the encoder
    preset, whether the decoder has a post_quant_conv, and the parameter counts."""
    preset = preset_name_of(config)
    class_name = config["_class_name"]
    return dict(
        config={key: tuple(value) if isinstance(value, list) else value for key, value in config.items()},
        class_name=class_name,
        latent_channels=config["latent_channels"],
        preset=preset,
        encoder_name=f"LiteVAE-{preset}" if preset else "LiteVAE",
        # Only the SD-layout decoder has a post_quant_conv (AutoencoderLiteTiny's TAESD-family decoder has none).
        has_post_quant_conv=class_name == "AutoencoderLite" and config.get("use_post_quant_conv", True),
        encoder_millions=_millions(encoder_parameters),
        decoder_millions=_millions(decoder_parameters),
        total_millions=_millions(encoder_parameters + decoder_parameters),
    )


def _evaluation(summary: dict, label: str) -> dict:
    """The Evaluation section's values: one quality row per size and model, parameter counts, speed."""
    blocks = metrics_by_size(summary)
    models = summary.get("models") or blocks[0]["models"]
    metric_rows, missing = [], {}
    for block in blocks:
        for name, entry in block["models"].items():
            metric_rows.append(
                [_size_name(block["size"]), _shown(name, label), (models.get(name) or {}).get("class")]
                + [_fmt(entry.get("psnr")), _fmt(entry.get("ssim"), ".4f"), _fmt(entry.get("lpips"), ".4f")]
                + [_fmt(entry.get("rfid"))]
            )
            missing.update(entry.get("missing_metrics") or {})
    return dict(
        num_images=blocks[0]["num_images"],
        dataset=_dataset_id(summary)[0],
        measured_at="; ".join(f"{_size_name(b['size'])} ({b['preprocessing'] or b['size']})" for b in blocks),
        num_skipped=summary.get("num_skipped"),
        eval_command=summary.get("command"),
        metric_rows=metric_rows,
        missing_metrics=missing,
        parameter_rows=[
            [
                _shown(name, label),
                _millions(entry.get("encoder_parameters")),
                _millions(entry.get("decoder_parameters")),
            ]
            for name, entry in models.items()
        ],
        speed=_speed(summary, label, models),
        grid_size=_size_name(blocks[0]["size"]),
    )


def _speed(summary: dict, label: str, models: dict) -> dict | None:
    """The Speed table's values, ``None`` when the evaluation did not time the models (``--skip_speed``)."""
    entry = models.get(label, {})
    if entry.get("encode_images_per_s") is None:
        return None
    size = entry.get("speed_image_size") or ["?", "?"]
    return dict(
        batch_size=entry.get("speed_batch_size"),
        image_size=f"{size[0]}x{size[1]}",
        device=entry.get("device"),
        dtype=entry.get("dtype"),
        repeats=summary.get("speed_repeats"),
        rows=[
            [_shown(name, label), _fmt(other.get("encode_images_per_s")), _fmt(other.get("decode_images_per_s"))]
            for name, other in models.items()
        ],
    )


def _run(record: dict) -> dict:
    """What every training record tells: steps, images, time, throughput, the command and every setting."""
    final = record.get("final_metrics", {}) or {}
    return dict(
        step=final.get("step"),
        images_seen=final.get("images_seen"),
        wall_time=_fmt(record.get("wall_time_s"), ".0f"),
        images_per_s=_fmt(record.get("train_images_per_s")),
        command=record.get("command"),
        settings=[(key, json.dumps(value)) for key, value in _flatten(record.get("settings") or {})],
    )


def _from_scratch(training: dict) -> dict:
    """The Training section's values for a model trained from scratch (``training.json``)."""
    model = training.get("model", {}) or {}
    final = training.get("final_metrics", {}) or {}
    return dict(
        encoder_preset=model.get("encoder_preset"),
        encoder_millions=_millions(model.get("encoder_parameters")),
        decoder=model.get("decoder"),
        latent_channels=model.get("latent_channels"),
        scaling_factor=_fmt(model.get("scaling_factor"), ".5f"),
        shift_factor=_fmt(model.get("shift_factor"), ".5f"),
        eval_images=final.get("eval_images"),
        eval_set=final.get("eval_set"),
        psnr=_fmt(final.get("psnr")),
        ssim=_fmt(final.get("ssim"), ".4f"),
    )


def _distilled(distillation: dict) -> dict:
    """The Training section's values for a distilled encoder (``distillation.json``)."""
    teacher = distillation.get("teacher", {}) or {}
    student = distillation.get("student", {}) or {}
    final = distillation.get("final_metrics", {}) or {}
    campaign = distillation.get("campaign")
    if campaign:  # a resumable campaign across runs (conversion/distill_campaign.py): what each device gave it
        minutes = ", ".join(f"{s / 60:.1f} {kind.upper()} minutes" for kind, s in campaign["seconds"].items())
        campaign = dict(runs=len(campaign.get("runs") or []), images_seen=campaign["images_seen"], minutes=minutes)
    curve = distillation.get("curve") or []
    # A handful of evenly spaced points tells the shape of the curve; the full list is in distillation.json.
    picks = sorted({round(i * (len(curve) - 1) / 5) for i in range(6)}) if len(curve) > 6 else range(len(curve))
    return dict(
        teacher=teacher_display_name(teacher.get("name_or_path")),
        teacher_type=teacher.get("type"),
        teacher_latent_channels=teacher.get("latent_channels"),
        student_preset=student.get("preset") or "custom",
        student_millions=_millions(student.get("encoder_parameters")),
        campaign=campaign,
        note=distillation.get("note"),
        final=dict(
            eval_images=final.get("eval_images"),
            eval_set=final.get("eval_set"),
            psnr_student=_fmt(final.get("psnr_student")),
            psnr_teacher=_fmt(final.get("psnr_teacher")),
            ssim_student=_fmt(final.get("ssim_student"), ".4f"),
            ssim_teacher=_fmt(final.get("ssim_teacher"), ".4f"),
            latent_mse=_fmt(final.get("latent_mse"), ".5f"),
        )
        if final
        else None,
        curve_rows=[
            [curve[i].get("step"), _fmt(curve[i].get("wall_time_s"), ".0f")]
            + [_fmt(curve[i].get("psnr_student")), _fmt(curve[i].get("latent_mse"), ".5f")]
            for i in picks
        ],
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
    """Build the model card (``README.md``) of the ``AutoencoderLite`` folder ``folder``.

    The card describes the folder as it is: "Files" lists the files in it (and ``README.md``), and the
    reconstruction grid (``eval/grid.png``) and training curve (``curve.png``) are shown only when the folder has
    them. Write every other file first, then ``card.save(folder / "README.md")``.

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

    Returns:
        A ``huggingface_hub.ModelCard``.

    Raises:
        ValueError: neither ``options.repo_id`` nor ``options.bundled_name``, or ``label`` not in the summary.
    """
    if not options.repo_id and not options.bundled_name:
        raise ValueError(
            "the card needs the model's Hub repo id (owner/name) or its bundled name to show how to load it."
        )
    if label not in (summary.get("models") or metrics_by_size(summary)[0]["models"]):
        raise ValueError(f"the summary has no model {label!r}.")
    teacher = teacher_display_name(((distillation or {}).get("teacher") or {}).get("name_or_path"))
    record = training or distillation or {}
    return ModelCard.from_template(
        _card_data(summary, label, options, teacher),
        template_path=str(TEMPLATE_PATH),
        options=options,
        load=f'pretrained_path("{options.bundled_name}")' if options.bundled_name else f'"{options.repo_id}"',
        teacher=teacher,
        teacher_notes=_teacher_notes(teacher, options),
        **_architecture(config, encoder_parameters, decoder_parameters),
        **_evaluation(summary, label),
        trained_at=training_sizes(record),
        run=_run(record),
        scratch=_from_scratch(training) if training else None,
        distilled=_distilled(distillation) if distillation and not training else None,
        **_folder_files(Path(folder), bool(record)),
    )
