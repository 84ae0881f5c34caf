"""``evaluate_vaes``: reconstruction quality and speed of several VAEs on the same images, in one pass.

Results: per-image rows, a summary dict (the ``summary.json`` schema documented in ``docs/evaluation_and_hub.md``)
and a side-by-side reconstruction grid.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..file_io import check_output_dir
from ..image_io import (
    describe_read_error,
    folder_images,
    images_to_unit_tensor,
    load_image,
    make_reconstruction_grid,
    unit_tensor_to_images,
)
from ..runtime import compile_mode, resolve_compile, resolve_dtype
from .images import describe_preprocessing, parse_resolutions, prepare_image
from .metrics import (
    SSIM_WINDOW,
    LPIPSUnavailableError,
    load_fid_factory,
    load_lpips,
    lpips_per_image,
    psnr_per_image,
    ssim_per_image,
)
from .settings import EvalSettings, EvaluationInputError
from .vaes import ReconstructionModel, as_reconstruction_model

__all__ = ["EvaluationResult", "evaluate_vaes", "format_summary", "measure_throughput", "resolve_device"]

CSV_COLUMNS = ("image_index", "image", "model", "resolution", "width", "height", "psnr", "ssim", "lpips")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_vaes` measured.

    Attributes:
        summary: the ``summary.json`` dict (dataset, resolution, num_images, models -> metrics and speed).
        per_image: one dict per (image, model) with the ``CSV_COLUMNS`` keys.
        grid: side-by-side reconstruction grid (``None`` when ``grid_images=0``).
    """

    summary: dict
    per_image: list[dict] = field(default_factory=list)
    grid: Image.Image | None = None

    def save(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``summary.json``, ``per_image.csv`` and ``grid.png`` into ``output_dir``; returns their paths."""
        output_dir = check_output_dir(output_dir, "eval", EvaluationInputError)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {"summary": output_dir / "summary.json", "per_image": output_dir / "per_image.csv"}
        paths["summary"].write_text(json.dumps(self.summary, indent=2) + "\n")
        with open(paths["per_image"], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in self.per_image:
                writer.writerow({key: "" if row.get(key) is None else row[key] for key in CSV_COLUMNS})
        if self.grid is not None:
            paths["grid"] = output_dir / "grid.png"
            self.grid.save(paths["grid"])
        return paths


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available, else MPS, else CPU; otherwise ``torch.device(device)``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationInputError("device 'cuda' requested but CUDA is not available here; use --device cpu.")
    return device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_throughput(
    model: ReconstructionModel,
    images: torch.Tensor,
    warmup: int = 1,
    repeats: int = 3,
    *,
    compile: bool | None = None,
    details: dict | None = None,
) -> tuple[float, float]:
    """Encoder and decoder throughput in images/s on one batch, each timed separately after ``warmup`` untimed runs;
    the median of ``repeats`` runs, so one run slowed by another process on a shared machine does not skew it.

    Args:
        model: the model (already on its device / dtype).
        images: ``(B, 3, H, W)`` in ``[0, 1]``; the batch the figures refer to.
        warmup: untimed runs first; at least 3 when compiled (compiling, then CUDA-graph warm-up and capture).
        repeats: timed runs per encoder and decoder.
        compile: time ``torch.compile``d encode and decode, as the hot paths run them; ``None``: on for CUDA only
            (:func:`~diffusers_litevae.runtime.resolve_compile`).
        details: if given, filled with ``compiled`` and ``warmup_s`` (the untimed runs, compiling included).

    Returns:
        ``(encode images/s, decode images/s)``: ``B / median seconds per run``.
    """
    if repeats < 1:
        raise EvaluationInputError(f"repeats must be >= 1, got {repeats}.")
    device = model.device
    images = images.to(device, model.dtype)
    compiled = resolve_compile(compile, device)
    encode, decode = _compiled_calls(model, device) if compiled else (model.encode, model.decode)
    warmup_start = time.perf_counter()
    latents = None
    for _ in range(max(warmup, 3) if compiled else warmup):
        latents = encode(images).clone()  # a CUDA graph's output is overwritten by its next run
        decode(latents)
    _synchronize(device)
    if details is not None:
        details.update(compiled=compiled, warmup_s=time.perf_counter() - warmup_start)
    encode_seconds = _median_seconds(lambda: encode(images), repeats, device)
    latents = encode(images).clone() if latents is None else latents  # no warm-up run to take them from
    decode_seconds = _median_seconds(lambda: decode(latents), repeats, device)
    return images.shape[0] / encode_seconds, images.shape[0] / decode_seconds


def _compiled_calls(model: ReconstructionModel, device: torch.device) -> list:
    """``torch.compile``d encode and decode (static shapes); on CUDA each call starts a new CUDA-graph step."""
    mode = compile_mode(device, inference=True)
    options = dict(dynamic=False, **({"mode": mode} if mode else {}))
    calls = [torch.compile(fn, **options) for fn in (model.encode, model.decode)]
    if device.type != "cuda":
        return calls

    def new_step(fn):
        def call(argument):
            torch.compiler.cudagraph_mark_step_begin()
            return fn(argument)

        return call

    return [new_step(fn) for fn in calls]


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _named_images(images) -> tuple[Iterable[tuple[str, object]], int | None, str]:
    """``images`` (a folder path, :class:`~diffusers_litevae.image_io.NamedImages`, PIL images, or ``(name, image)``
    pairs) as ``(name, image data)`` pairs, their number (``None``: unknown) and a name for the report."""
    if isinstance(images, (str, os.PathLike)):
        named = folder_images(images)
        return named, len(named), os.fspath(images)
    if isinstance(images, Image.Image):
        images = [images]

    def pairs():
        for index, item in enumerate(images):
            if isinstance(item, Image.Image):
                yield f"{index}", item
            elif isinstance(item, tuple) and len(item) == 2:
                yield str(item[0]), item[1]
            else:
                raise TypeError(
                    f"images must be PIL images or (name, image) pairs; item {index} is {type(item).__name__}."
                )

    try:
        length = len(images)
    except TypeError:  # generators, streaming datasets
        length = None
    return pairs(), length, "in-memory images"


@dataclass
class _Metrics:
    """The metric networks that loaded on ``device``, and why the others are missing (metric -> message)."""

    device: torch.device
    lpips: torch.nn.Module | None = None
    fid_factory: Callable | None = None
    missing: dict[str, str] = field(default_factory=dict)


def _load_metrics(settings: EvalSettings, device: torch.device) -> _Metrics:
    metrics = _Metrics(device)
    if settings.skip_lpips:
        metrics.missing["lpips"] = "LPIPS not computed: disabled (--skip_lpips)."
    else:
        try:
            metrics.lpips = load_lpips("alex", device)
        except LPIPSUnavailableError as error:
            metrics.missing["lpips"] = f"LPIPS not computed: {error}"
    if settings.skip_rfid:
        metrics.missing["rfid"] = "rFID not computed: disabled (--skip_rfid)."
    else:
        metrics.fid_factory, message = load_fid_factory(device)
        if message:
            metrics.missing["rfid"] = message
    return metrics


class _SizeRun:
    """Everything measured at one evaluation size: per-image rows, rFID accumulators, the grid's tiles, and the
    batch being filled (images of one pixel size, at most ``batch_size``)."""

    def __init__(self, resolution: int | str, labels: list[str], fid_factory: Callable | None, batch_size: int):
        self.resolution = resolution
        self.rows: list[dict] = []
        self.fids = {label: fid_factory() for label in labels} if fid_factory else {}
        self.grid_images = 0  # how many of its images the grid shows
        self.grid_originals: list[Image.Image] = []
        self.grid_reconstructions: dict[str, list[Image.Image]] = {label: [] for label in labels}
        self.batch_size = batch_size
        self.pending: list[tuple[int, str, Image.Image]] = []
        self.first_batch: torch.Tensor | None = None

    def add(self, index: int, name: str, image: Image.Image) -> list[tuple[int, str, Image.Image]]:
        """Queue an image; returns the batch it closes (the image has another pixel size, or the batch is full)."""
        closed = []
        if self.pending and (image.size != self.pending[0][2].size or len(self.pending) == self.batch_size):
            closed = self.close()
        self.pending.append((index, name, image))
        return closed

    def close(self) -> list[tuple[int, str, Image.Image]]:
        """The batch being filled, taken out."""
        closed, self.pending = self.pending, []
        return closed

    def grid(self, tile_height: int) -> Image.Image | None:
        """The grid of the first images, each reconstruction captioned with its PSNR (rows are in image order)."""
        if not self.grid_originals:
            return None
        shown = len(self.grid_originals)
        captions = {
            label: [f"{row['psnr']:.2f} dB" for row in self.rows if row["model"] == label][:shown]
            for label in self.grid_reconstructions
        }
        return make_reconstruction_grid(
            self.grid_originals, self.grid_reconstructions, captions, tile_height=tile_height
        )


def _evaluate_batch(
    run: _SizeRun, batch: list[tuple[int, str, Image.Image]], models: dict[str, ReconstructionModel], metrics: _Metrics
) -> None:
    """Reconstruct one batch with every model; record its rows, rFID features and grid tiles in ``run``."""
    if not batch:
        return
    images = [image for _, _, image in batch]
    originals = images_to_unit_tensor(images)
    if run.first_batch is None:
        run.first_batch = originals
    keep = max(0, min(run.grid_images - len(run.grid_originals), len(images)))
    run.grid_originals.extend(images[:keep])
    for label, model in models.items():
        reconstructions = model.reconstruct(originals)
        psnr = psnr_per_image(reconstructions, originals).tolist()
        ssim = ssim_per_image(reconstructions, originals).tolist()
        lpips = [None] * len(batch)
        if metrics.lpips:
            lpips = lpips_per_image(metrics.lpips, reconstructions.to(metrics.device), originals.to(metrics.device))
            lpips = lpips.tolist()
        if label in run.fids:
            run.fids[label].update(originals.to(metrics.device), real=True)
            run.fids[label].update(reconstructions.to(metrics.device), real=False)
        where = dict(model=label, resolution=run.resolution, width=originals.shape[-1], height=originals.shape[-2])
        run.rows += [
            dict(image_index=index, image=name, **where, psnr=psnr[offset], ssim=ssim[offset], lpips=lpips[offset])
            for offset, (index, name, _) in enumerate(batch)
        ]
        run.grid_reconstructions[label].extend(unit_tensor_to_images(reconstructions[:keep]))


def _prepare(data, sizes: list[int | str], settings: EvalSettings) -> tuple[list[Image.Image], str | None]:
    """The image read from ``data`` and prepared at every size, or why it is skipped."""
    try:
        image = load_image(data)
        prepared = [prepare_image(image, size, settings.crop, not settings.no_resize) for size in sizes]
    except Exception as error:  # noqa: BLE001 (damaged files, decompression bombs, ...: PIL raises many kinds)
        return [], describe_read_error(error)
    too_small = [item.size for item in prepared if min(item.size) < SSIM_WINDOW]
    if too_small:
        width, height = too_small[0]
        return [], f"{width}x{height} after preprocessing; SSIM needs {SSIM_WINDOW}x{SSIM_WINDOW} or more"
    return prepared, None


def _evaluate_images(
    named_images, total: int | None, models: dict, metrics: _Metrics, settings: EvalSettings, progress: bool
) -> tuple[list[_SizeRun], int, list[tuple[str, str]]]:
    """Read every image, prepare it at every size and evaluate it in batches (``total``: how many images there are,
    for the progress bar); returns what was measured at each size, how many images were evaluated, and the skipped
    ones (name, reason)."""
    sizes = parse_resolutions(settings.resolution)
    runs = [_SizeRun(size, list(models), metrics.fid_factory, settings.batch_size) for size in sizes]
    runs[0].grid_images = settings.grid_images  # the grid shows the first size
    if total is not None and settings.max_images is not None:
        total = min(total, settings.max_images)
    count, skipped = 0, []
    bar = tqdm(total=total, unit="img", desc="evaluating", disable=not progress)
    try:  # the bar is closed on Ctrl-C too, so the command's last line is its own message
        for name, data in named_images:
            if settings.max_images is not None and count >= settings.max_images:
                break
            prepared, reason = _prepare(data, [run.resolution for run in runs], settings)
            if reason:
                skipped.append((name, reason))
                continue
            for run, image in zip(runs, prepared):
                _evaluate_batch(run, run.add(count, name, image), models, metrics)
            count += 1
            bar.update(1)
            if runs[0].rows:
                psnr = {label: _mean([r["psnr"] for r in runs[0].rows if r["model"] == label]) for label in models}
                bar.set_postfix({f"{label} PSNR": f"{value:.2f}" for label, value in psnr.items()})
        for run in runs:
            _evaluate_batch(run, run.close(), models, metrics)
    finally:
        bar.close()
    return runs, count, skipped


def evaluate_vaes(
    models: Mapping[str, object],
    images,
    settings: EvalSettings | None = None,
    *,
    dataset_name: str | None = None,
    subfolders: Mapping[str, str | None] | None = None,
    progress: bool = True,
    **changes,
) -> EvaluationResult:
    """Reconstruction metrics and speed of one or more VAEs on the same images, at one or several sizes.

    PSNR and SSIM (and LPIPS / rFID where their networks load) are recorded per image; then each model's encoder and
    decoder are timed on the first batch of the first size (the size the grid shows). Images that cannot be read or
    prepared are skipped and listed in the summary; only when no image can be read is an error raised.

    Args:
        models: label -> a diffusers VAE, a ``(TinyEncoder, TinyDecoder)`` pair, a
            :class:`~diffusers_litevae.evaluation.vaes.ReconstructionModel`, or a folder / Hub id / bundled name.
        images: a folder of images, or PIL images, or ``(name, image)`` pairs whose image is a PIL image, a path,
            encoded bytes or a ``datasets`` image value (e.g. :func:`~diffusers_litevae.image_io.dataset_images`).
        settings: how to evaluate (default: ``EvalSettings()``).
        dataset_name: name recorded in the summary (default: the folder path).
        subfolders: label -> subfolder, for models given as folder / Hub id strings.
        progress: show a tqdm progress bar.
        **changes: settings that differ from ``settings``, as :meth:`EvalSettings.replace` takes them.

    Returns:
        An :class:`EvaluationResult` (``.save(output_dir)`` writes it); ``summary["models"]`` holds the first size's
        metrics and the speed, ``summary["sizes"][str(size)]["models"]`` every size's.

    Raises:
        EvaluationInputError: bad settings, or no image could be read.
        ImageInputError: the folder does not exist or holds no images.
    """
    settings = (settings or EvalSettings()).replace(**changes)
    if not models:
        raise EvaluationInputError("no models to evaluate: pass at least one (label -> VAE).")
    device, dtype = resolve_device(settings.device), resolve_dtype(settings.dtype)
    named_images, total, source_name = _named_images(images)
    loaded = {
        label: as_reconstruction_model(model, device, dtype, (subfolders or {}).get(label))
        for label, model in models.items()
    }
    metrics = _load_metrics(settings, device)
    runs, count, skipped = _evaluate_images(named_images, total, loaded, metrics, settings, progress)
    dataset_name = dataset_name or source_name
    if count == 0 and skipped:
        raise EvaluationInputError(
            f"none of the {len(skipped)} images in {dataset_name!r} could be read (first: {skipped[0][0]}: "
            f"{skipped[0][1]}); pass a folder of readable images."
        )
    if count == 0:
        raise EvaluationInputError(f"no images were read from {dataset_name!r}.")
    summary = _summary(settings, runs, loaded, metrics, count, skipped, dataset_name)
    first_size = summary["sizes"][str(runs[0].resolution)]["models"]
    for label, model in loaded.items():
        speed = _speed(model, runs[0].first_batch, settings)
        summary["models"][label] = _model_entry(model, first_size[label], speed, device, dtype)
    rows = sorted((row for run in runs for row in run.rows), key=lambda row: row["image_index"])
    return EvaluationResult(summary=summary, per_image=rows, grid=runs[0].grid(settings.grid_tile_height))


def _summary(settings: EvalSettings, runs, models, metrics: _Metrics, count: int, skipped, dataset_name: str) -> dict:
    """The summary without its ``models`` entries: what was evaluated, how, and every size's metrics."""
    resolution = runs[0].resolution
    resize = not settings.no_resize
    summary = {
        "dataset": dataset_name,
        "resolution": resolution,
        "resolutions": [run.resolution for run in runs],
        "preprocessing": describe_preprocessing(resolution, settings.crop, resize),
        "num_images": count,
        "num_skipped": len(skipped),
        "skipped": [{"image": name, "error": reason} for name, reason in skipped],
        "batch_size": settings.batch_size,
        "speed_warmup": None if settings.skip_speed else settings.speed_warmup,
        "speed_repeats": None if settings.skip_speed else settings.speed_repeats,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": {},
        "sizes": {},
    }
    for run in runs:
        summary["sizes"][str(run.resolution)] = {
            "resolution": run.resolution,
            "preprocessing": describe_preprocessing(run.resolution, settings.crop, resize),
            "num_images": count,
            "models": {label: _size_metrics(run, label, metrics) for label in models},
        }
    return summary


def _size_metrics(run: _SizeRun, label: str, metrics: _Metrics) -> dict:
    """One model's metrics at one size: means over the images, rFID, and why any metric is missing."""
    rows = [row for row in run.rows if row["model"] == label]
    missing, rfid = dict(metrics.missing), None
    if label in run.fids:
        try:
            rfid = float(run.fids[label].compute())
        except Exception as error:  # e.g. fewer than 2 images
            missing["rfid"] = f"rFID not computed: {type(error).__name__}: {error}"
    return {
        "psnr": _mean([row["psnr"] for row in rows]),
        "ssim": _mean([row["ssim"] for row in rows]),
        "lpips": _mean([row["lpips"] for row in rows]) if metrics.lpips else None,
        "rfid": rfid,
        "missing_metrics": missing,
    }


def _model_entry(model: ReconstructionModel, metrics: dict, speed: dict, device, dtype) -> dict:
    """One model's ``summary["models"]`` entry: the first size's metrics, its speed and sizes."""
    encoder_parameters, decoder_parameters = model.parameter_counts()
    return {
        "name_or_path": model.name_or_path,
        "class": model.class_name,
        **metrics,
        **speed,
        "encoder_parameters": encoder_parameters,
        "decoder_parameters": decoder_parameters,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
    }


def _speed(model: ReconstructionModel, batch: torch.Tensor | None, settings: EvalSettings) -> dict:
    """The speed figures of a ``summary["models"]`` entry, timed on ``batch`` (``None`` when speed is skipped)."""
    if settings.skip_speed or batch is None:
        return dict(encode_images_per_s=None, decode_images_per_s=None, speed_batch_size=None, speed_image_size=None)
    encode_ips, decode_ips = measure_throughput(model, batch, settings.speed_warmup, settings.speed_repeats)
    return dict(
        encode_images_per_s=encode_ips,
        decode_images_per_s=decode_ips,
        speed_batch_size=int(batch.shape[0]),
        speed_image_size=[int(batch.shape[-2]), int(batch.shape[-1])],
    )


def _mean(values: list) -> float:
    values = [value for value in values if value is not None]
    return math.fsum(values) / len(values) if values else float("nan")


_HEADER = (
    f"{'model':<24}{'PSNR dB':>9}{'SSIM':>8}{'LPIPS':>8}{'rFID':>8}"
    f"{'enc img/s':>11}{'dec img/s':>11}{'enc params':>12}{'dec params':>12}"
)


def _number(value, spec: str) -> str:
    """``value`` in ``spec``'s format; a right-aligned ``-`` where it is missing (``None`` or NaN)."""
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if value is None or value != value else format(value, spec)


def _summary_row(label: str, metrics: dict, entry: dict, timed: bool) -> str:
    """One model's line of :func:`format_summary`; its speed only where ``timed`` (the size speed was timed at)."""
    encode, decode = (entry["encode_images_per_s"], entry["decode_images_per_s"]) if timed else (None, None)
    return (
        f"{label[:23]:<24}{_number(metrics['psnr'], '9.2f')}{_number(metrics['ssim'], '8.4f')}"
        f"{_number(metrics['lpips'], '8.4f')}{_number(metrics['rfid'], '8.2f')}"
        f"{_number(encode, '11.2f')}{_number(decode, '11.2f')}"
        f"{entry['encoder_parameters'] / 1e6:>10.2f} M{entry['decoder_parameters'] / 1e6:>10.2f} M"
    )


def format_summary(summary: dict) -> str:
    """A plain-text table of a summary dict (one block per evaluation size), the skipped images, and the
    missing-metric messages."""
    sizes = list(summary.get("sizes", {}).values())
    intro = f"{summary['num_images']} images from {summary['dataset']}"
    lines, blocks = [], [(f"{intro} ({summary['preprocessing']})", summary["models"])]
    if len(sizes) > 1:
        lines = [f"{intro}, at {len(sizes)} sizes"]
        blocks = [(f"at {size['resolution']} ({size['preprocessing']})", size["models"]) for size in sizes]
    messages: dict[str, str] = {}
    for number, (title, metrics) in enumerate(blocks):
        lines += [title, _HEADER]
        for label, entry in summary["models"].items():
            lines.append(_summary_row(label, metrics[label], entry, timed=number == 0))
            messages.update(metrics[label].get("missing_metrics", {}))
    first = next(iter(summary["models"].values()))
    if first.get("speed_batch_size"):
        height, width = first["speed_image_size"]
        lines.append(
            f"speed: batch {first['speed_batch_size']} at {height}x{width}, {first['device']} {first['dtype']}, "
            f"median of {summary.get('speed_repeats')} timed runs after {summary.get('speed_warmup')} warm-up run(s)"
        )
    skipped = summary.get("skipped") or []
    if skipped:
        lines.append(f"skipped {len(skipped)} image(s) that could not be read or evaluated:")
        lines.extend(f"  {item['image']}: {item['error']}" for item in skipped)
    lines.extend(f"{name}: {message}" for name, message in messages.items())
    return "\n".join(lines)
