"""The deterministic resize/crop that turns one image into one cached sample: :func:`preprocess_image` is the single
definition of "the preprocessed image" of a sample, run by the caching job's DataLoader workers and by code that
checks a cached latent against ``vae.encode`` of the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from ..image_io import open_image, oriented_size, short_side_size, upright_rgb
from ..models.tiny_autoencoder import unit_to_signed
from ..settings import setting
from .buckets import CropPlan, assign_bucket, make_buckets, plan_crop
from .index import CacheInputError

__all__ = ["TransformConfig", "pixels_to_model_input", "preprocess_image"]

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}


RESIZE_GROUP = "resize and crop"  # where `litevae cache-latents --help` lists the transform's flags


@dataclass(frozen=True)
class TransformConfig:
    """Everything that decides which pixels a sample's latent encodes (recorded in the cache manifest).

    Each field's help says what it does (``litevae cache-latents`` has a flag for each; ``--no_buckets`` is
    ``bucketing=False``). Resizes are antialiased (PIL resampling). Fields of the Python API only: ``background``,
    the RGB colour that transparent pixels are composited onto, and ``crop="full"``: keep the whole image at its own
    size (no bucket; images whose short side is below ``resolution`` are resized up to it), centre-trimmed to
    multiples of ``size_multiple``. ``"full"`` is used for distillation targets, where training crops are cut from
    the cached latents on the latent grid; every distinct size becomes its own shard.
    """

    resolution: int = setting(
        1024, "bucket area resolution**2 (with buckets) or square side (with --no_buckets)", group=RESIZE_GROUP
    )
    bucketing: bool = True  # SDXL-style aspect-ratio buckets; False: one resolution x resolution crop
    bucket_step: int = setting(64, "bucket sides are multiples of this", group=RESIZE_GROUP)
    max_aspect_ratio: float = setting(4.0, "most elongated bucket (long/short)", group=RESIZE_GROUP)
    crop: str = setting(
        "center",
        "crop position; random crops are seeded per sample id",
        choices=("center", "random"),  # and "full", of the Python API
        group=RESIZE_GROUP,
    )
    seed: int = setting(0, "seed of random crops", group=RESIZE_GROUP)
    interpolation: str = setting("bicubic", choices=("bicubic", "bilinear", "lanczos", "area"), group=RESIZE_GROUP)
    flip: bool = setting(
        False, "also store latents of the horizontally flipped crop", action="store_true", group=RESIZE_GROUP
    )
    background: tuple[int, int, int] = (255, 255, 255)
    size_multiple: int = 8

    def __post_init__(self):
        if self.crop not in ("center", "random", "full"):
            raise CacheInputError(f"crop must be 'center', 'random' or 'full', got {self.crop!r}.")
        if self.crop == "full" and self.bucketing:
            raise CacheInputError("crop='full' keeps each image's own size: set bucketing=False.")
        if self.interpolation not in _RESAMPLING:
            raise CacheInputError(f"interpolation must be one of {sorted(_RESAMPLING)}, got {self.interpolation!r}.")
        if self.resolution <= 0:
            raise CacheInputError(f"resolution must be positive, got {self.resolution}.")

    def to_dict(self) -> dict:
        """JSON-ready settings (the manifest's ``transform`` section); also what the latent values depend on."""
        settings = asdict(self)
        settings["background"] = list(self.background)
        if not self.bucketing:  # bucket settings do not affect fixed-size crops
            settings.pop("bucket_step")
            settings.pop("max_aspect_ratio")
        if self.crop != "full":
            settings.pop("size_multiple")
        settings["exif_transpose"] = True
        settings["jpeg_draft"] = True
        settings["pixel_range"] = [-1.0, 1.0]
        return settings

    def buckets(self) -> list[tuple[int, int]]:
        """All target sizes ``(height, width)`` this transform can produce."""
        if self.crop == "full":
            return []  # every image keeps its own size
        if not self.bucketing:
            return [(self.resolution, self.resolution)]
        return make_buckets(self.resolution, self.bucket_step, self.max_aspect_ratio)

    def check_downsample_factor(self, factor: int) -> None:
        """Raise if a target side would not be a multiple of the VAE's spatial downsampling factor."""
        if self.crop == "full":
            side, name = self.size_multiple, "size_multiple"
        else:
            side, name = (self.bucket_step, "bucket_step") if self.bucketing else (self.resolution, "resolution")
        if side % factor:
            raise CacheInputError(
                f"{name}={side} is not a multiple of the VAE's downsampling factor {factor}: latents would not tile "
                f"the image. Use a multiple of {factor}, e.g. {max(factor, side // factor * factor)}."
            )
        if self.bucketing and self.resolution % self.bucket_step:
            raise CacheInputError(
                f"resolution={self.resolution} must be a multiple of bucket_step={self.bucket_step} "
                f"(e.g. {max(self.bucket_step, self.resolution // self.bucket_step * self.bucket_step)})."
            )

    def plan(self, width: int, height: int, sample_id: str, buckets: list[tuple[int, int]] | None = None) -> CropPlan:
        """The crop plan of a ``width x height`` image (see :func:`~diffusers_litevae.caching.buckets.plan_crop`)."""
        if self.crop == "full":  # only ever resized up
            resized_w, resized_h = short_side_size(width, height, max(self.resolution, min(width, height)))
            step = self.size_multiple
            target_w, target_h = resized_w // step * step, resized_h // step * step
            left, top = (resized_w - target_w) // 2, (resized_h - target_h) // 2
            crop_ltrb = (left, top, left + target_w, top + target_h)
            return CropPlan((height, width), (resized_h, resized_w), crop_ltrb, (target_h, target_w))
        target = assign_bucket(width, height, buckets or self.buckets())
        return plan_crop(width, height, target, crop=self.crop, seed=self.seed, sample_id=sample_id)


def preprocess_image(
    data: bytes | str | Image.Image,
    transform: TransformConfig,
    sample_id: str,
    buckets: list[tuple[int, int]] | None = None,
) -> tuple[torch.Tensor, CropPlan]:
    """Decode one image and resize/crop it to its bucket.

    Steps: EXIF orientation; JPEG draft decoding at the smallest power-of-two reduction that still covers the
    resized size (exact, and several times faster for large photos); RGB conversion (transparency composited onto
    ``transform.background``); one antialiased resize of just the crop region to the target size.

    Args:
        data: encoded image bytes, a path, or an already opened PIL image.
        transform (`TransformConfig`): the settings.
        sample_id (`str`): seeds the random crop.
        buckets: precomputed ``transform.buckets()`` (saves recomputing them per image).

    Returns:
        ``(pixels, plan)``: ``pixels`` a ``uint8`` tensor of shape ``(3, target_h, target_w)``; ``plan`` the
        :class:`~diffusers_litevae.caching.buckets.CropPlan` (original size, resized size, crop box, target).
    """
    image = open_image(data)
    width, height = oriented_size(image)
    plan = transform.plan(width, height, sample_id, buckets)
    resized_h, resized_w = plan.resized_size
    if image.format == "JPEG":
        swapped = (width, height) != image.size
        image.draft("RGB", (resized_h, resized_w) if swapped else (resized_w, resized_h))
    image = upright_rgb(image, transform.background)
    # The decoded image may be smaller than `original_size` (JPEG draft): map the crop box into its pixels.
    scale_x, scale_y = image.width / resized_w, image.height / resized_h
    left, top, right, bottom = plan.crop_ltrb
    box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
    target_h, target_w = plan.target_size
    image = image.resize((target_w, target_h), _RESAMPLING[transform.interpolation], box=box)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    return pixels, plan


def pixels_to_model_input(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``uint8`` pixels ``(..., 3, H, W)`` in ``[0, 255]`` -> ``dtype`` values in ``[-1, 1]`` (the VAE input range)."""
    return unit_to_signed(pixels.to(dtype).div(255))
