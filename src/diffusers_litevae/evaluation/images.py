"""Evaluation images: the resize/crop protocol, tensors, and the comparison grid (images are found and read by
:mod:`diffusers_litevae.image_io`, as every command reads them).

Every image is converted to RGB and cut to a size the VAEs accept (both sides multiples of 8), the same way for every
model, so all models in one run see exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..image_io import WHITE, resize_and_crop, upright_rgb
from .errors import EvaluationInputError

__all__ = [
    "batches_of_equal_size",
    "describe_preprocessing",
    "images_to_tensor",
    "make_reconstruction_grid",
    "parse_resolution",
    "parse_resolutions",
    "prepare_image",
    "tensor_to_images",
]

CROPS = ("square", "multiple_of_8")
_MULTIPLE = 8  # every f=8 VAE needs H and W divisible by 8


def parse_resolutions(value: int | str | Sequence[int | str]) -> list[int | str]:
    """One or several evaluation sizes: ``"256,512,native"`` / ``[256, "native"]`` / ``256`` -> ``[256, 512,
    "native"]`` (each checked by :func:`parse_resolution`; duplicates removed, order kept)."""
    if isinstance(value, str):
        parts = [part for part in value.split(",") if part.strip()]
        if not parts:
            raise EvaluationInputError(f"resolution must be a positive multiple of 8 or 'native', got {value!r}.")
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
        if not parts:
            raise EvaluationInputError("pass at least one resolution (a positive multiple of 8 or 'native').")
    resolutions: list[int | str] = []
    for part in parts:
        resolution = parse_resolution(part.strip() if isinstance(part, str) else part)
        if resolution not in resolutions:
            resolutions.append(resolution)
    return resolutions


def parse_resolution(value: int | str) -> int | str:
    """``256`` / ``"256"`` -> ``256``; ``"native"`` -> ``"native"``. Raises ``ValueError`` on anything else.

    A numeric resolution must be a positive multiple of 8 (the VAEs' downsampling factor).
    """
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
    """Convert to RGB and cut ``image`` to the evaluation size.

    The image is turned upright by its EXIF orientation, and converted to 8-bit RGB as the latent cache does it:
    transparency is composited onto white, 16-bit greyscale is scaled (not clipped) to 8 bits.

    Args:
        image: any PIL image.
        resolution: ``"native"`` keeps the full image, centre-cropped down to multiples of 8; an int ``R`` (multiple
            of 8) resizes the short side to ``R`` (unless ``resize=False``) and then crops.
        crop: ``"square"`` takes the centre ``R x R`` crop (the usual ImageNet-256 protocol); ``"multiple_of_8"`` keeps
            the aspect ratio and only trims each side down to a multiple of 8.
        resize: with ``False`` the crop is taken from the full-resolution image (images smaller than ``R`` are still
            upscaled so the crop fits).

    Returns:
        An RGB ``PIL.Image`` whose width and height are multiples of 8.
    """
    resolution = parse_resolution(resolution)
    if crop not in CROPS:
        raise EvaluationInputError(f"crop must be one of {CROPS}, got {crop!r}.")
    image = upright_rgb(image, WHITE)  # transparent pixels onto white, as in the latent cache
    return resize_and_crop(image, None if resolution == "native" else resolution, crop == "square", resize, _MULTIPLE)


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Stack equally sized RGB images into a float tensor ``(B, 3, H, W)`` in ``[0, 1]``."""
    arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` in ``[0, 1]`` -> list of 8-bit RGB PIL images (values clamped, rounded)."""
    arrays = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in arrays]


def make_reconstruction_grid(
    originals: Sequence[Image.Image],
    reconstructions: dict[str, Sequence[Image.Image]],
    captions: dict[str, Sequence[str]] | None = None,
    tile_height: int = 256,
    header_height: int = 28,
) -> Image.Image:
    """Side-by-side comparison: one row per image, columns ``original | model A | model B | ...``.

    Args:
        originals: the input images (any sizes; each row is scaled to ``tile_height`` pixels high).
        reconstructions: label -> reconstructions of ``originals``, in the same order.
        captions: label -> per-image caption drawn in the tile's corner (e.g. ``"31.2 dB"``).
        tile_height: row height in pixels.
        header_height: height of the label row at the top.

    Returns:
        One RGB ``PIL.Image``.
    """
    labels = list(reconstructions)
    for label, images in reconstructions.items():
        if len(images) != len(originals):
            raise ValueError(f"{label!r} has {len(images)} reconstructions for {len(originals)} originals.")
    font = _font(14)
    rows = []
    for index, original in enumerate(originals):
        width = max(1, round(original.width * tile_height / original.height))
        tiles = [original.convert("RGB").resize((width, tile_height), Image.Resampling.LANCZOS)]
        for label in labels:
            tile = reconstructions[label][index].convert("RGB").resize((width, tile_height), Image.Resampling.LANCZOS)
            if captions and label in captions:
                _caption(tile, captions[label][index], font)
            tiles.append(tile)
        rows.append(tiles)
    column_widths = [max(row[c].width for row in rows) for c in range(len(labels) + 1)] if rows else [tile_height]
    grid = Image.new("RGB", (sum(column_widths), header_height + tile_height * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    x = 0
    for column, title in enumerate(["original", *labels]):
        draw.text((x + 4, 6), _fit(title, column_widths[column], font), fill="black", font=font)
        x += column_widths[column]
    for r, row in enumerate(rows):
        x = 0
        for column, tile in enumerate(row):
            grid.paste(tile, (x, header_height + r * tile_height))
            x += column_widths[column]
    return grid


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit(text: str, width: int, font) -> str:
    while len(text) > 4 and font.getlength(text) > width - 8:
        text = text[:-2] + "…"
    return text


def _caption(tile: Image.Image, text: str, font) -> None:
    draw = ImageDraw.Draw(tile)
    left, top, right, bottom = draw.textbbox((4, tile.height - 20), text, font=font)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill="black")
    draw.text((4, tile.height - 20), text, fill="white", font=font)


def batches_of_equal_size(
    named_images: Iterable[tuple[str, Image.Image]], batch_size: int
) -> Iterator[tuple[list[str], list[Image.Image]]]:
    """Group consecutive images into batches of at most ``batch_size`` that share one size (stacking needs it)."""
    names: list[str] = []
    images: list[Image.Image] = []
    for name, image in named_images:
        if images and (image.size != images[0].size or len(images) == batch_size):
            yield names, images
            names, images = [], []
        names.append(name)
        images.append(image)
    if images:
        yield names, images
