"""Image input for every command (``eval``, ``cache-latents``, ``distill``, ``train``): folders, opening, orienting,
RGB conversion, resizing and centre-cropping, and Hugging Face datasets. All commands therefore see the same images in
the same order with the same pixels; a damaged image is skipped and listed with its reason, never fatal.

Folders are searched recursively; names starting with ``.`` are skipped, symlinked folders are followed once, and an
image is a file whose extension (any case) is in :data:`IMAGE_EXTENSIONS`. Results are sorted by relative path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "images_to_unit_tensor",
    "make_reconstruction_grid",
    "unit_tensor_to_images",
    "IMAGE_EXTENSIONS",
    "WHITE",
    "DatasetImages",
    "ImageFiles",
    "ImageInputError",
    "NamedImages",
    "centre_crop",
    "dataset_image_bytes",
    "dataset_images",
    "dataset_label",
    "describe_read_error",
    "find_images",
    "has_images",
    "folder_images",
    "is_saved_dataset",
    "load_image",
    "load_image_dataset",
    "open_image",
    "oriented_size",
    "resize_and_crop",
    "resize_short_side",
    "scan_image_files",
    "short_side_size",
    "to_rgb",
    "upright_rgb",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")
WHITE = (255, 255, 255)  # what transparent pixels are composited onto unless a command says otherwise

# EXIF orientations that swap width and height (transpose / rotate 90 / transverse / rotate 270).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageInputError(ValueError):
    """A folder or dataset that cannot be read as images (missing, empty, no such split or column, no ``datasets``):
    one line naming the problem and the fix, printed by every command as its ``error:`` line (exit code 2)."""


# ------------------------------------------------------------------------------------------------------- folders


def scan_image_files(
    root: str | os.PathLike,
    image_extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ignore_extensions: Iterable[str] = (),
    exclude: Iterable[str | os.PathLike] = (),
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every image under ``root`` by the folder rule of this module.

    Args:
        root: the folder.
        image_extensions: lower-case extensions (with the dot) that count as images.
        ignore_extensions: other extensions to pass over silently (e.g. caption sidecars ``.txt``).
        exclude: folders not to descend into (e.g. a cache written inside ``root``).

    Returns:
        ``(images, skipped)``: image paths sorted by relative path, and ``(path, reason)`` for every other file
        (not an image) or folder that could not be listed.
    """
    root = Path(root)
    walked = list(_walk(root, image_extensions, ignore_extensions, exclude))
    found = sorted((path for path, reason in walked if reason is None), key=lambda p: p.relative_to(root).as_posix())
    return found, [(path, reason) for path, reason in walked if reason is not None]


def has_images(
    root: str | os.PathLike,
    image_extensions: Iterable[str] = IMAGE_EXTENSIONS,
    exclude: Iterable[str | os.PathLike] = (),
) -> bool:
    """Whether :func:`scan_image_files` would find an image under ``root``; stops at the first."""
    return any(reason is None for _, reason in _walk(Path(root), image_extensions, (), exclude))


def _walk(
    root: Path,
    image_extensions: Iterable[str],
    ignore_extensions: Iterable[str],
    exclude: Iterable[str | os.PathLike],
) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for every image under ``root``, ``(path, reason)`` for every other file or unlistable
    folder; folder by folder, each folder's entries sorted by name."""
    images = set(e.lower() for e in image_extensions)
    ignored = set(e.lower() for e in ignore_extensions)
    excluded = {Path(path).expanduser().resolve() for path in exclude}
    stack, visited = [root], set()
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in visited:  # a symlink loop, or two links to one folder
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            yield folder, f"cannot list folder: {error}"
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=True):
                if path.resolve() not in excluded:
                    stack.append(path)
                continue
            extension = os.path.splitext(entry.name)[1].lower()
            if extension in images:
                yield path, None
            elif extension not in ignored:
                yield (
                    path,
                    f"not an image: extension {extension or '(none)'!r} is not one of {', '.join(sorted(images))}",
                )


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The images of :func:`scan_image_files` under ``folder``.

    Raises:
        ImageInputError: the folder does not exist or holds no images.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImageInputError(f"image folder {str(folder)!r} does not exist; pass a folder of images.")
    paths, _ = scan_image_files(root)
    if not paths:
        raise ImageInputError(
            f"image folder {str(folder)!r} holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images "
            "(searched recursively, hidden files skipped)."
        )
    return paths


# ------------------------------------------------------------------------------------------ open, orient, convert


def open_image(data) -> Image.Image:
    """Open an image without decoding its pixels yet.

    Args:
        data: a path, encoded bytes, an undecoded ``datasets`` image value (``{"bytes", "path"}``; a remote path of
            a streamed dataset is read by ``datasets``), or a PIL image (returned as is).

    Raises:
        TypeError: ``data`` is none of these.
    """
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, dict):
        if data.get("bytes") is not None:
            data = data["bytes"]
        elif isinstance(data.get("path"), str) and "://" in data["path"]:
            import datasets  # only datasets' own values hold remote paths

            return datasets.Image().decode_example(data)
        else:
            data = data.get("path")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(data))
    if isinstance(data, (str, os.PathLike)):
        return Image.open(data)
    raise TypeError(f"cannot read an image from a value of type {type(data).__name__}")


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` once turned upright by its EXIF orientation (read from the header)."""
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any PIL image as 8-bit RGB: transparency (RGBA, LA, PA, palette with a transparent colour) composited onto
    ``background``, 16-bit greyscale scaled to 8 bits (not clipped), every other mode by ``convert("RGB")``."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: PIL's convert("RGB") would clip
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def upright_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """EXIF orientation applied, then :func:`to_rgb`."""
    return to_rgb(ImageOps.exif_transpose(image), background)


def load_image(data, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Open (:func:`open_image`), decode every pixel now (a damaged file fails here, not later), and return it
    upright as 8-bit RGB (:func:`upright_rgb`), transparent pixels composited onto ``background``."""
    image = open_image(data)
    try:
        image.load()
        return upright_rgb(image, background)
    finally:
        if image is not data:  # the caller's image stays open
            image.close()


def describe_read_error(error: BaseException) -> str:
    """``"Type: message"`` of an image that could not be read or prepared: one line of at most 200 characters."""
    if isinstance(error, UnidentifiedImageError):
        return "UnidentifiedImageError: not an image, or a format PIL cannot read"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:200]


# -------------------------------------------------------------------------------------------- resize and crop


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` scaled so that the short side is ``size`` (each side rounded, at least ``size``)."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """``image`` resized (bicubic) so that its short side is ``size`` (:func:`short_side_size`)."""
    return image.resize(short_side_size(image.width, image.height, size), Image.Resampling.BICUBIC)


def centre_crop(image, width: int, height: int):
    """The centre ``width x height`` of a PIL image or a tensor / array ``(..., H, W)``, each side at most the image's;
    odd margins leave the extra pixel on the right / bottom."""
    image_w, image_h = image.size if isinstance(image, Image.Image) else (image.shape[-1], image.shape[-2])
    width, height = min(width, image_w), min(height, image_h)
    left, top = (image_w - width) // 2, (image_h - height) // 2
    if isinstance(image, Image.Image):
        return image.crop((left, top, left + width, top + height))
    return image[..., top : top + height, left : left + width]


def resize_and_crop(
    image: Image.Image, resolution: int | None = None, square: bool = True, resize: bool = True, multiple: int = 8
) -> Image.Image:
    """Cut ``image`` from its centre to a size a VAE accepts (both sides multiples of ``multiple``).

    Args:
        image: an RGB PIL image.
        resolution: ``None`` keeps the full image; an int ``R`` resizes the short side to ``R``, then crops.
        square: with ``R``: the centre ``R x R`` crop; ``False``: keep the aspect ratio.
        resize: ``False`` crops from the full-size image (images whose short side is below ``R`` are still resized).
        multiple: the VAE's downsampling factor.

    Raises:
        ValueError: the image is smaller than ``multiple`` pixels on a side.
    """
    if resolution is not None:
        if resize or min(image.size) < resolution:
            image = resize_short_side(image, resolution)
        if square:
            return centre_crop(image, resolution, resolution)
    width, height = image.width // multiple * multiple, image.height // multiple * multiple
    if width == 0 or height == 0:
        raise ValueError(
            f"image of size {image.size} is smaller than {multiple} pixels on a side; it cannot be encoded."
        )
    return centre_crop(image, width, height)


# ------------------------------------------------------------------------------------------------ image sources


class NamedImages:
    """``(name, image data)`` pairs, read lazily, with a length (``None`` when streaming); the data is what
    :func:`load_image` takes, decoded where it is used so that an unreadable image can be skipped."""

    def __init__(self, pairs: Iterable[tuple[str, object]], length: int | None):
        self._pairs, self._length = pairs, length

    def __iter__(self) -> Iterator[tuple[str, object]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length unknown (streaming dataset)")
        return self._length


def folder_images(folder: str | os.PathLike) -> NamedImages:
    """``(file name, path)`` for every image of :func:`find_images`."""
    paths = find_images(folder)
    return NamedImages([(path.name, path) for path in paths], len(paths))


class ImageFiles:
    """Image files by position; :meth:`load` reads one as upright RGB (:func:`load_image`; raises if unreadable)."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(path) for path in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int, background: tuple[int, int, int] = WHITE) -> Image.Image:
        return load_image(self.paths[index], background)


class DatasetImages:
    """Rows of a map-style ``datasets.Dataset`` (as :func:`load_image_dataset` returns it) by position; ``indices``
    picks the rows exposed (default: all); :meth:`load` reads one row's image as upright RGB."""

    def __init__(self, dataset, image_column: str, indices: Sequence[int] | None = None):
        self.dataset = dataset
        self.image_column = image_column
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return f"row {self.indices[index]}"

    def load(self, index: int, background: tuple[int, int, int] = WHITE) -> Image.Image:
        return load_image(self.dataset[self.indices[index]][self.image_column], background)


# ------------------------------------------------------------------------------------------ Hugging Face datasets


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset`` or ``DatasetDict``)."""
    path = Path(path).expanduser()
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def dataset_label(dataset) -> str:
    """How messages and records name a dataset: its Hub id / path, or an in-memory dataset's name."""
    if isinstance(dataset, (str, os.PathLike)):
        return os.fspath(dataset)
    return getattr(getattr(dataset, "info", None), "dataset_name", None) or "<in-memory datasets.Dataset>"


def load_image_dataset(
    dataset,
    config_name: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
):
    """A Hugging Face dataset ready to read images from: loaded, its split picked, its image column checked and
    read undecoded (:func:`load_image` decodes one row at a time, so a damaged row is skipped, not fatal).

    Args:
        dataset: a Hub id, a folder ``datasets.load_dataset`` reads, a ``save_to_disk`` folder, or a loaded
            ``Dataset`` / ``DatasetDict`` / ``IterableDataset``.
        config_name: dataset configuration, if it has several.
        split: the split to read.
        image_column: the column holding the images (default: the first ``Image`` feature, else ``"image"``).
        cache_dir, revision, streaming: passed to ``datasets.load_dataset``.

    Returns:
        ``(dataset, image_column)``.

    Raises:
        ImageInputError: ``datasets`` is not installed, the dataset cannot be loaded, or it has no such split or
            image column.
    """
    try:
        import datasets
    except ImportError as error:  # optional extra
        raise ImageInputError(
            "reading a Hugging Face dataset needs the `datasets` package: pip install 'diffusers-litevae[datasets]'."
        ) from error
    name = dataset_label(dataset)
    if isinstance(dataset, (str, os.PathLike)):
        try:
            if is_saved_dataset(dataset):
                dataset = datasets.load_from_disk(str(Path(dataset).expanduser()))
            else:
                dataset = datasets.load_dataset(
                    os.fspath(dataset),
                    config_name,
                    split=split,
                    cache_dir=cache_dir,
                    revision=revision,
                    streaming=streaming,
                )
        except Exception as error:  # datasets raises many kinds: not found, offline, gated, bad config, ...
            raise ImageInputError(
                f"could not load dataset {name!r} (split {split!r}): {describe_read_error(error)}"
            ) from error
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict, dict)):
        if split not in dataset:
            raise ImageInputError(f"dataset {name!r} has no split {split!r}; its splits: {sorted(dataset)}.")
        dataset = dataset[split]
    features = getattr(dataset, "features", None) or {}
    if image_column is None:
        image_column = next((column for column, kind in features.items() if isinstance(kind, datasets.Image)), "image")
    columns = getattr(dataset, "column_names", None)
    if columns is not None and image_column not in columns:
        raise ImageInputError(
            f"dataset {name!r} (split {split!r}) has no image column {image_column!r}; its columns: {columns}. "
            "Pass --image_column."
        )
    feature = features.get(image_column)
    if isinstance(feature, datasets.Image) and feature.decode:
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset, image_column


def dataset_image_bytes(value) -> bytes:
    """The encoded bytes of an undecoded ``datasets`` image value, of raw bytes, or of a local file path."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return Path(value).read_bytes()
    raise TypeError(f"cannot read an image from a value of type {type(value).__name__}")


def dataset_images(
    dataset,
    image_column: str = "image",
    split: str = "train",
    max_images: int | None = None,
    config_name: str | None = None,
    streaming: bool = False,
) -> NamedImages:
    """``("<split>/<row>", image data)`` pairs of a Hugging Face dataset, in row order (:class:`NamedImages`).

    The dataset is opened and checked now (:func:`load_image_dataset`, which takes ``dataset``, ``image_column``,
    ``split``, ``config_name`` and ``streaming``); rows are read while iterating, at most ``max_images``.
    """
    dataset, image_column = load_image_dataset(dataset, config_name, split, image_column, streaming=streaming)
    rows = dataset.select_columns([image_column])

    def pairs() -> Iterator[tuple[str, object]]:
        for index, row in enumerate(rows):
            if max_images is not None and index >= max_images:
                break
            yield f"{split}/{index}", row[image_column]

    length = len(dataset) if hasattr(dataset, "__len__") and not streaming else None
    if length is not None and max_images is not None:
        length = min(length, max_images)
    return NamedImages(pairs(), length)


# ------------------------------------------------------------------------------------- tensors and grids


def images_to_unit_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Stack equally sized RGB images into a float tensor ``(B, 3, H, W)`` in ``[0, 1]``."""
    import torch

    arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)


def unit_tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` in ``[0, 1]`` -> list of 8-bit RGB PIL images (values clamped, rounded)."""
    arrays = images.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in arrays]


def make_reconstruction_grid(
    originals: Sequence[Image.Image],
    reconstructions: dict[str, Sequence[Image.Image]],
    captions: dict[str, Sequence[str]] | None = None,
    tile_height: int = 256,
    header_height: int = 28,
) -> Image.Image:
    """Side-by-side comparison, one row per image: ``original | model A | model B | ...``, as one RGB image.

    Args:
        originals: the input images (any sizes; each row is scaled to ``tile_height`` pixels high).
        reconstructions: label -> reconstructions of ``originals``, in the same order.
        captions: label -> per-image caption drawn in the tile's corner (e.g. ``"31.2 dB"``).
        tile_height: row height in pixels.
        header_height: height of the label row at the top.
    """
    labels = list(reconstructions)
    for label, images in reconstructions.items():
        if len(images) != len(originals):
            raise ValueError(f"{label!r} has {len(images)} reconstructions for {len(originals)} originals.")
    font = _font(14)
    rows = []
    for index, original in enumerate(originals):
        width = max(1, round(original.width * tile_height / original.height))
        images = [original, *(reconstructions[label][index] for label in labels)]
        tiles = [image.convert("RGB").resize((width, tile_height), Image.Resampling.LANCZOS) for image in images]
        for label, tile in zip(labels, tiles[1:]):
            if captions and label in captions:
                _caption(tile, captions[label][index], font)
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
