"""Hugging Face Hub publishing: model cards (``ModelCard``/``ModelCardData``) and uploads (``HfApi``).

Command line: ``litevae push`` (:mod:`diffusers_litevae.hub.cli`) or ``python conversion/push_to_hub.py``.
"""

from __future__ import annotations

from .model_card import build_model_card, eval_results_from_summary
from .push import PushError, load_metrics_entry, prepare_upload_folder, push_to_hub, validate_model_folder

__all__ = [
    "PushError",
    "build_model_card",
    "eval_results_from_summary",
    "load_metrics_entry",
    "prepare_upload_folder",
    "push_to_hub",
    "validate_model_folder",
]
