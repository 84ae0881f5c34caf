"""The one rule for finding images in a folder, shared by distill, cache-latents and eval.

Recursive; files and folders whose name starts with ``.`` are skipped (hidden files, ``.ipynb_checkpoints``, ...);
symlinked folders are followed once (loops are cut); an image is a file whose extension, in any case, is one of
:data:`IMAGE_EXTENSIONS`. Results are sorted by path relative to the folder, so every command sees the same images in
the same order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "scan_image_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")


def scan_image_files(
    root: str | os.PathLike,
    image_extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ignore_extensions: Iterable[str] = (),
    exclude: Iterable[str | os.PathLike] = (),
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every image under ``root`` by the rule above.

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
    images = set(e.lower() for e in image_extensions)
    ignored = set(e.lower() for e in ignore_extensions)
    excluded = {Path(path).expanduser().resolve() for path in exclude}
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
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
            skipped.append((folder, f"cannot list folder: {error}"))
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
                found.append(path)
            elif extension not in ignored:
                skipped.append(
                    (
                        path,
                        f"not an image: extension {extension or '(none)'!r} is not one of {', '.join(sorted(images))}",
                    )
                )
    found.sort(key=lambda path: path.relative_to(root).as_posix())
    return found, skipped
