"""Hugging Face Hub repo ids: which strings are ids rather than local paths, and why one cannot load offline.

Used by every loader (models, teachers, evaluation, caching) and by the upload commands.
"""

from __future__ import annotations

import os

__all__ = ["hub_offline_message", "is_hub_repo_id", "is_owner_repo_id"]

_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spellings of a true environment variable


def is_owner_repo_id(value: str | None) -> bool:
    """``True`` for a valid Hub repo id with an owner (``owner/name``), by huggingface_hub's own rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not value or "/" not in value:
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def is_hub_repo_id(value: str | os.PathLike | None) -> bool:
    """``True`` for ``owner/name`` strings that are not existing local paths (what loaders send to the Hub)."""
    value = os.fspath(value) if value is not None else None
    return is_owner_repo_id(value) and not os.path.exists(os.path.expanduser(value))


def hub_offline_message(name_or_path: str | os.PathLike) -> str | None:
    """The reason a Hub id cannot load when the Hub is switched off (``HF_HUB_OFFLINE`` set), else ``None``: the
    loaders' own errors then do not mention being offline ("does not appear to have a file named config.json")."""
    from huggingface_hub import constants

    # The environment is read again: huggingface_hub reads it once, at import.
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    if not offline or not is_hub_repo_id(name_or_path):
        return None
    return (
        f"Hugging Face Hub repo {os.fspath(name_or_path)!r} is not in the local cache, and HF_HUB_OFFLINE is set, so "
        "it cannot be downloaded: unset HF_HUB_OFFLINE (with network access) to download it once, or pass a local "
        "folder."
    )
