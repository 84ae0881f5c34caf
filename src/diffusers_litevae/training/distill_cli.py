"""``litevae distill``: distil a LiteVAE encoder against a frozen teacher VAE.

Single process: ``litevae distill --teacher stabilityai/sd-vae-ft-mse --train_data_dir photos/ --output_dir out``.
Several GPUs or nodes: ``accelerate launch -m diffusers_litevae.cli distill ...`` (or
``accelerate launch conversion/distill_encoder.py ...``).
"""

from __future__ import annotations

import argparse

from ..settings import add_setting_arguments
from . import cli_args
from .cli_args import interrupted, run_training

__all__ = ["add_arguments", "config_from_args", "interrupted", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``distill`` flags (snake_case, like diffusers' example training scripts): one per setting of
    :class:`~diffusers_litevae.training.DistillConfig`."""
    from .distillation import DistillConfig

    add_setting_arguments(parser, DistillConfig)


def config_from_args(args: argparse.Namespace):
    """The :class:`~diffusers_litevae.training.DistillConfig` for parsed ``args``."""
    from .distillation import DistillConfig

    return cli_args.config_from_args(DistillConfig, args)


def _summary(result: dict) -> str | None:
    metrics = result["final_metrics"]
    if metrics.get("psnr_student") is None:
        return None
    return (
        f"distilled {result['student']['encoder_parameters'] / 1e6:.2f} M-parameter encoder "
        f"in {metrics['step']} steps "
        f"({result['train_images_per_s']:.1f} images/s): PSNR {metrics['psnr_student']:.2f} dB "
        f"(teacher {metrics['psnr_teacher']:.2f}), latent MSE {metrics['latent_mse']:.5f} -> "
        f"{result['settings']['output_dir']}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``litevae distill``; bad input prints one ``error:`` line and returns 2."""
    from .distillation import DistillConfig, distill

    return run_training(args, DistillConfig, distill, "distill", _summary)
