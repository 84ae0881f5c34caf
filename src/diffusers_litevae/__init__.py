"""diffusers-litevae: LiteVAE (NeurIPS 2024) as a first-class Hugging Face diffusers model.

Import this package before ``DiffusionPipeline.from_pretrained`` on a pipeline saved with an
``AutoencoderLite`` VAE: diffusers resolves the class from the module path recorded in ``model_index.json``.
"""

from .models import (
    ENCODER_PRESETS,
    AutoencoderLite,
    LiteVAEEncoder,
    SelfModulatedConv2d,
    TinyDecoder,
    TinyEncoder,
    encoder_preset,
    load_tiny_decoder,
    load_tiny_encoder,
)
from .transforms import haar_dwt, haar_idwt, haar_wavedec, haar_waverec

__version__ = "0.1.0"

__all__ = [
    "ENCODER_PRESETS",
    "AutoencoderLite",
    "LiteVAEEncoder",
    "SelfModulatedConv2d",
    "TinyDecoder",
    "TinyEncoder",
    "encoder_preset",
    "haar_dwt",
    "haar_idwt",
    "haar_wavedec",
    "haar_waverec",
    "load_tiny_decoder",
    "load_tiny_encoder",
    "__version__",
]
