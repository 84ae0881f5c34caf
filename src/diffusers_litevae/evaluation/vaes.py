"""VAEs under evaluation, loaded with the loader every command shares and wrapped in a :class:`ReconstructionModel`
so the evaluation treats them alike: images in ``[0, 1]``, deterministic latents (the posterior mode),
reconstructions in ``[0, 1]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..models.tiny_autoencoder import signed_to_unit, unit_to_signed
from ..runtime import cast_module
from .settings import EvaluationInputError

__all__ = ["SUPPORTED_CLASSES", "ReconstructionModel", "load_reconstruction_model", "parse_vae_spec"]

SUPPORTED_CLASSES = ("AutoencoderLite", "AutoencoderLiteTiny", "AutoencoderKL", "AutoencoderTiny")
TINY_PAIR_CLASS = "TinyEncoder+TinyDecoder"


class ReconstructionModel:
    """One VAE seen through a common interface for evaluation.

    Args:
        module: a diffusers VAE or a ``(TinyEncoder, TinyDecoder)`` pair.
        name_or_path: where it came from (folder, Hub id), for the report.
        class_name: model class for the report; inferred from ``module`` when omitted.
    """

    def __init__(
        self, module: nn.Module | tuple[nn.Module, nn.Module], name_or_path: str = "", class_name: str | None = None
    ):
        if isinstance(module, (tuple, list)):
            if len(module) != 2 or not all(isinstance(part, nn.Module) for part in module):
                raise TypeError("a TAESD-family model is given as a (TinyEncoder, TinyDecoder) pair of nn.Modules.")
            from ..models.tiny_autoencoder import TinyAutoencoder

            # One code path for every model: the pair behind the diffusers VAE protocol.
            self.vae = TinyAutoencoder(*module, name_or_path=name_or_path)
            self.class_name = class_name or TINY_PAIR_CLASS
        elif isinstance(module, nn.Module) and hasattr(module, "encode") and hasattr(module, "decode"):
            self.vae = module
            self.class_name = class_name or type(module).__name__
        else:
            raise TypeError(
                f"cannot evaluate a {type(module).__name__}: pass a diffusers VAE (AutoencoderLite, AutoencoderKL, "
                "AutoencoderTiny), a (TinyEncoder, TinyDecoder) pair, or a folder / Hub id."
            )
        self.name_or_path = name_or_path or getattr(getattr(self.vae, "config", None), "_name_or_path", "") or ""

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "ReconstructionModel":
        cast_module(self.vae, device=device, dtype=dtype).eval().requires_grad_(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def parameter_counts(self) -> tuple[int, int]:
        """``(encoder parameters, decoder parameters)``; ``quant_conv`` counts as encoder,
        ``post_quant_conv`` as decoder."""
        encoder = decoder = 0
        for name, parameter in self.vae.named_parameters():
            if name.startswith(("encoder.", "quant_conv.")):
                encoder += parameter.numel()
            elif name.startswith(("decoder.", "post_quant_conv.")):
                decoder += parameter.numel()
        return encoder, decoder

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> latents ``(B, c, H/8, W/8)`` (posterior mode; unscaled)."""
        images = images.to(self.device, self.dtype)
        from ..vae_io import posterior_mean_logvar

        return posterior_mean_logvar(self.vae, unit_to_signed(images))[0]

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents from :meth:`encode` -> images ``(B, 3, H, W)`` clamped to ``[0, 1]``."""
        return signed_to_unit(self.vae.decode(latents).sample).clamp(0, 1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Encode and decode: ``(B, 3, H, W)`` in ``[0, 1]`` -> reconstructions in ``[0, 1]`` (float32, on CPU)."""
        return self.decode(self.encode(images)).float().cpu()


def parse_vae_spec(spec: str) -> tuple[str, str | None]:
    """``"PATH_OR_ID[:LABEL]"`` -> ``(path_or_id, label or None)``: the label follows the last ``:`` when that part
    holds no path separator (a Windows drive letter ``C:\\...`` is not mistaken for a label)."""
    if ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if head and tail and "/" not in tail and "\\" not in tail and not (len(head) == 1 and head.isalpha()):
            return head, tail
    return spec, None


def default_label(name_or_path: str) -> str:
    """A short label for a model: the folder name (or ``owner/name`` for a Hub id)."""
    path = Path(name_or_path)
    if path.exists():
        return path.resolve().name
    return name_or_path.rstrip("/")


def load_reconstruction_model(
    name_or_path: str,
    subfolder: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ReconstructionModel:
    """A model as ``litevae eval --vae`` (without ``:LABEL``) and ``--vae_subfolder`` take it, loaded with
    :func:`diffusers_litevae.vae_io.load_vae`, as a :class:`ReconstructionModel` on ``device`` in ``dtype``."""
    from ..models.tiny_autoencoder import TinyAutoencoder
    from ..vae_io import load_vae, resolve_vae_location

    vae = load_vae(os.fspath(name_or_path), subfolder=subfolder)
    name_or_path = resolve_vae_location(name_or_path)  # a bundled model's name -> its folder, for the report
    if type(vae).__name__ not in SUPPORTED_CLASSES and not isinstance(vae, TinyAutoencoder):
        raise EvaluationInputError(
            f"{name_or_path!r} is a {type(vae).__name__}; `litevae eval` supports {', '.join(SUPPORTED_CLASSES)} "
            "(config.json `_class_name`) and TAESD-family checkpoint pairs."
        )
    path = Path(name_or_path)
    where = getattr(vae, "name_or_path", "") or str(path.resolve() if path.exists() else name_or_path)
    if isinstance(vae, TinyAutoencoder):
        return ReconstructionModel(vae, where, TINY_PAIR_CLASS).to(device, dtype)
    if path.exists():
        folder = path / subfolder if subfolder else path
        where = str((folder if (folder / "config.json").is_file() else folder / "vae").resolve())
    return ReconstructionModel(vae, where).to(device, dtype)


def as_reconstruction_model(
    model, device: str | torch.device, dtype: torch.dtype, subfolder: str | None = None
) -> ReconstructionModel:
    """A model as :func:`~diffusers_litevae.evaluation.evaluate_vaes` takes it, as a :class:`ReconstructionModel` on
    ``device``/``dtype``."""
    if isinstance(model, ReconstructionModel):
        return model.to(device, dtype)
    if isinstance(model, (str, os.PathLike)):
        return load_reconstruction_model(os.fspath(model), subfolder=subfolder, device=device, dtype=dtype)
    return ReconstructionModel(model).to(device, dtype)
