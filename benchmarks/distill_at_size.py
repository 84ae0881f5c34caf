#!/usr/bin/env python
"""What makes a distilled encoder hold its teacher's quality at the sizes users encode (512-1024 px)?

A LiteVAE encoder distilled on small crops falls behind its teacher on large, smooth images: its GroupNorms take
statistics over the whole image, which at 512-1024 px differ from those of the 128-256 px crops it trained on,
and the error is mostly a whole-image offset per latent channel (colour casts, too much contrast). This benchmark
fine-tunes one distilled encoder (``--init_from``) in several arms, each for the same wall time on the same
machine, one arm at a time, and scores each on Kodak-24 at 256 px centre crops, 512 px centre crops and whole
images (``litevae eval --resolution 256,512,native --no_resize``), beside the starting model and the teacher.

Arms (one factor changed against ``control``):

- ``control``: the usual recipe continued: 256 px crops of the training folder, latent + image losses;
- ``multiscale``: crops of 256/384/512 px (one size per step, equal pixels per step) at scales 0.25-1, from the
  training folder and the high-resolution folder (``--hires_dir``, sampled ``--hires_repeats`` times as often);
- ``multiscale_stats``: ``multiscale`` plus the per-channel latent mean/std loss (``--latent_stats_weight``);
- ``multiscale_lowfreq``: ``multiscale`` plus the low-frequency loss through the frozen decoder
  (``--low_frequency_weight``);
- ``final_512``: ``multiscale``'s data, 512 px crops only (a final phase at the size users encode).

Writes ``--output_json`` (commands, per-arm training summaries and the three sizes' PSNR/SSIM, with the gap to the
teacher) and ``--output_png`` (PSNR per size and arm). Example (about 45 minutes on 2 cores)::

    python benchmarks/distill_at_size.py --teacher taef2 --init_from litevae-s-taef2 \\
        --train_data_dir ../shared/data/photos-train --hires_dir ../shared/data/photos-hires \\
        --eval_dir ../shared/data/kodak24 --minutes_per_arm 7 \\
        --output_json benchmarks/results/distill_at_size_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

SIZES = ("256", "512", "native")
SIZE_NAMES = {"256": "256 px crops", "512": "512 px crops", "native": "whole images"}


def arms(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each arm's own ``litevae distill`` flags."""
    multiscale_data = [
        "--train_data_dir",
        args.train_data_dir,
        args.hires_dir,
        "--train_data_repeats",
        "1",
        str(args.hires_repeats),
        "--crop_scales",
        "0.25,1",
    ]
    mixed = ["--resolution_schedule", "256/384/512", "--train_batch_size", str(args.batch_size_256)]
    return {
        "control": ["--train_data_dir", args.train_data_dir, "--resolution_schedule", "256"]
        + ["--train_batch_size", str(args.batch_size_256)],
        "multiscale": multiscale_data + mixed,
        "multiscale_stats": multiscale_data + mixed + ["--latent_stats_weight", str(args.latent_stats_weight)],
        "multiscale_lowfreq": multiscale_data + mixed + ["--low_frequency_weight", str(args.low_frequency_weight)],
        "final_512": multiscale_data
        + ["--resolution_schedule", "512", "--train_batch_size", str(max(1, args.batch_size_256 // 4))],
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="the teacher (folder, Hub id or bundled name)")
    parser.add_argument("--init_from", required=True, help="the distilled AutoencoderLite every arm starts from")
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--hires_dir", required=True, help="high-resolution photos for native-scale crops")
    parser.add_argument("--hires_repeats", type=int, default=8)
    parser.add_argument("--eval_dir", required=True, help="Kodak-24 (never trained on)")
    parser.add_argument("--max_eval_images", type=int, default=12)
    parser.add_argument("--minutes_per_arm", type=float, default=7.0)
    parser.add_argument("--batch_size_256", type=int, default=8, help="batch at 256 px (larger sizes: equal pixels)")
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--latent_stats_weight", type=float, default=4.0)
    parser.add_argument("--low_frequency_weight", type=float, default=2.0)
    parser.add_argument("--arms", nargs="+", default=None, help="run only these arms")
    parser.add_argument("--work_dir", default="runs/distill_at_size")
    parser.add_argument("--output_json", default="benchmarks/results/distill_at_size_cpu.json")
    parser.add_argument("--output_png", default="benchmarks/results/distill_at_size_cpu.png")
    return parser.parse_args(argv)


def run(command: list[str], log: Path) -> float:
    """Run ``command`` with its output in ``log``; returns the wall time. Raises on failure."""
    print("$", shlex.join(command), flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def evaluate(args, vaes: list[str], output_dir: Path) -> dict:
    """``litevae eval`` of ``vaes`` at the three sizes; returns ``summary["sizes"]``."""
    command = ["litevae", "eval", "--image_dir", args.eval_dir, "--max_images", str(args.max_eval_images)]
    command += ["--resolution", ",".join(SIZES), "--no_resize", "--skip_lpips", "--skip_rfid", "--skip_speed"]
    command += ["--grid_images", "2", "--output_dir", str(output_dir)]
    for vae in vaes:
        command += ["--vae", vae]
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_file = output_dir / "summary.json"
    if not summary_file.is_file():  # a rerun after an interruption reuses a finished evaluation
        run(command, output_dir / "eval.log")
    summary = json.loads(summary_file.read_text())
    return {"command": shlex.join(command), "sizes": summary["sizes"]}


def psnr_table(sizes: dict) -> dict[str, dict[str, float]]:
    """``{model: {size: psnr}}`` from ``summary["sizes"]``."""
    table: dict[str, dict[str, float]] = {}
    for size, entry in sizes.items():
        for model, metrics in entry["models"].items():
            table.setdefault(model, {})[size] = metrics["psnr"]
    return table


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["psnr"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(SIZES)
    for index, size in enumerate(SIZES):
        values = [rows[name].get(size, float("nan")) for name in names]
        ax.bar([i + index * width for i in range(len(names))], values, width, label=SIZE_NAMES[size])
    ax.set_xticks([i + width for i in range(len(names))], names, rotation=20, ha="right")
    low = min(v for row in rows.values() for v in row.values())
    ax.set_ylim(low - 1.5, None)
    ax.set_ylabel("PSNR (dB), Kodak")
    ax.set_title(f"fine-tuning {results['settings']['init_from']}: {results['settings']['minutes_per_arm']} min/arm")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    output = Path(args.output_json)
    results = json.loads(output.read_text()) if output.is_file() else {}
    results["settings"] = vars(args)
    results.setdefault("arms", {})
    results.setdefault("psnr", {})

    if "start" not in results["psnr"]:
        start = evaluate(args, [f"{args.init_from}:start", f"{args.teacher}:teacher"], work / "eval-start")
        results["start_eval"] = start
        table = psnr_table(start["sizes"])
        results["psnr"]["start"], results["psnr"]["teacher"] = table["start"], table["teacher"]

    common = ["litevae", "distill", "--teacher", args.teacher, "--init_from", args.init_from]
    common += ["--num_validation_images", "8", "--validation_glob", "bsds_val_*", "--validation_resolution", "256"]
    common += ["--learning_rate", str(args.learning_rate), "--lr_scheduler", "constant_with_warmup"]
    common += ["--lr_warmup_steps", "10", "--mixed_precision", "bf16", "--teacher_channels_last"]
    common += ["--max_train_steps", "100000", "--max_minutes", str(args.minutes_per_arm)]
    common += ["--validation_steps", "100000", "--checkpointing_steps", "100000", "--no-progress_bar"]
    for name, flags in arms(args).items():
        if (args.arms and name not in args.arms) or name in results["arms"]:
            continue
        out = work / name
        command = common + flags + ["--output_dir", str(out)]
        wall = run(command, work / f"{name}.log")
        summary = json.loads((out / "distillation.json").read_text())
        scored = evaluate(args, [f"{out}:{name}"], work / f"eval-{name}")
        results["arms"][name] = {
            "command": shlex.join(command),
            "wall_time_s": round(wall, 1),
            "steps": summary["final_metrics"]["step"],
            "images_seen": summary["final_metrics"]["images_seen"],
            "eval_command": scored["command"],
            "sizes": scored["sizes"],
        }
        results["psnr"][name] = psnr_table(scored["sizes"])[name]
        teacher = results["psnr"]["teacher"]
        gaps = {size: round(teacher[size] - value, 2) for size, value in results["psnr"][name].items()}
        print(f"{name}: {summary['final_metrics']['step']} steps; PSNR {results['psnr'][name]}; gap {gaps}")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1))
    output.write_text(json.dumps(results, indent=1))
    plot(results, Path(args.output_png))
    print(f"wrote {output} and {args.output_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
