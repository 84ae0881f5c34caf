"""``litevae push-cache``: upload a latent cache to the Hugging Face Hub as a dataset repo, with a dataset card.

Example::

    litevae push-cache ./latents --repo_id your-name/my-latents --dry_run   # writes ./latents/README.md only
    litevae push-cache ./latents --repo_id your-name/my-latents --private

Training then reads it by repo id: ``LatentDataset("your-name/my-latents", revision=..., vae=...)``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "interrupted", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache_dir", help="a finished latent cache (the --output_dir of `litevae cache-latents`)")
    parser.add_argument("--repo_id", required=True, help="target Hub dataset repo 'owner/name' (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: the one stored by `hf auth login`)")
    parser.add_argument("--license", default=None, help="Hub license id for the card (that of the images)")
    parser.add_argument(
        "--commit_message",
        default=None,
        help='commit message of the upload (default: "Upload a latent cache with diffusers-litevae")',
    )
    parser.add_argument(
        "--large",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="upload with upload_large_folder (resumable, many commits); default: for caches over 10 GiB",
    )
    parser.add_argument(
        "--dry_run", "--dry-run", action="store_true", help="only write the dataset card (README.md) into the cache"
    )


def run(args: argparse.Namespace) -> int:
    from .hub import DEFAULT_COMMIT_MESSAGE, push_cache
    from .index import CacheInputError
    from .writer import CacheBusyError

    try:
        result = push_cache(
            args.cache_dir,
            args.repo_id,
            private=args.private,
            token=args.token,
            commit_message=args.commit_message or DEFAULT_COMMIT_MESSAGE,
            license=args.license,
            dry_run=args.dry_run,
            large=args.large,
        )
    except (CacheInputError, CacheBusyError) as error:
        print(f"litevae push-cache: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"dry run: nothing uploaded; wrote the dataset card {result}" if args.dry_run else f"uploaded to {result}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    if args.large:
        return "upload_large_folder resumes: run the same command again."
    return "an upload is one commit, so the repo has all of this upload or none of it; run the same command again."
