"""Caching end to end (section ``cache`` of ``gpu_suite.py``): the package's own ``cache_latents`` on real photos
in aspect-ratio buckets, LiteVAE-B and the SD-VAE side by side.

The job is what a user runs (loader workers decoding and resizing, host-to-device copies, encoding, background
shard writes; compiled with CUDA graphs by default on CUDA, one graph per bucket). Compiling and capturing happen
on each bucket's first batch: the record carries that warm-up (``warmup_s``) apart from the steady throughput
(``steady_images_per_s``), which the ratio compares.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import torch
from _core import Context

VAES = ("litevae-b", "sd-vae")
ENCODER = {"litevae-b": "B", "sd-vae": "sd-vae"}  # the names the encoder sections time them under
# Guesses until timed: seconds to build a VAE and start the loader, images/s at 1024 px (the SD-VAE, the slower),
# and one compilation + capture per bucket.
GUESS = {
    False: dict(setup=10.0, images_per_s=15.0, compile=45.0),
    True: dict(setup=3.0, images_per_s=4.0, compile=10.0),
}


def default_photos() -> Path | None:
    """``photos-hires`` of the shared data (``$LITEVAE_SHARED`` or ``../shared`` beside the checkout), if there."""
    shared = Path(os.environ.get("LITEVAE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    folder = shared / "data" / "photos-hires"
    return folder if folder.is_dir() else None


def bucket_of(path: Path, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket ``cache_latents`` puts an image in (its size after the EXIF orientation, read from the header)."""
    from PIL import Image

    from diffusers_litevae.caching import assign_bucket

    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
            width, height = height, width
    return assign_bucket(width, height, buckets)


def caching_images(ctx: Context) -> tuple[Path, dict[str, int], str]:
    """A folder of ``--cache_images`` links to the photos of the ``--cache_buckets`` fullest buckets (each bucket
    is one more compilation per VAE), repeated as needed; returns it, the images per bucket, and the source."""
    from diffusers_litevae import pretrained_path
    from diffusers_litevae.caching import make_buckets
    from diffusers_litevae.image_io import find_images

    args = ctx.args
    source = Path(args.data_dir) if args.data_dir else default_photos() or Path(pretrained_path("samples"))
    buckets = make_buckets(args.cache_resolution, step=args.cache_bucket_step)
    by_bucket: dict[tuple[int, int], list[Path]] = {}
    for path in find_images(source):
        by_bucket.setdefault(bucket_of(path, buckets), []).append(path)
    kept = sorted(by_bucket, key=lambda b: -len(by_bucket[b]))[: args.cache_buckets]
    # Taken in turn from each kept bucket, so that even a few images (the smoke) fill every bucket.
    longest = max(len(by_bucket[bucket]) for bucket in kept)
    photos = [(b, by_bucket[b][i]) for i in range(longest) for b in kept if i < len(by_bucket[b])]
    out = ctx.work / "cache_images"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    counts: Counter[str] = Counter()
    for index in range(args.cache_images):  # distinct names: the same photo again is another sample
        bucket, photo = photos[index % len(photos)]
        os.symlink(photo.resolve(), out / f"{index:05d}_{photo.name}")
        counts[f"{bucket[0]}x{bucket[1]}"] += 1
    return out, dict(counts), str(source)


def compiled(ctx: Context) -> bool:
    return {"on": True, "off": False}.get(ctx.args.cache_compile, ctx.cuda) and not ctx.args.no_compile


def cache_estimate(ctx: Context, vae: str = "sd-vae", buckets: int | None = None) -> float:
    """Seconds one VAE's run needs, compiling each bucket included (what was seen so far, else the guesses)."""
    args, guess = ctx.args, GUESS[ctx.args.smoke]
    buckets = args.cache_buckets if buckets is None else buckets
    # A bucket's warm-up is one compilation and capture of the encoder at a batch-8 shape: until this VAE's has been
    # seen, the other's or the same encoder's compilation in the sections before stands in for it.
    seen = ctx.budget.seen
    encoder_compile = seen(f"compile {ENCODER[vae]}", seen("compile", guess["compile"]))
    compile_s = seen(f"cache warmup per bucket {vae}", seen("cache warmup per bucket", encoder_compile))
    rate = ctx.budget.seen(f"cache s per image {vae}", 1 / guess["images_per_s"])
    return guess["setup"] + (buckets * compile_s if compiled(ctx) else 0.0) + args.cache_images * rate


def section_estimate(ctx: Context) -> float:
    return sum(cache_estimate(ctx, vae) for vae in VAES)


def cache_run(ctx: Context, vae_name: str, folder: Path, transform) -> dict:
    from diffusers_litevae import AutoencoderLite
    from diffusers_litevae.caching import cache_latents

    args = ctx.args
    torch.manual_seed(0)
    vae = AutoencoderLite.from_preset("B").eval().requires_grad_(False) if vae_name == "litevae-b" else ctx.sd_vae()
    out = ctx.work / f"cache-{vae_name}"
    try:
        report = cache_latents(
            folder,
            vae,  # the job encodes with its own copy on the device; this one stays where it is
            out,
            transform=transform,
            dtype="bf16",
            batch_size=args.cache_batch_size,
            num_workers=args.num_workers,
            mixed_precision=ctx.mixed_precision,
            channels_last=ctx.channels_last,
            compile=compiled(ctx),
            device=ctx.device,
            progress=False,
            caption_extension=None,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if report.num_encoded != args.cache_images:
        raise RuntimeError(f"encoded {report.num_encoded} of {args.cache_images} images ({report.num_failed} failed)")
    warmup = report.timings.get("warmup", 0.0)
    return dict(
        images_per_s=round(report.images_per_s, 3),
        steady_images_per_s=round(report.steady_images_per_s or report.images_per_s, 3),
        warmup_s=round(warmup, 2),
        compiled=report.compiled,
        wall_s=round(report.wall_s, 2),
        timings_s={k: round(v, 3) for k, v in report.timings.items()},
    )


def cache_section(ctx: Context) -> None:
    from diffusers_litevae.caching import TransformConfig

    args = ctx.args
    fields = dict(
        images=args.cache_images,
        resolution=args.cache_resolution,
        bucketing=True,
        bucket_step=args.cache_bucket_step,
        batch_size=args.cache_batch_size,
        num_workers=args.num_workers,
        precision=args.precision,
        channels_last=ctx.channels_last,
    )
    try:
        folder, buckets, source = caching_images(ctx)
    except Exception as error:  # noqa: BLE001  no images is a record, not the end of the run
        for vae in VAES:
            ctx.run("cache_latents", vae, {**fields, "vae": vae}, None, estimate_s=0, skip=f"no images: {error}")
        return
    fields.update(data_dir=source, buckets=buckets)
    transform = TransformConfig(resolution=args.cache_resolution, bucketing=True, bucket_step=args.cache_bucket_step)
    rates: dict[str, float] = {}
    for index, vae in enumerate(VAES):
        later = sum(cache_estimate(ctx, v, len(buckets)) for v in VAES[index + 1 :])
        record = ctx.run(
            "cache_latents",
            vae,
            {**fields, "vae": vae},
            lambda vae=vae: with_ratio(cache_run(ctx, vae, folder, transform), vae, rates),
            estimate_s=cache_estimate(ctx, vae, len(buckets)),
            reserve_s=ctx.reserve_s + later,
            describe=lambda r: (
                f"{r['steady_images_per_s']:10.1f} img/s steady ({r['images_per_s']:.1f} with warm-up), warm-up "
                f"{r['warmup_s']:.1f} s{' (compiled)' if r['compiled'] else ''}"
                + (f"  B/SD-VAE {r['litevae_b_speedup_vs_sd_vae']:.2f}x" if "litevae_b_speedup_vs_sd_vae" in r else "")
            ),
        )
        if record["status"] != "ok":
            continue
        rates[vae] = record["steady_images_per_s"]
        encoding = record["wall_s"] - record["warmup_s"]
        ctx.budget.note(f"cache s per image {vae}", max(encoding, 0.0) / args.cache_images)
        if record["compiled"]:
            for key in (f"cache warmup per bucket {vae}", "cache warmup per bucket"):
                ctx.budget.note(key, record["warmup_s"] / max(len(buckets), 1))


def with_ratio(result: dict, vae: str, rates: dict[str, float]) -> dict:
    """The SD-VAE's record carries LiteVAE-B's steady speed-up over it (when B's run finished first)."""
    if vae == "sd-vae" and rates.get("litevae-b"):
        result["litevae_b_speedup_vs_sd_vae"] = round(rates["litevae-b"] / result["steady_images_per_s"], 3)
    return result
