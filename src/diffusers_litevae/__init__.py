"""diffusers-litevae: LiteVAE (NeurIPS 2024) as a first-class Hugging Face diffusers model.

Import this package before ``DiffusionPipeline.from_pretrained`` on a pipeline saved with an
``AutoencoderLite`` VAE: diffusers resolves the class from the module path recorded in ``model_index.json``
(``diffusers_litevae.models.autoencoder_lite``), looking it up among the modules already imported.

Importing the package is fast (``litevae --help`` imports it): the public names are loaded on first use
(module ``__getattr__``), and ``diffusers_litevae.models.autoencoder_lite`` is put in ``sys.modules`` as a
deferred module that runs its code (importing torch and diffusers) the first time a name it defines is read,
e.g. by diffusers' pipeline loader, ``from ... import AutoencoderLite`` or ``diffusers_litevae.AutoencoderLite``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module defining it, imported on first access
_LAZY_EXPORTS = {
    "ENCODER_PRESETS": ".models",
    "AutoencoderLite": ".models",
    "LiteVAEEncoder": ".models",
    "SelfModulatedConv2d": ".models",
    "TinyDecoder": ".models",
    "TinyEncoder": ".models",
    "encoder_preset": ".models",
    "load_tiny_decoder": ".models",
    "load_tiny_encoder": ".models",
    "haar_dwt": ".transforms",
    "haar_idwt": ".transforms",
    "haar_wavedec": ".transforms",
    "haar_waverec": ".transforms",
    "list_pretrained": ".pretrained",
    "pretrained_path": ".pretrained",
}

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
    "list_pretrained",
    "load_tiny_decoder",
    "load_tiny_encoder",
    "pretrained_path",
    "__version__",
]

if TYPE_CHECKING:
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
    from .pretrained import list_pretrained, pretrained_path
    from .transforms import haar_dwt, haar_idwt, haar_wavedec, haar_waverec


def __getattr__(name: str):
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


_DEFERRED_LOCK = threading.RLock()
_DEFERRED_RUNNING: set[str] = set()


class _DeferredModule(types.ModuleType):
    """A module whose code has not run yet; reading any name it does not hold yet runs it, once.

    Its dunder attributes (``__file__``, ``__spec__``, ...) are set up front and never trigger the run, so tools
    that scan ``sys.modules`` (``inspect.getmodule`` does, for one, even in the middle of importing torch) do not
    set it off. (``importlib.util.LazyLoader`` runs the module on *any* attribute access, dunders included.)
    """

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__") and name != "__all__":  # __all__: star imports
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        with _DEFERRED_LOCK:
            if type(self) is _DeferredModule:
                if self.__name__ in _DEFERRED_RUNNING:  # read while its own code runs: as in a circular import
                    raise AttributeError(f"partially initialized module {self.__name__!r} has no attribute {name!r}")
                _DEFERRED_RUNNING.add(self.__name__)
                try:
                    self.__spec__.loader.exec_module(self)
                finally:
                    _DEFERRED_RUNNING.discard(self.__name__)
                self.__class__ = types.ModuleType
        return getattr(self, name)


def _register_deferred(name: str) -> None:
    """Put module ``name`` in ``sys.modules`` (and on its parent package) without running its code yet."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredModule
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)


# diffusers' DiffusionPipeline.from_pretrained resolves the VAE class from sys.modules only.
_register_deferred(f"{__name__}.models.autoencoder_lite")
