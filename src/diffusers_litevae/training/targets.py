"""Teacher targets computed once: distillation from a latent cache of the teacher instead of a live teacher encoder.

``litevae distill --teacher_latents DIR`` keeps the teacher's posteriors of the training images in the project's
own latent cache (:func:`~diffusers_litevae.caching.cache_latents`): whole images (short side raised to the largest
training resolution when smaller), and their mirror images when flips are on, built on the first run and updated
incrementally. Training crops are cut from the image and its cached latents at the same offset on the latent grid,
so random crops and flips work as with a live teacher. The teacher saw the whole image, so latents near a crop's
border saw context the student does not: ``teacher_latents_border`` leaves them out of the latent losses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..caching.index import IncompatibleCacheError, compare_manifests, load_manifest
from ..caching.preprocess import TransformConfig, pixels_to_model_input, preprocess_image
from ..vae_io import vae_identity
from .data import first_readable
from .errors import TrainingInputError

__all__ = ["CachedTargetDataset", "TeacherLatents", "prepare_teacher_latents"]

logger = logging.getLogger(__name__)


@dataclass
class TeacherLatents:
    """A ready teacher-latent cache: the :class:`~diffusers_litevae.caching.LatentDataset` over it, its transform,
    and the position in it of every training image (``None`` for images the cache could not read)."""

    dataset: object
    transform: TransformConfig
    positions: list[int | None]


def prepare_teacher_latents(
    root: str,
    teacher,
    train_root: str,
    train_paths: list[Path],
    max_resolution: int,
    flip: bool,
    build: bool = True,
    mixed_precision: str = "no",
    num_workers: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> TeacherLatents:
    """Check (and unless ``build=False``, create or update) the teacher-latent cache at ``root``.

    Args:
        root: the cache folder.
        teacher: the loaded :class:`~diffusers_litevae.training.teachers.DistillationTeacher` (full precision).
        train_root, train_paths: the training image folder (sample ids are paths relative to it), its training
            images (validation images held out).
        max_resolution: the largest training crop of the resolution schedule.
        flip: whether training uses random flips (the mirrored images are cached too).
        build: encode missing or changed images; ``False`` only checks and fails on missing images.
        mixed_precision: ``"bf16"`` encodes under bf16 autocast (CPU included), otherwise fp32.
        num_workers, batch_size, progress: for the caching job.

    Raises:
        TrainingInputError: the cache was made with another teacher or other preprocessing, or (``build=False``)
            training images are missing from it.
    """
    from ..caching import LatentDataset, cache_latents

    # Whole images (short side at least max_resolution) on the 8 px latent grid.
    transform = TransformConfig(resolution=max_resolution, bucketing=False, crop="full", flip=flip, size_multiple=8)
    vae = teacher.vae  # the cache's identity is the VAE's: `litevae cache-latents --vae <same folder>` matches it
    root_path = Path(root).expanduser().resolve()
    existing = load_manifest(root_path)
    if existing is not None:
        requested = {"vae": vae_identity(vae), "transform": transform.to_dict()}
        problems = compare_manifests(
            {"vae": existing.get("vae", {}), "transform": existing.get("transform", {})}, requested
        )
        if problems:
            what = "another teacher" if any(p.startswith("vae.") for p in problems) else "other preprocessing"
            raise TrainingInputError(
                f"--teacher_latents {str(root)!r} was made with {what} ({problems[0]}"
                f"{f'; {len(problems) - 1} more differences' if len(problems) > 1 else ''}); "
                "point --teacher_latents at a new folder to build targets for this teacher and resolution schedule."
            )
    if build:
        try:
            report = cache_latents(
                train_root,
                vae,
                root_path,
                transform=transform,
                dtype="fp32",
                batch_size=batch_size,
                num_workers=num_workers,
                mixed_precision="bf16" if mixed_precision == "bf16" else "no",
                cpu_mixed_precision=mixed_precision == "bf16",
                channels_last=mixed_precision == "bf16",
                progress=progress,
                caption_extension=None,
                device=next(teacher.parameters()).device,
            )
        except IncompatibleCacheError as error:
            raise TrainingInputError(f"--teacher_latents {str(root)!r}: {' '.join(str(error).split())}") from error
        logger.info(
            "teacher latents in %s: %d cached, %d encoded now", root_path, report.num_samples, report.num_encoded
        )
    elif existing is None:
        raise TrainingInputError(
            f"--teacher_latents {str(root)!r} is not a latent cache (no manifest.json); "
            "drop --no-build_teacher_latents to build it on the first run."
        )
    dataset = LatentDataset(root_path, latent_sampling="mean", scale=False)
    base = Path(train_root).expanduser().resolve()
    positions, missing = [], []
    for path in train_paths:
        # Resolve the folder, not the file: a symlinked image keeps its own name as its sample id.
        sample_id = (Path(path).parent.resolve() / Path(path).name).relative_to(base).as_posix()
        try:
            positions.append(dataset.index_of(sample_id))
        except KeyError:
            positions.append(None)
            missing.append(sample_id)
    if missing and not build:
        raise TrainingInputError(
            f"{len(missing)} training images are missing from --teacher_latents {str(root)!r} (first: {missing[0]!r}); "
            "drop --no-build_teacher_latents to encode them, or remove them from --train_data_dir."
        )
    if missing:  # unreadable files: the caching job recorded them in errors.jsonl
        logger.warning(
            "%d training images could not be encoded (see %s/errors.jsonl); they are skipped", len(missing), root_path
        )
    return TeacherLatents(dataset, transform, positions)


class CachedTargetDataset(torch.utils.data.Dataset):
    """Random crops with their teacher targets, indexed like :class:`~.data.RandomCropDataset`.

    A crop starts on the latent grid of the cached image; a flipped one takes the teacher's latents of the mirrored
    image (not mirrored latents). Items: ``pixel_values`` ``(3, R, R)`` in ``[-1, 1]``, ``teacher_mean`` ``(C, R/8,
    R/8)`` raw latents, ``teacher_logvar`` of the same shape or ``None`` (deterministic teachers), ``skipped`` names.
    """

    def __init__(self, paths: list[Path], targets: TeacherLatents, flip: bool = True, factor: int = 8):
        self.paths = list(paths)
        self.targets = targets
        self.flip = flip
        self.factor = factor

    def __len__(self) -> int:
        return len(self.paths)

    def _sample(self, item: int, resolution: int, rng: np.random.Generator) -> dict:
        position = self.targets.positions[item]
        if position is None:
            raise ValueError("not in the teacher-latent cache (unreadable when it was built)")
        path = self.paths[item]
        pixels, plan = preprocess_image(str(path), self.targets.transform, self.targets.dataset.sample_id(position))
        height, width = plan.target_size
        flipped = bool(self.flip and rng.random() < 0.5)
        mean, std = self.targets.dataset.raw_moments(position, flipped=flipped)
        if mean.shape[-2:] != (height // self.factor, width // self.factor):
            raise ValueError(f"cached latents {tuple(mean.shape)} do not match the image size {height}x{width}")
        if flipped:
            pixels = pixels.flip(-1)
        f = self.factor
        top = int(rng.integers(0, (height - resolution) // f + 1)) * f
        left = int(rng.integers(0, (width - resolution) // f + 1)) * f
        crop = pixels[:, top : top + resolution, left : left + resolution]
        lat = (slice(None), slice(top // f, (top + resolution) // f), slice(left // f, (left + resolution) // f))
        return {
            "pixel_values": pixels_to_model_input(crop),
            "teacher_mean": mean[lat],
            "teacher_logvar": None if std is None else 2 * torch.log(std[lat]),
        }

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        index, resolution, crop_seed = key
        return first_readable(
            len(self.paths),
            index,
            crop_seed,
            lambda item, rng: self._sample(item, resolution, rng),
            lambda item: str(self.paths[item]),
        )
