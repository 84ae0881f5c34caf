"""``AutoencoderLite``: a LiteVAE encoder with a Stable-Diffusion-layout decoder.

A drop-in diffusers VAE: it keeps the whole contract pipelines rely on (``encode`` -> ``AutoencoderKLOutput``
with a ``DiagonalGaussianDistribution``, ``decode(z, return_dict, generator)`` -> ``DecoderOutput`` in
``[-1, 1]``, the config keys ``block_out_channels``, ``latent_channels``, ``scaling_factor``,
``shift_factor``, ``latents_mean``/``latents_std`` and ``force_upcast``, ``post_quant_conv``, attention
processors, slicing, tiling, CPU offload hooks, group offloading and gradient checkpointing), so
``pipe.vae = AutoencoderLite.from_pretrained(...)`` works in SD 1.x/2.x, SDXL and SD3/FLUX-style pipelines.
LiteVAE models with a TAESD-family decoder are :class:`~diffusers_litevae.AutoencoderLiteTiny`;
``AutoencoderLite.from_pretrained`` loads those too.

This module path (``diffusers_litevae.models.autoencoder_lite``) is recorded by
``DiffusionPipeline.save_pretrained`` in ``model_index.json``: it is a public contract and must not move.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import AttentionMixin
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vae import Decoder
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks it up here)

from .autoencoder_lite_base import AutoencoderLiteBase, match_device_dtype
from .autoencoder_lite_tiny import AutoencoderLiteTiny
from .litevae_encoder import encoder_config
from .smc import replace_resnet_norms_with_smc
from .utils import normalize_sequences

__all__ = ["AutoencoderLite"]

_SD_UP_BLOCKS = ("UpDecoderBlock2D",) * 4
# Keys of version 0.1's one-class config that described the TAESD-family decoder (now AutoencoderLiteTiny's).
_OTHER_DECODER_KEYS = ("decoder_type", "tiny_decoder_channels", "tiny_decoder_num_blocks", "tiny_decoder_midblock_gn")


class AutoencoderLite(AttentionMixin, AutoencoderLiteBase):
    r"""LiteVAE: a wavelet-based lightweight encoder and diffusers' Stable-Diffusion-layout decoder, as one model.

    Encoder (LiteVAE, paper section 4.1): a ``wavelet_levels``-level Haar transform, one feature UNet per level
    and an aggregation UNet producing the mean and log-variance of a diagonal Gaussian. Defaults are the
    paper's LiteVAE-B; :meth:`from_preset` picks S, B, M or L.

    Decoder: diffusers' own ``Decoder`` with ``post_quant_conv``, laid out exactly like ``AutoencoderKL``'s, so
    Stable Diffusion VAE decoder weights load unchanged (:meth:`from_autoencoder_kl`). ``use_smc=True`` replaces
    the GroupNorm+conv3x3 pairs in its ResBlocks with Self-Modulated Convolutions (paper section 4.2) for decoders
    trained from scratch.

    Parameters:
        in_channels (`int`, defaults to 3): image channels of the input.
        out_channels (`int`, defaults to 3): image channels of the output.
        latent_channels (`int`, defaults to 4): latent channels (4 for SD 1.x/2.x/SDXL, 16 for SD3/FLUX.1).
        wavelet_levels (`int`, defaults to 3): Haar levels; the downsampling factor is ``2**wavelet_levels`` and
            must equal the decoder's ``2 ** (len(block_out_channels) - 1)``.
        encoder_feature_channels (`int`, defaults to 32): base width of each per-level feature UNet.
        encoder_feature_channel_mults (`tuple[int]`, defaults to `(1, 2, 3)`): width multipliers of those UNets.
        encoder_aggregation_channels (`int`, defaults to 32): base width of the aggregation UNet.
        encoder_aggregation_channel_mults (`tuple[int]`, defaults to `(1, 2, 3)`): its width multipliers.
        encoder_layers_per_block (`int`, defaults to 2): ResBlocks per encoder UNet level and path.
        encoder_norm_num_groups (`int`, defaults to 32): maximum GroupNorm groups in the encoder.
        up_block_types (`tuple[str]`): ``Decoder`` up block types, SD layout by default.
        block_out_channels (`tuple[int]`, defaults to `(128, 256, 512, 512)`): ``Decoder`` widths; pipelines
            derive ``vae_scale_factor = 2 ** (len(block_out_channels) - 1)`` from it.
        layers_per_block (`int`, defaults to 2): ``Decoder`` ResBlocks per up block, minus one (as in diffusers).
        act_fn (`str`, defaults to `"silu"`): ``Decoder`` activation.
        norm_num_groups (`int`, defaults to 32): ``Decoder`` GroupNorm groups.
        mid_block_add_attention (`bool`, defaults to `True`): attention in the ``Decoder`` mid block.
        use_post_quant_conv (`bool`, defaults to `True`): 1x1 conv before the ``Decoder`` (SD/SDXL have one,
            SD3/FLUX do not).
        use_smc (`bool`, defaults to `False`): Self-Modulated Convolutions in the ``Decoder``'s ResBlocks.
        sample_size (`int`, defaults to 512): tile size in pixels for tiled encoding/decoding.
        scaling_factor (`float`, defaults to 0.18215): multiply latents by it before diffusion (see
            ``AutoencoderKL``).
        shift_factor (`float`, *optional*): subtract before scaling (SD3/FLUX); ``None`` for SD 1.x/SDXL.
        latents_mean (`tuple[float]`, *optional*): per-channel latent mean, for pipelines that read it.
        latents_std (`tuple[float]`, *optional*): per-channel latent std, for pipelines that read it.
        force_upcast (`bool`, defaults to `True`): SDXL pipelines run an fp16 VAE in fp32 when set.
    """

    _no_split_modules = ["LiteVAEUNet", "ResnetBlock2D", "Attention"]

    # Attention processors and QKV fusion for the decoder's mid-block ``Attention``: AutoencoderKL's own methods,
    # so both VAEs behave the same under every diffusers version.
    set_default_attn_processor = AutoencoderKL.set_default_attn_processor
    fuse_qkv_projections = AutoencoderKL.fuse_qkv_projections
    unfuse_qkv_projections = AutoencoderKL.unfuse_qkv_projections

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 4,
        wavelet_levels: int = 3,
        encoder_feature_channels: int = 32,
        encoder_feature_channel_mults: tuple[int, ...] = (1, 2, 3),
        encoder_aggregation_channels: int = 32,
        encoder_aggregation_channel_mults: tuple[int, ...] = (1, 2, 3),
        encoder_layers_per_block: int = 2,
        encoder_norm_num_groups: int = 32,
        up_block_types: tuple[str, ...] = _SD_UP_BLOCKS,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        mid_block_add_attention: bool = True,
        use_post_quant_conv: bool = True,
        use_smc: bool = False,
        sample_size: int = 512,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
    ):
        super().__init__()
        if len(block_out_channels) < 2:
            raise ValueError(
                f"the decoder needs at least 2 block_out_channels to upsample; got {tuple(block_out_channels)} "
                "(Stable Diffusion VAEs: 4 entries, factor 8)."
            )
        self._build_encoder(decoder_factor=2 ** (len(block_out_channels) - 1))
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        if use_smc:
            replace_resnet_norms_with_smc(self.decoder)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_autoencoder_kl(cls, vae: nn.Module, encoder: str | dict = "B", **kwargs) -> "AutoencoderLite":
        """A model with ``vae``'s decoder, ``post_quant_conv`` and latent space, and a fresh LiteVAE encoder.

        The decoder weights are copied exactly, so decoding a latent gives bit-identical images; the encoder is
        randomly initialised and ready to be distilled (:mod:`diffusers_litevae.training`).

        Args:
            vae: a diffusers ``AutoencoderKL`` (SD 1.x/2.x, SDXL, SD3/FLUX-style 16 channels).
            encoder: encoder preset name or a dict of ``encoder_*`` config keys.
            kwargs: further config overrides for the encoder, and ``sample_size`` (the tiling tile size). Keys
                that describe the teacher's latent space or decoder architecture come from ``vae``: passing one
                with a different value raises a ``ValueError`` (the copied decoder would not fit it).
        """
        config = getattr(vae, "config", None)
        if getattr(config, "latent_channels", None) is None or not hasattr(config, "up_block_types"):
            raise TypeError(
                f"from_autoencoder_kl needs a diffusers AutoencoderKL (SD/SDXL/SD3-style), got {type(vae).__name__}."
            )
        if len(config.block_out_channels) < 2:
            raise ValueError(
                f"from_autoencoder_kl: the AutoencoderKL has block_out_channels={tuple(config.block_out_channels)}, "
                "one block, so its latents have the images' own size (downsampling factor 1). LiteVAE's wavelet "
                "encoder downsamples by 2**levels with levels >= 1: the teacher needs at least 2 block_out_channels "
                "(Stable Diffusion VAEs have 4: factor 8). A default AutoencoderKL() is such a one-block toy; load "
                "a real VAE, e.g. AutoencoderKL.from_pretrained(..., subfolder='vae')."
            )
        sample_size = config.sample_size  # an int, or a (height, width) pair
        decoder_keys = dict(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            latent_channels=config.latent_channels,
            wavelet_levels=len(config.block_out_channels) - 1,
            up_block_types=tuple(config.up_block_types),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            act_fn=config.act_fn,
            norm_num_groups=config.norm_num_groups,
            mid_block_add_attention=getattr(config, "mid_block_add_attention", True),
            use_post_quant_conv=getattr(config, "use_post_quant_conv", True),
            use_smc=False,  # SMC has no GroupNorms and extra weights: the teacher's would not load
            # Only the tiling tile size: any value works with the teacher's decoder.
            sample_size=kwargs.pop(
                "sample_size", sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
            ),
            scaling_factor=config.scaling_factor,
            shift_factor=getattr(config, "shift_factor", None),
            latents_mean=normalize_sequences(getattr(config, "latents_mean", None)),
            latents_std=normalize_sequences(getattr(config, "latents_std", None)),
            force_upcast=getattr(config, "force_upcast", True),
        )
        _reject_teacher_conflicts(kwargs, decoder_keys)
        encoder_keys = encoder_config(encoder)
        _reject_teacher_conflicts(encoder_keys, decoder_keys, source="encoder")
        model = cls(**{**encoder_keys, **kwargs, **decoder_keys})
        model.decoder.load_state_dict(vae.decoder.state_dict())
        if model.post_quant_conv is not None:
            model.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
        return match_device_dtype(model, vae)

    @classmethod
    def _legacy_config(cls, config: dict) -> dict:
        # Version 0.1 saved this model with the other decoder's keys too (decoder_type "kl", tiny_decoder_*).
        return {key: value for key, value in config.items() if key not in _OTHER_DECODER_KEYS}

    @classmethod
    def _loader_for(cls, saved_class: str):
        # The documented one-liner ``AutoencoderLite.from_pretrained(...)`` loads every LiteVAE folder, and
        # pipelines saved by version 0.1 name AutoencoderLite for their TAESD-decoder VAEs too.
        return AutoencoderLiteTiny if saved_class == "AutoencoderLiteTiny" else None

    def _decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


# Why a teacher's key cannot be overridden; any other key: its decoder's architecture.
_CONFLICT_REASONS = {
    **dict.fromkeys(
        ("latent_channels", "scaling_factor", "shift_factor", "latents_mean", "latents_std"),
        "it defines the teacher's latent space, which the copied decoder decodes and the encoder must match",
    ),
    "force_upcast": "it records whether the teacher's decoder (copied unchanged) is safe to run in fp16",
    "use_smc": "Self-Modulated Convolutions replace the GroupNorm+conv pairs whose weights are copied from the teacher",
}


def _reject_teacher_conflicts(overrides: dict, teacher_keys: dict, source: str = "keyword argument") -> None:
    """Raise if ``overrides`` sets a key that :meth:`AutoencoderLite.from_autoencoder_kl` takes from the teacher."""
    for key, value in overrides.items():
        if key not in teacher_keys or normalize_sequences(value) == normalize_sequences(teacher_keys[key]):
            continue
        why = _CONFLICT_REASONS.get(key, "the teacher's decoder weights are copied unchanged and need its architecture")
        raise ValueError(
            f"from_autoencoder_kl: {source} {key}={value!r} conflicts with the teacher's {key}={teacher_keys[key]!r}; "
            f"{why}. Drop {key!r} (it is taken from the teacher), or build AutoencoderLite(...) directly and train "
            "its decoder."
        )
