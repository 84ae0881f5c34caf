"""Encoder speed: LiteVAE S/B/M/L against the SD-VAE and TAESD encoders, side by side in one run.

Every model gets random weights and the same input batch. For each resolution, batch size and mode it
reports images/s, peak memory, parameters and GFLOPs per image, then the ratio of each model's images/s
(each in its fastest mode) to the SD-VAE encoder's (in its fastest mode), measured in the same run.

Models (what ``encode`` runs, nothing else):
- ``S``, ``B``, ``M``, ``L``: :class:`~diffusers_litevae.LiteVAEEncoder` at the paper's presets (4 latent channels),
  i.e. ``AutoencoderLite.from_preset(p).encoder``.
- ``sd-vae``: diffusers ``AutoencoderKL`` in Stable Diffusion layout (block_out_channels (128, 256, 512, 512),
  4 ``DownEncoderBlock2D``, layers_per_block 2): its ``encoder`` followed by ``quant_conv``.
- ``taesd``: diffusers ``AutoencoderTiny()`` (TAESD defaults): its ``encoder``.

Modes: ``eager`` or ``compile`` (``torch.compile``, mode from ``--compile_mode``), optionally with ``+bf16`` /
``+fp16`` (weights and inputs in that dtype) and ``+cl`` (channels_last), e.g. ``compile+bf16+cl``.

Measurements:
- images/s: wall time of ``--iters``/``--min_time`` timed calls after ``--warmup`` untimed ones (CUDA synchronised).
  The first call of a compiled model is reported separately as ``compile_s``.
- peak memory (``peak_memory_mib``): weights + input + everything the call allocates. CUDA:
  ``torch.cuda.max_memory_allocated()`` around one call. CPU (Linux/glibc): the process's resident-set high-water
  mark (``VmHWM``, reset through ``/proc/self/clear_refs``) minus its RSS before one call, after ``malloc_trim``
  and with glibc's mmap threshold set to 1 MiB for that call only (so freed tensors return to the OS and RSS
  follows live memory), plus weight and input bytes. ``activation_memory_mib`` is the part the call allocates.
  Elsewhere CPU memory is reported as null.
- GFLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` on a batch of one on the meta device
  (convolutions, matmuls and attention; 2 FLOPs per multiply-add).

Examples::

    python benchmarks/encoder_speed.py                       # CPU defaults: 256 px, eager + compile, batch 2
    python benchmarks/encoder_speed.py --quick               # minutes: S, B, SD-VAE, TAESD; 128 px, eager only
    python benchmarks/encoder_speed.py --quick --resolutions 64 --no_memory   # smoke test in well under a minute
    python benchmarks/encoder_speed.py --resolutions 256,512,1024 --modes eager   # CPU scaling (slow: see README)
    python benchmarks/encoder_speed.py --device cuda         # 256/512/1024 px, batch 32, bf16 + channels_last
    python benchmarks/encoder_speed.py --device cuda --batch_size 8,32 --compile_mode reduce-overhead
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import ENCODER_NAMES, CpuPeakMemory, build_encoder, int_list, sync, time_calls  # noqa: E402

MODEL_NAMES = ENCODER_NAMES
REFERENCE = "sd-vae"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MODE_FLAGS = {"bf16", "fp16", "cl"}
QUICK_MODELS = "S,B,sd-vae,taesd"
DEFAULT_OUTPUT_JSON = "outputs/encoder_speed.json"  # outputs/ is git-ignored


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LiteVAE S/B/M/L vs SD-VAE vs TAESD encoder speed, memory, parameters and FLOPs in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N.")
    parser.add_argument(
        "--resolutions",
        default=None,
        help="comma-separated square sizes in px (multiples of 8); "
        "default 256 on CPU (see benchmarks/README.md for 512/1024 run times), 256,512,1024 on CUDA.",
    )
    parser.add_argument("--batch_size", default=None, help="comma-separated batch sizes; default 2 on CPU, 32 on CUDA.")
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated subset of {MODEL_NAMES}; default all ({QUICK_MODELS} with --quick).",
    )
    parser.add_argument(
        "--modes",
        default=None,
        help="comma-separated modes: eager|compile[+bf16|+fp16][+cl]; default "
        "eager,compile on CPU, eager+bf16+cl,compile+bf16+cl on CUDA.",
    )
    parser.add_argument(
        "--compile_mode",
        default=None,
        choices=COMPILE_MODES,
        help="torch.compile mode; default 'default' on CPU, 'max-autotune-no-cudagraphs' on CUDA.",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads).")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls before timing (after compiling); default 1 on CPU, 5 on CUDA.",
    )
    parser.add_argument(
        "--iters", type=int, default=None, help="at most this many timed calls; default 50 CPU, 200 CUDA."
    )
    parser.add_argument(
        "--min_time",
        type=float,
        default=None,
        help="stop timing once this many seconds have passed (at least one call); default 3 on CPU, 2 on CUDA.",
    )
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory call.")
    parser.add_argument(
        "--output_json", default=DEFAULT_OUTPUT_JSON, help="where to write all results ('' for nowhere)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes on a small CPU: models "
        f"{QUICK_MODELS}, 128 px, batch 1, eager only (no torch.compile), one warm-up and at most 3 "
        "timed calls (explicit flags still win; rough figures, for checking the setup).",
    )
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but torch.cuda.is_available() is False; use --device cpu.")
    if args.quick:
        defaults = dict(resolutions="128", batch_size="1", warmup=1, iters=3, min_time=0.0, models=QUICK_MODELS)
    elif cuda:
        defaults = dict(
            resolutions="256,512,1024", batch_size="32", warmup=5, iters=200, min_time=2.0, models=",".join(MODEL_NAMES)
        )
    else:
        defaults = dict(
            resolutions="256", batch_size="2", warmup=1, iters=50, min_time=3.0, models=",".join(MODEL_NAMES)
        )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.modes is None:
        if args.quick:
            args.modes = "eager+bf16+cl" if cuda else "eager"
        else:
            args.modes = "eager+bf16+cl,compile+bf16+cl" if cuda else "eager,compile"
    if args.compile_mode is None:
        args.compile_mode = "max-autotune-no-cudagraphs" if cuda else "default"

    for flag in ("resolutions", "batch_size"):
        try:
            setattr(args, flag, int_list(getattr(args, flag)))
        except argparse.ArgumentTypeError as error:
            parser.error(f"--{flag} {error}")
    if any(r % 8 for r in args.resolutions):
        parser.error(f"--resolutions must be multiples of 8 (the encoders downsample by 8), got {args.resolutions}.")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODEL_NAMES]
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; choose from {MODEL_NAMES}.")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.modes:
        base, *flags = mode.split("+")
        if base not in ("eager", "compile") or not set(flags) <= MODE_FLAGS or {"bf16", "fp16"} <= set(flags):
            parser.error(f"--modes: {mode!r} is not eager|compile[+bf16|+fp16][+cl] (e.g. compile+bf16+cl).")
    if args.compile_mode == "reduce-overhead" and not cuda:
        parser.error("--compile_mode reduce-overhead uses CUDA graphs: CUDA only.")
    if args.threads < 1 or args.iters < 1 or args.warmup < 0 or args.min_time < 0:
        parser.error("--threads and --iters must be >= 1, --warmup and --min_time >= 0.")
    return args


# ---------------------------------------------------------------------------------------------- models


def count_gflops_per_image(name: str, resolution: int) -> float:
    """Forward FLOPs of one image, counted on the meta device (no compute, no memory)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_encoder(name).eval()
        image = torch.empty(1, 3, resolution, resolution)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return counter.get_total_flops() / 1e9


# ---------------------------------------------------------------------------------------------- one case


@dataclass
class Result:
    model: str
    resolution: int
    batch_size: int
    mode: str
    parameters: int
    gflops_per_image: float
    images_per_s: float | None = None
    seconds_per_batch: float | None = None
    timed_calls: int = 0
    compile_s: float | None = None
    peak_memory_mib: float | None = None
    activation_memory_mib: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def run_case(
    name: str,
    resolution: int,
    batch_size: int,
    mode: str,
    args: argparse.Namespace,
    cpu_memory: CpuPeakMemory | None,
    parameters: int,
    gflops: float,
) -> Result:
    device = torch.device(args.device)
    base, *flags = mode.split("+")
    dtype = torch.bfloat16 if "bf16" in flags else torch.float16 if "fp16" in flags else torch.float32
    memory_format = torch.channels_last if "cl" in flags else torch.contiguous_format
    result = Result(name, resolution, batch_size, mode, parameters, gflops)

    torch.manual_seed(0)
    model = build_encoder(name).eval().to(device=device, dtype=dtype, memory_format=memory_format)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, resolution, resolution, generator=generator) * 2 - 1
    images = images.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
    cudagraphs = base == "compile" and args.compile_mode == "reduce-overhead"

    forward = model
    if base == "compile":
        kwargs = {} if args.compile_mode == "default" else {"mode": args.compile_mode}
        forward = torch.compile(model, **kwargs)

    def call():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            forward(images)

    try:
        if base == "compile":
            start = time.perf_counter()
            call()
            sync(device)
            result.compile_s = time.perf_counter() - start
        for _ in range(args.warmup):
            call()
        sync(device)

        if not args.no_memory:
            weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            input_bytes = images.numel() * images.element_size()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                call()
                sync(device)
                peak = torch.cuda.max_memory_allocated(device)
                result.peak_memory_mib = peak / 2**20
                result.activation_memory_mib = (peak - before) / 2**20
            elif cpu_memory is not None and cpu_memory.available:
                result.activation_memory_mib = cpu_memory.measure(call)
                result.peak_memory_mib = result.activation_memory_mib + (weight_bytes + input_bytes) / 2**20
            else:
                result.notes.append("CPU peak memory needs Linux /proc/self/clear_refs and glibc: not measured")

        seconds, calls = time_calls(call, device, args.min_time, min_calls=1, max_calls=args.iters)
        result.timed_calls = calls
        result.seconds_per_batch = seconds
        result.images_per_s = batch_size / seconds
    except Exception as error:  # noqa: BLE001  one model failing to compile must not end the run
        message = str(error).strip().splitlines()
        result.error = f"{type(error).__name__}: {message[0] if message else ''}"[:500]
    finally:
        forward = model = images = None  # drop the references before freeing caches
        if base == "compile":
            torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------- summary and table


def summarise(results: list[Result], models: list[str]) -> dict:
    """Per (resolution, batch size): each model's fastest mode and its ratios to the SD-VAE encoder's fastest."""
    summary: dict[str, dict] = {}
    for resolution, batch_size in sorted({(r.resolution, r.batch_size) for r in results}):
        key = f"{resolution}px_batch{batch_size}"
        rows = [r for r in results if r.resolution == resolution and r.batch_size == batch_size and r.images_per_s]
        best = {}
        for name in models:
            candidates = [r for r in rows if r.model == name]
            if candidates:
                best[name] = max(candidates, key=lambda r: r.images_per_s)
        reference = best.get(REFERENCE)
        entry = {}
        for name, r in best.items():
            entry[name] = {
                "fastest_mode": r.mode,
                "images_per_s": r.images_per_s,
                "peak_memory_mib": r.peak_memory_mib,
                "speedup_vs_sd_vae": r.images_per_s / reference.images_per_s if reference else None,
                "memory_ratio_vs_sd_vae": (
                    r.peak_memory_mib / reference.peak_memory_mib
                    if reference and r.peak_memory_mib and reference.peak_memory_mib
                    else None
                ),
                "gflops_ratio_vs_sd_vae": r.gflops_per_image / reference.gflops_per_image if reference else None,
            }
            for mode_row in (x for x in rows if x.model == name):
                ref = next((x for x in rows if x.model == REFERENCE and x.mode == mode_row.mode), None)
                if ref:
                    entry[name].setdefault("speedup_vs_sd_vae_same_mode", {})[mode_row.mode] = (
                        mode_row.images_per_s / ref.images_per_s
                    )
        summary[key] = entry
    return summary


def check_targets(summary: dict, device: str) -> list[dict]:
    """The speed targets, each model in its fastest mode, ratios from this run (only those this run covers)."""
    targets = []

    def add(key: str, model: str, what: str, value, goal: float, higher_is_better: bool = True):
        if value is None:
            return
        met = value >= goal if higher_is_better else value <= goal
        targets.append(
            {
                "case": key,
                "model": model,
                "metric": what,
                "value": value,
                "target": goal,
                "met": met,
                "margin": value / goal if higher_is_better else goal / value,
            }
        )

    for key, entry in summary.items():
        resolution, batch = (int(part.rstrip("px").removeprefix("batch")) for part in key.split("_"))
        get = lambda model, metric, entry=entry: entry.get(model, {}).get(metric)  # noqa: E731
        if device == "cpu" and resolution == 256:
            add(key, "B", "speedup_vs_sd_vae", get("B", "speedup_vs_sd_vae"), 4.0)
            add(key, "S", "speedup_vs_sd_vae", get("S", "speedup_vs_sd_vae"), 15.0)
        if device == "cuda":
            if resolution in (256, 512) and batch >= 16:
                add(key, "B", "speedup_vs_sd_vae", get("B", "speedup_vs_sd_vae"), 2.0)
                add(key, "S", "speedup_vs_sd_vae", get("S", "speedup_vs_sd_vae"), 5.0)
            if batch == 8:
                add(key, "B", "speedup_vs_sd_vae", get("B", "speedup_vs_sd_vae"), 1.0)
            add(key, "B", "memory_ratio_vs_sd_vae", get("B", "memory_ratio_vs_sd_vae"), 0.5, higher_is_better=False)
    return targets


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(results: list[Result], summary: dict, args: argparse.Namespace) -> None:
    modes = args.modes
    for resolution in args.resolutions:
        for batch_size in args.batch_size:
            entry = summary.get(f"{resolution}px_batch{batch_size}", {})
            print(f"\n{resolution}x{resolution}, batch {batch_size}, {describe_device(args)}")
            header = f"{'model':8s} {'params M':>9s} {'GFLOP/img':>10s}"
            header += "".join(f" {mode[:18] + ' img/s':>24s}" for mode in modes)
            header += f" {'fastest':>16s} {'peak MiB':>9s} {'x SD-VAE':>9s} {'mem x SD':>9s}"
            print(header)
            for name in args.models:
                rows = {
                    r.mode: r
                    for r in results
                    if r.model == name and r.resolution == resolution and r.batch_size == batch_size
                }
                if not rows:
                    continue
                any_row = next(iter(rows.values()))
                line = f"{name:8s} {any_row.parameters / 1e6:9.2f} {any_row.gflops_per_image:10.1f}"
                for mode in modes:
                    r = rows.get(mode)
                    cell = "failed" if r and r.error else _fmt(r.images_per_s if r else None, ".2f")
                    line += f" {cell:>24s}"
                best = entry.get(name, {})
                line += f" {best.get('fastest_mode', '-'):>16s} {_fmt(best.get('peak_memory_mib'), '.0f'):>9s}"
                line += f" {_fmt(best.get('speedup_vs_sd_vae'), '.2f'):>9s}"
                line += f" {_fmt(best.get('memory_ratio_vs_sd_vae'), '.2f'):>9s}"
                print(line)
    failures = [r for r in results if r.error]
    if failures:
        print("\nfailed cases:")
        for r in failures:
            print(f"  {r.model} {r.resolution}px batch {r.batch_size} {r.mode}: {r.error}")


def describe_device(args: argparse.Namespace) -> str:
    if args.device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(args.device))}"
    return f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import diffusers

    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    cpu_memory = CpuPeakMemory() if not args.device.startswith("cuda") else None
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    parameters = {name: sum(p.numel() for p in build_encoder(name).parameters()) for name in args.models}
    gflops = {(name, r): count_gflops_per_image(name, r) for name in args.models for r in args.resolutions}

    cases = [
        (r, b, name, mode)
        for r in args.resolutions
        for b in args.batch_size
        for name in args.models
        for mode in args.modes
    ]
    print(
        f"{len(cases)} cases on {describe_device(args)}; compile mode {args.compile_mode!r}; "
        f"warmup {args.warmup}, timing up to {args.iters} calls or {args.min_time} s",
        flush=True,
    )
    results: list[Result] = []
    run_start = time.perf_counter()
    for index, (resolution, batch_size, name, mode) in enumerate(cases, 1):
        result = run_case(
            name, resolution, batch_size, mode, args, cpu_memory, parameters[name], gflops[(name, resolution)]
        )
        results.append(result)
        status = (
            f"FAILED {result.error}"
            if result.error
            else (
                f"{result.images_per_s:8.2f} img/s  {result.seconds_per_batch * 1e3:9.1f} ms/batch  "
                f"peak {_fmt(result.peak_memory_mib, '.0f')} MiB"
                + (f"  compile {result.compile_s:.1f} s" if result.compile_s is not None else "")
            )
        )
        print(
            f"[{index}/{len(cases)} {time.perf_counter() - run_start:6.0f} s] {name:6s} {resolution:5d}px "
            f"b{batch_size:<3d} {mode:18s} {status}",
            flush=True,
        )

    summary = summarise(results, args.models)
    print_table(results, summary, args)
    targets = check_targets(summary, torch.device(args.device).type)
    if targets:
        print("\ntargets (each model in its fastest mode, ratios within this run):")
        for t in targets:
            print(
                f"  {t['case']:18s} {t['model']:2s} {t['metric']:24s} {t['value']:7.2f} (target "
                f"{'>=' if t['metric'].startswith('speedup') else '<='} {t['target']}): "
                f"{'met' if t['met'] else 'MISSED'}"
            )
    report = {
        "device": describe_device(args),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "settings": {k: v for k, v in vars(args).items()},
        "memory_method": (
            "torch.cuda.max_memory_allocated over one call (weights + input + activations)"
            if args.device.startswith("cuda")
            else "VmHWM - VmRSS over one call (malloc_trim, mmap threshold 1 MiB), plus weight and input bytes"
            if cpu_memory and cpu_memory.available
            else "not measured (needs Linux procfs and glibc)"
        ),
        "flops_method": "torch.utils.flop_counter.FlopCounterMode, batch 1 on the meta device",
        "wall_time_s": time.perf_counter() - run_start,
        "results": [asdict(r) for r in results],
        "summary": summary,
        "targets": targets,
    }
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
