"""``litevae eval``: reconstruction metrics and speed of one or more VAEs on the same images.

With no arguments it runs offline on what ships with the package: the bundled LiteVAE-S (distilled against TAEF2,
label ``litevae-s``) against TAEF2 itself (label ``taef2``) on three bundled Kodak crops, writing to
``outputs/litevae-eval``. Examples::

    litevae eval
    litevae eval --image_dir photos/ --resolution 256 \\
        --vae taef2 --vae outputs/litevae-taef2:litevae-b --output_dir eval/photos
    litevae eval --vae litevae-s-taef2 --image_dir photos/ --no_resize --resolution 256,512,native
"""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["DEFAULT_OUTPUT_DIR", "DEFAULT_VAES", "add_arguments", "default_vae_specs", "run"]

_ALWAYS_RECORDED = {"resolution", "crop", "batch_size", "device", "dtype"}
DEFAULT_OUTPUT_DIR = "outputs/litevae-eval"
# (bundled model name, label) compared when no --vae is given.
DEFAULT_VAES = (("litevae-s-taef2", "litevae-s"), ("taef2", "taef2"))


def default_vae_specs() -> list[str]:
    """The ``--vae`` values used when none is given: the bundled LiteVAE-S and TAEF2, labelled."""
    from ..pretrained import pretrained_path

    return [f"{pretrained_path(name)}:{label}" for name, label in DEFAULT_VAES]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Reconstruction metrics (PSNR, SSIM; LPIPS and rFID where their networks load) and encoder/decoder speed of "
        "one or more VAEs on the same images. With no arguments: the bundled LiteVAE-S and TAEF2 on three bundled "
        "Kodak crops, offline."
    )
    models = parser.add_argument_group("models")
    models.add_argument(
        "--vae",
        action="append",
        default=None,
        metavar="PATH_OR_ID[:LABEL]",
        help="a VAE to evaluate (repeat for several): a diffusers VAE folder or Hub id "
        "(AutoencoderLite, AutoencoderKL, "
        "AutoencoderTiny, picked from config.json), a saved pipeline folder, a folder with a TAESD-family "
        "*encoder* + *decoder* .pth/.safetensors pair, or a bundled model by name (litevae-s-taef2, taef2). "
        "':LABEL' names it in the report (default: the folder name / repo id). "
        "Without --vae: the bundled litevae-s-taef2 (label litevae-s) and taef2 (label taef2).",
    )
    models.add_argument(
        "--vae_subfolder",
        action="append",
        default=None,
        metavar="SUBFOLDER",
        help="subfolder holding the VAE (e.g. 'vae' in a pipeline repo); give it once for every --vae, "
        "or once per --vae "
        "in the same order ('' for none).",
    )
    data = parser.add_argument_group("images")
    data.add_argument(
        "--image_dir",
        default=None,
        help="folder of images (png, jpg, webp, ...; recursive, hidden files skipped). "
        "Without --image_dir and --dataset_name: three "
        "bundled Kodak crops (256x256)",
    )
    data.add_argument(
        "--dataset_name",
        default=None,
        help="Hugging Face dataset id, or a folder written by save_to_disk, instead of --image_dir (needs `datasets`)",
    )
    data.add_argument("--dataset_config", default=None, help="dataset configuration name")
    data.add_argument("--image_column", default="image", help="dataset column holding the images")
    data.add_argument("--split", default="train", help="dataset split")
    data.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading the split")
    data.add_argument("--max_images", type=int, default=None, help="evaluate at most this many images")
    data.add_argument(
        "--resolution",
        default="256",
        help="a multiple of 8 (resize the short side to it, then crop; see --crop) or 'native' (full size, "
        "centre-cropped down to multiples of 8); several, comma-separated (e.g. 256,512,native), evaluate every "
        "image at each size (speed is timed at the first)",
    )
    data.add_argument(
        "--crop",
        choices=("square", "multiple_of_8"),
        default="square",
        help="'square': centre RxR crop; 'multiple_of_8': keep the aspect ratio, trim to multiples of 8",
    )
    data.add_argument(
        "--no_resize", action="store_true", help="crop from the full-size image instead of resizing first"
    )
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--batch_size", type=int, default=4, help="images per encode/decode call and speed batch")
    run_group.add_argument("--device", default="auto", help="cuda, cuda:1, cpu, mps (default: best available)")
    run_group.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="VAE dtype")
    run_group.add_argument("--skip_lpips", action="store_true", help="do not try to load LPIPS")
    run_group.add_argument("--skip_rfid", action="store_true", help="do not try to load the FID Inception network")
    run_group.add_argument("--skip_speed", action="store_true", help="do not time encoders and decoders")
    run_group.add_argument("--speed_warmup", type=int, default=1, help="untimed runs before timing")
    run_group.add_argument("--speed_repeats", type=int, default=3, help="timed runs per encoder / decoder")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--output_dir", default=DEFAULT_OUTPUT_DIR, help="writes summary.json, per_image.csv, grid.png here"
    )
    output.add_argument("--grid_images", type=int, default=4, help="images in the comparison grid (0: none)")
    output.add_argument("--grid_tile_height", type=int, default=256, help="grid row height in pixels")


def _fail(message: str) -> int:
    print(f"litevae eval: error: {message}", file=sys.stderr)
    return 2


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    return f"nothing was written ({args.output_dir} gets its files when the evaluation ends); run the command again."


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..file_io import check_output_dir
    from ..image_io import ImageInputError, find_images
    from .errors import EvaluationInputError
    from .images import parse_resolutions

    # Validate every flag and folder before loading a model or an image; the folders before importing torch, so
    # a mistyped path is reported at once, and an output folder that cannot take the results before any work.
    if args.image_dir is not None and args.dataset_name is not None:
        return _fail(
            "pass at most one of --image_dir FOLDER or --dataset_name HUB_DATASET_ID (neither: the bundled samples)."
        )
    bundled_samples = args.image_dir is None and args.dataset_name is None
    image_dir = args.image_dir
    if bundled_samples:
        from ..pretrained import pretrained_path

        image_dir = pretrained_path("samples")
    try:
        check_output_dir(args.output_dir, "eval", EvaluationInputError)
        if image_dir is not None:
            find_images(image_dir)
        resolution = parse_resolutions(args.resolution)
    except (EvaluationInputError, ImageInputError) as error:
        return _fail(str(error))

    from ..image_io import dataset_images
    from ..vae_io import VAELoadError
    from .run import evaluate_vaes, format_summary, resolve_device
    from .vaes import default_label, parse_vae_spec

    try:
        resolve_device(args.device)
    except EvaluationInputError as error:
        return _fail(str(error))
    if args.max_images is not None and args.max_images < 1:
        return _fail(f"--max_images must be >= 1, got {args.max_images}.")
    specs = [parse_vae_spec(spec) for spec in (args.vae or default_vae_specs())]
    subfolders = args.vae_subfolder or []
    if len(subfolders) not in (0, 1, len(specs)):
        return _fail(
            f"give --vae_subfolder once (for all) or once per --vae ({len(specs)}), not {len(subfolders)} times."
        )
    if len(subfolders) == 1:
        subfolders = subfolders * len(specs)
    models, subfolder_of = {}, {}
    for index, (name_or_path, label) in enumerate(specs):
        label = label or default_label(name_or_path)
        if label in models:
            return _fail(f"two models are labelled {label!r}; name them with --vae PATH:LABEL.")
        models[label] = name_or_path
        subfolder_of[label] = (subfolders[index] or None) if subfolders else None

    if args.dataset_name is not None:
        try:
            images = dataset_images(
                args.dataset_name, args.image_column, args.split, args.max_images, args.dataset_config, args.streaming
            )
        except ImageInputError as error:  # not installed, not found, offline, gated, no such split or column
            return _fail(str(error))
        dataset = (
            f"{args.dataset_name}" + (f"[{args.dataset_config}]" if args.dataset_config else "") + f":{args.split}"
        )
    elif bundled_samples:
        images, dataset = image_dir, "the bundled samples"
    else:
        images, dataset = image_dir, str(Path(image_dir))

    try:
        result = evaluate_vaes(
            models,
            images,
            resolution=resolution,
            crop=args.crop,
            resize=not args.no_resize,
            batch_size=args.batch_size,
            max_images=args.max_images,
            device=args.device,
            dtype=args.dtype,
            compute_lpips=not args.skip_lpips,
            compute_rfid=not args.skip_rfid,
            measure_speed=not args.skip_speed,
            speed_warmup=args.speed_warmup,
            speed_repeats=args.speed_repeats,
            grid_images=args.grid_images,
            grid_tile_height=args.grid_tile_height,
            dataset_name=dataset,
            subfolders=subfolder_of,
        )
    except (EvaluationInputError, ImageInputError, VAELoadError) as error:  # bad input: one line, else a traceback
        return _fail(str(error))
    result.summary["command"] = command_line(args)
    paths = result.save(args.output_dir)
    print(format_summary(result.summary))
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``litevae eval`` command that reproduces ``args`` (flags left at defaults omitted, except
    ``_ALWAYS_RECORDED``). Every option of :func:`add_arguments` is spelled ``--<dest>``."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))  # every option of `litevae eval` (none is required) and its default
    words = ["litevae", "eval"]
    for dest, value in vars(args).items():
        if dest not in defaults:  # set by the top-level `litevae` parser (the subcommand's name, ...)
            continue
        default = defaults[dest]
        # Settings that decide what the numbers mean are always written, so the line survives changed defaults.
        if value is None or value is False or (value == default and dest not in _ALWAYS_RECORDED):
            continue
        flag = f"--{dest}"
        if value is True:  # a store_true switch
            words.append(flag)
        elif isinstance(value, list):  # an append option: one flag per item
            for item in value:
                words.extend([flag, str(item)])
        else:
            words.extend([flag, str(value)])
    return shlex.join(words)
