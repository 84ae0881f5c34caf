"""Files and folders the commands write, the one way each is done: every command's ``--output_dir`` check (before
any model loads), atomic writes (readers see the old file or the new one), and permissions that follow the umask
(safetensors writes ``0o600``, which would leave weights unreadable to other users of a shared machine).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
import threading
from pathlib import Path

__all__ = [
    "OUTPUT_KINDS",
    "check_output_dir",
    "current_umask",
    "flatten_dict",
    "follow_umask",
    "fsync_dir",
    "invoked_command",
    "jsonable",
    "save_pretrained",
    "temp_path",
    "write_bytes_atomic",
    "write_json_atomic",
]

# What each command leaves in its output folder, by the file that marks it: (marker files, what they are, the
# commands that may write into such a folder). A command refuses a folder holding another command's output, as
# mixing the two would corrupt or overwrite it. Checkpoints are shared by the two training commands (each checks
# on resume that a checkpoint is its own).
OUTPUT_KINDS: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (("manifest.json", "index.jsonl"), "a latent cache", ("cache-latents",)),
    (("distillation.json",), "a model written by `litevae distill`", ("distill",)),
    (("training.json",), "a model written by `litevae train`", ("train",)),
    (("config.json",), "a saved model (config.json)", ()),
    (("checkpoints",), "training checkpoints", ("distill", "train")),
    (("summary.json", "per_image.csv"), "`litevae eval` results", ("eval",)),
)


def jsonable(value, finite: bool = False):
    """``value`` in plain JSON types: ``str`` dict keys, tuples as lists, any other non-JSON leaf as its ``str``;
    ``finite=True`` also writes NaN and infinity as ``None`` (strict JSON readers reject ``NaN`` / ``Infinity``).
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, finite) for v in value]
    if finite and isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def flatten_dict(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts as one dict with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``), in insertion order;
    ``prefix`` starts every key."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, object] = {}
    for key, item in value.items():
        flat.update(flatten_dict(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


# ------------------------------------------------------------------------------------------------- output folders


def check_output_dir(path: str | os.PathLike, command: str, error: type[Exception], empty: bool = False) -> Path:
    """Check that ``litevae <command>`` can write its output into the folder ``path``; returns it as a ``Path``.

    Raises ``error`` when ``path`` (or a folder above it) is a file, cannot be written, holds another command's
    output (:data:`OUTPUT_KINDS`), or, with ``empty``, holds anything at all. Nothing is created.
    """
    folder = Path(path).expanduser()
    shown = str(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({str(existing)!r} above it is a file)"
        raise error(f"--output_dir {shown!r} is a file, not a folder{where}; pass a folder path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" (nor can {str(existing)!r}, where it would be created)"
        raise error(f"--output_dir {shown!r} cannot be written{where}; pass a folder you can write to.")
    if existing != folder:  # the folder does not exist yet: nothing in it to refuse
        return folder
    for markers, what, writers in OUTPUT_KINDS:  # the first kind whose marker is there names the folder
        if any((folder / marker).exists() for marker in markers):
            if command not in writers:
                raise error(
                    f"--output_dir {shown!r} holds {what}; `litevae {command}` would mix its files with it: "
                    "pass another folder."
                )
            break
    if empty and any(folder.iterdir()):
        raise error(f"--output_dir {shown!r} is not empty; pass a new or empty folder (nothing is overwritten).")
    return folder


# ------------------------------------------------------------------------------------------------- permissions


def current_umask() -> int:
    """This process's umask (read without changing it where the system says it, Linux >= 4.7)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


def follow_umask(*paths: str | os.PathLike) -> None:
    """Give files the mode ``open()`` would have given them (``0o666`` less the umask); folders are walked."""
    mode = 0o666 & ~current_umask()
    for path in paths:
        path = Path(path)
        files = [path] if not path.is_dir() else [Path(top) / name for top, _, names in os.walk(path) for name in names]
        for file in files:
            if not file.is_symlink():
                os.chmod(file, mode)


def save_pretrained(model, folder: str | os.PathLike, **kwargs) -> Path:
    """``model.save_pretrained(folder, **kwargs)``, with the files it wrote (and only those) following the umask."""
    folder = Path(folder)

    def stamps() -> dict[Path, tuple[int, int]]:
        stats = {Path(top) / name: os.stat(Path(top) / name) for top, _, names in os.walk(folder) for name in names}
        return {file: (stat.st_mtime_ns, stat.st_ino) for file, stat in stats.items()}

    before = stamps()
    model.save_pretrained(str(folder), **kwargs)
    follow_umask(*(path for path, stamp in stamps().items() if before.get(path) != stamp))
    return folder


# ------------------------------------------------------------------------------------------------- atomic writes


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: str | os.PathLike) -> Path:
    """The hidden temporary file an atomic write of ``path`` goes through (unique per process and thread)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and ``os.replace`` (readers see old or new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    with open(temp, "wb") as handle:  # open() applies the umask, as to any file the user writes
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """:func:`write_bytes_atomic` of ``obj`` as indented JSON."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def invoked_command() -> str | None:
    """The ``litevae ...`` command line this process runs (for the records and cards that show how to reproduce
    an output), or ``None`` when it was not started as ``litevae`` / ``python -m diffusers_litevae.cli``."""
    program = Path(sys.argv[0])
    if program.name == "litevae" or (program.name == "cli.py" and program.parent.name == "diffusers_litevae"):
        return shlex.join(["litevae", *sys.argv[1:]])
    return None
