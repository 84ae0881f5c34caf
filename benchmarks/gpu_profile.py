"""Where the GPU time of the encoders goes, and which levers move it: LiteVAE-S, LiteVAE-B and the SD-VAE encoder.

Sections, in the order they run (each cell is skipped, with the reason recorded, once the budget cannot hold it;
compile warm-up counts against the budget):

1. ``ceilings``: a device-to-device copy (GB/s) and a bf16 matmul (TFLOP/s), timed in the same run: the two roofs
   every figure below is read against.
2. ``group_norm_silu``: GroupNorm + SiLU alone on channels_last bf16 tensors of the encoders' widths: torch eager,
   inductor's own fusion (``torch.compile`` of the two ops), and the package's fused Triton kernel.
3. ``work``: FLOPs per image (``torch.utils.flop_counter``) and the bytes each aten op reads and writes in eager
   mode (an unfused upper bound on memory traffic), per model and size.
4. ``encoders``: images/s at 256 px x 32, 512 px x 32 and 256 px x 1 in the modes that need no compile: eager
   with bf16 autocast over fp32 weights (what earlier runs measured), and bf16 weights replayed as one CUDA graph
   with the fused GroupNorm + SiLU on and off. Each is profiled (``torch.profiler``, CUDA activity) into GPU time
   by kernel kind: convolution, normalization reduction, pointwise, copy/cat, other.
5. ``cache``: ``cache_latents`` end to end at 1024 px with aspect-ratio buckets on real photos, LiteVAE-B beside
   the SD-VAE, eager (no compile warm-up to pay back).
6. ``compiled``: ``torch.compile`` (inductor, default mode, bf16 weights, channels_last) replayed as a CUDA graph;
   the compile time of each cell is recorded apart from its throughput, and the same graph is profiled.
7. ``levers``: on LiteVAE-S at 512 px x 32, compiled: the fused kernel inside the compiled graph, ``max-autotune``,
   inductor's ``coordinate_descent_tuning``, contiguous (NCHW) layout, and autocast over fp32 weights.

Weights are random (speed depends on the architecture only). Writes the JSON after every section, so a run cut
short keeps what it measured. ``--smoke`` runs every section on the CPU at tiny sizes (no CUDA graphs, no
profiler kernel table) to check the script itself.

    python benchmarks/gpu_profile.py --budget_s 270 --output benchmarks/results/gpu_profile_h200.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import Budget, build_encoder, command_line, environment, measure, sync, write_json  # noqa: E402

# What each section's result is compared with, and where that figure comes from.
PREDICTIONS = {
    "fused_group_norm_silu": "GroupNorm on channels_last tensors took more than half of LiteVAE-B's eager time on an "
    "H100 (48 ms of a batch of 32 with it, 18 ms without); a two-pass NHWC GroupNorm+SiLU kernel took the FLUX.2 VAE "
    "decoder from 97.6 to 29.2 ms on an H200 (sglang PR #33451). Predicted: the fused kernel beats torch eager by 2x "
    "or more, and matches or beats inductor's fusion.",
    "cuda_graph": "LiteVAE-B at batch 1 ran 0.22x the SD-VAE's speed in eager mode (launch-bound: several hundred "
    "kernels per image). Predicted: one CUDA graph replay removes the launch floor.",
    "bf16_weights": "Autocast casts fp32 weights to bf16 on every call (an extra kernel per convolution). Predicted: "
    "bf16 weights remove those copies.",
    "max_autotune": "Triton convolution templates may beat cuDNN on 16-96 channel convolutions. Predicted: a gain "
    "on S, at minutes of autotuning.",
    "coordinate_descent_tuning": "Predicted: a few percent on the reductions and pointwise kernels.",
    "channels_last_off": "Predicted: slower (cuDNN's bf16 convolutions want NHWC).",
}


# ---------------------------------------------------------------------------------------------- models


def fits(budget: Budget, estimate_s: float) -> bool:
    """Whether a cell estimated at ``estimate_s`` seconds still fits the run's budget."""
    return budget.check(estimate_s) is None


@contextlib.contextmanager
def fused_group_norm(enabled: bool):
    """The package's fused GroupNorm + SiLU on or off inside the block (a no-op where the package has none)."""
    try:
        from diffusers_litevae.models.group_norm_silu import fused_group_norm_silu
    except ImportError:
        yield
        return
    with fused_group_norm_silu(enabled):
        yield


def prepared(model: nn.Module, device, dtype, channels_last: bool) -> nn.Module:
    model = copy.deepcopy(model).to(device, dtype)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def graphed(call, example: torch.Tensor, device) -> tuple[callable, float]:
    """``call`` captured as one CUDA graph on a static input (on the CPU: ``call`` itself); returns the replay
    callable and the seconds warm-up and capture took."""
    begin = time.perf_counter()
    if torch.device(device).type != "cuda":
        return (lambda: call(example)), 0.0
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            call(example)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call(example)
    sync(device)
    return graph.replay, time.perf_counter() - begin


# ---------------------------------------------------------------------------------------------- profiling

KINDS = ("convolution", "norm_reduction", "pointwise", "copy_cat", "other")


def kernel_kind(name: str) -> str:
    """The kind of a CUDA kernel, from its name: inductor's kernels by their prefix (``triton_red``/``triton_per``
    reductions, ``triton_poi`` pointwise, whose names list the ops they fuse), the package's fused GroupNorm kernels,
    cuDNN/CUTLASS convolutions, then aten's copy and elementwise kernels."""
    lower = name.lower()
    if lower.startswith(("triton_red", "triton_per")) or any(
        key in lower
        for key in (
            "_channel_stats",
            "_group_scale_shift",
            "group_norm",
            "groupnorm",
            "welford",
            "moments",
            "fusedparams",
        )
    ):
        return "norm_reduction"
    if lower.startswith("triton_poi"):
        return "copy_cat" if ("cat" in lower or "clone" in lower) else "pointwise"
    if "_scale_shift_silu" in lower:
        return "pointwise"
    if any(key in lower for key in ("conv", "xmma", "implicit", "gemm", "cutlass", "sm90", "cudnn", "winograd")):
        return "convolution"
    if any(key in lower for key in ("copy", "cat", "nchw", "nhwc", "transpose", "memcpy", "memset")):
        return "copy_cat"
    if any(key in lower for key in ("elementwise", "vectorized", "silu", "add", "mul", "sigmoid", "reduce")):
        return "pointwise"
    return "other"


def profile_kinds(call, device, calls: int, images: int) -> dict | None:
    """GPU time per image (microseconds) by kernel kind over ``calls`` calls, and the busiest kernels."""
    if torch.device(device).type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                call()
            sync(device)
        kernels = [
            (event.name, getattr(event, "device_time_total", 0.0))
            for event in prof.events()
            if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA
        ]
    except Exception as error:  # noqa: BLE001 (a profiler failure loses the table, not the timing)
        return {"error": f"{type(error).__name__}: {error}"[:300]}
    totals, by_name = defaultdict(float), defaultdict(float)
    for name, micros in kernels:
        totals[kernel_kind(name)] += micros
        by_name[name] += micros
    launches = len(kernels)
    per_image = {kind: round(totals[kind] / (calls * images), 2) for kind in KINDS}
    top = sorted(by_name.items(), key=lambda item: -item[1])[:8]
    return {
        "us_per_image": per_image,
        "total_us_per_image": round(sum(totals.values()) / (calls * images), 2),
        "kernels_per_call": round(launches / calls, 1),
        "top_kernels": [{"name": name[:120], "us_per_image": round(t / (calls * images), 2)} for name, t in top],
    }


# ---------------------------------------------------------------------------------------------- sections


def ceilings(args, device) -> dict:
    if torch.device(device).type != "cuda":
        size, matrix = 2**22, 256
    else:
        size, matrix = 2**30, 8192
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_result = measure(lambda: target.copy_(source), device, items_per_call=1, min_time=0.5)
    a = torch.randn(matrix, matrix, device=device, dtype=torch.bfloat16)
    b = torch.randn(matrix, matrix, device=device, dtype=torch.bfloat16)
    matmul = measure(lambda: a @ b, device, items_per_call=1, min_time=0.5)
    return {
        "copy_gb_per_s": round(2 * size / (copy_result["ms_per_call"] / 1e3) / 1e9, 1),
        "bf16_matmul_tflop_per_s": round(2 * matrix**3 / (matmul["ms_per_call"] / 1e3) / 1e12, 1),
        "sizes": {"copy_bytes": size, "matmul_n": matrix},
    }


def group_norm_silu_section(args, device, budget) -> list[dict]:
    try:
        from diffusers_litevae.models.group_norm_silu import group_norm_silu_triton
    except ImportError as error:
        return [{"status": "skipped", "reason": f"no fused kernel in this package: {error}"}]
    cuda = torch.device(device).type == "cuda"
    side, batch = (128, 32) if cuda else (16, 2)
    records = []
    for channels, groups in ((16, 16), (32, 32), (64, 32), (96, 32)):
        if not fits(budget, 15):
            records.append({"channels": channels, "status": "skipped", "reason": "budget"})
            continue
        x = torch.randn(batch, channels, side, side, device=device, dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, device=device, dtype=torch.bfloat16)
        bias = torch.randn(channels, device=device, dtype=torch.bfloat16)

        def reference(t, groups=groups, weight=weight, bias=bias):
            return F.silu(F.group_norm(t, groups, weight, bias, 1e-6))

        compiled = torch.compile(reference, dynamic=False)
        variants = {"torch_eager": lambda x=x: reference(x), "inductor": lambda x=x, c=compiled: c(x)}
        if cuda or args.smoke:
            variants["fused_triton"] = lambda x=x, g=groups, w=weight, b=bias: group_norm_silu_triton(x, g, w, b, 1e-6)
        record = {"shape": list(x.shape), "groups": groups, "dtype": "bfloat16", "layout": "channels_last"}
        moved = 2 * x.numel() * x.element_size()  # one read and one write: the least any kernel can move
        for name, call in variants.items():
            try:
                result = measure(call, device, items_per_call=1, min_time=0.3)
            except Exception as error:  # noqa: BLE001 (a failing variant is recorded, the others still run)
                record[name] = {"status": "error", "error": f"{type(error).__name__}: {error}"[:300]}
                continue
            record[name] = {
                "us": round(result["ms_per_call"] * 1e3, 2),
                "gb_per_s_at_one_pass": round(moved / (result["ms_per_call"] / 1e3) / 1e9, 1),
                "first_call_s": result["first_call_s"],
            }
        if "fused_triton" in record and "us" in record.get("fused_triton", {}):
            error = (variants["fused_triton"]().float() - reference(x).float()).abs().max().item()
            record["fused_max_abs_error_vs_torch"] = round(error, 5)
        records.append(record)
    return records


class ByteCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of every tensor each aten op reads and writes (views included once per use): eager traffic."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = torch.utils._pytree.tree_leaves((args, kwargs or {}, out))
        self.bytes += sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))
        return out


def work_section(args, device, models) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    result = {}
    for name, model in models.items():
        eager = prepared(model, device, torch.bfloat16, channels_last=True)
        for side in args.sizes:
            x = torch.randn(1, 3, side, side, device=device, dtype=torch.bfloat16)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), FlopCounterMode(display=False) as flops:
                eager(x)
            with torch.no_grad(), ByteCounter() as counter:
                eager(x)
            result[f"{name}@{side}"] = {
                "gflop_per_image": round(flops.get_total_flops() / 1e9, 2),
                "eager_op_bytes_mb_per_image": round(counter.bytes / 1e6, 1),
            }
        del eager
    return result


def run_encoder_cell(call, example, device, images, profile: bool) -> dict:
    replay, capture_s = graphed(call, example, device)
    result = measure(replay, device, items_per_call=images, min_time=0.5)
    result["graph_capture_s"] = round(capture_s, 2)
    if profile:
        result["profile"] = profile_kinds(lambda: call(example), device, calls=3, images=images)
    return result


def encoders_section(args, device, models, budget) -> list[dict]:
    records = []
    cuda = torch.device(device).type == "cuda"
    for side, batch in args.cells:
        for name, model in models.items():
            example32 = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
            modes = {"eager_autocast": (torch.float32, True, None), "graph_bf16": (torch.bfloat16, False, False)}
            if name != "sd-vae":
                modes["graph_bf16_fused"] = (torch.bfloat16, False, True)
            for mode, (dtype, autocast, fused) in modes.items():
                cell = {"section": "encoders", "model": name, "resolution": side, "batch": batch, "mode": mode}
                if not fits(budget, 8):
                    records.append({**cell, "status": "skipped", "reason": "budget"})
                    continue
                net = prepared(model, device, dtype, channels_last=True)
                example = example32.to(dtype)

                def call(x, net=net, autocast=autocast):
                    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                        return net(x)

                try:
                    with fused_group_norm(bool(fused)):
                        if autocast:  # eager as earlier runs measured it: no CUDA graph
                            run = functools.partial(call, example)
                            result = measure(run, device, items_per_call=batch, min_time=0.5)
                            if cuda and batch > 1:
                                result["profile"] = profile_kinds(run, device, 3, batch)
                        else:
                            result = run_encoder_cell(call, example, device, batch, profile=cuda and batch > 1)
                    records.append({**cell, "status": "ok", **result})
                    print(
                        f"encoders {name:6s} {side}x{batch} {mode:18s} {result['items_per_s']:9.1f} img/s", flush=True
                    )
                except Exception as error:  # noqa: BLE001
                    records.append({**cell, "status": "error", "error": f"{type(error).__name__}: {error}"[:400]})
                del net
                if cuda:
                    torch.cuda.empty_cache()
    return records


def cache_section(args, device, budget) -> list[dict]:
    from diffusers_litevae import AutoencoderLite
    from diffusers_litevae.caching import cache_latents
    from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl

    if not args.cache_dir or not Path(args.cache_dir).is_dir():
        return [{"status": "skipped", "reason": f"no photo folder {args.cache_dir!r} (--cache_dir)"}]
    records = []
    torch.manual_seed(0)
    vaes = {"B": AutoencoderLite.from_preset("B"), "sd-vae": sd_vae_autoencoder_kl()}
    for name, vae in vaes.items():
        if not fits(budget, 45):
            records.append({"model": name, "status": "skipped", "reason": "budget"})
            continue
        out = Path(args.work_dir) / f"cache-{name}"
        begin = time.perf_counter()
        report = cache_latents(
            args.cache_dir, vae, out, resolution=args.cache_resolution, bucketing=True, batch_size=args.cache_batch,
            num_workers=args.cache_workers, channels_last=True, compile=False, device=device, progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - begin
        fields = ("num_encoded", "num_failed", "wall_s", "images_per_s", "steady_images_per_s", "compiled", "timings")
        summary = {key: getattr(report, key) for key in fields}
        records.append({"model": name, "status": "ok", "call_wall_s": round(wall, 2), **summary})
        print(f"cache {name}: {report.num_encoded} images in {wall:.1f} s ({report.images_per_s} img/s encoding)")
    return records


def compiled_cell(model, device, side, batch, *, dtype=torch.bfloat16, channels_last=True, autocast=False,
                  fused=False, mode=None, inductor=None) -> dict:  # fmt: skip
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    net = prepared(model, device, dtype, channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    example = torch.randn(batch, 3, side, side, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    compiled = torch.compile(net, dynamic=False, **({"mode": mode} if mode else {}))

    def call(x):
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            return compiled(x)

    with contextlib.ExitStack() as stack:
        stack.enter_context(fused_group_norm(fused))
        if inductor:
            stack.enter_context(inductor_config.patch(inductor))
        begin = time.perf_counter()
        call(example)
        sync(device)
        compile_s = time.perf_counter() - begin
        result = run_encoder_cell(call, example, device, batch, profile=device.type == "cuda")
    result["compile_s"] = round(compile_s, 2)
    return result


def compiled_section(args, device, models, budget, cells, levers) -> list[dict]:
    records = []
    estimate = {"sd-vae": 20, "S": 60, "B": 65}
    for name, side, batch, lever in cells + levers:
        cell = {"model": name, "resolution": side, "batch": batch, "lever": lever or "default"}
        need = estimate[name] * (3 if lever == "max_autotune" else 1) * (0.1 if args.smoke else 1)
        if not fits(budget, need):
            records.append({**cell, "status": "skipped", "reason": f"budget ({budget.left():.0f} s left, ~{need} s)"})
            continue
        options = {
            None: {},
            "fused_group_norm_silu": {"fused": True},
            "max_autotune": {"mode": "max-autotune-no-cudagraphs"},
            "coordinate_descent_tuning": {"inductor": {"coordinate_descent_tuning": True}},
            "channels_last_off": {"channels_last": False},
            "autocast_fp32_weights": {"dtype": torch.float32, "autocast": True},
        }[lever]
        try:
            result = compiled_cell(models[name], device, side, batch, **options)
            records.append({**cell, "status": "ok", **result})
            print(f"compiled {name:6s} {side}x{batch} {cell['lever']:26s} {result['items_per_s']:9.1f} img/s "
                  f"(compile {result['compile_s']:.0f} s)", flush=True)  # fmt: skip
        except Exception as error:  # noqa: BLE001
            records.append({**cell, "status": "error", "error": f"{type(error).__name__}: {error}"[:400]})
    return records


def best_modes(report: dict) -> dict:
    """Each model's fastest measured mode per cell, and LiteVAE's speed as a multiple of the SD-VAE's (both at
    their best, measured in this run)."""
    best: dict[str, dict] = {}
    for section in ("encoders", "compiled", "levers"):
        for record in report.get(section) or []:
            if record.get("status") != "ok":
                continue
            key = f"{record['resolution']}x{record['batch']}"
            mode = record.get("mode") or f"compiled:{record.get('lever', 'default')}"
            current = best.setdefault(key, {}).get(record["model"])
            if current is None or record["items_per_s"] > current["items_per_s"]:
                best[key][record["model"]] = {"items_per_s": record["items_per_s"], "mode": mode}
    lines = []
    for key, models in best.items():
        reference = models.get("sd-vae", {}).get("items_per_s")
        for name, entry in models.items():
            if reference and name != "sd-vae":
                entry["vs_sd_vae"] = round(entry["items_per_s"] / reference, 2)
            lines.append(f"best {key:7s} {name:6s} {entry['items_per_s']:9.1f} img/s  {entry.get('vs_sd_vae', '')}x "
                         f"({entry['mode']})")  # fmt: skip
    return {"cells": best, "lines": lines}


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget_s", type=float, default=270.0, help="seconds for the whole run, compiles included")
    parser.add_argument("--output", default="benchmarks/results/gpu_profile.json")
    parser.add_argument("--sections", default="ceilings,group_norm_silu,work,encoders,cache,compiled,levers")
    parser.add_argument("--cache_dir", default="carry/photos-hires", help="photos for the caching section")
    parser.add_argument("--cache_resolution", type=int, default=1024)
    parser.add_argument("--cache_batch", type=int, default=16)
    parser.add_argument("--cache_workers", type=int, default=12)
    parser.add_argument("--work_dir", default="/tmp/gpu_profile")
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cells, args.sizes = [(32, 2), (32, 1)], [32]
        args.cache_resolution, args.cache_batch, args.cache_workers = 64, 2, 0
    else:
        args.cells, args.sizes = [(256, 32), (512, 32), (256, 1)], [256, 512]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    budget = Budget(args.budget_s / 60)
    sections = args.sections.split(",")
    torch.manual_seed(0)
    models = {name: build_encoder(name).eval().requires_grad_(False) for name in ("sd-vae", "B", "S")}
    report = {
        "benchmark": "gpu_profile",
        "command": command_line(),
        "environment": environment(device),
        "budget_s": args.budget_s,
        "predictions": PREDICTIONS,
    }

    def save(section: str, value) -> None:
        report[section] = value
        report["elapsed_s"] = round(time.perf_counter() - budget.start, 1)
        write_json(args.output, report)

    if "ceilings" in sections:
        save("ceilings", ceilings(args, device))
        print("ceilings", report["ceilings"], flush=True)
    if "group_norm_silu" in sections:
        save("group_norm_silu", group_norm_silu_section(args, device, budget))
    if "work" in sections:
        save("work", work_section(args, device, models))
    if "encoders" in sections:
        save("encoders", encoders_section(args, device, models, budget))
    if "cache" in sections:
        save("cache", cache_section(args, device, budget))
    side = 32 if args.smoke else 512
    small = 32 if args.smoke else 256
    batch = 2 if args.smoke else 32
    if "compiled" in sections:
        # Most telling first: the SD-VAE's best mode, then inductor alone and with the fused kernel at 512 px.
        fused = "fused_group_norm_silu"
        cells = [("sd-vae", side, batch, None), ("S", side, batch, None), ("S", side, batch, fused)]
        cells += [("B", side, batch, None), ("B", side, batch, fused), ("sd-vae", small, batch, None)]
        cells += [("S", small, batch, fused), ("B", small, batch, fused), ("S", small, batch, None)]
        if args.smoke:
            cells = cells[:3]
        save("compiled", compiled_section(args, device, models, budget, cells, []))
    if "levers" in sections:
        names = ["coordinate_descent_tuning", "autocast_fp32_weights", "channels_last_off", "max_autotune"]
        save("levers", compiled_section(args, device, models, budget, [], [("S", side, batch, n) for n in names]))
    save("best", best_modes(report))
    for line in report["best"]["lines"]:
        print(line, flush=True)
    print(f"wrote {args.output} ({report['elapsed_s']} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
