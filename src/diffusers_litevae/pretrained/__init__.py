"""Models and sample images bundled with the package (no download needed).

- ``litevae-s-taef2``: an :class:`~diffusers_litevae.AutoencoderLiteTiny` whose LiteVAE-S encoder was distilled
  against TAEF2 and which decodes with TAEF2's decoder (32 latent channels). Its weights are stored
  as float16. Pass ``torch_dtype=torch.float32`` to compute in float32, as on CPU you should (float16 convolutions
  are very slow there); ``torch_dtype=torch.float16`` keeps float16 for GPUs. (Without ``torch_dtype``, current
  diffusers also builds a float32 model.)::

      import torch
      from diffusers_litevae import AutoencoderLiteTiny, pretrained_path

      vae = AutoencoderLiteTiny.from_pretrained(pretrained_path("litevae-s-taef2"), torch_dtype=torch.float32)

- ``taef2``: TAEF2, the Tiny AutoEncoder for FLUX.2 by Ollin Boer Bohan (MIT licence), as a float16
  ``taef2_encoder.safetensors`` + ``taef2_decoder.safetensors`` pair; load it with
  :func:`~diffusers_litevae.load_tiny_encoder` / :func:`~diffusers_litevae.load_tiny_decoder` or pass the folder to
  ``litevae eval --vae``.
- ``samples`` (``pretrained_path("samples")``): three Kodak test images (centre 256x256 crops), the default images of
  ``litevae eval``.
"""

from __future__ import annotations

import os
from importlib.resources import files

__all__ = ["SAMPLES", "list_pretrained", "pretrained_path"]

SAMPLES = "samples"


def _root():
    return files(__name__)


def list_pretrained() -> list[str]:
    """Names of the bundled model folders, sorted: ``["litevae-s-taef2", "taef2"]``;
    pass one to :func:`pretrained_path`, or as it is to the commands (``litevae eval --vae litevae-s-taef2``,
    ``litevae distill --teacher taef2``, ``litevae cache-latents --vae taef2``) and to
    :func:`~diffusers_litevae.vae_io.load_vae`.

    The sample images folder (``"samples"``) is bundled too but is not a model, so it is not listed.
    """
    return sorted(
        entry.name
        for entry in _root().iterdir()
        if entry.is_dir() and entry.name != SAMPLES and not entry.name.startswith(("_", "."))
    )


def pretrained_path(name: str) -> str:
    """Absolute path of the bundled folder ``name``: a model from :func:`list_pretrained`, or ``"samples"`` (three
    Kodak test images, centre 256x256 PNG crops).

    A model folder can be given to ``from_pretrained`` (``AutoencoderLite`` folders) or to ``litevae eval --vae``.
    The weights are stored as float16: load with ``torch_dtype=torch.float32`` to compute in float32 (do so on CPU)::

        vae = AutoencoderLite.from_pretrained(pretrained_path("litevae-s-taef2"), torch_dtype=torch.float32)

    Raises:
        ValueError: ``name`` is not bundled; the message lists the available names.
    """
    available = [*list_pretrained(), SAMPLES]
    if name not in available:
        raise ValueError(f"no bundled model named {name!r}; available: {', '.join(available)}.")
    return os.path.abspath(os.fspath(_root() / name))
