"""``litevae train``: train a whole LiteVAE (encoder and decoder) from scratch with the paper's recipe.

Single process: ``litevae train --train_data_dir photos/ --output_dir out``. Several GPUs or nodes:
``accelerate launch -m diffusers_litevae.cli train ...``. Flags shared with ``litevae distill`` keep its names.
"""

from __future__ import annotations

import argparse

from ..settings import add_setting_arguments
from . import cli_args
from .cli_args import interrupted, run_training

__all__ = ["add_arguments", "config_from_args", "interrupted", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` flags (snake_case, like diffusers' example training scripts): one per setting of
    :class:`~diffusers_litevae.training.TrainConfig`."""
    from .from_scratch import TrainConfig

    add_setting_arguments(parser, TrainConfig)


def config_from_args(args: argparse.Namespace):
    """The :class:`~diffusers_litevae.training.TrainConfig` for parsed ``args``."""
    from .from_scratch import TrainConfig

    return cli_args.config_from_args(TrainConfig, args)


def _summary(result: dict) -> str | None:
    metrics = result["final_metrics"]
    if metrics.get("psnr") is None:
        return None
    return (
        f"trained LiteVAE-{result['model']['encoder_preset']} ({result['model']['decoder']} decoder) in "
        f"{metrics['step']} steps ({result['train_images_per_s']:.1f} images/s): PSNR {metrics['psnr']:.2f} dB, "
        f"SSIM {metrics['ssim']:.4f} -> {result['settings']['output_dir']}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``litevae train``; bad input prints one ``error:`` line and returns 2."""
    from .from_scratch import TrainConfig, train_autoencoder

    return run_training(args, TrainConfig, train_autoencoder, "train", _summary)
