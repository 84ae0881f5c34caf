"""``AutoencoderLite``: a LiteVAE encoder with a Stable-Diffusion-layout (or TAESD-family) decoder.

A drop-in diffusers VAE: it keeps the whole contract pipelines rely on (``encode`` -> ``AutoencoderKLOutput``
with a ``DiagonalGaussianDistribution``, ``decode(z, return_dict, generator)`` -> ``DecoderOutput`` in
``[-1, 1]``, the config keys ``block_out_channels``, ``latent_channels``, ``scaling_factor``,
``shift_factor``, ``latents_mean``/``latents_std`` and ``force_upcast``, ``post_quant_conv``, slicing,
tiling, CPU offload hooks, group offloading and gradient checkpointing), so
``pipe.vae = AutoencoderLite.from_pretrained(...)`` works in SD 1.x/2.x, SDXL and SD3/FLUX-style pipelines.

This module path (``diffusers_litevae.models.autoencoder_lite``) is recorded by
``DiffusionPipeline.save_pretrained`` in ``model_index.json``: it is a public contract and must not move.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vae import AutoencoderMixin, Decoder, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks it up here)
from diffusers.utils.accelerate_utils import apply_forward_hook

from .litevae_encoder import LiteVAEEncoder, encoder_preset
from .smc import replace_resnet_norms_with_smc
from .tiny_autoencoder import TinyDecoder
from .utils import LazyDiagonalGaussian, cast_module

__all__ = ["AutoencoderLite"]

_SD_UP_BLOCKS = ("UpDecoderBlock2D",) * 4
_DECODER_TYPES = ("kl", "tiny")
_HUB_KWARGS = ("subfolder", "cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")


class AutoencoderLite(ModelMixin, AttentionMixin, AutoencoderMixin, ConfigMixin, PeftAdapterMixin):
    r"""LiteVAE: a wavelet-based lightweight encoder and a diffusers decoder, as one diffusers model.

    Encoder (LiteVAE, paper section 4.1): a ``wavelet_levels``-level Haar transform, one feature UNet per level
    and an aggregation UNet producing the mean and log-variance of a diagonal Gaussian. Defaults are the
    paper's LiteVAE-B; :meth:`from_preset` picks S, B, M or L.

    Decoder (``decoder_type``):
    - ``"kl"``: diffusers' own ``Decoder`` with ``post_quant_conv``, laid out exactly like ``AutoencoderKL``'s,
      so Stable Diffusion VAE decoder weights load unchanged (:meth:`from_autoencoder_kl`). ``use_smc=True``
      replaces the GroupNorm+conv3x3 pairs in its ResBlocks with Self-Modulated Convolutions (paper 4.2) for
      decoders trained from scratch.
    - ``"tiny"``: a TAESD-family decoder (:class:`~diffusers_litevae.models.tiny_autoencoder.TinyDecoder`),
      for encoders distilled against TAESD/TAEF-style teachers.

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
        decoder_type (`str`, defaults to `"kl"`): ``"kl"`` (SD-layout ``Decoder``) or ``"tiny"`` (TAESD-family).
        up_block_types (`tuple[str]`): ``Decoder`` up block types (``"kl"``), SD layout by default.
        block_out_channels (`tuple[int]`, defaults to `(128, 256, 512, 512)`): ``Decoder`` widths. Pipelines
            derive ``vae_scale_factor = 2 ** (len(block_out_channels) - 1)`` from it, so it is kept for
            ``"tiny"`` too (one entry per decoder stage).
        layers_per_block (`int`, defaults to 2): ``Decoder`` ResBlocks per up block, minus one (as in diffusers).
        act_fn (`str`, defaults to `"silu"`): ``Decoder`` activation.
        norm_num_groups (`int`, defaults to 32): ``Decoder`` GroupNorm groups.
        mid_block_add_attention (`bool`, defaults to `True`): attention in the ``Decoder`` mid block.
        use_post_quant_conv (`bool`, defaults to `True`): 1x1 conv before the ``Decoder`` (SD/SDXL have one,
            SD3/FLUX do not).
        use_smc (`bool`, defaults to `False`): Self-Modulated Convolutions in the ``Decoder``'s ResBlocks.
        tiny_decoder_channels (`int`, defaults to 64): width of the ``"tiny"`` decoder.
        tiny_decoder_num_blocks (`tuple[int]`, defaults to `(3, 3, 3, 1)`): blocks per ``"tiny"`` decoder stage.
        tiny_decoder_midblock_gn (`tuple[bool]`, defaults to all false): GroupNorm bottleneck per ``"tiny"`` stage.
        sample_size (`int`, defaults to 512): tile size in pixels for tiled encoding/decoding.
        scaling_factor (`float`, defaults to 0.18215): multiply latents by it before diffusion (see
            ``AutoencoderKL``).
        shift_factor (`float`, *optional*): subtract before scaling (SD3/FLUX); ``None`` for SD 1.x/SDXL.
        latents_mean (`tuple[float]`, *optional*): per-channel latent mean, for pipelines that read it.
        latents_std (`tuple[float]`, *optional*): per-channel latent std, for pipelines that read it.
        force_upcast (`bool`, defaults to `True`): SDXL pipelines run an fp16 VAE in fp32 when set.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LiteVAEUNet", "ResnetBlock2D", "Attention", "TinyBlock"]
    # Block-level group offloading (``enable_group_offload(..., offload_type="block_level")``): each of these
    # submodules gets its own groups, onloaded by its own forward. Without the list they would all share the
    # top-level group that only ``forward`` onloads, and pipelines call ``encode``/``decode`` directly.
    # ``post_quant_conv`` is None for SD3/FLUX-style and tiny decoders; diffusers skips names that are not children.
    _group_offload_block_modules = ["encoder", "post_quant_conv", "decoder"]

    # Attention processors and QKV fusion (``vae.set_attn_processor``, ``vae.attn_processors``,
    # ``vae.fuse_qkv_projections()``), as on ``AutoencoderKL``: the ``"kl"`` decoder's mid block holds diffusers'
    # ``Attention``; the LiteVAE encoder and the tiny decoder have none, so for them these act on no module.
    # AutoencoderKL's own methods are used, so both VAEs behave the same under every diffusers version.
    # ``PeftAdapterMixin`` gives ``add_adapter`` / ``set_adapters`` / ``disable_adapters`` (LoRA on the encoder's
    # and decoder's convolutions and attention projections; needs ``peft``). ``FromOriginalModelMixin``
    # (``from_single_file``) is not mixed in: it converts the original single-file checkpoints of diffusers' own
    # classes, and LiteVAE has no such original format; ``from_pretrained`` loads every saved AutoencoderLite.
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
        decoder_type: str = "kl",
        up_block_types: tuple[str, ...] = _SD_UP_BLOCKS,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        mid_block_add_attention: bool = True,
        use_post_quant_conv: bool = True,
        use_smc: bool = False,
        tiny_decoder_channels: int = 64,
        tiny_decoder_num_blocks: tuple[int, ...] = (3, 3, 3, 1),
        tiny_decoder_midblock_gn: tuple[bool, ...] = (False, False, False, False),
        sample_size: int = 512,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
    ):
        super().__init__()
        if decoder_type not in _DECODER_TYPES:
            raise ValueError(f"decoder_type must be one of {_DECODER_TYPES}, got {decoder_type!r}.")
        if wavelet_levels < 1 or len(block_out_channels) < 2:
            raise ValueError(
                f"LiteVAE's encoder needs at least one wavelet level (downsampling factor 2**wavelet_levels >= 2), "
                f"and the decoder at least 2 block_out_channels to upsample; got wavelet_levels={wavelet_levels} and "
                f"block_out_channels={tuple(block_out_channels)} (Stable Diffusion VAEs: 3 and 4 entries, factor 8)."
            )
        decoder_factor = 2 ** (len(block_out_channels) - 1)
        if 2**wavelet_levels != decoder_factor:
            raise ValueError(
                f"the encoder downsamples by 2**wavelet_levels = {2**wavelet_levels} but the decoder upsamples by "
                f"2**(len(block_out_channels) - 1) = {decoder_factor}; "
                f"set wavelet_levels={len(block_out_channels) - 1}."
            )
        if decoder_type == "tiny" and len(tiny_decoder_num_blocks) != len(block_out_channels):
            raise ValueError(
                f"a tiny decoder with {len(tiny_decoder_num_blocks)} stages upsamples by "
                f"{2 ** (len(tiny_decoder_num_blocks) - 1)}; "
                f"block_out_channels needs {len(tiny_decoder_num_blocks)} entries."
            )

        self.encoder = LiteVAEEncoder(
            in_channels=in_channels,
            latent_channels=latent_channels,
            wavelet_levels=wavelet_levels,
            feature_channels=encoder_feature_channels,
            feature_channel_mults=tuple(encoder_feature_channel_mults),
            aggregation_channels=encoder_aggregation_channels,
            aggregation_channel_mults=tuple(encoder_aggregation_channel_mults),
            layers_per_block=encoder_layers_per_block,
            norm_num_groups=encoder_norm_num_groups,
            double_z=True,
        )

        if decoder_type == "kl":
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
        else:
            if use_smc:
                raise ValueError(
                    "use_smc applies to the 'kl' decoder only; the tiny decoder has no GroupNorm+conv pairs."
                )
            self.decoder = TinyDecoder(
                latent_channels=latent_channels,
                out_channels=out_channels,
                channels=tiny_decoder_channels,
                num_blocks=tuple(tiny_decoder_num_blocks),
                midblock_gn=tuple(tiny_decoder_midblock_gn),
            )
            self.post_quant_conv = None

        self.use_slicing = False
        self.use_tiling = False
        # Tiling: tiles of `tile_sample_min_size` pixels overlapping by `tile_overlap_factor`, blended linearly.
        self.tile_sample_min_size = int(sample_size)
        self.tile_latent_min_size = int(sample_size) // decoder_factor
        self.tile_overlap_factor = 0.25

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_preset(cls, preset: str = "B", **kwargs) -> "AutoencoderLite":
        """Build a randomly initialised model with LiteVAE encoder scale
        ``preset`` (``"S"``, ``"B"``, ``"M"``, ``"L"``).

        Other keyword arguments are config keys (e.g. ``latent_channels=16``).
        """
        return cls(**{**encoder_preset(preset).config_kwargs(), **kwargs})

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
        decoder_keys = dict(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            latent_channels=config.latent_channels,
            wavelet_levels=len(config.block_out_channels) - 1,
            decoder_type="kl",
            up_block_types=tuple(config.up_block_types),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            act_fn=config.act_fn,
            norm_num_groups=config.norm_num_groups,
            mid_block_add_attention=getattr(config, "mid_block_add_attention", True),
            use_post_quant_conv=getattr(config, "use_post_quant_conv", True),
            sample_size=_first(config.sample_size),
            scaling_factor=config.scaling_factor,
            shift_factor=getattr(config, "shift_factor", None),
            latents_mean=_tuple_or_none(getattr(config, "latents_mean", None)),
            latents_std=_tuple_or_none(getattr(config, "latents_std", None)),
            force_upcast=getattr(config, "force_upcast", True),
        )
        decoder_keys["use_smc"] = False  # SMC has no GroupNorms and extra weights: the teacher's would not load
        if "sample_size" in kwargs:  # only the tiling tile size; any value works with the teacher's decoder
            decoder_keys["sample_size"] = kwargs.pop("sample_size")
        _reject_teacher_conflicts(kwargs, decoder_keys)
        encoder_keys = encoder_preset(encoder).config_kwargs() if isinstance(encoder, str) else dict(encoder)
        _reject_teacher_conflicts(encoder_keys, decoder_keys, source="encoder")
        model = cls(**{**encoder_keys, **kwargs, **decoder_keys})
        model.decoder.load_state_dict(vae.decoder.state_dict())
        if model.post_quant_conv is not None:
            model.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
        return _match_device_dtype(model, vae)

    @classmethod
    def from_tiny_decoder(
        cls,
        decoder: TinyDecoder,
        encoder: str | dict = "B",
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        **kwargs,
    ) -> "AutoencoderLite":
        """A model with a TAESD-family decoder's weights (see ``tiny_autoencoder.load_tiny_decoder``)
        and a fresh encoder.

        Tiny decoders map raw latents to images; ``scaling_factor`` / ``shift_factor`` describe the latent space
        to pipelines (1.0 / None for raw latents).
        """
        stages = [m for m in decoder.layers if isinstance(m, nn.Upsample)]
        conv_in = decoder.layers[1]
        num_blocks, midblock_gn = _tiny_stage_layout(decoder)
        encoder_keys = encoder_preset(encoder).config_kwargs() if isinstance(encoder, str) else dict(encoder)
        model = cls(
            **{
                **encoder_keys,
                **kwargs,
                "latent_channels": conv_in.in_channels,
                "out_channels": decoder.layers[-1].out_channels,
                "wavelet_levels": len(stages),
                "decoder_type": "tiny",
                "block_out_channels": (conv_in.out_channels,) * (len(stages) + 1),
                "tiny_decoder_channels": conv_in.out_channels,
                "tiny_decoder_num_blocks": num_blocks,
                "tiny_decoder_midblock_gn": midblock_gn,
                "scaling_factor": scaling_factor,
                "shift_factor": shift_factor,
                "force_upcast": False,
            }
        )
        model.decoder.load_state_dict(decoder.state_dict())
        return _match_device_dtype(model, decoder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "AutoencoderLite":
        """Load a saved ``AutoencoderLite`` (local folder or Hub id); see ``ModelMixin.from_pretrained``.

        Raises a ``ValueError`` when the folder's ``config.json`` names another class (e.g. an ``AutoencoderKL``:
        diffusers would load it with a random encoder and only a warning; use :meth:`from_autoencoder_kl`).
        When diffusers' loader fails (typically weights that do not fit the config: an edited ``config.json``, or
        architecture keys overridden through ``kwargs``), its error is re-raised as the same type with the folder
        and the likely fix, chained to diffusers' original error, which names the mismatching weight.
        """
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        try:
            saved_class = cls.load_config(pretrained_model_name_or_path, **hub_kwargs).get("_class_name")
        except OSError as error:  # a Hub id while HF_HUB_OFFLINE is set: say so, not "no file named config.json"
            from ..vae_io import hub_offline_message

            offline = hub_offline_message(pretrained_model_name_or_path)
            if offline is None:
                raise
            raise OSError(offline) from error
        if saved_class and saved_class != cls.__name__:
            raise ValueError(
                f"{pretrained_model_name_or_path!r} holds a model of class {saved_class} (its config.json "
                f"'_class_name'), not an AutoencoderLite. To give it a LiteVAE encoder, load it with "
                f"diffusers.{saved_class}.from_pretrained(...) and call "
                "AutoencoderLite.from_autoencoder_kl(vae, encoder='B'), then distil the encoder."
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (ValueError, RuntimeError) as error:
            overridden = sorted(key for key in kwargs if key in cls._init_keys())
            if overridden:
                hint = (
                    f"the config overrides {overridden} change the architecture, so the saved weights may not fit; "
                    "drop them to load with the config saved beside the weights"
                )
            else:
                hint = (
                    "if config.json was edited, it may describe a different architecture than the saved weights; "
                    "restore it or re-save the model with save_pretrained"
                )
            raise type(error)(
                f"AutoencoderLite.from_pretrained could not load {pretrained_model_name_or_path!r} (diffusers' "
                f"error above): {hint}."
            ) from error

    @classmethod
    def _init_keys(cls) -> set[str]:
        import inspect

        return set(inspect.signature(cls.__init__).parameters) - {"self"}

    # ------------------------------------------------------------------ input checks

    @property
    def downsample_factor(self) -> int:
        return 2**self.config.wavelet_levels

    def _check_images(self, x: torch.Tensor) -> None:
        channels, factor = self.config.in_channels, self.downsample_factor
        expected = f"(batch, {channels}, H, W) with H and W multiples of {factor}, values in [-1, 1]"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"AutoencoderLite.encode expects a torch.Tensor shaped {expected}, got {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(f"AutoencoderLite.encode expects a 4D tensor {expected}; got shape {tuple(x.shape)}.")
        if x.shape[1] != channels:
            raise ValueError(
                f"AutoencoderLite.encode expects {channels} input channels {expected}; got {x.shape[1]} "
                f"(shape {tuple(x.shape)}). Convert images to RGB (and channels-first) before encoding."
            )
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"AutoencoderLite.encode expects {expected}; got H x W = {x.shape[2]} x {x.shape[3]}. Resize or crop "
                f"to a multiple of {factor}, e.g. {x.shape[2] // factor * factor} x {x.shape[3] // factor * factor}."
            )
        if not x.is_floating_point():
            raise ValueError(
                f"AutoencoderLite.encode expects float images in [-1, 1]; got a {x.dtype} tensor (pixels in 0-255?). "
                "Convert it with x.float() / 127.5 - 1, then .to(vae.dtype)."
            )
        self._check_dtype(x, "encode", "images")

    def _check_dtype(self, tensor: torch.Tensor, method: str, what: str) -> None:
        """A floating ``tensor`` must have the model's dtype (torch's own error names neither), unless autocast
        is on for its device, which runs the convolutions in one dtype whatever the input's."""
        dtype = self.dtype
        if tensor.dtype == dtype or _autocast_enabled(tensor.device.type):
            return
        raise ValueError(
            f"AutoencoderLite.{method} got {what} of dtype {tensor.dtype}, but the model's weights are {dtype}; "
            f"cast them with .to(vae.dtype) or load the model with torch_dtype={dtype}."
        )

    def _check_latents(self, z: torch.Tensor) -> None:
        channels = self.config.latent_channels
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != channels:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"AutoencoderLite.decode expects latents shaped (batch, {channels}, h, w); got {shape}. Latents from "
                "a pipeline are already unscaled; latents from a cache need dividing by scaling_factor first."
            )
        if not z.is_floating_point():
            raise ValueError(f"AutoencoderLite.decode expects float latents; got a {z.dtype} tensor.")
        self._check_dtype(z, "decode", "latents")

    # ------------------------------------------------------------------ encode

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and (x.shape[-1] > self.tile_sample_min_size or x.shape[-2] > self.tile_sample_min_size):
            if self.tile_sample_min_size % self.downsample_factor:
                raise ValueError(
                    f"tile_sample_min_size={self.tile_sample_min_size} must be a multiple of {self.downsample_factor} "
                    "so encoder tiles align with the latent grid."
                )
            return self._tiled(x, self.encoder, self.tile_sample_min_size, 1 / self.downsample_factor)
        return self.encoder(x)

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Encode images to a diagonal Gaussian posterior.

        Args:
            x (`torch.Tensor` of shape `(batch, in_channels, H, W)`): images in ``[-1, 1]``; ``H`` and ``W``
                multiples of ``2**wavelet_levels`` (8).
            return_dict (`bool`, defaults to `True`): return an ``AutoencoderKLOutput`` rather than a tuple.

        Returns:
            ``AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution)`` with mean and std shaped
            ``(batch, latent_channels, H/8, W/8)``, or ``(latent_dist,)``.
        """
        self._check_images(x)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(x_slice) for x_slice in x.split(1)])
        else:
            moments = self._encode(x)
        posterior = LazyDiagonalGaussian(moments)  # std and var only when read: no launches for mode()
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def tiled_encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode in overlapping tiles of ``tile_sample_min_size`` pixels, blended linearly across overlaps."""
        self._check_images(x)
        posterior = LazyDiagonalGaussian(
            self._tiled(x, self.encoder, self.tile_sample_min_size, 1 / self.downsample_factor)
        )
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    # ------------------------------------------------------------------ decode

    def _decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.decoder_type == "tiny":
            # TAESD-family decoders produce [0, 1]; diffusers VAEs return [-1, 1].
            return self.decoder(z).mul(2).sub(1)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and (z.shape[-1] > self.tile_latent_min_size or z.shape[-2] > self.tile_latent_min_size):
            return self._tiled(z, self._decode_latents, self.tile_latent_min_size, self.downsample_factor)
        return self._decode_latents(z)

    @apply_forward_hook
    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Decode latents to images.

        Args:
            z (`torch.Tensor` of shape `(batch, latent_channels, h, w)`): unscaled latents (divide diffusion
                latents by ``scaling_factor`` and add ``shift_factor`` first, as pipelines do).
            return_dict (`bool`, defaults to `True`): return a ``DecoderOutput`` rather than a tuple.
            generator (`torch.Generator`, *optional*): accepted for pipeline compatibility; decoding is
                deterministic.

        Returns:
            ``DecoderOutput(sample)`` with images ``(batch, out_channels, 8h, 8w)`` in about ``[-1, 1]``.
        """
        self._check_latents(z)
        if self.use_slicing and z.shape[0] > 1:
            decoded = torch.cat([self._decode(z_slice) for z_slice in z.split(1)])
        else:
            decoded = self._decode(z)
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    def tiled_decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Decode in overlapping latent tiles of ``tile_latent_min_size``, blended linearly across overlaps."""
        self._check_latents(z)
        decoded = self._tiled(z, self._decode_latents, self.tile_latent_min_size, self.downsample_factor)
        return DecoderOutput(sample=decoded) if return_dict else (decoded,)

    # ------------------------------------------------------------------ tiling

    def _tiled(self, x: torch.Tensor, fn, tile: int, scale: float) -> torch.Tensor:
        """Apply ``fn`` to overlapping ``tile`` x ``tile`` windows of ``x`` and blend the results.

        ``fn`` maps an input window to an output window ``scale`` times its size (1/8 encoding, 8 decoding).
        Every output pixel is the weighted mean of the windows covering it, with weights rising linearly across
        each overlap, so seams get no hard edges and the result does not depend on tile order.
        """
        height, width = x.shape[-2:]
        stride = max(int(tile * (1 - self.tile_overlap_factor)), 1)
        if scale < 1:  # encoder windows must start on the latent grid
            stride = max(stride // self.downsample_factor, 1) * self.downsample_factor
        rows, cols = _tile_starts(height, tile, stride), _tile_starts(width, tile, stride)
        out_h, out_w = round(height * scale), round(width * scale)
        output = weights = None
        for top in rows:
            for left in cols:
                window = x[:, :, top : top + tile, left : left + tile]
                result = fn(window)
                if output is None:
                    output = result.new_zeros(result.shape[0], result.shape[1], out_h, out_w)
                    weights = result.new_zeros(1, 1, out_h, out_w)
                ramp = _blend_mask(
                    result.shape[-2:],
                    overlap=(round((tile - stride) * scale),) * 2,
                    edges=(top > 0, top + tile < height, left > 0, left + tile < width),
                    device=result.device,
                    dtype=result.dtype,
                )
                o_top, o_left = round(top * scale), round(left * scale)
                region = (
                    slice(None),
                    slice(None),
                    slice(o_top, o_top + result.shape[-2]),
                    slice(o_left, o_left + result.shape[-1]),
                )
                output[region] += result * ramp
                weights[region] += ramp
        return output / weights

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode then decode ``sample`` (``(batch, in_channels, H, W)`` in ``[-1, 1]``).

        Args:
            sample_posterior: decode a posterior sample (drawn with ``generator``) instead of its mean.
        """
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        decoded = self.decode(z).sample
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)


_LATENT_SPACE_KEYS = ("latent_channels", "scaling_factor", "shift_factor", "latents_mean", "latents_std")


def _reject_teacher_conflicts(overrides: dict, teacher_keys: dict, source: str = "keyword argument") -> None:
    """Raise if ``overrides`` sets a key that :meth:`AutoencoderLite.from_autoencoder_kl` takes from the teacher."""
    for key, value in overrides.items():
        if key not in teacher_keys or _normalise(value) == _normalise(teacher_keys[key]):
            continue
        if key in _LATENT_SPACE_KEYS:
            why = "it defines the teacher's latent space, which the copied decoder decodes and the encoder must match"
        elif key == "force_upcast":
            why = "it records whether the teacher's decoder (copied unchanged) is safe to run in fp16"
        elif key == "use_smc":
            why = (
                "Self-Modulated Convolutions replace the GroupNorm+conv pairs whose weights are copied from the teacher"
            )
        else:
            why = "the teacher's decoder weights are copied unchanged and need its architecture"
        raise ValueError(
            f"from_autoencoder_kl: {source} {key}={value!r} conflicts with the teacher's {key}={teacher_keys[key]!r}; "
            f"{why}. Drop {key!r} (it is taken from the teacher), or build AutoencoderLite(...) directly and train "
            "its decoder."
        )


def _normalise(value):
    return tuple(_normalise(v) for v in value) if isinstance(value, (list, tuple)) else value


def _tiny_stage_layout(decoder: TinyDecoder) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    from .tiny_autoencoder import TinyBlock

    num_blocks, midblock_gn = [0], [False]
    for layer in list(decoder.layers)[3:-1]:
        if isinstance(layer, TinyBlock):
            num_blocks[-1] += 1
            midblock_gn[-1] = midblock_gn[-1] or layer.pool is not None
        elif isinstance(layer, nn.Upsample):
            num_blocks.append(0)
            midblock_gn.append(False)
    return tuple(num_blocks), tuple(midblock_gn)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # last window flush with the border: every pixel covered, no ragged tile
    return starts


def _blend_mask(shape, overlap, edges, device, dtype) -> torch.Tensor:
    """Separable weights: linear ramps (1/(n+1) .. n/(n+1)) over the overlap on each interior edge, 1 elsewhere."""
    height, width = shape
    (ov_h, ov_w), (top, bottom, left, right) = overlap, edges

    def ramp(length: int, ov: int, start: bool, end: bool) -> torch.Tensor:
        weights = torch.ones(length, device=device, dtype=dtype)
        ov = min(ov, length)
        if ov > 0:
            rising = torch.arange(1, ov + 1, device=device, dtype=dtype) / (ov + 1)
            if start:
                weights[:ov] = torch.minimum(weights[:ov], rising)
            if end:
                weights[-ov:] = torch.minimum(weights[-ov:], rising.flip(0))
        return weights

    return ramp(height, ov_h, top, bottom)[:, None] * ramp(width, ov_w, left, right)[None, :]


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _match_device_dtype(model: nn.Module, reference: nn.Module) -> nn.Module:
    parameter = next(reference.parameters())
    return cast_module(model, device=parameter.device, dtype=parameter.dtype)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _tuple_or_none(value):
    return tuple(value) if value is not None else None
