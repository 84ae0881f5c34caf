#!/usr/bin/env python
"""Does encoding large images in tiles of the training size help a distilled LiteVAE encoder?

A LiteVAE encoder normalises with GroupNorm, whose statistics span the whole input: an encoder trained on small
crops sees other statistics on a whole 768x512 or 1024 px image. ``vae.enable_tiling()`` encodes overlapping tiles
of ``tile_sample_min_size`` pixels instead (blended linearly). This benchmark scores, on whole images in one
``evaluate_vaes`` run: the untiled encoder, the encoder tiled at each ``--tiles`` size (decoding untiled, so only
the encoder changes), and the teacher.

Example::

    python benchmarks/tiling_quality.py --vae litevae-s-taef2 --teacher taef2 --image_dir ../shared/data/kodak24 \\
        --tiles 256 512 --output_json benchmarks/results/tiling_quality_kodak24_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path

import torch

from diffusers_litevae.evaluation.run import evaluate_vaes
from diffusers_litevae.vae_io import load_vae


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", required=True, help="an AutoencoderLite: folder, Hub id or bundled name")
    parser.add_argument("--teacher", default=None, help="its teacher, scored beside it")
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512], help="encoder tile sizes (pixels)")
    parser.add_argument("--output_json", default="benchmarks/results/tiling_quality_cpu.json")
    args = parser.parse_args(argv)

    vae = load_vae(args.vae, torch_dtype=torch.float32)
    models: dict[str, object] = {"whole": vae}
    for tile in args.tiles:
        tiled = copy.deepcopy(vae)
        tiled.enable_tiling()
        tiled.tile_sample_min_size = tile
        tiled.tile_latent_min_size = 10**9  # decode untiled: only the encoder sees tiles
        models[f"tiles_{tile}"] = tiled
    if args.teacher:
        models["teacher"] = args.teacher
    result = evaluate_vaes(
        models,
        args.image_dir,
        resolution="native",
        resize=False,
        max_images=args.max_images,
        device="cpu",
        compute_lpips=False,
        compute_rfid=False,
        measure_speed=False,
        grid_images=0,
    )
    metrics = result.summary["models"]
    report = {
        "command": shlex.join(["python", *sys.argv]),
        "vae": args.vae,
        "images": f"{args.image_dir}, whole images (native size, cropped to multiples of 8)",
        "num_images": result.summary.get("num_images"),
        "psnr": {label: round(m["psnr"], 3) for label, m in metrics.items()},
        "ssim": {label: round(m["ssim"], 4) for label, m in metrics.items()},
    }
    for label, value in report["psnr"].items():
        print(f"{label:>12}: {value:.2f} dB PSNR, SSIM {report['ssim'][label]:.4f}")
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
