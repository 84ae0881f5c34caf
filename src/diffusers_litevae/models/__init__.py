"""Models: the LiteVAE encoder, Self-Modulated Convolution, TAESD-family modules, ``AutoencoderLite`` (SD decoder)
and ``AutoencoderLiteTiny`` (TAESD-family decoder).

The names below are imported from their submodules on first use (module ``__getattr__``), so importing the
package (as ``litevae --help`` does) does not load torch or diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> submodule defining it
_EXPORTS = {
    "AutoencoderLite": "autoencoder_lite",
    "AutoencoderLiteBase": "autoencoder_lite_base",
    "AutoencoderLiteTiny": "autoencoder_lite_tiny",
    "ENCODER_PRESETS": "litevae_encoder",
    "EncoderPreset": "litevae_encoder",
    "LiteVAEEncoder": "litevae_encoder",
    "LiteVAEUNet": "litevae_encoder",
    "encoder_preset": "litevae_encoder",
    "SelfModulatedConv2d": "smc",
    "replace_resnet_norms_with_smc": "smc",
    "TinyAutoencoder": "tiny_autoencoder",
    "TinyDecoder": "tiny_autoencoder",
    "TinyEncoder": "tiny_autoencoder",
    "load_tiny_decoder": "tiny_autoencoder",
    "load_tiny_encoder": "tiny_autoencoder",
    "UNetDiscriminator": "unet_discriminator",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .autoencoder_lite import AutoencoderLite
    from .autoencoder_lite_base import AutoencoderLiteBase
    from .autoencoder_lite_tiny import AutoencoderLiteTiny
    from .litevae_encoder import ENCODER_PRESETS, EncoderPreset, LiteVAEEncoder, LiteVAEUNet, encoder_preset
    from .smc import SelfModulatedConv2d, replace_resnet_norms_with_smc
    from .tiny_autoencoder import TinyAutoencoder, TinyDecoder, TinyEncoder, load_tiny_decoder, load_tiny_encoder
    from .unet_discriminator import UNetDiscriminator


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
