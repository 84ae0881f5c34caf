"""The caching job's input side: decoding and cropping source images in DataLoader workers, batched by bucket."""

from __future__ import annotations

import time

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..image_io import describe_read_error
from .preprocess import TransformConfig, preprocess_image
from .sources import SourceItem, content_hash

__all__ = ["DecodeStream", "worker_init"]


def worker_init(_worker_id: int) -> None:
    """The DataLoader ``worker_init_fn``: one torch thread per decode worker."""
    torch.set_num_threads(1)  # workers decode with PIL; torch threads would only fight the encoder for cores


class DecodeStream(IterableDataset):
    """Decodes and crops a list of source items in DataLoader workers, yielding same-bucket ``uint8`` batches.

    Each worker takes an interleaved part of ``items`` and keeps one buffer per bucket; a buffer is yielded when it
    holds ``batch_size`` images, or early (the fullest) when more than ``max_buffered`` images wait. Unreadable
    images are yielded as ``failed`` records instead of raising.
    """

    def __init__(
        self,
        source,
        items: list[SourceItem],
        transform: TransformConfig,
        batch_size: int,
        max_buffered: int | None = None,
    ):
        self.source = source
        self.items = items
        self.transform = transform
        self.batch_size = batch_size
        self.max_buffered = max_buffered or 4 * batch_size

    @staticmethod
    def _batch(bucket, buffer, decode_s: float, failed: tuple[dict, ...] = ()) -> dict:
        """A batch of ``buffer``'s ``(pixels, entry)`` pairs, or with an empty ``buffer`` of ``failed`` rows only."""
        return {
            "bucket": list(bucket) if buffer else None,
            "pixels": torch.stack([pixels for pixels, _ in buffer]) if buffer else None,
            "entries": [entry for _, entry in buffer],
            "failed": list(failed),
            "decode_s": decode_s,
        }

    def __iter__(self):
        worker = get_worker_info()
        items = self.items if worker is None else self.items[worker.id :: worker.num_workers]
        buckets = self.transform.buckets()
        buffers: dict[tuple[int, int], list] = {}
        seconds: dict[tuple[int, int], float] = {}
        for item in items:
            start = time.perf_counter()
            try:
                data = self.source.read_bytes(item.locator)
                digest = item.content_hash or content_hash(data)
                pixels, plan = preprocess_image(data, self.transform, item.sample_id, buckets)
            except Exception as error:  # noqa: BLE001 (any undecodable input is reported, never fatal)
                row = {
                    "sample_id": item.sample_id,
                    "path": self.source.path_of(item),
                    "stage": "decode",
                    "error": describe_read_error(error),
                    "fingerprint": item.fingerprint,
                }
                yield self._batch(None, [], time.perf_counter() - start, (row,))
                continue
            entry = {
                "id": item.sample_id,
                "bucket": list(plan.target_size),
                "original_size": list(plan.original_size),
                "resized_size": list(plan.resized_size),
                "crop_ltrb": list(plan.crop_ltrb),
                "caption": item.caption,
                "content_hash": digest,
                "fingerprint": item.fingerprint,
            }
            bucket = plan.target_size
            buffers.setdefault(bucket, []).append((pixels, entry))
            seconds[bucket] = seconds.get(bucket, 0.0) + time.perf_counter() - start
            if len(buffers[bucket]) >= self.batch_size:
                yield self._batch(bucket, buffers.pop(bucket), seconds.pop(bucket))
            elif sum(len(buffer) for buffer in buffers.values()) > self.max_buffered:
                fullest = max(buffers, key=lambda key: len(buffers[key]))
                yield self._batch(fullest, buffers.pop(fullest), seconds.pop(fullest))
        for bucket in sorted(buffers):
            yield self._batch(bucket, buffers[bucket], seconds[bucket])
