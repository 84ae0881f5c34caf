"""Latent caching for latent-diffusion training: encode once, train many epochs on memory-mapped latents.

- :func:`cache_latents` / ``litevae cache-latents``: image folder or Hugging Face dataset -> safetensors shards +
  index, with aspect-ratio buckets, incremental and crash-safe updates, and multi-GPU via ``accelerate launch``;
  its settings are a :class:`CacheSettings`.
- :class:`LatentDataset` and :class:`BucketBatchSampler`: read the cache in a training loop.
- ``litevae push-cache`` (:mod:`diffusers_litevae.caching.hub`): a cache as a Hub dataset repo, which
  ``LatentDataset("owner/name")`` downloads and opens.

See ``docs/caching.md``.
"""

from __future__ import annotations

from ..vae_io import load_vae, posterior_moments, vae_identity
from .buckets import CropPlan, assign_bucket, make_buckets, plan_crop
from .dataset import BucketBatchSampler, LatentDataset
from .encode import CacheReport, CacheSettings, cache_latents
from .index import CacheIndex, IncompatibleCacheError, load_manifest
from .preprocess import TransformConfig, pixels_to_model_input, preprocess_image
from .sources import HubDatasetSource, ImageFolderSource, SourceItem

__all__ = [
    "BucketBatchSampler",
    "CacheIndex",
    "CacheReport",
    "CacheSettings",
    "CropPlan",
    "HubDatasetSource",
    "ImageFolderSource",
    "IncompatibleCacheError",
    "LatentDataset",
    "SourceItem",
    "TransformConfig",
    "assign_bucket",
    "cache_latents",
    "load_manifest",
    "load_vae",
    "posterior_moments",
    "make_buckets",
    "pixels_to_model_input",
    "plan_crop",
    "preprocess_image",
    "vae_identity",
]
