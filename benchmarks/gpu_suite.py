#!/usr/bin/env python
"""Every GPU figure of the project from one command, on one CUDA GPU, in one process (default run: under 8 minutes).

Four kinds of measurement (the ``kind`` of each record), run in the order below, each appended to
``--output_jsonl`` as one JSON line (and printed as one flushed log line) the moment it is finished, so a run that
is killed still leaves every figure it finished:

1. ``encoder_speed``: images/s and peak memory (weights + input + the rise of ``torch.cuda.max_memory_allocated``
   over one call, i.e. everything the call allocates) of the LiteVAE-S and -B encoders, the SD-VAE encoder
   (``encoder`` + ``quant_conv`` of :func:`~diffusers_litevae.testing_utils.sd_vae_autoencoder_kl`, the Stable
   Diffusion VAE architecture with random weights: speed depends on the architecture only) and the TAESD encoder
   (a ``TinyEncoder`` of TAESD's shape: 64 channels, blocks (1, 3, 3, 3), 4 latent channels, random weights, input
   scaled to [0, 1] as its ``encode`` does) at 256, 512 and 1024 px and batch 1, 8 and 32. bf16 autocast over fp32
   weights (what latent caching and training run) and channels_last inputs and weights on CUDA (as
   ``encoder_speed.py`` does there); CUDA-event timing after warm-up calls. Eager first, every cell;
   ``torch.compile`` comes last (see 5.).
2. ``cache_latents``: the real caching job (:func:`~diffusers_litevae.caching.cache_latents`: loader workers,
   host-to-device copies, encoding, background shard writes) with LiteVAE-B and with the SD-VAE on the same
   ``--cache_images`` images of ``--data_dir`` (centre 256 px crops), images/s of each and the ratio.
3. ``train_speed``: distillation images/s of a LiteVAE-B student against TAEF2 (batch 32, 128 px crops, bf16),
   once with the live teacher encoding every batch and once from cached teacher posteriors (``teacher_latents``:
   :func:`~diffusers_litevae.training.distill` first caches the teacher's latents of every training image, then
   trains without the teacher encoder in the step). Both ``train_images_per_s`` (the trainer's own figure, first
   steps included) and ``steady_images_per_s`` (after the first logging interval) are recorded.
4. ``distill_quality``: a 3-minute LiteVAE-B distillation against TAEF2 (cached targets, bf16, AdamW lr 1e-3, EMA,
   128 px crops), scored at the end on centre 256 px crops of ``--eval_dir``: ``psnr_student`` (student encoder ->
   TAEF2 decoder) and ``psnr_teacher`` (TAEF2 encoder -> TAEF2 decoder).
5. ``encoder_speed`` with ``torch.compile`` (mode ``--compile_mode``, default ``default``; one compilation per model
   and shape, typically 30-60 s each on a fresh machine), only in the target cells (``--compile_shapes``, default
   256 and 512 px at batch 32 and 8), SD-VAE and LiteVAE-B of a cell together (so the comparison stays fair), then
   LiteVAE-S, then TAESD, for as long as the budget lasts. Sections 1-4 are planned to take about 5.5 minutes, so
   a 7-minute budget leaves room for at most the first pair (a pair is estimated at ~100 s until the
   first compilation has been timed); add about 2 minutes of ``--budget_minutes`` per further compiled cell.
   Every cell not compiled is recorded as skipped, with the reason.

Cells that would run out of memory or take too long are recorded as skipped with the reason: the SD-VAE at the
largest resolution and batch of the grid (1024 px x 32 by default: an estimated tens of GiB of activations under
bf16 autocast, an out-of-memory risk on 80 GB cards, for a figure no target uses); a CUDA out-of-memory error in
any cell is caught and recorded the same way. The ``--budget_minutes`` guard (default 7.5) skips, and records as
skipped, any measurement whose estimated time no longer fits, keeping the time estimated for the later sections in
reserve (the quality run is shortened, and says so, rather than skipped when at least half of it still fits).

At the end it writes a summary (``--output_json``) and prints the tables and the ratios the project is judged by,
each beside the published figure where one exists, with its source (LiteVAE, NeurIPS 2024, Table 3: encoder
throughput at batch 32 and 256 px on one Quadro RTX 6000, LiteVAE-S 384 img/s, LiteVAE-B 129, SD-VAE 68, i.e. S
5.6x and B 1.9x the SD-VAE). There are no pass/fail bars: the reader compares.

The headline (section ``headline``, run first, and with ``cache`` the default run, sized for one 8-minute call):
the SD-VAE, TAESD, LiteVAE-S and LiteVAE-B encoders, each in its fastest of ``--headline_modes`` (eager,
``torch.compile``, ``torch.compile`` with CUDA graphs, i.e. ``mode="reduce-overhead"``) at every
``--headline_cells`` cell (256/512/1024 px x batch 1/8/32, in priority order: when the budget runs short the
compiled modes of the last cells are skipped and recorded as such), with the first call's time (compiling and
graph capture, reported apart from throughput) and peak memory; then one distillation step of LiteVAE-B against a
TAEF2-shaped decoder at 128 and 256 px, batch 32, eager and compiled, beside the earlier 252 img/s. Caching end to
end runs at 512 px (``cache_latents`` compiles by default on CUDA; its steady throughput, without the warm-up, is
compared). The older sections (``eager``, ``train``, ``distill``, ``compile``) run when ``--sections`` names them.
``--dry_run`` runs the headline's measuring core on the CPU, tiny and eager, in seconds (what the tests check).

Run on a GPU machine (from the repository root; the machine needs no network when the wheels travel with it)::

    # here, on a machine with the package and a registry:
    pip wheel --no-deps -w .whl .                                  # the package (TAEF2 and the samples inside)
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata   # only if the GPU box lacks them
    mkdir -p carry/photos-train                                    # carry/ and .whl/ are git-ignored
    cp -r ../shared/data/kodak24 carry/                            # Kodak-24, 16 MB: the evaluation set
    cp ../shared/data/photos-train/bsds_* ../shared/data/photos-train/debian_* carry/photos-train/  # 393 photos
    # copy the repository with .whl/ and carry/ to the GPU machine, then there:
    python3 -m pip install --no-deps .whl/*.whl    # with a registry there, `pip install .whl/diffusers_litevae-*.whl`
                                                   # (no --no-deps) fetches diffusers, accelerate, ... instead
    PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 timeout 540 python3 benchmarks/gpu_suite.py \\
        --data_dir carry/photos-train --eval_dir carry/kodak24 \\
        --output_jsonl outputs/gpu_suite.jsonl --output_json outputs/gpu_suite.json

Without a registry on the GPU machine every runtime dependency that machine lacks must travel as a wheel (with
``--no-deps`` install them all in one ``pip install``); ``python3 -c "import diffusers_litevae.training"`` there
says what is still missing. Without ``--data_dir`` / ``--eval_dir`` the run trains and evaluates on the three
bundled 256 px Kodak crops (and their flips and rotations): fine for checking the set-up, but the quality figure
is then measured on training images.

Smoke test (CPU, well under a minute; every code path of the full run, only smaller: 32-64 px, batch 1-3, one
timed call, no ``torch.compile``, 2 distillation steps)::

    python benchmarks/gpu_suite.py --smoke --output_jsonl /tmp/suite.jsonl --output_json /tmp/suite.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

_PROCESS_START = time.perf_counter()  # the budget counts from here (importing torch takes seconds)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import format_ratio, jsonable, measure, time_calls  # noqa: E402

KINDS = ("encoder_speed", "cache_latents", "train_speed", "distill_quality")
# The sections in run order (--sections): eager and compiled encoder speed, caching, training speed, quality.
SECTIONS = ("headline", "eager", "cache", "train", "distill", "compile")
# The default run: the best-mode headline table and caching end to end, sized for one 8-minute call.
DEFAULT_SECTIONS = ("headline", "cache")
MODELS = ("S", "B", "sd-vae", "taesd")
REFERENCE = "sd-vae"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SCRATCH = (
    "cache_images",
    "cache_variants",
    "cache-litevae-b",
    "cache-sd-vae",
    "train_images",
    "teacher_latents",
    "distill-speed-live",
    "distill-speed-cached",
)


# Full-run (CUDA) settings; --smoke replaces them with SMOKE (explicit flags win over both).
FULL = dict(
    budget_minutes=7.5,
    # Priority order: the compiled modes of later cells are the first to be skipped when the budget runs short.
    headline_cells="256x32,512x32,256x1,256x8,512x8,512x1,1024x1,1024x8,1024x32",
    headline_modes="eager,compile+cudagraphs",
    headline_distill="128x32,256x32",
    resolutions="256,512,1024",
    batch_sizes="1,8,32",
    compile_shapes="256x32,512x32,256x8,512x8",
    warmup=3,
    min_time=0.3,
    min_calls=3,
    max_calls=100,
    cache_images=512,
    cache_resolution=512,
    cache_batch_size=32,
    train_resolution=128,
    train_batch_size=32,
    train_steps=100,
    logging_steps=10,
    distill_minutes=3.0,
    lr_warmup_steps=100,
    validation_steps=500,
    eval_resolution=256,
)
SMOKE = dict(
    budget_minutes=2.0,
    headline_cells="32x1,32x2",
    headline_modes="eager",
    headline_distill="32x2",
    resolutions="32,48,64",
    batch_sizes="1,2,3",
    compile_shapes="32x3,48x3,32x2,48x2",
    warmup=1,
    min_time=0.0,
    min_calls=1,
    max_calls=1,
    cache_images=6,
    cache_resolution=32,
    cache_batch_size=2,
    train_resolution=32,
    train_batch_size=2,
    train_steps=2,
    logging_steps=1,
    distill_minutes=0.05,
    lr_warmup_steps=1,
    validation_steps=10**9,
    eval_resolution=32,
)
# Rough seconds each later section needs (what the budget guard keeps in reserve for them): full run, smoke.
ESTIMATES = {
    False: dict(encoder_case=8.0, cache_run=15.0, train_run=30.0, distill_overhead=35.0, compile=45.0),
    True: dict(encoder_case=1.0, cache_run=4.0, train_run=8.0, distill_overhead=8.0, compile=5.0),
}


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="All GPU figures (encoder speed and memory, latent caching, distillation speed and quality) "
        "in one run, with a time budget.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="tiny CPU-friendly run of every code path (seconds).")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="the headline's measuring core on the CPU, tiny and eager (seconds): --smoke --device cpu "
        "--sections headline unless given.",
    )
    parser.add_argument(
        "--sections",
        default=None,
        help=f"which sections to run, a subset of {SECTIONS} (default {','.join(DEFAULT_SECTIONS)}; e.g. "
        "eager,compile for the older eager/compiled encoder grid).",
    )
    parser.add_argument("--headline_cells", default=None, help="RESxBATCH cells of the headline, in priority order.")
    parser.add_argument(
        "--headline_modes", default=None, help=f"modes tried per headline cell, a subset of {HEADLINE_MODES}."
    )
    parser.add_argument("--headline_distill", default=None, help="RESxBATCH of the headline's distillation steps.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:N or cpu.")
    parser.add_argument(
        "--budget_minutes", type=float, default=None, help="skip what no longer fits (default 7.5; 2 with --smoke)."
    )
    parser.add_argument(
        "--output_jsonl",
        default="outputs/gpu_suite.jsonl",
        help="one JSON line per measurement, appended as each finishes.",
    )
    parser.add_argument("--output_json", default="outputs/gpu_suite.json", help="the summary, written at the end.")
    parser.add_argument(
        "--work_dir",
        default=None,
        help="scratch folder (caches, distilled models); default a new "
        "temporary folder, deleted at the end unless --keep_work.",
    )
    parser.add_argument("--keep_work", action="store_true", help="keep --work_dir (e.g. the distilled model).")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="images for the caching run (default: the bundled samples, "
        "with flips and rotations, repeated up to --cache_images).",
    )
    parser.add_argument(
        "--train_data_dir",
        default=None,
        help="training images for the distillation runs "
        "(default: --data_dir; the bundled samples' flips and rotations when that has < 16 images).",
    )
    parser.add_argument(
        "--eval_dir",
        default=None,
        help="evaluation images of the quality run (default: the bundled samples; pass Kodak-24 on a real run).",
    )
    parser.add_argument("--teacher", default=None, help="distillation teacher (default: the bundled TAEF2 pair).")
    parser.add_argument("--models", default=",".join(MODELS), help=f"encoders to time, a subset of {MODELS}.")
    parser.add_argument(
        "--resolutions", default=None, help="encoder grid, px (default 256,512,1024). Targets use the first two."
    )
    parser.add_argument(
        "--batch_sizes",
        default=None,
        help="encoder grid (default 1,8,32). Targets use the largest and the second-largest.",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=["bf16", "fp32"],
        help="bf16 autocast over fp32 weights, or fp32 (default bf16 on CUDA, fp32 on CPU).",
    )
    parser.add_argument(
        "--channels_last",
        default="auto",
        choices=["auto", "on", "off"],
        help="channels_last inputs/weights (auto: on for CUDA, off for CPU).",
    )
    parser.add_argument("--no_compile", action="store_true", help="no torch.compile (always so with --smoke or CPU).")
    parser.add_argument("--compile_mode", default="default", choices=COMPILE_MODES)
    parser.add_argument(
        "--compile_shapes",
        default=None,
        help="RESxBATCH cells to compile, in priority order (default 256x32,512x32,256x8,512x8).",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default 3).")
    parser.add_argument(
        "--min_time", type=float, default=None, help="time at least this many seconds per cell (default 0.3)."
    )
    parser.add_argument("--min_calls", type=int, default=None, help="at least this many timed calls (default 3).")
    parser.add_argument("--max_calls", type=int, default=None, help="at most this many timed calls (default 100).")
    parser.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="loader workers for caching and training (default: min(8, CPUs - 2) on CUDA, 0 on CPU).",
    )
    parser.add_argument("--cache_images", type=int, default=None, help="images per caching run (default 1024).")
    parser.add_argument("--cache_resolution", type=int, default=None, help="caching crop, px (default 256).")
    parser.add_argument("--cache_batch_size", type=int, default=None, help="caching batch (default 32).")
    parser.add_argument("--train_resolution", type=int, default=None, help="distillation crops, px (default 128).")
    parser.add_argument("--train_batch_size", type=int, default=None, help="distillation batch (default 32).")
    parser.add_argument("--train_steps", type=int, default=None, help="steps of each speed run (default 100).")
    parser.add_argument("--distill_minutes", type=float, default=None, help="length of the quality run (default 3).")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="quality run's learning rate.")
    parser.add_argument("--eval_resolution", type=int, default=None, help="centre crops of --eval_dir (default 256).")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.smoke = True
        args.device = "cpu" if "--device" not in (argv if argv is not None else sys.argv) else args.device
        args.sections = args.sections or "headline"
    args.sections = args.sections or ",".join(DEFAULT_SECTIONS)

    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key in ("logging_steps", "lr_warmup_steps", "validation_steps"):
        setattr(args, key, (SMOKE if args.smoke else FULL)[key])

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but torch.cuda.is_available() is False; use --device cpu.")
    args.cuda = cuda
    if args.precision is None:
        args.precision = "bf16" if cuda else "fp32"
    args.use_channels_last = args.channels_last == "on" or (args.channels_last == "auto" and cuda)
    args.compile = cuda and not args.smoke and not args.no_compile
    if args.num_workers is None:
        args.num_workers = max(0, min(8, (os.cpu_count() or 2) - 2)) if cuda else 0
    args.resolutions = _int_list(parser, "--resolutions", args.resolutions)
    args.batch_sizes = sorted(set(_int_list(parser, "--batch_sizes", args.batch_sizes)))
    if any(r % 16 for r in args.resolutions + [args.cache_resolution, args.train_resolution, args.eval_resolution]):
        parser.error("resolutions must be multiples of 16.")
    args.sections = [section.strip() for section in args.sections.split(",") if section.strip()]
    if not args.sections or not set(args.sections) <= set(SECTIONS):
        parser.error(f"--sections: choose from {SECTIONS}, got {args.sections}.")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or not set(args.models) <= set(MODELS):
        parser.error(f"--models: choose from {MODELS}, got {args.models}.")
    try:
        args.compile_shapes = [
            tuple(int(v) for v in cell.lower().split("x")) for cell in args.compile_shapes.split(",") if cell.strip()
        ]
    except ValueError:
        parser.error(f"--compile_shapes takes RESxBATCH cells, e.g. 256x32,512x32; got {args.compile_shapes!r}.")
    if any(len(cell) != 2 for cell in args.compile_shapes):
        parser.error(f"--compile_shapes takes RESxBATCH cells, e.g. 256x32,512x32; got {args.compile_shapes}.")
    args.headline_cells = _cells(parser, "--headline_cells", args.headline_cells)
    args.headline_distill = _cells(parser, "--headline_distill", args.headline_distill)
    args.headline_modes = [m.strip() for m in args.headline_modes.split(",") if m.strip()]
    if not args.headline_modes or not set(args.headline_modes) <= set(HEADLINE_MODES):
        parser.error(f"--headline_modes: choose from {HEADLINE_MODES}, got {args.headline_modes}.")
    if not args.compile:
        args.headline_modes = [m for m in args.headline_modes if m == "eager"] or ["eager"]
    if args.budget_minutes <= 0 or args.min_calls < 1 or args.max_calls < args.min_calls or args.warmup < 0:
        parser.error("--budget_minutes must be > 0, 1 <= --min_calls <= --max_calls, --warmup >= 0.")
    return args


def _cells(parser: argparse.ArgumentParser, flag: str, text: str) -> list[tuple[int, int]]:
    try:
        cells = [tuple(int(v) for v in cell.lower().split("x")) for cell in str(text).split(",") if cell.strip()]
    except ValueError:
        cells = []
    if not cells or any(len(cell) != 2 or min(cell) < 1 for cell in cells):
        parser.error(f"{flag} takes RESxBATCH cells, e.g. 256x32,512x1; got {text!r}.")
    return cells


def _int_list(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        parser.error(f"{flag} takes comma-separated integers, got {text!r}.")
    if not values or min(values) < 1:
        parser.error(f"{flag} takes positive integers, got {text!r}.")
    return values


# ---------------------------------------------------------------------------------------------- budget and records


class Budget:
    """Wall-clock budget of the whole run; ``check`` says why a measurement no longer fits (or ``None``)."""

    def __init__(self, minutes: float, start: float | None = None):
        self.start = time.perf_counter() if start is None else start
        self.total_s = minutes * 60

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def check(self, estimate_s: float, reserve_s: float = 0.0) -> str | None:
        if self.left() >= estimate_s + reserve_s:
            return None
        return f"budget: {max(self.left(), 0):.0f} s of {self.total_s:.0f} s left, this needs ~{estimate_s:.0f} s" + (
            f" and ~{reserve_s:.0f} s stay reserved for later sections" if reserve_s else ""
        )


class Recorder:
    """Appends one JSON line per measurement to the JSONL file (flushed at once) and prints one log line."""

    def __init__(self, path: str, budget: Budget):
        self.path = Path(path) if path else None
        self.budget = budget
        self.run_id = uuid.uuid4().hex[:12]
        self.records: list[dict] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, kind: str, name: str, status: str, text: str = "", **fields) -> dict:
        record = {
            "run_id": self.run_id,
            "kind": kind,
            "name": name,
            "status": status,
            "t_s": round(self.budget.elapsed(), 2),
            **fields,
        }
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(jsonable(record)) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
        if not text:
            text = status.upper() + (f": {fields['reason']}" if fields.get("reason") else "")
        print(f"[{self.budget.elapsed():7.1f} s] {kind:15s} {name:30s} {text}", flush=True)
        return record

    def of(self, kind: str, status: str | None = "ok") -> list[dict]:
        return [r for r in self.records if r["kind"] == kind and (status is None or r["status"] == status)]


def _error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:400]


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if isinstance(error, MemoryError) or (oom is not None and isinstance(error, oom)):
        return True
    return "out of memory" in str(error)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- context


class Context:
    """What every section shares: settings, device, autocast, the budget, the recorder, scratch folders."""

    def __init__(self, args: argparse.Namespace, budget: Budget, recorder: Recorder, work: Path):
        self.args, self.budget, self.rec, self.work = args, budget, recorder, work
        self.device = torch.device(args.device)
        self.est = ESTIMATES[args.smoke]
        self.memory_format = torch.channels_last if args.use_channels_last else torch.contiguous_format
        self._sd_vae = None
        self.cpu_memory = None
        if self.device.type == "cpu":
            try:  # the resident-set peak of one call (Linux/glibc), shared with encoder_speed.py
                from encoder_speed import _CpuPeakMemory

                probe = _CpuPeakMemory()
                self.cpu_memory = probe if probe.available else None
            except Exception:  # noqa: BLE001  (no CPU memory figure is a note, not a failure)
                self.cpu_memory = None

    def autocast(self):
        if self.args.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def mixed_precision(self) -> str:
        return "bf16" if self.args.precision == "bf16" else "no"

    def sd_vae(self):
        """The SD-VAE reference (random weights), built once and shared by the encoder and caching sections."""
        if self._sd_vae is None:
            from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl

            self._sd_vae = sd_vae_autoencoder_kl(seed=0).eval().requires_grad_(False)
        return self._sd_vae

    def reserve(self, *sections: str) -> float:
        """Seconds the later sections need (kept in reserve by the budget guard)."""
        args, est = self.args, self.est
        total = 0.0
        for section in sections:
            if section not in args.sections:
                continue
            if section == "cache":
                total += 2 * est["cache_run"]
            elif section == "train":
                total += 2 * est["train_run"]
            elif section == "distill":
                total += args.distill_minutes * 60 + est["distill_overhead"]
        return total


# ---------------------------------------------------------------------------------------------- 1. encoder speed


class SDVAEEncoder(nn.Module):
    """What ``AutoencoderKL.encode`` runs: ``quant_conv(encoder(x))`` (shares the modules of ``vae``)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))


class TAESDEncoder(nn.Module):
    """What a TAESD ``encode`` runs: ``[-1, 1] -> [0, 1]``, then the TAESD-shaped ``TinyEncoder``."""

    def __init__(self):
        super().__init__()
        from diffusers_litevae.models.tiny_autoencoder import TinyEncoder

        self.encoder = TinyEncoder(latent_channels=4, channels=64, num_blocks=(1, 3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.add(1).div(2))


def build_encoder(name: str, ctx: Context) -> nn.Module:
    torch.manual_seed(0)
    if name in ("S", "B"):
        from diffusers_litevae import LiteVAEEncoder

        encoder = LiteVAEEncoder.from_preset(name, latent_channels=4)  # = AutoencoderLite.from_preset(name).encoder
    elif name == "sd-vae":
        encoder = SDVAEEncoder(ctx.sd_vae())
    elif name == "taesd":
        encoder = TAESDEncoder()
    else:
        raise ValueError(f"unknown encoder {name!r}")
    return encoder.eval().requires_grad_(False)


def skip_rule(name: str, resolution: int, batch: int, args: argparse.Namespace) -> str | None:
    """Cells not worth running (out-of-memory risk or too slow for the budget), with the reason."""
    if (
        name == REFERENCE
        and len(args.resolutions) > 1
        and len(args.batch_sizes) > 1
        and resolution == max(args.resolutions)
        and batch == max(args.batch_sizes)
    ):
        return (
            f"SD-VAE at the grid's largest resolution and batch ({resolution} px x {batch}; on the default grid "
            "1024 px x 32: tens of GiB of activations, an out-of-memory risk on 80 GB cards, and about a second "
            "per call); no target uses this cell"
        )
    return None


def measure_encoder(ctx: Context, model: nn.Module, name: str, resolution: int, batch: int, mode: str) -> dict:
    """One cell: warm-up, peak memory over one call, timed calls. Raises on failure (the caller records it)."""
    args, device = ctx.args, ctx.device
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 3, resolution, resolution, device=device, generator=generator).mul_(2).sub_(1)
    images = images.contiguous(memory_format=ctx.memory_format)
    forward = model
    result: dict = {}
    if mode == "compile":
        kwargs = {} if args.compile_mode == "default" else {"mode": args.compile_mode}
        forward = torch.compile(model, dynamic=False, **kwargs)
    cudagraphs = mode == "compile" and args.compile_mode == "reduce-overhead"

    def call():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), ctx.autocast():
            forward(images)

    try:
        if mode == "compile":
            begin = time.perf_counter()
            call()
            _sync(device)
            result["compile_s"] = round(time.perf_counter() - begin, 2)
        for _ in range(args.warmup):
            call()
        _sync(device)
        # Peak memory = weights + input + what one call allocates (measured as the rise over what was allocated
        # before the call, so that anything else left on the device cannot count).
        resident = (
            sum(p.numel() * p.element_size() for p in model.parameters()) + images.numel() * images.element_size()
        ) / 2**20
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            call()
            _sync(device)
            activations = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            result.update(peak_memory_mib=round(resident + activations, 1), activation_memory_mib=round(activations, 1))
        elif ctx.cpu_memory is not None:
            activations = ctx.cpu_memory.measure(call)
            result.update(peak_memory_mib=round(resident + activations, 1), activation_memory_mib=round(activations, 1))
        else:
            result["peak_memory_mib"] = None
        seconds, calls = time_calls(call, device, args.min_time, args.min_calls, args.max_calls)
        result.update(images_per_s=round(batch / seconds, 3), ms_per_batch=round(seconds * 1e3, 3), timed_calls=calls)
    finally:
        forward = images = None
        if mode == "compile":
            torch._dynamo.reset()
    return result


def run_encoder_cell(
    ctx: Context,
    model: nn.Module,
    name: str,
    resolution: int,
    batch: int,
    mode: str,
    estimate: float,
    reserve: float,
    params: int,
) -> dict:
    fields = dict(
        model=name,
        resolution=resolution,
        batch_size=batch,
        mode=mode,
        parameters=params,
        precision=ctx.args.precision,
        channels_last=ctx.args.use_channels_last,
    )
    label = f"{name} {resolution}px b{batch} {mode}"
    reason = skip_rule(name, resolution, batch, ctx.args) or ctx.budget.check(estimate, reserve)
    if reason:
        return ctx.rec.add("encoder_speed", label, "skipped", reason=reason, **fields)
    begin = time.perf_counter()
    try:
        result = measure_encoder(ctx, model, name, resolution, batch, mode)
    except Exception as error:  # noqa: BLE001  one cell failing must not end the run
        _free(ctx.device)
        if _is_oom(error):
            return ctx.rec.add(
                "encoder_speed",
                label,
                "skipped",
                reason=f"out of memory ({_error_text(error)})",
                duration_s=round(time.perf_counter() - begin, 2),
                **fields,
            )
        return ctx.rec.add(
            "encoder_speed",
            label,
            "failed",
            reason=_error_text(error),
            duration_s=round(time.perf_counter() - begin, 2),
            **fields,
        )
    duration = round(time.perf_counter() - begin, 2)
    peak = result.get("peak_memory_mib")
    text = (
        f"{result['images_per_s']:10.1f} img/s  {result['ms_per_batch']:9.2f} ms/batch  peak "
        f"{'-' if peak is None else f'{peak:.0f}'} MiB"
        + (f"  compile {result['compile_s']:.0f} s" if "compile_s" in result else "")
    )
    return ctx.rec.add("encoder_speed", label, "ok", text=text, duration_s=duration, **fields, **result)


def encoder_section_eager(ctx: Context, encoders: dict[str, nn.Module], params: dict[str, int]) -> None:
    args, device = ctx.args, ctx.device
    reserve = ctx.reserve("cache", "train", "distill")
    # The target models first: if the budget runs short, TAESD's largest cells are what goes.
    for name in sorted(args.models, key=[REFERENCE, "B", "S", "taesd"].index):
        model = encoders[name].to(device=device, memory_format=ctx.memory_format)
        last: tuple[float, int] | None = None  # (seconds, pixels) of this model's last measured cell
        for resolution in args.resolutions:
            for batch in args.batch_sizes:
                pixels = batch * resolution**2
                estimate = ctx.est["encoder_case"]
                if last is not None:
                    estimate = max(1.0 if not args.smoke else 0.1, last[0] * pixels / last[1])
                record = run_encoder_cell(ctx, model, name, resolution, batch, "eager", estimate, reserve, params[name])
                if record["status"] == "ok":
                    last = (record["duration_s"], pixels)
        encoders[name] = model.to("cpu")
        _free(device)


def compile_units(args: argparse.Namespace) -> list[tuple[tuple[int, int], list[str]]]:
    """Compiled cells in priority order: per target cell the SD-VAE and B together, then S; then the rest."""
    units, extras = [], []
    largest = max(args.batch_sizes)
    for cell in args.compile_shapes:
        pair = [m for m in (REFERENCE, "B") if m in args.models]
        if pair:
            units.append((cell, pair))
        if "S" in args.models:
            (units if cell[1] == largest else extras).append((cell, ["S"]))
        if "taesd" in args.models:
            extras.append((cell, ["taesd"]))
    return units + extras


def encoder_section_compiled(ctx: Context, encoders: dict[str, nn.Module], params: dict[str, int]) -> None:
    args, device = ctx.args, ctx.device
    planned = {(cell, m) for cell, models in compile_units(args) for m in models}
    grid = [(r, b) for r in args.resolutions for b in args.batch_sizes]
    why_not = None
    if not args.compile:
        why_not = (
            "--smoke: no torch.compile"
            if args.smoke
            else "--no_compile"
            if args.no_compile
            else f"torch.compile is measured on CUDA only (device {device.type})"
        )
    for name in args.models:  # cells that are never compiled, recorded once each
        for resolution, batch in grid:
            if why_not or ((resolution, batch), name) not in planned:
                reason = why_not or (
                    "not in --compile_shapes: each compilation costs ~30-60 s per model and shape, so "
                    "only the target cells are compiled"
                )
                ctx.rec.add(
                    "encoder_speed",
                    f"{name} {resolution}px b{batch} compile",
                    "skipped",
                    reason=reason,
                    model=name,
                    resolution=resolution,
                    batch_size=batch,
                    mode="compile",
                )
    if why_not:
        return
    compile_seconds: dict[str, float] = {}
    for (resolution, batch), models in compile_units(args):
        if (resolution, batch) not in grid:
            for name in models:
                ctx.rec.add(
                    "encoder_speed",
                    f"{name} {resolution}px b{batch} compile",
                    "skipped",
                    reason="compile cell outside the --resolutions x --batch_sizes grid",
                    model=name,
                    resolution=resolution,
                    batch_size=batch,
                    mode="compile",
                )
            continue
        default = max(compile_seconds.values(), default=ctx.est["compile"])
        estimate = sum(compile_seconds.get(name, default) * 1.1 + 3 for name in models)
        reason = ctx.budget.check(estimate)
        for name in models:
            if reason:  # the unit is all or nothing, so that compiled SD-VAE and B figures come in pairs
                ctx.rec.add(
                    "encoder_speed",
                    f"{name} {resolution}px b{batch} compile",
                    "skipped",
                    reason=reason,
                    model=name,
                    resolution=resolution,
                    batch_size=batch,
                    mode="compile",
                )
                continue
            model = encoders[name].to(device=device, memory_format=ctx.memory_format)
            record = run_encoder_cell(ctx, model, name, resolution, batch, "compile", 0.0, 0.0, params[name])
            if record.get("compile_s") is not None:
                compile_seconds[name] = record["compile_s"]
            encoders[name] = model.to("cpu")
            _free(device)


# ---------------------------------------------------------------------------------------------- data


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def dihedral_variants(sources: list[Path], out: Path, max_side: int | None = None) -> list[Path]:
    """The 8 flips/rotations of each image as PNG files in ``out`` (distinct training images from a few photos),
    shrunk to fit ``max_side`` if given (``--smoke``: small images keep the CPU run short)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    ops = [
        None,
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.FLIP_TOP_BOTTOM,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
    ]
    paths = []
    for source in sources:
        with Image.open(source) as image:
            image = image.convert("RGB")
            if max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            for index, op in enumerate(ops):
                path = out / f"{source.stem}_d{index}.png"
                (image if op is None else image.transpose(op)).save(path)
                paths.append(path)
    return paths


def training_folder(ctx: Context) -> Path:
    """``--train_data_dir`` (or ``--data_dir``) as is, or the flips/rotations of a folder with under 16 images."""
    from diffusers_litevae import pretrained_path

    args = ctx.args
    folder = Path(args.train_data_dir or args.data_dir or pretrained_path("samples"))
    images = _images_in(folder)
    if not images:
        raise SystemExit(f"no images in {folder}")
    if len(images) >= 16:
        return folder
    out = ctx.work / "train_images"
    if not out.exists():
        dihedral_variants(images, out, _smoke_side(args))
    return out


def _smoke_side(args: argparse.Namespace) -> int | None:
    return 2 * max(args.train_resolution, args.cache_resolution) if args.smoke else None


def caching_folder(ctx: Context) -> Path:
    """Exactly ``--cache_images`` images: the first ones of ``--data_dir``, or its flips/rotations repeated."""
    from diffusers_litevae import pretrained_path

    args = ctx.args
    folder = Path(args.data_dir or pretrained_path("samples"))
    images = _images_in(folder)
    if not images:
        raise SystemExit(f"no images in {folder}")
    out = ctx.work / "cache_images"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if len(images) < args.cache_images:
        images = dihedral_variants(images, ctx.work / "cache_variants", _smoke_side(args))
    for index in range(args.cache_images):  # symlinks: the same files, read as distinct images
        source = images[index % len(images)]
        os.symlink(source.resolve(), out / f"{index:05d}_{source.name}")
    return out


# ---------------------------------------------------------------------------------------------- 2. caching


def cache_section(ctx: Context) -> None:
    from diffusers_litevae import AutoencoderLite
    from diffusers_litevae.caching import TransformConfig, cache_latents
    from diffusers_litevae.vae_io import posterior_moments

    args, device = ctx.args, ctx.device
    names = ("litevae-b", REFERENCE)
    try:
        folder = caching_folder(ctx)
    except Exception as error:  # noqa: BLE001
        for name in names:
            ctx.rec.add("cache_latents", name, "failed", reason=f"preparing images: {_error_text(error)}")
        return
    transform = TransformConfig(resolution=args.cache_resolution, bucketing=False, crop="center")
    results = {}
    for index, name in enumerate(names):
        fields = dict(
            vae=name,
            images=args.cache_images,
            resolution=args.cache_resolution,
            batch_size=args.cache_batch_size,
            num_workers=args.num_workers,
            precision=args.precision,
            channels_last=args.use_channels_last,
            data_dir=str(args.data_dir or "bundled samples"),
        )
        reason = ctx.budget.check(
            ctx.est["cache_run"], ctx.reserve("train", "distill") + (ctx.est["cache_run"] if index == 0 else 0)
        )
        if reason:
            ctx.rec.add("cache_latents", name, "skipped", reason=reason, **fields)
            continue
        begin = time.perf_counter()
        vae = None
        try:
            torch.manual_seed(0)
            vae = AutoencoderLite.from_preset("B").eval().requires_grad_(False) if name == "litevae-b" else ctx.sd_vae()
            vae.to(device=device, memory_format=ctx.memory_format)
            # Warm-up at the caching shape (cuDNN's algorithm search), so that neither VAE pays it in its figure.
            warm = torch.rand(args.cache_batch_size, 3, args.cache_resolution, args.cache_resolution, device=device)
            with torch.inference_mode(), ctx.autocast():
                posterior_moments(vae, warm.mul(2).sub(1).contiguous(memory_format=ctx.memory_format))
            _sync(device)
            report = cache_latents(
                folder,
                vae,
                ctx.work / f"cache-{name}",
                transform=transform,
                dtype="bf16",
                batch_size=args.cache_batch_size,
                num_workers=args.num_workers,
                mixed_precision=ctx.mixed_precision,
                channels_last=args.use_channels_last,
                device=device,
                progress=False,
                caption_extension=None,
            )
            if report.num_encoded != args.cache_images:
                raise RuntimeError(
                    f"encoded {report.num_encoded} of {args.cache_images} images ({report.num_failed} failed)"
                )
        except Exception as error:  # noqa: BLE001
            ctx.rec.add(
                "cache_latents",
                name,
                "failed",
                reason=_error_text(error),
                duration_s=round(time.perf_counter() - begin, 2),
                **fields,
            )
            continue
        finally:
            if vae is not None:
                vae.to("cpu")
            vae = None
            _free(device)
        # Compiled runs (the default on CUDA) spend their first batches compiling: compare steady throughput.
        results[name] = report.steady_images_per_s or report.images_per_s
        extra = {}
        if name == REFERENCE and "litevae-b" in results:
            extra["litevae_b_speedup_vs_sd_vae"] = round(results["litevae-b"] / results[name], 3)
        ctx.rec.add(
            "cache_latents",
            name,
            "ok",
            text=f"{report.images_per_s:10.1f} img/s end to end ({report.num_encoded} images, encode phase "
            f"{report.timings.get('encode_phase', float('nan')):.1f} s)"
            + (f"  B/SD-VAE {extra['litevae_b_speedup_vs_sd_vae']:.2f}x" if extra else ""),
            duration_s=round(time.perf_counter() - begin, 2),
            images_per_s=round(report.images_per_s, 3),
            steady_images_per_s=round(report.steady_images_per_s, 3),
            compiled=report.compiled,
            resolution=args.cache_resolution,
            wall_s=round(report.wall_s, 2),
            timings_s={k: round(v, 3) for k, v in report.timings.items()},
            **fields,
            **extra,
        )
        shutil.rmtree(ctx.work / f"cache-{name}", ignore_errors=True)


# ---------------------------------------------------------------------------------------------- headline

# Modes of the headline table: each model is reported in its fastest.
HEADLINE_MODES = ("eager", "compile", "compile+cudagraphs")
# Published ratios to the SD-VAE encoder, printed beside the measured ones (model -> (ratio, source)).
PAPER_SPEEDUP = {
    "B": (1.9, "LiteVAE paper Table 3: 129 vs 68 img/s, 256 px, batch 32, Quadro RTX 6000"),
    "S": (5.6, "LiteVAE paper Table 3: 384 vs 68 img/s, 256 px, batch 32, Quadro RTX 6000"),
}
# The distillation step before compiled paths: LiteVAE-B vs TAEF2, 128 px, batch 32, eager, one H200.
EARLIER_DISTILL_STEP = (252.0, "gpu_suite_h200.json: B vs TAEF2, 128 px, batch 32, eager bf16, H200")


def headline_encoder_cell(ctx: Context, model: nn.Module, resolution: int, batch: int, mode: str) -> dict:
    """One encoder at one size in one mode: images/s, first-call (compile) time and peak memory. Raises on
    failure."""
    args, device = ctx.args, ctx.device
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 3, resolution, resolution, device=device, generator=generator).mul_(2).sub_(1)
    images = images.contiguous(memory_format=ctx.memory_format)
    forward = model
    graphs = mode == "compile+cudagraphs"
    if mode != "eager":
        forward = torch.compile(model, dynamic=False, **({"mode": "reduce-overhead"} if graphs else {}))

    def call():
        if graphs and device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), ctx.autocast():
            forward(images)

    try:
        # CUDA-graph trees record on the third call: warm up at least that long so capture is not timed.
        warmup = max(args.warmup, 3 if graphs else 1)
        return measure(
            call,
            device,
            items_per_call=batch,
            warmup=warmup,
            min_time=args.min_time,
            min_calls=args.min_calls,
            max_calls=args.max_calls,
        )
    finally:
        forward = images = None
        if mode != "eager":
            torch._dynamo.reset()


def headline_distill_step(ctx: Context, student_name: str, resolution: int, batch: int, compiled: bool) -> dict:
    """One distillation step as ``litevae distill`` runs it with cached teacher targets: student encoder forward,
    a frozen TAEF2-shaped decoder (random weights: speed only) on the student's latents, latent and image losses,
    backward and an AdamW step. Raises on failure."""
    from diffusers_litevae import AutoencoderLite, pretrained_path
    from diffusers_litevae.models.litevae_encoder import encoder_preset

    args, device = ctx.args, ctx.device
    config = dict(AutoencoderLite.load_config(pretrained_path("litevae-s-taef2")))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    vae = AutoencoderLite.from_config({**config, **encoder_preset(student_name).config_kwargs()}).to(device)
    vae = vae.to(memory_format=ctx.memory_format)
    vae.decoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(vae.encoder.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 3, resolution, resolution, device=device, generator=generator).mul_(2).sub_(1)
    images = images.contiguous(memory_format=ctx.memory_format)
    factor = 2**vae.config.wavelet_levels
    target = torch.randn(batch, vae.config.latent_channels, resolution // factor, resolution // factor, device=device)

    def losses(x, latents):
        with ctx.autocast():
            mean = vae.encode(x).latent_dist.mean
            decoded = vae.decode(mean).sample
            return (mean.float() - latents).square().mean() + (decoded.float() - x).abs().mean()

    forward = torch.compile(losses, dynamic=False) if compiled else losses

    def step():
        forward(images, target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        return measure(
            step,
            device,
            items_per_call=batch,
            warmup=max(args.warmup, 2),
            min_time=args.min_time,
            min_calls=args.min_calls,
            max_calls=args.max_calls,
        )
    finally:
        vae = optimizer = forward = None
        if compiled:
            torch._dynamo.reset()


def _headline_run(ctx: Context, kind: str, label: str, fields: dict, measure_cell, *cell_args) -> None:
    """Record ``measure_cell(*cell_args)``: ok with its figures, skipped on out-of-memory, else failed."""
    begin = time.perf_counter()
    try:
        result = measure_cell(*cell_args)
    except Exception as error:  # noqa: BLE001
        status = "skipped" if _is_oom(error) else "failed"
        ctx.rec.add(kind, label, status, reason=_error_text(error), **fields)
        return
    finally:
        _free(ctx.device)
    ctx.rec.add(
        kind,
        label,
        "ok",
        text=f"{result['items_per_s']:10.1f} img/s  first call {result['first_call_s']:.1f} s",
        duration_s=round(time.perf_counter() - begin, 2),
        **fields,
        **result,
    )


def headline_section(ctx: Context, encoders: dict[str, nn.Module]) -> None:
    """The best-mode comparison: every model in every mode of ``--headline_modes`` at every cell of
    ``--headline_cells``, then the distillation step at ``--headline_distill`` sizes, eager and compiled."""
    args, device = ctx.args, ctx.device
    for resolution, batch in args.headline_cells:
        for name, model in encoders.items():
            reason = skip_rule(name, resolution, batch, args)
            for mode in args.headline_modes:
                label = f"{name} {resolution}px b{batch} {mode}"
                fields = dict(model=name, resolution=resolution, batch_size=batch, mode=mode)
                if reason is None and mode != "eager":
                    reason_mode = ctx.budget.check(ctx.est["compile"], ctx.reserve("cache", "train", "distill"))
                else:
                    reason_mode = reason or ctx.budget.check(ctx.est["encoder_case"])
                if reason_mode:
                    ctx.rec.add("headline", label, "skipped", reason=reason_mode, **fields)
                    continue
                _headline_run(
                    ctx,
                    "headline",
                    label,
                    fields,
                    headline_encoder_cell,
                    ctx,
                    model.to(device, memory_format=ctx.memory_format),
                    resolution,
                    batch,
                    mode,
                )
    for resolution, batch in args.headline_distill:
        for compiled in (False, True) if args.compile else (False,):
            mode = "compile" if compiled else "eager"
            label = f"distill step B {resolution}px b{batch} {mode}"
            fields = dict(model="B", resolution=resolution, batch_size=batch, mode=mode)
            reason = ctx.budget.check(ctx.est["compile"] if compiled else ctx.est["encoder_case"])
            if reason:
                ctx.rec.add("headline_distill", label, "skipped", reason=reason, **fields)
                continue
            _headline_run(
                ctx,
                "headline_distill",
                label,
                fields,
                headline_distill_step,
                ctx,
                "B",
                resolution,
                batch,
                compiled,
            )


def headline_table(records: list[dict]) -> dict:
    """``{"cells": {"256px_b32": {model: best}}, "distill_step": {...}}``: each model's fastest mode per cell, its
    compile time and peak memory, and its ratio to the SD-VAE's fastest (with the paper's ratio beside it)."""
    cells: dict[str, dict] = {}
    for r in records:
        if r["kind"] != "headline" or r["status"] != "ok":
            continue
        key = f"{r['resolution']}px_b{r['batch_size']}"
        best = cells.setdefault(key, {}).get(r["model"])
        if best is None or r["items_per_s"] > best["images_per_s"]:
            cells[key][r["model"]] = {
                "mode": r["mode"],
                "images_per_s": r["items_per_s"],
                "first_call_s": r["first_call_s"],
                "peak_memory_mib": r.get("peak_memory_mib"),
            }
    for models in cells.values():
        reference = models.get(REFERENCE, {}).get("images_per_s")
        for name, best in models.items():
            if reference and name != REFERENCE:
                best["speedup_vs_sd_vae"] = round(best["images_per_s"] / reference, 3)
                paper = PAPER_SPEEDUP.get(name)
                if paper:
                    best["beside"] = format_ratio(best["speedup_vs_sd_vae"], *paper)
    distill = {}
    for r in records:
        if r["kind"] == "headline_distill" and r["status"] == "ok":
            distill[f"{r['resolution']}px_b{r['batch_size']} {r['mode']}"] = {
                "images_per_s": r["items_per_s"],
                "first_call_s": r["first_call_s"],
                "peak_memory_mib": r.get("peak_memory_mib"),
                "beside": format_ratio(r["items_per_s"], *EARLIER_DISTILL_STEP, unit=" img/s"),
            }
    return {"cells": cells, "distill_step": distill}


def print_headline(table: dict) -> None:
    print("\n== headline: each model in its fastest mode ==")
    print(f"{'cell':12s} {'model':7s} {'mode':20s} {'img/s':>10s} {'x SD-VAE':>9s} {'compile s':>10s} {'peak MiB':>9s}")
    for key, models in table["cells"].items():
        for name, best in models.items():
            print(
                f"{key:12s} {name:7s} {best['mode']:20s} {best['images_per_s']:10.1f} "
                f"{_fmt(best.get('speedup_vs_sd_vae'), '.2f'):>9s} {_fmt(best['first_call_s']):>10s} "
                f"{_fmt(best['peak_memory_mib'], '.0f'):>9s}"
            )
            if best.get("beside"):
                print(f"{'':12s} {'':7s} ratio {best['beside']}")
    for key, step in table["distill_step"].items():
        print(f"distill step B {key}: {step['beside']}; first call {step['first_call_s']:.1f} s")


# ---------------------------------------------------------------------------------------------- 3./4. distillation


def distill_config(ctx: Context, train_dir: Path, output_dir: Path, **overrides):
    from diffusers_litevae import pretrained_path
    from diffusers_litevae.training import DistillConfig

    args = ctx.args
    values = dict(
        teacher=args.teacher or pretrained_path("taef2"),
        student="B",
        train_data_dir=str(train_dir),
        resolution_schedule=str(args.train_resolution),
        train_batch_size=args.train_batch_size,
        mixed_precision=ctx.mixed_precision,
        validation_dir=args.eval_dir or pretrained_path("samples"),
        num_validation_images=0,
        validation_resolution=args.eval_resolution,
        validation_steps=10**9,
        checkpointing_steps=10**9,
        checkpoints_total_limit=1,
        logging_steps=args.logging_steps,
        lr_warmup_steps=args.lr_warmup_steps,
        dataloader_num_workers=args.num_workers,
        channels_last=args.use_channels_last,
        allow_tf32=ctx.device.type == "cuda",
        progress_bar=False,
        output_dir=str(output_dir),
        seed=0,
    )
    values.update(overrides)
    return DistillConfig(**values)


def steady_images_per_s(result: dict, batch_size: int) -> float | None:
    """Images/s between the first and the last logged step (the first steps' warm-up left out)."""
    history = [h for h in result.get("loss_history", []) if h.get("images_per_s")]
    if len(history) < 2:
        return None
    s0, r0 = history[0]["step"], history[0]["images_per_s"]
    s1, r1 = history[-1]["step"], history[-1]["images_per_s"]
    seconds = s1 * batch_size / r1 - s0 * batch_size / r0
    return round((s1 - s0) * batch_size / seconds, 3) if seconds > 0 else None


def train_speed_section(ctx: Context, train_dir: Path) -> None:
    from diffusers_litevae.training import distill

    args = ctx.args
    rates = {}
    for index, mode in enumerate(("live", "cached")):
        fields = dict(
            targets=mode,
            student="B",
            teacher="TAEF2" if not args.teacher else args.teacher,
            resolution=args.train_resolution,
            batch_size=args.train_batch_size,
            steps=args.train_steps,
            precision=args.precision,
            num_workers=args.num_workers,
            train_data_dir=str(train_dir),
        )
        reserve = ctx.reserve("distill") + (ctx.est["train_run"] if index == 0 else 0)
        reason = ctx.budget.check(ctx.est["train_run"], reserve)
        if reason:
            ctx.rec.add("train_speed", f"B {mode} targets", "skipped", reason=reason, **fields)
            continue
        begin = time.perf_counter()
        try:
            config = distill_config(
                ctx,
                train_dir,
                ctx.work / f"distill-speed-{mode}",
                max_train_steps=args.train_steps,
                max_validation_images=2,
                num_grid_images=1,
                teacher_latents=str(ctx.work / "teacher_latents") if mode == "cached" else None,
            )
            result = distill(config)
        except Exception as error:  # noqa: BLE001
            ctx.rec.add(
                "train_speed",
                f"B {mode} targets",
                "failed",
                reason=_error_text(error),
                trace=traceback.format_exc()[-2000:],
                duration_s=round(time.perf_counter() - begin, 2),
                **fields,
            )
            continue
        wall = time.perf_counter() - begin
        _free(ctx.device)
        if not args.keep_work:
            shutil.rmtree(config.output_dir, ignore_errors=True)
        steady = steady_images_per_s(result, args.train_batch_size)
        rates[mode] = steady or result["train_images_per_s"]
        extra = {}
        if mode == "cached" and "live" in rates:
            extra["cached_speedup_vs_live"] = round(rates["cached"] / rates["live"], 3)
        ctx.rec.add(
            "train_speed",
            f"B {mode} targets",
            "ok",
            text=f"{result['train_images_per_s']:10.1f} img/s (steady {steady if steady is not None else '-'}), "
            f"{result['final_metrics']['step']} steps, set-up + finish {wall - result['train_time_s']:.1f} s"
            + (f"  cached/live {extra['cached_speedup_vs_live']:.2f}x" if extra else ""),
            duration_s=round(wall, 2),
            train_images_per_s=result["train_images_per_s"],
            steady_images_per_s=steady,
            train_time_s=result["train_time_s"],
            steps_done=result["final_metrics"]["step"],
            setup_and_finish_s=round(wall - result["train_time_s"], 2),
            **fields,
            **extra,
        )


def distill_quality_section(ctx: Context, train_dir: Path) -> None:
    from diffusers_litevae import pretrained_path
    from diffusers_litevae.training import distill

    args = ctx.args
    minutes = args.distill_minutes
    eval_dir = args.eval_dir or pretrained_path("samples")
    fields = dict(
        student="B",
        teacher="TAEF2" if not args.teacher else args.teacher,
        targets="cached",
        precision=args.precision,
        learning_rate=args.learning_rate,
        ema=True,
        resolution=args.train_resolution,
        batch_size=args.train_batch_size,
        eval_dir=str(eval_dir),
        eval_resolution=args.eval_resolution,
        train_data_dir=str(train_dir),
        eval_is_training_data=Path(eval_dir).resolve()
        == Path(args.train_data_dir or args.data_dir or pretrained_path("samples")).resolve(),
    )
    needed = minutes * 60 + ctx.est["distill_overhead"]
    if ctx.budget.check(needed):
        fitting = (ctx.budget.left() - ctx.est["distill_overhead"]) / 60
        if fitting < minutes / 2:
            ctx.rec.add(
                "distill_quality",
                "B vs TAEF2",
                "skipped",
                reason=ctx.budget.check(needed),
                planned_minutes=minutes,
                **fields,
            )
            return
        fields["shortened_from_minutes"] = minutes
        minutes = round(fitting, 2)
    begin = time.perf_counter()
    try:
        config = distill_config(
            ctx,
            train_dir,
            ctx.work / "distill-quality",
            teacher_latents=str(ctx.work / "teacher_latents"),
            max_minutes=minutes,
            max_train_steps=args.train_steps if args.smoke else 10**7,
            learning_rate=args.learning_rate,
            use_ema=True,
            validation_steps=args.validation_steps,
        )
        result = distill(config)
    except Exception as error:  # noqa: BLE001
        ctx.rec.add(
            "distill_quality",
            "B vs TAEF2",
            "failed",
            reason=_error_text(error),
            trace=traceback.format_exc()[-2000:],
            duration_s=round(time.perf_counter() - begin, 2),
            **fields,
        )
        return
    _free(ctx.device)
    if not args.keep_work:  # keep the distilled model, drop the training state
        shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
    metrics = result["final_metrics"]
    curve = [{k: e.get(k) for k in ("step", "train_time_s", "psnr_student", "psnr_teacher")} for e in result["curve"]]
    ctx.rec.add(
        "distill_quality",
        "B vs TAEF2",
        "ok",
        text=f"PSNR student {metrics['psnr_student']:.2f} dB / teacher {metrics['psnr_teacher']:.2f} dB after "
        f"{metrics['step']} steps ({result['train_time_s']:.0f} s, {result['train_images_per_s']:.0f} img/s)",
        duration_s=round(time.perf_counter() - begin, 2),
        minutes=minutes,
        psnr_student=metrics["psnr_student"],
        psnr_teacher=metrics["psnr_teacher"],
        ssim_student=metrics.get("ssim_student"),
        ssim_teacher=metrics.get("ssim_teacher"),
        latent_mse=metrics.get("latent_mse"),
        eval_images=metrics.get("eval_images"),
        steps_done=metrics["step"],
        images_seen=metrics["images_seen"],
        train_time_s=result["train_time_s"],
        train_images_per_s=result["train_images_per_s"],
        curve=curve,
        model_dir=config.output_dir,
        **fields,
    )


# ---------------------------------------------------------------------------------------------- summary and targets


def encoder_table(records: list[dict]) -> dict[str, dict]:
    """Per cell and model: eager / compiled img/s, the best of them, eager peak memory, ratios to the SD-VAE."""
    table: dict[str, dict] = {}
    for r in records:
        if r["kind"] != "encoder_speed":
            continue
        cell = table.setdefault(f"{r['resolution']}px_b{r['batch_size']}", {}).setdefault(r["model"], {})
        if r["status"] == "ok":
            cell[f"{r['mode']}_images_per_s"] = r["images_per_s"]
            cell[f"{r['mode']}_peak_memory_mib"] = r.get("peak_memory_mib")
            if r.get("compile_s") is not None:
                cell["compile_s"] = r["compile_s"]
        else:
            cell[f"{r['mode']}_status"] = f"{r['status']}: {r.get('reason', '')}"
    for models in table.values():
        for cell in models.values():
            rates = {m: cell.get(f"{m}_images_per_s") for m in ("eager", "compile")}
            rates = {m: v for m, v in rates.items() if v}
            if rates:
                best = max(rates, key=rates.get)
                cell["best_mode"], cell["best_images_per_s"] = best, rates[best]
        reference = models.get(REFERENCE, {})
        for cell in models.values():
            if cell.get("best_images_per_s") and reference.get("best_images_per_s"):
                cell["speedup_vs_sd_vae"] = round(cell["best_images_per_s"] / reference["best_images_per_s"], 3)
            if cell.get("eager_peak_memory_mib") and reference.get("eager_peak_memory_mib"):
                ratio = cell["eager_peak_memory_mib"] / reference["eager_peak_memory_mib"]
                cell["memory_ratio_vs_sd_vae"] = round(ratio, 3)
    return table


def ratio_comparisons(table: dict[str, dict], args: argparse.Namespace, device_type: str) -> list[dict]:
    """The ratios the project is judged by, from the eager/compiled grid, each beside the published figure where one
    exists (no pass/fail: ``value``, ``reference``, ``source`` and a ``beside`` line to print)."""
    largest = max(args.batch_sizes)
    small = args.batch_sizes[-2] if len(args.batch_sizes) > 1 else None
    note = "" if device_type == "cuda" else " (a CPU run: not comparable to GPU figures)"
    specs = []
    for r in args.resolutions[:2]:
        for model in ("B", "S"):
            specs.append((model, r, largest, "speedup_vs_sd_vae", "best_images_per_s", "x SD-VAE img/s, best modes"))
    for r in args.resolutions[:2]:
        specs.append(("B", r, largest, "memory_ratio_vs_sd_vae", "eager_peak_memory_mib", "x SD-VAE peak memory"))
    if small is not None:
        for r in args.resolutions:
            specs.append(("B", r, small, "speedup_vs_sd_vae", "best_images_per_s", "x SD-VAE img/s, best modes"))
    comparisons = []
    for model, r, b, metric, basis, what in specs:
        models = table.get(f"{r}px_b{b}", {})
        value = models.get(model, {}).get(metric)
        reference, source = (
            PAPER_SPEEDUP.get(model, (None, "")) if metric == "speedup_vs_sd_vae" and b == largest else (None, "")
        )
        entry = {
            "id": f"{model}_{metric}_{r}px_b{b}",
            "what": f"LiteVAE-{model} {what} at {r} px, batch {b}{note}",
            "model": model,
            "resolution": r,
            "batch_size": b,
            "metric": metric,
            "value": value,
            "reference": reference,
            "source": source or None,
        }
        if value is None:
            missing = [m for m in (model, REFERENCE) if not models.get(m, {}).get(basis)]
            details = "; ".join(f"{m}: {models.get(m, {}).get('eager_status', 'not run')}" for m in missing)
            entry["reason"] = f"no {basis} for {', '.join(missing) or model} ({details})" if missing else f"no {metric}"
        entry["beside"] = f"{entry['what']}: {format_ratio(value, reference, source)}"
        comparisons.append(entry)
    return comparisons


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(summary: dict, args: argparse.Namespace) -> None:
    print(
        f"\n== encoder speed ({summary['device']}, {args.precision}"
        f"{', channels_last' if args.use_channels_last else ''}) =="
    )
    print(
        f"{'cell':14s} {'model':7s} {'eager img/s':>12s} {'compiled':>10s} {'best':>10s} {'x SD-VAE':>9s} "
        f"{'peak MiB':>9s} {'mem x SD':>9s}"
    )
    for key, models in summary["encoder_speed"].items():
        for name in args.models:
            cell = models.get(name)
            if cell is None:
                continue
            eager = _fmt(cell.get("eager_images_per_s")) if "eager_status" not in cell else "skipped"
            compiled = _fmt(cell.get("compile_images_per_s")) if "compile_status" not in cell else "-"
            print(
                f"{key:14s} {name:7s} {eager:>12s} {compiled:>10s} {_fmt(cell.get('best_images_per_s')):>10s} "
                f"{_fmt(cell.get('speedup_vs_sd_vae'), '.2f'):>9s} "
                f"{_fmt(cell.get('eager_peak_memory_mib'), '.0f'):>9s} "
                f"{_fmt(cell.get('memory_ratio_vs_sd_vae'), '.2f'):>9s}"
            )
    print("\n== latent caching end to end ==")
    for name, r in summary["cache_latents"].items():
        print(f"  {name:10s} {r}")
    print("\n== distillation speed (LiteVAE-B vs TAEF2) ==")
    for name, r in summary["train_speed"].items():
        print(f"  {name:10s} {r}")
    print("\n== distillation quality ==")
    print(f"  {summary['distill_quality']}")
    print("\n== ratios (beside the published figure, where one exists) ==")
    for c in summary["comparisons"]:
        print(f"  {c['beside']}" + (f"  ({c['reason']})" if c.get("reason") else ""))
    print_headline(summary["headline"])


def build_summary(rec: Recorder, args: argparse.Namespace, environment: dict, budget: Budget) -> dict:
    table = encoder_table(rec.records)
    cache = {
        r["name"]: {
            k: r.get(k)
            for k in ("status", "images_per_s", "reason", "litevae_b_speedup_vs_sd_vae")
            if r.get(k) is not None
        }
        for r in rec.of("cache_latents", None)
    }
    train = {
        r["targets"]: {
            k: r.get(k)
            for k in ("status", "train_images_per_s", "steady_images_per_s", "reason", "cached_speedup_vs_live")
            if r.get(k) is not None
        }
        for r in rec.of("train_speed", None)
    }
    quality = next(iter(rec.of("distill_quality", None)), {})
    quality = {
        k: quality.get(k)
        for k in (
            "status",
            "reason",
            "psnr_student",
            "psnr_teacher",
            "steps_done",
            "minutes",
            "train_images_per_s",
            "eval_dir",
            "eval_is_training_data",
        )
        if quality.get(k) is not None
    }
    return {
        "run_id": rec.run_id,
        **environment,
        "wall_s": round(budget.elapsed(), 1),
        "budget_s": budget.total_s,
        "settings": {k: v for k, v in vars(args).items()},
        "encoder_speed": table,
        "cache_latents": cache,
        "train_speed": train,
        "distill_quality": quality,
        "headline": headline_table(rec.records),
        "comparisons": ratio_comparisons(table, args, torch.device(args.device).type),
        "skipped": [f"{r['kind']} {r['name']}: {r.get('reason')}" for r in rec.records if r["status"] == "skipped"],
        "failed": [f"{r['kind']} {r['name']}: {r.get('reason')}" for r in rec.records if r["status"] == "failed"],
        "measurements": rec.records,
    }


def describe_environment(args: argparse.Namespace) -> dict:
    import diffusers

    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "smoke": args.smoke,
    }


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_minutes, _PROCESS_START)
    rec = Recorder(args.output_jsonl, budget)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    environment = describe_environment(args)
    rec.add(
        "run",
        "start",
        "ok",
        text=f"{environment['device']}, torch {environment['torch']}, budget "
        f"{args.budget_minutes:g} min, work dir {work}",
        **environment,
        settings={k: v for k, v in vars(args).items()},
    )
    ctx = Context(args, budget, rec, work)
    try:
        encoders, params = {}, {}
        for name in args.models:
            encoders[name] = build_encoder(name, ctx)
            params[name] = sum(p.numel() for p in encoders[name].parameters())
        run = set(args.sections)
        if "headline" in run:
            headline_section(ctx, encoders)
        if "eager" in run:
            encoder_section_eager(ctx, encoders, params)
        if "cache" in run:
            cache_section(ctx)
        if run & {"train", "distill"}:
            try:
                train_dir = training_folder(ctx)
            except BaseException as error:  # noqa: BLE001
                for kind, name in (
                    ("train_speed", "B live targets"),
                    ("train_speed", "B cached targets"),
                    ("distill_quality", "B vs TAEF2"),
                ):
                    rec.add(kind, name, "failed", reason=f"training images: {_error_text(error)}")
            else:
                if "train" in run:
                    train_speed_section(ctx, train_dir)
                if "distill" in run:
                    distill_quality_section(ctx, train_dir)
        if "compile" in run:
            encoder_section_compiled(ctx, encoders, params)
    finally:
        summary = build_summary(rec, args, environment, budget)
        for comparison in summary["comparisons"]:
            measured = comparison["value"] is not None
            rec.add(
                "comparison",
                comparison["id"],
                "ok" if measured else "not measured",
                text=comparison["beside"],
                **{k: v for k, v in comparison.items() if k != "id"},
            )
        if args.output_json:
            Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output_json).write_text(json.dumps(jsonable(summary), indent=1) + "\n")
        print_report(summary, args)
        print(
            f"\n{len(rec.records)} records in {args.output_jsonl}; summary in {args.output_json}; "
            f"{budget.elapsed():.0f} s of the {budget.total_s:.0f} s budget"
        )
        if not args.keep_work and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep_work:  # a given --work_dir keeps the distilled model (distill-quality/) only
            for child in SCRATCH:
                shutil.rmtree(work / child, ignore_errors=True)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
