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

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..image_io import make_reconstruction_grid  # numpy and PIL only

# public name -> submodule defining it, imported on first use: `litevae eval` checks its folders before torch loads
_EXPORTS = {
    "EvalSettings": "settings",
    "EvaluationResult": "run",
    "ReconstructionModel": "vaes",
    "evaluate_vaes": "run",
    "format_summary": "run",
    "load_reconstruction_model": "vaes",
    "measure_throughput": "run",
    "prepare_image": "images",
    "psnr_per_image": "metrics",
    "ssim_per_image": "metrics",
}

__all__ = sorted([*_EXPORTS, "make_reconstruction_grid"])

if TYPE_CHECKING:
    from .images import prepare_image
    from .metrics import psnr_per_image, ssim_per_image
    from .run import EvaluationResult, evaluate_vaes, format_summary, measure_throughput
    from .settings import EvalSettings
    from .vaes import ReconstructionModel, load_reconstruction_model


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
