"""Self-Modulated Convolution (SMC), LiteVAE paper section 4.2.

Replaces a GroupNorm + conv pair inside a decoder ResBlock. What :class:`SelfModulatedConv2d` computes, for a
weight ``w`` of shape ``(out, in, k, k)``, a learned per-input-channel scale ``s`` and a learned scalar ``g``:

    v_oik = s_i * w_oik                                   (modulation)
    w'_oik = g * v_oik / sqrt(sum_{i,k} v_oik^2 + eps)    (demodulation, then gain)
    y      = conv2d(x, w') + b

Normalising the weights instead of the activations removes GroupNorm's blob artifacts and is cheaper at run
time. This is StyleGAN2's weight demodulation with a learned vector in place of the per-sample style (hence
"self-modulated"), plus the scalar gain ``g``, which StyleGAN2 lacks: demodulation divides any common factor of
``s`` out again, so with GroupNorm (and its affine scale) removed nothing else in the ResBlock could learn how
strongly that conv's branch contributes. ``g`` starts at 1, where SMC is exactly StyleGAN2's demodulation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SelfModulatedConv2d", "replace_resnet_norms_with_smc"]


class SelfModulatedConv2d(nn.Conv2d):
    """A ``Conv2d`` with self-modulated, demodulated weights: ``conv2d(x, g * v / sqrt(sum v^2 + eps), b)``.

    ``v = s * w`` scales the kernel per input channel; the sum runs over input channels and kernel positions of
    each output channel. See the module docstring for the gain ``g``.

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
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
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
    """Swap every diffusers ``ResnetBlock2D``'s (GroupNorm, conv3x3) pairs for (Identity, SMC), in place.

    Each SMC takes over the replaced conv's ``weight`` and ``bias`` (copied), with ``modulation`` and ``gain`` at 1,
    so a converted pretrained decoder starts from its kernels, though it needs fine-tuning (no GroupNorms, kernels
    demodulated to unit norm). A conv the SMC cannot represent (grouped, strided or dilated) keeps its GroupNorm.

    The skip path (``conv_shortcut``) and every other normalisation (attention, output head) stay as they are.
    Returns the number of ResBlocks changed.
    """
    from diffusers.models.resnet import ResnetBlock2D

    changed = 0
    for block in module.modules():
        if not isinstance(block, ResnetBlock2D):
            continue
        converted = False
        for norm_name, conv_name in (("norm1", "conv1"), ("norm2", "conv2")):
            conv = getattr(block, conv_name)
            if isinstance(conv, SelfModulatedConv2d) or not _plain_square_conv(conv):
                continue
            smc = SelfModulatedConv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.padding[0], conv.bias is not None
            ).to(device=conv.weight.device, dtype=conv.weight.dtype)
            with torch.no_grad():
                smc.weight.copy_(conv.weight)
                if conv.bias is not None:
                    smc.bias.copy_(conv.bias)
            setattr(block, norm_name, nn.Identity())
            setattr(block, conv_name, smc)
            converted = True
        changed += converted
    return changed


def _plain_square_conv(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.kernel_size[0] == conv.kernel_size[1]
        and isinstance(conv.padding, tuple)
        and conv.padding[0] == conv.padding[1]
        and conv.padding_mode == "zeros"
    )
