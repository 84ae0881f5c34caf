#!/usr/bin/env python
"""Distillation with cached teacher targets vs a live teacher: training speed, and PSNR at equal steps, in one run.

With ``--teacher_latents`` the teacher's posteriors come from a latent cache built once, so a training step runs
only the student (and, with the image losses on, the frozen decoder). This benchmark measures, side by side:

1. training images/s, live vs cached, with the latent losses only (the step the cache removes the teacher encoder
   from), for LiteVAE-S against TAEF2 and LiteVAE-B against a randomly initialised Stable Diffusion VAE (same
   architecture and cost as ``stabilityai/sd-vae-ft-mse``; its weights cannot be downloaded here). What to expect:
   at most ~1.39x for S/TAEF2 (the teacher encoder took 28% of a latent-only step in a profile) and more for
   B/SD-VAE (the SD-VAE encoder costs 272.7 GFLOPs per 256 px image, more than B's forward and backward
   together); each ratio is printed beside the earlier measured one and its source, with no pass/fail bar;
2. Kodak-24 PSNR after the same number of steps with the default losses: live teacher, cached targets, and cached
   targets with one latent pixel at each crop border left out of the latent losses (the teacher saw context
   beyond the crop there).

Cache building is excluded from every timing (it happens once per dataset and teacher). Example::

    python benchmarks/distill_cached_targets.py --train_data_dir ../shared/data/photos-train \\
        --eval_dir ../shared/data/kodak24 --output_json benchmarks/results/distill_cached_targets_cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from diffusers_litevae import pretrained_path
from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl
from diffusers_litevae.training import DistillConfig, distill, find_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import format_ratio  # noqa: E402

LATENT_ONLY = dict(reconstruction_weight=0.0, wavelet_weight=0.0, gaussian_weight=0.0)
# Earlier cached / live ratios, printed beside this run's: pair -> (ratio, source).
REFERENCE_SPEEDUPS = {
    "S/taef2": (1.069, "benchmarks/results/distill_cached_targets_cpu.json, 2 CPU cores"),
    "B/sd-vae": (1.853, "benchmarks/results/distill_cached_targets_cpu.json, 2 CPU cores"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--eval_dir", required=True, help="images for the PSNR comparison (Kodak-24), centre 256 crops")
    parser.add_argument(
        "--num_train_images",
        type=int,
        default=128,
        help="first N training images (sorted), to keep cache building short",
    )
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--speed_steps", type=int, default=24)
    parser.add_argument("--quality_steps", type=int, default=150)
    parser.add_argument("--mixed_precision", default="bf16", choices=["no", "bf16", "fp16"])
    parser.add_argument("--work_dir", default="outputs/distill_cached_targets")
    parser.add_argument("--output_json", default="outputs/distill_cached_targets.json")
    parser.add_argument("--skip_quality", action="store_true")
    parser.add_argument(
        "--skip_speed", action="store_true", help="only the PSNR comparison (it does not need a quiet machine)"
    )
    return parser.parse_args(argv)


def _subset(train_dir: str, count: int, work: Path) -> Path:
    folder = work / "train"
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in find_images(train_dir)[:count]:
        os.symlink(path.resolve(), folder / path.name)
    return folder


def _run(name: str, work: Path, **settings) -> dict:
    config = DistillConfig(
        output_dir=str(work / name),
        progress_bar=False,
        checkpointing_steps=100_000,
        logging_steps=5,
        lr_warmup_steps=10,
        seed=0,
        **settings,
    )
    result = distill(config)
    metrics = result["final_metrics"]
    return {
        "train_images_per_s": result["train_images_per_s"],
        "steps": metrics["step"],
        "psnr_student": metrics["psnr_student"],
        "psnr_teacher": metrics["psnr_teacher"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work_dir)
    train = _subset(args.train_data_dir, args.num_train_images, work)
    sd_vae = work / "sd-vae-random"
    sd_vae_autoencoder_kl().save_pretrained(sd_vae)
    teachers = {"S/taef2": ("S", pretrained_path("taef2")), "B/sd-vae": ("B", str(sd_vae))}
    common = dict(
        train_data_dir=str(train),
        num_validation_images=0,
        validation_dir=args.eval_dir,
        validation_resolution=256,
        resolution_schedule=str(args.resolution),
        mixed_precision=args.mixed_precision,
    )
    report = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": {k: v for k, v in vars(args).items()},
        "speed": {},
        "quality": {},
    }

    def save():
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(report, indent=1))

    if args.skip_speed:
        teachers = {}
    elif Path(args.output_json).is_file():  # keep the other part of an earlier run
        report["quality"] = json.loads(Path(args.output_json).read_text()).get("quality", {})
    for pair, (student, teacher) in teachers.items():
        batch = 16 if student == "S" else 8
        targets = work / f"targets-{pair.replace('/', '-')}"
        # TAESD-family teachers run fastest channels-last on CPU; the SD-VAE's GroupNorms prefer the default layout.
        speed = dict(
            common,
            teacher=teacher,
            student=student,
            train_batch_size=batch,
            max_train_steps=args.speed_steps,
            teacher_channels_last=student == "S",
            validation_steps=100_000,
            max_validation_images=1,
            **LATENT_ONLY,
        )
        # Build the cache first (untimed), then time both arms back to back.
        _run(f"{pair}-build".replace("/", "-"), work, **dict(speed, max_train_steps=1, teacher_latents=str(targets)))
        live = _run(f"{pair}-live".replace("/", "-"), work, **speed)
        cached = _run(f"{pair}-cached".replace("/", "-"), work, **dict(speed, teacher_latents=str(targets)))
        ratio = cached["train_images_per_s"] / live["train_images_per_s"]
        report["speed"][pair] = {
            "batch": batch,
            "live_images_per_s": live["train_images_per_s"],
            "cached_images_per_s": cached["train_images_per_s"],
            "speedup": round(ratio, 3),
            "reference_speedup": {"value": REFERENCE_SPEEDUPS[pair][0], "source": REFERENCE_SPEEDUPS[pair][1]},
        }
        print(
            f"{pair:10s} live {live['train_images_per_s']:6.2f} img/s  "
            f"cached {cached['train_images_per_s']:6.2f} img/s  "
            f"cached / live {format_ratio(ratio, *REFERENCE_SPEEDUPS[pair])}",
            flush=True,
        )
        save()

    if args.skip_speed and Path(args.output_json).is_file():
        report["speed"] = json.loads(Path(args.output_json).read_text()).get("speed", {})
    if not args.skip_quality:
        quality = dict(
            common,
            teacher=pretrained_path("taef2"),
            student="S",
            teacher_channels_last=True,
            train_batch_size=16,
            max_train_steps=args.quality_steps,
            validation_steps=args.quality_steps,
            learning_rate=1e-3,
            use_ema=True,
            lr_scheduler="cosine",
        )
        targets = work / "targets-S-taef2"
        arms = {
            "live": {},
            "cached": {"teacher_latents": str(targets)},
            "cached, border 1": {"teacher_latents": str(targets), "teacher_latents_border": 1},
        }
        for arm, extra in arms.items():
            result = _run(f"quality-{arm.replace(', ', '-').replace(' ', '')}", work, **dict(quality, **extra))
            report["quality"][arm] = result
            print(
                f"quality {arm:18s} PSNR {result['psnr_student']:.2f} dB after {result['steps']} steps "
                f"(teacher {result['psnr_teacher']:.2f}; {result['train_images_per_s']:.2f} img/s)",
                flush=True,
            )
            save()
    if "live" in report["quality"]:
        # PSNR difference to the live teacher at equal steps (>= 0: cached targets cost nothing).
        live_psnr = report["quality"]["live"]["psnr_student"]
        report["quality_delta_db_vs_live"] = {
            arm: round(r["psnr_student"] - live_psnr, 3) for arm, r in report["quality"].items()
        }
    save()
    print(f"wrote {args.output_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
