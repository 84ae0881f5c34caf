"""``litevae distill``: distil a LiteVAE encoder against a frozen teacher VAE.

Single process: ``litevae distill --teacher stabilityai/sd-vae-ft-mse --train_data_dir photos/ --output_dir out``.
Several GPUs or nodes: ``accelerate launch -m diffusers_litevae.cli distill ...`` (or
``accelerate launch conversion/distill_encoder.py ...``).
"""

from __future__ import annotations

import argparse

from .cli_args import (
    add_compile_arguments,
    add_data_arguments,
    add_image_loss_arguments,
    add_logging_arguments,
    add_optimisation_arguments,
    interrupted,
    json_object,
    run_training,
)

__all__ = ["add_arguments", "config_from_args", "interrupted", "run"]


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


def config_from_args(args: argparse.Namespace):
    """The :class:`~diffusers_litevae.training.trainer.DistillConfig` for parsed ``args``."""
    from .trainer import DistillConfig

    return DistillConfig.from_dict(vars(args))


def run(args: argparse.Namespace) -> int:
    """Run ``litevae distill``; bad input prints one ``error:`` line and returns 2."""
    from .trainer import distill

    config = config_from_args(args)

    def summary(result: dict) -> str | None:
        metrics = result["final_metrics"]
        if metrics.get("psnr_student") is None:
            return None
        return (
            f"distilled {result['student']['encoder_parameters'] / 1e6:.2f} M-parameter encoder "
            f"in {metrics['step']} steps "
            f"({result['train_images_per_s']:.1f} images/s): PSNR {metrics['psnr_student']:.2f} dB "
            f"(teacher {metrics['psnr_teacher']:.2f}), latent MSE {metrics['latent_mse']:.5f} -> {config.output_dir}"
        )

    return run_training(config, distill, "distill", summary)
