"""diffusers-litevae: LiteVAE (NeurIPS 2024) as a first-class Hugging Face diffusers model.

Import this package before ``DiffusionPipeline.from_pretrained`` on a pipeline saved with an
``AutoencoderLite`` or ``AutoencoderLiteTiny`` VAE: diffusers resolves the class from the module path recorded in
``model_index.json`` (``diffusers_litevae.models.autoencoder_lite``, ``..._tiny``), looking it up among the modules
already imported.

Importing the package is fast (``litevae --help`` imports it): the public names are loaded on first use, and
those two model modules are put in ``sys.modules`` as deferred modules that run their code
(importing torch and diffusers) the first time a name it defines is read, e.g. by diffusers' pipeline loader,
``from ... import AutoencoderLite`` or ``diffusers_litevae.AutoencoderLite`` (see ``_lazy.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import defer_module, lazy_exports

__version__ = "0.2.0"

# public name -> module defining it, imported on first access
_EXPORTS = {
    "ENCODER_PRESETS": "models",
    "AutoencoderLite": "models",
    "AutoencoderLiteTiny": "models",
    "LiteVAEEncoder": "models",
    "SelfModulatedConv2d": "models",
    "TinyDecoder": "models",
    "TinyEncoder": "models",
    "encoder_preset": "models",
    "load_tiny_decoder": "models",
    "load_tiny_encoder": "models",
    "haar_dwt": "transforms",
    "haar_idwt": "transforms",
    "haar_wavedec": "transforms",
    "haar_waverec": "transforms",
    "list_pretrained": "pretrained",
    "pretrained_path": "pretrained",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .models import (
        ENCODER_PRESETS,
        AutoencoderLite,
        AutoencoderLiteTiny,
        LiteVAEEncoder,
        SelfModulatedConv2d,
        TinyDecoder,
        TinyEncoder,
        encoder_preset,
        load_tiny_decoder,
        load_tiny_encoder,
    )
    from .pretrained import list_pretrained, pretrained_path
    from .transforms import haar_dwt, haar_idwt, haar_wavedec, haar_waverec


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

# diffusers' DiffusionPipeline.from_pretrained resolves the VAE class from sys.modules only.
defer_module(f"{__name__}.models.autoencoder_lite")
defer_module(f"{__name__}.models.autoencoder_lite_tiny")
