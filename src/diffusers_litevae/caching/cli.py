"""``litevae cache-latents``: encode an image folder or a Hugging Face dataset into a latent cache.

Examples::

    litevae cache-latents --train_data_dir ./photos --vae stabilityai/sdxl-vae --output_dir ./cache --resolution 1024
    litevae cache-latents --train_data_dir ./photos --output_dir ./cache-litevae  # the bundled litevae-s-taef2
    accelerate launch --num_processes 8 -m diffusers_litevae.cli cache-latents --dataset_name user/images \\
        --caption_column text --vae ./my-litevae --output_dir ./cache
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field

from ..settings import add_setting_arguments, input_error, setting, settings_from_args
from .encode import INPUT_GROUP, CacheSettings, cache_latents
from .index import CacheInputError
from .preprocess import RESIZE_GROUP, TransformConfig
from .sources import ImageFolderSource
from .writer import CacheBusyError

__all__ = ["DEFAULT_VAE", "add_arguments", "cache_settings", "default_num_workers", "run"]

DEFAULT_VAE = "litevae-s-taef2"  # bundled with the package, as `litevae eval`'s default


def default_num_workers(most: int = 4) -> int:
    """``most`` decoding workers, or as many as this process may use CPU cores if that is fewer (torch warns when
    a DataLoader has more workers than cores)."""
    # macOS and Windows have no sched_getaffinity.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(most, cores))


@dataclass(frozen=True)
class _CommandFlags:
    """The flags of ``litevae cache-latents`` that are :func:`~diffusers_litevae.caching.cache_latents`' arguments
    (source, VAE, cache folder), and ``--no_buckets`` (``bucketing=False``)."""

    train_data_dir: str | None = setting(
        None, "image folder, read recursively; captions from <image>.txt sidecars", group=INPUT_GROUP
    )
    dataset_name: str | None = setting(
        None, "Hugging Face dataset id, or a folder written by save_to_disk", group=INPUT_GROUP
    )
    vae: str = setting(
        DEFAULT_VAE,
        "VAE folder, Hub id (AutoencoderLite, AutoencoderKL, AutoencoderTiny, ...), TAESD-family folder, or a "
        "bundled model by name (litevae-s-taef2, taef2). Default: the bundled litevae-s-taef2",
        flags=("--vae", "--pretrained_vae_model_name_or_path"),
        group="VAE",
    )
    output_dir: str | None = setting(
        None, "cache folder (an existing cache is updated in place)", required=True, group="output"
    )
    no_buckets: bool = setting(
        False,
        "one resolution x resolution crop per image instead of aspect-ratio buckets",
        action="store_true",
        group=RESIZE_GROUP,
    )


@dataclass(frozen=True)
class _Arguments(CacheSettings, TransformConfig, _CommandFlags):
    """Every flag of ``litevae cache-latents``, listed by ``--help`` in its groups: input, VAE, output, resize and
    crop, speed. A dataclass takes its bases' fields last base first, so each group starts with its command flag."""

    num_workers: int = field(default_factory=default_num_workers)  # the Python API's default stays 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, _Arguments, one_of=("train_data_dir", "dataset_name"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def cache_settings(args: argparse.Namespace, **overrides) -> CacheSettings:
    """The :class:`~diffusers_litevae.caching.encode.CacheSettings` of parsed ``litevae cache-latents`` flags."""
    transform = settings_from_args(TransformConfig, args, bucketing=not args.no_buckets)
    return settings_from_args(CacheSettings, args, transform=transform, progress=not args.no_progress, **overrides)


def run(args: argparse.Namespace) -> int:
    from ..file_io import invoked_command
    from ..image_io import ImageInputError
    from ..vae_io import VAELoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = cache_settings(args, command=invoked_command())
        if args.train_data_dir:
            source = ImageFolderSource(
                args.train_data_dir, caption_extension=settings.caption_extension, exclude=(args.output_dir,)
            )
        else:
            source = settings.dataset_source(args.dataset_name)
        report = cache_latents(source, args.vae, args.output_dir, settings)
    except (CacheInputError, ImageInputError, VAELoadError, CacheBusyError) as error:  # one line, else a traceback
        return input_error("cache-latents", error)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one summary, from the main process
        return 0
    print(json.dumps(report.to_dict(), indent=2))
    if report.num_samples == 0:
        source = args.train_data_dir or args.dataset_name
        if report.num_failed == 0 and report.num_skipped_files == 0:
            return input_error("cache-latents", f"{source!r} holds no images; pass a source with images.")
        return input_error(
            "cache-latents",
            f"no image of {source!r} could be cached: {report.num_failed} could not be read and "
            f"{report.num_skipped_files} files are not images (each listed with its reason in "
            f"{os.path.join(report.output_dir, 'errors.jsonl')}); pass a source with readable images.",
        )
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    return (
        f"the shards finished so far are kept in {args.output_dir}; run the same command again to resume "
        "(images already encoded are not encoded again)."
    )
