"""Aspect-ratio buckets (SDXL-style) and deterministic resize/crop plans.

A *bucket* is a target ``(height, width)``: every image is resized to cover its bucket and cropped to it, so a
batch drawn from one bucket stacks without padding. Buckets are laid out like SDXL's training buckets: all sizes
whose sides are multiples of ``step`` and whose area is at most ``resolution**2`` (each width paired with the
tallest height that fits), limited to an aspect ratio of ``max_aspect_ratio``. An image goes to the bucket with
the nearest aspect ratio (in log space, so 2:1 and 1:2 are equally far from 1:1).

Everything here is pure arithmetic on sizes and sample ids: the same image and settings always give the same
bucket and crop box, on any machine and in any worker, which is what makes the cache incremental.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

__all__ = ["CropPlan", "assign_bucket", "make_buckets", "plan_crop", "sample_seed"]


def make_buckets(resolution: int, step: int = 64, max_aspect_ratio: float = 4.0) -> list[tuple[int, int]]:
    """SDXL-style buckets for a target area of ``resolution**2`` pixels.

    Args:
        resolution (`int`): side of the square bucket; every bucket has at most ``resolution**2`` pixels.
        step (`int`): both sides are multiples of ``step`` (64 as in SDXL; at least the VAE's downsampling factor).
        max_aspect_ratio (`float`): the longest side is at most this many times the shortest.

    Returns:
        `list[tuple[int, int]]`: ``(height, width)`` pairs sorted by aspect ratio ``width / height``, tallest first.
    """
    if resolution < step or resolution % step:
        raise ValueError(
            f"resolution {resolution} must be a positive multiple of the bucket step {step} "
            f"(e.g. {max(step, resolution // step * step)})."
        )
    if max_aspect_ratio < 1:
        raise ValueError(f"max_aspect_ratio must be >= 1, got {max_aspect_ratio}.")
    area = resolution * resolution
    buckets: set[tuple[int, int]] = set()
    width = step
    while width * step <= area:
        height = area // width // step * step  # tallest multiple of `step` that keeps the area within budget
        if height >= step and max(height, width) / min(height, width) <= max_aspect_ratio + 1e-9:
            buckets.add((height, width))
            buckets.add((width, height))
        width += step
    return sorted(buckets, key=lambda hw: (hw[1] / hw[0], hw[1]))


def assign_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket ``(height, width)`` whose aspect ratio is nearest (in log space) to a ``width x height`` image.

    Ties go to the larger bucket, then to the first in ``buckets``' order, so assignment is deterministic.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}.")
    log_aspect = math.log(width / height)
    return min(buckets, key=lambda hw: (round(abs(math.log(hw[1] / hw[0]) - log_aspect), 9), -hw[0] * hw[1]))


def sample_seed(seed: int, sample_id: str) -> int:
    """A 64-bit seed derived from a global seed and a sample id (stable across processes and Python runs)."""
    digest = hashlib.blake2b(f"{seed}\x00{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class CropPlan:
    """How one image becomes one training sample.

    Attributes:
        original_size: ``(height, width)`` of the decoded image (after EXIF orientation).
        resized_size: ``(height, width)`` after the aspect-preserving resize that covers the target.
        crop_ltrb: ``(left, top, right, bottom)`` of the crop in resized-image pixels (SDXL's
            ``crops_coords_top_left`` is ``(top, left)``).
        target_size: ``(height, width)`` of the crop: the bucket.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_ltrb: tuple[int, int, int, int]
    target_size: tuple[int, int]


def plan_crop(
    width: int, height: int, target_size: tuple[int, int], crop: str = "center", seed: int = 0, sample_id: str = ""
) -> CropPlan:
    """Resize ``width x height`` to cover ``target_size`` (keeping its aspect ratio) and pick the crop box.

    Args:
        width, height (`int`): the image size.
        target_size (`tuple[int, int]`): ``(height, width)`` of the output.
        crop (`str`): ``"center"`` or ``"random"``; a random crop is drawn from a generator seeded by
            ``(seed, sample_id)``, so it is the same on every run and in every worker.
        seed (`int`), sample_id (`str`): see ``crop``.
    """
    target_h, target_w = target_size
    scale = max(target_w / width, target_h / height)
    resized_w = max(target_w, round(width * scale))
    resized_h = max(target_h, round(height * scale))
    slack_w, slack_h = resized_w - target_w, resized_h - target_h
    if crop == "center":
        left, top = slack_w // 2, slack_h // 2
    elif crop == "random":
        rng = random.Random(sample_seed(seed, sample_id))
        left, top = rng.randint(0, slack_w), rng.randint(0, slack_h)
    else:
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}.")
    return CropPlan(
        original_size=(height, width),
        resized_size=(resized_h, resized_w),
        crop_ltrb=(left, top, left + target_w, top + target_h),
        target_size=(target_h, target_w),
    )
