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
import sys

__all__ = ["DEFAULT_VAE", "add_arguments", "default_num_workers", "run"]

DEFAULT_VAE = "litevae-s-taef2"  # bundled with the package, as `litevae eval`'s default


def default_num_workers(most: int = 4) -> int:
    """``most`` decoding workers, or as many as this process may use CPU cores if that is fewer (torch warns when
    a DataLoader has more workers than cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(most, cores))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("input (one of --train_data_dir / --dataset_name)")
    sources = data.add_mutually_exclusive_group(required=True)
    sources.add_argument("--train_data_dir", help="image folder, read recursively; captions from <image>.txt sidecars")
    sources.add_argument("--dataset_name", help="Hugging Face dataset id, or a folder written by save_to_disk")
    data.add_argument("--dataset_config_name", default=None, help="dataset configuration name")
    data.add_argument("--split", default="train", help="dataset split (default: train)")
    data.add_argument("--image_column", default=None, help="dataset image column (default: the first Image feature)")
    data.add_argument(
        "--caption_column",
        default=None,
        help="dataset caption column (default: the first of text/caption/captions/prompt/sentence)",
    )
    data.add_argument("--caption_extension", default=".txt", help="sidecar caption extension for folders")
    data.add_argument("--dataset_cache_dir", default=None, help="cache_dir for datasets.load_dataset")
    data.add_argument(
        "--max_images",
        type=int,
        default=None,
        help="cache only the first N images (sorted by sample id); entries beyond them are removed from the cache",
    )

    vae = parser.add_argument_group("VAE")
    vae.add_argument(
        "--vae",
        "--pretrained_vae_model_name_or_path",
        dest="vae",
        default=DEFAULT_VAE,
        help="VAE folder, Hub id (AutoencoderLite, AutoencoderKL, AutoencoderTiny, ...), TAESD-family folder, or a "
        "bundled model by name (litevae-s-taef2, taef2). Default: the bundled litevae-s-taef2",
    )
    vae.add_argument("--vae_subfolder", default=None, help="subfolder of the VAE, e.g. 'vae' in a pipeline repo")
    vae.add_argument("--vae_class", default=None, help="VAE class name (default: the config's _class_name)")
    vae.add_argument("--revision", default=None, help="Hub revision of the VAE")
    vae.add_argument("--variant", default=None, help="weights variant of the VAE, e.g. fp16")

    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", required=True, help="cache folder (an existing cache is updated in place)")
    out.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="storage dtype of mean/std")
    out.add_argument("--samples_per_shard", type=int, default=512, help="samples per safetensors shard")

    transform = parser.add_argument_group("resize and crop")
    transform.add_argument(
        "--resolution",
        type=int,
        default=1024,
        help="bucket area resolution**2 (with buckets) or square side (with --no_buckets)",
    )
    transform.add_argument(
        "--no_buckets",
        action="store_true",
        help="one resolution x resolution crop per image instead of aspect-ratio buckets",
    )
    transform.add_argument("--bucket_step", type=int, default=64, help="bucket sides are multiples of this")
    transform.add_argument("--max_aspect_ratio", type=float, default=4.0, help="most elongated bucket (long/short)")
    transform.add_argument(
        "--crop",
        default="center",
        choices=["center", "random"],
        help="crop position; random crops are seeded per sample id",
    )
    transform.add_argument("--seed", type=int, default=0, help="seed of random crops")
    transform.add_argument("--interpolation", default="bicubic", choices=["bicubic", "bilinear", "lanczos", "area"])
    transform.add_argument("--flip", action="store_true", help="also store latents of the horizontally flipped crop")

    speed = parser.add_argument_group("speed")
    speed.add_argument("--batch_size", type=int, default=16, help="images per encoder call")
    speed.add_argument(
        "--num_workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader worker processes decoding and resizing (0: in the main process); "
        "default: 4, or fewer on a machine with fewer CPU cores",
    )
    speed.add_argument(
        "--mixed_precision",
        default="bf16",
        choices=["bf16", "fp16", "no"],
        help="autocast dtype on CUDA (CPU runs fp32 unless --cpu_mixed_precision)",
    )
    speed.add_argument(
        "--cpu_mixed_precision",
        action="store_true",
        help="bf16 autocast on CPU too (several times faster on CPUs with AVX-512 BF16/AMX, bf16 precision)",
    )
    speed.add_argument("--channels_last", action="store_true", help="channels-last memory format for the encoder")
    speed.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the encoder (static shapes, CUDA graphs); default: on CUDA only when there are enough "
        "images per bucket shape to pay back the compile (about 50,000; the log says which and why), off on CPU",
    )
    speed.add_argument("--device", default=None, help="device (default: accelerate's device for this process)")

    parser.add_argument("--retry_failed", action="store_true", help="retry images that failed in earlier runs")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..file_io import invoked_command
    from ..image_io import ImageInputError
    from ..vae_io import VAELoadError
    from .encode import cache_latents
    from .index import CacheInputError
    from .preprocess import TransformConfig
    from .sources import HubDatasetSource, ImageFolderSource
    from .writer import CacheBusyError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        transform = TransformConfig(
            resolution=args.resolution,
            bucketing=not args.no_buckets,
            bucket_step=args.bucket_step,
            max_aspect_ratio=args.max_aspect_ratio,
            crop=args.crop,
            seed=args.seed,
            interpolation=args.interpolation,
            flip=args.flip,
        )
        if args.train_data_dir:
            source = ImageFolderSource(
                args.train_data_dir, caption_extension=args.caption_extension or None, exclude=(args.output_dir,)
            )
        else:
            source = HubDatasetSource(
                args.dataset_name,
                config_name=args.dataset_config_name,
                split=args.split,
                image_column=args.image_column,
                caption_column=args.caption_column,
                cache_dir=args.dataset_cache_dir,
            )
        report = cache_latents(
            source,
            args.vae,
            args.output_dir,
            transform=transform,
            dtype=args.dtype,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            samples_per_shard=args.samples_per_shard,
            mixed_precision=args.mixed_precision,
            channels_last=args.channels_last,
            compile=args.compile,
            retry_failed=args.retry_failed,
            device=args.device,
            vae_subfolder=args.vae_subfolder,
            vae_class=args.vae_class,
            revision=args.revision,
            variant=args.variant,
            progress=not args.no_progress,
            max_images=args.max_images,
            cpu_mixed_precision=args.cpu_mixed_precision,
            command=invoked_command(),
        )
    except (CacheInputError, ImageInputError, VAELoadError, CacheBusyError) as error:  # one line, else a traceback
        return _fail(str(error))
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one summary, from the main process
        return 0
    print(json.dumps(report.to_dict(), indent=2))
    if report.num_samples == 0:
        source = args.train_data_dir or args.dataset_name
        if report.num_failed == 0 and report.num_skipped_files == 0:
            return _fail(f"{source!r} holds no images; pass a source with images.")
        return _fail(
            f"no image of {source!r} could be cached: {report.num_failed} could not be read and "
            f"{report.num_skipped_files} files are not images (each listed with its reason in "
            f"{os.path.join(report.output_dir, 'errors.jsonl')}); pass a source with readable images."
        )
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    return (
        f"the shards finished so far are kept in {args.output_dir}; run the same command again to resume "
        "(images already encoded are not encoded again)."
    )


def _fail(message: str) -> int:
    print(f"litevae cache-latents: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
