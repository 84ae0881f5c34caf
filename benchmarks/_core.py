"""The measuring core every benchmark here shares: op counts, timing with warm-up, peak memory, JSON with the
command, ratios printed beside a reference figure and its source, the encoders compared, and the budgeted cell
runner that records each measurement as it finishes.

Nothing here passes or fails a run: a benchmark reports what it measured and, where a published or earlier
figure exists, the ratio to it, with where that figure comes from.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import shlex
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from diffusers_litevae.file_io import jsonable

__all__ = [
    "ENCODER_NAMES",
    "Budget",
    "Context",
    "CpuPeakMemory",
    "OpCounter",
    "Recorder",
    "SDVAEEncoder",
    "build_encoder",
    "cell_list",
    "command_line",
    "count_ops",
    "environment",
    "error_text",
    "format_ratio",
    "free_memory",
    "int_list",
    "is_oom",
    "measure",
    "run_cell",
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
    path.write_text(json.dumps(jsonable(payload, finite=True), indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- arguments


def int_list(text: str) -> list[int]:
    """``"256,512"`` -> ``[256, 512]``: positive integers (an ``argparse`` ``type``)."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"takes comma-separated positive integers, got {text!r}")
    return values


def cell_list(text: str) -> list[tuple[int, int]]:
    """``"256x32,512x1"`` -> ``[(256, 32), (512, 1)]``: RESxBATCH cells, in order (an ``argparse`` ``type``)."""
    try:
        cells = [tuple(int(v) for v in cell.lower().split("x")) for cell in str(text).split(",") if cell.strip()]
    except ValueError:
        cells = []
    if not cells or any(len(cell) != 2 or min(cell) < 1 for cell in cells):
        raise argparse.ArgumentTypeError(f"takes RESxBATCH cells, e.g. 256x32,512x1; got {text!r}")
    return cells


# ---------------------------------------------------------------------------------------------- encoders

ENCODER_NAMES = ("S", "B", "M", "L", "sd-vae", "taesd")


class SDVAEEncoder(nn.Module):
    """What ``AutoencoderKL.encode`` runs: ``quant_conv(encoder(x))`` (moments, 2 x 4 channels at H/8; shares the
    modules of ``vae``)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))


def build_encoder(name: str, sd_vae: nn.Module | None = None) -> nn.Module:
    """A randomly initialised encoder, exactly what that VAE's ``encode`` runs (speed depends on the architecture
    only): ``S``/``B``/``M``/``L`` the LiteVAE presets with 4 latent channels, ``sd-vae`` the SD-VAE's
    ``encoder`` + ``quant_conv`` (of ``sd_vae`` when given, so a caller can share one), ``taesd`` diffusers'
    ``AutoencoderTiny().encoder`` (which scales ``[-1, 1]`` to ``[0, 1]`` itself)."""
    if name in ("S", "B", "M", "L"):
        from diffusers_litevae import LiteVAEEncoder

        return LiteVAEEncoder.from_preset(name, latent_channels=4)  # = AutoencoderLite.from_preset(name).encoder
    if name == "sd-vae":
        from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl

        return SDVAEEncoder(sd_vae if sd_vae is not None else sd_vae_autoencoder_kl())
    if name == "taesd":
        from diffusers import AutoencoderTiny

        return AutoencoderTiny().encoder
    raise ValueError(f"unknown encoder {name!r}; choose from {ENCODER_NAMES}.")


# ---------------------------------------------------------------------------------------------- CPU memory


class CpuPeakMemory:
    """Resident-set growth of one call on Linux/glibc, neither timed nor sampled.

    ``measure(call)`` returns the MiB the process's resident set (``VmHWM``, reset through
    ``/proc/self/clear_refs``) rose above its level before the call, after ``malloc_trim`` and with glibc's mmap
    threshold at 1 MiB for that call only, so freed tensors go back to the OS and the resident set follows live
    memory. ``available`` is False elsewhere.
    """

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __init__(self):
        self.libc = None
        if platform.system() == "Linux" and os.path.exists("/proc/self/clear_refs"):
            with contextlib.suppress(OSError):
                self.libc = ctypes.CDLL("libc.so.6")
                self._reset_high_water_mark()

    @property
    def available(self) -> bool:
        return self.libc is not None and hasattr(self.libc, "malloc_trim")

    @staticmethod
    def _status_kib(field_name: str) -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field_name + ":"))

    @staticmethod
    def _reset_high_water_mark() -> None:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")

    def measure(self, call: Callable[[], object]) -> float:
        """MiB the process's RSS rose above its level before ``call()`` at its highest."""
        self.libc.mallopt(self.M_MMAP_THRESHOLD, 1 << 20)
        self.libc.mallopt(self.M_TRIM_THRESHOLD, 1 << 20)
        self.libc.malloc_trim(0)
        try:
            self._reset_high_water_mark()
            before = self._status_kib("VmRSS")
            call()
            peak = self._status_kib("VmHWM")
        finally:
            # glibc's own ceiling for its adaptive thresholds, so timing runs allocate as they normally would.
            self.libc.mallopt(self.M_MMAP_THRESHOLD, 32 << 20)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 64 << 20)
        return max(peak - before, 0) / 1024


# ---------------------------------------------------------------------------------------------- budgeted cells


class Budget:
    """Wall-clock budget of a whole run, and what earlier cells took (so later estimates count compiling).

    ``check`` says why a measurement no longer fits (or ``None``); ``note``/``seen`` keep the longest duration
    observed per key (e.g. ``"compile B"``), which estimates of later cells use in place of their guess.
    """

    def __init__(self, minutes: float, start: float | None = None):
        self.start = time.perf_counter() if start is None else start
        self.total_s = minutes * 60
        self._seen: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def note(self, key: str, seconds: float | None) -> None:
        if seconds is not None:
            self._seen[key] = max(self._seen.get(key, 0.0), seconds)

    def seen(self, key: str, guess: float) -> float:
        """What ``key`` took at most so far (with 10 % margin), else ``guess``."""
        return self._seen[key] * 1.1 if key in self._seen else guess

    def check(self, estimate_s: float, reserve_s: float = 0.0) -> str | None:
        if self.left() >= estimate_s + reserve_s:
            return None
        return f"budget: {max(self.left(), 0):.0f} s of {self.total_s:.0f} s left, this needs ~{estimate_s:.0f} s" + (
            f" and ~{reserve_s:.0f} s stay reserved for later sections" if reserve_s else ""
        )


class Recorder:
    """Appends one JSON line per measurement to a JSONL file (flushed and synced at once, so a killed run keeps
    every finished figure) and prints one log line."""

    def __init__(self, path: str | os.PathLike | None, budget: Budget):
        self.path = Path(path) if path else None
        self.budget = budget
        self.run_id = uuid.uuid4().hex[:12]
        self.records: list[dict] = []
        self.section: str | None = None  # stamped on every record while set
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, kind: str, name: str, status: str, fields: dict | None = None, text: str = "") -> dict:
        """Record one measurement. ``fields`` is one dict (not keyword arguments), so that a field a result
        shares with its settings is overwritten, never passed twice."""
        record = {"run_id": self.run_id, "kind": kind, "name": name, "status": status}
        if self.section:
            record["section"] = self.section
        record["t_s"] = round(self.budget.elapsed(), 2)
        record.update({k: v for k, v in (fields or {}).items() if k not in record})
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(jsonable(record, finite=True)) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
        if not text:
            text = status.upper() + (f": {record['reason']}" if record.get("reason") else "")
        print(f"[{self.budget.elapsed():7.1f} s] {kind:15s} {name:34s} {text}", flush=True)
        return record

    def of(self, kind: str, status: str | None = "ok") -> list[dict]:
        return [r for r in self.records if r["kind"] == kind and (status is None or r["status"] == status)]


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:400]


def is_oom(error: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if isinstance(error, MemoryError) or (oom is not None and isinstance(error, oom)):
        return True
    return "out of memory" in str(error)


def free_memory(device: torch.device | str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _default_text(result: dict) -> str:
    if result.get("images_per_s") is None:
        return "OK"
    text = f"{result['images_per_s']:10.1f} img/s"
    if result.get("peak_memory_mib") is not None:
        text += f"  peak {result['peak_memory_mib']:.0f} MiB"
    if result.get("first_call_s") is not None:
        text += f"  first call {result['first_call_s']:.1f} s"
    return text


def run_cell(
    rec: Recorder,
    kind: str,
    name: str,
    fields: dict,
    measure_cell: Callable[[], dict],
    *,
    estimate_s: float,
    reserve_s: float = 0.0,
    skip: str | None = None,
    device: torch.device | str = "cpu",
    describe: Callable[[dict], str] | None = None,
) -> dict:
    """The one way a benchmark cell runs: skipped (with the reason) when ``skip`` is given or ``estimate_s`` (which
    must include compiling and any other warm-up) plus ``reserve_s`` no longer fits the budget; else
    ``measure_cell()``, recorded ``ok`` with its figures and ``duration_s``, ``skipped`` on out-of-memory, or
    ``failed`` with the error. A failing cell never ends the run."""
    fields = dict(fields)
    reason = skip or rec.budget.check(estimate_s, reserve_s)
    if reason:
        return rec.add(kind, name, "skipped", {**fields, "reason": reason, "estimate_s": round(estimate_s, 1)})
    begin = time.perf_counter()
    try:
        result = measure_cell()
    except Exception as error:  # noqa: BLE001  one cell failing must not end the run
        duration = round(time.perf_counter() - begin, 2)
        free_memory(device)
        if is_oom(error):
            return rec.add(
                kind,
                name,
                "skipped",
                {**fields, "reason": f"out of memory ({error_text(error)})", "duration_s": duration},
            )
        trace = traceback.format_exc()[-2000:]
        return rec.add(
            kind, name, "failed", {**fields, "reason": error_text(error), "trace": trace, "duration_s": duration}
        )
    free_memory(device)
    result = {**result, "duration_s": round(time.perf_counter() - begin, 2)}
    return rec.add(kind, name, "ok", {**fields, **result}, text=(describe or _default_text)(result))


class Context:
    """What every section of a suite shares: settings (``args``), device, precision and memory format, the budget
    and recorder, a scratch folder, the seconds later sections keep in reserve, and one SD-VAE built once."""

    def __init__(self, args: argparse.Namespace, budget: Budget, rec: Recorder, work: Path):
        self.args, self.budget, self.rec, self.work = args, budget, rec, work
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.precision = getattr(args, "precision", "fp32")
        self.channels_last = bool(getattr(args, "use_channels_last", False))
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # Estimates (functions of this context) of what the sections after the running one need, set by the
        # runner; summed afresh at each check, so that what earlier cells took refines them as the run goes.
        self.later: list[Callable[[Context], float]] = []
        self._sd_vae = None

    @property
    def reserve_s(self) -> float:
        return sum(estimate(self) for estimate in self.later)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def mixed_precision(self) -> str:
        return "bf16" if self.precision == "bf16" else "no"

    def sd_vae(self):
        """The SD-VAE reference (random weights, seed 0), built once and shared by every section."""
        if self._sd_vae is None:
            from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl

            self._sd_vae = sd_vae_autoencoder_kl(seed=0).eval().requires_grad_(False)
        return self._sd_vae

    def images(self, batch: int, resolution: int | tuple[int, int]) -> torch.Tensor:
        """A seeded batch in ``[-1, 1]`` on the device, in the run's memory format."""
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        generator = torch.Generator(device=self.device).manual_seed(0)
        images = torch.rand(batch, 3, height, width, device=self.device, generator=generator).mul_(2).sub_(1)
        return images.contiguous(memory_format=self.memory_format)

    def run(self, kind: str, name: str, fields: dict, measure_cell, *, estimate_s: float, **kwargs) -> dict:
        """:func:`run_cell` with this context's recorder, device and reserve."""
        kwargs.setdefault("reserve_s", self.reserve_s)
        return run_cell(self.rec, kind, name, fields, measure_cell, estimate_s=estimate_s, device=self.device, **kwargs)
