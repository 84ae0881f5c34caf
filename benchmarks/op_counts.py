"""Aten ops per ``encode`` call: LiteVAE-S, LiteVAE-B and the SD-VAE encoder, counted on the CPU.

In eager mode on a GPU every aten op is at least one kernel launch, so at batch 1 (and for small images) the op
count, not the FLOPs, sets the encoder's speed. An op count is deterministic: it does not depend on the machine
or its load, which is why it can be measured here, on the CPU, and compared across code versions.

What is counted: everything ``vae.encode(x)`` dispatches (encoder, ``quant_conv`` where the model has one, and
building the ``DiagonalGaussianDistribution``), at 64 px, batch 1, fp32, random weights, under ``torch.no_grad()``,
where composite ops reach the counter as the ops they run (``convolution``, ``native_group_norm``; an eval-mode
``Dropout`` runs nothing). The SD-VAE is diffusers' ``AutoencoderKL`` in the Stable Diffusion layout
(``block_out_channels`` (128, 256, 512, 512), built locally by ``diffusers_litevae.testing_utils``).

    python benchmarks/op_counts.py                        # print the table, record it as "after"
    python benchmarks/op_counts.py --label before         # record under another label (kept beside the others)

The JSON (default ``benchmarks/results/op_counts_cpu.json``) keeps one entry per label, each with its command,
so a "before" and an "after" of a change sit side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import command_line, count_ops, environment, write_json  # noqa: E402

MODELS = ("S", "B", "sd-vae")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "op_counts_cpu.json"


def build_vae(name: str) -> torch.nn.Module:
    """The model whose ``encode`` is counted, random weights (seed 0), fp32, eval mode."""
    from diffusers_litevae import AutoencoderLiteTiny
    from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl

    torch.manual_seed(0)
    if name == "sd-vae":
        return sd_vae_autoencoder_kl(seed=0).eval()
    return AutoencoderLiteTiny.from_preset(name).eval()


def encode_op_counts(name: str, resolution: int = 64, batch_size: int = 1) -> dict[str, int]:
    """Aten op name -> count for one ``encode`` of a ``(batch_size, 3, resolution, resolution)`` input."""
    vae = build_vae(name)
    images = torch.rand(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        vae.encode(images)  # first call outside the counter: lazy initialisation must not count
        counts = count_ops(lambda: vae.encode(images))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def print_table(results: dict[str, dict[str, int]], reference: dict[str, dict[str, int]] | None = None) -> None:
    ops = sorted({op for counts in results.values() for op in counts}, key=lambda op: -results["B"].get(op, 0))
    names = list(results)
    header = f"{'aten op':44s}" + "".join(f"{name:>10s}" for name in names)
    print(header)
    print("-" * len(header))
    for op in ops:
        print(f"{op:44s}" + "".join(f"{results[name].get(op, 0):10d}" for name in names))
    print("-" * len(header))
    print(f"{'total':44s}" + "".join(f"{sum(results[name].values()):10d}" for name in names))
    if reference:
        cells = []
        for name in names:
            old = sum(reference.get(name, {}).values())
            cells.append(f"{old:10d}" if old else f"{'-':>10s}")
        print(f"{'total, reference label':44s}" + "".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--label", default="after", help="key this run is stored under in the JSON")
    parser.add_argument("--reference_label", default="before", help="label whose totals are printed beside")
    parser.add_argument("--output_json", default=str(DEFAULT_JSON), help="'' to write nothing")
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {MODELS}")

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    results = {name: encode_op_counts(name, args.resolution, args.batch_size) for name in models}

    stored = {}
    if args.output_json and Path(args.output_json).is_file():
        stored = json.loads(Path(args.output_json).read_text())
    reference = stored.get(args.reference_label, {}).get("counts") if args.reference_label != args.label else None
    print(f"aten ops per encode, {args.resolution} px, batch {args.batch_size}, fp32, CPU, random weights")
    print_table(results, reference)

    if args.output_json:
        stored[args.label] = {
            "command": command_line(argv if argv is None else [sys.argv[0], *argv]),
            "resolution": args.resolution,
            "batch_size": args.batch_size,
            "environment": environment("cpu"),
            "totals": {name: sum(counts.values()) for name, counts in results.items()},
            "counts": results,
        }
        print(f"wrote {write_json(args.output_json, stored)} [{args.label}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
