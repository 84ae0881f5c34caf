"""Frozen teacher VAEs for encoder distillation, behind one small interface.

A :class:`DistillationTeacher` wraps any VAE the student may learn from and speaks one convention:

- ``encode(images)`` takes images in ``[-1, 1]`` and returns the teacher's posterior ``(mean, logvar)``
  (``logvar`` is ``None`` for deterministic encoders such as TAESD), raw (unscaled) latents;
- ``decode(latents)`` maps raw latents back to images in ``[-1, 1]`` (differentiable in the latents, so the
  reconstruction losses can train the student through the frozen decoder);
- ``normalize_latents(z)`` maps raw latents to the units a diffusion model sees,
  ``(z - shift_factor) * scaling_factor``, those of the latent losses and the reported latent MSE (so loss
  weights mean the same thing for every latent space);
- ``make_student(encoder)`` builds the model distillation trains: a fresh LiteVAE encoder with an exact copy of the
  teacher's decoder and latent-space config, checked to decode bit-identically.

Supported teachers (:data:`TEACHER_TYPES`; :func:`load_teacher` picks the adapter from what it finds): diffusers
``AutoencoderKL`` (or any VAE whose ``.decoder`` is diffusers' ``Decoder``), diffusers ``AutoencoderTiny``,
TAESD-family ``*_encoder.pth`` / ``*_decoder.pth`` folders, and any other module with the diffusers VAE protocol;
the table in ``docs/distillation.md`` details each.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..models.autoencoder_lite import AutoencoderLite
from ..models.autoencoder_lite_base import AutoencoderLiteBase
from ..models.autoencoder_lite_tiny import AutoencoderLiteTiny
from ..models.tiny_autoencoder import TinyAutoencoder, TinyDecoder
from .errors import TrainingInputError

__all__ = ["TEACHER_TYPES", "DistillationTeacher", "DiffusersVAETeacher", "load_teacher", "wrap_teacher"]

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

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, 3, H, W)`` images in ``[-1, 1]`` -> ``(mean, logvar | None)``, each ``(B, C, H/8, W/8)``."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` raw latents -> ``(B, 3, 8h, 8w)`` images in about ``[-1, 1]``."""
        raise NotImplementedError

    def make_student(self, encoder: str | dict = "B") -> AutoencoderLiteBase:
        """A fresh LiteVAE model with LiteVAE encoder ``encoder`` (preset name or ``encoder_*`` config dict)
        and this teacher's decoder, copied exactly (in the teacher's current dtype: call before casting it).
        Returned in eval mode."""
        raise NotImplementedError

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
        return self.requires_grad_(False)

    def train(self, mode: bool = True) -> "DistillationTeacher":
        # A teacher is frozen for good: accelerate / user code calling .train() must not switch it back.
        return super().train(False)

    def _check_student(self, student: AutoencoderLiteBase) -> AutoencoderLiteBase:
        """Raise unless ``student`` decodes a probe latent exactly like the teacher, both in eval mode (train-mode
        kernels may round differently); the student is returned in eval mode, like a model from ``from_pretrained``."""
        student.eval()
        parameter = next(self.parameters())
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(1, self.latent_channels, 4, 4, generator=generator).to(parameter.device, parameter.dtype)
        with torch.no_grad():
            expected = self.decode(probe)
            got = student._decode_latents(probe)
        if expected.shape != got.shape or not torch.equal(expected, got):
            difference = float((expected - got).abs().max()) if expected.shape == got.shape else "shape"
            raise RuntimeError(
                f"the student built from teacher {self.name_or_path!r} does not decode bit-identically (max abs "
                f"difference {difference}); this teacher's decoder cannot be carried by a LiteVAE model."
            )
        return student


class DiffusersVAETeacher(DistillationTeacher):
    """A diffusers-protocol VAE (``AutoencoderKL``, ``AutoencoderTiny``, a LiteVAE model, a TAESD-family
    :class:`~diffusers_litevae.models.TinyAutoencoder` or similar).

    Args:
        vae: the module: ``vae.encode(x)`` returns ``latent_dist`` or ``latents`` / ``latent`` (deterministic),
            ``vae.decode(z)`` returns ``sample``, ``vae.config`` carries ``latent_channels``.
        name_or_path: recorded in ``distillation.json``.
        teacher_type: one of :data:`TEACHER_TYPES` but ``"auto"``; inferred when ``None``.
    """

    def __init__(self, vae: nn.Module, name_or_path: str = "", teacher_type: str | None = None):
        config = getattr(vae, "config", None)
        latent_channels = getattr(config, "latent_channels", None)
        if latent_channels is None or not all(callable(getattr(vae, name, None)) for name in ("encode", "decode")):
            raise TrainingInputError(
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
        self.has_logvar = _has_posterior(vae)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        from ..vae_io import posterior_mean_logvar

        return posterior_mean_logvar(self.vae, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        output = self.vae.decode(latents)
        return output.sample if hasattr(output, "sample") else output[0]

    def make_student(self, encoder: str | dict = "B") -> AutoencoderLiteBase:
        from diffusers.models.autoencoders.vae import Decoder, DecoderTiny

        decoder = getattr(self.vae, "decoder", None)
        config = self.vae.config
        if isinstance(decoder, Decoder):
            student = AutoencoderLite.from_autoencoder_kl(self.vae, encoder=encoder)
        elif isinstance(decoder, DecoderTiny):  # AutoencoderTiny, or a module with its config and decoder
            try:
                student = AutoencoderLiteTiny.from_autoencoder_tiny(self.vae, encoder=encoder)
            except ValueError as error:
                raise TrainingInputError(f"teacher {self.name_or_path!r}: {error}") from error
        elif isinstance(decoder, TinyDecoder):
            student = AutoencoderLiteTiny.from_tiny_decoder(
                decoder,
                encoder=encoder,
                scaling_factor=getattr(config, "scaling_factor", 1.0) or 1.0,
                shift_factor=getattr(config, "shift_factor", None),
                in_channels=getattr(config, "in_channels", 3),
            )
        else:
            raise TrainingInputError(
                "a LiteVAE model can carry a diffusers Decoder or a TAESD-family decoder; "
                f"teacher {self.name_or_path!r} has {type(decoder).__name__}, so no student can share its decoder."
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
    """Load a frozen :class:`DistillationTeacher` (in eval mode) from a local folder or a Hugging Face Hub id.

    Args:
        name_or_path: a folder (diffusers VAE with ``config.json``, a pipeline with ``--subfolder vae``, or
            TAESD-family ``*_encoder.pth`` + ``*_decoder.pth``) or a Hub repo id.
        subfolder: the VAE's subfolder inside a pipeline folder/repo (usually ``"vae"``).
        teacher_type: one of :data:`TEACHER_TYPES`; ``"auto"`` decides from the files.
        revision, variant: Hub revision, weights variant (e.g. ``"fp16"``) of diffusers folders.
        torch_dtype: dtype to load the weights in (keep float32 until the student is built).
        scaling_factor, shift_factor: override the latent factors (TAESD-family checkpoints carry none: 1.0, 0).

    Raises:
        TrainingInputError: the path does not exist, holds no VAE this loader understands, or the Hub
            download failed (one line naming the problem and the fix).
    """
    from ..vae_io import VAELoadError, load_vae

    if teacher_type not in TEACHER_TYPES:
        raise TrainingInputError(f"unknown --teacher_type {teacher_type!r}; choose one of {', '.join(TEACHER_TYPES)}.")
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
        raise TrainingInputError(f"teacher {name!r}: {error}") from error
    if teacher_type == "taesd" and not isinstance(vae, TinyAutoencoder):
        raise TrainingInputError(f"--teacher_type taesd, but {name!r} holds no *_encoder.pth/*_decoder.pth pair.")
    # "auto" and "taesd" (checked above): the type of the loaded class.
    teacher = wrap_teacher(vae, name, None if teacher_type in ("auto", "taesd") else teacher_type)
    if not isinstance(vae, TinyAutoencoder):  # a TAESD-family pair was given the factors when loaded
        if scaling_factor is not None:
            teacher.scaling_factor = float(scaling_factor)
        if shift_factor is not None:
            teacher.shift_factor = float(shift_factor)
    return teacher


def _infer_type(vae: nn.Module) -> str:
    from diffusers import AutoencoderKL, AutoencoderTiny

    types = ((AutoencoderTiny, "autoencoder_tiny"), (AutoencoderKL, "autoencoder_kl"), (TinyAutoencoder, "taesd"))
    return next((name for cls, name in types if isinstance(vae, cls)), "diffusers_vae")


def _has_posterior(vae: nn.Module) -> bool:
    """Whether ``vae.encode`` returns a Gaussian posterior (probe on a tiny input in the VAE's own dtype)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    if isinstance(vae, (AutoencoderKL, AutoencoderLiteBase)):
        return True
    if isinstance(vae, (AutoencoderTiny, TinyAutoencoder)):
        return False
    parameter = next(vae.parameters())
    channels = getattr(vae.config, "in_channels", 3)
    with torch.no_grad():
        output = vae.encode(torch.zeros(1, channels, 8, 8, device=parameter.device, dtype=parameter.dtype))
    distribution = getattr(output, "latent_dist", None)
    return distribution is not None and not getattr(distribution, "deterministic", False)
