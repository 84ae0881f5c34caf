"""The settings every training run has (``litevae distill`` and ``litevae train`` flags of the same name), and the
checks they share: a settings class checks its values when it is built (``__post_init__``), a run checks what needs
the file system (:func:`check_run_inputs`) before it loads anything; both raise one-line :class:`TrainingInputError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..settings import check_choices, setting
from .data import ResolutionSchedule, data_folders, parse_scale_range
from .errors import TrainingInputError

__all__ = [
    "LR_SCHEDULERS",
    "MIXED_PRECISION",
    "RunSettings",
    "check_loss_weights",
    "check_positive",
    "check_run_inputs",
    "json_object",
]

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
RECONSTRUCTION_LOSSES = ("l1", "charbonnier")
LPIPS_NETS = ("vgg", "alex", "squeeze")


def json_object(text: str | None) -> dict | None:
    """An argparse type: a JSON object given as text or as a file path (``--student_config``, ``--encoder_config``)."""
    if not text:
        return None
    path = Path(text).expanduser()
    try:
        value = json.loads(path.read_text() if path.is_file() else text)
    except (OSError, json.JSONDecodeError) as error:
        raise argparse.ArgumentTypeError(f"neither a JSON file nor JSON text: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of encoder_* config keys.")
    return value


def check_positive(settings, integers: Sequence[str] = (), numbers: Sequence[str] = ()) -> None:
    """Refuse settings named in ``integers`` that are not positive integers, and those named in ``numbers`` that are
    set (not ``None``) and not above 0."""
    for name in integers:
        value = getattr(settings, name)
        if value is None or value <= 0:
            raise TrainingInputError(f"--{name} must be a positive integer, got {value}.")
    for name in numbers:
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise TrainingInputError(f"--{name} must be > 0, got {value}.")


def check_loss_weights(weights: dict[str, float]) -> None:
    """Refuse a loss weight (``{"latent": 1.0, ...}``, the flags' names without ``_weight``) below 0 or not finite."""
    for name, value in weights.items():
        if value < 0 or not math.isfinite(value):
            raise TrainingInputError(f"--{name}_weight must be a finite number >= 0, got {value}.")


@dataclass
class RunSettings:
    """The settings every training run has, with distillation's defaults; ``DistillConfig`` and ``TrainConfig`` add
    their own and change defaults where their recipes differ. A value out of range raises :class:`TrainingInputError`.
    """

    train_data_dir: str | list[str] | None = setting(
        None, "folder(s) of training images (recursive; jpg/jpeg/png/webp)", group="data", nargs="+", metavar="FOLDER"
    )
    train_data_repeats: list[int] | None = setting(
        None,
        "times each --train_data_dir folder's images appear per epoch (e.g. '1 8' to sample a few "
        "high-resolution photos as often as a folder 8x their size); default 1 each",
        group="data",
        metavar="N",
    )
    dataset_name: str | None = setting(None, "Hugging Face dataset id (needs the `datasets` extra)", group="data")
    dataset_config_name: str | None = setting(None, group="data")
    dataset_split: str = setting("train", group="data")
    image_column: str = setting("image", group="data")
    cache_dir: str | None = setting(None, group="data")
    resolution_schedule: str = setting(
        "256",
        "training crop size, or a schedule of phases: '128:2000,256' (128 px before step 2000, then 256); "
        "'256/384/512:3000,512' (sizes taken in turn, one per step, larger sizes with proportionally fewer "
        "images per batch, then a final phase at 512). End at the size you will encode at.",
        group="data",
        flags=("--resolution_schedule", "--resolution"),
    )
    crop_scales: str = setting(
        "1",
        "crop scale range 'SMALLEST,LARGEST' in (0, 1], drawn log-uniformly per crop: 1 crops the photo's own "
        "pixels (smooth content at high resolution), 0.25 a 4x larger region downscaled (busy content)",
        group="data",
    )
    random_flip: bool = setting(True, group="data")
    dataloader_num_workers: int = setting(0, group="data")
    validation_dir: str | None = setting(
        None, "folder of validation images (default: images held out from the training folder)", group="validation"
    )
    num_validation_images: int | None = setting(
        None,
        "hold out the first N training images (sorted by path, matching --validation_glob); default min(16, 10%%)",
        group="validation",
    )
    validation_glob: str = setting("*", "file-name pattern the held-out images must match", group="validation")
    validation_resolution: int | None = setting(
        None, "centre crop size for validation (default: full images)", group="validation"
    )
    max_validation_images: int | None = setting(None, group="validation")
    validation_steps: int = setting(250, group="validation")
    num_grid_images: int = setting(4, group="validation")
    output_dir: str = setting("litevae-distilled", group="optimisation")
    seed: int = setting(0, group="optimisation")
    train_batch_size: int = setting(8, "images per process per micro-batch", group="optimisation")
    gradient_accumulation_steps: int = setting(1, group="optimisation")
    max_train_steps: int = setting(10_000, group="optimisation")
    max_minutes: float | None = setting(
        None, "stop (checkpoint and write the model) after this many minutes", group="optimisation"
    )
    learning_rate: float = setting(2e-4, group="optimisation")
    adam_beta1: float = setting(0.9, group="optimisation")
    adam_beta2: float = setting(0.99, group="optimisation")
    adam_weight_decay: float = setting(0.0, group="optimisation")
    adam_epsilon: float = setting(1e-8, group="optimisation")
    lr_scheduler: str = setting("constant_with_warmup", group="optimisation", choices=LR_SCHEDULERS)
    lr_warmup_steps: int = setting(100, group="optimisation")
    max_grad_norm: float | None = setting(1.0, "0 disables clipping", group="optimisation")
    use_ema: bool = setting(
        False,
        "keep an EMA of the trained weights; validate and save the EMA weights",
        group="optimisation",
        action="store_true",
    )
    ema_decay: float = setting(0.999, group="optimisation")
    ema_power: float = setting(0.75, group="optimisation")
    mixed_precision: str | None = setting(None, "default: accelerate's config", group="speed", choices=MIXED_PRECISION)
    compile: bool | None = setting(  # None: on for CUDA, off elsewhere (runtime.resolve_compile)
        None,
        "torch.compile the trained model (and the teacher), one graph per crop size (default: on for CUDA, "
        "off on other devices, where eager was faster); --no-compile turns it off",
        group="speed",
    )
    compile_mode: str | None = setting(None, "torch.compile mode, e.g. max-autotune-no-cudagraphs", group="speed")
    gradient_checkpointing: bool = setting(False, group="speed", action="store_true")
    allow_tf32: bool = setting(False, group="speed", action="store_true")
    reconstruction_weight: float = setting(1.0, "pixel loss (L1 or Charbonnier) of the reconstruction", group="losses")
    wavelet_weight: float = setting(0.1, "Charbonnier on high-frequency Haar sub-bands", group="losses")
    gaussian_weight: float = setting(0.1, "L1 between x - blur(x) residuals", group="losses")
    lpips_weight: float = setting(
        0.0, "LPIPS (torchmetrics' network: needs torchvision and its backbone weights)", group="losses"
    )
    reconstruction_loss: str = setting("l1", group="losses", choices=RECONSTRUCTION_LOSSES)
    charbonnier_eps: float = setting(1e-3, group="losses")
    wavelet_loss_levels: int = setting(3, group="losses")
    gaussian_sigma: float = setting(1.0, group="losses")
    lpips_net: str = setting("vgg", group="losses", choices=LPIPS_NETS)
    checkpointing_steps: int = setting(500, group="checkpoints and logging")
    checkpoints_total_limit: int | None = setting(3, group="checkpoints and logging")
    resume_from_checkpoint: str | None = setting(
        None, "'latest' or a checkpoints/checkpoint-<step> folder", group="checkpoints and logging"
    )
    logging_steps: int = setting(10, group="checkpoints and logging")
    report_to: str | None = setting(
        None, "accelerate tracker: tensorboard, wandb, ...", group="checkpoints and logging"
    )
    progress_bar: bool = setting(True, group="checkpoints and logging")
    # The command line that started the run (the CLIs set it), written to the run's JSON summary as ``command``
    # for the model card; a record, not a setting: resuming with another command is fine.
    command_line: str | None = None

    def __post_init__(self):
        schedule = ResolutionSchedule.parse(self.resolution_schedule)
        parse_scale_range(self.crop_scales)
        folders, repeats = data_folders(self), self.train_data_repeats
        if repeats is not None and (len(repeats) != len(folders) or any(int(r) < 1 for r in repeats)):
            raise TrainingInputError(
                f"--train_data_repeats needs one positive integer per --train_data_dir folder ({len(folders)}), "
                f"got {repeats}."
            )
        size = self.validation_resolution
        if size is not None and (size <= 0 or size % 8):
            raise TrainingInputError(
                f"--validation_resolution {size} is not a positive multiple of 8 (or omit it for full images)."
            )
        integers = ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "checkpointing_steps")
        check_positive(self, (*integers, "validation_steps", "logging_steps"), ("learning_rate", "max_minutes"))
        check_choices(self, TrainingInputError)
        if self.dataloader_num_workers < 0:
            raise TrainingInputError("--dataloader_num_workers must be >= 0.")
        if self.wavelet_weight > 0 and any(size % 2**self.wavelet_loss_levels for size in schedule.sizes):
            raise TrainingInputError(
                f"--wavelet_loss_levels {self.wavelet_loss_levels} needs resolutions "
                f"divisible by {2**self.wavelet_loss_levels}."
            )

    def image_loss_settings(self) -> dict:
        """The image-loss settings both trainers' losses take (``DistillationLoss``, ``AutoencoderLoss``)."""
        return dict(
            reconstruction_loss=self.reconstruction_loss,
            charbonnier_eps=self.charbonnier_eps,
            wavelet_levels=self.wavelet_loss_levels,
            gaussian_sigma=self.gaussian_sigma,
        )


def check_run_inputs(settings: RunSettings, command: str) -> ResolutionSchedule:
    """Check ``settings`` again (fields may have been set since they were built) and what a run needs of the file
    system (one data source, its folders, an output folder that ``litevae <command>`` may write into); returns the
    parsed resolution schedule or raises :class:`TrainingInputError` at the first problem."""
    from ..file_io import check_output_dir

    dataclasses.replace(settings)  # a copy is built: its __post_init__ checks the current values
    if bool(settings.train_data_dir) == bool(settings.dataset_name):
        raise TrainingInputError("give exactly one data source: --train_data_dir FOLDER or --dataset_name HUB_DATASET.")
    check_output_dir(settings.output_dir, command, TrainingInputError)
    for folder in data_folders(settings):
        if not Path(folder).expanduser().is_dir():
            raise TrainingInputError(
                f"--train_data_dir {folder!r} does not exist or is not a folder; pass a folder of images."
            )
    if settings.validation_dir and not Path(settings.validation_dir).expanduser().is_dir():
        raise TrainingInputError(f"--validation_dir {settings.validation_dir!r} does not exist.")
    return ResolutionSchedule.parse(settings.resolution_schedule)
