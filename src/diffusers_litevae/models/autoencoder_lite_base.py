"""What every LiteVAE autoencoder shares: the LiteVAE encoder, diffusers' VAE contract around it, and loading.

A LiteVAE encoder (paper section 4.1) is paired with a decoder from another family, one class per pairing (as
diffusers keeps ``AutoencoderKL`` and ``AutoencoderTiny`` apart): :class:`~diffusers_litevae.AutoencoderLite`
(Stable-Diffusion-layout decoder) and :class:`~diffusers_litevae.AutoencoderLiteTiny` (TAESD-family decoder).
A subclass builds its decoder in ``__init__`` and implements ``_decode_latents`` (raw latents -> images in
``[-1, 1]``); the encoder, input checks, ``encode`` / ``decode`` with slicing and tiling, ``forward`` and
``from_pretrained`` are here.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..hub_ids import hub_offline_message
from ..runtime import cast_module, raise_recompile_limit
from .litevae_encoder import LiteVAEEncoder, encoder_config
from .utils import LazyDiagonalGaussian

__all__ = ["AutoencoderLiteBase"]

_HUB_KWARGS = ("subfolder", "cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")


class AutoencoderLiteBase(ModelMixin, AutoencoderMixin, ConfigMixin, PeftAdapterMixin):
    r"""Base class of the LiteVAE autoencoders; not a model by itself (it builds no decoder).

    Subclasses take the config keys :meth:`_build_encoder` reads in their ``@register_to_config`` ``__init__``:
    ``in_channels``, ``latent_channels``, ``wavelet_levels``, ``encoder_*`` and ``sample_size`` (documented on
    :class:`~diffusers_litevae.AutoencoderLite`).

    ``PeftAdapterMixin`` gives ``add_adapter`` / ``set_adapters`` / ``disable_adapters`` (LoRA on the
    convolutions; needs ``peft``). ``FromOriginalModelMixin`` (``from_single_file``) is not mixed in: it converts
    the original single-file checkpoints of diffusers' own classes, and LiteVAE has no such original format.
    """

    _supports_gradient_checkpointing = True
    # Block-level group offloading: each of these submodules gets its own groups, onloaded by its own forward
    # (else all would share the top-level group only ``forward`` onloads, and pipelines call ``encode``/``decode``).
    # diffusers skips names that are not children (``post_quant_conv`` exists only where the decoder has one).
    _group_offload_block_modules = ["encoder", "post_quant_conv", "decoder"]
    # Regional compilation (``vae.compile_repeated_blocks()``): one graph per block shape, not per model and input
    # size. The wavelet levels already show the ResBlocks several sizes, so new bucket sizes rarely recompile.
    _repeated_blocks = ["LiteVAEResBlock"]

    def compile_repeated_blocks(self, *args, **kwargs):
        """diffusers' ``ModelMixin.compile_repeated_blocks`` (arguments go to ``torch.compile``), with dynamo's
        recompile limit raised first: every ``LiteVAEResBlock`` width shares one ``forward`` code object, and the
        default of 8 graphs per code object would leave most blocks eager."""
        raise_recompile_limit()
        return super().compile_repeated_blocks(*args, **kwargs)

    def _build_encoder(self, decoder_factor: int) -> None:
        """Check the encoder's factor against the decoder's (``decoder_factor``), then build ``self.encoder`` and the
        tiling state from the config (``@register_to_config`` records the ``__init__`` arguments before it runs)."""
        config = self.config
        wavelet_levels = config.wavelet_levels
        if wavelet_levels < 1:
            raise ValueError(
                f"LiteVAE's encoder needs at least one wavelet level (downsampling factor 2**wavelet_levels >= 2); "
                f"got wavelet_levels={wavelet_levels} (Stable Diffusion VAEs: 3, factor 8)."
            )
        if 2**wavelet_levels != decoder_factor:
            raise ValueError(
                f"the encoder downsamples by 2**wavelet_levels = {2**wavelet_levels} but the decoder upsamples by "
                f"{decoder_factor}; set wavelet_levels={decoder_factor.bit_length() - 1}."
            )
        self.encoder = LiteVAEEncoder(
            in_channels=config.in_channels,
            latent_channels=config.latent_channels,
            wavelet_levels=wavelet_levels,
            feature_channels=config.encoder_feature_channels,
            feature_channel_mults=tuple(config.encoder_feature_channel_mults),
            aggregation_channels=config.encoder_aggregation_channels,
            aggregation_channel_mults=tuple(config.encoder_aggregation_channel_mults),
            layers_per_block=config.encoder_layers_per_block,
            norm_num_groups=config.encoder_norm_num_groups,
            double_z=True,
        )
        self.use_slicing = False
        self.use_tiling = False
        # Tiling: tiles of `tile_sample_min_size` pixels overlapping by `tile_overlap_factor`, blended linearly.
        self.tile_sample_min_size = int(config.sample_size)
        self.tile_latent_min_size = int(config.sample_size) // decoder_factor
        self.tile_overlap_factor = 0.25

    # ------------------------------------------------------------------ constructors and loading

    @classmethod
    def from_preset(cls, preset: str = "B", **kwargs):
        """A randomly initialised model with LiteVAE encoder scale ``preset`` (``"S"``, ``"B"``, ``"M"``, ``"L"``).

        Other keyword arguments are config keys (e.g. ``latent_channels=16``).
        """
        return cls(**{**encoder_config(preset), **kwargs})

    @classmethod
    def _legacy_config(cls, config: dict) -> dict:
        """``config`` in this class's format. Subclasses translate folders saved by earlier versions here."""
        return config

    @staticmethod
    def _saved_class_name(config: dict) -> str | None:
        """The class a saved ``config.json`` describes. In version 0.1 both decoders were one class,
        ``AutoencoderLite``, switched by a ``decoder_type`` key; ``"tiny"`` folders are ``AutoencoderLiteTiny``."""
        if config.get("_class_name") == "AutoencoderLite" and config.get("decoder_type") == "tiny":
            return "AutoencoderLiteTiny"
        return config.get("_class_name")

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # diffusers' ``from_config`` / ``from_pretrained`` go through here: translating first means every path
        # loads earlier folders, and keys of another format are neither warned about nor carried into the config.
        return super().extract_init_dict(cls._legacy_config(dict(config_dict)), **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved model (local folder or Hub id); see ``ModelMixin.from_pretrained``.

        Raises a ``ValueError`` when the folder's ``config.json`` names another class (diffusers would load an
        ``AutoencoderKL`` with a random encoder and only a warning). When diffusers' loader fails (typically weights
        that do not fit an edited ``config.json`` or overridden architecture keys), its error is re-raised as the
        same type with the folder and the likely fix, chained to the original, which names the mismatching weight.
        """
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        try:
            config = cls.load_config(pretrained_model_name_or_path, **hub_kwargs)
        except OSError as error:  # a Hub id while HF_HUB_OFFLINE is set: say so, not "no file named config.json"
            offline = hub_offline_message(pretrained_model_name_or_path)
            if offline is None:
                raise
            raise OSError(offline) from error
        saved_class = cls._saved_class_name(config)
        if saved_class and saved_class != cls.__name__:
            loader = cls._loader_for(saved_class)
            if loader is not None:
                return loader.from_pretrained(pretrained_model_name_or_path, **kwargs)
            raise ValueError(_wrong_class_message(cls.__name__, saved_class, pretrained_model_name_or_path))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (ValueError, RuntimeError) as error:
            overridden = sorted(set(kwargs) & set(inspect.signature(cls.__init__).parameters) - {"self"})
            hint = (
                f"the config overrides {overridden} change the architecture, so the saved weights may not fit; "
                "drop them to load with the config saved beside the weights"
                if overridden
                else "if config.json was edited, it may describe a different architecture than the saved weights; "
                "restore it or re-save the model with save_pretrained"
            )
            raise type(error)(
                f"{cls.__name__}.from_pretrained could not load {pretrained_model_name_or_path!r} (diffusers' "
                f"error above): {hint}."
            ) from error

    @classmethod
    def _loader_for(cls, saved_class: str):
        """The class that loads a folder of ``saved_class`` when ``cls.from_pretrained`` is called on it, or
        ``None`` to refuse it. Only ``AutoencoderLite``, the package's documented entry point, loads both."""
        return None

    # ------------------------------------------------------------------ input checks

    @property
    def downsample_factor(self) -> int:
        return 2**self.config.wavelet_levels

    def _check_images(self, x: torch.Tensor) -> None:
        name, channels, factor = type(self).__name__, self.config.in_channels, self.downsample_factor
        expected = f"(batch, {channels}, H, W) with H and W multiples of {factor}, values in [-1, 1]"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}.encode expects a torch.Tensor shaped {expected}, got {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(f"{name}.encode expects a 4D tensor {expected}; got shape {tuple(x.shape)}.")
        if x.shape[1] != channels:
            raise ValueError(
                f"{name}.encode expects {channels} input channels {expected}; got {x.shape[1]} "
                f"(shape {tuple(x.shape)}). Convert images to RGB (and channels-first) before encoding."
            )
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"{name}.encode expects {expected}; got H x W = {x.shape[2]} x {x.shape[3]}. Resize or crop "
                f"to a multiple of {factor}, e.g. {x.shape[2] // factor * factor} x {x.shape[3] // factor * factor}."
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{name}.encode expects float images in [-1, 1]; got a {x.dtype} tensor (pixels in 0-255?). "
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
            f"{type(self).__name__}.{method} got {what} of dtype {tensor.dtype}, but the model's weights are {dtype}; "
            f"cast them with .to(vae.dtype) or load the model with torch_dtype={dtype}."
        )

    def _check_latents(self, z: torch.Tensor) -> None:
        name, channels = type(self).__name__, self.config.latent_channels
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != channels:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"{name}.decode expects latents shaped (batch, {channels}, h, w); got {shape}. Latents from "
                "a pipeline are already unscaled; latents from a cache need dividing by scaling_factor first."
            )
        if not z.is_floating_point():
            raise ValueError(f"{name}.decode expects float latents; got a {z.dtype} tensor.")
        self._check_dtype(z, "decode", "latents")

    # ------------------------------------------------------------------ encode

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and (x.shape[-1] > self.tile_sample_min_size or x.shape[-2] > self.tile_sample_min_size):
            return self._encode_tiles(x)
        return self.encoder(x)

    def _encode_tiles(self, x: torch.Tensor) -> torch.Tensor:
        if self.tile_sample_min_size % self.downsample_factor:
            raise ValueError(
                f"tile_sample_min_size={self.tile_sample_min_size} must be a multiple of {self.downsample_factor} "
                "so encoder tiles align with the latent grid."
            )
        return self._tiled(x, self.encoder, self.tile_sample_min_size, 1 / self.downsample_factor)

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
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def tiled_encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode in overlapping tiles of ``tile_sample_min_size`` pixels, blended linearly across overlaps."""
        self._check_images(x)
        posterior = LazyDiagonalGaussian(self._encode_tiles(x))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    # ------------------------------------------------------------------ decode

    def _decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_channels, h, w)`` raw latents -> ``(B, out_channels, 8h, 8w)`` images in about ``[-1, 1]``."""
        raise NotImplementedError(
            f"{type(self).__name__} builds no decoder; use AutoencoderLite or AutoencoderLiteTiny."
        )

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
        return DecoderOutput(sample=decoded) if return_dict else (decoded,)

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
                region = (..., slice(o_top, o_top + result.shape[-2]), slice(o_left, o_left + result.shape[-1]))
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
        return DecoderOutput(sample=decoded) if return_dict else (decoded,)


def _wrong_class_message(cls_name: str, saved_class: str, where) -> str:
    if saved_class in ("AutoencoderLite", "AutoencoderLiteTiny"):
        return (
            f"{where!r} holds an {saved_class} (its config.json '_class_name'), not an {cls_name}: load it with "
            f"{saved_class}.from_pretrained(...) (AutoencoderLite.from_pretrained loads both)."
        )
    return (
        f"{where!r} holds a model of class {saved_class} (its config.json '_class_name'), not an {cls_name}. To give "
        f"it a LiteVAE encoder, load it with diffusers.{saved_class}.from_pretrained(...) and call "
        "AutoencoderLite.from_autoencoder_kl(vae, encoder='B') (an AutoencoderKL) or "
        "AutoencoderLiteTiny.from_autoencoder_tiny(vae, encoder='B') (an AutoencoderTiny), then distil the encoder."
    )


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


def match_device_dtype(model: nn.Module, reference: nn.Module) -> nn.Module:
    """``model`` moved to the device and dtype of ``reference``'s first parameter (diffusers' float32 warning off)."""
    parameter = next(reference.parameters())
    return cast_module(model, device=parameter.device, dtype=parameter.dtype)
