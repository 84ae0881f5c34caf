"""Frozen teacher VAEs for encoder distillation, behind one small interface.

A :class:`DistillationTeacher` wraps any VAE the student may learn from and speaks one convention:

- ``encode(images)`` takes images in ``[-1, 1]`` and returns the teacher's posterior ``(mean, logvar)``
  (``logvar`` is ``None`` for deterministic encoders such as TAESD), raw (unscaled) latents;
- ``decode(latents)`` maps raw latents back to images in ``[-1, 1]`` (differentiable in the latents, so the
  reconstruction losses can train the student through the frozen decoder);
- ``normalize_latents(z)`` maps raw latents to the units a diffusion model sees,
  ``(z - shift_factor) * scaling_factor``: latent losses and the reported latent MSE use these units, so loss
  weights mean the same thing for SD (scaling 0.18215), SDXL, SD3/FLUX (16 channels, shifted) and raw TAESD
  latents;
- ``make_student(encoder)`` builds the :class:`~diffusers_litevae.AutoencoderLite` that distillation trains: a
  fresh LiteVAE encoder with an exact copy of the teacher's decoder and latent-space config. It checks that the
  copy decodes bit-identically before returning it.

Supported teachers (:func:`load_teacher` picks the adapter from what it finds):

================== ===================================================================================
``autoencoder_kl``  diffusers ``AutoencoderKL`` (SD 1.x/2.x, SDXL, SD3/FLUX.1-style 16-channel), or any VAE
                    whose ``.decoder`` is diffusers' ``Decoder`` (``AutoencoderLite`` teachers too)
``autoencoder_tiny`` diffusers ``AutoencoderTiny`` (TAESD in diffusers format); deterministic ``.latents``
``taesd``           a folder with TAESD-family ``*_encoder.pth`` / ``*_decoder.pth`` (or ``.safetensors``)
                    checkpoints (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2); images ``[0, 1]``, raw latents
``diffusers_vae``   any other module with the diffusers VAE protocol (``encode(x).latent_dist`` or
                    ``.latents``, ``decode(z).sample``); usable as a teacher, but ``make_student`` needs a
                    decoder ``AutoencoderLite`` can carry (``Decoder``, ``DecoderTiny`` or ``TinyDecoder``)
================== ===================================================================================
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..models.autoencoder_lite import AutoencoderLite
from ..models.tiny_autoencoder import TinyDecoder, TinyEncoder
from ..models.utils import cast_module
from .errors import DistillationInputError

__all__ = [
    "TEACHER_TYPES",
    "DistillationTeacher",
    "DiffusersVAETeacher",
    "TinyCheckpointTeacher",
    "load_teacher",
    "tiny_decoder_from_decoder_tiny",
    "wrap_teacher",
]

TEACHER_TYPES = ("auto", "autoencoder_kl", "autoencoder_tiny", "taesd", "diffusers_vae")


class DistillationTeacher(nn.Module):
    """Base class of the teacher adapters; see the module docstring for the convention.

    Attributes:
        teacher_type: one of :data:`TEACHER_TYPES` (not ``"auto"``).
        name_or_path: where the teacher came from (recorded in ``distillation.json``).
        latent_channels: channels of the teacher's latents.
        scaling_factor: multiply (shifted) raw latents by it to get diffusion-model units.
        shift_factor: subtract from raw latents before scaling (0 when the teacher has none).
        has_logvar: whether ``encode`` returns a log-variance.
    """

    teacher_type: str = "diffusers_vae"

    def __init__(self, name_or_path: str, latent_channels: int, scaling_factor: float, shift_factor: float | None):
        super().__init__()
        self.name_or_path = str(name_or_path)
        self.latent_channels = int(latent_channels)
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor or 0.0)
        # Per-channel statistics some VAE configs carry (SDXL-style pipelines normalise with them).
        self.latents_mean: tuple[float, ...] | None = None
        self.latents_std: tuple[float, ...] | None = None
        self.has_logvar = False
        # Memory format the trainer feeds this teacher's inputs in (set with the weights' format).
        self.memory_format = torch.contiguous_format

    # -- the interface ------------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, 3, H, W)`` images in ``[-1, 1]`` -> ``(mean, logvar | None)``, each ``(B, C, H/8, W/8)``."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` raw latents -> ``(B, 3, 8h, 8w)`` images in about ``[-1, 1]``."""
        raise NotImplementedError

    def make_student(self, encoder: str | dict = "B") -> AutoencoderLite:
        """A fresh ``AutoencoderLite`` with LiteVAE encoder ``encoder`` (preset name or ``encoder_*`` config dict)
        and this teacher's decoder, copied exactly (in the teacher's current dtype: call before casting it).
        Returned in eval mode."""
        raise NotImplementedError

    # -- shared helpers -----------------------------------------------------------------------------------------

    @property
    def normalization(self):
        """The :class:`~diffusers_litevae.vae_io.LatentNormalization` of this teacher's latent space (the one
        definition of diffusion-model units, shared with the latent cache and ``LatentDataset``)."""
        from ..vae_io import LatentNormalization

        return LatentNormalization(self.scaling_factor, self.shift_factor, self.latents_mean, self.latents_std)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> diffusion-model units (see :attr:`normalization`)."""
        return self.normalization.normalize(latents)

    def describe(self) -> dict:
        """The ``teacher`` entry of ``distillation.json``."""
        return {
            "name_or_path": self.name_or_path,
            "type": self.teacher_type,
            "latent_channels": self.latent_channels,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "has_logvar": self.has_logvar,
        }

    def freeze(self) -> "DistillationTeacher":
        """Eval mode, no gradients for any parameter; returns ``self``."""
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "DistillationTeacher":
        # A teacher is frozen for good: accelerate / user code calling .train() must not switch it back.
        return super().train(False)

    def _check_student(self, student: AutoencoderLite) -> AutoencoderLite:
        """Raise unless ``student`` decodes a probe latent exactly like the teacher (the whole point of distilling).

        Both run in eval mode (train-mode kernels may round differently); the student is returned in eval mode,
        like a model from ``from_pretrained``.
        """
        student.eval()
        parameter = next(self.parameters())
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(1, self.latent_channels, 4, 4, generator=generator).to(parameter.device, parameter.dtype)
        with torch.no_grad():
            expected = self.decode(probe)
            got = student._decode_latents(probe)
        if expected.shape != got.shape or not torch.equal(expected, got):
            raise RuntimeError(
                f"the student built from teacher {self.name_or_path!r} does not decode bit-identically "
                "(max abs difference "
                f"{float((expected - got).abs().max()) if expected.shape == got.shape else 'shape'}); "
                "this teacher's decoder cannot be carried by AutoencoderLite."
            )
        return student


class DiffusersVAETeacher(DistillationTeacher):
    """A diffusers-protocol VAE (``AutoencoderKL``, ``AutoencoderTiny``, ``AutoencoderLite`` or similar).

    Args:
        vae: the module; ``vae.encode(x)`` returns an output with ``latent_dist`` (a
            ``DiagonalGaussianDistribution``) or ``latents`` / ``latent`` (deterministic), ``vae.decode(z)``
            returns an output with ``sample``; ``vae.config`` carries ``latent_channels``.
        name_or_path: recorded in ``distillation.json``.
        teacher_type: ``"autoencoder_kl"``, ``"autoencoder_tiny"`` or ``"diffusers_vae"``; inferred when ``None``.
    """

    def __init__(self, vae: nn.Module, name_or_path: str = "", teacher_type: str | None = None):
        config = getattr(vae, "config", None)
        latent_channels = getattr(config, "latent_channels", None)
        if (
            latent_channels is None
            or not callable(getattr(vae, "encode", None))
            or not callable(getattr(vae, "decode", None))
        ):
            raise DistillationInputError(
                f"teacher {name_or_path or type(vae).__name__!r} does not follow the diffusers VAE protocol "
                "(needs encode(), decode() and config.latent_channels)."
            )
        super().__init__(
            name_or_path or type(vae).__name__,
            latent_channels,
            getattr(config, "scaling_factor", 1.0) or 1.0,
            getattr(config, "shift_factor", None),
        )
        self.vae = vae
        from ..vae_io import LatentNormalization

        normalization = LatentNormalization.from_config(config)
        self.latents_mean, self.latents_std = normalization.latents_mean, normalization.latents_std
        self.teacher_type = teacher_type or _infer_type(vae)
        # Tiling/slicing change the teacher's numbers; distillation wants the plain network.
        for attribute in ("use_tiling", "use_slicing"):
            if hasattr(vae, attribute):
                setattr(vae, attribute, False)
        self.has_logvar = self.teacher_type != "autoencoder_tiny" and _has_posterior(vae)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        from ..vae_io import posterior_mean_logvar

        return posterior_mean_logvar(self.vae, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        output = self.vae.decode(latents)
        return output.sample if hasattr(output, "sample") else output[0]

    def make_student(self, encoder: str | dict = "B") -> AutoencoderLite:
        from diffusers.models.autoencoders.vae import Decoder, DecoderTiny

        decoder = getattr(self.vae, "decoder", None)
        config = self.vae.config
        if isinstance(decoder, Decoder):
            student = AutoencoderLite.from_autoencoder_kl(self.vae, encoder=encoder)
        elif isinstance(decoder, (DecoderTiny, TinyDecoder)):
            tiny = tiny_decoder_from_decoder_tiny(decoder) if isinstance(decoder, DecoderTiny) else decoder
            student = AutoencoderLite.from_tiny_decoder(
                tiny,
                encoder=encoder,
                scaling_factor=getattr(config, "scaling_factor", 1.0) or 1.0,
                shift_factor=getattr(config, "shift_factor", None),
                in_channels=getattr(config, "in_channels", 3),
            )
            student = cast_module(
                student, device=next(decoder.parameters()).device, dtype=next(decoder.parameters()).dtype
            )
        else:
            raise DistillationInputError(
                "AutoencoderLite can carry a diffusers Decoder or a TAESD-family decoder; "
                f"teacher {self.name_or_path!r} "
                f"has {type(decoder).__name__}, so no student can share its decoder."
            )
        return self._check_student(student)


class TinyCheckpointTeacher(DistillationTeacher):
    """A TAESD-family teacher from its original ``.pth`` checkpoints (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2).

    These networks take images in ``[0, 1]`` and produce raw, deterministic latents; the adapter converts from and
    to the diffusers ``[-1, 1]`` convention. The checkpoints carry no latent-space config, so ``scaling_factor``
    and ``shift_factor`` (what a diffusion model expects) are given by the user: 1.0 / 0.0 for raw latents.

    Args:
        encoder: the loaded :class:`TinyEncoder`.
        decoder: the loaded :class:`TinyDecoder`.
        name_or_path: recorded in ``distillation.json``.
        scaling_factor: latent scale for pipelines and for the latent losses.
        shift_factor: latent shift for pipelines and for the latent losses.
    """

    teacher_type = "taesd"

    def __init__(
        self,
        encoder: TinyEncoder,
        decoder: TinyDecoder,
        name_or_path: str = "",
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
    ):
        latent_channels = encoder.layers[-1].out_channels
        if decoder.layers[1].in_channels != latent_channels:
            raise DistillationInputError(
                f"TAESD-family teacher {name_or_path!r}: encoder makes {latent_channels} latent channels "
                "but the decoder "
                f"takes {decoder.layers[1].in_channels}; use an encoder/decoder pair from the same model."
            )
        super().__init__(name_or_path or "taesd", latent_channels, scaling_factor, shift_factor)
        self._shift_for_student = shift_factor
        self.tiny_encoder = encoder
        self.tiny_decoder = decoder

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.tiny_encoder(images.add(1).div(2)), None

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as AutoencoderLite._decode_latents for decoder_type="tiny" (bit-identical decode).
        return self.tiny_decoder(latents).mul(2).sub(1)

    def make_student(self, encoder: str | dict = "B") -> AutoencoderLite:
        student = AutoencoderLite.from_tiny_decoder(
            self.tiny_decoder,
            encoder=encoder,
            scaling_factor=self.scaling_factor,
            shift_factor=self._shift_for_student,
            in_channels=self.tiny_encoder.layers[0].in_channels,
        )
        return self._check_student(student)


# ----------------------------------------------------------------------------------------------------- loading


def wrap_teacher(vae: nn.Module, name_or_path: str = "", teacher_type: str | None = None) -> DistillationTeacher:
    """Wrap an already loaded VAE module as a frozen teacher (``DistillationTeacher`` instances pass through)."""
    if isinstance(vae, DistillationTeacher):
        return vae.freeze()
    return DiffusersVAETeacher(vae, name_or_path, teacher_type).freeze()


def load_teacher(
    name_or_path: str | os.PathLike,
    subfolder: str | None = None,
    teacher_type: str = "auto",
    revision: str | None = None,
    variant: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
) -> DistillationTeacher:
    """Load a frozen teacher from a local folder or a Hugging Face Hub id.

    Args:
        name_or_path: a folder (diffusers VAE with ``config.json``, a pipeline with ``--subfolder vae``, or
            TAESD-family ``*_encoder.pth`` + ``*_decoder.pth``) or a Hub repo id.
        subfolder: the VAE's subfolder inside a pipeline folder/repo (usually ``"vae"``).
        teacher_type: one of :data:`TEACHER_TYPES`; ``"auto"`` decides from the files.
        revision: Hub revision.
        variant: weights variant (e.g. ``"fp16"``) for diffusers folders.
        torch_dtype: dtype to load the weights in (keep float32 until the student is built).
        scaling_factor: override the latent scaling factor (TAESD-family checkpoints carry none: default 1.0).
        shift_factor: override the latent shift factor.

    Returns:
        A frozen :class:`DistillationTeacher` in eval mode.

    Raises:
        DistillationInputError: the path does not exist, holds no VAE this loader understands, or the Hub
            download failed (one line naming the problem and the fix).
    """
    from ..vae_io import TinyAutoencoder, VAELoadError, load_vae

    if teacher_type not in TEACHER_TYPES:
        raise DistillationInputError(
            f"unknown --teacher_type {teacher_type!r}; choose one of {', '.join(TEACHER_TYPES)}."
        )
    name = os.fspath(name_or_path)
    try:
        vae = load_vae(
            name,
            subfolder=subfolder,
            torch_dtype=torch_dtype,
            revision=revision,
            variant=variant,
            vae_class="TinyAutoencoder" if teacher_type == "taesd" else None,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
        )
    except VAELoadError as error:
        raise DistillationInputError(f"teacher {name!r}: {error}") from error
    if isinstance(vae, TinyAutoencoder):
        teacher = TinyCheckpointTeacher(vae.encoder, vae.decoder, name, vae.config.scaling_factor, shift_factor)
    elif teacher_type == "taesd":
        raise DistillationInputError(f"--teacher_type taesd, but {name!r} holds no *_encoder.pth/*_decoder.pth pair.")
    else:
        teacher = wrap_teacher(vae, name, _type_for_class(type(vae).__name__, teacher_type))
        if scaling_factor is not None:
            teacher.scaling_factor = float(scaling_factor)
        if shift_factor is not None:
            teacher.shift_factor = float(shift_factor)
    return teacher.freeze()


def _type_for_class(class_name: str, requested: str) -> str | None:
    if requested not in ("auto", "taesd"):
        return requested
    return {"AutoencoderKL": "autoencoder_kl", "AutoencoderTiny": "autoencoder_tiny"}.get(class_name)


def _infer_type(vae: nn.Module) -> str:
    from diffusers import AutoencoderKL, AutoencoderTiny

    if isinstance(vae, AutoencoderTiny):
        return "autoencoder_tiny"
    if isinstance(vae, AutoencoderKL):
        return "autoencoder_kl"
    return "diffusers_vae"


def _has_posterior(vae: nn.Module) -> bool:
    """Whether ``vae.encode`` returns a Gaussian posterior (probe on a tiny input in the VAE's own dtype)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    if isinstance(vae, (AutoencoderKL, AutoencoderLite)):
        return True
    if isinstance(vae, AutoencoderTiny):
        return False
    parameter = next(vae.parameters())
    channels = getattr(vae.config, "in_channels", 3)
    with torch.no_grad():
        output = vae.encode(torch.zeros(1, channels, 8, 8, device=parameter.device, dtype=parameter.dtype))
    distribution = getattr(output, "latent_dist", None)
    return distribution is not None and not getattr(distribution, "deterministic", False)


def tiny_decoder_from_decoder_tiny(decoder: nn.Module) -> TinyDecoder:
    """Convert diffusers' ``DecoderTiny`` (``AutoencoderTiny.decoder``) into an equivalent :class:`TinyDecoder`.

    ``DecoderTiny`` applies its soft clamp in ``forward`` while :class:`TinyDecoder` keeps it as layer 0, so layer
    ``i`` of ``DecoderTiny.layers`` is layer ``i + 1`` here; the ``[0, 1] -> [-1, 1]`` output rescaling moves to
    ``AutoencoderLite``. The result decodes bit-identically.

    Args:
        decoder: a ``diffusers.models.autoencoders.vae.DecoderTiny`` with one width, ReLU and nearest x2 upsampling.

    Returns:
        A :class:`TinyDecoder` on the same device and dtype.
    """
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    layers = list(decoder.layers)
    widths = {m.out_channels for m in layers[:-1] if isinstance(m, nn.Conv2d)}
    upsamples = [m for m in layers if isinstance(m, nn.Upsample)]
    blocks = [m for m in layers if isinstance(m, AutoencoderTinyBlock)]
    if len(widths) != 1 or any(m.scale_factor not in (2, 2.0) or m.mode != "nearest" for m in upsamples):
        raise DistillationInputError(
            "this AutoencoderTiny decoder has several widths or non-nearest x2 upsampling, which TinyDecoder cannot "
            "carry; only TAESD-layout decoders are supported."
        )
    if any(not isinstance(block.conv[1], nn.ReLU) for block in blocks) or not isinstance(layers[1], nn.ReLU):
        raise DistillationInputError(
            "this AutoencoderTiny decoder does not use ReLU; TinyDecoder only carries act_fn='relu'."
        )
    num_blocks = [0]
    for layer in layers[2:]:
        if isinstance(layer, AutoencoderTinyBlock):
            num_blocks[-1] += 1
        elif isinstance(layer, nn.Upsample):
            num_blocks.append(0)
    tiny = TinyDecoder(
        latent_channels=layers[0].in_channels,
        out_channels=layers[-1].out_channels,
        channels=widths.pop(),
        num_blocks=tuple(num_blocks),
        midblock_gn=(False,) * len(num_blocks),
    )
    shifted = {}
    for key, value in decoder.layers.state_dict().items():
        index, rest = key.split(".", 1)
        shifted[f"{int(index) + 1}.{rest}"] = value
    tiny.layers.load_state_dict(shifted, strict=True)
    parameter = next(decoder.parameters())
    return cast_module(tiny, device=parameter.device, dtype=parameter.dtype)
