#!/usr/bin/env python
"""Which distillation recipe converges fastest on a CPU: several recipes for equal wall time, in one run.

Every recipe distils a LiteVAE encoder (default S) against the frozen TAEF2 teacher on a training folder, from the
same cached teacher targets (built once before any timing), for ``--minutes_per_recipe`` of training each. The
validation PSNR is measured on Kodak-24 centre 256x256 crops (``--eval_dir``), and plotted against training
wall-clock time (validation and checkpoint time excluded) so recipes with different step costs compare fairly.
Writes one JSON (curves, img/s, final PSNR per recipe) and one PNG.

Example (what produced ``benchmarks/results/distill_recipes_cpu.*``)::

    python benchmarks/distill_recipes.py --train_data_dir ../shared/data/photos-train \\
        --eval_dir ../shared/data/kodak24 \\
        --teacher src/diffusers_litevae/pretrained/taef2 --minutes_per_recipe 4 --work_dir outputs/recipes \\
        --output_json benchmarks/results/distill_recipes_cpu.json \\
        --output_png benchmarks/results/distill_recipes_cpu.png
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffusers_litevae.training import DistillConfig, distill

# name -> (description, DistillConfig overrides). All use cached teacher targets and an EMA of the weights.
RECIPES: dict[str, tuple[str, dict]] = {
    "bf16-all-losses-128": (
        "bf16 autocast, teacher channels-last, latent+std+L1+wavelet+Gaussian losses, 128 px, batch 16, lr 1e-3",
        dict(
            mixed_precision="bf16",
            teacher_channels_last=True,
            resolution_schedule="128",
            train_batch_size=16,
            learning_rate=1e-3,
        ),
    ),
    "fp32-all-losses-128": (
        "same losses and crops in fp32 (no autocast)",
        dict(mixed_precision="no", resolution_schedule="128", train_batch_size=16, learning_rate=1e-3),
    ),
    "bf16-latent-only-64-128": (
        "bf16, latent+std losses only (no decoder in the step), 64 px then 128 px, batch 32, lr 2e-3",
        dict(
            mixed_precision="bf16",
            teacher_channels_last=True,
            resolution_schedule="64:{half},128",
            train_batch_size=32,
            learning_rate=2e-3,
            reconstruction_weight=0.0,
            wavelet_weight=0.0,
            gaussian_weight=0.0,
        ),
    ),
    "bf16-all-losses-64-128": (
        "bf16, all losses, 64 px then 128 px, batch 32, lr 1e-3",
        dict(
            mixed_precision="bf16",
            teacher_channels_last=True,
            resolution_schedule="64:{half},128",
            train_batch_size=32,
            learning_rate=1e-3,
        ),
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--teacher", required=True, help="teacher VAE (a TAESD-family folder such as the bundled taef2)"
    )
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--eval_dir", required=True, help="validation images (Kodak-24); centre 256 px crops")
    parser.add_argument("--student", default="S")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--minutes_per_recipe", type=float, default=4.0)
    parser.add_argument("--validations_per_recipe", type=int, default=6, help="validation points along each curve")
    parser.add_argument("--holdout_glob", default="bsds_val_*", help="training images held out (never trained on)")
    parser.add_argument("--num_holdout", type=int, default=24)
    parser.add_argument("--work_dir", default="outputs/distill_recipes")
    parser.add_argument("--output_json", default="outputs/distill_recipes.json")
    parser.add_argument("--output_png", default="outputs/distill_recipes.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="rerun recipes already in --output_json (else kept)")
    # Internal: run one recipe in a child process and write its result (accelerate fixes mixed precision per process).
    parser.add_argument("--run_one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one_json", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _probe_steps_per_minute(config: DistillConfig) -> float:
    """Steps per minute of a recipe (a short untimed run), used only to space validations and set the LR schedule."""
    probe = DistillConfig(
        **{
            **config.__dict__,
            "max_train_steps": 6,
            "validation_steps": 10_000,
            "checkpointing_steps": 10_000,
            "output_dir": config.output_dir + "-probe",
            "max_validation_images": 1,
        }
    )
    result = distill(probe)
    return 60.0 * result["train_images_per_s"] / config.train_batch_size


def _data_settings(args, targets_dir: Path) -> dict:
    """What every run of this benchmark shares: teacher, student, data, held-out images, evaluation, targets."""
    return dict(
        teacher=args.teacher,
        student=args.student,
        train_data_dir=args.train_data_dir,
        num_validation_images=args.num_holdout,
        validation_glob=args.holdout_glob,
        validation_dir=args.eval_dir,
        validation_resolution=256,
        teacher_latents=str(targets_dir),
    )


def run_recipe(name: str, args, targets_dir: Path) -> dict:
    description, overrides = RECIPES[name]
    base = dict(
        **_data_settings(args, targets_dir),
        use_ema=True,
        ema_decay=0.999,
        lr_scheduler="cosine",
        lr_warmup_steps=50,
        seed=args.seed,
        checkpointing_steps=100_000,
        logging_steps=10,
        progress_bar=False,
        output_dir=str(Path(args.work_dir) / name),
    )
    settings = {**base, **overrides}
    schedule = settings["resolution_schedule"]
    settings["resolution_schedule"] = schedule.replace("{half}", "100")  # placeholder for the probe
    steps_per_minute = _probe_steps_per_minute(DistillConfig(**settings))
    total_steps = max(10, int(steps_per_minute * args.minutes_per_recipe))
    settings["resolution_schedule"] = schedule.replace("{half}", str(total_steps // 2))
    settings.update(
        max_train_steps=total_steps,
        max_minutes=args.minutes_per_recipe * 1.15,
        validation_steps=max(1, total_steps // args.validations_per_recipe),
    )
    started = time.perf_counter()
    result = distill(DistillConfig(**settings))
    return {
        "description": description,
        "settings": {
            k: v for k, v in settings.items() if k in overrides or k in ("max_train_steps", "validation_steps")
        },
        "train_images_per_s": result["train_images_per_s"],
        "steps": result["final_metrics"]["step"],
        "final_psnr": result["final_metrics"]["psnr_student"],
        "final_ssim": result["final_metrics"]["ssim_student"],
        "psnr_teacher": result["final_metrics"]["psnr_teacher"],
        "curve": [
            {k: e.get(k) for k in ("step", "train_time_s", "wall_time_s", "psnr_student", "ssim_student", "latent_mse")}
            for e in result["curve"]
        ],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for name, recipe in report["recipes"].items():
        curve = recipe["curve"]
        axis.plot(
            [e["train_time_s"] / 60 for e in curve],
            [e["psnr_student"] for e in curve],
            marker="o",
            label=f"{name} ({recipe['train_images_per_s']:.1f} img/s)",
        )
    teacher = next(iter(report["recipes"].values()))["psnr_teacher"]
    axis.axhline(teacher, color="grey", linestyle="--", label=f"TAEF2 teacher {teacher:.2f} dB")
    axis.set_xlabel("training time (minutes, validation excluded)")
    axis.set_ylabel("PSNR on Kodak-24 centre 256 crops (dB)")
    axis.set_title(f"LiteVAE-{report['student']} distilled against TAEF2 on {report['machine']}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _run_in_child(name: str, argv: list[str], work: Path) -> dict:
    """One recipe in its own process: accelerate's mixed-precision setting cannot change within a process."""
    result_file = work / f"{name}.result.json"
    command = [sys.executable, __file__, *argv, "--run_one", name, "--one_json", str(result_file)]
    subprocess.run(command, check=True)
    return json.loads(result_file.read_text())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work_dir)
    targets_dir = work / "teacher-latents-128"
    if args.run_one:
        Path(args.one_json).write_text(json.dumps(run_recipe(args.run_one, args, targets_dir)))
        return 0
    # Build the shared targets once (one step of the first recipe; untimed), so no recipe pays for them.
    first = RECIPES[args.recipes[0]][1]
    previous = {}
    if Path(args.output_json).is_file() and not args.fresh:
        previous = json.loads(Path(args.output_json).read_text()).get("recipes", {})
    distill(
        DistillConfig(
            **_data_settings(args, targets_dir),
            max_validation_images=1,
            resolution_schedule="128",
            max_train_steps=1,
            mixed_precision=first.get("mixed_precision"),
            output_dir=str(work / "build-targets"),
            progress_bar=False,
        )
    )
    report = {
        "student": args.student,
        "teacher": args.teacher,
        "eval": f"{args.eval_dir}, centre 256x256 crops",
        "minutes_per_recipe": args.minutes_per_recipe,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores"
        if not torch.cuda.is_available()
        else torch.cuda.get_device_name(),
        "recipes": {},
    }
    for name in args.recipes:
        if name in previous:
            report["recipes"][name] = previous[name]
            continue
        report["recipes"][name] = _run_in_child(name, argv, work)
        recipe = report["recipes"][name]
        print(
            f"{name:28s} {recipe['train_images_per_s']:6.1f} img/s  {recipe['steps']:5d} steps  "
            f"PSNR {recipe['final_psnr']:.2f} dB",
            flush=True,
        )
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(
            json.dumps(report, indent=1)
        )  # after every recipe: a killed run keeps its results
    best = max(report["recipes"], key=lambda n: report["recipes"][n]["final_psnr"])
    report["best"] = best
    Path(args.output_json).write_text(json.dumps(report, indent=1))
    plot(report, Path(args.output_png))
    print(f"best: {best}; wrote {args.output_json} and {args.output_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
