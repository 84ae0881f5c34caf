"""Self-Modulated Convolution (SMC), LiteVAE paper section 4.2.

Replaces a GroupNorm + conv pair inside a decoder ResBlock. Each output channel's kernel is modulated by a
learned per-input-channel scale ``s``, normalised to unit norm, and multiplied by a learned scalar gain ``g``:

    w'_o = g * (s * w_o) / sqrt(sum_{i,k} (s_i * w_oik)^2 + eps)
    y    = conv(x, w') + b

Normalising the weights instead of the activations removes GroupNorm's blob artifacts (StyleGAN2's
weight demodulation, without a style input) and is cheaper at run time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SelfModulatedConv2d", "replace_resnet_norms_with_smc"]


class SelfModulatedConv2d(nn.Conv2d):
    """A ``Conv2d`` with self-modulated, demodulated weights.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        padding: zero padding (``kernel_size // 2`` keeps the size).
        bias: learn an additive bias.
        eps: added under the square root of the demodulation.

    Extra parameters: ``modulation`` (``in_channels``,), initialised to 1; ``gain`` (scalar), initialised to 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int | None = None,
        bias: bool = True,
        eps: float = 1e-8,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2 if padding is None else padding,
            bias=bias,
        )
        self.eps = eps
        self.modulation = nn.Parameter(torch.ones(in_channels))
        self.gain = nn.Parameter(torch.ones(()))

    def modulated_weight(self) -> torch.Tensor:
        weight = self.weight * self.modulation.view(1, -1, 1, 1)
        norm = torch.rsqrt(weight.square().sum(dim=(1, 2, 3), keepdim=True) + self.eps)
        return weight * (norm * self.gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.modulated_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


def replace_resnet_norms_with_smc(module: nn.Module) -> int:
    """Swap every diffusers ``ResnetBlock2D``'s (GroupNorm, conv3x3) pairs for (Identity, SMC).

    The skip path (``conv_shortcut``) and every other normalisation (attention, output head) stay as they are.
    Returns the number of ResBlocks changed.
    """
    from diffusers.models.resnet import ResnetBlock2D

    changed = 0
    for block in module.modules():
        if not isinstance(block, ResnetBlock2D):
            continue
        for norm_name, conv_name in (("norm1", "conv1"), ("norm2", "conv2")):
            conv = getattr(block, conv_name)
            setattr(block, norm_name, nn.Identity())
            setattr(
                block,
                conv_name,
                SelfModulatedConv2d(
                    conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.padding[0], conv.bias is not None
                ),
            )
        changed += 1
    return changed
