"""Evaluation: reconstruction quality (PSNR, SSIM; LPIPS and rFID where available) and speed of diffusers VAEs.

Python API::

    import diffusers_litevae
    from diffusers_litevae.evaluation import evaluate_vaes

    result = evaluate_vaes({"sd-vae": "stabilityai/sd-vae-ft-mse", "litevae": "path/to/litevae"}, "images/",
                           resolution=256)
    result.save("eval_out")  # summary.json, per_image.csv, grid.png

Command line: ``litevae eval`` (:mod:`diffusers_litevae.evaluation.cli`).
"""

from __future__ import annotations

from ..image_io import make_reconstruction_grid
from .images import prepare_image
from .metrics import psnr_per_image, ssim_per_image
from .run import EvaluationResult, evaluate_vaes, format_summary, measure_throughput
from .vaes import ReconstructionModel, load_reconstruction_model

__all__ = [
    "EvaluationResult",
    "ReconstructionModel",
    "evaluate_vaes",
    "format_summary",
    "load_reconstruction_model",
    "make_reconstruction_grid",
    "measure_throughput",
    "prepare_image",
    "psnr_per_image",
    "ssim_per_image",
]
