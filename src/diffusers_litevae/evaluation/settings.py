"""The settings of an evaluation: each declared once, with the ``litevae eval`` flag it is set by (no torch here, so
the command checks its flags before torch loads)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..settings import setting

__all__ = ["CROPS", "DEFAULT_VAES", "EvalSettings", "EvaluationInputError"]

CROPS = ("square", "multiple_of_8")
# (bundled model name, label) compared when no --vae is given.
DEFAULT_VAES = (("litevae-s-taef2", "litevae-s"), ("taef2", "taef2"))
# evaluate_vaes' keyword for each switch that `litevae eval` spells as "do not": it means the opposite value.
_POSITIVE_SWITCHES = {
    "resize": "no_resize",
    "compute_lpips": "skip_lpips",
    "compute_rfid": "skip_rfid",
    "measure_speed": "skip_speed",
}


class EvaluationInputError(ValueError):
    """Bad input to an evaluation (settings, image folder, dataset, a model that cannot be evaluated):
    ``litevae eval`` prints it as one ``error:`` line (exit code 2); anything else propagates with its traceback."""


@dataclasses.dataclass
class EvalSettings:
    """How ``litevae eval`` (and :func:`~diffusers_litevae.evaluation.evaluate_vaes`, which is given its models and
    images: the settings naming them are the command's) evaluates VAEs.

    Raises:
        EvaluationInputError: a value out of range, or settings that contradict each other.
    """

    vae: list[str] | None = setting(
        None,
        "a VAE to evaluate (repeat for several): a diffusers VAE folder or Hub id (AutoencoderLite, AutoencoderKL, "
        "AutoencoderTiny, picked from config.json), a saved pipeline folder, a folder with a TAESD-family *encoder* "
        "+ *decoder* .pth/.safetensors pair, or a bundled model by name (litevae-s-taef2, taef2). ':LABEL' names it "
        "in the report (default: the folder name / repo id). Without --vae: the bundled litevae-s-taef2 (label "
        "litevae-s) and taef2 (label taef2).",
        group="models",
        action="append",
        metavar="PATH_OR_ID[:LABEL]",
    )
    vae_subfolder: list[str] | None = setting(
        None,
        "subfolder holding the VAE (e.g. 'vae' in a pipeline repo); give it once for every --vae, or once per --vae "
        "in the same order ('' for none).",
        group="models",
        action="append",
        metavar="SUBFOLDER",
    )
    image_dir: str | None = setting(
        None,
        "folder of images (png, jpg, webp, ...; recursive, hidden files skipped). Without --image_dir and "
        "--dataset_name: three bundled Kodak crops (256x256)",
        group="images",
    )
    dataset_name: str | None = setting(
        None,
        "Hugging Face dataset id, or a folder written by save_to_disk, instead of --image_dir (needs `datasets`)",
        group="images",
    )
    dataset_config: str | None = setting(None, "dataset configuration name", group="images")
    image_column: str = setting("image", "dataset column holding the images", group="images")
    split: str = setting("train", "dataset split", group="images")
    streaming: bool = setting(
        False, "stream the dataset instead of downloading the split", group="images", action="store_true"
    )
    max_images: int | None = setting(None, "evaluate at most this many images", group="images")
    resolution: int | str | Sequence[int | str] = setting(
        "256",
        "a multiple of 8 (resize the short side to it, then crop; see --crop) or 'native' (full size, centre-cropped "
        "down to multiples of 8); several, comma-separated (e.g. 256,512,native), evaluate every image at each size "
        "(speed is timed at the first)",
        group="images",
    )
    crop: str = setting(
        "square",
        "'square': centre RxR crop; 'multiple_of_8': keep the aspect ratio, trim to multiples of 8",
        group="images",
        choices=CROPS,
    )
    no_resize: bool = setting(
        False, "crop from the full-size image instead of resizing first", group="images", action="store_true"
    )
    batch_size: int = setting(4, "images per encode/decode call and speed batch", group="run")
    device: str | None = setting("auto", "cuda, cuda:1, cpu, mps (default: best available)", group="run")
    dtype: str = setting("float32", "VAE dtype", group="run", choices=("float32", "float16", "bfloat16"))
    skip_lpips: bool = setting(False, "do not try to load LPIPS", group="run", action="store_true")
    skip_rfid: bool = setting(False, "do not try to load the FID Inception network", group="run", action="store_true")
    skip_speed: bool = setting(False, "do not time encoders and decoders", group="run", action="store_true")
    speed_warmup: int = setting(1, "untimed runs before timing", group="run")
    speed_repeats: int = setting(3, "timed runs per encoder / decoder", group="run")
    output_dir: str = setting(
        "outputs/litevae-eval", "writes summary.json, per_image.csv, grid.png here", group="output"
    )
    grid_images: int = setting(4, "images in the comparison grid (0: none)", group="output")
    grid_tile_height: int = setting(256, "grid row height in pixels", group="output")

    def __post_init__(self):
        from .images import parse_resolutions  # PIL: imported when settings are made, not when flags are listed

        if self.image_dir is not None and self.dataset_name is not None:
            raise EvaluationInputError(
                "pass at most one of --image_dir FOLDER or --dataset_name HUB_DATASET_ID (neither: the bundled "
                "samples)."
            )
        parse_resolutions(self.resolution)
        if self.crop not in CROPS:
            raise EvaluationInputError(f"crop must be one of {CROPS}, got {self.crop!r}.")
        if self.batch_size < 1:
            raise EvaluationInputError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.max_images is not None and self.max_images < 1:
            raise EvaluationInputError(f"--max_images must be >= 1, got {self.max_images}.")
        models, subfolders = len(self.vae or DEFAULT_VAES), len(self.vae_subfolder or ())
        if subfolders not in (0, 1, models):
            raise EvaluationInputError(
                f"give --vae_subfolder once (for all) or once per --vae ({models}), not {subfolders} times."
            )

    def replace(self, **changes) -> EvalSettings:
        """A copy with ``changes``: fields by name, or ``resize``, ``compute_lpips``, ``compute_rfid`` and
        ``measure_speed``, the opposites of ``no_resize``, ``skip_lpips``, ``skip_rfid`` and ``skip_speed``."""
        for name, flag in _POSITIVE_SWITCHES.items():
            if name in changes:
                changes[flag] = not changes.pop(name)
        return dataclasses.replace(self, **changes)
