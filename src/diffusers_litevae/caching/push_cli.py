"""``litevae push-cache``: upload a latent cache to the Hugging Face Hub as a dataset repo, with a dataset card.

Example::

    litevae push-cache ./latents --repo_id your-name/my-latents --dry_run   # writes ./latents/README.md only
    litevae push-cache ./latents --repo_id your-name/my-latents --private

Training then reads it by repo id: ``LatentDataset("your-name/my-latents", revision=..., vae=...)``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..settings import add_setting_arguments, input_error, setting, settings_from_args
from .hub import PushCacheSettings, push_cache
from .index import CacheInputError
from .writer import CacheBusyError

__all__ = ["add_arguments", "interrupted", "run"]


@dataclass(frozen=True)
class _Target:
    """The flags of ``litevae push-cache`` that are :func:`push_cache`' arguments."""

    cache_dir: str | None = setting(
        None, "a finished latent cache (the --output_dir of `litevae cache-latents`)", flags=("cache_dir",)
    )
    repo_id: str | None = setting(None, "target Hub dataset repo 'owner/name' (created if missing)", required=True)


@dataclass(frozen=True)
class _Arguments(PushCacheSettings, _Target):
    """Every flag of ``litevae push-cache``: the cache and the repo, then the settings."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, _Arguments)


def run(args: argparse.Namespace) -> int:
    try:
        result = push_cache(args.cache_dir, args.repo_id, settings_from_args(PushCacheSettings, args))
    except (CacheInputError, CacheBusyError) as error:
        return input_error("push-cache", error)
    print(f"dry run: nothing uploaded; wrote the dataset card {result}" if args.dry_run else f"uploaded to {result}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    if args.large:
        return "upload_large_folder resumes: run the same command again."
    return "an upload is one commit, so the repo has all of this upload or none of it; run the same command again."
