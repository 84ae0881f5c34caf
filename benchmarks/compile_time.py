"""What ``torch.compile`` costs a LiteVAE encoder before it pays, per strategy: whole model with static shapes,
whole model with ``dynamic=True``, or regional (``compile_repeated_blocks``: each ``LiteVAEResBlock`` compiled on
its own).

Latent caching with aspect-ratio buckets calls the encoder at many input sizes. For each strategy this times the
first call at each size of ``--sizes`` in turn (compiling, or recompiling when the size is new to it) and the
steady time per call at that size afterwards, so the compile cost and whether a new size recompiles are read side
by side. Inductor's on-disk caches are disabled so every strategy compiles cold. Random weights, eval mode, no grad.

    python benchmarks/compile_time.py --models S B --sizes 64 96 128 --output benchmarks/results/compile_time_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # every strategy compiles cold

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import command_line, environment, measure, write_json  # noqa: E402

STRATEGIES = ("eager", "static", "dynamic", "regional")


def build(preset: str, strategy: str, device: torch.device):
    """An ``AutoencoderLite`` of ``preset`` and the callable that encodes with ``strategy``."""
    from diffusers_litevae import AutoencoderLite

    torch.manual_seed(0)
    vae = AutoencoderLite.from_preset(preset).to(device).eval().requires_grad_(False)
    encoder = vae.encoder
    if strategy == "static":
        encoder.compile(dynamic=False)
    elif strategy == "dynamic":
        encoder.compile(dynamic=True)
    elif strategy == "regional":
        vae.compile_repeated_blocks()
    return encoder


def run(preset: str, strategy: str, sizes: list[int], batch: int, device: torch.device) -> dict:
    torch._dynamo.reset()
    encoder = build(preset, strategy, device)
    cells = []
    total_first = 0.0
    for size in sizes:
        x = torch.randn(batch, 3, size, size, device=device)
        with torch.no_grad():
            begin = time.perf_counter()
            encoder(x)
            first = time.perf_counter() - begin
            steady = measure(lambda x=x: encoder(x), device, items_per_call=batch, warmup=1, min_time=1.0, max_calls=20)
        total_first += first
        cells.append({"size": size, "first_call_s": round(first, 2), "steady_ms": steady["ms_per_call"]})
        print(f"{preset} {strategy:8s} {size:4d} px: first call {first:7.2f} s, steady {steady['ms_per_call']:8.1f} ms")
    return {"model": preset, "strategy": strategy, "first_calls_total_s": round(total_first, 2), "sizes": cells}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["S", "B"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="benchmarks/results/compile_time_cpu.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"benchmark": "compile_time", "command": command_line(), "environment": environment(device), "runs": []}
    for preset in args.models:
        for strategy in args.strategies:
            report["runs"].append(run(preset, strategy, args.sizes, args.batch, device))
            write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
