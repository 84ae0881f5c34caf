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
import dataclasses
import shlex

from ..settings import add_setting_arguments, input_error, settings_from_args
from .settings import DEFAULT_VAES, EvalSettings, EvaluationInputError

__all__ = ["add_arguments", "run"]

_ALWAYS_RECORDED = {"resolution", "crop", "batch_size", "device", "dtype"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Reconstruction metrics (PSNR, SSIM; LPIPS and rFID where their networks load) and encoder/decoder speed of "
        "one or more VAEs on the same images. With no arguments: the bundled LiteVAE-S and TAEF2 on three bundled "
        "Kodak crops, offline."
    )
    add_setting_arguments(parser, EvalSettings)


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves behind (printed by the ``litevae`` entry point)."""
    return f"nothing was written ({args.output_dir} gets its files when the evaluation ends); run the command again."


def run(args: argparse.Namespace) -> int:
    from ..image_io import ImageInputError

    # Check every flag and folder before loading a model or an image; the folders before importing torch, so a
    # mistyped path is reported at once, and an output folder that cannot take the results before any work.
    try:
        settings = settings_from_args(EvalSettings, args)
        image_dir = _image_dir(settings)
    except (EvaluationInputError, ImageInputError) as error:
        return input_error("eval", error)

    from ..vae_io import VAELoadError
    from .run import evaluate_vaes, format_summary, resolve_device

    try:
        resolve_device(settings.device)
        models, subfolders = _models(settings)
        images, dataset = _images(settings, image_dir)
        result = evaluate_vaes(models, images, settings, dataset_name=dataset, subfolders=subfolders)
    except (EvaluationInputError, ImageInputError, VAELoadError) as error:  # bad input: one line, else a traceback
        return input_error("eval", error)
    result.summary["command"] = command_line(settings)
    paths = result.save(settings.output_dir)
    print(format_summary(result.summary))
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0


def _image_dir(settings: EvalSettings) -> str | None:
    """The image folder (the bundled samples when no images are named), checked, with the output folder."""
    from ..file_io import check_output_dir
    from ..image_io import find_images

    image_dir = settings.image_dir
    if image_dir is None and settings.dataset_name is None:
        from ..pretrained import pretrained_path

        image_dir = pretrained_path("samples")
    check_output_dir(settings.output_dir, "eval", EvaluationInputError)
    if image_dir is not None:
        find_images(image_dir)
    return image_dir


def _models(settings: EvalSettings) -> tuple[dict[str, str], dict[str, str | None]]:
    """label -> model folder or Hub id, and label -> subfolder, from ``--vae`` (default: the bundled LiteVAE-S and
    TAEF2) and ``--vae_subfolder``."""
    from ..pretrained import pretrained_path
    from .vaes import default_label, parse_vae_spec

    specs = [parse_vae_spec(spec) for spec in settings.vae or []]
    specs = specs or [(pretrained_path(name), label) for name, label in DEFAULT_VAES]
    subfolders = settings.vae_subfolder or [None]
    if len(subfolders) == 1:
        subfolders = subfolders * len(specs)
    models, subfolder_of = {}, {}
    for (name_or_path, label), subfolder in zip(specs, subfolders):
        label = label or default_label(name_or_path)
        if label in models:
            raise EvaluationInputError(f"two models are labelled {label!r}; name them with --vae PATH:LABEL.")
        models[label], subfolder_of[label] = name_or_path, subfolder or None
    return models, subfolder_of


def _images(settings: EvalSettings, image_dir: str | None):
    """The images to evaluate (a folder, or a dataset's images) and their name in the report."""
    from pathlib import Path

    from ..image_io import dataset_images

    if settings.dataset_name is None:
        return image_dir, "the bundled samples" if settings.image_dir is None else str(Path(image_dir))
    # Raises ImageInputError when `datasets` is not installed, or the dataset, split or column is not found.
    images = dataset_images(
        settings.dataset_name,
        settings.image_column,
        settings.split,
        settings.max_images,
        settings.dataset_config,
        settings.streaming,
    )
    config = f"[{settings.dataset_config}]" if settings.dataset_config else ""
    return images, f"{settings.dataset_name}{config}:{settings.split}"


def command_line(settings: EvalSettings) -> str:
    """The ``litevae eval`` command that reproduces ``settings`` (settings left at their defaults omitted, except
    ``_ALWAYS_RECORDED``). Every setting's flag is spelled ``--<name>``."""
    words = ["litevae", "eval"]
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        # Settings that decide what the numbers mean are always written, so the line survives changed defaults.
        if value is None or value is False or (value == field.default and field.name not in _ALWAYS_RECORDED):
            continue
        flag = f"--{field.name}"
        if value is True:  # a store_true switch
            words.append(flag)
        else:  # an append option gives one flag per item
            for item in value if isinstance(value, list) else [value]:
                words.extend([flag, str(item)])
    return shlex.join(words)
