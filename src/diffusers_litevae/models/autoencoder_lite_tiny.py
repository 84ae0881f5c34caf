"""``AutoencoderLiteTiny``: a LiteVAE encoder with a TAESD-family decoder.

For encoders distilled against TAESD-family teachers (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2): the decoder is the
teacher's, copied exactly (:meth:`AutoencoderLiteTiny.from_tiny_decoder`,
:meth:`AutoencoderLiteTiny.from_autoencoder_tiny`), so the student decodes its latents bit-identically. The model
keeps diffusers' VAE contract (``encode`` -> ``AutoencoderKLOutput`` with a posterior, ``decode`` ->
``DecoderOutput`` in ``[-1, 1]``, slicing, tiling, offloading), so pipelines take it as ``pipe.vae``.

This module path (``diffusers_litevae.models.autoencoder_lite_tiny``) is recorded by
``DiffusionPipeline.save_pretrained`` in ``model_index.json``: it is a public contract and must not move.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks it up here)

from .autoencoder_lite_base import AutoencoderLiteBase, match_device_dtype
from .litevae_encoder import encoder_config
from .tiny_autoencoder import TinyDecoder, tiny_decoder_from_autoencoder_tiny, unit_to_signed

__all__ = ["AutoencoderLiteTiny"]

# Version 0.1 saved this model as an ``AutoencoderLite`` with ``decoder_type: "tiny"``: its decoder keys had a
# ``tiny_`` prefix, and it carried the SD decoder's keys, which mean nothing here.
_RENAMED_KEYS = {f"tiny_{key}": key for key in ("decoder_channels", "decoder_num_blocks", "decoder_midblock_gn")}
_OTHER_DECODER_KEYS = (
    "decoder_type",
    "up_block_types",
    "layers_per_block",
    "act_fn",
    "norm_num_groups",
    "mid_block_add_attention",
    "use_post_quant_conv",
    "use_smc",
)
# Derived from the config and registered by ``__init__`` for pipelines, like ``AutoencoderTiny`` does.
_DERIVED_KEYS = ("block_out_channels", "force_upcast")


class AutoencoderLiteTiny(AutoencoderLiteBase):
    r"""LiteVAE: a wavelet-based lightweight encoder and a TAESD-family decoder, as one diffusers model.

    Encoder: as in :class:`~diffusers_litevae.AutoencoderLite` (LiteVAE, paper section 4.1). Decoder: a
    :class:`~diffusers_litevae.models.tiny_autoencoder.TinyDecoder` (soft clamp, conv, ``decoder_num_blocks``
    residual blocks per stage with a nearest x2 upsample between stages), whose ``[0, 1]`` output is mapped to
    ``[-1, 1]``.

    Parameters:
        in_channels (`int`, defaults to 3): image channels of the input.
        out_channels (`int`, defaults to 3): image channels of the output.
        latent_channels (`int`, defaults to 4): latent channels (4 TAESD/TAESDXL, 16 TAESD3/TAEF1, 32 TAEF2).
        wavelet_levels (`int`, defaults to 3): Haar levels; ``2**wavelet_levels`` must equal the decoder's
            upsampling factor ``2 ** (len(decoder_num_blocks) - 1)``.
        encoder_feature_channels (`int`, defaults to 32): base width of each per-level feature UNet.
        encoder_feature_channel_mults (`tuple[int]`, defaults to `(1, 2, 3)`): width multipliers of those UNets.
        encoder_aggregation_channels (`int`, defaults to 32): base width of the aggregation UNet.
        encoder_aggregation_channel_mults (`tuple[int]`, defaults to `(1, 2, 3)`): its width multipliers.
        encoder_layers_per_block (`int`, defaults to 2): ResBlocks per encoder UNet level and path.
        encoder_norm_num_groups (`int`, defaults to 32): maximum GroupNorm groups in the encoder.
        decoder_channels (`int`, defaults to 64): width of every decoder layer.
        decoder_num_blocks (`tuple[int]`, defaults to `(3, 3, 3, 1)`): residual blocks per decoder stage.
        decoder_midblock_gn (`tuple[bool]`, defaults to all false): per stage, whether its blocks carry TAEF2's
            GroupNorm bottleneck.
        sample_size (`int`, defaults to 512): tile size in pixels for tiled encoding/decoding.
        scaling_factor (`float`, defaults to 1.0): multiply latents by it before diffusion (1.0: TAESD-family
            decoders take raw latents).
        shift_factor (`float`, *optional*): subtract before scaling; ``None`` for none.
        latents_mean (`tuple[float]`, *optional*): per-channel latent mean, for pipelines that read it.
        latents_std (`tuple[float]`, *optional*): per-channel latent std, for pipelines that read it.

    As on ``AutoencoderTiny``, the config also holds two derived keys pipelines read: ``block_out_channels``
    (``decoder_channels`` per stage: ``vae_scale_factor = 2 ** (len(block_out_channels) - 1)``) and
    ``force_upcast=False`` (ReLU convolutions are safe in fp16).
    """

    _no_split_modules = ["LiteVAEUNet", "TinyBlock"]

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
        decoder_channels: int = 64,
        decoder_num_blocks: tuple[int, ...] = (3, 3, 3, 1),
        decoder_midblock_gn: tuple[bool, ...] = (False, False, False, False),
        sample_size: int = 512,
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
    ):
        super().__init__()
        if len(decoder_num_blocks) < 2:
            raise ValueError(
                f"the decoder needs at least 2 stages to upsample; got decoder_num_blocks={tuple(decoder_num_blocks)} "
                "(TAESD-family decoders: 4 stages, factor 8)."
            )
        self._build_encoder(decoder_factor=2 ** (len(decoder_num_blocks) - 1))
        self.decoder = TinyDecoder(
            latent_channels=latent_channels,
            out_channels=out_channels,
            channels=decoder_channels,
            num_blocks=tuple(decoder_num_blocks),
            midblock_gn=tuple(decoder_midblock_gn),
        )
        self.register_to_config(block_out_channels=(decoder_channels,) * len(decoder_num_blocks), force_upcast=False)

    @classmethod
    def from_tiny_decoder(
        cls,
        decoder: TinyDecoder,
        encoder: str | dict = "B",
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        **kwargs,
    ) -> "AutoencoderLiteTiny":
        """A model with ``decoder``'s weights, copied exactly, and a fresh LiteVAE encoder to distil.

        Args:
            decoder: a :class:`~diffusers_litevae.models.tiny_autoencoder.TinyDecoder`
                (e.g. from ``tiny_autoencoder.load_tiny_decoder``).
            encoder: encoder preset name or a dict of ``encoder_*`` config keys.
            scaling_factor, shift_factor: the latent space as pipelines should see it (1.0 / ``None``: raw latents,
                what TAESD-family decoders take).
            kwargs: further config keys (``in_channels``, ``sample_size``, ``latents_mean``, ...).
        """
        model = cls(
            **{
                **encoder_config(encoder),
                **kwargs,
                "latent_channels": decoder.latent_channels,
                "out_channels": decoder.out_channels,
                "wavelet_levels": len(decoder.num_blocks) - 1,
                "decoder_channels": decoder.channels,
                "decoder_num_blocks": decoder.num_blocks,
                "decoder_midblock_gn": decoder.midblock_gn,
                "scaling_factor": scaling_factor,
                "shift_factor": shift_factor,
            }
        )
        model.decoder.load_state_dict(decoder.state_dict())
        return match_device_dtype(model, decoder)

    @classmethod
    def from_autoencoder_tiny(cls, vae: nn.Module, encoder: str | dict = "B", **kwargs) -> "AutoencoderLiteTiny":
        """A model with the decoder and latent space of diffusers' ``AutoencoderTiny`` ``vae`` (TAESD in diffusers
        format), copied exactly, and a fresh LiteVAE encoder; ``kwargs`` as in :meth:`from_tiny_decoder`."""
        config = vae.config
        return cls.from_tiny_decoder(
            tiny_decoder_from_autoencoder_tiny(vae),
            encoder=encoder,
            scaling_factor=getattr(config, "scaling_factor", 1.0) or 1.0,
            shift_factor=getattr(config, "shift_factor", None) or None,
            **{"in_channels": config.in_channels, **kwargs},
        )

    @classmethod
    def _legacy_config(cls, config: dict) -> dict:
        renamed = {_RENAMED_KEYS.get(key, key): value for key, value in config.items()}
        if config.get("decoder_type") == "tiny":
            renamed["_class_name"] = cls.__name__
        return {key: value for key, value in renamed.items() if key not in _OTHER_DECODER_KEYS + _DERIVED_KEYS}

    def _decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return unit_to_signed(self.decoder(z))
