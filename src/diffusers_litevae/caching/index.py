"""The cache's manifest (settings) and index (sample id -> shard and slot), with crash recovery (the files are
described in ``docs/caching.md``).

The index is rewritten atomically at the end of each run. A run killed before that leaves completed shards that
the index does not list yet ("orphans"); their headers carry their entries, so the next run (and
:class:`~diffusers_litevae.caching.dataset.LatentDataset`) folds them back in, newest last, and nothing is lost.
The header's ``shards`` list holds every shard the index has absorbed, including fully superseded ones until
they are deleted, so an old shard can never come back as an orphan and override a newer encoding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from ..file_io import flatten_dict, write_bytes_atomic
from .writer import CACHE_FORMAT, FORMAT_VERSION, list_shard_files, read_shard_entries, shard_sort_key

__all__ = ["CacheIndex", "CacheInputError", "IncompatibleCacheError", "compare_manifests", "load_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.jsonl"
ERRORS_NAME = "errors.jsonl"
LAST_RUN_NAME = "last_run.json"

# Manifest sections whose values decide the cached latents: any difference makes an existing cache unusable.
COMPARED_SECTIONS = ("vae", "latents", "transform", "source")
# Keys inside those sections that may differ (recorded for information only).
INFORMATIONAL_KEYS = {("vae", "name_or_path"), ("vae", "subfolder"), ("vae", "revision")}


class CacheInputError(ValueError):
    """Bad input to the caching job (settings, source, an unreadable manifest or index): ``litevae cache-latents``
    prints it as one ``error:`` line (exit code 2). Anything else propagates with its traceback."""


class IncompatibleCacheError(CacheInputError):
    """An existing cache was built with other settings than the current run's."""


def load_manifest(root: str | os.PathLike) -> dict | None:
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != CACHE_FORMAT:
        raise CacheInputError(f"{path} is not a {CACHE_FORMAT} manifest (format={manifest.get('format')!r}).")
    return manifest


def compare_manifests(existing: dict, requested: dict) -> list[str]:
    """Human-readable differences between two manifests' compared sections (empty when compatible)."""
    differences = []
    for section in COMPARED_SECTIONS:
        old = flatten_dict(existing.get(section, {}), section)
        new = flatten_dict(requested.get(section, {}), section)
        for key in sorted(set(old) | set(new)):
            if tuple(key.split(".", 1)) in INFORMATIONAL_KEYS:
                continue
            before, after = old.get(key, "<unset>"), new.get(key, "<unset>")
            if before != after:
                differences.append(f"{key}: cache has {before!r}, this run has {after!r}")
    return differences


class CacheIndex:
    """In-memory index of the cache folder ``root``: ``entries[sample_id]`` (with ``shard`` and ``slot``), the
    ``known_shards`` already reflected in them (live or superseded) and the highest ``generation`` seen."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.entries: dict[str, dict] = {}
        self.known_shards: set[str] = set()
        self.generation = 0

    @classmethod
    def load(cls, root: str | os.PathLike, recover: bool = True) -> "CacheIndex":
        """Read ``index.jsonl`` (if any) and, with ``recover``, fold in shards it does not list yet."""
        index = cls(root)
        path = index.root / INDEX_NAME
        if path.exists():
            with open(path, encoding="utf-8") as handle:
                header = json.loads(handle.readline())
                if header.get("format") != CACHE_FORMAT:
                    raise CacheInputError(f"{path} is not a {CACHE_FORMAT} index.")
                index.generation = int(header.get("generation", 0))
                index.known_shards = set(header.get("shards", []))
                for line in handle:
                    entry = json.loads(line)
                    index.entries[entry["id"]] = entry
        if recover:
            index.recover_orphans()
        return index

    def recover_orphans(self) -> None:
        """Fold in completed shards that the index does not list (from runs killed or still merging)."""
        for relpath in list_shard_files(self.root):  # oldest first: a newer encoding of a sample replaces an older one
            if relpath in self.known_shards:
                continue
            try:
                shard_entries = read_shard_entries(self.root / relpath)
            except Exception as error:  # noqa: BLE001 (a damaged shard must not stop recovery)
                logger.warning("ignoring unreadable shard %s: %s", relpath, error)
                continue
            for slot, entry in enumerate(shard_entries):
                self.entries[entry["id"]] = {**entry, "shard": relpath, "slot": slot}
            self.known_shards.add(relpath)
            self.generation = max(self.generation, shard_sort_key(relpath)[0])

    def next_generation(self) -> int:
        """A generation number above every existing index entry and shard folder."""
        on_disk = [shard_sort_key(relpath)[0] for relpath in list_shard_files(self.root)]
        folders = [int(p.name[1:]) for p in (self.root / "shards").glob("g*") if p.name[1:].isdigit()]
        return max([self.generation, *on_disk, *folders]) + 1

    def live_shards(self) -> set[str]:
        return {entry["shard"] for entry in self.entries.values()}

    def write(self) -> None:
        """Write ``index.jsonl`` atomically (entries sorted by sample id)."""
        existing = {relpath for relpath in self.known_shards if (self.root / relpath).exists()}
        self.known_shards = existing | self.live_shards()
        header = {
            "format": CACHE_FORMAT,
            "version": FORMAT_VERSION,
            "kind": "header",
            "generation": self.generation,
            "num_samples": len(self.entries),
            "shards": sorted(self.known_shards, key=shard_sort_key),
        }
        lines = [json.dumps(header)]
        lines.extend(json.dumps(self.entries[sample_id], ensure_ascii=False) for sample_id in sorted(self.entries))
        write_bytes_atomic(self.root / INDEX_NAME, ("\n".join(lines) + "\n").encode("utf-8"))

    def delete_dead_shards(self) -> None:
        """Delete the absorbed shards no entry points to any more (every sample re-encoded or removed), after
        :meth:`write` (they stay listed as known until the next write)."""
        for relpath in sorted(self.known_shards - self.live_shards(), key=shard_sort_key):
            path = self.root / relpath
            path.unlink(missing_ok=True)
            for folder in (path.parent, path.parent.parent):  # drop emptied rank/generation folders
                with contextlib.suppress(OSError):
                    folder.rmdir()
