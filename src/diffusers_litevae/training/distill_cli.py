"""``litevae distill``: distil a LiteVAE encoder against a frozen teacher VAE.

Single process: ``litevae distill --teacher stabilityai/sd-vae-ft-mse --train_data_dir photos/ --output_dir out``.
Several GPUs or nodes: ``accelerate launch -m diffusers_litevae.cli distill ...`` (or
``accelerate launch conversion/distill_encoder.py ...``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from .errors import TrainingInputError

__all__ = ["add_arguments", "config_from_args", "run"]


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``distill`` flags (snake_case, like diffusers' example training scripts)."""
    from .trainer import DistillConfig

    defaults = DistillConfig()

    group = parser.add_argument_group("teacher")
    group.add_argument(
        "--teacher",
        required=True,
        help="teacher VAE: diffusers folder, Hub id, TAESD-family folder (*_encoder.pth + *_decoder.pth), or a "
        "bundled model by name (taef2, litevae-s-taef2)",
    )
    group.add_argument(
        "--teacher_subfolder", default=None, help="subfolder of the VAE in a pipeline repo/folder, usually 'vae'"
    )
    group.add_argument(
        "--teacher_type",
        default=defaults.teacher_type,
        choices=["auto", "autoencoder_kl", "autoencoder_tiny", "taesd", "diffusers_vae"],
    )
    group.add_argument("--teacher_revision", default=None, help="Hub revision of the teacher")
    group.add_argument("--teacher_variant", default=None, help="weights variant of the teacher, e.g. fp16")
    group.add_argument(
        "--teacher_dtype",
        default=defaults.teacher_dtype,
        help="teacher weights dtype: auto (the training dtype), float32, bf16, fp16",
    )
    group.add_argument(
        "--teacher_scaling_factor",
        type=float,
        default=None,
        help="override the latent scaling factor (TAESD-family checkpoints carry none: 1.0)",
    )
    group.add_argument("--teacher_shift_factor", type=float, default=None, help="override the latent shift factor")
    group.add_argument(
        "--teacher_latents",
        default=None,
        metavar="DIR",
        help="train from the teacher's posteriors cached in DIR (a latent cache of whole images, built on "
        "the first run and updated incrementally): no teacher encoder runs in a training step",
    )
    group.add_argument(
        "--build_teacher_latents",
        action=argparse.BooleanOptionalAction,
        default=defaults.build_teacher_latents,
        help="encode images missing from --teacher_latents (off: use the cache as it is and fail on missing images)",
    )
    group.add_argument(
        "--teacher_latents_border",
        type=int,
        default=defaults.teacher_latents_border,
        help="latent pixels at each crop border left out of the latent losses with --teacher_latents "
        "(the teacher saw context beyond the crop there)",
    )

    group = parser.add_argument_group("student")
    group.add_argument("--student", default=defaults.student, help="LiteVAE encoder preset: S, B, M or L")
    group.add_argument(
        "--student_config",
        type=json_object,
        default=None,
        help="JSON text or file of encoder_* config keys overriding the preset",
    )
    group.add_argument(
        "--init_from",
        default=None,
        metavar="PATH_OR_ID",
        help="start from this AutoencoderLite's encoder (folder, Hub id or bundled name, distilled against the same "
        "teacher): its architecture and weights replace --student; e.g. fine-tune a distilled encoder at the size "
        "you encode at",
    )

    add_data_arguments(parser, defaults)
    group = add_optimisation_arguments(parser, defaults)
    group.add_argument("--optimizer", default=defaults.optimizer, choices=["adam", "adamw"])
    group = parser.add_argument_group("speed")
    group.add_argument(
        "--mixed_precision", default=None, choices=["no", "fp16", "bf16"], help="default: accelerate's config"
    )
    add_compile_arguments(group)
    group.add_argument(
        "--channels_last", action="store_true", help="student and teacher in channels-last memory format"
    )
    group.add_argument(
        "--teacher_channels_last",
        action="store_true",
        help="only the frozen teacher in channels-last (on CPU with bf16 this halves the step time of a "
        "TAESD-family teacher, while the student's GroupNorm is faster in the default layout)",
    )
    group.add_argument("--gradient_checkpointing", action="store_true")
    group.add_argument("--allow_tf32", action="store_true")

    group = parser.add_argument_group("losses")
    group.add_argument(
        "--latent_weight", type=float, default=defaults.latent_weight, help="posterior-mean MSE (normalized latents)"
    )
    group.add_argument(
        "--std_weight",
        type=float,
        default=defaults.std_weight,
        help="posterior-std MSE: matches the teacher's log-variance (0 noise for deterministic teachers)",
    )
    group.add_argument(
        "--latent_stats_weight",
        type=float,
        default=defaults.latent_stats_weight,
        help="MSE of each image's per-channel latent mean and std (whole-image offsets: colour casts, contrast)",
    )
    group.add_argument(
        "--low_frequency_weight",
        type=float,
        default=defaults.low_frequency_weight,
        help="L1 of the average-pooled reconstruction (colour and tone over regions of --low_frequency_pool px)",
    )
    group.add_argument("--low_frequency_pool", type=int, default=defaults.low_frequency_pool)
    add_image_loss_arguments(group, defaults)
    add_logging_arguments(parser, defaults)


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


def config_from_args(args: argparse.Namespace):
    """The :class:`~diffusers_litevae.training.trainer.DistillConfig` for parsed ``args``."""
    from .trainer import DistillConfig

    return DistillConfig.from_dict(vars(args))


def run_training(config, train, command: str):
    """Run ``train(config)`` for ``litevae <command>``: INFO logging, the command line recorded in the config,
    and bad input (:class:`TrainingInputError`) as one ``error:`` line. Returns the result, or ``None`` on bad input.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # The exact command, recorded in the run's JSON summary: the model card shows it as the way to reproduce the run.
    config.command_line = shlex.join(["litevae", *sys.argv[1:]]) if Path(sys.argv[0]).name == "litevae" else None
    try:
        return train(config)
    except TrainingInputError as error:
        print(f"litevae {command}: error: {error}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Run ``litevae distill``; bad input prints one ``error:`` line and returns 2."""
    from .trainer import distill

    config = config_from_args(args)
    result = run_training(config, distill, "distill")
    if result is None:
        return 2
    metrics = result["final_metrics"]
    if metrics.get("psnr_student") is not None:
        print(
            f"distilled {result['student']['encoder_parameters'] / 1e6:.2f} M-parameter encoder "
            f"in {metrics['step']} steps "
            f"({result['train_images_per_s']:.1f} images/s): PSNR {metrics['psnr_student']:.2f} dB "
            f"(teacher {metrics['psnr_teacher']:.2f}), latent MSE {metrics['latent_mse']:.5f} -> {config.output_dir}"
        )
    return 0
