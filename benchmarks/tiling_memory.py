"""Peak memory, time and accuracy of AutoencoderLite's tiled encode/decode against untiled, in one run.

Each of the four measurements (encode/decode x tiled/untiled) runs in its own child process, so one cannot
inherit another's cached memory:

- CPU: the child's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``; ``ru_maxrss`` where there
  is no procfs) minus its RSS just before the call, with glibc's mmap threshold pinned at 1 MiB
  (``MALLOC_MMAP_THRESHOLD_``) so freed activations go back to the OS and RSS follows the live tensors. Not
  timing- or sampling-based. (``ru_maxrss`` alone is wrong on Linux: a child started by fork+exec inherits its
  parent's high-water mark, ``VmHWM`` belongs to the new address space.)
- CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the call.

Accuracy: relative RMS difference ``RMS(tiled - untiled) / std(untiled)`` of the encoder's posterior mean and of
the decoded image, plus the PSNR between tiled and untiled decodes (images mapped to [0, 1]).

Examples::

    # Tiny model (seconds): what tests/test_tiling.py asserts, with figures.
    python benchmarks/tiling_memory.py --model tiny --resolution 1024 --tile 512

    # Paper-size LiteVAE-B with the SD-layout decoder (CPU: several minutes at 1024 px).
    python benchmarks/tiling_memory.py --model B --resolution 1024 --output_json tiling_B.json

    # A trained decoder: TAEF2 (../shared/weights/taef2) on a real photo, decoding its own latents.
    python benchmarks/tiling_memory.py --model taef2 --taef2_dir ../shared/weights/taef2 \\
        --image ../shared/data/kodak24/kodim01.png --ops decode

    # A distilled model folder, on GPU.
    python benchmarks/tiling_memory.py --pretrained path/to/autoencoder_lite --device cuda --resolution 2048
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core import sync  # noqa: E402

MODELS = ("tiny", "S", "B", "M", "L", "taef2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="tiny",
        choices=MODELS,
        help="tiny: testing_utils model; S/B/M/L: preset "
        "encoder + SD-layout decoder (random weights); taef2: trained TAEF2 decoder "
        "(needs --taef2_dir).",
    )
    parser.add_argument("--pretrained", default=None, help="an AutoencoderLite folder or Hub id (overrides --model).")
    parser.add_argument("--taef2_dir", default=None, help="folder with taef2_encoder.pth and taef2_decoder.pth.")
    parser.add_argument(
        "--image",
        default=None,
        help="an RGB image to encode (resized to --resolution); "
        "default: uniform noise, on which random-weight networks tile most faithfully.",
    )
    parser.add_argument("--resolution", type=int, default=1024, help="square image side in pixels (multiple of 8).")
    parser.add_argument("--tile", type=int, default=512, help="tile size in pixels (model.tile_sample_min_size).")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap factor (model.tile_overlap_factor).")
    parser.add_argument("--ops", default="encode,decode", help="comma-separated: encode, decode.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads).")
    parser.add_argument("--output_json", default=None, help="write the results here.")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resolution % 8 or args.tile % 8:
        parser.error(f"--resolution ({args.resolution}) and --tile ({args.tile}) must be multiples of 8.")
    if args.model == "taef2" and not args.taef2_dir and not args.pretrained:
        parser.error("--model taef2 needs --taef2_dir (the folder holding taef2_decoder.pth).")
    ops = args.ops.split(",")
    if not ops or any(op not in ("encode", "decode") for op in ops):
        parser.error(f"--ops takes encode and/or decode, got {args.ops!r}.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False.")
    return args


# ---------------------------------------------------------------------------------------------- model and inputs


def build_model(args: argparse.Namespace):
    from diffusers_litevae import AutoencoderLite, AutoencoderLiteTiny, load_tiny_decoder
    from diffusers_litevae.testing_utils import TINY_ENCODER, tiny_autoencoder_lite

    if args.pretrained:
        model = AutoencoderLite.from_pretrained(args.pretrained)
    elif args.model == "tiny":
        model = tiny_autoencoder_lite(sample_size=args.tile)
    elif args.model == "taef2":
        decoder = load_tiny_decoder(Path(args.taef2_dir) / "taef2_decoder.pth")
        model = AutoencoderLiteTiny.from_tiny_decoder(decoder, encoder=TINY_ENCODER)
    else:
        torch.manual_seed(0)
        model = AutoencoderLite.from_preset(args.model)
    model.tile_sample_min_size = args.tile
    model.tile_latent_min_size = args.tile // model.downsample_factor
    model.tile_overlap_factor = args.overlap
    # nn.Module.to: diffusers 0.42's ModelMixin.to warns on every dtype cast, even fp32 -> fp32.
    return torch.nn.Module.to(model.eval(), device=args.device, dtype=getattr(torch, args.dtype))


def build_inputs(args: argparse.Namespace, model) -> tuple[torch.Tensor, torch.Tensor]:
    """The image (1, 3, R, R) in [-1, 1] and the latents (1, C, R/8, R/8) that every child measures with."""
    from diffusers_litevae.models.tiny_autoencoder import signed_to_unit, unit_to_signed

    generator = torch.Generator().manual_seed(0)
    size, factor = args.resolution, model.downsample_factor
    if args.image:
        import numpy as np
        from PIL import Image

        picture = Image.open(args.image).convert("RGB").resize((size, size), Image.BICUBIC)
        image = unit_to_signed(torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float().div(255))
    else:
        image = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    if args.model == "taef2" and args.taef2_dir and not args.pretrained:
        from diffusers_litevae import load_tiny_encoder

        encoder = load_tiny_encoder(Path(args.taef2_dir) / "taef2_encoder.pth").eval()
        with torch.no_grad():  # TAEF2's own latents of the image: what its decoder was trained on
            latents = encoder(signed_to_unit(image))
    elif args.pretrained:
        with torch.no_grad():
            latents = model.float().cpu().encode(image).latent_dist.mean
    else:
        latents = torch.randn(1, model.config.latent_channels, size // factor, size // factor, generator=generator)
    return image, latents


# ---------------------------------------------------------------------------------------------- one measurement


def measure_child(args: argparse.Namespace) -> None:
    """Run one job (e.g. ``decode_tiled``) and write its output tensor and ``{peak_mib, seconds}``."""
    torch.set_num_threads(args.threads)
    op, mode = args._child.split("_")
    workdir = Path(args._workdir)
    model = build_model(args)
    image, latents = torch.load(workdir / "inputs.pt")
    dtype = getattr(torch, args.dtype)
    inputs = (image if op == "encode" else latents).to(args.device, dtype)
    model.enable_tiling() if mode == "tiled" else model.disable_tiling()
    cuda = args.device.startswith("cuda")
    if cuda:
        sync(args.device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _proc_status_kib("VmRSS") * 1024
    start = time.perf_counter()
    with torch.no_grad():
        output = model.encode(inputs).latent_dist.mean if op == "encode" else model.decode(inputs).sample
    if cuda:
        sync(args.device)
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_kib("VmHWM") * 1024
    seconds = time.perf_counter() - start
    torch.save(output.float().cpu(), workdir / f"{args._child}.pt")
    (workdir / f"{args._child}.json").write_text(json.dumps({"peak_mib": (peak - before) / 2**20, "seconds": seconds}))


def _proc_status_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in KiB; without procfs, ``ru_maxrss`` for both."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
    except OSError:  # no procfs (macOS: ru_maxrss is in bytes): peak - before then undercounts, never overcounts
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if platform.system() == "Darwin" else 1)


def run_child(argv: list[str], job: str, workdir: Path, threads: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, *argv, "--_child", job, "--_workdir", str(workdir)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{result.stderr[-4000:]}")
    return json.loads((workdir / f"{job}.json").read_text())


# ---------------------------------------------------------------------------------------------- report


def relative_rms(tiled: torch.Tensor, reference: torch.Tensor) -> float:
    return ((tiled - reference).pow(2).mean().sqrt() / reference.std()).item()


def psnr(tiled: torch.Tensor, reference: torch.Tensor) -> float:
    from diffusers_litevae.models.tiny_autoencoder import signed_to_unit

    a, b = signed_to_unit(tiled).clamp(0, 1), signed_to_unit(reference).clamp(0, 1)
    return (10 * torch.log10(1 / (a - b).pow(2).mean().clamp_min(1e-12))).item()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args._child:
        measure_child(args)
        return 0
    torch.set_num_threads(args.threads)
    model = build_model(args)
    label = args.pretrained or args.model
    ops = args.ops.split(",")
    results = {
        "model": label,
        "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
        "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({args.threads} threads)",
        "dtype": args.dtype,
        "resolution": args.resolution,
        "tile": args.tile,
        "overlap": args.overlap,
        "input": args.image or "uniform noise",
        "memory_method": "torch.cuda.max_memory_allocated delta"
        if args.device.startswith("cuda")
        else "child-process VmHWM minus VmRSS before the call, MALLOC_MMAP_THRESHOLD_=1MiB",
        "ops": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        torch.save(build_inputs(args, model), workdir / "inputs.pt")
        del model
        for op in ops:
            measured = {mode: run_child(argv, f"{op}_{mode}", workdir, args.threads) for mode in ("tiled", "untiled")}
            tiled, untiled = (torch.load(workdir / f"{op}_{mode}.pt") for mode in ("tiled", "untiled"))
            entry = {
                "peak_mib_tiled": measured["tiled"]["peak_mib"],
                "peak_mib_untiled": measured["untiled"]["peak_mib"],
                "memory_ratio_tiled_over_untiled": (
                    measured["tiled"]["peak_mib"] / max(measured["untiled"]["peak_mib"], 1e-9)
                ),
                "seconds_tiled": measured["tiled"]["seconds"],
                "seconds_untiled": measured["untiled"]["seconds"],
                "relative_rms_difference": relative_rms(tiled, untiled),
                "max_abs_difference": (tiled - untiled).abs().max().item(),
            }
            if op == "decode":
                entry["psnr_tiled_vs_untiled_db"] = psnr(tiled, untiled)
            results["ops"][op] = entry

    print(
        f"{label}: {args.resolution}x{args.resolution}, tiles of {args.tile} px (overlap {args.overlap}), "
        f"{results['device']}, {args.dtype}, input: {results['input']}"
    )
    print(
        f"{'op':8s} {'peak MiB untiled':>17s} {'tiled':>8s} {'ratio':>6s} {'s untiled':>10s} {'s tiled':>8s} "
        f"{'rel. RMS diff':>14s} {'PSNR dB':>8s}"
    )
    for op, entry in results["ops"].items():
        psnr_text = f"{entry['psnr_tiled_vs_untiled_db']:8.2f}" if "psnr_tiled_vs_untiled_db" in entry else f"{'':8s}"
        print(
            f"{op:8s} {entry['peak_mib_untiled']:17.1f} {entry['peak_mib_tiled']:8.1f} "
            f"{entry['memory_ratio_tiled_over_untiled']:6.2f} {entry['seconds_untiled']:10.2f} "
            f"{entry['seconds_tiled']:8.2f} {entry['relative_rms_difference']:14.4f} {psnr_text}"
        )
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
