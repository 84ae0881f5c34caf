#!/usr/bin/env python
"""Distillation recipes compared at an equal number of training IMAGES (not equal time): what transfers to a GPU.

Wall time per image differs between a CPU and a GPU (and between recipes, on each), but how much an encoder learns
from a given number of images does not depend on where it ran. So every arm here trains until it has seen the same
number of images, and the table reports PSNR at that point beside the images/s it ran at (for the time cost).

Two studies, each arm its own ``distill`` run against the bundled TAEF2 teacher (live: the teacher encodes every
crop; a target cache per crop size would cost more CPU time here than it saves):

* ``size``: LiteVAE-S against LiteVAE-B at 256 px crops, same recipe and images: which closes more of the gap to the
  teacher per image, and per second.
* the recipe table for S at 128 px, batch 16: a ``base`` recipe and arms that each change ONE factor of it --
  ``schedule`` (warmup-stable-decay instead of constant LR + EMA; with and without EMA), ``batch`` (8 and 32 at the
  same LR 1e-3 and the same warmup in images), ``loss`` (latent losses only; pixel losses x4), ``crops`` (128/256 and
  128/256/512 size mixes: the package's mixed phases hold equal pixels per step, so larger crops come in fewer
  images per step and an arm at equal images runs more steps, with more pixels in all).

Every arm is validated on the same Kodak-24 centre crops (``--eval_resolution``, 256 px) with the EMA weights where
EMA is on, and compared with the teacher's own reconstruction PSNR on those crops. Arms run one per child process
(accelerate fixes settings per process), on ``--threads`` CPU threads; an arm whose result JSON exists in
``--work_dir`` is skipped (the run is resumable), and the combined JSON, Markdown table and PNG are rewritten after
every arm. The package has no warmup-stable-decay scheduler: the ``wsd`` arms replace the LR schedule of their own
child process with one (warmup, constant, then linear decay to 0 over the last ``--decay_fraction`` of the steps).

Example (what produced ``benchmarks/results/distill_recipes_equal_images_cpu.*``)::

    nohup nice -n 5 python benchmarks/distill_equal_images.py --train_data_dir ../shared/data/photos-train \\
        --eval_dir ../shared/data/kodak24 --work_dir outputs/eqimg --threads 1 \\
        --output benchmarks/results/distill_recipes_equal_images_cpu > /tmp/recipes.log 2>&1 &

``--table_only`` rewrites the JSON, table and plot from the arm results already in ``--work_dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _core import command_line, environment, write_json

from diffusers_litevae.training import DistillConfig, distill
from diffusers_litevae.training.data import ResolutionSchedule

DEFAULT_LOSSES = dict(
    latent_weight=1.0, std_weight=1.0, reconstruction_weight=1.0, wavelet_weight=0.1, gaussian_weight=0.1
)


@dataclass(frozen=True)
class Arm:
    """One run of the comparison: its study (``group``), what differs from the study's base, and its settings."""

    group: str
    description: str
    student: str = "S"
    resolution_schedule: str = "128"
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # "constant" (constant after warmup) or "wsd" (warmup-stable-decay)
    use_ema: bool = True
    losses: dict = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    images_key: str = "recipe"  # which --*_images budget the arm trains to


ARMS: dict[str, Arm] = {  # in the order they run: the most telling first
    "base": Arm("base", "S, 128 px, batch 16, lr 1e-3, constant LR after warmup, EMA 0.999, default loss mix"),
    "S-256": Arm("size", "LiteVAE-S (~1 M params), 256 px, batch 8", "S", "256", 8, images_key="size"),
    "B-256": Arm("size", "LiteVAE-B (~6 M params), 256 px, batch 8", "B", "256", 8, images_key="size"),
    "wsd": Arm("schedule", "warmup-stable-decay (linear decay to 0 over the last 20 %), EMA kept", lr_schedule="wsd"),
    "batch-8": Arm("batch", "batch 8 (twice the steps), lr 1e-3 unscaled", batch_size=8),
    "batch-32": Arm("batch", "batch 32 (half the steps), lr 1e-3 unscaled", batch_size=32),
    "latent-only": Arm(
        "loss",
        "latent + std losses only (no decoder in the step)",
        losses=dict(DEFAULT_LOSSES, reconstruction_weight=0.0, wavelet_weight=0.0, gaussian_weight=0.0),
    ),
    "pixel-heavy": Arm(
        "loss",
        "pixel losses x4 (L1 4, wavelet 0.4, Gaussian 0.4; latent 1, std 1)",
        losses=dict(DEFAULT_LOSSES, reconstruction_weight=4.0, wavelet_weight=0.4, gaussian_weight=0.4),
    ),
    "crops-128-256": Arm(
        "crops", "crop sizes 128/256 in turn (equal pixels per step: 16 or 4 images)", resolution_schedule="128/256"
    ),
    "crops-128-512": Arm(
        "crops", "crop sizes 128/256/512 in turn (16, 4 or 1 images per step)", resolution_schedule="128/256/512"
    ),
    "wsd-no-ema": Arm(
        "schedule", "warmup-stable-decay, no EMA (validates the trained weights)", lr_schedule="wsd", use_ema=False
    ),
    "constant-no-ema": Arm("schedule", "constant LR, no EMA", use_ema=False),
    # Not one factor: the two single-factor winners of the first run together (shown in their panels).
    "batch-8-pixel-heavy": Arm(
        "combined",
        "batch 8 and pixel losses x4 together",
        batch_size=8,
        losses=dict(DEFAULT_LOSSES, reconstruction_weight=4.0, wavelet_weight=0.4, gaussian_weight=0.4),
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--teacher", default="taef2", help="teacher VAE (default: the bundled TAEF2)")
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--eval_dir", required=True, help="evaluation images (Kodak-24), never trained on")
    parser.add_argument("--eval_resolution", type=int, default=256, help="centre crop size of every validation")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--recipe_images", type=int, default=512, help="images every recipe-table arm trains on")
    parser.add_argument("--size_images", type=int, default=192, help="images each arm of the S-vs-B study trains on")
    parser.add_argument("--warmup_images", type=int, default=160, help="LR warmup, in images (steps = this / batch)")
    parser.add_argument("--decay_fraction", type=float, default=0.2, help="share of the steps the wsd arms decay over")
    parser.add_argument("--validations", type=int, default=3, help="validation points along each curve (after step 0)")
    parser.add_argument("--holdout_glob", default="bsds_val_*", help="training images held out (never trained on)")
    parser.add_argument("--num_holdout", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default="outputs/distill_equal_images")
    parser.add_argument(
        "--output",
        default="outputs/distill_recipes_equal_images",
        help="path stem of the combined results: STEM.json, STEM.md, STEM.png",
    )
    parser.add_argument("--table_only", action="store_true", help="only rewrite JSON, table and plot from --work_dir")
    # Internal: run one arm in a child process and write its result.
    parser.add_argument("--run_arm", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- one arm


def steps_for_images(schedule: str, batch_size: int, images: int) -> int:
    """Optimizer steps until ``images`` images are seen (a mixed-size phase holds fewer images at larger sizes)."""
    parsed = ResolutionSchedule.parse(schedule)
    seen = steps = 0
    while seen < images:
        seen += parsed.batch_size_at(steps, batch_size)
        steps += 1
    return steps


def wsd_lambda(warmup_steps: int, total_steps: int, decay_fraction: float):
    """Warmup-stable-decay LR multiplier: the warmup of diffusers' ``constant_with_warmup`` (from 0), constant, then
    linear to 0 over the last ``decay_fraction`` of the steps."""
    decay_start = total_steps - max(1, round(decay_fraction * total_steps))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        if step < decay_start:
            return 1.0
        return max(0.0, (total_steps - step) / (total_steps - decay_start))

    return multiplier


def use_wsd_schedule(decay_fraction: float) -> None:
    """Make ``diffusers.optimization.get_scheduler`` (what the trainer calls) return a warmup-stable-decay schedule
    in this process."""
    import diffusers.optimization

    def get_scheduler(name, optimizer, num_warmup_steps=0, num_training_steps=None, **kwargs):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, wsd_lambda(num_warmup_steps, num_training_steps, decay_fraction)
        )

    diffusers.optimization.get_scheduler = get_scheduler


def arm_config(name: str, args) -> DistillConfig:
    arm = ARMS[name]
    images = args.size_images if arm.images_key == "size" else args.recipe_images
    steps = steps_for_images(arm.resolution_schedule, arm.batch_size, images)
    return DistillConfig(
        teacher=args.teacher,
        student=arm.student,
        train_data_dir=args.train_data_dir,
        num_validation_images=args.num_holdout,
        validation_glob=args.holdout_glob,
        validation_dir=args.eval_dir,
        validation_resolution=args.eval_resolution,
        resolution_schedule=arm.resolution_schedule,
        train_batch_size=arm.batch_size,
        learning_rate=arm.learning_rate,
        lr_scheduler="constant_with_warmup",  # replaced in-process for the wsd arms
        lr_warmup_steps=max(1, round(args.warmup_images / arm.batch_size)),
        use_ema=arm.use_ema,
        ema_decay=0.999,
        mixed_precision="bf16",
        teacher_channels_last=True,
        max_train_steps=steps,
        validation_steps=max(1, math.ceil(steps / args.validations)),
        checkpointing_steps=100_000,
        seed=args.seed,
        logging_steps=10,
        progress_bar=False,
        output_dir=str(Path(args.work_dir) / name),
        **arm.losses,
    )


def run_arm(name: str, args) -> dict:
    """Train one arm to its image budget; returns its result record."""
    torch.set_num_threads(args.threads)
    arm = ARMS[name]
    if arm.lr_schedule == "wsd":
        use_wsd_schedule(args.decay_fraction)
    config = arm_config(name, args)
    started = time.perf_counter()
    result = distill(config)
    final = result["final_metrics"]
    curve = [
        {k: e.get(k) for k in ("step", "images_seen", "train_time_s", "psnr_student", "ssim_student", "latent_mse")}
        for e in result["curve"]
    ]
    return {
        "group": arm.group,
        "description": arm.description,
        "student": arm.student,
        "resolution_schedule": arm.resolution_schedule,
        "batch_size": arm.batch_size,
        "learning_rate": arm.learning_rate,
        "lr_schedule": arm.lr_schedule
        + (f" (decay over last {args.decay_fraction:.0%})" if arm.lr_schedule == "wsd" else ""),
        "use_ema": arm.use_ema,
        "losses": arm.losses,
        "steps": final["step"],
        "images": final["images_seen"],
        "train_time_s": result["train_time_s"],
        "train_images_per_s": result["train_images_per_s"],
        "psnr_start": curve[0]["psnr_student"],
        "final_psnr": final["psnr_student"],
        "final_ssim": final["ssim_student"],
        "psnr_teacher": final["psnr_teacher"],
        "curve": curve,
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }


def _run_in_child(name: str, argv: list[str], result_file: Path) -> bool:
    """One arm in its own process (accelerate's state and the wsd schedule stay there); False when it failed."""
    subprocess.run([sys.executable, __file__, *argv, "--run_arm", name])
    return result_file.is_file()


# ---------------------------------------------------------------------------------------------- report


def gap_closed(record: dict) -> float:
    """Share of the start-to-teacher PSNR gap the arm closed."""
    gap = record["psnr_teacher"] - record["psnr_start"]
    return (record["final_psnr"] - record["psnr_start"]) / gap if gap > 0 else float("nan")


def markdown_table(report: dict) -> str:
    """The results as Markdown: the S-vs-B study, then the recipe table (each arm against ``base``)."""
    arms = report["arms"]
    lines = [
        f"Equal-images distillation against {report['teacher']} on a CPU "
        f"({report['environment']['cpu_count']} cores, shared; {report['threads']} thread per arm); "
        f"PSNR on {report['eval']}; latent MSE: the final validation's posterior-mean MSE against the teacher's "
        "normalised latents.",
        "",
    ]
    size = {n: r for n, r in arms.items() if r["group"] == "size"}
    if size:
        lines += [
            "| student | images | img/s | train min | PSNR start | final PSNR | teacher PSNR | gap (dB) | gap closed "
            "| closed per 100 images | closed per train minute | latent MSE |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in size.items():
            closed = gap_closed(r)
            lines.append(
                f"| {name} | {r['images']} | {r['train_images_per_s']:.2f} | {r['train_time_s'] / 60:.1f} "
                f"| {r['psnr_start']:.2f} | {r['final_psnr']:.2f} | {r['psnr_teacher']:.2f} "
                f"| {r['psnr_teacher'] - r['final_psnr']:.2f} | {closed:.1%} | {100 * closed / r['images']:.2%} "
                f"| {60 * closed / r['train_time_s']:.2%} | {r['curve'][-1]['latent_mse']:.3f} |"
            )
        lines.append("")
    recipes = {n: r for n, r in arms.items() if r["group"] != "size"}
    if recipes:
        base = recipes.get("base")
        lines += [
            "| arm | factor | what differs | images | steps | img/s | train min | final PSNR | teacher PSNR | gap (dB) "
            "| vs base (dB) | latent MSE |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in recipes.items():
            versus = f"{r['final_psnr'] - base['final_psnr']:+.2f}" if base else "-"
            lines.append(
                f"| {name} | {r['group']} | {r['description']} | {r['images']} | {r['steps']} "
                f"| {r['train_images_per_s']:.2f} | {r['train_time_s'] / 60:.1f} | {r['final_psnr']:.2f} "
                f"| {r['psnr_teacher']:.2f} | {r['psnr_teacher'] - r['final_psnr']:.2f} | {versus} "
                f"| {r['curve'][-1]['latent_mse']:.3f} |"
            )
        lines.append("")
    missing = [n for n in report["requested_arms"] if n not in arms]
    if missing:
        lines += [f"Not run (yet): {', '.join(missing)}.", ""]
    lines += ["Command:", "", "    " + report["command"], ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """PSNR against images seen, one panel per study (each recipe factor with the base arm), and against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = report["arms"]
    groups = ["size", "schedule", "batch", "loss", "crops"]
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for axis, group in zip(axes.flat, groups):
        members = {
            n: r
            for n, r in arms.items()
            if r["group"] == group
            or (group != "size" and n == "base")
            or (r["group"] == "combined" and group in ("batch", "loss"))
        }
        for name, r in members.items():
            axis.plot(
                [e["images_seen"] for e in r["curve"]],
                [e["psnr_student"] for e in r["curve"]],
                marker="o",
                label=f"{name} ({r['train_images_per_s']:.1f} img/s)",
            )
        title = "S vs B, 256 px" if group == "size" else f"{group} (S, 128 px base)"
        if members:  # the teacher's line (about 29.5 dB) would flatten the curves: named in the title instead
            title += f"; teacher {next(iter(members.values()))['psnr_teacher']:.2f} dB"
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("training images seen")
        axis.set_ylabel("Kodak-24 PSNR (dB)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axis = axes.flat[-1]
    for index, (name, r) in enumerate(arms.items()):
        minutes = [e["train_time_s"] / 60 for e in r["curve"]]
        # Ten colours repeat: later arms dashed.
        axis.plot(minutes, [e["psnr_student"] for e in r["curve"]], linestyle="-" if index < 10 else "--", label=name)
    axis.set_title("every arm against training time (validation excluded)")
    axis.set_xlabel("training minutes on this CPU")
    axis.set_ylabel("Kodak-24 PSNR (dB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.suptitle(
        f"LiteVAE distilled against {report['teacher']} at equal images (CPU, {report['threads']} thread(s) per arm)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(args, argv: list[str]) -> dict:
    """Combine the arm results in ``--work_dir`` into STEM.json, STEM.md and STEM.png."""
    arms = {}
    for name in args.arms:
        result_file = Path(args.work_dir) / f"{name}.result.json"
        if result_file.is_file():
            arms[name] = json.loads(result_file.read_text())
    report = {
        "teacher": args.teacher,
        "eval": f"{args.eval_dir}, centre {args.eval_resolution}x{args.eval_resolution} crops",
        "recipe_images": args.recipe_images,
        "size_images": args.size_images,
        "warmup_images": args.warmup_images,
        "threads": args.threads,
        "environment": environment("cpu"),
        "command": command_line([__file__, *[a for a in argv if a != "--table_only"]]),
        "requested_arms": args.arms,
        "arms": arms,
    }
    stem = Path(args.output)
    write_json(stem.with_suffix(".json"), report)
    stem.with_suffix(".md").write_text(markdown_table(report))
    if arms:
        plot(report, stem.with_suffix(".png"))
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work_dir)
    if args.run_arm:
        write_json(work / f"{args.run_arm}.result.json", run_arm(args.run_arm, args))
        return 0
    if not args.table_only:
        for name in args.arms:
            result_file = work / f"{name}.result.json"
            if not result_file.is_file() and not _run_in_child(name, argv, result_file):
                print(f"{name:16s} FAILED (see the log above); going on with the next arm", flush=True)
                continue
            r = json.loads(result_file.read_text())
            print(
                f"{name:16s} {r['images']:5d} images {r['steps']:4d} steps {r['train_images_per_s']:6.2f} img/s "
                f"{r['train_time_s'] / 60:5.1f} min  PSNR {r['final_psnr']:.2f} dB (start {r['psnr_start']:.2f}, "
                f"teacher {r['psnr_teacher']:.2f})",
                flush=True,
            )
            write_report(args, argv)
    write_report(args, argv)
    print(f"wrote {args.output}.json, .md and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
