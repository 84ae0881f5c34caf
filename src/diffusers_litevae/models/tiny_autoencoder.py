"""TAESD-family tiny encoder and decoder (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2 by Ollin Boer Bohan).

Used as a *teacher* or a VAE to compare with (TAESD-family ``.pth`` checkpoints load into :class:`TinyEncoder` /
:class:`TinyDecoder` with no key conversion, and :class:`TinyAutoencoder` puts a pair behind the diffusers VAE
protocol), and as the decoder of an :class:`~diffusers_litevae.AutoencoderLiteTiny`.

Both networks are a flat ``nn.Sequential`` (``self.layers``) whose indices match the original checkpoints, and
keep the originals' value ranges: images in ``[0, 1]``, raw unscaled latents. :func:`unit_to_signed` and
:func:`signed_to_unit` are the package's one conversion between ``[0, 1]`` and the diffusers ``[-1, 1]``
convention, which every other module calls, so the ranges cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = [
    "TinyAutoencoder",
    "TinyBlock",
    "TinyDecoder",
    "TinyEncoder",
    "load_tiny_decoder",
    "load_tiny_encoder",
    "signed_to_unit",
    "tiny_decoder_from_autoencoder_tiny",
    "unit_to_signed",
]


def signed_to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images in the diffusers ``[-1, 1]`` convention -> ``[0, 1]``, what TAESD-family encoders take."""
    return images.add(1).div(2)


def unit_to_signed(images: torch.Tensor) -> torch.Tensor:
    """TAESD-family decoder output in ``[0, 1]`` -> the diffusers ``[-1, 1]`` convention."""
    return images.mul(2).sub(1)


class SoftClamp(nn.Module):
    """``x -> 3 * tanh(x / 3)``: keeps latents from blowing up the decoder, identity near 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class TinyBlock(nn.Module):
    """Residual block: ``ReLU(conv(x) + skip(x))`` with three 3x3 convs.

    Args:
        in_channels: input channels.
        out_channels: output channels (a bias-free 1x1 conv on the skip when they differ).
        midblock_gn: first add a channel-mixing bottleneck with GroupNorm (TAEF2's mid blocks):
            ``x = x + pool(x)``, ``pool`` = 1x1 conv (n -> 4n), GroupNorm(4), ReLU, 1x1 conv (4n -> n).
    """

    def __init__(self, in_channels: int, out_channels: int, midblock_gn: bool = False):
        super().__init__()
        self.pool = (
            nn.Sequential(
                nn.Conv2d(in_channels, 4 * in_channels, 1, bias=False),
                nn.GroupNorm(4, 4 * in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(4 * in_channels, in_channels, 1, bias=False),
            )
            if midblock_gn
            else None
        )
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else nn.Identity()
        )
        self.fuse = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def _stages(num_blocks: Sequence[int], midblock_gn: Sequence[bool]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    if len(num_blocks) != len(midblock_gn):
        raise ValueError(
            f"num_blocks ({len(num_blocks)} stages) and midblock_gn ({len(midblock_gn)} stages) "
            "must have the same length."
        )
    return tuple(num_blocks), tuple(bool(gn) for gn in midblock_gn)


class TinyEncoder(nn.Module):
    """TAESD-family encoder: ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, latent_channels, H/8, W/8)`` raw latents.

    Args:
        in_channels: image channels.
        latent_channels: latent channels (4 for TAESD/TAESDXL, 16 for TAESD3/TAEF1, 32 for TAEF2).
        channels: width of every layer.
        num_blocks: blocks per stage; a stride-2 conv precedes every stage after the first.
        midblock_gn: per stage, whether its blocks carry the GroupNorm bottleneck.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        channels: int = 64,
        num_blocks: Sequence[int] = (1, 3, 3, 3),
        midblock_gn: Sequence[bool] = (False, False, False, False),
    ):
        super().__init__()
        self.in_channels, self.latent_channels, self.channels = in_channels, latent_channels, channels
        self.num_blocks, self.midblock_gn = _stages(num_blocks, midblock_gn)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        for stage, (count, use_gn) in enumerate(zip(num_blocks, midblock_gn)):
            if stage > 0:
                layers.append(nn.Conv2d(channels, channels, 3, padding=1, stride=2, bias=False))
            layers.extend(TinyBlock(channels, channels, use_gn) for _ in range(count))
        layers.append(nn.Conv2d(channels, latent_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TinyDecoder(nn.Module):
    """TAESD-family decoder: ``(B, latent_channels, h, w)`` raw latents -> ``(B, 3, 8h, 8w)`` in about ``[0, 1]``.

    Args:
        latent_channels: latent channels.
        out_channels: image channels.
        channels: width of every layer.
        num_blocks: blocks per stage; an x2 nearest upsample and a bias-free conv follow every stage but the last.
        midblock_gn: per stage, whether its blocks carry the GroupNorm bottleneck.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        out_channels: int = 3,
        channels: int = 64,
        num_blocks: Sequence[int] = (3, 3, 3, 1),
        midblock_gn: Sequence[bool] = (False, False, False, False),
    ):
        super().__init__()
        self.latent_channels, self.out_channels, self.channels = latent_channels, out_channels, channels
        self.num_blocks, self.midblock_gn = _stages(num_blocks, midblock_gn)
        layers: list[nn.Module] = [
            SoftClamp(),
            nn.Conv2d(latent_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for stage, (count, use_gn) in enumerate(zip(num_blocks, midblock_gn)):
            layers.extend(TinyBlock(channels, channels, use_gn) for _ in range(count))
            if stage < len(num_blocks) - 1:
                layers.append(nn.Upsample(scale_factor=2))
                layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)
        # diffusers' ModelMixin.enable_gradient_checkpointing() sets this flag and `_gradient_checkpointing_func`
        # on every submodule that has the attribute (as on diffusers' own ``Decoder``).
        self.gradient_checkpointing = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.gradient_checkpointing):
            return self.layers(z)
        # Recompute each TinyBlock in the backward pass instead of storing its three convs' activations.
        for layer in self.layers:
            z = self._gradient_checkpointing_func(layer, z) if isinstance(layer, TinyBlock) else layer(z)
        return z


class TinyAutoencoder(nn.Module):
    """A TAESD-family encoder/decoder pair behind the diffusers VAE protocol.

    The original networks work on images in ``[0, 1]``; this wrapper takes and returns ``[-1, 1]`` like every
    diffusers VAE, and its encoder is deterministic (``encode(x).latents``, no posterior), like diffusers'
    ``AutoencoderTiny``. Latents are raw (the checkpoints carry no scaling: ``scaling_factor`` 1.0 unless given).

    Args:
        encoder (:class:`TinyEncoder`): the encoder.
        decoder (:class:`TinyDecoder`): a decoder with the encoder's latent channels.
        name_or_path (`str`): where it was loaded from (recorded in caches, reports and ``distillation.json``).
        scaling_factor (`float`, defaults to 1.0): latent scale a diffusion model would use (1.0: raw latents).
        shift_factor (`float`, *optional*): latent shift (``None``: none).
    """

    def __init__(
        self,
        encoder: TinyEncoder,
        decoder: TinyDecoder,
        name_or_path: str = "",
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
    ):
        from diffusers.configuration_utils import FrozenDict

        super().__init__()
        if decoder.latent_channels != encoder.latent_channels:
            raise ValueError(
                f"TAESD-family pair {name_or_path!r}: the encoder makes {encoder.latent_channels} latent channels but "
                f"the decoder takes {decoder.latent_channels}; use an encoder and decoder of the same model."
            )
        self.encoder = encoder
        self.decoder = decoder
        self.name_or_path = str(name_or_path)
        self.config = FrozenDict(
            _class_name="TinyAutoencoder",
            _name_or_path=self.name_or_path,
            in_channels=encoder.in_channels,
            latent_channels=encoder.latent_channels,
            scaling_factor=float(scaling_factor),
            shift_factor=shift_factor,
            latents_mean=None,
            latents_std=None,
        )

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """``(B, 3, H, W)`` in ``[-1, 1]`` -> ``AutoencoderTinyOutput(latents=(B, C, H/8, W/8))`` raw latents."""
        from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput

        latents = self.encoder(signed_to_unit(x))
        return AutoencoderTinyOutput(latents=latents) if return_dict else (latents,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        """``(B, C, h, w)`` raw latents -> ``DecoderOutput(sample=(B, 3, 8h, 8w))`` in about ``[-1, 1]``."""
        from diffusers.models.autoencoders.vae import DecoderOutput

        sample = unit_to_signed(self.decoder(z))
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latents).sample


def tiny_decoder_from_autoencoder_tiny(vae: nn.Module) -> TinyDecoder:
    """The decoder of diffusers' ``AutoencoderTiny`` (TAESD in diffusers format) as an equivalent
    :class:`TinyDecoder`, built from the model's config; it decodes bit-identically.

    ``DecoderTiny`` applies its soft clamp in ``forward`` while :class:`TinyDecoder` keeps it as layer 0, so layer
    ``i`` of ``DecoderTiny.layers`` is layer ``i + 1`` here.

    Raises:
        ValueError: the config has several decoder widths, another activation than ReLU or other upsampling than
            nearest x2, which the TAESD layout does not have.
    """
    config = vae.config
    widths = set(config.decoder_block_out_channels)
    if len(widths) != 1 or config.act_fn != "relu" or config.upsample_fn != "nearest":
        raise ValueError(
            "this AutoencoderTiny decoder has several widths, another activation than ReLU or non-nearest upsampling "
            f"(decoder_block_out_channels={tuple(config.decoder_block_out_channels)}, act_fn={config.act_fn!r}, "
            f"upsample_fn={config.upsample_fn!r}); only TAESD-layout decoders are supported."
        )
    if config.upsampling_scaling_factor != 2:
        raise ValueError(f"upsampling_scaling_factor={config.upsampling_scaling_factor}; TAESD decoders upsample by 2.")
    tiny = TinyDecoder(
        latent_channels=config.latent_channels,
        out_channels=config.out_channels,
        channels=widths.pop(),
        num_blocks=tuple(config.num_decoder_blocks),
        midblock_gn=(False,) * len(config.num_decoder_blocks),
    )
    shifted = {}
    for key, value in vae.decoder.layers.state_dict().items():
        index, rest = key.split(".", 1)
        shifted[f"{int(index) + 1}.{rest}"] = value
    tiny.layers.load_state_dict(shifted, strict=True)
    parameter = next(vae.decoder.parameters())
    return tiny.to(device=parameter.device, dtype=parameter.dtype)


def _load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TAESD-family checkpoint not found: {path!r}.")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or non-checkpoint file
        raise ValueError(f"could not read {path!r} as a TAESD-family state dict: {error}") from error
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__}).")
    # Some exports prefix keys with "layers." or "encoder."/"decoder."; normalise to "<index>.<...>".
    return {key.split(".", 1)[1] if not key.split(".")[0].isdigit() else key: value for key, value in state.items()}


def _load_tiny(path: str | os.PathLike, cls: type[nn.Module], first_conv: int, first_block: int) -> nn.Module:
    """Build ``cls`` shaped like the checkpoint at ``path`` and load it (strict). Stage structure (blocks per
    stage, GroupNorm flags) is read off the block indices; widths off the first conv (layer ``first_conv``) and the
    last layer, which give ``cls``'s first three arguments."""
    state = _load_state_dict(path)
    indices = sorted({int(key.split(".")[0]) for key in state})
    block_indices = {i for i in indices if f"{i}.conv.0.weight" in state}
    num_blocks: list[int] = []
    midblock_gn: list[bool] = []
    for index in range(first_block, indices[-1]):
        if index in block_indices:
            if not num_blocks or (index - 1) not in block_indices:
                num_blocks.append(0)
                midblock_gn.append(False)
            num_blocks[-1] += 1
            midblock_gn[-1] = midblock_gn[-1] or f"{index}.pool.0.weight" in state
    first, last = state[f"{first_conv}.weight"], state[f"{indices[-1]}.weight"]
    module = cls(first.shape[1], last.shape[0], first.shape[0], num_blocks, midblock_gn)
    try:
        module.layers.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{os.fspath(path)!r} is not a TAESD-family encoder/decoder checkpoint this loader understands: {error}"
        ) from error
    return module


def load_tiny_encoder(path: str | os.PathLike) -> TinyEncoder:
    """Build a :class:`TinyEncoder` shaped like the checkpoint at ``path`` and load it (strict)."""
    return _load_tiny(path, TinyEncoder, first_conv=0, first_block=1)


def load_tiny_decoder(path: str | os.PathLike) -> TinyDecoder:
    """Build a :class:`TinyDecoder` shaped like the checkpoint at ``path`` and load it (strict)."""
    return _load_tiny(path, TinyDecoder, first_conv=1, first_block=3)
