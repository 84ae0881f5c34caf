"""Evaluation sizes and the resize/crop protocol: every image is cut the same way for every model (both sides
multiples of 8), so all models in one run see the same pixels. Images are read by :mod:`diffusers_litevae.image_io`.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ..image_io import WHITE, resize_and_crop, upright_rgb
from .settings import CROPS, EvaluationInputError

__all__ = ["describe_preprocessing", "parse_resolution", "parse_resolutions", "prepare_image"]

_MULTIPLE = 8  # every f=8 VAE needs H and W divisible by 8


def parse_resolutions(value: int | str | Sequence[int | str]) -> list[int | str]:
    """One or several evaluation sizes: ``"256,512,native"`` / ``[256, "native"]`` / ``256`` -> ``[256, 512,
    "native"]`` (each checked by :func:`parse_resolution`; duplicates removed, order kept)."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
    else:
        parts = [value] if isinstance(value, int) else list(value)
    if not parts:
        raise EvaluationInputError(f"resolution must be a positive multiple of 8 or 'native', got {value!r}.")
    return list(dict.fromkeys(parse_resolution(part) for part in parts))


def parse_resolution(value: int | str) -> int | str:
    """``256`` / ``"256"`` -> ``256``; ``"native"`` -> ``"native"``; anything but a positive multiple of 8 raises
    :class:`EvaluationInputError`."""
    if isinstance(value, str):
        if value.strip().lower() == "native":
            return "native"
        if not value.strip().isdigit():
            raise EvaluationInputError(f"resolution must be a positive multiple of 8 or 'native', got {value!r}.")
        value = int(value)
    if not isinstance(value, int) or value <= 0 or value % _MULTIPLE:
        suggestion = max(_MULTIPLE, round(value / _MULTIPLE) * _MULTIPLE) if isinstance(value, int) else 256
        raise EvaluationInputError(
            f"resolution must be a positive multiple of {_MULTIPLE} or 'native', got {value!r}; try {suggestion}."
        )
    return value


def describe_preprocessing(resolution: int | str, crop: str = "square", resize: bool = True) -> str:
    """A one-line, human-readable statement of what :func:`prepare_image` does with these settings."""
    if resolution == "native":
        return "native size, centre-cropped down to multiples of 8"
    steps = [f"resize short side to {resolution} (bicubic)"] if resize else ["no resize"]
    if crop == "square":
        steps.append(f"centre crop {resolution}x{resolution}")
    else:
        steps.append("centre crop each side down to a multiple of 8")
    return ", ".join(steps)


def prepare_image(
    image: Image.Image, resolution: int | str = 256, crop: str = "square", resize: bool = True
) -> Image.Image:
    """``image`` upright, as 8-bit RGB (as the latent cache converts it), cut to the evaluation size.

    Args:
        image: any PIL image.
        resolution: ``"native"`` keeps the full image, centre-cropped down to multiples of 8; an int ``R`` resizes
            the short side to ``R`` (unless ``resize=False``) and then crops.
        crop: ``"square"``: the centre ``R x R`` crop; ``"multiple_of_8"``: keep the aspect ratio.
        resize: ``False`` crops from the full-resolution image (images smaller than ``R`` are still upscaled).
    """
    resolution = parse_resolution(resolution)
    if crop not in CROPS:
        raise EvaluationInputError(f"crop must be one of {CROPS}, got {crop!r}.")
    image = upright_rgb(image, WHITE)  # transparent pixels onto white, as in the latent cache
    return resize_and_crop(image, None if resolution == "native" else resolution, crop == "square", resize, _MULTIPLE)
