"""``litevae train``: train a whole LiteVAE (encoder and decoder) from scratch with the paper's recipe.

Single process: ``litevae train --train_data_dir photos/ --output_dir out``. Several GPUs or nodes:
``accelerate launch -m diffusers_litevae.cli train ...``. Flags shared with ``litevae distill`` keep its names.
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


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(value) for value in text.split(",") if value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,128,256, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` flags (snake_case, like diffusers' example training scripts)."""
    from .from_scratch import DECODERS, TrainConfig

    defaults = TrainConfig()

    group = parser.add_argument_group("model")
    group.add_argument("--encoder", default=defaults.encoder, help="LiteVAE encoder preset: S, B, M or L")
    group.add_argument(
        "--encoder_config",
        type=json_object,
        default=None,
        help="JSON text or file of encoder_* config keys overriding the preset",
    )
    group.add_argument(
        "--latent_channels", type=int, default=defaults.latent_channels, help="4 (SD 1.x/2.x/SDXL), 12, 16 (SD3/FLUX)"
    )
    group.add_argument(
        "--decoder",
        default=defaults.decoder,
        choices=DECODERS,
        help="smc: SD-layout decoder with Self-Modulated Convolutions (the paper's); groupnorm: the same with "
        "GroupNorm; tiny: a TAESD-family decoder",
    )
    group.add_argument(
        "--decoder_block_out_channels",
        type=_int_tuple,
        default=defaults.decoder_block_out_channels,
        help="decoder widths, one per stage (tiny: the first is its width)",
    )
    group.add_argument("--decoder_layers_per_block", type=int, default=defaults.decoder_layers_per_block)
    group.add_argument("--decoder_norm_num_groups", type=int, default=defaults.decoder_norm_num_groups)
    group.add_argument(
        "--decoder_attention",
        action=argparse.BooleanOptionalAction,
        default=defaults.decoder_attention,
        help="self-attention in the decoder's mid block",
    )
    group.add_argument(
        "--discriminator_block_out_channels",
        type=_int_tuple,
        default=defaults.discriminator_block_out_channels,
        help="U-Net discriminator widths (training crops must be multiples of 2 ** their count)",
    )

    add_data_arguments(parser, defaults)
    group = add_optimisation_arguments(parser, defaults)
    group.add_argument("--discriminator_learning_rate", type=float, default=defaults.discriminator_learning_rate)

    group = parser.add_argument_group("speed")
    group.add_argument(
        "--mixed_precision", default=None, choices=["no", "fp16", "bf16"], help="default: accelerate's config"
    )
    add_compile_arguments(group)
    group.add_argument("--gradient_checkpointing", action="store_true")
    group.add_argument("--allow_tf32", action="store_true")

    group = parser.add_argument_group("losses")
    add_image_loss_arguments(group, defaults)
    group.add_argument("--kl_weight", type=float, default=defaults.kl_weight, help="KL to N(0, I), mean per latent")
    group.add_argument(
        "--adversarial_weight",
        type=float,
        default=defaults.adversarial_weight,
        help="hinge GAN loss from the per-pixel U-Net discriminator (constant weight, as in the paper)",
    )
    group.add_argument(
        "--discriminator_start_step",
        type=int,
        default=defaults.discriminator_start_step,
        help="first step with the discriminator on (the paper: when the 256 px phase starts)",
    )

    group = parser.add_argument_group("latent scaling")
    group.add_argument(
        "--set_shift_factor",
        action="store_true",
        help="also set shift_factor (the latents' mean), as SD3/FLUX-style VAEs have",
    )
    group.add_argument(
        "--scaling_images",
        type=int,
        default=defaults.scaling_images,
        help="training crops whose latents set scaling_factor (1 / std) at the end",
    )
    add_logging_arguments(parser, defaults)


def config_from_args(args: argparse.Namespace):
    """The :class:`~diffusers_litevae.training.from_scratch.TrainConfig` for parsed ``args``."""
    from .from_scratch import TrainConfig

    return TrainConfig.from_dict(vars(args))


def run(args: argparse.Namespace) -> int:
    """Run ``litevae train``; bad input prints one ``error:`` line and returns 2."""
    from .from_scratch import train_autoencoder

    config = config_from_args(args)

    def summary(result: dict) -> str | None:
        metrics = result["final_metrics"]
        if metrics.get("psnr") is None:
            return None
        return (
            f"trained LiteVAE-{result['model']['encoder_preset']} ({result['model']['decoder']} decoder) in "
            f"{metrics['step']} steps ({result['train_images_per_s']:.1f} images/s): PSNR {metrics['psnr']:.2f} dB, "
            f"SSIM {metrics['ssim']:.4f} -> {config.output_dir}"
        )

    return run_training(config, train_autoencoder, "train", summary)
