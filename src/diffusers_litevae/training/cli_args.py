"""The command-line pieces both training commands share (``litevae distill`` and ``litevae train``): the data,
compile, optimisation, image-loss and logging flag groups, the JSON-object flag type, and how a run is started
(logging, the recorded command line, bad input as one ``error:`` line)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import TrainingInputError

__all__ = [
    "add_compile_arguments",
    "add_data_arguments",
    "add_image_loss_arguments",
    "add_logging_arguments",
    "add_optimisation_arguments",
    "interrupted",
    "json_object",
    "run_training",
]


def json_object(text: str | None) -> dict | None:
    """An argparse type: a JSON object given as text or as a file path (``--student_config``, ``--encoder_config``)."""
    if not text:
        return None
    path = Path(text).expanduser()
    try:
        value = json.loads(path.read_text() if path.is_file() else text)
    except (OSError, json.JSONDecodeError) as error:
        raise argparse.ArgumentTypeError(f"neither a JSON file nor JSON text: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of encoder_* config keys.")
    return value


def add_data_arguments(parser: argparse.ArgumentParser, defaults) -> None:
    """The data and validation flags that ``litevae distill`` and ``litevae train`` share (``defaults``: a config)."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--train_data_dir",
        nargs="+",
        default=None,
        metavar="FOLDER",
        help="folder(s) of training images (recursive; jpg/jpeg/png/webp)",
    )
    group.add_argument(
        "--train_data_repeats",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help="times each --train_data_dir folder's images appear per epoch (e.g. '1 8' to sample a few "
        "high-resolution photos as often as a folder 8x their size); default 1 each",
    )
    group.add_argument("--dataset_name", default=None, help="Hugging Face dataset id (needs the `datasets` extra)")
    group.add_argument("--dataset_config_name", default=None)
    group.add_argument("--dataset_split", default=defaults.dataset_split)
    group.add_argument("--image_column", default=defaults.image_column)
    group.add_argument("--cache_dir", default=None)
    group.add_argument(
        "--resolution_schedule",
        "--resolution",
        default=defaults.resolution_schedule,
        help="training crop size, or a schedule of phases: '128:2000,256' (128 px before step 2000, then 256); "
        "'256/384/512:3000,512' (sizes taken in turn, one per step, larger sizes with proportionally fewer "
        "images per batch, then a final phase at 512). End at the size you will encode at.",
    )
    group.add_argument(
        "--crop_scales",
        default=defaults.crop_scales,
        help="crop scale range 'SMALLEST,LARGEST' in (0, 1], drawn log-uniformly per crop: 1 crops the photo's own "
        "pixels (smooth content at high resolution), 0.25 a 4x larger region downscaled (busy content)",
    )
    group.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=defaults.random_flip)
    group.add_argument("--dataloader_num_workers", type=int, default=defaults.dataloader_num_workers)

    group = parser.add_argument_group("validation")
    group.add_argument(
        "--validation_dir",
        default=None,
        help="folder of validation images (default: images held out from the training folder)",
    )
    group.add_argument(
        "--num_validation_images",
        type=int,
        default=None,
        help="hold out the first N training images (sorted by path, matching --validation_glob); default min(16, 10%%)",
    )
    group.add_argument(
        "--validation_glob", default=defaults.validation_glob, help="file-name pattern the held-out images must match"
    )
    group.add_argument(
        "--validation_resolution", type=int, default=None, help="centre crop size for validation (default: full images)"
    )
    group.add_argument("--max_validation_images", type=int, default=None)
    group.add_argument("--validation_steps", type=int, default=defaults.validation_steps)
    group.add_argument("--num_grid_images", type=int, default=defaults.num_grid_images)


def add_compile_arguments(group) -> None:
    """``--compile/--no-compile`` and ``--compile_mode``, which both trainers share."""
    group.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the trained model (and the teacher), one graph per crop size (default: on for CUDA, "
        "off on other devices, where eager was faster); --no-compile turns it off",
    )
    group.add_argument("--compile_mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")


def add_optimisation_arguments(parser: argparse.ArgumentParser, defaults):
    """The optimisation flags both trainers share; returns the group for the caller's own flags."""
    group = parser.add_argument_group("optimisation")
    group.add_argument("--output_dir", default=defaults.output_dir)
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument(
        "--train_batch_size", type=int, default=defaults.train_batch_size, help="images per process per micro-batch"
    )
    group.add_argument("--gradient_accumulation_steps", type=int, default=defaults.gradient_accumulation_steps)
    group.add_argument("--max_train_steps", type=int, default=defaults.max_train_steps)
    group.add_argument(
        "--max_minutes", type=float, default=None, help="stop (checkpoint and write the model) after this many minutes"
    )
    group.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
    group.add_argument("--adam_beta1", type=float, default=defaults.adam_beta1)
    group.add_argument("--adam_beta2", type=float, default=defaults.adam_beta2)
    group.add_argument("--adam_weight_decay", type=float, default=defaults.adam_weight_decay)
    group.add_argument("--adam_epsilon", type=float, default=defaults.adam_epsilon)
    group.add_argument(
        "--lr_scheduler",
        default=defaults.lr_scheduler,
        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
    )
    group.add_argument("--lr_warmup_steps", type=int, default=defaults.lr_warmup_steps)
    group.add_argument("--max_grad_norm", type=float, default=defaults.max_grad_norm, help="0 disables clipping")
    group.add_argument(
        "--use_ema", action="store_true", help="keep an EMA of the trained weights; validate and save the EMA weights"
    )
    group.add_argument("--ema_decay", type=float, default=defaults.ema_decay)
    group.add_argument("--ema_power", type=float, default=defaults.ema_power)

    return group


def add_image_loss_arguments(group, defaults) -> None:
    """The image-space loss flags both trainers share."""
    group.add_argument(
        "--reconstruction_weight",
        type=float,
        default=defaults.reconstruction_weight,
        help="pixel loss (L1 or Charbonnier) of the reconstruction",
    )
    group.add_argument(
        "--wavelet_weight",
        type=float,
        default=defaults.wavelet_weight,
        help="Charbonnier on high-frequency Haar sub-bands",
    )
    group.add_argument(
        "--gaussian_weight", type=float, default=defaults.gaussian_weight, help="L1 between x - blur(x) residuals"
    )
    group.add_argument(
        "--lpips_weight",
        type=float,
        default=defaults.lpips_weight,
        help="LPIPS (torchmetrics' network: needs torchvision and its backbone weights)",
    )
    group.add_argument("--reconstruction_loss", default=defaults.reconstruction_loss, choices=["l1", "charbonnier"])
    group.add_argument("--charbonnier_eps", type=float, default=defaults.charbonnier_eps)
    group.add_argument("--wavelet_loss_levels", type=int, default=defaults.wavelet_loss_levels)
    group.add_argument("--gaussian_sigma", type=float, default=defaults.gaussian_sigma)
    group.add_argument("--lpips_net", default=defaults.lpips_net, choices=["vgg", "alex", "squeeze"])


def add_logging_arguments(parser: argparse.ArgumentParser, defaults) -> None:
    """The checkpoint and logging flags both trainers share."""
    group = parser.add_argument_group("checkpoints and logging")
    group.add_argument("--checkpointing_steps", type=int, default=defaults.checkpointing_steps)
    group.add_argument("--checkpoints_total_limit", type=int, default=defaults.checkpoints_total_limit)
    group.add_argument(
        "--resume_from_checkpoint", default=None, help="'latest' or a checkpoints/checkpoint-<step> folder"
    )
    group.add_argument("--logging_steps", type=int, default=defaults.logging_steps)
    group.add_argument("--report_to", default=None, help="accelerate tracker: tensorboard, wandb, ...")
    group.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=defaults.progress_bar)


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C of a training command leaves behind (printed by the ``litevae`` entry point)."""
    from .checkpointing import find_latest_checkpoint

    latest = find_latest_checkpoint(Path(args.output_dir) / "checkpoints")
    if latest is None:
        return (
            f"no checkpoint was written yet (one every {args.checkpointing_steps} steps, in "
            f"{Path(args.output_dir) / 'checkpoints'}); run the command again to start over."
        )
    return f"{latest} is kept; add --resume_from_checkpoint latest to the same command to go on from there."


def run_training(config, train, command: str, summary) -> int:
    """Run ``train(config)`` for ``litevae <command>`` and return the exit code: INFO logging, the command line
    recorded in the config, bad input (:class:`TrainingInputError`) as one ``error:`` line and exit code 2;
    otherwise the line ``summary(result)`` gives (if any) is printed and the code is 0.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from ..file_io import invoked_command

    # The exact command, recorded in the run's JSON summary: the model card shows it as the way to reproduce the run.
    config.command_line = invoked_command()
    try:
        result = train(config)
    except TrainingInputError as error:
        print(f"litevae {command}: error: {error}", file=sys.stderr)
        return 2
    line = summary(result)
    if line:
        print(line)
    return 0
