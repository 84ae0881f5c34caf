"""Model cards for ``AutoencoderLite`` checkpoints, built with huggingface_hub's ``ModelCard`` / ``ModelCardData``.

The card carries the Hub metadata (license, ``base_model`` = the teacher VAE when it is a Hub repo, tags,
``library_name: diffusers``, evaluation results in model-index form) and a body with: a usage snippet, the
architecture and parameter counts, the measured quality and speed (from a ``litevae eval`` ``summary.json``), the
training settings (from the distillation run's ``distillation.json``) and a citation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..hub_ids import is_hub_repo_id
from ..models.litevae_encoder import preset_name_of

__all__ = [
    "CARD_TAGS",
    "build_model_card",
    "eval_results_from_summary",
    "metrics_by_size",
    "teacher_display_name",
    "training_sizes",
]

CARD_TAGS = ["diffusers", "litevae", "vae", "autoencoder", "image-to-image"]
_METRICS = (  # summary key, model-index metric type, display name
    ("psnr", "psnr", "PSNR (dB)"),
    ("ssim", "ssim", "SSIM"),
    ("lpips", "lpips", "LPIPS"),
    ("rfid", "fid", "rFID"),
)
CITATION = """@inproceedings{sadat2024litevae,
  title     = {LiteVAE: Lightweight and Efficient Variational Autoencoders for Latent Diffusion Models},
  author    = {Sadat, Seyedmorteza and Buhmann, Jakob and Bradley, Derek and Hilliges, Otmar and Weber, Romann M.},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2024},
  url       = {https://arxiv.org/abs/2405.14477}
}"""


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
    if isinstance(sizes, dict) and sizes:
        return [
            {
                "size": str(block.get("resolution", key)),
                "preprocessing": block.get("preprocessing"),
                "num_images": block.get("num_images", summary.get("num_images")),
                "models": block.get("models") or {},
            }
            for key, block in sizes.items()
        ]
    return [
        {
            "size": str(summary.get("resolution")),
            "preprocessing": summary.get("preprocessing"),
            "num_images": summary.get("num_images"),
            "models": summary.get("models") or {},
        }
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
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue  # not measured: no number in the metadata (the body says why)
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


def _fmt(value, spec: str = ".2f", missing: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


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


def _usage(
    class_name: str,
    repo_id: str | None,
    bundled_name: str | None,
    teacher: str | None,
    pipeline_id: str | None,
    latent_channels: int,
    has_fp16_variant: bool,
) -> str:
    if bundled_name:
        load = f'pretrained_path("{bundled_name}")'
        imports = f"from diffusers_litevae import {class_name}, pretrained_path"
        note = (
            f"The model ships inside the package: `{load}` is its folder, so it loads offline. Its weights are "
            "stored in float16: load with `torch_dtype=torch.float32` to compute in float32 (on CPU, do), or "
            "`torch_dtype=torch.float16` on a GPU."
        )
        if repo_id:
            note += f' On the Hub it is `"{repo_id}"`: `{class_name}.from_pretrained("{repo_id}")` loads the same.'
        dtype = "torch.float32"
    else:
        load = f'"{repo_id}"'
        imports = f"from diffusers_litevae import {class_name}"
        note = "Weights in float32" + (
            ', plus a float16 variant: add `variant="fp16", torch_dtype=torch.float16` to load it.'
            if has_fp16_variant
            else "."
        )
        dtype = "torch.float32"
    same_space = f"whose VAE is `{teacher}`" if teacher else "whose VAE shares this model's latent space"
    if pipeline_id:
        pipeline_lines = (
            f'pipe = DiffusionPipeline.from_pretrained("{pipeline_id}", torch_dtype=torch.float16).to("cuda")\n'
            f'pipe.vae = {class_name}.from_pretrained({load}, torch_dtype=torch.float16).to("cuda")\n'
        )
    else:
        pipeline_lines = (
            f"# `pipe`: a diffusers pipeline {same_space} (same latent space, much smaller encoder)\n"
            f"pipe.vae = {class_name}.from_pretrained({load}, torch_dtype=pipe.vae.dtype).to(pipe.device)\n"
        )
    return f"""```bash
# diffusers-litevae is not on PyPI yet: install it from a source checkout of the package
pip install .            # in the checkout; or build a wheel there and install it anywhere:
python -m build --wheel && pip install dist/diffusers_litevae-*.whl
```

{note}

```python
import torch
from diffusers import DiffusionPipeline

import diffusers_litevae  # makes {class_name} available to diffusers
{imports}

{pipeline_lines}```

Encode and decode directly (images in `[-1, 1]`, sides multiples of 8):

```python
vae = {class_name}.from_pretrained({load}, torch_dtype={dtype})
images = torch.rand(1, 3, 256, 256) * 2 - 1
latents = vae.encode(images).latent_dist.mode()  # (1, {latent_channels}, 32, 32)
reconstruction = vae.decode(latents).sample  # (1, 3, 256, 256) in about [-1, 1]
```"""


def _architecture(config: dict, encoder_parameters: int, decoder_parameters: int) -> str:
    preset = preset_name_of(config)
    factor = 2 ** config["wavelet_levels"]
    encoder = (
        f"LiteVAE encoder{f' (preset {preset})' if preset else ' (custom widths)'}: "
        f"{config['wavelet_levels']}-level Haar "
        f"wavelet transform, one feature UNet per level (width {config['encoder_feature_channels']}, multipliers "
        f"{tuple(config['encoder_feature_channel_mults'])}) and an aggregation UNet (width "
        f"{config['encoder_aggregation_channels']}, multipliers {tuple(config['encoder_aggregation_channel_mults'])}), "
        f"ResBlocks per UNet level: {config['encoder_layers_per_block']}"
    )
    class_name = config["_class_name"]
    # Only the SD-layout decoder has a post_quant_conv (AutoencoderLiteTiny's TAESD-family decoder has none).
    has_post_quant_conv = class_name == "AutoencoderLite" and config.get("use_post_quant_conv", True)
    if class_name == "AutoencoderLiteTiny":
        decoder = (
            f"TAESD-family decoder (width {config['decoder_channels']}, blocks per stage "
            f"{tuple(config['decoder_num_blocks'])}), no post_quant_conv"
        )
    else:
        decoder = (
            f"Stable-Diffusion-layout diffusers `Decoder` (block_out_channels {tuple(config['block_out_channels'])}, "
            f"layers_per_block {config['layers_per_block']}"
            f"{', Self-Modulated Convolutions' if config.get('use_smc') else ''}"
            f"{', with post_quant_conv' if has_post_quant_conv else ', no post_quant_conv'})"
        )
    rows = [
        ("Class", f"`diffusers_litevae.{class_name}`"),
        ("Encoder", encoder),
        ("Decoder", decoder),
        ("Latent space", f"{config['latent_channels']} channels, {factor}x downsampling"),
        ("scaling_factor / shift_factor", f"{config.get('scaling_factor')} / {config.get('shift_factor')}"),
        ("Encoder parameters", _millions(encoder_parameters)),
        (
            "Decoder parameters",
            _millions(decoder_parameters) + (" (including post_quant_conv)" if has_post_quant_conv else ""),
        ),
        ("Total parameters", _millions(encoder_parameters + decoder_parameters)),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


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


def _evaluation(summary: dict, label: str, trained_at: str | None, grid_file: str | None) -> str:
    blocks = metrics_by_size(summary)
    models = summary.get("models") or blocks[0]["models"]
    sizes = "; ".join(f"{_size_name(b['size'])} ({b['preprocessing'] or b['size']})" for b in blocks)
    lines = [
        f"Measured with `litevae eval` on **{blocks[0]['num_images']} images** of `{_dataset_id(summary)[0]}`. "
        "Every model saw the same pixels; PSNR and SSIM (11x11 Gaussian window, sigma 1.5) are computed on images "
        "in [0, 1] and averaged over images.",
        "",
        f"- Trained at: {trained_at or 'not recorded (no training record in the folder)'}.",
        f"- Measured at: {sizes}.",
    ]
    if summary.get("num_skipped"):
        lines.append(f"- {summary['num_skipped']} unreadable images were skipped (listed in the summary).")
    if summary.get("command"):
        lines += ["", "Command:", "", "```bash", summary["command"], "```"]
    lines += [
        "",
        "| evaluated at | model | class | PSNR (dB) | SSIM | LPIPS | rFID |",
        "|---|---|---|---|---|---|---|",
    ]
    missing = {}
    for block in blocks:
        for name, entry in block["models"].items():
            shown = f"**{name} (this model)**" if name == label else name
            lines.append(
                f"| {_size_name(block['size'])} | {shown} | {(models.get(name) or {}).get('class')} | "
                f"{_fmt(entry.get('psnr'))} | {_fmt(entry.get('ssim'), '.4f')} | "
                f"{_fmt(entry.get('lpips'), '.4f')} | {_fmt(entry.get('rfid'))} |"
            )
            missing.update(entry.get("missing_metrics") or {})
    if missing:
        lines += ["", "Not measured (n/a above):"] + [f"- {key}: {message}" for key, message in missing.items()]
    lines += ["", "| model | encoder params | decoder params |", "|---|---|---|"]
    for name, entry in models.items():
        shown = f"**{name} (this model)**" if name == label else name
        lines.append(
            f"| {shown} | {_millions(entry.get('encoder_parameters'))} | {_millions(entry.get('decoder_parameters'))} |"
        )
    lines += ["", "### Speed", ""]
    entry = models.get(label, {})
    if entry.get("encode_images_per_s") is None:
        lines.append("Speed was not measured in this evaluation (`--skip_speed`).")
    else:
        size = entry.get("speed_image_size") or ["?", "?"]
        lines += [
            f"Images per second, batch {entry.get('speed_batch_size')} at {size[0]}x{size[1]}, "
            f"on `{entry.get('device')}` "
            f"in {entry.get('dtype')}; encoder and decoder timed separately, median of {summary.get('speed_repeats')} "
            "runs after warm-up. All rows come from the same machine and run: "
            "compare rows, not numbers across machines.",
            "",
            "| model | encode img/s | decode img/s |",
            "|---|---|---|",
        ]
        for name, other in models.items():
            shown = f"**{name} (this model)**" if name == label else name
            lines.append(
                f"| {shown} | {_fmt(other.get('encode_images_per_s'))} | {_fmt(other.get('decode_images_per_s'))} |"
            )
    if grid_file:
        lines += [
            "",
            f"Reconstructions at {_size_name(blocks[0]['size'])} (original, then each model; captions are per-image "
            "PSNR):",
            "",
            f"![reconstructions]({grid_file})",
        ]
    return "\n".join(lines)


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for key, value in settings.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _training(distillation: dict | None, curve_file: str | None = None) -> str:
    if not distillation:
        return "No `distillation.json` was found in the model folder, so the training settings are not recorded here."
    teacher = distillation.get("teacher", {}) or {}
    student = distillation.get("student", {}) or {}
    final = distillation.get("final_metrics", {}) or {}
    lines = [
        f"The encoder was distilled with `litevae distill`: its latents are trained to match the frozen teacher "
        f"`{teacher_display_name(teacher.get('name_or_path'))}` ({teacher.get('type')}, "
        f"{teacher.get('latent_channels')} latent channels), whose decoder is kept unchanged, so the latent space is "
        "the teacher's and models trained on it keep working.",
        "",
        "| | |",
        "|---|---|",
        (
            f"| Student encoder | preset {student.get('preset') or 'custom'}, "
            f"{_millions(student.get('encoder_parameters'))} |"
        ),
        f"| Steps / images seen | {final.get('step')} / {final.get('images_seen')} |",
        f"| Wall time | {_fmt(distillation.get('wall_time_s'), '.0f')} s |",
        f"| Training throughput | {_fmt(distillation.get('train_images_per_s'))} images/s |",
    ]
    campaign = distillation.get("campaign")
    if campaign:  # a resumable campaign across runs (conversion/distill_campaign.py): what each device gave it
        minutes = ", ".join(
            f"{seconds / 60:.1f} {kind.upper()} minutes" for kind, seconds in campaign["seconds"].items()
        )
        runs = len(campaign.get("runs") or [])
        lines.append(f"| Last stage: campaign of {runs} run(s) | {campaign['images_seen']} images in {minutes} |")
    if distillation.get("command"):
        lines += ["", "Training command:", "", "```bash", distillation["command"], "```"]
    if distillation.get("note"):
        lines += ["", f"Note on this record: {distillation['note']}"]
    if final:
        lines += [
            "",
            f"Final evaluation during training ({final.get('eval_images')} images of {final.get('eval_set')}):",
            "",
            "| | student | teacher |",
            "|---|---|---|",
            f"| PSNR (dB) | {_fmt(final.get('psnr_student'))} | {_fmt(final.get('psnr_teacher'))} |",
            f"| SSIM | {_fmt(final.get('ssim_student'), '.4f')} | {_fmt(final.get('ssim_teacher'), '.4f')} |",
            f"| latent MSE to the teacher | {_fmt(final.get('latent_mse'), '.5f')} | |",
        ]
    curve = distillation.get("curve") or []
    if curve:
        # A handful of evenly spaced points tells the shape of the curve; the full list is in distillation.json.
        picks = sorted({round(i * (len(curve) - 1) / 5) for i in range(6)}) if len(curve) > 6 else range(len(curve))
        lines += [
            "",
            "Training curve (from `distillation.json`):",
            "",
            "| step | wall time (s) | student PSNR (dB) | latent MSE |",
            "|---|---|---|---|",
        ]
        for index in picks:
            point = curve[index]
            lines.append(
                f"| {point.get('step')} | {_fmt(point.get('wall_time_s'), '.0f')} | "
                f"{_fmt(point.get('psnr_student'))} | "
                f"{_fmt(point.get('latent_mse'), '.5f')} |"
            )
    if curve_file:
        lines += ["", f"![training curve]({curve_file})"]
    lines += _settings_details(distillation.get("settings") or {})
    return "\n".join(lines)


def _settings_details(settings: dict) -> list[str]:
    """A collapsed table of every training setting (empty without settings)."""
    if not settings:
        return []
    lines = ["", "<details><summary>All training settings</summary>", "", "| setting | value |", "|---|---|"]
    lines += [f"| `{key}` | `{json.dumps(value)}` |" for key, value in _flatten(settings)]
    return lines + ["", "</details>"]


def _training_from_scratch(training: dict, curve_file: str | None = None) -> str:
    model = training.get("model", {}) or {}
    final = training.get("final_metrics", {}) or {}
    lines = [
        "Trained from scratch (encoder and decoder) with `litevae train`: L1 reconstruction, KL to N(0, I), the "
        "wavelet and Gaussian losses, LPIPS when enabled, and a per-pixel U-Net discriminator at a constant weight "
        "from a later step, with the resolution schedule below (LiteVAE, NeurIPS 2024, section 4.3).",
        "",
        "| | |",
        "|---|---|",
        f"| Encoder | LiteVAE-{model.get('encoder_preset')}, {_millions(model.get('encoder_parameters'))} |",
        f"| Decoder | {model.get('decoder')} |",
        f"| Latent channels | {model.get('latent_channels')} |",
        f"| scaling_factor / shift_factor (measured on training crops) | {_fmt(model.get('scaling_factor'), '.5f')}"
        f" / {_fmt(model.get('shift_factor'), '.5f')} |",
        f"| Steps / images seen | {final.get('step')} / {final.get('images_seen')} |",
        f"| Wall time | {_fmt(training.get('wall_time_s'), '.0f')} s |",
        f"| Training throughput | {_fmt(training.get('train_images_per_s'))} images/s |",
        f"| Final validation ({final.get('eval_images')} images of {final.get('eval_set')}) | PSNR "
        f"{_fmt(final.get('psnr'))} dB, SSIM {_fmt(final.get('ssim'), '.4f')} |",
    ]
    if training.get("command"):
        lines += ["", "Training command:", "", "```bash", training["command"], "```"]
    if curve_file:
        lines += ["", f"![training curve]({curve_file})"]
    lines += _settings_details(training.get("settings") or {})
    return "\n".join(lines)


def build_model_card(
    name: str,
    folder: str | Path,
    config: dict,
    encoder_parameters: int,
    decoder_parameters: int,
    summary: dict,
    label: str,
    repo_id: str | None = None,
    bundled_name: str | None = None,
    distillation: dict | None = None,
    training: dict | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    pipeline_id: str | None = None,
    teacher_description: str | None = None,
) -> ModelCard:
    """Build the model card (``README.md``) of the ``AutoencoderLite`` folder ``folder``.

    The card describes the folder as it is: "Files" lists the files in it (and ``README.md``), and the
    reconstruction grid (``eval/grid.png``) and training curve (``curve.png``) are shown only when the folder has
    them. Write every other file first, then ``card.save(folder / "README.md")``.

    Args:
        name: the model's name (card title and model-index name), e.g. ``"litevae-s-taef2"``.
        folder: the folder the card is written into.
        config: the model's config (``config.json`` contents).
        encoder_parameters: parameters of ``model.encoder``.
        decoder_parameters: parameters of ``model.decoder``, plus ``post_quant_conv`` when the model has one.
        summary: a ``litevae eval`` ``summary.json`` dict, at one size or several (``summary["sizes"]``).
        label: this model's key in ``summary["models"]``.
        repo_id: Hub repo of the model (``owner/name``): the usage snippet loads it from there.
        bundled_name: name of the model bundled with diffusers-litevae: the snippet loads
            ``pretrained_path(bundled_name)`` (offline). At least one of ``repo_id`` and ``bundled_name`` is needed.
        distillation: the run's ``distillation.json`` dict, if any (training section, teacher).
        training: the ``training.json`` dict of a model trained from scratch with ``litevae train``, if any.
        license: Hub license id of the weights.
        base_model: Hub id of the teacher VAE; default: the teacher's ``name_or_path`` when that is a Hub id.
        pipeline_id: a pipeline repo to show in the usage snippet (optional).
        teacher_description: one sentence on the teacher (what it is, its author and licence), said once in the
            introduction; elsewhere the card names the teacher by its short name.

    Returns:
        A ``huggingface_hub.ModelCard``.

    Raises:
        ValueError: neither ``repo_id`` nor ``bundled_name``, or ``label`` not in the summary.
    """
    if not repo_id and not bundled_name:
        raise ValueError(
            "the card needs the model's Hub repo id (owner/name) or its bundled name to show how to load it."
        )
    if label not in (summary.get("models") or metrics_by_size(summary)[0]["models"]):
        raise ValueError(f"the summary has no model {label!r}.")
    folder = Path(folder)
    teacher = teacher_display_name(((distillation or {}).get("teacher") or {}).get("name_or_path"))
    if base_model is None and teacher and is_hub_repo_id(teacher):
        base_model = teacher
    card_data = ModelCardData(
        license=license,
        library_name="diffusers",
        tags=list(CARD_TAGS),
        base_model=base_model,
        model_name=name,
        eval_results=eval_results_from_summary(summary, label) or None,
    )
    preset = preset_name_of(config)
    intro = (
        f"A [LiteVAE](https://arxiv.org/abs/2405.14477) autoencoder for diffusers: a wavelet-based "
        f"{'LiteVAE-' + preset if preset else 'LiteVAE'} encoder ({_millions(encoder_parameters)} parameters)"
    )
    if teacher:
        about = [teacher_description] if teacher_description else []
        if _bundled(teacher):
            about.append(f'bundled with diffusers-litevae as `pretrained_path("{teacher}")`')
        intro += (
            f" distilled against `{teacher}`{' (' + '; '.join(about) + ')' if about else ''}, with that VAE's decoder "
            f"unchanged. It encodes into the same latent space as `{teacher}`, so it replaces that VAE in existing "
            "pipelines and latent-caching jobs."
        )
    elif training:
        intro += (
            f" and a {((training.get('model') or {}).get('decoder') or '')} decoder, trained from scratch with "
            "`litevae train` (the LiteVAE paper's recipe). Its latent space is its own: use it for a new latent "
            "diffusion model, not as a drop-in for another VAE."
        )
    else:
        intro += f" with its decoder, packaged as a diffusers model (`{config['_class_name']}`)."
    license_note = f"The weights are released under `{license}`." + (
        f" The decoder weights are copied from `{teacher}`; its license also applies to them." if teacher else ""
    )
    files = sorted({"README.md", *(str(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file())})
    grid_file = "eval/grid.png" if (folder / "eval" / "grid.png").is_file() else None
    curve_file = "curve.png" if (folder / "curve.png").is_file() else None
    record = training if training else distillation
    usage = _usage(
        config["_class_name"],
        repo_id,
        bundled_name,
        teacher,
        pipeline_id,
        config["latent_channels"],
        (folder / "diffusion_pytorch_model.fp16.safetensors").is_file(),
    )
    body = f"""# {name}

{intro}

## Usage

{usage}

## Architecture

{_architecture(config, encoder_parameters, decoder_parameters)}

## Evaluation

{_evaluation(summary, label, training_sizes(record), grid_file)}

## Training

{_training_from_scratch(training, curve_file) if training else _training(distillation, curve_file)}

## Files

{chr(10).join(f"- `{file}`" for file in files)}

## License

{license_note}

## Citation

```bibtex
{CITATION}
```
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
