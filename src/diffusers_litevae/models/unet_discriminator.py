"""``UNetDiscriminator``: a U-Net that scores every pixel of an image as real or reconstructed.

LiteVAE trains its autoencoder with an adversarial loss from a U-Net discriminator (LiteVAE, NeurIPS 2024,
section 4.3, following Schönfeld et al., "A U-Net Based Discriminator for Generative Adversarial Networks",
CVPR 2020): instead of one score per image it returns a logit per pixel, so the autoencoder is told *where* its
reconstruction looks fake. The paper gives no layer-by-layer description; this one is a plain U-Net:

    conv_in -> [DiscriminatorBlock, downsample] x levels -> DiscriminatorBlock (bottleneck)
            -> [upsample, concat skip, DiscriminatorBlock] x levels -> conv_out (1 logit per pixel)

Every convolution is spectrally normalised and the activations are LeakyReLU(0.2), the usual choices that keep a
GAN discriminator's gradients bounded; there is no normalisation layer, so a sample's score never depends on the
rest of its batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["DiscriminatorBlock", "UNetDiscriminator"]


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Conv2d:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2))


class DiscriminatorBlock(nn.Module):
    """Two spectrally normalised 3x3 convolutions with LeakyReLU and a (1x1 when widths differ) residual path."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels)
        self.conv2 = _conv(out_channels, out_channels)
        self.skip = _conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return self.skip(x) + h


class UNetDiscriminator(ModelMixin, ConfigMixin):
    r"""Per-pixel real/fake logits from a spectrally normalised U-Net.

    Parameters:
        in_channels (`int`, defaults to 3): image channels.
        block_out_channels (`tuple[int]`, defaults to `(64, 128, 256)`): widths of the encoder levels (the
            decoder mirrors them); the image is halved ``len(block_out_channels)`` times, so its height and width
            must be multiples of ``2 ** len(block_out_channels)``.

    Input: images ``(B, in_channels, H, W)`` in ``[-1, 1]``. Output: logits ``(B, 1, H, W)``, positive for "real".
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, block_out_channels: tuple[int, ...] = (64, 128, 256)):
        super().__init__()
        if not block_out_channels:
            raise ValueError("block_out_channels needs at least one level, e.g. (64, 128, 256).")
        widths = list(block_out_channels)
        self.conv_in = _conv(in_channels, widths[0])
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        previous = widths[0]
        for width in widths:
            self.down_blocks.append(DiscriminatorBlock(previous, width))
            self.downsamplers.append(_conv(width, width, 3, stride=2))
            previous = width
        self.mid_block = DiscriminatorBlock(previous, previous)
        self.up_blocks = nn.ModuleList()
        for width in reversed(widths):
            self.up_blocks.append(DiscriminatorBlock(previous + width, width))
            previous = width
        self.conv_out = _conv(previous, 1)

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.config.block_out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"UNetDiscriminator expects (B, {self.config.in_channels}, H, W) images, got {tuple(images.shape)}."
            )
        factor = self.downsample_factor
        if images.shape[-2] % factor or images.shape[-1] % factor:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} must be a multiple of {factor} "
                f"(2 ** len(block_out_channels)); crop or resize the images."
            )
        h = self.conv_in(images)
        skips = []
        for block, downsample in zip(self.down_blocks, self.downsamplers):
            h = block(h)
            skips.append(h)
            h = downsample(F.leaky_relu(h, 0.2))
        h = self.mid_block(h)
        for block in self.up_blocks:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return self.conv_out(F.leaky_relu(h, 0.2))
