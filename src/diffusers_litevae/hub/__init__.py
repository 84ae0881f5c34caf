"""Hugging Face Hub publishing: model cards (``ModelCard``/``ModelCardData``) and uploads (``HfApi``).

Command line: ``litevae push`` (:mod:`diffusers_litevae.hub.cli`) or ``python conversion/push_to_hub.py``.
The names below are imported on first use, so ``litevae push --help`` does not load torch or diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "CardOptions": "settings",
    "PushError": "push",
    "PushSettings": "settings",
    "build_model_card": "model_card",
    "eval_results_from_summary": "model_card",
    "load_metrics_entry": "push",
    "prepare_upload_folder": "push",
    "push_to_hub": "push",
    "validate_model_folder": "push",
    "write_model_card": "push",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .model_card import build_model_card, eval_results_from_summary
    from .push import (
        PushError,
        load_metrics_entry,
        prepare_upload_folder,
        push_to_hub,
        validate_model_folder,
        write_model_card,
    )
    from .settings import CardOptions, PushSettings


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
