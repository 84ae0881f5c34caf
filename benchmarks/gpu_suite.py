#!/usr/bin/env python
"""Every GPU figure of the project from one command, on one CUDA GPU, in one process (default run: under 8 minutes,
compiling included).

Sections (``--sections``; the code of each lives in ``gpu_sections/``, and all of them time, record and budget
through ``_core.py``), run in this order:

- ``encoder``: images/s and peak memory of the LiteVAE-S and -B, SD-VAE and TAESD encoders (random weights; speed
  depends on the architecture only), eager, at every ``--cells`` cell (RESxBATCH, in priority order).
- ``batch1``: batch 1 at ``--batch1_resolutions``, eager and compiled with CUDA graphs (``mode="reduce-overhead"``),
  LiteVAE-B beside the SD-VAE: what a pipeline that encodes one image runs, where launch overhead bounds eager.
- ``cache``: caching end to end with the package's ``cache_latents`` on real photos (``--data_dir``; default the
  shared ``photos-hires``) in aspect-ratio buckets at ``--cache_resolution`` (1024), LiteVAE-B and the SD-VAE side
  by side, compiled with CUDA graphs on CUDA as the package does by default; each bucket's compile and capture
  (``warmup_s``) reported apart from the steady throughput the ratio compares.
- ``compile``: the grid's compiled modes (``--modes``), the SD-VAE and B of a cell as a pair, then S, then TAESD.
- ``distill_step``: one distillation step of B against a TAEF2-shaped decoder, eager and compiled.
- ``train`` and ``distill``: distillation speed with live vs cached teacher targets, and a ``--distill_minutes``
  distillation's quality (PSNR student / teacher on ``--eval_dir``). Not in the default run.

Every cell's estimate counts its compiling and warm-up (a guess until a first compilation has been timed, then what
the run saw), and keeps in reserve what the later sections need, so the run ends inside ``--budget_minutes`` with
every cell that did not fit recorded as skipped, with the reason; out-of-memory errors are recorded the same way.
Each record is appended to ``--output_jsonl`` the moment it exists (a killed run keeps every finished figure), and
the summary (``--output_json``) and tables come at the end, each ratio beside the published figure where one exists
(LiteVAE, NeurIPS 2024, Table 3: B 129 vs SD-VAE 68 img/s, 1.9x, S 384 img/s, 5.6x, Quadro RTX 6000, batch 32,
256 px). No pass/fail bars.

Run on a GPU machine (from the repository root; the machine needs no network when the wheels travel with it)::

    # here, on a machine with the package and a registry:
    pip wheel --no-deps -w .whl .                                  # the package (TAEF2 and the samples inside)
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata   # only if the GPU box lacks them
    mkdir -p carry && cp -r ../shared/data/photos-hires carry/     # carry/ and .whl/ are git-ignored; 16 MB
    # copy the repository with .whl/ and carry/ to the GPU machine, then there:
    python3 -m pip install --no-deps .whl/*.whl
    PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 timeout 540 python3 benchmarks/gpu_suite.py --data_dir carry/photos-hires

Smoke (every section on the CPU, tiny sizes, compiled modes recorded as skipped, well under a minute)::

    python benchmarks/gpu_suite.py --smoke --output_jsonl /tmp/suite.jsonl --output_json /tmp/suite.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

_PROCESS_START = time.perf_counter()  # the budget counts from here (importing torch takes seconds)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import (  # noqa: E402
    Budget,
    Context,
    Recorder,
    cell_list,
    environment,
    error_text,
    format_ratio,
    int_list,
    write_json,
)
from gpu_sections import caching, distillation, encoders  # noqa: E402

# name -> (run, estimate of what it needs: what later sections reserve while earlier ones run). Run order.
SECTIONS = {
    "encoder": (encoders.encoder_section, encoders.encoder_estimate),
    "batch1": (encoders.batch1_section, encoders.batch1_estimate),
    "cache": (caching.cache_section, caching.section_estimate),
    "compile": (encoders.compiled_section, lambda ctx: 0.0),  # takes what is left
    "distill_step": (distillation.distill_step_section, distillation.distill_step_estimate),
    "train": (distillation.train_section, distillation.train_estimate),
    "distill": (distillation.quality_section, distillation.quality_estimate),
}
DEFAULT_SECTIONS = ("encoder", "batch1", "cache", "compile", "distill_step")
COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs")  # "compile+cudagraphs" is its own mode
ALIASES = {"headline": ("encoder", "compile", "distill_step"), "eager": ("encoder",)}

# Full-run (CUDA) settings; --smoke replaces them with SMOKE (explicit flags win over both).
FULL = dict(
    budget_minutes=7.5,
    cells="256x32,512x32,256x8,512x8,1024x8",
    modes="eager,compile",
    batch1_resolutions="1024",
    distill_cells="128x32",
    warmup=3,
    min_time=0.3,
    min_calls=3,
    max_calls=100,
    cache_images=256,
    cache_resolution=1024,
    cache_bucket_step=64,
    cache_buckets=2,
    cache_batch_size=8,
    train_resolution=128,
    train_batch_size=32,
    train_steps=100,
    distill_minutes=3.0,
    eval_resolution=256,
)
SMOKE = dict(
    budget_minutes=2.0,
    cells="32x1,32x2",
    modes="eager,compile,compile+cudagraphs",
    batch1_resolutions="32",
    distill_cells="32x2",
    warmup=1,
    min_time=0.0,
    min_calls=1,
    max_calls=1,
    cache_images=4,
    cache_resolution=64,
    cache_bucket_step=16,
    cache_buckets=2,
    cache_batch_size=2,
    train_resolution=32,
    train_batch_size=2,
    train_steps=2,
    distill_minutes=0.05,
    eval_resolution=32,
)


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="All GPU figures (encoder speed and memory, batch 1 with CUDA graphs, latent caching, "
        "distillation speed and quality) in one run, with a time budget.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--smoke", action="store_true", help="every section on the CPU, tiny sizes (well under a minute).")
    add("--dry_run", action="store_true", help="--smoke --device cpu --sections encoder unless given (seconds).")
    add("--sections", default=None, help=f"a subset of {tuple(SECTIONS)} or {tuple(ALIASES)}; default "
        f"{','.join(DEFAULT_SECTIONS)} ({','.join(SECTIONS)} with --smoke).")  # fmt: skip
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:N or cpu.")
    add("--budget_minutes", type=float, default=None, help="skip what no longer fits (default 7.5; 2 with --smoke).")
    add("--output_jsonl", default="outputs/gpu_suite.jsonl", help="one JSON line per measurement, as each finishes.")
    add("--output_json", default="outputs/gpu_suite.json", help="the summary, written at the end.")
    add("--work_dir", default=None, help="scratch folder; default a new temporary one, deleted unless --keep_work.")
    add("--keep_work", action="store_true", help="keep --work_dir (e.g. the distilled model).")
    add("--models", default=",".join(encoders.MODELS), help=f"encoders of the grid, a subset of {encoders.MODELS}.")
    add("--cells", "--headline_cells", type=cell_list, default=None, help="RESxBATCH cells of the grid, by priority.")
    add("--modes", "--headline_modes", default=None, help=f"grid modes, a subset of {encoders.MODES}.")
    add("--compile_mode", default="default", choices=COMPILE_MODES, help="torch.compile mode of the compile mode.")
    add("--batch1_resolutions", type=int_list, default=None, help="batch-1 cells, px (default 1024).")
    add("--batch1_models", default="B,sd-vae", help="encoders of the batch-1 section.")
    add("--distill_cells", "--headline_distill", type=cell_list, default=None, help="RESxBATCH of the step.")
    add("--precision", default=None, choices=["bf16", "fp32"], help="bf16 autocast (CUDA default) or fp32.")
    add("--channels_last", default="auto", choices=["auto", "on", "off"], help="auto: on for CUDA.")
    add("--no_compile", action="store_true", help="no torch.compile anywhere (compiled cells recorded as skipped).")
    add("--warmup", type=int, default=None, help="untimed calls before timing (default 3).")
    add("--min_time", type=float, default=None, help="time at least this many seconds per cell (default 0.3).")
    add("--min_calls", type=int, default=None, help="at least this many timed calls (default 3).")
    add("--max_calls", type=int, default=None, help="at most this many timed calls (default 100).")
    add("--num_workers", type=int, default=None, help="loader workers (default min(8, CPUs - 2) on CUDA, else 0).")
    add("--data_dir", default=None, help="photos to cache (default: the shared photos-hires, else the samples).")
    add("--cache_images", type=int, default=None, help="images per caching run, photos repeated (default 256).")
    add("--cache_resolution", type=int, default=None, help="bucket area resolution**2 (default 1024).")
    add("--cache_bucket_step", type=int, default=None, help="bucket sides are multiples of it (default 64).")
    add("--cache_buckets", type=int, default=None, help="photos of this many fullest buckets (each one compiles).")
    add("--cache_batch_size", type=int, default=None, help="caching batch (default 8).")
    add("--cache_compile", default="auto", choices=["auto", "on", "off"], help="auto: the package's (CUDA: on).")
    add("--train_data_dir", default=None, help="training images (default --data_dir, else the samples' flips).")
    add("--eval_dir", default=None, help="evaluation images of the quality run (default: the bundled samples).")
    add("--teacher", default=None, help="distillation teacher (default: the bundled TAEF2).")
    add("--train_resolution", type=int, default=None, help="distillation crops, px (default 128).")
    add("--train_batch_size", type=int, default=None, help="distillation batch (default 32).")
    add("--train_steps", type=int, default=None, help="steps of each speed run (default 100).")
    add("--distill_minutes", type=float, default=None, help="length of the quality run (default 3).")
    add("--learning_rate", type=float, default=1e-3, help="quality run's learning rate.")
    add("--eval_resolution", type=int, default=None, help="centre crops of --eval_dir (default 256).")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.dry_run:
        args.smoke = True
        args.device = args.device if "--device" in given else "cpu"
        args.sections = args.sections or "encoder"
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, cell_list(value) if key.endswith("cells") else value)
    if isinstance(args.batch1_resolutions, str):
        args.batch1_resolutions = int_list(args.batch1_resolutions)
    args.cuda = args.device.startswith("cuda")
    if args.cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but torch.cuda.is_available() is False; use --device cpu.")
    args.precision = args.precision or ("bf16" if args.cuda else "fp32")
    args.use_channels_last = args.channels_last == "on" or (args.channels_last == "auto" and args.cuda)
    if args.num_workers is None:
        args.num_workers = max(0, min(8, (os.cpu_count() or 2) - 2)) if args.cuda else 0
    default_sections = SECTIONS if args.smoke else DEFAULT_SECTIONS
    chosen = [s.strip() for s in (args.sections or ",".join(default_sections)).split(",") if s.strip()]
    chosen = [name for s in chosen for name in ALIASES.get(s, (s,))]
    if not chosen or not set(chosen) <= set(SECTIONS):
        parser.error(f"--sections: choose from {tuple(SECTIONS)} or {tuple(ALIASES)}, got {args.sections!r}.")
    args.sections = [s for s in SECTIONS if s in chosen]
    for flag, choices in (("models", encoders.MODELS), ("modes", encoders.MODES), ("batch1_models", encoders.MODELS)):
        values = [v.strip() for v in getattr(args, flag).split(",") if v.strip()]
        if not values or not set(values) <= set(choices):
            parser.error(f"--{flag}: choose from {choices}, got {getattr(args, flag)!r}.")
        setattr(args, flag, values)
    if args.budget_minutes <= 0 or args.min_calls < 1 or args.max_calls < args.min_calls or args.warmup < 0:
        parser.error("--budget_minutes must be > 0, 1 <= --min_calls <= --max_calls, --warmup >= 0.")
    return args


# ---------------------------------------------------------------------------------------------- summary


def comparisons(table: dict[str, dict], cuda: bool) -> list[dict]:
    """B's and S's speed-up over the SD-VAE (each in its fastest mode) in every cell measured, beside the paper's
    ratio where the cell is the paper's batch (32), and B's memory ratio."""
    note = "" if cuda else " (a CPU run: not comparable to GPU figures)"
    entries = []
    for key, models in table.items():
        resolution, batch = (int(part.rstrip("px").lstrip("b")) for part in key.split("_"))
        for model, metric in (("B", "speedup_vs_sd_vae"), ("S", "speedup_vs_sd_vae"), ("B", "memory_ratio_vs_sd_vae")):
            if model not in models:
                continue
            reference, source = (None, "")
            if metric == "speedup_vs_sd_vae" and batch == 32:
                reference, source = encoders.PAPER_SPEEDUP[model]
            what = f"LiteVAE-{model} {'img/s, fastest modes' if metric.startswith('speed') else 'eager peak memory'}"
            value = models[model].get(metric)
            entries.append(
                dict(
                    id=f"{model}_{metric}_{key}",
                    what=f"{what} x SD-VAE's at {resolution} px, batch {batch}{note}",
                    value=value,
                    reference=reference,
                    source=source or None,
                    beside=f"{what} x SD-VAE's at {key}{note}: {format_ratio(value, reference, source)}",
                )
            )
    return entries


def build_summary(rec: Recorder, args: argparse.Namespace, env: dict, budget: Budget) -> dict:
    def pick(record: dict, keys: tuple[str, ...]) -> dict:
        return {k: record[k] for k in ("status", *keys, "reason") if record.get(k) is not None}

    table = encoders.encoder_table(rec.records)
    quality = next(iter(rec.of("distill_quality", None)), {})
    return {
        "run_id": rec.run_id,
        **env,
        "wall_s": round(budget.elapsed(), 1),
        "budget_s": budget.total_s,
        "settings": dict(vars(args)),
        "encoder_speed": table,
        "cache_latents": {
            r["name"]: pick(r, ("images_per_s", "steady_images_per_s", "warmup_s", "litevae_b_speedup_vs_sd_vae"))
            for r in rec.of("cache_latents", None)
        },
        "distill_step": {
            r["name"]: pick(r, ("images_per_s", "first_call_s", "peak_memory_mib", "beside"))
            for r in rec.of("headline_distill", None)
        },
        "train_speed": {
            r["targets"]: pick(r, ("train_images_per_s", "steady_images_per_s", "cached_speedup_vs_live"))
            for r in rec.of("train_speed", None)
        },
        "distill_quality": pick(quality, ("psnr_student", "psnr_teacher", "steps_done", "minutes", "eval_dir")),
        "comparisons": comparisons(table, args.cuda),
        "skipped": [f"{r['kind']} {r['name']}: {r.get('reason')}" for r in rec.records if r["status"] == "skipped"],
        "failed": [f"{r['kind']} {r['name']}: {r.get('reason')}" for r in rec.records if r["status"] == "failed"],
        "measurements": rec.records,
    }


def print_report(summary: dict) -> None:
    encoders.print_encoder_table(summary["encoder_speed"])
    for title, key in (
        ("latent caching end to end (steady img/s, compile and capture apart)", "cache_latents"),
        ("distillation step (LiteVAE-B, TAEF2-shaped decoder)", "distill_step"),
        ("distillation speed (LiteVAE-B vs TAEF2)", "train_speed"),
    ):
        print(f"\n== {title} ==")
        for name, entry in summary[key].items():
            print(f"  {name:34s} {entry}")
    print(f"\n== distillation quality ==\n  {summary['distill_quality']}")
    print("\n== ratios (beside the published figure, where one exists) ==")
    for entry in summary["comparisons"]:
        print(f"  {entry['beside']}")


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_minutes, _PROCESS_START)
    rec = Recorder(args.output_jsonl, budget)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    if args.smoke and device.type == "cpu":
        # The smoke checks code paths, not figures: one thread does not fight other jobs on a shared machine.
        torch.set_num_threads(1)
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = {**environment(device), "cuda": torch.version.cuda, "smoke": args.smoke}
    rec.add("run", "start", "ok", {**env, "settings": dict(vars(args))}, text=f"{env['device']}, torch "
            f"{env['torch']}, budget {args.budget_minutes:g} min, sections {','.join(args.sections)}")  # fmt: skip
    ctx = Context(args, budget, rec, work)
    try:
        for index, name in enumerate(args.sections):
            run, _ = SECTIONS[name]
            ctx.later = [SECTIONS[later][1] for later in args.sections[index + 1 :]]
            rec.section = name
            try:
                run(ctx)
            except Exception as error:  # noqa: BLE001  a section failing to start must not end the run
                rec.add("section", name, "failed", {"reason": error_text(error)})
    finally:
        rec.section = None
        torch.set_num_threads(threads)
        summary = build_summary(rec, args, env, budget)
        if args.output_json:
            write_json(args.output_json, summary)
        print_report(summary)
        print(
            f"\n{len(rec.records)} records in {args.output_jsonl}; summary in {args.output_json}; "
            f"{budget.elapsed():.0f} s of the {budget.total_s:.0f} s budget"
        )
        if not args.keep_work and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep_work:  # a given --work_dir keeps the distilled model only
            for child in work.iterdir():
                if child.name != "distill-quality":
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
