"""End-to-end latent-caching speed: LiteVAE-B vs the SD-VAE encoder on the same images, in one run.

For each VAE it runs the real caching job (DataLoader decode/resize workers, host-to-device copies, encoding,
background shard writes) on the same image set, reports images/s and where the time went, and measures the
encoder alone on the same preprocessed batches already on the device (``encoder-only``), so that
``pipeline / encoder-only`` says how much of the encoder's speed the pipeline keeps.

Both VAEs have random weights (no downloads here): speed depends on the architecture only. LiteVAE-B is
``AutoencoderLite.from_preset("B")``; the SD-VAE is ``AutoencoderKL`` in the SD 1.x/2.x/SDXL layout
(block_out_channels (128, 256, 512, 512), layers_per_block 2). Each VAE runs in its fastest mode: fp32 on CPU,
bf16 autocast on CUDA with the faster of contiguous/channels-last (picked by an encoder-only trial), and
``torch.compile`` with ``--compile``.

No pass/fail bars: the LiteVAE-B / SD-VAE ratio is printed beside an earlier measured ratio and its source
(CPU: ``benchmarks/results/cache_speed_cpu.json``; CUDA: the H200 run of ``gpu_suite.py``).

    python benchmarks/cache_speed.py --data_dir ../shared/data/photos-train --num_images 16 --resolution 256 \\
        --num_workers 1                                   # brief CPU run
    python benchmarks/cache_speed.py --data_dir ../shared/data/photos-train --num_images 1024 --resolution 256 \\
        --batch_size 32 --num_workers 12 --output_json cache_speed_gpu.json    # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusers_litevae import AutoencoderLite
from diffusers_litevae.caching import (
    TransformConfig,
    cache_latents,
    pixels_to_model_input,
    posterior_moments,
    preprocess_image,
)
from diffusers_litevae.caching.sources import ImageFolderSource
from diffusers_litevae.testing_utils import sd_vae_autoencoder_kl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import format_ratio, sync  # noqa: E402

# Earlier end-to-end LiteVAE-B / SD-VAE ratios, printed beside this run's (device type -> (ratio, source)).
REFERENCE_SPEEDUP = {
    "cpu": (3.275, "benchmarks/results/cache_speed_cpu.json, 2 CPU cores, 256 px"),
    "cuda": (1.02, "benchmarks/results/gpu_suite_h200.json, H200 eager bf16, 256 px, 1024 photos"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="image folder (the first --num_images images, sorted)")
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256, help="centre crop side (all images one shape)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--mixed_precision", default="bf16", choices=["bf16", "fp16", "no"], help="CUDA autocast")
    parser.add_argument(
        "--channels_last",
        default="auto",
        choices=["auto", "on", "off"],
        help="auto: the faster per VAE on CUDA (encoder-only trial), off on CPU",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders (CUDA)")
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads of the encoding process")
    parser.add_argument(
        "--encoder_only_repeats", type=int, default=1, help="passes over the image set for the encoder-only timing"
    )
    parser.add_argument("--vaes", nargs="+", default=["litevae-b", "sd-vae"], choices=["litevae-b", "sd-vae"])
    parser.add_argument("--output_json", default=None)
    return parser.parse_args(argv)


def encoder_only(vae, batches, device, autocast_dtype, channels_last, repeats) -> tuple[float, float]:
    """``(images per second, images per CPU second)`` of ``posterior_moments`` alone on device-resident ``uint8``
    batches (including the scaling to [-1, 1])."""
    context = torch.autocast("cuda", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    def run_once():
        for pixels in batches:
            with torch.inference_mode(), context:
                images = pixels_to_model_input(pixels)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                posterior_moments(vae, images)

    with torch.inference_mode(), context:  # warm-up (kernel selection, compile)
        posterior_moments(vae, pixels_to_model_input(batches[0]))
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        run_once()
    sync(device)
    images = repeats * sum(len(b) for b in batches)
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def stage_times(timings: dict, num_workers: int) -> dict[str, float]:
    """Busy seconds of each pipeline stage; the stages overlap, so the largest one bounds the throughput.

    decode: the per-worker decode time (or the main process's wait for batches, if larger); transfer and encode:
    host-to-device copies and encoder (CUDA event times on GPU, wall time on CPU); write: the writer thread.
    """
    return {
        "decode": round(max(timings["decode_worker"] / max(num_workers, 1), timings["loader_wait"]), 3),
        "transfer": round(timings["transfer"], 3),
        "encode": round(timings["encode"], 3),
        "write": round(timings["writer_busy"], 3),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cache_speed_"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}[args.mixed_precision] if cuda else None

    items, _ = ImageFolderSource(args.data_dir).scan()
    if len(items) < args.num_images:
        raise SystemExit(f"{args.data_dir} has {len(items)} images, fewer than --num_images {args.num_images}.")
    items = items[: args.num_images]
    transform = TransformConfig(resolution=args.resolution, bucketing=False, crop="center")

    subset = work / "images"
    for item in items:  # symlinks: the same files, only the first N
        link = subset / item.sample_id
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(item.locator, link)

    # Preprocessed batches for the encoder-only measurement (same pixels the pipeline encodes).
    pixels = torch.stack([preprocess_image(item.locator, transform, item.sample_id)[0] for item in items])
    batches = [chunk.to(device) for chunk in pixels.split(args.batch_size)]

    factories = {"litevae-b": lambda: AutoencoderLite.from_preset("B"), "sd-vae": sd_vae_autoencoder_kl}
    results: dict[str, dict] = {}
    for name in args.vaes:
        torch.manual_seed(0)
        vae = factories[name]().to(device).eval().requires_grad_(False)
        params = sum(p.numel() for p in vae.encoder.parameters())
        if args.compile:
            vae.encoder.compile()
        if args.channels_last == "auto" and cuda:
            trials = {}
            for layout in (False, True):
                vae = vae.to(memory_format=torch.channels_last if layout else torch.contiguous_format)
                trials[layout] = encoder_only(vae, batches, device, autocast_dtype, layout, 1)[0]
            channels_last = max(trials, key=trials.get)
        else:
            channels_last = args.channels_last == "on"
        vae = vae.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        encoder_ips, encoder_ipcs = encoder_only(
            vae, batches, device, autocast_dtype, channels_last, args.encoder_only_repeats
        )

        report = cache_latents(
            subset,
            vae,
            work / f"cache-{name}",
            transform=transform,
            dtype="bf16",
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            mixed_precision=args.mixed_precision,
            channels_last=channels_last,
            device=device,
            progress=True,
        )
        assert report.num_encoded == len(items), report
        timings = {key: round(value, 3) for key, value in report.timings.items()}
        stages = stage_times(report.timings, args.num_workers)
        results[name] = {
            "encoder_parameters": params,
            "channels_last": channels_last,
            "end_to_end_images_per_s": round(report.images_per_s, 3),
            "encoder_only_images_per_s": round(encoder_ips, 3),
            "pipeline_fraction_of_encoder_only": round(report.images_per_s / encoder_ips, 3),
            # Images per CPU second (this process + loader workers): robust to other jobs on a shared CPU.
            "end_to_end_images_per_cpu_s": round(report.num_encoded / report.timings["cpu"], 4),
            "encoder_only_images_per_cpu_s": round(encoder_ipcs, 4),
            "timings_s": timings,
            "stage_busy_s": stages,
            "bound_by": max(stages, key=stages.get),
        }
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        del vae
        if cuda:
            torch.cuda.empty_cache()

    summary = {
        "device": torch.cuda.get_device_name(device)
        if cuda
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "precision": args.mixed_precision if cuda else "fp32",
        "images": len(items),
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "compile": args.compile,
        "weights": "random (speed only)",
        "results": results,
    }
    if {"litevae-b", "sd-vae"} <= set(results):
        lite, sd = results["litevae-b"], results["sd-vae"]
        speedup = lite["end_to_end_images_per_s"] / sd["end_to_end_images_per_s"]
        reference, source = REFERENCE_SPEEDUP["cuda" if cuda else "cpu"]
        summary["end_to_end_speedup"] = round(speedup, 3)
        summary["encoder_only_speedup"] = round(lite["encoder_only_images_per_s"] / sd["encoder_only_images_per_s"], 3)
        summary["end_to_end_speedup_cpu_time"] = round(
            lite["end_to_end_images_per_cpu_s"] / sd["end_to_end_images_per_cpu_s"], 3
        )
        summary["encoder_only_speedup_cpu_time"] = round(
            lite["encoder_only_images_per_cpu_s"] / sd["encoder_only_images_per_cpu_s"], 3
        )
        summary["reference_speedup"] = {"value": reference, "source": source}

    print()
    print(
        "| VAE | encoder params | end-to-end img/s | encoder-only img/s | pipeline/encoder | bound by | "
        "decode s | transfer s | encode s | write s | encode phase s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        t, b = r["timings_s"], r["stage_busy_s"]
        print(
            f"| {name} | {r['encoder_parameters'] / 1e6:.2f} M | {r['end_to_end_images_per_s']:.2f} | "
            f"{r['encoder_only_images_per_s']:.2f} | {r['pipeline_fraction_of_encoder_only']:.2f} | {r['bound_by']} | "
            f"{b['decode']} | {b['transfer']} | {b['encode']} | {b['write']} | {t['encode_phase']} |"
        )
    if "end_to_end_speedup" in summary:
        print(
            f"\nLiteVAE-B / SD-VAE end to end: "
            f"{format_ratio(summary['end_to_end_speedup'], reference, source)}; "
            f"encoder only: {summary['encoder_only_speedup']:.2f}x"
        )
        print(
            f"by CPU time (robust to other jobs on a shared CPU): end to end "
            f"{summary['end_to_end_speedup_cpu_time']:.2f}x, "
            f"encoder only {summary['encoder_only_speedup_cpu_time']:.2f}x"
        )
    print(json.dumps(summary, indent=2))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
