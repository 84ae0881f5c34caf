"""Tiny, randomly initialised models for tests, notebooks and smoke runs: no download, CPU-fast.

They have the real architectures (diffusers ``AutoencoderKL`` in SD layout with four blocks, i.e. an 8x
latent grid; ``AutoencoderLite`` and ``AutoencoderLiteTiny`` with a full 3-level LiteVAE encoder) at toy widths.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image

from .models.autoencoder_lite import AutoencoderLite
from .models.autoencoder_lite_tiny import AutoencoderLiteTiny
from .models.tiny_autoencoder import signed_to_unit, unit_to_signed

__all__ = [
    "TINY_ENCODER",
    "save_png",
    "sd_vae_autoencoder_kl",
    "smooth_images",
    "tiny_autoencoder_kl",
    "tiny_autoencoder_lite",
    "tiny_autoencoder_lite_tiny",
]

# A LiteVAE encoder at toy width (about 60 k parameters), same structure as the paper's presets.
TINY_ENCODER = dict(
    encoder_feature_channels=8,
    encoder_feature_channel_mults=(1, 2),
    encoder_aggregation_channels=8,
    encoder_aggregation_channel_mults=(1, 2),
    encoder_layers_per_block=1,
    encoder_norm_num_groups=4,
)


def tiny_autoencoder_kl(latent_channels: int = 4, seed: int = 0, **overrides) -> AutoencoderKL:
    """An SD-layout ``AutoencoderKL`` (4 blocks, f = 8) with widths (8, 16, 16, 16)."""
    torch.manual_seed(seed)
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
    )
    config.update(overrides)
    return AutoencoderKL(**config)


def tiny_autoencoder_lite(latent_channels: int = 4, seed: int = 0, **overrides) -> AutoencoderLite:
    """An ``AutoencoderLite`` with the tiny encoder and the decoder of :func:`tiny_autoencoder_kl`."""
    torch.manual_seed(seed)
    config = dict(
        latent_channels=latent_channels,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
        **TINY_ENCODER,
    )
    config.update(overrides)
    return AutoencoderLite(**config)


def tiny_autoencoder_lite_tiny(latent_channels: int = 4, seed: int = 0, **overrides) -> AutoencoderLiteTiny:
    """An ``AutoencoderLiteTiny`` with the tiny encoder and an 8-wide TAESD-family decoder (four one-block stages,
    TAEF2's GroupNorm bottleneck in the second)."""
    torch.manual_seed(seed)
    config = dict(
        latent_channels=latent_channels,
        decoder_channels=8,
        decoder_num_blocks=(1, 1, 1, 1),
        decoder_midblock_gn=(False, True, False, False),
        sample_size=64,
        **TINY_ENCODER,
    )
    config.update(overrides)
    return AutoencoderLiteTiny(**config)


def sd_vae_autoencoder_kl(seed: int | None = None) -> AutoencoderKL:
    """The Stable Diffusion 1.x/2.x VAE architecture (34.16 M-parameter encoder) with random weights.

    The reference every speed benchmark compares LiteVAE against: same layers and FLOPs as ``sd-vae-ft-mse``.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=512,
    )


def smooth_images(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Random colour fields (bicubic upsampling of 4x4 noise), ``(count, 3, height, width)`` in ``[-1, 1]``: images
    a tiny autoencoder can learn in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 4, 4, generator=generator)
    return unit_to_signed(F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1))


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write one ``(3, H, W)`` image in ``[-1, 1]`` as an 8-bit PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = signed_to_unit(image).mul(255).permute(1, 2, 0).numpy().round().clip(0, 255).astype(np.uint8)
    Image.fromarray(array).save(path)
