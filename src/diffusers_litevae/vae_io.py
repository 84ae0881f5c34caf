"""The one place VAEs are loaded, encoded and their latents normalised: used by distill, cache-latents and eval.

- :func:`load_vae` turns what a user types after ``--vae`` / ``--teacher`` into a module with the diffusers VAE
  protocol (``encode(x)`` in ``[-1, 1]`` -> ``latent_dist`` or ``latents``; ``decode(z).sample`` in ``[-1, 1]``).
- :func:`posterior_moments` reads any supported VAE's posterior as float32 ``(mean, std)``.
- :class:`LatentNormalization` is the single definition of "diffusion-model units".
- :func:`vae_identity` names a VAE's latent space, so a latent cache made with one VAE is never read as another's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .hub_ids import hub_offline_message, is_owner_repo_id

__all__ = [
    "LatentNormalization",
    "VAELoadError",
    "find_tiny_pair",
    "load_vae",
    "posterior_moments",
    "resolve_vae_class",
    "resolve_vae_location",
    "vae_identity",
]

_TINY_SUFFIXES = (".pth", ".pt", ".safetensors")


class VAELoadError(ValueError):
    """A VAE could not be loaded from what the user gave; the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------- TAESD-family pair


def find_tiny_pair(folder: str | os.PathLike) -> tuple[Path, Path] | None:
    """The ``(*encoder, *decoder)`` checkpoint files (``.pth``, ``.pt`` or ``.safetensors``, e.g.
    ``taef2_encoder.pth``) of a TAESD-family folder, or ``None`` if it holds none.

    Raises:
        VAELoadError: the folder holds such files but not exactly one encoder and one decoder.
    """
    folder = Path(folder)

    def pick(role: str) -> list[Path]:
        return sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix in _TINY_SUFFIXES and p.stem.lower().endswith(role)
        )

    encoders, decoders = pick("encoder"), pick("decoder")
    if not encoders and not decoders:
        return None
    if len(encoders) != 1 or len(decoders) != 1:
        raise VAELoadError(
            f"{str(folder)!r} must hold exactly one TAESD-family *encoder and one *decoder checkpoint "
            f"(.pth/.pt/.safetensors); found {[p.name for p in encoders + decoders]}. Keep one pair per folder."
        )
    return encoders[0], decoders[0]


def _load_tiny_pair(folder: Path, name: str, scaling_factor: float | None, shift_factor: float | None) -> nn.Module:
    from .models.tiny_autoencoder import TinyAutoencoder, load_tiny_decoder, load_tiny_encoder

    encoder_file, decoder_file = find_tiny_pair(folder)
    try:
        encoder, decoder = load_tiny_encoder(encoder_file), load_tiny_decoder(decoder_file)
        # Checkpoints stored in fp16 (small downloads) compute in fp32 unless the caller casts them.
        return TinyAutoencoder(
            encoder.float(),
            decoder.float(),
            str(folder.resolve()),
            1.0 if scaling_factor is None else scaling_factor,
            shift_factor,
        )
    except (ValueError, FileNotFoundError) as error:
        raise VAELoadError(f"could not read the TAESD-family pair in {name!r}: {error}") from error


# --------------------------------------------------------------------------------------------- loading


def resolve_vae_class(class_name: str):
    """The class for a config's ``_class_name``: ``AutoencoderLite``, ``AutoencoderLiteTiny`` or any diffusers
    autoencoder."""
    from . import models

    if class_name in ("AutoencoderLite", "AutoencoderLiteTiny"):
        return getattr(models, class_name)
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "encode") or not hasattr(cls, "from_pretrained"):
        raise VAELoadError(
            f"unknown VAE class {class_name!r}: use AutoencoderLite, AutoencoderLiteTiny or a diffusers autoencoder "
            "such as AutoencoderKL or AutoencoderTiny (or a folder with a TAESD-family *encoder/*decoder checkpoint "
            "pair)."
        )
    return cls


def resolve_vae_location(name_or_path: str | os.PathLike) -> str:
    """Where a ``--vae`` / ``--teacher`` value points: a bundled model's folder for its name (``"taef2"``), unless
    a path of that name exists; anything else (a path, a Hub id) unchanged."""
    from .pretrained import list_pretrained, pretrained_path

    name = os.fspath(name_or_path)
    if not Path(name).expanduser().exists() and name in list_pretrained():
        return pretrained_path(name)
    return name


def load_vae(
    name_or_path: str | os.PathLike,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | None = None,
    revision: str | None = None,
    variant: str | None = None,
    vae_class: str | None = None,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
) -> nn.Module:
    """Load a VAE from a folder or the Hub.

    Args:
        name_or_path: a diffusers VAE folder (class from ``config.json``'s ``_class_name``), a saved pipeline folder
            (its ``vae/`` is used), a folder with a TAESD-family ``*encoder`` + ``*decoder`` checkpoint pair (loads
            as a :class:`~diffusers_litevae.models.TinyAutoencoder`), a bundled model's name
            (:func:`~diffusers_litevae.list_pretrained`), or a Hub repo id (``owner/name``).
        subfolder: the VAE's subfolder in a pipeline folder or repo (usually ``"vae"``).
        torch_dtype: weights dtype (default: as stored; TAESD-family pairs load in float32).
        revision, variant: as in ``from_pretrained``.
        vae_class: class name overriding ``config.json``'s ``_class_name``.
        scaling_factor, shift_factor: latent-space factors for TAESD-family pairs, whose checkpoints carry none.

    Returns:
        The VAE in eval mode with gradients off.

    Raises:
        VAELoadError: the path does not exist, holds no VAE, or the Hub download failed (one line with the fix).
    """
    name = os.fspath(name_or_path)
    path = Path(resolve_vae_location(name)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise VAELoadError(
                f"{name!r} is a file; "
                "pass the folder that holds the VAE (config.json + weights, or a TAESD-family pair)."
            )
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise VAELoadError(f"subfolder {subfolder!r} not found in {name!r}.")
        if not (folder / "config.json").is_file() and not subfolder and (path / "vae" / "config.json").is_file():
            folder = path / "vae"  # a saved pipeline: use its VAE
        if (folder / "config.json").is_file() and vae_class != "TinyAutoencoder":
            class_name = vae_class or _read_class_name(folder / "config.json")
            vae = _from_pretrained(
                resolve_vae_class(class_name), str(folder), name, torch_dtype=torch_dtype, variant=variant
            )
        elif find_tiny_pair(folder) is not None:
            vae = _load_tiny_pair(folder, name, scaling_factor, shift_factor)
            if torch_dtype is not None:
                vae = vae.to(torch_dtype)
        elif (folder / "model_index.json").is_file():
            raise VAELoadError(f"{name!r} is a pipeline folder without a vae/ subfolder; pass the VAE's subfolder.")
        else:
            raise VAELoadError(
                f"{str(folder)!r} is not a VAE folder: it has no config.json (a diffusers VAE saved with "
                "save_pretrained) and no *encoder + *decoder checkpoint pair (a TAESD-family model)."
            )
    elif name.startswith((".", "/", "~")) or not is_owner_repo_id(name):
        from .pretrained import list_pretrained

        raise VAELoadError(
            f"{name!r} does not exist: pass a bundled model ({', '.join(list_pretrained())}), an existing VAE folder "
            "or a Hugging Face Hub repo id (owner/name)."
        )
    else:
        vae = _load_from_hub(name, subfolder, torch_dtype, revision, variant, vae_class)
    return vae.eval().requires_grad_(False)


def _read_class_name(config_file: Path) -> str:
    try:
        return json.loads(config_file.read_text()).get("_class_name") or "AutoencoderKL"
    except (OSError, json.JSONDecodeError) as error:
        raise VAELoadError(f"could not read {str(config_file)!r}: {error}") from error


def _from_pretrained(cls, where: str, name: str, **kwargs) -> nn.Module:
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    try:
        return cls.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as error:  # diffusers' errors for broken/mismatched folders and failed downloads
        offline = hub_offline_message(where) if isinstance(error, OSError) else None
        if offline:
            raise VAELoadError(offline) from error
        first_line = " ".join(str(error).split())[:300]
        raise VAELoadError(
            f"could not load {name!r} as {cls.__name__}: {type(error).__name__}: {first_line}"
        ) from error


def _load_from_hub(repo_id, subfolder, torch_dtype, revision, variant, vae_class) -> nn.Module:
    if vae_class is None:
        from huggingface_hub import hf_hub_download

        try:
            config_file = hf_hub_download(repo_id, "config.json", subfolder=subfolder, revision=revision)
        except Exception as error:  # offline, not found, gated: huggingface_hub raises many kinds
            offline = hub_offline_message(repo_id)
            if offline:
                raise VAELoadError(offline) from error
            hint = " (a pipeline repo needs its VAE subfolder, usually 'vae')" if not subfolder else ""
            raise VAELoadError(
                f"could not fetch config.json of Hugging Face Hub repo {repo_id!r}{hint}: {type(error).__name__}: "
                f"{' '.join(str(error).split())[:200]}. Check the id, your network and HF_HUB_OFFLINE."
            ) from error
        vae_class = _read_class_name(Path(config_file))
    cls = resolve_vae_class(vae_class)
    return _from_pretrained(
        cls, repo_id, repo_id, subfolder=subfolder, revision=revision, variant=variant, torch_dtype=torch_dtype
    )


# --------------------------------------------------------------------------------------------- encoding


def posterior_moments(vae: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The posterior of ``images`` (``(B, 3, H, W)`` in ``[-1, 1]``) as float32 ``(mean, std)``.

    ``std`` is ``exp(0.5 * logvar)`` with ``logvar`` clamped to ``[-30, 20]`` exactly as diffusers'
    ``DiagonalGaussianDistribution``; deterministic encoders (``AutoencoderTiny``, TAESD-family pairs) give
    ``std=None``. Both are raw (unscaled) latents ``(B, C, H/f, W/f)``.
    """
    mean, logvar = posterior_mean_logvar(vae, images)
    return mean.float(), None if logvar is None else torch.exp(0.5 * logvar.float())


def posterior_mean_logvar(vae: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like :func:`posterior_moments` but ``(mean, logvar)`` (``logvar`` clamped to ``[-30, 20]``), keeping dtype.

    Differentiable (no ``no_grad`` inside), so a student can be trained through it.
    """
    output = vae.encode(images)
    first = output[0] if isinstance(output, tuple) and output else None  # return_dict=False
    distribution = getattr(output, "latent_dist", None)
    if distribution is None and hasattr(first, "parameters"):
        distribution = first
    if distribution is not None:
        # From the raw moments: under autocast the distribution's own tensors may be bf16/fp16.
        mean, logvar = torch.chunk(distribution.parameters, 2, dim=1)
        if getattr(distribution, "deterministic", False):
            return mean, None
        return mean, torch.clamp(logvar, -30.0, 20.0)
    latents = getattr(output, "latents", None)
    if latents is None and isinstance(first, torch.Tensor):
        latents = first
    if latents is None:
        raise TypeError(
            f"{type(vae).__name__}.encode returned {type(output).__name__}; expected latent_dist or latents."
        )
    return latents, None


# --------------------------------------------------------------------------------------------- latent units


@dataclass(frozen=True)
class LatentNormalization:
    """Raw VAE latents <-> the units a diffusion model is trained on, as diffusers pipelines do:
    ``(z - shift_factor) * scaling_factor``, or with per-channel ``latents_mean``/``latents_std`` (SDXL-style)
    ``(z - latents_mean) * scaling_factor / latents_std``. :meth:`from_config` reads a VAE config or a latent-cache
    manifest's ``vae`` entry.
    """

    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    @classmethod
    def from_config(cls, config) -> "LatentNormalization":
        get = config.get if hasattr(config, "get") else lambda key, default=None: getattr(config, key, default)
        mean, std = get("latents_mean", None), get("latents_std", None)
        return cls(
            scaling_factor=float(get("scaling_factor", None) or 1.0),
            shift_factor=float(get("shift_factor", None) or 0.0),
            latents_mean=tuple(float(v) for v in mean) if mean is not None and std is not None else None,
            latents_std=tuple(float(v) for v in std) if mean is not None and std is not None else None,
        )

    def _shift_and_std(self, like: torch.Tensor) -> tuple:
        """``(shift, std)``: the per-channel mean and std shaped for ``like`` (``(C, h, w)`` or ``(B, C, h, w)``),
        else ``(shift_factor, 1.0)`` (dividing by 1.0 is exact, so both forms share one formula)."""
        if self.latents_mean is None:
            return self.shift_factor, 1.0
        shape = [1] * like.dim()
        shape[-3] = -1
        return tuple(
            torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)
            for values in (self.latents_mean, self.latents_std)
        )

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> diffusion-model units."""
        shift, std = self._shift_and_std(latents)
        return (latents - shift) * self.scaling_factor / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion-model units -> raw latents (what ``vae.decode`` takes)."""
        shift, std = self._shift_and_std(latents)
        return latents * std / self.scaling_factor + shift

    def scale_std(self, std: torch.Tensor) -> torch.Tensor:
        """A raw posterior standard deviation in diffusion-model units (the linear part of :meth:`normalize`)."""
        return std * self.scaling_factor / self._shift_and_std(std)[1]


# --------------------------------------------------------------------------------------------- identity


def vae_identity(
    vae: nn.Module, name_or_path: str | None = None, subfolder: str | None = None, revision: str | None = None
) -> dict:
    """What identifies a VAE's latents: class, config hash, weights hash and the latent-space factors.

    The weights hash is BLAKE2b over every parameter and buffer (sorted by name), so the same weights loaded from
    a copy or another path compare equal while a retrained or different checkpoint does not.
    """
    config = {key: value for key, value in dict(vae.config).items() if not key.startswith("_")}
    config_json = json.dumps(config, sort_keys=True, default=str)
    weights = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(vae.state_dict().items()):
        weights.update(name.encode())
        weights.update(str(tensor.dtype).encode())
        # reshape(-1), not contiguous(): a channels_last 1x1-conv weight counts as contiguous while its last stride
        # is not 1, and view(uint8) then fails. The bytes hashed are the logical (row-major) values either way.
        weights.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    name_or_path = name_or_path or getattr(vae, "name_or_path", None) or vae.config.get("_name_or_path")
    return {
        "class": type(vae).__name__,
        "name_or_path": None if name_or_path is None else os.fspath(name_or_path),
        "subfolder": subfolder,
        "revision": revision,
        "config_hash": hashlib.blake2b(config_json.encode(), digest_size=16).hexdigest(),
        "weights_hash": weights.hexdigest(),
        "scaling_factor": config.get("scaling_factor"),
        "shift_factor": config.get("shift_factor"),
        "latents_mean": config.get("latents_mean"),
        "latents_std": config.get("latents_std"),
    }
