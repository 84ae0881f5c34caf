"""Reading a latent cache in a training loop: :class:`LatentDataset` and :class:`BucketBatchSampler`.

``LatentDataset`` reads samples by index through the cache's index (never by position in a stream), so a latent
is always paired with its own caption and metadata whatever the shuffling. Shards are memory-mapped with
safetensors ``safe_open`` and only the requested slot is read. Latents come out ready for the diffusion model
(:class:`~diffusers_litevae.vae_io.LatentNormalization`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import OrderedDict

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from ..vae_io import LatentNormalization
from .buckets import sample_seed
from .index import CacheIndex, load_manifest

__all__ = ["BucketBatchSampler", "LatentDataset"]


class _StringColumn:
    """Strings packed in one numpy byte buffer: no per-item Python objects for DataLoader workers to copy."""

    def __init__(self, values: list[str]):
        encoded = [value.encode("utf-8") for value in values]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(value) for value in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")


class LatentDataset(Dataset):
    """A latent cache as a torch ``Dataset``.

    Args:
        cache_dir: the folder written by ``litevae cache-latents`` / :func:`~diffusers_litevae.caching.cache_latents`,
            or the Hub dataset repo ``owner/name`` one was uploaded to (``litevae push-cache``), downloaded with
            ``snapshot_download`` (cached by huggingface_hub).
        latent_sampling (`str`): ``"sample"`` draws ``mean + std * noise`` (a fresh posterior sample, as
            ``latent_dist.sample()`` does); ``"mean"`` returns the posterior mean (``latent_dist.mode()``).
        generator (`torch.Generator`, *optional*): noise source for ``"sample"`` (single-process loading; DataLoader
            workers would each copy it and repeat the same noise: use ``seed`` with workers).
        seed (`int`, *optional*): per-sample noise and flips from ``(seed, epoch, index)``: reproducible and
            independent of workers and order. Call :meth:`set_epoch` each epoch.
        flip_probability (`float`): chance of returning the horizontally flipped latent (needs a cache built with
            ``flip=True``).
        scale (`bool`): apply the VAE's shift/scaling (``False`` returns raw VAE latents).
        revision (`str`, *optional*): the Hub revision (branch, tag, commit) of a cache given by repo id.
        token (`str`, *optional*): Hugging Face token for a private cache repo.
        vae (*optional*): the VAE the latents are for (a loaded VAE, or a folder / Hub id / bundled name): a cache
            made by another VAE (class, config, weights or latent factors differ) is refused.

    Each item is a dict: ``latents`` (float32 ``(C, h, w)``), ``sample_id`` (str), ``caption`` (str, ``""`` when
    none), ``original_size`` and ``target_size`` (``(height, width)`` long tensors), ``crop_ltrb`` and
    ``crop_top_left`` (``(top, left)``, SDXL's ``crops_coords_top_left``) in resized-image pixels (mirrored for a
    flipped sample), and ``flipped`` (bool).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        latent_sampling: str = "sample",
        generator: torch.Generator | None = None,
        seed: int | None = None,
        flip_probability: float = 0.0,
        scale: bool = True,
        revision: str | None = None,
        token: str | None = None,
        vae=None,
    ):
        from .hub import check_cache_vae, open_cache

        if latent_sampling not in ("sample", "mean"):
            raise ValueError(f"latent_sampling must be 'sample' or 'mean', got {latent_sampling!r}.")
        self.root = open_cache(cache_dir, revision, token).resolve()
        manifest = load_manifest(self.root)
        if manifest is None:
            raise FileNotFoundError(
                f"{self.root} is not a latent cache (no manifest.json): build it with `litevae cache-latents`."
            )
        if vae is not None:
            check_cache_vae(manifest, vae, repr(str(cache_dir)))
        self.manifest = manifest
        self.latent_sampling = latent_sampling
        self.generator = generator
        self.seed = seed
        self.scale = scale
        self.epoch = 0
        tensors = manifest["latents"]["tensors"]
        self.has_std = "std" in tensors
        self.has_flipped = "mean_flipped" in tensors
        if flip_probability > 0 and not self.has_flipped:
            raise ValueError(
                f"flip_probability={flip_probability} needs flipped latents, but {self.root} was cached without "
                "them: rebuild with --flip (in another --output_dir)."
            )
        self.flip_probability = flip_probability
        vae = manifest["vae"]
        self.normalization = LatentNormalization.from_config(vae)
        self.scaling_factor = float(vae.get("scaling_factor") or 1.0)
        self.shift_factor = float(vae.get("shift_factor") or 0.0)
        self.latents_mean = self._channel_tensor(vae.get("latents_mean"))
        self.latents_std = self._channel_tensor(vae.get("latents_std"))
        self._handles: OrderedDict[str, object] = OrderedDict()  # open shards, least recently used first
        self._handles_pid = os.getpid()
        # The index as columns (numpy arrays, packed strings) that DataLoader workers share without copying.
        index = CacheIndex.load(self.root, recover=True)  # includes shards of a run that was killed
        entries = [index.entries[sample_id] for sample_id in sorted(index.entries)]
        self.shards = sorted({entry["shard"] for entry in entries})
        shard_number = {relpath: i for i, relpath in enumerate(self.shards)}
        self._ids = _StringColumn([entry["id"] for entry in entries])
        self._captions = _StringColumn([json.dumps(entry.get("caption")) for entry in entries])
        self._shard = np.array([shard_number[entry["shard"]] for entry in entries], dtype=np.int32)
        self._slot = np.array([entry["slot"] for entry in entries], dtype=np.int32)
        self.buckets = np.array([entry["bucket"] for entry in entries], dtype=np.int32).reshape(-1, 2)
        self._original = np.array([entry["original_size"] for entry in entries], dtype=np.int64).reshape(-1, 2)
        self._resized = np.array([entry["resized_size"] for entry in entries], dtype=np.int64).reshape(-1, 2)
        self._crop = np.array([entry["crop_ltrb"] for entry in entries], dtype=np.int64).reshape(-1, 4)
        self._position = {entry["id"]: i for i, entry in enumerate(entries)}

    @staticmethod
    def _channel_tensor(values) -> torch.Tensor | None:
        return None if values is None else torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self._ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the noise/flip draws of ``epoch`` (with ``seed``)."""
        self.epoch = epoch

    def sample_id(self, i: int) -> str:
        return self._ids[i]

    def index_of(self, sample_id: str) -> int:
        """Position of ``sample_id`` in the dataset (``KeyError`` when it is not cached)."""
        return self._position[sample_id]

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> diffusion-model latents (:class:`~diffusers_litevae.vae_io.LatentNormalization`)."""
        return self.normalization.normalize(latents)

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents` (what ``vae.decode`` expects)."""
        return self.normalization.denormalize(latents)

    # The old names read like diffusers' ``AutoencoderTiny.scale_latents`` (raw latents -> [0, 1]), which is a
    # different map; they stay callable for existing code.
    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Deprecated name of :meth:`normalize_latents`."""
        warnings.warn(
            "LatentDataset.scale_latents is deprecated; use normalize_latents.", DeprecationWarning, stacklevel=2
        )
        return self.normalize_latents(latents)

    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Deprecated name of :meth:`denormalize_latents`."""
        warnings.warn(
            "LatentDataset.unscale_latents is deprecated; use denormalize_latents.", DeprecationWarning, stacklevel=2
        )
        return self.denormalize_latents(latents)

    def _handle(self, relpath: str):
        if self._handles_pid != os.getpid():  # a forked DataLoader worker: open its own handles
            self._handles = OrderedDict()
            self._handles_pid = os.getpid()
        if relpath in self._handles:
            self._handles.move_to_end(relpath)
        else:
            self._handles[relpath] = safe_open(str(self.root / relpath), framework="pt")
            if len(self._handles) > 64:
                self._handles.popitem(last=False)
        return self._handles[relpath]

    def _generator(self, i: int) -> torch.Generator | None:
        if self.seed is None:
            return self.generator
        return torch.Generator().manual_seed(sample_seed(self.seed, f"{self.epoch}/{i}") & (2**63 - 1))

    def raw_moments(self, i: int, flipped: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stored ``(mean, std)`` of sample ``i`` in float32, unscaled (``std`` is ``None`` if not stored)."""
        handle = self._handle(self.shards[self._shard[i]])
        slot = int(self._slot[i])
        suffix = "_flipped" if flipped else ""
        mean = handle.get_slice("mean" + suffix)[slot].float()
        std = handle.get_slice("std" + suffix)[slot].float() if self.has_std else None
        return mean, std

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        generator = self._generator(i)
        flipped = self.flip_probability > 0 and bool(torch.rand((), generator=generator) < self.flip_probability)
        mean, std = self.raw_moments(i, flipped)
        latents = mean
        if self.latent_sampling == "sample" and std is not None:
            latents = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        if self.scale:
            latents = self.normalize_latents(latents)
        left, top, right, bottom = (int(v) for v in self._crop[i])
        if flipped:  # the crop box of the mirrored image, in mirrored coordinates
            width = int(self._resized[i][1])
            left, right = width - right, width - left
        caption = json.loads(self._captions[i])
        return {
            "latents": latents,
            "sample_id": self._ids[i],
            "caption": "" if caption is None else caption,
            "original_size": torch.from_numpy(self._original[i].copy()),
            "target_size": torch.from_numpy(self.buckets[i].astype(np.int64)),
            "crop_ltrb": torch.tensor([left, top, right, bottom]),
            "crop_top_left": torch.tensor([top, left]),
            "flipped": flipped,
        }


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices that share a bucket (so their latents stack), shuffled reproducibly per epoch.

    Args:
        buckets: a :class:`LatentDataset` or a sequence of per-sample ``(height, width)``.
        batch_size (`int`): samples per batch.
        shuffle (`bool`): shuffle samples within buckets and the order of batches, from ``(seed, epoch)``.
        seed (`int`): shuffling seed; call :meth:`set_epoch` each epoch.
        drop_last (`bool`): drop each bucket's last incomplete batch. A bucket with fewer than ``batch_size`` samples
            then yields nothing (a small cache can yield no batch at all): the sampler warns with the count dropped.
        num_replicas (`int`), rank (`int`): for data-parallel training without ``accelerator.prepare`` on the
            DataLoader: every rank gets the same number of batches (the batch list is truncated with
            ``drop_last``, else padded by repeating its first batches) and takes every ``num_replicas``-th.
    """

    def __init__(
        self,
        buckets,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}.")
        sizes = buckets.buckets if isinstance(buckets, LatentDataset) else np.asarray(buckets).reshape(-1, 2)
        self.groups: dict[tuple[int, int], np.ndarray] = {}
        for key in sorted({tuple(int(v) for v in size) for size in sizes}):
            self.groups[key] = np.flatnonzero((sizes[:, 0] == key[0]) & (sizes[:, 1] == key[1]))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        short = {key: len(indices) for key, indices in self.groups.items() if len(indices) < batch_size}
        if drop_last and short:
            total = sum(len(indices) for indices in self.groups.values())
            dropped = sum(len(indices) % batch_size for indices in self.groups.values())
            listed = ", ".join(f"{h}x{w} ({count})" for (h, w), count in short.items())
            warnings.warn(
                f"drop_last=True with batch_size={batch_size}: {len(short)} of {len(self.groups)} buckets hold fewer "
                f"samples than one batch ({listed}) and yield no batch; {dropped} of {total} samples are dropped "
                "every epoch. Pass drop_last=False, or a smaller batch_size.",
                UserWarning,
                stacklevel=2,
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: list[list[int]] = []
        for indices in self.groups.values():
            order = rng.permutation(indices) if self.shuffle else indices
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                if len(batch) < self.batch_size and self.drop_last:
                    continue
                batches.append([int(i) for i in batch])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            batches.sort(key=lambda batch: batch[0])  # dataset order
        if self.num_replicas > 1 and batches:
            if self.drop_last:
                batches = batches[: len(batches) // self.num_replicas * self.num_replicas]
            else:
                padded = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
                batches = batches + [batches[i % len(batches)] for i in range(padded - len(batches))]
        return batches

    def __iter__(self):
        yield from self._all_batches()[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return len(self._all_batches()[self.rank :: self.num_replicas])
