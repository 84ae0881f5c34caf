"""Distillation sections of ``gpu_suite.py``: one training step (``distill_step``), training speed with live vs
cached teacher targets (``train``), and a short distillation's quality (``distill``), LiteVAE-B against TAEF2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from _core import Context, format_ratio, measure

# The distillation step before compiled paths: LiteVAE-B vs TAEF2, 128 px, batch 32, eager, one H200.
EARLIER_DISTILL_STEP = (252.0, "gpu_suite_h200.json: B vs TAEF2, 128 px, batch 32, eager bf16, H200")
# Guesses until timed (seconds): one eager step cell, one compilation of forward + backward, one speed run
# (teacher and student set up and, on CUDA, compiled; the steps; the teacher's latents cached first for cached
# targets), and a quality run's set-up, compiling and scoring.
GUESS = {
    False: dict(step=10.0, compile=90.0, train_run=90.0, distill_overhead=90.0),
    True: dict(step=2.0, compile=10.0, train_run=6.0, distill_overhead=6.0),
}


# ---------------------------------------------------------------------------------------------- one step


def distill_step(ctx: Context, resolution: int, batch: int, compiled: bool) -> dict:
    """One distillation step as ``litevae distill`` runs it with cached teacher targets: student encoder forward,
    a frozen TAEF2-shaped decoder (random weights: speed only) on the student's latents, latent and image losses,
    backward and an AdamW step."""
    from diffusers_litevae import AutoencoderLiteTiny, pretrained_path
    from diffusers_litevae.models.litevae_encoder import encoder_preset

    args, device = ctx.args, ctx.device
    # The bundled S student's configuration (an AutoencoderLiteTiny: TAEF2's decoder), with B's encoder.
    config = dict(AutoencoderLiteTiny.load_config(pretrained_path("litevae-s-taef2")))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    vae = AutoencoderLiteTiny.from_config({**config, **encoder_preset("B").config_kwargs()}).to(device)
    vae = vae.to(memory_format=ctx.memory_format)
    vae.decoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(vae.encoder.parameters(), lr=1e-4)
    images = ctx.images(batch, resolution)
    factor = 2**vae.config.wavelet_levels
    target = torch.randn(batch, vae.config.latent_channels, resolution // factor, resolution // factor, device=device)

    def losses(x, latents):
        with ctx.autocast():
            mean = vae.encode(x).latent_dist.mean
            decoded = vae.decode(mean).sample
            return (mean.float() - latents).square().mean() + (decoded.float() - x).abs().mean()

    forward = torch.compile(losses, dynamic=False) if compiled else losses

    def step():
        forward(images, target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        result = measure(
            step,
            device,
            items_per_call=batch,
            warmup=max(args.warmup, 2),
            min_time=args.min_time,
            min_calls=args.min_calls,
            max_calls=args.max_calls,
        )
    finally:
        vae = optimizer = forward = None
        if compiled:
            torch._dynamo.reset()
    result["images_per_s"] = result.pop("items_per_s")
    result["beside"] = format_ratio(result["images_per_s"], *EARLIER_DISTILL_STEP, unit=" img/s")
    return result


def step_modes(ctx: Context) -> list[str]:
    return ["eager", "compile"]


def step_skip(ctx: Context, mode: str) -> str | None:
    if mode == "eager":
        return None
    if ctx.args.no_compile:
        return "--no_compile"
    if not ctx.cuda:
        return f"torch.compile is measured on CUDA only (device {ctx.device.type})"
    return None


def step_estimate(ctx: Context, mode: str = "eager") -> float:
    guess = GUESS[ctx.args.smoke]
    estimate = ctx.budget.seen("distill step eager", guess["step"])
    if mode != "eager":
        estimate += ctx.budget.seen("compile distill step", guess["compile"])
    return estimate


def distill_step_estimate(ctx: Context) -> float:
    """Reserved for this section: its eager cells (compiled ones take what is left)."""
    return len(ctx.args.distill_cells) * step_estimate(ctx)


def distill_step_section(ctx: Context) -> None:
    for mode in step_modes(ctx):
        for resolution, batch in ctx.args.distill_cells:
            record = ctx.run(
                "headline_distill",
                f"distill step B {resolution}px b{batch} {mode}",
                dict(model="B", resolution=resolution, batch_size=batch, mode=mode, precision=ctx.precision),
                lambda r=resolution, b=batch, m=mode: distill_step(ctx, r, b, m != "eager"),
                estimate_s=step_estimate(ctx, mode),
                skip=step_skip(ctx, mode),
            )
            if record["status"] == "ok":
                key = "compile distill step" if mode != "eager" else "distill step eager"
                ctx.budget.note(key, record["first_call_s"] if mode != "eager" else record["duration_s"])


# ---------------------------------------------------------------------------------------------- data


def dihedral_variants(sources: list[Path], out: Path, max_side: int | None = None) -> list[Path]:
    """The 8 flips/rotations of each image as PNG files in ``out`` (distinct training images from a few photos),
    shrunk to fit ``max_side`` if given (``--smoke``: small images keep the CPU run short)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    ops = [None, *Image.Transpose]
    paths = []
    for source in sources:
        with Image.open(source) as image:
            image = image.convert("RGB")
            if max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            for index, op in enumerate(ops):
                path = out / f"{source.stem}_d{index}.png"
                (image if op is None else image.transpose(op)).save(path)
                paths.append(path)
    return paths


def training_folder(ctx: Context) -> Path:
    """``--train_data_dir`` (or ``--data_dir``) as is, or the flips/rotations of a folder with under 16 images (the
    bundled samples by default)."""
    from diffusers_litevae import pretrained_path
    from diffusers_litevae.image_io import find_images

    args = ctx.args
    folder = Path(args.train_data_dir or args.data_dir or pretrained_path("samples"))
    images = find_images(folder)
    if len(images) >= 16:
        return folder
    out = ctx.work / "train_images"
    if not out.exists():
        dihedral_variants(images, out, 2 * args.train_resolution if args.smoke else None)
    return out


def distill_config(ctx: Context, train_dir: Path, output_dir: Path, **overrides):
    from diffusers_litevae import pretrained_path
    from diffusers_litevae.training import DistillConfig

    args = ctx.args
    values = dict(
        teacher=args.teacher or pretrained_path("taef2"),
        student="B",
        train_data_dir=str(train_dir),
        resolution_schedule=str(args.train_resolution),
        train_batch_size=args.train_batch_size,
        mixed_precision=ctx.mixed_precision,
        validation_dir=args.eval_dir or pretrained_path("samples"),
        num_validation_images=0,
        validation_resolution=args.eval_resolution,
        validation_steps=10**9,
        checkpointing_steps=10**9,
        checkpoints_total_limit=1,
        logging_steps=1 if args.smoke else 10,
        lr_warmup_steps=1 if args.smoke else 100,
        dataloader_num_workers=args.num_workers,
        channels_last=ctx.channels_last,
        allow_tf32=ctx.cuda,
        compile=False if args.no_compile else None,  # None: the package's default (on for CUDA)
        progress_bar=False,
        output_dir=str(output_dir),
        seed=0,
    )
    values.update(overrides)
    return DistillConfig(**values)


def steady_images_per_s(result: dict, batch_size: int) -> float | None:
    """Images/s between the first and the last logged step (the first steps' warm-up left out)."""
    history = [h for h in result.get("loss_history", []) if h.get("images_per_s")]
    if len(history) < 2:
        return None
    s0, r0 = history[0]["step"], history[0]["images_per_s"]
    s1, r1 = history[-1]["step"], history[-1]["images_per_s"]
    seconds = s1 * batch_size / r1 - s0 * batch_size / r0
    return round((s1 - s0) * batch_size / seconds, 3) if seconds > 0 else None


# ---------------------------------------------------------------------------------------------- speed


def train_estimate(ctx: Context) -> float:
    return 2 * ctx.budget.seen("train run", GUESS[ctx.args.smoke]["train_run"])


def train_run(ctx: Context, train_dir: Path, targets: str, rates: dict[str, float]) -> dict:
    from diffusers_litevae.training import distill

    args = ctx.args
    config = distill_config(
        ctx,
        train_dir,
        ctx.work / f"distill-speed-{targets}",
        max_train_steps=args.train_steps,
        max_validation_images=2,
        num_grid_images=1,
        teacher_latents=str(ctx.work / "teacher_latents") if targets == "cached" else None,
    )
    try:
        result = distill(config)
    finally:
        if not args.keep_work:
            shutil.rmtree(config.output_dir, ignore_errors=True)
    steady = steady_images_per_s(result, args.train_batch_size)
    rates[targets] = steady or result["train_images_per_s"]
    out = dict(
        train_images_per_s=result["train_images_per_s"],
        steady_images_per_s=steady,
        train_time_s=result["train_time_s"],
        steps_done=result["final_metrics"]["step"],
    )
    if targets == "cached" and "live" in rates:
        out["cached_speedup_vs_live"] = round(rates["cached"] / rates["live"], 3)
    return out


def train_section(ctx: Context) -> None:
    """Distillation images/s of a LiteVAE-B student against TAEF2, once with the live teacher encoding every batch
    and once from cached teacher posteriors (``teacher_latents``: the teacher's latents of every training image
    are cached first, then the step runs without the teacher encoder)."""
    args = ctx.args
    rates: dict[str, float] = {}
    train_dir = training_folder(ctx)
    for index, targets in enumerate(("live", "cached")):
        record = ctx.run(
            "train_speed",
            f"B {targets} targets",
            dict(
                targets=targets,
                student="B",
                teacher=args.teacher or "TAEF2",
                resolution=args.train_resolution,
                batch_size=args.train_batch_size,
                steps=args.train_steps,
                precision=args.precision,
                num_workers=args.num_workers,
                train_data_dir=str(train_dir),
            ),
            lambda t=targets: train_run(ctx, train_dir, t, rates),
            estimate_s=ctx.budget.seen("train run", GUESS[args.smoke]["train_run"]),
            reserve_s=ctx.reserve_s + (train_estimate(ctx) / 2 if index == 0 else 0),
            describe=lambda r: (
                f"{r['train_images_per_s']:10.1f} img/s (steady {r['steady_images_per_s'] or '-'}), "
                f"{r['steps_done']} steps"
                + (f"  cached/live {r['cached_speedup_vs_live']:.2f}x" if "cached_speedup_vs_live" in r else "")
            ),
        )
        if record["status"] == "ok":
            ctx.budget.note("train run", record["duration_s"])


# ---------------------------------------------------------------------------------------------- quality


def quality_overhead(ctx: Context) -> float:
    """A quality run's set-up, compiling and scoring: at least what a whole speed run took, once one has run."""
    return max(GUESS[ctx.args.smoke]["distill_overhead"], ctx.budget.seen("train run", 0.0))


def quality_estimate(ctx: Context) -> float:
    return ctx.args.distill_minutes * 60 + quality_overhead(ctx)


def quality_run(ctx: Context, train_dir: Path, minutes: float) -> dict:
    from diffusers_litevae.training import distill

    args = ctx.args
    config = distill_config(
        ctx,
        train_dir,
        ctx.work / "distill-quality",
        teacher_latents=str(ctx.work / "teacher_latents"),
        max_minutes=minutes,
        max_train_steps=args.train_steps if args.smoke else 10**7,
        learning_rate=args.learning_rate,
        use_ema=True,
        validation_steps=10**9 if args.smoke else 500,
    )
    result = distill(config)
    if not args.keep_work:  # keep the distilled model, drop the training state
        shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
    metrics = result["final_metrics"]
    curve = [{k: e.get(k) for k in ("step", "train_time_s", "psnr_student", "psnr_teacher")} for e in result["curve"]]
    return dict(
        minutes=minutes,
        psnr_student=metrics["psnr_student"],
        psnr_teacher=metrics["psnr_teacher"],
        ssim_student=metrics.get("ssim_student"),
        ssim_teacher=metrics.get("ssim_teacher"),
        latent_mse=metrics.get("latent_mse"),
        eval_images=metrics.get("eval_images"),
        steps_done=metrics["step"],
        images_seen=metrics["images_seen"],
        train_time_s=result["train_time_s"],
        train_images_per_s=result["train_images_per_s"],
        curve=curve,
        model_dir=config.output_dir,
    )


def quality_section(ctx: Context) -> None:
    """A ``--distill_minutes`` LiteVAE-B distillation against TAEF2 (cached targets, AdamW, EMA), scored at the end
    on centre crops of ``--eval_dir``: ``psnr_student`` (student encoder -> TAEF2 decoder) and ``psnr_teacher``.
    Shortened (and saying so) rather than skipped while at least half of it fits the budget."""
    from diffusers_litevae import pretrained_path

    args = ctx.args
    train_dir = training_folder(ctx)
    eval_dir = args.eval_dir or pretrained_path("samples")
    fields = dict(
        student="B",
        teacher=args.teacher or "TAEF2",
        targets="cached",
        precision=args.precision,
        learning_rate=args.learning_rate,
        ema=True,
        resolution=args.train_resolution,
        batch_size=args.train_batch_size,
        eval_dir=str(eval_dir),
        eval_resolution=args.eval_resolution,
        train_data_dir=str(train_dir),
        eval_is_training_data=Path(eval_dir).resolve()
        == Path(args.train_data_dir or args.data_dir or pretrained_path("samples")).resolve(),
        planned_minutes=args.distill_minutes,
    )
    minutes, overhead = args.distill_minutes, quality_overhead(ctx)
    fitting = (ctx.budget.left() - ctx.reserve_s - overhead) / 60
    if fitting < minutes and fitting >= minutes / 2:
        fields["shortened_from_minutes"], minutes = minutes, round(fitting, 2)
    ctx.run(
        "distill_quality",
        "B vs TAEF2",
        fields,
        lambda: quality_run(ctx, train_dir, minutes),
        estimate_s=minutes * 60 + overhead,
        describe=lambda r: (
            f"PSNR student {r['psnr_student']:.2f} dB / teacher {r['psnr_teacher']:.2f} dB after {r['steps_done']} "
            f"steps ({r['train_time_s']:.0f} s, {r['train_images_per_s']:.0f} img/s)"
        ),
    )
