"""VAEs under evaluation: loading from a folder or the Hub, and one interface for encode/decode in ``[0, 1]``.

Supported:
- diffusers VAE folders or Hub repos whose ``config.json`` names ``AutoencoderLite``, ``AutoencoderKL`` or
  ``AutoencoderTiny`` (``_class_name``); a pipeline folder/repo with a ``vae/`` subfolder works with
  ``subfolder="vae"`` (found automatically for local pipeline folders);
- TAESD-family ``.pth``/``.safetensors`` pairs (a folder holding ``*encoder*.pth`` and ``*decoder*.pth``, e.g. TAEF2),
  loaded with :func:`diffusers_litevae.load_tiny_encoder` / :func:`diffusers_litevae.load_tiny_decoder`.

Every model is wrapped in a :class:`ReconstructionModel` so the evaluation treats them alike: images in ``[0, 1]``,
deterministic latents (the posterior mode for Gaussian VAEs), reconstructions in ``[0, 1]``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from ..models.autoencoder_lite import AutoencoderLite
from ..models.tiny_autoencoder import TinyDecoder, TinyEncoder, load_tiny_decoder, load_tiny_encoder

__all__ = ["SUPPORTED_CLASSES", "ReconstructionModel", "load_reconstruction_model", "parse_vae_spec"]

SUPPORTED_CLASSES = ("AutoencoderLite", "AutoencoderKL", "AutoencoderTiny")
TINY_PAIR_CLASS = "TinyEncoder+TinyDecoder"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class ReconstructionModel:
    """One VAE seen through a common interface for evaluation.

    Args:
        module: a diffusers VAE (``encode(x)`` in ``[-1, 1]`` -> ``latent_dist``/``latents``, ``decode(z).sample`` in
            ``[-1, 1]``) or a ``(TinyEncoder, TinyDecoder)`` pair (images in ``[0, 1]``, raw latents).
        name_or_path: where it came from (folder, Hub id), for the report.
        class_name: model class for the report; inferred from ``module`` when omitted.
    """

    def __init__(self, module: nn.Module | tuple[nn.Module, nn.Module], name_or_path: str = "", class_name: str | None = None):
        if isinstance(module, (tuple, list)):
            if len(module) != 2 or not all(isinstance(part, nn.Module) for part in module):
                raise TypeError("a TAESD-family model is given as a (TinyEncoder, TinyDecoder) pair of nn.Modules.")
            self.encoder_module, self.decoder_module = module
            self.vae = None
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

    # -------------------------------------------------------------- placement

    @property
    def modules(self) -> list[nn.Module]:
        return [self.vae] if self.vae is not None else [self.encoder_module, self.decoder_module]

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "ReconstructionModel":
        for module in self.modules:
            # nn.Module.to: diffusers' ModelMixin.to warns on every dtype cast of a model without fp32-kept modules.
            nn.Module.to(module, device=device, dtype=dtype)
            module.eval().requires_grad_(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.modules[0].parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.modules[0].parameters()).dtype

    # -------------------------------------------------------------- sizes

    def parameter_counts(self) -> tuple[int, int]:
        """``(encoder parameters, decoder parameters)``; ``quant_conv`` counts as encoder, ``post_quant_conv`` as decoder."""
        if self.vae is None:
            return _count(self.encoder_module), _count(self.decoder_module)
        encoder = decoder = 0
        for name, parameter in self.vae.named_parameters():
            if name.startswith(("encoder.", "quant_conv.")):
                encoder += parameter.numel()
            elif name.startswith(("decoder.", "post_quant_conv.")):
                decoder += parameter.numel()
        return encoder, decoder

    # -------------------------------------------------------------- encode / decode

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> latents ``(B, c, H/8, W/8)`` (posterior mode; unscaled)."""
        images = images.to(self.device, self.dtype)
        if self.vae is None:
            return self.encoder_module(images)
        output = self.vae.encode(images * 2 - 1)
        if hasattr(output, "latent_dist"):
            return output.latent_dist.mode()
        if hasattr(output, "latents"):
            return output.latents
        return output[0].mode() if hasattr(output[0], "mode") else output[0]

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents from :meth:`encode` -> images ``(B, 3, H, W)`` clamped to ``[0, 1]``."""
        if self.vae is None:
            return self.decoder_module(latents).clamp(0, 1)
        return self.vae.decode(latents).sample.add(1).div(2).clamp(0, 1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Encode and decode: ``(B, 3, H, W)`` in ``[0, 1]`` -> reconstructions in ``[0, 1]`` (float32, on CPU)."""
        return self.decode(self.encode(images)).float().cpu()


def _count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def parse_vae_spec(spec: str) -> tuple[str, str | None]:
    """``"PATH_OR_ID[:LABEL]"`` -> ``(path_or_id, label or None)``.

    The label is what follows the last ``:`` when that part holds no path separator (Hub ids and POSIX paths have no
    ``:``; a Windows drive letter ``C:\\...`` is not mistaken for a label).
    """
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


def _find_tiny_pair(folder: Path) -> tuple[Path, Path] | None:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES]
    encoders = [p for p in files if "encoder" in p.name.lower()]
    decoders = [p for p in files if "decoder" in p.name.lower()]
    if len(encoders) == 1 and len(decoders) == 1:
        return encoders[0], decoders[0]
    if encoders or decoders:
        raise ValueError(
            f"{str(folder)!r} holds TAESD-family weights but not exactly one encoder and one decoder file "
            f"(found encoders {[p.name for p in encoders]}, decoders {[p.name for p in decoders]}); keep one pair per folder."
        )
    return None


def _class_for(class_name: str | None, where: str):
    import diffusers

    if class_name == "AutoencoderLite":
        return AutoencoderLite
    if class_name in ("AutoencoderKL", "AutoencoderTiny"):
        return getattr(diffusers, class_name)
    raise ValueError(
        f"{where} is a {class_name!r}; `litevae eval` supports {', '.join(SUPPORTED_CLASSES)} (config.json "
        "`_class_name`) and TAESD-family .pth pairs."
    )


def load_reconstruction_model(
    name_or_path: str,
    subfolder: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ReconstructionModel:
    """Load a VAE for evaluation from a local folder or a Hub repo, choosing the class from ``config.json``.

    Args:
        name_or_path: a diffusers VAE folder, a pipeline folder (its ``vae/`` is used), a TAESD-family folder with an
            ``*encoder*.pth`` + ``*decoder*.pth`` pair, or a Hub repo id.
        subfolder: subfolder holding the VAE (e.g. ``"vae"`` in a pipeline repo).
        device: where to run it.
        dtype: weights and compute dtype.

    Returns:
        A :class:`ReconstructionModel` on ``device`` in ``dtype``, in eval mode.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise FileNotFoundError(f"subfolder {subfolder!r} not found in {str(path)!r}.")
        if not (folder / "config.json").is_file() and not subfolder and (path / "vae" / "config.json").is_file():
            folder = path / "vae"  # a saved pipeline: evaluate its VAE
        if (folder / "config.json").is_file():
            class_name = json.loads((folder / "config.json").read_text()).get("_class_name")
            cls = _class_for(class_name, str(folder))
            model = ReconstructionModel(cls.from_pretrained(str(folder)), str(folder.resolve()), class_name)
            return model.to(device, dtype)
        pair = _find_tiny_pair(folder)
        if pair is None:
            raise ValueError(
                f"{str(folder)!r} is not a VAE folder: it has no config.json (a diffusers VAE saved with "
                "save_pretrained) and no *encoder*.pth + *decoder*.pth pair (a TAESD-family model)."
            )
        encoder, decoder = load_tiny_encoder(pair[0]), load_tiny_decoder(pair[1])
        return ReconstructionModel((encoder, decoder), str(folder.resolve()), TINY_PAIR_CLASS).to(device, dtype)
    if path.exists():
        raise ValueError(f"{name_or_path!r} is a file; pass the folder that holds the VAE (config.json + weights).")
    if not _HUB_ID.match(name_or_path):
        raise FileNotFoundError(f"{name_or_path!r} is neither an existing folder nor a Hugging Face Hub repo id.")
    from huggingface_hub import hf_hub_download

    try:
        config_file = hf_hub_download(name_or_path, "config.json", subfolder=subfolder)
    except Exception as error:
        where = f"{name_or_path!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
        raise OSError(
            f"could not fetch config.json of Hub repo {where}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
            "Check the repo id, your network / HF_HUB_OFFLINE, and pass --vae_subfolder vae for a pipeline repo."
        ) from error
    with open(config_file) as handle:
        class_name = json.load(handle).get("_class_name")
    cls = _class_for(class_name, f"Hub repo {name_or_path!r}")
    vae = cls.from_pretrained(name_or_path, subfolder=subfolder)
    return ReconstructionModel(vae, name_or_path, class_name).to(device, dtype)


def as_reconstruction_model(
    model, device: str | torch.device, dtype: torch.dtype, subfolder: str | None = None
) -> ReconstructionModel:
    """Turn what a user passes (a :class:`ReconstructionModel`, a diffusers VAE, a ``(TinyEncoder, TinyDecoder)``
    pair, or a folder / Hub id string) into a :class:`ReconstructionModel` on ``device``/``dtype``."""
    if isinstance(model, ReconstructionModel):
        return model.to(device, dtype)
    if isinstance(model, (str, os.PathLike)):
        return load_reconstruction_model(os.fspath(model), subfolder=subfolder, device=device, dtype=dtype)
    if isinstance(model, (tuple, list)) and len(model) == 2 and isinstance(model[0], TinyEncoder) and isinstance(model[1], TinyDecoder):
        return ReconstructionModel(tuple(model), class_name=TINY_PAIR_CLASS).to(device, dtype)
    return ReconstructionModel(model).to(device, dtype)
