"""The LiteVAE encoder: a 3-level Haar transform feeding small, resolution-preserving UNets.

Paper: Sadat et al., "LiteVAE: Lightweight and Efficient Variational Autoencoders for Latent Diffusion
Models", NeurIPS 2024, section 4.1 and appendix G.

    x (B, 3, H, W) in [-1, 1]
      -> Haar level l = 1..3, bands scaled by 1/2**l        (B, 12, H/2**l, W/2**l), one strided conv each
      -> feature UNet F_l, 12 -> 12 channels, same size
      -> average-pool F_1 by 4 and F_2 by 2                 all at (B, 12, H/8, W/8)
      -> concat (36 channels) -> aggregation UNet F_agg     (B, 2 * latent_channels, H/8, W/8)
      = mean and log-variance of a diagonal Gaussian (no 1x1 quant conv: the paper found it hurt).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.activations import get_activation

from ..transforms.haar import haar_filters, haar_wavedec
from .group_norm_silu import group_norm_silu_triton, use_fused_group_norm_silu
from .utils import normalize_sequences

__all__ = [
    "ENCODER_PRESETS",
    "EncoderPreset",
    "LiteVAEEncoder",
    "LiteVAEResBlock",
    "LiteVAEUNet",
    "encoder_config",
    "encoder_preset",
    "preset_name_of",
]


@dataclass(frozen=True)
class EncoderPreset:
    """Widths of one LiteVAE encoder scale (paper Table 6).

    Attributes:
        feature_channels: base width ``C`` of each per-level feature UNet ``F_l``.
        feature_channel_mults: width multipliers of ``F_l``'s levels.
        aggregation_channels: base width of the aggregation UNet ``F_agg``.
        aggregation_channel_mults: width multipliers of ``F_agg``'s levels.
    """

    feature_channels: int
    feature_channel_mults: tuple[int, ...]
    aggregation_channels: int
    aggregation_channel_mults: tuple[int, ...]

    def config_kwargs(self, prefix: str = "encoder_") -> dict:
        """The widths as config keys: ``{prefix}feature_channels``, ``{prefix}feature_channel_mults``, ... (the
        ``encoder_*`` keys of ``AutoencoderLite``'s config with the default prefix, the arguments of
        :class:`LiteVAEEncoder` with ``prefix=""``)."""
        return {f"{prefix}{field.name}": getattr(self, field.name) for field in fields(self)}


# Paper encoder parameter counts at 4 latent channels: S 1.03 M, B 6.75 M, M 32.75 M, L 41.42 M.
ENCODER_PRESETS: dict[str, EncoderPreset] = {
    "S": EncoderPreset(16, (1, 2, 2), 16, (1, 2, 2)),
    "B": EncoderPreset(32, (1, 2, 3), 32, (1, 2, 3)),
    "M": EncoderPreset(64, (1, 2, 4), 32, (1, 2, 3)),
    "L": EncoderPreset(64, (1, 2, 4), 64, (1, 2, 4)),
}


def encoder_preset(name: str) -> EncoderPreset:
    """Look up a preset by name (``"S"``, ``"B"``, ``"M"`` or ``"L"``, case-insensitive)."""
    key = name.upper()
    if key not in ENCODER_PRESETS:
        raise ValueError(f"unknown LiteVAE encoder preset {name!r}; choose one of {sorted(ENCODER_PRESETS)}.")
    return ENCODER_PRESETS[key]


def encoder_config(encoder: str | dict) -> dict:
    """The ``encoder_*`` config keys for ``encoder``: a preset name (``"S"``, ``"B"``, ``"M"``, ``"L"``) or a dict
    of those keys (returned as a copy)."""
    return encoder_preset(encoder).config_kwargs() if isinstance(encoder, str) else dict(encoder)


def preset_name_of(config, prefix: str = "encoder_") -> str | None:
    """The preset (``"S"``, ``"B"``, ``"M"`` or ``"L"``) whose widths ``config`` (a mapping such as
    ``AutoencoderLite``'s config) holds under the :meth:`EncoderPreset.config_kwargs` keys, else ``None``."""
    for name, preset in ENCODER_PRESETS.items():
        if all(normalize_sequences(config.get(key)) == value for key, value in preset.config_kwargs(prefix).items()):
            return name
    return None


def _num_groups(channels: int, max_groups: int) -> int:
    """Largest group count <= ``max_groups`` that divides ``channels`` (widths like 12, 36 or 48 occur)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class LiteVAEResBlock(nn.Module):
    """The paper's ResBlock: GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3, plus a skip (1x1 conv when the
    widths differ). No time embedding, no dropout, no output scale.

    It computes exactly what diffusers' ``ResnetBlock2D(in, out, temb_channels=None, eps=1e-6)`` computes, with
    the same parameter names, so state dicts saved with that block load unchanged; it leaves out that block's
    division by ``output_scale_factor`` (1), dropout of 0 and ``.contiguous()`` copy of the skip in training (which
    would turn a channels_last tensor into NCHW).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        groups: GroupNorm groups of ``norm1`` (must divide ``in_channels``).
        groups_out: GroupNorm groups of ``norm2`` (must divide ``out_channels``).
        eps: GroupNorm epsilon.
        act_fn: activation, as named in ``diffusers.models.activations``.

    Shapes: ``(B, in_channels, h, w) -> (B, out_channels, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        groups_out: int,
        eps: float = 1e-6,
        act_fn: str = "silu",
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(groups_out, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = get_activation(act_fn)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def _norm_act(self, norm: nn.GroupNorm, hidden: torch.Tensor) -> torch.Tensor:
        # On CUDA, channels_last activations go through the fused Triton GroupNorm + SiLU when no gradient is
        # needed (inference, latent caching): torch's GroupNorm is slow in that layout. Everything else, training
        # included, runs the modules themselves, unchanged.
        if (
            isinstance(norm, nn.GroupNorm)
            and isinstance(self.nonlinearity, nn.SiLU)
            and use_fused_group_norm_silu(hidden, norm.weight, norm.bias)
        ):
            return group_norm_silu_triton(hidden, norm.num_groups, norm.weight, norm.bias, norm.eps)
        return self.nonlinearity(norm(hidden))

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(self._norm_act(self.norm1, sample))
        hidden = self.conv2(self._norm_act(self.norm2, hidden))
        skip = sample if self.conv_shortcut is None else self.conv_shortcut(sample)
        return skip + hidden


def _resblock(in_channels: int, out_channels: int, max_groups: int, act_fn: str) -> LiteVAEResBlock:
    return LiteVAEResBlock(
        in_channels,
        out_channels,
        groups=_num_groups(in_channels, max_groups),
        groups_out=_num_groups(out_channels, max_groups),
        act_fn=act_fn,
    )


class LiteVAEUNet(nn.Module):
    """ADM-style UNet without attention and without resampling (every layer keeps the input's size).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        block_out_channels: base width ``C``.
        channel_mults: one multiplier per level; level ``i`` has ``layers_per_block`` ResBlocks of width
            ``C * channel_mults[i]``.
        layers_per_block: ResBlocks per level on each path (the paper uses 2).
        norm_num_groups: maximum GroupNorm group count (reduced to a divisor of each width).
        act_fn: activation, as named in ``diffusers.models.activations``.

    Shapes: ``(B, in_channels, h, w) -> (B, out_channels, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: int,
        channel_mults: tuple[int, ...],
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
    ):
        super().__init__()
        widths = [block_out_channels * mult for mult in channel_mults]
        self.conv_in = nn.Conv2d(in_channels, block_out_channels, kernel_size=3, padding=1)

        self.down_blocks = nn.ModuleList()
        skip_widths = []
        channels = block_out_channels
        for width in widths:
            for _ in range(layers_per_block):
                self.down_blocks.append(_resblock(channels, width, norm_num_groups, act_fn))
                channels = width
                skip_widths.append(width)

        self.mid_blocks = nn.ModuleList([_resblock(channels, channels, norm_num_groups, act_fn) for _ in range(2)])

        self.up_blocks = nn.ModuleList()
        for width in reversed(widths):
            for _ in range(layers_per_block):
                self.up_blocks.append(_resblock(channels + skip_widths.pop(), width, norm_num_groups, act_fn))
                channels = width

        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False

    def _run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, hidden)
        return block(hidden)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(sample)
        skips = []
        for block in self.down_blocks:
            hidden = self._run(block, hidden)
            skips.append(hidden)
        for block in self.mid_blocks:
            hidden = self._run(block, hidden)
        for block in self.up_blocks:
            hidden = self._run(block, torch.cat([hidden, skips.pop()], dim=1))
        return self.conv_out(hidden)


class LiteVAEEncoder(nn.Module):
    """LiteVAE encoder: multi-level Haar transform, per-level feature UNets, aggregation UNet.

    Args:
        in_channels: image channels (3 for RGB).
        latent_channels: latent channels ``nz``; the output has ``2 * nz`` channels (mean, log-variance)
            when ``double_z`` is true.
        wavelet_levels: Haar levels; the spatial downsampling factor is ``2**wavelet_levels``.
        feature_channels: base width of each per-level feature UNet ``F_l``.
        feature_channel_mults: width multipliers of ``F_l``.
        aggregation_channels: base width of the aggregation UNet ``F_agg``.
        aggregation_channel_mults: width multipliers of ``F_agg``.
        layers_per_block: ResBlocks per UNet level and path (2 in the paper).
        norm_num_groups: maximum GroupNorm group count.
        act_fn: activation function name.
        double_z: output mean and log-variance (``2 * nz`` channels) rather than ``nz`` channels.

    Shapes: ``(B, in_channels, H, W) -> (B, 2 * nz, H / 2**levels, W / 2**levels)``; ``H`` and ``W`` must be
    multiples of ``2**wavelet_levels``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        wavelet_levels: int = 3,
        feature_channels: int = 32,
        feature_channel_mults: tuple[int, ...] = (1, 2, 3),
        aggregation_channels: int = 32,
        aggregation_channel_mults: tuple[int, ...] = (1, 2, 3),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        double_z: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.wavelet_levels = wavelet_levels
        band_channels = 4 * in_channels
        unet = functools.partial(
            LiteVAEUNet, layers_per_block=layers_per_block, norm_num_groups=norm_num_groups, act_fn=act_fn
        )
        # The Haar analysis filters with the paper's 1/2**l level scale folded in (exact: powers of two). A
        # buffer, not a parameter, and left out of the state dict: it moves with .to() and costs no op per call.
        for level, weight in enumerate(haar_filters(wavelet_levels, in_channels, level_scale=0.5), start=1):
            self.register_buffer(f"haar_filter_{level}", weight, persistent=False)
        self.feature_unets = nn.ModuleList(
            unet(band_channels, band_channels, feature_channels, tuple(feature_channel_mults))
            for _ in range(wavelet_levels)
        )
        out_channels = 2 * latent_channels if double_z else latent_channels
        self.aggregation_unet = unet(
            band_channels * wavelet_levels, out_channels, aggregation_channels, tuple(aggregation_channel_mults)
        )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "LiteVAEEncoder":
        """A randomly initialised encoder of scale ``name`` (``"S"``, ``"B"``, ``"M"``, ``"L"``);
        ``kwargs`` override."""
        return cls(**{**encoder_preset(name).config_kwargs(prefix=""), **kwargs})

    @property
    def downsample_factor(self) -> int:
        return 2**self.wavelet_levels

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        # Orthonormal Haar lets LL grow 2x per level; the paper rescales level l by 1/2**l (folded into the filters).
        filters = [getattr(self, f"haar_filter_{level}") for level in range(1, self.wavelet_levels + 1)]
        levels = haar_wavedec(sample, self.wavelet_levels, filters)
        features = []
        for level, (bands, unet) in enumerate(zip(levels, self.feature_unets), start=1):
            feature = unet(bands)
            pool = 2 ** (self.wavelet_levels - level)
            if pool > 1:
                # Parameter-free downsampling to the latent grid (the paper's counts assume no learned resampling).
                feature = F.avg_pool2d(feature, kernel_size=pool)
            features.append(feature)
        return self.aggregation_unet(torch.cat(features, dim=1))
