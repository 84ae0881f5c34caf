"""Safetensors shards written atomically, from a background thread, and the lock of a cache folder.

A shard holds up to ``samples_per_shard`` samples of one bucket, stacked: ``mean`` and ``std`` (``(N, C, h, w)``;
no ``std`` for deterministic VAEs) and, with flipping, ``mean_flipped``/``std_flipped``. Its header metadata carries
the samples' index entries (``entries``), so a shard is self-describing: it is the journal of the caching job. A
shard appears complete or not at all (temporary file, fsync, ``os.replace``) and is never modified afterwards.
Shards live at ``shards/g<generation>/r<rank>/<seq>.safetensors``: one folder per run and process.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..file_io import follow_umask, fsync_dir, temp_path

__all__ = [
    "BackgroundWriter",
    "CacheBusyError",
    "CacheLock",
    "ShardWriter",
    "list_shard_files",
    "read_shard_entries",
    "shard_relpath",
    "shard_sort_key",
]

CACHE_FORMAT = "diffusers-litevae-latent-cache"
FORMAT_VERSION = 1
SHARDS_DIR = "shards"
LOCK_NAME = ".cache-latents.lock"
_SHARD_PATTERN = re.compile(r"^shards/g(\d+)/r(\d+)/(\d+)\.safetensors$")


def shard_relpath(generation: int, rank: int, seq: int) -> str:
    """Relative path of a shard (POSIX separators; the form stored in the index)."""
    return f"{SHARDS_DIR}/g{generation:05d}/r{rank:03d}/{seq:06d}.safetensors"


def shard_sort_key(relpath: str) -> tuple[int, int, int]:
    """``(generation, rank, seq)`` of a shard path: later keys hold newer encodings of a sample."""
    match = _SHARD_PATTERN.match(relpath)
    if match is None:
        raise ValueError(f"not a shard path: {relpath!r}")
    return tuple(int(group) for group in match.groups())


def list_shard_files(root: str | os.PathLike) -> list[str]:
    """All completed shard files under ``root`` (temporary files excluded), oldest first."""
    root = Path(root)
    found = (path.relative_to(root).as_posix() for path in (root / SHARDS_DIR).glob("g*/r*/*.safetensors"))
    return sorted((relpath for relpath in found if _SHARD_PATTERN.match(relpath)), key=shard_sort_key)


def read_shard_entries(path: str | os.PathLike) -> list[dict]:
    """The index entries stored in a shard's header (slot ``i`` is the ``i``-th entry)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not a {CACHE_FORMAT} shard (metadata format={metadata.get('format')!r}).")
    return json.loads(metadata["entries"])


def remove_temp_files(root: str | os.PathLike) -> None:
    """Delete temporary files left by killed runs (call only while no process of this cache is writing)."""
    for path in Path(root).rglob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            path.unlink()


def save_shard(path: Path, tensors: dict[str, torch.Tensor], entries: list[dict], metadata: dict[str, str]) -> None:
    """Write one shard atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    header = {**metadata, "format": CACHE_FORMAT, "version": str(FORMAT_VERSION), "entries": json.dumps(entries)}
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temp), metadata=header)
    follow_umask(temp)  # safetensors creates its files 0600; set before the rename, so the shard appears readable
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


class CacheBusyError(RuntimeError):
    """Another caching run holds the cache folder's lock; the message names it and what to do."""


class CacheLock:
    """An exclusive, non-blocking lock on a cache folder for one caching run (or upload), held by its main process.

    It is an advisory operating-system lock (``flock``; ``msvcrt.locking`` on Windows) on ``.cache-latents.lock`` in
    the folder. The file is left in place (deleting a lock file while another process waits on it would let two
    runs in); the lock disappears with the process that holds it, so a killed run never blocks the next one. The
    file's text names the holder, for the message a refused run prints.

    Args:
        root: the cache folder (created if missing).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._handle = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`CacheBusyError` at once if another run holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = " ".join(handle.read().split()) or "another process"
            handle.close()
            raise CacheBusyError(
                f"another cache-latents run ({holder}) is writing to {self.root}; wait until it ends, or use another "
                "--output_dir. The lock is released when that run exits, even if it crashes."
            ) from None
        handle.seek(0)
        handle.truncate()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Release the lock (closing the file releases it too)."""
        if self._handle is not None:
            try:
                _lock(self._handle, take=False)
            finally:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> "CacheLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(handle, take: bool = True) -> None:
    """Take (or with ``take=False`` release) the operating-system lock on an open file, without waiting."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK if take else msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB if take else fcntl.LOCK_UN)


class ShardWriter:
    """Collects encoded samples per bucket and writes a shard whenever a bucket has ``samples_per_shard``.

    Args:
        root: the cache folder.
        generation (`int`), rank (`int`): this run's generation and this process's rank (shard folder).
        samples_per_shard (`int`): samples per shard (the last shards of a run may hold fewer).
        max_buffered (`int`): when more samples than this wait in memory across buckets, the fullest bucket is
            written early (bounds memory and the work a crash can lose).
        metadata (`dict[str, str]`): extra header metadata for every shard.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        generation: int,
        rank: int,
        samples_per_shard: int = 512,
        max_buffered: int | None = None,
        metadata: dict[str, str] | None = None,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}.")
        self.root = Path(root)
        self.generation = generation
        self.rank = rank
        self.samples_per_shard = samples_per_shard
        self.max_buffered = max_buffered or 4 * samples_per_shard
        self.metadata = metadata or {}
        self._seq = 0
        self._buffers: dict[tuple[int, int], list[tuple[list[dict], dict[str, torch.Tensor]]]] = defaultdict(list)
        self._counts: dict[tuple[int, int], int] = defaultdict(int)

    def add(self, bucket: tuple[int, int], entries: list[dict], tensors: dict[str, torch.Tensor]) -> None:
        """Queue samples of one bucket: ``entries[i]`` describes row ``i`` of every tensor in ``tensors``."""
        self._buffers[bucket].append((entries, tensors))
        self._counts[bucket] += len(entries)
        while self._counts[bucket] >= self.samples_per_shard:
            self._write(bucket, self.samples_per_shard)
        if sum(self._counts.values()) > self.max_buffered:
            fullest = max(self._counts, key=self._counts.get)
            self._write(fullest, self._counts[fullest])

    def flush(self) -> None:
        """Write every partially filled bucket."""
        for bucket in list(self._buffers):
            while self._counts[bucket] > 0:
                self._write(bucket, min(self._counts[bucket], self.samples_per_shard))

    def _write(self, bucket: tuple[int, int], count: int) -> None:
        chunks = self._buffers[bucket]
        taken_entries: list[dict] = []
        taken: dict[str, list[torch.Tensor]] = defaultdict(list)
        while len(taken_entries) < count:
            entries, tensors = chunks.pop(0)
            need = count - len(taken_entries)
            if len(entries) > need:  # the rest of this chunk waits for the next shard
                chunks.insert(0, (entries[need:], {name: tensor[need:] for name, tensor in tensors.items()}))
            taken_entries.extend(entries[:need])
            for name, tensor in tensors.items():
                taken[name].append(tensor[:need])
        self._counts[bucket] -= count
        if not chunks:
            del self._buffers[bucket], self._counts[bucket]
        relpath = shard_relpath(self.generation, self.rank, self._seq)
        self._seq += 1
        metadata = {**self.metadata, "bucket": f"{bucket[0]}x{bucket[1]}"}
        save_shard(
            self.root / relpath, {name: torch.cat(parts) for name, parts in taken.items()}, taken_entries, metadata
        )


class BackgroundWriter:
    """Runs a :class:`ShardWriter` in a thread so that encoding never waits on disk.

    ``submit`` blocks only when ``max_queue`` batches are waiting (back-pressure bounds memory). An exception in
    the thread is re-raised by the next ``submit`` or by ``close``.

    Args:
        writer (`ShardWriter`): the writer.
        max_queue (`int`): batches that may wait.
    """

    def __init__(self, writer: ShardWriter, max_queue: int = 8):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self.busy_s = 0.0  # time the thread spent writing (not waiting)
        self.submit_wait_s = 0.0  # time callers spent blocked on a full queue
        self._thread = threading.Thread(target=self._loop, name="latent-cache-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()  # (bucket, entries, tensors, ready), or None: flush and stop
            if self._error is None:
                try:
                    if job is not None and job[3] is not None:  # a CUDA event after the device-to-host copies
                        job[3].synchronize()
                    start = time.perf_counter()
                    if job is None:
                        self.writer.flush()
                    else:
                        self.writer.add(*job[:3])
                    self.busy_s += time.perf_counter() - start
                except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
                    self._error = error
            if job is None:
                return

    def submit(
        self, bucket: tuple[int, int], entries: list[dict], tensors: dict[str, torch.Tensor], ready=None
    ) -> None:
        if self._error is not None:
            raise RuntimeError("the shard writer thread failed") from self._error
        start = time.perf_counter()
        self._queue.put((bucket, entries, tensors, ready))
        self.submit_wait_s += time.perf_counter() - start

    def close(self) -> None:
        """Write what is buffered, stop the thread, and raise if it failed."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("the shard writer thread failed") from self._error
