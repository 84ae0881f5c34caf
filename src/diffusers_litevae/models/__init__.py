"""Models: the LiteVAE encoder, Self-Modulated Convolution, TAESD-family modules and ``AutoencoderLite``."""

from .autoencoder_lite import AutoencoderLite
from .litevae_encoder import ENCODER_PRESETS, EncoderPreset, LiteVAEEncoder, LiteVAEUNet, encoder_preset
from .smc import SelfModulatedConv2d, replace_resnet_norms_with_smc
from .tiny_autoencoder import TinyDecoder, TinyEncoder, load_tiny_decoder, load_tiny_encoder

__all__ = [
    "AutoencoderLite",
    "ENCODER_PRESETS",
    "EncoderPreset",
    "LiteVAEEncoder",
    "LiteVAEUNet",
    "SelfModulatedConv2d",
    "TinyDecoder",
    "TinyEncoder",
    "encoder_preset",
    "load_tiny_decoder",
    "load_tiny_encoder",
    "replace_resnet_norms_with_smc",
]
