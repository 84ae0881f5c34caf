"""Validation during training: PSNR/SSIM of reconstructions (of a whole autoencoder, or of a distilled student and
its teacher), latent MSE, grids, curves.

In distillation both reconstructions go through the same frozen teacher decoder, so the gap between ``psnr_student``
and ``psnr_teacher`` is exactly what the distilled encoder loses. Images are measured one at a time, so validation
images may keep their own full sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..image_io import centre_crop, make_reconstruction_grid, unit_tensor_to_images
from ..models.tiny_autoencoder import signed_to_unit
from .teachers import DistillationTeacher

__all__ = [
    "TeacherReference",
    "compute_teacher_reference",
    "evaluate_autoencoder",
    "plot_curve",
    "save_reconstruction_grid",
]

logger = logging.getLogger(__name__)


def image_metrics(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and SSIM of one ``(1, 3, H, W)`` reconstruction against its target, both in ``[-1, 1]``: those of
    ``litevae eval``, so training curves and model cards report one PSNR and one SSIM."""
    from ..evaluation.metrics import psnr_per_image, ssim_per_image

    prediction = signed_to_unit(reconstruction.float().clamp(-1, 1))
    reference = signed_to_unit(target.float().clamp(-1, 1))
    return float(psnr_per_image(prediction, reference)[0]), float(ssim_per_image(prediction, reference)[0])


@dataclass
class TeacherReference:
    """The teacher's side of validation, computed once per run: per image, the teacher's posterior mean in normalized
    units (``latents``, ``(1, C, H/8, W/8)`` on CPU), the PSNR and SSIM of teacher-encode -> teacher-decode, and the
    teacher's reconstructions of the first images (for grids, on CPU)."""

    latents: list[torch.Tensor] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    grid_reconstructions: list[torch.Tensor] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {"psnr_teacher": float(np.mean(self.psnr)), "ssim_teacher": float(np.mean(self.ssim))}


def _teacher_input(teacher: DistillationTeacher, images: torch.Tensor) -> torch.Tensor:
    parameter = next(teacher.parameters())
    return images.to(parameter.device, parameter.dtype)


@torch.no_grad()
def compute_teacher_reference(
    teacher: DistillationTeacher,
    images: Sequence[torch.Tensor],
    autocast=None,
    num_grid_images: int = 4,
) -> TeacherReference:
    """Teacher latents and teacher-reconstruction metrics for each validation image.

    Args:
        teacher: the frozen teacher.
        images: ``(3, H, W)`` tensors in ``[-1, 1]`` (sizes may differ).
        autocast: a context-manager factory (e.g. ``accelerator.autocast``) or ``None``.
        num_grid_images: how many teacher reconstructions to keep for grids.
    """
    reference = TeacherReference()
    for index, image in enumerate(images):
        x = _teacher_input(teacher, image[None])
        with autocast() if autocast else nullcontext():
            mean, _ = teacher.encode(x)
            reconstruction = teacher.decode(mean)
        psnr, ssim = image_metrics(reconstruction, x)
        reference.latents.append(teacher.normalize_latents(mean.float()).cpu())
        reference.psnr.append(psnr)
        reference.ssim.append(ssim)
        if index < num_grid_images:
            reference.grid_reconstructions.append(reconstruction.float().cpu()[0])
    return reference


@torch.no_grad()
def evaluate_autoencoder(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    autocast=None,
    num_grid_images: int = 0,
    *,
    teacher: DistillationTeacher | None = None,
    reference: TeacherReference | None = None,
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Encode (posterior mean) -> decode metrics on the validation images: of a whole autoencoder, or of a distilled
    student encoder through the frozen teacher's decoder.

    Args:
        model: without ``teacher``, the ``AutoencoderLite``; with ``teacher``, the student's LiteVAE encoder (images
            -> moments ``(B, 2C, H/8, W/8)``), whose posterior mean the teacher decodes.
        images, autocast: as in :func:`compute_teacher_reference`.
        num_grid_images: how many reconstructions to return for grids.
        teacher: the frozen teacher (distillation), or ``None``.
        reference: :func:`compute_teacher_reference` for the same images; required with ``teacher``.

    Returns:
        ``(metrics, reconstructions)``: the mean ``psnr``, ``ssim`` and ``eval_images``; with ``teacher``,
        ``psnr_student`` and ``ssim_student`` instead, ``latent_mse`` (normalized units), ``psnr_teacher`` and
        ``ssim_teacher``. The first ``num_grid_images`` reconstructions ``(3, H, W)`` on CPU.
    """
    if teacher is not None and reference is None:
        raise ValueError("a student evaluated through its teacher needs the teacher's reference.")
    was_training = model.training
    model.eval()
    parameter = next(model.parameters())
    psnrs, ssims, latent_mses, reconstructions = [], [], [], []
    try:
        for index, image in enumerate(images):
            x = image[None].to(parameter.device)
            with autocast() if autocast else nullcontext():
                if teacher is None:
                    reconstruction = model.decode(model.encode(x.to(parameter.dtype)).latent_dist.mode()).sample
                else:
                    mean = model(x.to(parameter.dtype)).chunk(2, dim=1)[0]
                    reconstruction = teacher.decode(_teacher_input(teacher, mean))
            psnr, ssim = image_metrics(reconstruction, x)
            psnrs.append(psnr)
            ssims.append(ssim)
            if teacher is not None:
                latent = teacher.normalize_latents(mean.float()).cpu()
                latent_mses.append(float(F.mse_loss(latent, reference.latents[index])))
            if index < num_grid_images:
                reconstructions.append(reconstruction.float().cpu()[0])
    finally:
        model.train(was_training)
    psnr, ssim = float(np.mean(psnrs)), float(np.mean(ssims))
    if teacher is None:
        metrics = {"psnr": psnr, "ssim": ssim}
    else:
        metrics = {
            "psnr_student": psnr,
            "ssim_student": ssim,
            "latent_mse": float(np.mean(latent_mses)),
            **reference.summary(),
        }
    return {**metrics, "eval_images": len(images)}, reconstructions


def save_reconstruction_grid(
    path: str | Path,
    originals: Sequence[torch.Tensor],
    reconstructions: dict[str, Sequence[torch.Tensor]],
    tile: int = 256,
) -> Path:
    """Save the PNG ``path`` with one row per image: ``original | <label> | ...`` (the grid ``litevae eval`` draws).

    ``originals`` are ``(3, H, W)`` images in ``[-1, 1]``, ``reconstructions`` maps a column label (``"teacher"``,
    ``"student"``) to their reconstructions; each image's centre ``tile`` x ``tile`` square is shown.
    """

    def tiles(images: Sequence[torch.Tensor]) -> list[Image.Image]:
        units = [signed_to_unit(image.detach().cpu().float().clamp(-1, 1)) for image in images]
        return [unit_tensor_to_images(centre_crop(unit, tile, tile)[None])[0] for unit in units]

    grid = make_reconstruction_grid(
        tiles(originals), {label: tiles(images) for label, images in reconstructions.items()}, tile_height=tile
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def plot_curve(
    curve: Sequence[dict],
    loss_history: Sequence[dict],
    path: str | Path,
    title: str = "",
    psnr_key: str = "psnr_student",
    psnr_label: str = "student -> teacher decoder",
) -> Path | None:
    """Save a two-panel PNG: training loss components, and validation PSNR (``curve[i][psnr_key]``, with the
    teacher's as a dashed line when the entries carry ``psnr_teacher``), vs step. matplotlib is an optional extra
    (``plots``); without it this logs one line and returns ``None``."""
    try:
        # A standalone Figure, not pyplot: switching the global backend (matplotlib.use) would silently break
        # inline plots in a notebook that calls distill().
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no curve.png (pip install 'diffusers-litevae[plots]').")
        return None
    figure = Figure(figsize=(11, 4))
    loss_axis, psnr_axis = figure.subplots(1, 2)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.25)  # tight_layout costs ~1 s
    if loss_history:
        steps = [entry["step"] for entry in loss_history]
        skip = ("step", "lr", "images_per_s", "resolution", "grad_norm", "discriminator_grad_norm")
        names = [k for k in loss_history[-1] if k not in skip]
        for name in names:
            values = [entry.get(name) for entry in loss_history]
            if all(v is not None and v > 0 for v in values):
                loss_axis.plot(steps, values, label=name, linewidth=1.5 if name == "total" else 1.0)
        loss_axis.set_yscale("log")
        loss_axis.legend(fontsize=8)
    loss_axis.set_xlabel("step")
    loss_axis.set_title("training loss (unweighted components)")
    if curve:
        steps = [entry["step"] for entry in curve]
        psnr_axis.plot(steps, [entry[psnr_key] for entry in curve], marker="o", label=psnr_label)
        if curve[-1].get("psnr_teacher") is not None:
            psnr_axis.axhline(curve[-1]["psnr_teacher"], color="black", linestyle="--", label="teacher encoder")
        psnr_axis.legend(fontsize=8)
    psnr_axis.set_xlabel("step")
    psnr_axis.set_ylabel("PSNR (dB)")
    psnr_axis.set_title("validation PSNR")
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
