"""The measuring core every benchmark here shares: op counts, timing with warm-up, peak memory, JSON with the
command, and ratios printed beside a reference figure and its source.

Nothing here passes or fails a run: a benchmark reports what it measured and, where a published or earlier
figure exists, the ratio to it, with where that figure comes from.
"""

from __future__ import annotations

import collections
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "OpCounter",
    "command_line",
    "count_ops",
    "environment",
    "format_ratio",
    "jsonable",
    "measure",
    "sync",
    "time_calls",
    "write_json",
]


# ---------------------------------------------------------------------------------------------- op counts


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the ``with`` block, by op name (``"convolution"``, ``"add"``...).

    On a GPU each of these ops is (at least) one kernel launch in eager mode, so the count is the launch
    floor of a batch-1 call. Views count too (they are dispatched), which is what a launch-bound eager call
    pays for in Python and dispatcher overhead.
    """

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_ops(call: Callable[[], object]) -> collections.Counter[str]:
    """The aten ops ``call()`` dispatches, counted by op name."""
    with OpCounter() as counter:
        call()
    return counter.counts


# ---------------------------------------------------------------------------------------------- timing


def sync(device: torch.device | str) -> None:
    """Wait for the device (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    call: Callable[[], object], device: torch.device | str, min_time: float, min_calls: int, max_calls: int
) -> tuple[float, int]:
    """Seconds per call over enough calls to last ``min_time`` (CUDA events on CUDA); returns ``(seconds, calls)``.

    The first call sizes the run and is timed too; call ``measure`` (or warm up yourself) first so it is warm.
    """
    device = torch.device(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        first = start.elapsed_time(end) / 1e3
        calls = min(max_calls, max(min_calls, math.ceil(min_time / max(first, 1e-6))))
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls, calls
    begin = time.perf_counter()
    call()
    first = time.perf_counter() - begin
    calls = min(max_calls, max(min_calls, math.ceil(min_time / max(first, 1e-6)))) - 1
    if calls <= 0:
        return first, 1
    begin = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - begin) / calls, calls


def measure(
    call: Callable[[], object],
    device: torch.device | str,
    *,
    items_per_call: int,
    warmup: int = 2,
    min_time: float = 1.0,
    min_calls: int = 3,
    max_calls: int = 200,
) -> dict:
    """Warm up, then time calls; the first call (compiling, CUDA-graph capture) is reported apart from throughput.

    Returns ``first_call_s`` (the first call alone), ``warmup_s`` (all ``warmup`` calls, the first included),
    ``peak_memory_mib`` (CUDA: the most allocated above what was allocated before the first call, over the warm-up
    and one more call, so CUDA-graph memory pools count; ``None`` elsewhere), ``items_per_s``, ``ms_per_call`` and
    ``timed_calls``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    result: dict = {}
    if cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    begin = time.perf_counter()
    call()
    sync(device)
    result["first_call_s"] = round(time.perf_counter() - begin, 4)
    for _ in range(max(warmup - 1, 0)):
        call()
    sync(device)
    result["warmup_s"] = round(time.perf_counter() - begin, 4)
    if cuda:
        call()
        sync(device)
        result["peak_memory_mib"] = round((torch.cuda.max_memory_allocated(device) - allocated_before) / 2**20, 1)
    else:
        result["peak_memory_mib"] = None
    seconds, calls = time_calls(call, device, min_time, min_calls, max_calls)
    result.update(
        items_per_s=round(items_per_call / seconds, 3), ms_per_call=round(seconds * 1e3, 3), timed_calls=calls
    )
    return result


# ---------------------------------------------------------------------------------------------- reporting


def format_ratio(value: float | None, reference: float | None, source: str, unit: str = "x") -> str:
    """``"2.10x beside 1.90x (source): 1.11 of it"``: a figure next to a reference figure and where that comes from.

    No pass/fail: the reader compares. ``value`` ``None`` prints ``not measured``.
    """
    if value is None:
        return "not measured"
    text = f"{value:.2f}{unit}"
    if reference:
        text += f" beside {reference:.2f}{unit} ({source}): {value / reference:.2f} of it"
    return text


def jsonable(value):
    """``value`` with NaN/inf as ``None``, tuples as lists and anything else unknown as its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced a result, as one shell line relative to the repository root."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    with_root = Path(__file__).resolve().parents[1]
    try:
        script = script.resolve().relative_to(with_root)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv[1:]])


def environment(device: torch.device | str = "cpu") -> dict:
    """Versions, device name and thread count: what a figure was measured on."""
    import diffusers

    device = torch.device(device)
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (made JSON-safe) to ``path``, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    return path
