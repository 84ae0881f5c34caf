"""A folder of good photos mixed with damaged and unusual image files, made at test time (nothing binary is committed).

:func:`make_damaged_folder` writes, next to a few good photos, every kind of file a real photo folder holds sooner or
later: truncated, bit-flipped and empty files, text named ``.jpg``, a PNG whose header claims 60000x60000 pixels (a
decompression bomb), and images that are valid but unusual (1x1, greyscale, RGBA, palette with transparency, CMYK,
16-bit, EXIF-rotated, animated GIF, WebP, 2000x9). Every command must either use each file or list it as skipped.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DamagedFolder", "make_damaged_folder", "photo"]


@dataclass
class DamagedFolder:
    """What :func:`make_damaged_folder` wrote.

    Attributes:
        root: the folder.
        good: file names of ordinary RGB photos: every command must use them.
        unreadable: file names no decoder can read (truncated, empty, text, decompression bomb): every command
            must list them as skipped.
        unusual: file names that are valid images of unusual kinds, and the bit-flipped JPEG (which may or may not
            decode): a command may use them or list them as skipped, but must not fail on them.
    """

    root: Path
    good: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unusual: list[str] = field(default_factory=list)

    @property
    def all_files(self) -> list[str]:
        return sorted(self.good + self.unreadable + self.unusual)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, photo-like RGB image (bicubically upsampled noise): compresses and reconstructs like a photo."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8))
    return small.resize((width, height), Image.Resampling.BICUBIC)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR chunk is rewritten to claim ``width x height`` (with a correct CRC)."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), (10, 20, 30)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    chunk = bytes(data[ihdr : ihdr + 4 + 13])  # type + 13 data bytes
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return bytes(data)


def make_damaged_folder(root: str | Path, good_photos: list[Path] | None = None, size: tuple[int, int] = (96, 72)):
    """Write the mixed folder into ``root`` (created) and return a :class:`DamagedFolder` describing it.

    Args:
        root: the folder to fill.
        good_photos: photos to copy in as the good ones (e.g. Kodak images; resized to ``size`` to keep tests fast);
            default: three generated photo-like images.
        size: ``(width, height)`` of the good photos and of the images the unusual files are made from.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = DamagedFolder(root)
    width, height = size
    sources = (
        [Image.open(path).convert("RGB").resize(size, Image.Resampling.LANCZOS) for path in good_photos]
        if good_photos
        else [photo(width, height, seed) for seed in range(3)]
    )
    for index, image in enumerate(sources):
        name = f"good_{index}.{'png' if index % 2 else 'jpg'}"
        image.save(root / name, quality=95) if name.endswith(".jpg") else image.save(root / name)
        folder.good.append(name)
    base = photo(width, height, seed=100)
    jpeg = _encode(base, "JPEG", quality=90)

    def unreadable(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        folder.unreadable.append(name)

    def unusual(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        folder.unusual.append(name)

    unreadable("truncated.jpg", jpeg[: len(jpeg) // 3])
    unreadable("empty.jpg", b"")
    unreadable("text.jpg", b"this is a text file, not a JPEG\n")
    unreadable("bomb.png", _png_claiming_size(60000, 60000))
    flipped = bytearray(jpeg)
    rng = np.random.default_rng(0)
    for position in rng.integers(len(flipped) // 4, len(flipped) - 2, size=24):
        flipped[position] ^= 1 << int(rng.integers(0, 8))
    unusual("bitflipped.jpg", bytes(flipped))
    unusual("one_pixel.png", _encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    unusual("grey.png", _encode(base.convert("L"), "PNG"))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(size))
    unusual("rgba.png", _encode(rgba, "PNG"))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    unusual("palette_alpha.png", _encode(palette, "PNG", transparency=0))
    unusual("cmyk.jpg", _encode(base.convert("CMYK"), "JPEG", quality=90))
    sixteen = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    unusual("sixteen_bit.png", _encode(sixteen, "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    unusual("exif_rotated.jpg", _encode(base, "JPEG", quality=90, exif=exif.tobytes()))
    frames = [base, photo(width, height, seed=101)]
    unusual("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    unusual("image.webp", _encode(base, "WEBP", quality=90))
    unusual("wide_2000x9.png", _encode(photo(2000, 9, seed=102), "PNG"))
    return folder
