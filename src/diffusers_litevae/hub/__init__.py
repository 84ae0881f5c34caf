"""Hugging Face Hub publishing: model cards (``ModelCard``/``ModelCardData``) and uploads (``HfApi``).

Command line: ``litevae push`` (:mod:`diffusers_litevae.hub.cli`) or ``python conversion/push_to_hub.py``.
The names below are imported on first use, so ``litevae push --help`` does not load torch or diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "PushError": "push",
    "build_model_card": "model_card",
    "eval_results_from_summary": "model_card",
    "load_metrics_entry": "push",
    "prepare_upload_folder": "push",
    "push_to_hub": "push",
    "validate_model_folder": "push",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .model_card import build_model_card, eval_results_from_summary
    from .push import PushError, load_metrics_entry, prepare_upload_folder, push_to_hub, validate_model_folder


def __getattr__(name: str):
    submodule = _EXPORTS.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
