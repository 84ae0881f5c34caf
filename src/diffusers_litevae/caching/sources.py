"""Readers for the caching job's inputs: an image folder (recursive) or a Hugging Face dataset.

A source lists its samples cheaply (``scan``) as :class:`SourceItem` records, whose fingerprints the caching job
compares with its index to decide what to (re-)encode; DataLoader workers read the bytes (``read_bytes``) and
decode them, sources never do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..image_io import (
    IMAGE_EXTENSIONS,
    dataset_image_bytes,
    dataset_label,
    has_images,
    load_image_dataset,
    scan_image_files,
)
from .index import CacheInputError

__all__ = ["HubDatasetSource", "ImageFolderSource", "SourceItem", "content_hash"]

_CAPTION_COLUMNS = ("text", "caption", "captions", "prompt", "sentence")


def _scan_error(sample_id: str, path: str, error: str) -> dict:
    """The ``errors.jsonl`` row of a sample that listing could not take in."""
    return {"sample_id": sample_id, "path": path, "stage": "scan", "error": error}


def _dotted(extension: str) -> str:
    """``extension`` in lower case, with its leading dot."""
    return extension.lower() if extension.startswith(".") else "." + extension.lower()


def content_hash(data: bytes) -> str:
    """Hex BLAKE2b-128 digest of a file's bytes (the ``content_hash`` recorded per sample)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class SourceItem:
    """One sample as listed by a source.

    Attributes:
        sample_id: stable id (folder: POSIX path relative to the root; dataset: ``"<row>-<hash16>"``).
        locator: what :meth:`read_bytes` needs (folder: absolute path; dataset: row number).
        fingerprint: compared with the index to detect changes (folder: ``size`` and ``mtime_ns``;
            dataset: ``content_hash``).
        caption: the sidecar text (folder) or caption column value (dataset), ``None`` when absent.
        content_hash: the file's hash when known without decoding (datasets); folders compute it in the workers.
    """

    sample_id: str
    locator: str | int
    fingerprint: dict = field(default_factory=dict)
    caption: str | list | None = None
    content_hash: str | None = None


class ImageFolderSource:
    """Every image under ``root`` (recursively), with captions from ``<image stem><caption_extension>`` sidecars.

    Hidden files and folders (leading ``.``) and the cache's own folder (when it lies inside ``root``) are
    ignored. Other files whose extension is neither an image nor the caption extension are reported as skipped.

    Args:
        root: the folder.
        caption_extension (`str`): sidecar caption extension (``".txt"``; ``None`` disables captions).
        image_extensions: lower-case extensions treated as images.
        exclude: folders not to descend into (the caching job passes its output folder).
    """

    kind = "folder"

    def __init__(
        self,
        root: str | os.PathLike,
        caption_extension: str | None = ".txt",
        image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        exclude: tuple[str | os.PathLike, ...] = (),
    ):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise CacheInputError(f"image folder {str(root)!r} does not exist or is not a folder.")
        self.caption_extension = _dotted(caption_extension) if caption_extension else None
        self.image_extensions = tuple(_dotted(extension) for extension in image_extensions)
        self.exclude = {Path(path).expanduser().resolve() for path in exclude}

    def identity(self) -> dict:
        """What the manifest records about the source (``source_info``; for information only)."""
        return {
            "kind": self.kind,
            "path": str(self.root),
            "caption_extension": self.caption_extension,
            "image_extensions": list(self.image_extensions),
        }

    def describe(self) -> str:
        return f"image folder {self.root}"

    def check_not_empty(self) -> None:
        """Raise :class:`CacheInputError` when the folder holds no image (stops at the first one found): checked
        before the VAE loads and before the cache folder is created."""
        if not has_images(self.root, self.image_extensions, self.exclude):
            extensions = "/".join(extension[1:] for extension in self.image_extensions)
            raise CacheInputError(
                f"image folder {str(self.root)!r} holds no {extensions} images (searched recursively, hidden files "
                "skipped); pass a folder of images."
            )

    def scan(self) -> tuple[list[SourceItem], list[dict]]:
        """``(items, skipped)``: the images sorted by sample id, and the ``errors.jsonl`` rows of files that are not
        images."""
        items: list[SourceItem] = []
        ignore = (self.caption_extension,) if self.caption_extension else ()
        sidecar_extensions = (self.caption_extension, self.caption_extension.upper()) if self.caption_extension else ()
        paths, rejected = scan_image_files(self.root, self.image_extensions, ignore, self.exclude)  # sorted
        skipped = [self._skip(path, reason) for path, reason in rejected]
        for path in paths:
            try:
                stat = path.stat()
            except OSError as error:
                skipped.append(self._skip(path, f"cannot stat: {error}"))
                continue
            sidecars = (path.with_suffix(extension) for extension in sidecar_extensions)
            sidecar = next((sidecar for sidecar in sidecars if sidecar.is_file()), None)
            caption = sidecar.read_text(encoding="utf-8", errors="replace").strip() if sidecar else None
            items.append(
                SourceItem(
                    sample_id=path.relative_to(self.root).as_posix(),
                    locator=str(path),
                    fingerprint={"size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
                    caption=caption,
                )
            )
        return items, skipped

    def _skip(self, path: Path, error: str) -> dict:
        return _scan_error(Path(path).relative_to(self.root).as_posix(), str(path), error)

    def read_bytes(self, locator: str) -> bytes:
        return Path(locator).read_bytes()

    def path_of(self, item: SourceItem) -> str:
        return str(item.locator)


class HubDatasetSource:
    """A map-style Hugging Face dataset (Hub id, local ``save_to_disk`` folder, or a ``datasets.Dataset``).

    The image column is read undecoded (``datasets.Image(decode=False)``), hashed, and decoded in the DataLoader
    workers. Sample ids are ``"<row:09d>-<first 16 hex of the content hash>"``: appending rows keeps old ids, and a
    changed image gets a new id (its old entry is dropped). Requires the optional ``datasets`` package.

    Args:
        dataset: Hub id, local folder, or a loaded ``datasets.Dataset`` / ``DatasetDict``.
        config_name: dataset configuration.
        split: split to cache (``"train"``).
        image_column: image column (default: the first ``Image`` feature, else ``"image"``).
        caption_column: caption column (default: the first of ``text``, ``caption``, ``captions``, ``prompt``,
            ``sentence`` present; ``None`` when there is none).
        cache_dir, revision: passed to ``datasets.load_dataset``.
    """

    kind = "dataset"

    def __init__(
        self,
        dataset,
        config_name: str | None = None,
        split: str = "train",
        image_column: str | None = None,
        caption_column: str | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
    ):
        self.dataset_arg = dataset
        self.config_name = config_name
        self.split = split
        self.cache_dir = cache_dir
        self.revision = revision
        self._dataset = None
        self.image_column = image_column
        self.caption_column = caption_column
        self.name = dataset_label(dataset)

    def _load(self):
        if self._dataset is not None:
            return self._dataset
        import datasets  # load_image_dataset has checked that it is installed

        dataset, self.image_column = load_image_dataset(
            self.dataset_arg, self.config_name, self.split, self.image_column, self.cache_dir, self.revision
        )
        if isinstance(dataset, datasets.IterableDataset):
            raise CacheInputError(
                "Streaming (iterable) datasets cannot be cached incrementally: load the dataset without streaming."
            )
        columns = list(dataset.column_names)
        if self.caption_column is None:
            self.caption_column = next((name for name in _CAPTION_COLUMNS if name in columns), None)
        elif self.caption_column not in columns:
            raise CacheInputError(
                f"dataset {self.name!r} has no caption column {self.caption_column!r}; columns: {columns}. "
                "Pass --caption_column (or leave it out for no captions)."
            )
        self._dataset = dataset
        self._images = dataset.select_columns([self.image_column])  # row reads in workers skip other columns
        return dataset

    def identity(self) -> dict:
        self._load()
        return {
            "kind": self.kind,
            "name": self.name,
            "config_name": self.config_name,
            "split": self.split,
            "image_column": self.image_column,
            "caption_column": self.caption_column,
        }

    def describe(self) -> str:
        return f"dataset {self.name} (split {self.split})"

    def scan(self) -> tuple[list[SourceItem], list[dict]]:
        dataset = self._load()
        columns = [self.image_column] + ([self.caption_column] if self.caption_column else [])
        items: list[SourceItem] = []
        skipped: list[dict] = []
        row = 0
        for batch in dataset.select_columns(columns).iter(batch_size=256):
            captions = batch[self.caption_column] if self.caption_column else [None] * len(batch[self.image_column])
            for value, caption in zip(batch[self.image_column], captions):
                try:
                    digest = content_hash(dataset_image_bytes(value))
                except (OSError, TypeError) as error:
                    skipped.append(_scan_error(f"{row:09d}", f"{self.name}[{row}]", f"cannot read the image: {error}"))
                else:
                    items.append(
                        SourceItem(
                            sample_id=f"{row:09d}-{digest[:16]}",
                            locator=row,
                            fingerprint={"content_hash": digest},
                            caption=caption if caption is None or isinstance(caption, (str, list)) else str(caption),
                            content_hash=digest,
                        )
                    )
                row += 1
        return items, skipped

    def read_bytes(self, locator: int) -> bytes:
        self._load()
        return dataset_image_bytes(self._images[int(locator)][self.image_column])

    def path_of(self, item: SourceItem) -> str:
        return f"{self.name}[{item.locator}]"
