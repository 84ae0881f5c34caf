"""Atomic, pruned training checkpoints on top of ``accelerate``'s ``save_state`` / ``load_state``.

A checkpoint ``OUTPUT/checkpoints/checkpoint-<step>/`` holds what ``accelerator.save_state`` writes (weights,
optimizer, registered LR scheduler and EMA, every process's RNG state) plus ``trainer_state.json`` (the loop's
state). It is written under a temporary name and renamed into place when complete, so a run killed mid-save never
leaves a half-written checkpoint for ``--resume_from_checkpoint latest`` to pick up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..file_io import follow_umask
from .errors import TrainingInputError

__all__ = [
    "TRAINER_STATE_NAME",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_resume",
    "save_checkpoint",
]

TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``checkpoints_dir``, oldest first (temporary folders are ignored)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / TRAINER_STATE_NAME).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    return next(reversed(list_checkpoints(checkpoints_dir)), None)


def resolve_resume(value: str | None, checkpoints_dir: str | os.PathLike) -> Path | None:
    """Turn ``--resume_from_checkpoint`` into a checkpoint folder: ``"latest"`` picks the newest complete one
    (``None`` when there is none yet: the run starts fresh); a given path that is not a complete checkpoint raises
    :class:`TrainingInputError`."""
    if not value:
        return None
    if value == "latest":
        return find_latest_checkpoint(checkpoints_dir)
    path = Path(value).expanduser()
    if not path.is_dir() and (Path(checkpoints_dir) / value).is_dir():
        path = Path(checkpoints_dir) / value
    if not (path / TRAINER_STATE_NAME).is_file():
        raise TrainingInputError(
            f"--resume_from_checkpoint {value!r} is not a complete checkpoint folder (no {TRAINER_STATE_NAME}); "
            "pass 'latest' or a checkpoints/checkpoint-<step> folder."
        )
    return path


def save_checkpoint(
    accelerator, checkpoints_dir: str | os.PathLike, step: int, trainer_state: dict, total_limit: int | None = None
) -> Path:
    """Write ``checkpoints_dir/checkpoint-<step>`` atomically, with ``trainer_state`` (JSON-serialisable) as
    ``trainer_state.json``, keep only the newest ``total_limit`` checkpoints (``None``: all) and return its folder.

    Must be called on every process (``accelerator.save_state`` writes each process's RNG state).
    """
    root = Path(checkpoints_dir)
    final = root / f"checkpoint-{step}"
    temporary = root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / TRAINER_STATE_NAME).write_text(json.dumps(trainer_state, indent=1))
        follow_umask(temporary)  # accelerate writes the model's safetensors 0600; the folder is this step's alone
        if final.exists():  # re-running a finished step: replace the old copy
            shutil.rmtree(final)
        os.replace(temporary, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | os.PathLike) -> dict:
    """Restore the accelerate state from ``path`` (on every process) and return its ``trainer_state.json``."""
    path = Path(path)
    state = json.loads((path / TRAINER_STATE_NAME).read_text())
    accelerator.load_state(str(path))
    return state
