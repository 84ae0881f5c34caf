#!/usr/bin/env python
"""Distillation quality benchmark: LiteVAE students against the frozen TAEF2 teacher, side by side.

For each ``--presets`` entry this trains a student with the project's trainer
(:func:`diffusers_litevae.training.distill`) on ``photos-train`` (holding out the first ``--holdout`` files matching
``--holdout_glob`` in sorted order, as the baseline below does), records the validation PSNR-vs-steps curve,
then evaluates teacher and student on full-size images (Kodak-24 and/or the held-out photos): PSNR, SSIM and
latent MSE, through the same frozen teacher decoder. It writes one JSON report and one PNG with the curves.

CPU scale (what ran on a shared 2-core machine in ~8 minutes; LiteVAE-S only, 128 px, Kodak centre 256 crops)::

    python benchmarks/distill_quality.py --presets S --max_minutes 7 --train_batch_size 4 --resolution_schedule 128 \
        --learning_rate 1e-3 --lr_warmup_steps 10 --validation_steps 40 --checkpointing_steps 40 \
        --curve_resolution 256 --final_eval none --num_threads 1 \
        --work_dir /tmp/dq_cpu --report benchmarks/results/distill_quality_cpu.json

GPU (one H100, ~25 minutes of training split over B and S; see docs/distillation.md)::

    python benchmarks/distill_quality.py --presets B S --max_minutes 12 --train_batch_size 32 \
        --resolution_schedule 128:3000,256 --learning_rate 5e-4 --lr_warmup_steps 100 \
        --mixed_precision bf16 --channels_last --compile --dataloader_num_workers 8 \
        --validation_steps 250 --checkpointing_steps 250 --curve_set holdout --final_eval kodak,holdout \
        --work_dir /tmp/litevae-distill-quality --report benchmarks/results/distill_quality_h100.json

Re-running with the same ``--work_dir`` resumes each preset from its latest checkpoint (for runs split across
sessions, carry ``--work_dir``), so ``--max_minutes`` is a per-invocation budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffusers_litevae import AutoencoderLite
from diffusers_litevae.training import (
    DistillConfig,
    compute_teacher_reference,
    distill,
    evaluate_autoencoder,
    find_images,
    load_eval_image,
    load_teacher,
    split_holdout,
)

# Baseline: a plain prototype loop (eager bf16, AdamW 3e-4, latent MSE + L1, batch 32 at 256 px) on one
# H100, PSNR on the 60 held-out photos (full size); TAEF2's own encoder gives 28.16 dB there.
BASELINE = {
    "description": "plain prototype loop, eager bf16, AdamW lr 3e-4, latent MSE + L1, batch 32, 256 px, H100",
    "train_images_per_s": 166.0,
    "eval_set": "first 60 bsds_val_* of photos-train, full size",
    "psnr_teacher": 28.16,
    "curve": [
        {"step": 500, "wall_minutes": 2.0, "psnr_student": 21.83},
        {"step": 1000, "wall_minutes": 3.5, "psnr_student": 22.23},
        {"step": 1500, "wall_minutes": 4.9, "psnr_student": 23.04},
        {"step": 1984, "wall_minutes": 6.3, "psnr_student": 22.97},
    ],
}

logger = logging.getLogger("distill_quality")


def parse_args(argv=None) -> argparse.Namespace:
    shared = Path(__file__).resolve().parents[2] / "shared"
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["S"], help="student presets, trained one after the other")
    parser.add_argument("--teacher", default=str(shared / "weights" / "taef2"))
    parser.add_argument("--train_data_dir", default=str(shared / "data" / "photos-train"))
    parser.add_argument("--kodak_dir", default=str(shared / "data" / "kodak24"))
    parser.add_argument("--holdout", type=int, default=60, help="held-out photos, excluded from training")
    parser.add_argument("--holdout_glob", default="bsds_val_*")
    parser.add_argument("--work_dir", default="/tmp/litevae-distill-quality", help="model folders and checkpoints")
    parser.add_argument(
        "--report", default="benchmarks/results/distill_quality.json", help="JSON report (PNG beside it)"
    )
    # training
    parser.add_argument("--max_minutes", type=float, default=7.0, help="training budget per preset and invocation")
    parser.add_argument("--max_train_steps", type=int, default=100_000)
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--resolution_schedule", default="128")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_warmup_steps", type=int, default=20)
    parser.add_argument("--latent_weight", type=float, default=1.0)
    parser.add_argument("--std_weight", type=float, default=1.0)
    parser.add_argument("--reconstruction_weight", type=float, default=1.0)
    parser.add_argument("--wavelet_weight", type=float, default=0.1)
    parser.add_argument("--gaussian_weight", type=float, default=0.1)
    parser.add_argument("--use_ema", action="store_true")
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--dataloader_num_workers", type=int, default=1)
    parser.add_argument("--validation_steps", type=int, default=20)
    parser.add_argument("--checkpointing_steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    # evaluation
    parser.add_argument(
        "--curve_set", default="kodak", choices=["kodak", "holdout"], help="validation set during training"
    )
    parser.add_argument(
        "--curve_resolution", type=int, default=None, help="centre crop for the training curve (default full)"
    )
    parser.add_argument(
        "--final_eval",
        default="kodak",
        help="comma list of full-size final evaluations (kodak, holdout), or 'none' to report the curve's last point",
    )
    parser.add_argument("--max_eval_images", type=int, default=None, help="cap every evaluation set (smoke runs only)")
    return parser.parse_args(argv)


def load_images(paths, resolution=None) -> list[torch.Tensor]:
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(load_eval_image(image.convert("RGB"), resolution))
    return images


def final_eval_sets(args) -> dict[str, tuple[str, list[Path]]]:
    _, held_out = split_holdout(find_images(args.train_data_dir), args.holdout, args.holdout_glob)
    sets = {
        "kodak": (f"Kodak-24 ({args.kodak_dir}), full 768x512", find_images(args.kodak_dir)),
        "holdout": (
            f"first {len(held_out)} {args.holdout_glob} of photos-train, full size (cropped to a multiple of 8)",
            held_out,
        ),
    }
    return {name: sets[name] for name in args.final_eval.split(",") if name and name != "none"}


def predict_steps_to_gap(curve: list[dict], teacher_psnr: float, target_gap: float = 0.5) -> dict | None:
    """Fit gap(images) = a * images^-b on the second half of the curve; extrapolate to ``target_gap`` dB.

    A rough power-law extrapolation, reported as such: it assumes the late-curve trend continues.
    """
    points = [(e["images_seen"], teacher_psnr - e["psnr_student"]) for e in curve if e["images_seen"] > 0]
    points = points[len(points) // 2 :]
    points = [(n, g) for n, g in points if g > 0]
    if len(points) < 3:
        return None
    log_n, log_gap = np.log([n for n, _ in points]), np.log([g for _, g in points])
    slope, intercept = np.polyfit(log_n, log_gap, 1)
    if slope >= 0:
        return {"fit": "gap not shrinking over the fitted range", "exponent": float(slope)}
    images = math.exp((math.log(target_gap) - intercept) / slope)
    return {
        "fit": "gap_dB = a * images_seen^b on the curve's second half",
        "a": float(math.exp(intercept)),
        "b": float(slope),
        "images_to_0.5dB": images,
    }


def psnr_at_wall_minutes(curve: list[dict], minutes: float) -> float | None:
    """Student PSNR interpolated at a wall-clock time (our wall time includes validation: conservative)."""
    times = [e["wall_time_s"] / 60 for e in curve]
    if not curve or minutes > times[-1]:
        return None
    return float(np.interp(minutes, times, [e["psnr_student"] for e in curve]))


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install 'diffusers-litevae[plots]')")
        return
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.2))
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.85, wspace=0.2)
    for preset, entry in report["students"].items():
        curve = entry["curve"]
        by_step.plot(
            [e["step"] for e in curve], [e["psnr_student"] for e in curve], marker="o", label=f"LiteVAE-{preset}"
        )
        by_time.plot(
            [e["wall_time_s"] / 60 for e in curve],
            [e["psnr_student"] for e in curve],
            marker="o",
            label=f"LiteVAE-{preset}",
        )
        teacher = curve[-1]["psnr_teacher"]
    for axis in (by_step, by_time):
        axis.axhline(teacher, color="black", linestyle="--", label="TAEF2 encoder (teacher)")
        axis.set_ylabel(f"PSNR (dB), {report['curve_set']}")
    if report["curve_set_is_baseline_set"]:
        base = BASELINE["curve"]
        by_step.plot(
            [b["step"] for b in base],
            [b["psnr_student"] for b in base],
            "s:",
            color="gray",
            label="baseline loop (H100)",
        )
        by_time.plot(
            [b["wall_minutes"] for b in base],
            [b["psnr_student"] for b in base],
            "s:",
            color="gray",
            label="baseline loop (H100)",
        )
    by_step.set_xlabel("optimizer step")
    by_time.set_xlabel("wall time (minutes)")
    by_step.legend(fontsize=8)
    figure.suptitle(f"Distilling LiteVAE encoders against TAEF2 ({report['device']})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )
    curve_set = (
        f"Kodak-24 {'full' if args.curve_resolution is None else f'centre {args.curve_resolution} px crops'}"
        if args.curve_set == "kodak"
        else f"first {args.holdout} {args.holdout_glob} (full size)"
    )
    report = {
        "benchmark": "distill_quality",
        "device": device,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "teacher": args.teacher,
        "args": vars(args),
        "curve_set": curve_set,
        "curve_set_is_baseline_set": args.curve_set == "holdout" and args.curve_resolution is None,
        "baseline": BASELINE,
        "students": {},
        "final": {},
    }
    report_path = Path(args.report)
    work_dir = Path(args.work_dir)
    start = time.perf_counter()

    for preset in args.presets:
        config = DistillConfig(
            teacher=args.teacher,
            student=preset,
            train_data_dir=args.train_data_dir,
            num_validation_images=args.holdout,
            validation_glob=args.holdout_glob,
            validation_dir=args.kodak_dir if args.curve_set == "kodak" else None,
            validation_resolution=args.curve_resolution,
            max_validation_images=args.max_eval_images,
            resolution_schedule=args.resolution_schedule,
            train_batch_size=args.train_batch_size,
            max_train_steps=args.max_train_steps,
            max_minutes=args.max_minutes,
            learning_rate=args.learning_rate,
            lr_warmup_steps=args.lr_warmup_steps,
            lr_scheduler="constant_with_warmup",
            latent_weight=args.latent_weight,
            std_weight=args.std_weight,
            reconstruction_weight=args.reconstruction_weight,
            wavelet_weight=args.wavelet_weight,
            gaussian_weight=args.gaussian_weight,
            use_ema=args.use_ema,
            mixed_precision=args.mixed_precision,
            channels_last=args.channels_last,
            compile=args.compile,
            dataloader_num_workers=args.dataloader_num_workers,
            validation_steps=args.validation_steps,
            checkpointing_steps=args.checkpointing_steps,
            checkpoints_total_limit=2,
            logging_steps=5,
            seed=args.seed,
            output_dir=str(work_dir / f"litevae-{preset.lower()}"),
            resume_from_checkpoint="latest",
        )
        result = distill(config)
        curve = result["curve"]
        teacher_psnr = curve[-1]["psnr_teacher"]
        entry = {
            "encoder_parameters": result["student"]["encoder_parameters"],
            "steps": result["final_metrics"]["step"],
            "images_seen": result["final_metrics"]["images_seen"],
            "train_images_per_s": result["train_images_per_s"],
            "train_time_s": result["train_time_s"],
            "wall_time_s": result["wall_time_s"],
            "curve": curve,
            "gap_to_teacher_db": round(teacher_psnr - curve[-1]["psnr_student"], 3),
            "extrapolation": predict_steps_to_gap(curve, teacher_psnr),
            "model_dir": config.output_dir,
        }
        if report["curve_set_is_baseline_set"]:
            entry["vs_baseline"] = [
                {**b, "psnr_ours": psnr_at_wall_minutes(curve, b["wall_minutes"])} for b in BASELINE["curve"]
            ]
        report["students"][preset] = entry
        logger.info("LiteVAE-%s: %s", preset, {k: v for k, v in entry.items() if k != "curve"})

    # Full-size evaluation of teacher and every student on the same images, through the same frozen decoder.
    teacher = load_teacher(args.teacher)
    for name, (description, paths) in final_eval_sets(args).items():
        eval_start = time.perf_counter()
        paths = paths[: args.max_eval_images] if args.max_eval_images else paths
        images = load_images(paths)
        reference = compute_teacher_reference(teacher, images, num_grid_images=0)
        rows = {
            "teacher": {
                "psnr": reference.summary()["psnr_teacher"],
                "ssim": reference.summary()["ssim_teacher"],
                "latent_mse": 0.0,
            }
        }
        for preset in args.presets:
            student = AutoencoderLite.from_pretrained(report["students"][preset]["model_dir"])
            metrics, _ = evaluate_autoencoder(student.encoder, images, teacher=teacher, reference=reference)
            rows[f"LiteVAE-{preset}"] = {
                "psnr": metrics["psnr_student"],
                "ssim": metrics["ssim_student"],
                "latent_mse": metrics["latent_mse"],
                "gap_to_teacher_db": metrics["psnr_teacher"] - metrics["psnr_student"],
            }
        report["final"][name] = {
            "eval_set": description,
            "num_images": len(images),
            "models": rows,
            "eval_seconds": round(time.perf_counter() - eval_start, 1),
        }
        logger.info("final %s: %s", name, json.dumps(rows))
    if not report["final"]:  # --final_eval none: the last curve point is the final evaluation
        rows = {"teacher": None}
        for preset, entry in report["students"].items():
            last = entry["curve"][-1]
            rows["teacher"] = {"psnr": last["psnr_teacher"], "ssim": last["ssim_teacher"], "latent_mse": 0.0}
            rows[f"LiteVAE-{preset}"] = {
                "psnr": last["psnr_student"],
                "ssim": last["ssim_student"],
                "latent_mse": last["latent_mse"],
                "gap_to_teacher_db": last["psnr_teacher"] - last["psnr_student"],
            }
        report["final"]["curve_set"] = {"eval_set": curve_set, "num_images": last["eval_images"], "models": rows}
    report["total_seconds"] = round(time.perf_counter() - start, 1)

    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1))
    plot(report, report_path.with_suffix(".png"))
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\ndevice: {report['device']}; curve on {report['curve_set']}")
    for preset, entry in report["students"].items():
        print(
            f"LiteVAE-{preset}: {entry['encoder_parameters'] / 1e6:.2f} M params, {entry['steps']} steps, "
            f"{entry['images_seen']} images, {entry['train_images_per_s']:.2f} images/s; gap to teacher "
            f"{entry['gap_to_teacher_db']:.2f} dB"
        )
        print("  step  wall_min  psnr_student  latent_mse")
        for e in entry["curve"]:
            print(
                f"  {e['step']:>4}  {e['wall_time_s'] / 60:>8.2f}  {e['psnr_student']:>12.2f}  {e['latent_mse']:>10.4f}"
            )
    for final in report["final"].values():
        print(f"\n{final['eval_set']} ({final['num_images']} images):")
        print(f"  {'model':<12}{'PSNR':>8}{'SSIM':>8}{'latent MSE':>12}")
        for model, row in final["models"].items():
            print(f"  {model:<12}{row['psnr']:>8.2f}{row['ssim']:>8.4f}{row['latent_mse']:>12.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
