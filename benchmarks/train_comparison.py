#!/usr/bin/env python
"""Small-scale `litevae train` comparisons at equal wall time, scored on Kodak-24 centre 256 crops.

The LiteVAE paper claims that Self-Modulated Convolutions beat GroupNorm in the decoder (section 4.2) and that
pre-training at 128 px before fine-tuning at 256 px matches 256 px training at under half the cost (section 4.3).
This benchmark checks both, and the wavelet + Gaussian losses, at a scale a CPU can afford. Four arms, each
trained from scratch for the same number of minutes:

- ``reference``: SMC decoder, all losses, 128 px then 256 px (the paper's recipe);
- ``groupnorm``: the same with a GroupNorm decoder;
- ``no_wavelet_gaussian``: the reference without the wavelet and Gaussian losses;
- ``256_only``: the reference at 256 px throughout.

The model is small: a LiteVAE-S encoder and a reduced SD-layout decoder (``--decoder_block_out_channels``, one
ResBlock per stage, no attention). Arms run ``--parallel`` at a time with ``--threads`` threads each, so arms of one
round share the machine equally. A short probe first times a step at each resolution (with and without the
discriminator), then each arm's step counts are planned so that its 128 px phase takes ``--pretrain_fraction`` of
its time and the discriminator starts with the 256 px phase (in ``256_only``: at the same fraction of its steps).
Every arm also stops at ``--minutes_per_arm`` (``--max_minutes``), whatever the plan.

Writes ``--output_json`` (settings, per-arm training summaries, Kodak-24 PSNR/SSIM, pairwise differences) and
``--output_png`` (held-out PSNR against wall time, one line per arm). Example (about 2 hours on 2 cores)::

    python benchmarks/train_comparison.py --train_data_dir ../shared/data/photos-train \\
        --eval_dir ../shared/data/kodak24 --minutes_per_arm 25 --parallel 2 --threads 1 \\
        --output_json benchmarks/results/train_comparison_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ARMS = {
    "reference": {},
    "groupnorm": {"decoder": "groupnorm"},
    "no_wavelet_gaussian": {"wavelet_weight": "0", "gaussian_weight": "0"},
    "256_only": {"schedule": "256"},
}
COMPARISONS = (
    ("SMC vs GroupNorm decoder", "reference", "groupnorm"),
    ("with vs without wavelet + Gaussian losses", "reference", "no_wavelet_gaussian"),
    ("128 -> 256 px vs 256 px only", "reference", "256_only"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--eval_dir", required=True, help="Kodak-24 (scored on centre 256 crops, no resize)")
    parser.add_argument("--num_validation_images", type=int, default=60, help="held out of --train_data_dir")
    parser.add_argument("--validation_glob", default="bsds_val_*")
    parser.add_argument("--max_validation_images", type=int, default=12, help="of those, scored during training")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"subset of {list(ARMS)}")
    parser.add_argument("--minutes_per_arm", type=float, default=20.0)
    parser.add_argument("--pretrain_fraction", type=float, default=0.7, help="share of an arm's time at 128 px")
    parser.add_argument("--parallel", type=int, default=2, help="arms run at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    parser.add_argument("--latent_channels", type=int, default=4)
    parser.add_argument("--decoder_block_out_channels", default="32,64,128,128")
    parser.add_argument("--discriminator_block_out_channels", default="16,32,64")
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--validation_points", type=int, default=6, help="validations per arm (the curve)")
    parser.add_argument("--probe_steps", type=int, default=4)
    parser.add_argument("--work_dir", default="outputs/train-comparison")
    parser.add_argument("--output_json", default="outputs/train-comparison/train_comparison.json")
    parser.add_argument("--output_png", default=None, help="default: --output_json with .png")
    args = parser.parse_args(argv)
    args.arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if not args.arms or not set(args.arms) <= set(ARMS):
        parser.error(f"--arms: choose from {list(ARMS)}")
    if not 0 < args.pretrain_fraction < 1:
        parser.error("--pretrain_fraction must be between 0 and 1")
    args.output_png = args.output_png or str(Path(args.output_json).with_suffix(".png"))
    return args


def _command(args, output_dir: Path, schedule: str, steps: int, start: int, minutes: float | None, **extra) -> list:
    command = [
        sys.executable,
        "-m",
        "diffusers_litevae.cli",
        "train",
        "--train_data_dir",
        args.train_data_dir,
        "--num_validation_images",
        str(args.num_validation_images),
        "--validation_glob",
        args.validation_glob,
        "--validation_resolution",
        "256",
        "--max_validation_images",
        str(args.max_validation_images),
        "--num_grid_images",
        "2",
        "--encoder",
        "S",
        "--latent_channels",
        str(args.latent_channels),
        "--decoder",
        extra.pop("decoder", "smc"),
        "--decoder_block_out_channels",
        args.decoder_block_out_channels,
        "--decoder_layers_per_block",
        "1",
        "--decoder_norm_num_groups",
        "16",
        "--no-decoder_attention",
        "--discriminator_block_out_channels",
        args.discriminator_block_out_channels,
        "--resolution_schedule",
        schedule,
        "--max_train_steps",
        str(steps),
        "--discriminator_start_step",
        str(start),
        "--train_batch_size",
        str(args.train_batch_size),
        "--learning_rate",
        str(args.learning_rate),
        "--discriminator_learning_rate",
        str(args.learning_rate),
        "--mixed_precision",
        "bf16",
        "--use_ema",
        "--validation_steps",
        str(max(1, steps // args.validation_points)),
        "--checkpointing_steps",
        str(max(1, steps // args.validation_points)),
        "--checkpoints_total_limit",
        "1",
        "--logging_steps",
        "10",
        "--scaling_images",
        "16",
        "--no-progress_bar",
        "--seed",
        "0",
        "--output_dir",
        str(output_dir),
    ]
    if minutes is not None:
        command += ["--max_minutes", str(minutes)]
    for key, value in extra.items():
        command += [f"--{key}", value]
    return command


def _env(args) -> dict:
    threads = str(args.threads)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}


def probe(args, work: Path) -> dict:
    """Seconds per step at 128 and 256 px, without and with the discriminator (one arm's conditions: the probes
    run ``--parallel`` at a time, like the arms)."""
    cases = {
        "128": ("128", 2 * args.probe_steps, args.probe_steps),
        "256": ("256", 2 * args.probe_steps, args.probe_steps),
    }
    processes = {}
    for name, (schedule, steps, start) in cases.items():
        output = work / f"probe-{name}"
        command = _command(args, output, schedule, steps, start, None, logging_steps=str(args.probe_steps))
        command[command.index("--validation_steps") + 1] = "100000"
        processes[name] = subprocess.Popen(command, env=_env(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timings = {}
    for name, process in processes.items():
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"probe {name} failed:\n{err.decode()[-3000:]}")
        history = json.loads((work / f"probe-{name}" / "training.json").read_text())["loss_history"]
        # history[i]["images_per_s"] is cumulative; split the two logging windows (without / with discriminator).
        first, second = history[0], history[-1]
        batch = args.train_batch_size
        s_without = first["step"] * batch / first["images_per_s"] / first["step"]
        s_total = second["step"] * batch / second["images_per_s"]
        s_with = (s_total - s_without * first["step"]) / (second["step"] - first["step"])
        timings[name] = {
            "seconds_per_step": round(s_without, 3),
            "seconds_per_step_with_discriminator": round(s_with, 3),
        }
        print(f"probe {name} px: {s_without:.2f} s/step, {s_with:.2f} s/step with the discriminator", flush=True)
    return timings


def plan(args, arm: str, timings: dict) -> tuple[str, int, int]:
    """``(resolution_schedule, max_train_steps, discriminator_start_step)`` filling ``--minutes_per_arm``."""
    budget = args.minutes_per_arm * 60 * 0.95  # validation, checkpoints and the final write take the rest
    if ARMS[arm].get("schedule") == "256":
        t = timings["256"]
        head = budget * args.pretrain_fraction
        steps_head = max(1, int(head / t["seconds_per_step"]))
        steps_tail = max(1, int((budget - head) / t["seconds_per_step_with_discriminator"]))
        return "256", steps_head + steps_tail, steps_head
    head = budget * args.pretrain_fraction
    steps_head = max(1, int(head / timings["128"]["seconds_per_step"]))
    steps_tail = max(1, int((budget - head) / timings["256"]["seconds_per_step_with_discriminator"]))
    return f"128:{steps_head},256", steps_head + steps_tail, steps_head


def run_arms(args, work: Path, timings: dict) -> dict:
    results, pending = {}, list(args.arms)
    while pending:
        group, pending = pending[: args.parallel], pending[args.parallel :]
        processes = {}
        for arm in group:
            schedule, steps, start = plan(args, arm, timings)
            extra = {k: v for k, v in ARMS[arm].items() if k != "schedule"}
            command = _command(args, work / arm, schedule, steps, start, args.minutes_per_arm, **extra)
            print(f"{arm}: {schedule}, {steps} steps, discriminator from step {start}", flush=True)
            log = open(work / f"{arm}.log", "w")
            processes[arm] = (subprocess.Popen(command, env=_env(args), stdout=log, stderr=subprocess.STDOUT), log)
        for arm, (process, log) in processes.items():
            process.wait()
            log.close()
            if process.returncode:
                raise SystemExit(f"arm {arm} failed; see {work / f'{arm}.log'}")
            summary = json.loads((work / arm / "training.json").read_text())
            results[arm] = {
                "schedule": summary["settings"]["resolution_schedule"],
                "steps": summary["final_metrics"]["step"],
                "images_seen": summary["final_metrics"]["images_seen"],
                "wall_time_s": summary["wall_time_s"],
                "train_images_per_s": summary["train_images_per_s"],
                "heldout_psnr": summary["final_metrics"]["psnr"],
                "heldout_ssim": summary["final_metrics"]["ssim"],
                "scaling_factor": summary["model"]["scaling_factor"],
                "curve": [
                    {"step": p["step"], "wall_time_s": p["wall_time_s"], "psnr": p["psnr"], "ssim": p["ssim"]}
                    for p in summary["curve"]
                ],
            }
            print(
                f"{arm}: held-out PSNR {summary['final_metrics']['psnr']:.2f} dB after {results[arm]['steps']} "
                f"steps ({summary['train_images_per_s']:.2f} img/s)",
                flush=True,
            )
    return results


def evaluate(args, work: Path, results: dict) -> None:
    command = [
        sys.executable,
        "-m",
        "diffusers_litevae.cli",
        "eval",
        "--image_dir",
        args.eval_dir,
        "--resolution",
        "256",
        "--no_resize",
        "--skip_lpips",
        "--skip_rfid",
        "--skip_speed",
        "--grid_images",
        "4",
        "--output_dir",
        str(work / "eval"),
    ]
    for arm in results:
        command += ["--vae", f"{work / arm}:{arm}"]
    subprocess.run(command, env=_env(args), check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((work / "eval" / "summary.json").read_text())
    for arm in results:
        results[arm]["kodak24_256_psnr"] = summary["models"][arm]["psnr"]
        results[arm]["kodak24_256_ssim"] = summary["models"][arm]["ssim"]


def plot(path: str, results: dict) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    for arm, result in results.items():
        curve = result["curve"]
        axis.plot([p["wall_time_s"] / 60 for p in curve], [p["psnr"] for p in curve], marker="o", label=arm)
    axis.set_xlabel("wall time (min)")
    axis.set_ylabel("held-out PSNR (dB)")
    axis.set_title("litevae train: arms at equal wall time")
    axis.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    timings = probe(args, work)
    results = run_arms(args, work, timings)
    evaluate(args, work, results)
    report = {
        "settings": {k: v for k, v in vars(args).items()},
        "probe": timings,
        "arms": results,
        "comparisons": [
            {
                "comparison": name,
                "a": a,
                "b": b,
                "kodak24_psnr_difference_db": round(results[a]["kodak24_256_psnr"] - results[b]["kodak24_256_psnr"], 3),
                "heldout_psnr_difference_db": round(results[a]["heldout_psnr"] - results[b]["heldout_psnr"], 3),
            }
            for name, a, b in COMPARISONS
            if a in results and b in results
        ],
        "total_minutes": round((time.time() - started) / 60, 1),
    }
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(report, indent=1))
    plot(args.output_png, results)
    for arm, result in results.items():
        print(
            f"{arm:22s} Kodak-24 256 crops {result['kodak24_256_psnr']:.2f} dB / {result['kodak24_256_ssim']:.4f}  "
            f"held-out {result['heldout_psnr']:.2f} dB  {result['steps']} steps"
        )
    for row in report["comparisons"]:
        print(f"{row['comparison']}: {row['a']} - {row['b']} = {row['kodak24_psnr_difference_db']:+.2f} dB (Kodak-24)")
    print(f"wrote {args.output_json} and {args.output_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
