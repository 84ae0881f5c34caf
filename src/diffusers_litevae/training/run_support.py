"""What every training run shares: its data, timer, EMA swap, eager validation and JSON records.

Used by :func:`~diffusers_litevae.training.distill` (encoder distillation) and
:func:`~diffusers_litevae.training.train_autoencoder` (a whole autoencoder from scratch).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn

from .data import FolderImageSource, HubImageSource, find_images, load_eval_image, load_hub_dataset, split_holdout
from .errors import DistillationInputError

__all__ = [
    "EMAWeights",
    "RunTimer",
    "TrainingData",
    "eager_mode",
    "has_accelerator_device",
    "jsonable",
    "prepare_data",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Training images and loaded validation images of a run (see :func:`prepare_data`)."""

    source: object
    validation_images: list[torch.Tensor]
    eval_set: str
    num_train_images: int
    train_paths: list | None = None


def prepare_data(config) -> TrainingData:
    """Find training images, split off validation images, load them. Raises one-line errors.

    ``config`` is a :class:`~diffusers_litevae.training.DistillConfig` or
    :class:`~diffusers_litevae.training.TrainConfig`: both carry the same data and validation settings.
    """
    if config.train_data_dir:
        paths = find_images(config.train_data_dir)
        count = config.num_validation_images
        if count is None:  # auto: hold out up to 16 when there are enough images to spare them
            count = 0 if config.validation_dir else min(16, len(paths) // 10)
        train_paths, held_out = split_holdout(paths, count, config.validation_glob)
        if not train_paths:
            raise DistillationInputError(
                f"all {len(paths)} images of {config.train_data_dir!r} were held out for validation; "
                "lower --num_validation_images."
            )
        source = FolderImageSource(train_paths)
        if config.validation_dir:
            eval_sources = FolderImageSource(find_images(config.validation_dir))
            eval_set = f"{config.validation_dir}"
        elif held_out:
            eval_sources = FolderImageSource(held_out)
            eval_set = f"{len(held_out)} held-out images of {config.train_data_dir} (glob {config.validation_glob!r})"
        else:
            eval_sources = FolderImageSource(train_paths[:4])
            eval_set = f"first {min(4, len(train_paths))} training images (too few images to hold any out)"
            logger.warning("validating on training images: %s", eval_set)
        num_train = len(train_paths)
    else:
        dataset = load_hub_dataset(
            config.dataset_name, config.dataset_config_name, config.dataset_split, config.cache_dir, config.image_column
        )
        count = config.num_validation_images
        if count is None:
            count = 0 if config.validation_dir else min(16, len(dataset) // 10)
        source = HubImageSource(dataset, config.image_column, range(count, len(dataset)))
        if len(source) == 0:
            raise DistillationInputError(
                f"dataset {config.dataset_name!r} has no rows left for training after holding out {count}."
            )
        if config.validation_dir:
            eval_sources = FolderImageSource(find_images(config.validation_dir))
            eval_set = f"{config.validation_dir}"
        elif count:
            eval_sources = HubImageSource(dataset, config.image_column, range(count))
            eval_set = f"first {count} rows of {config.dataset_name} ({config.dataset_split})"
        else:
            eval_sources = HubImageSource(dataset, config.image_column, range(min(4, len(dataset))))
            eval_set = f"first {min(4, len(dataset))} training rows of {config.dataset_name}"
        num_train = len(source)
    limit = config.max_validation_images or len(eval_sources)
    images, unreadable = [], []
    for index in range(min(limit, len(eval_sources))):
        try:
            images.append(load_eval_image(eval_sources.load(index), config.validation_resolution))
        except Exception as error:  # an unreadable validation image is reported, not fatal
            unreadable.append(f"{eval_sources.name(index)} ({type(error).__name__})")
    if unreadable:
        logger.warning("skipped %d unreadable validation images: %s", len(unreadable), "; ".join(unreadable[:5]))
    if not images:
        raise DistillationInputError(f"none of the validation images ({eval_set}) could be read.")
    size = (
        "full size (cropped to a multiple of 8)"
        if config.validation_resolution is None
        else f"centre {config.validation_resolution} px crops"
    )
    eval_set = f"{eval_set}: {len(images)} images, {size}"
    return TrainingData(source, images, eval_set, num_train, train_paths if config.train_data_dir else None)


def has_accelerator_device() -> bool:
    """Whether a CUDA, XPU or MPS device is present (else accelerate must be told ``cpu=True``)."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def eager_mode():
    """Run torch.compile'd modules eagerly inside the block (torch >= 2.6; a no-op context before)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


class RunTimer:
    """Wall time of this invocation, and the part of it spent in training steps (not validation/checkpoints)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.train_seconds = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class EMAWeights:
    """Context manager: the unwrapped module with the EMA weights swapped in (no-op without EMA)."""

    def __init__(self, module: nn.Module, ema):
        self.module, self.ema = module, ema

    def __enter__(self) -> nn.Module:
        if self.ema is not None:
            self.ema.store(self.module.parameters())
            self.ema.copy_to(self.module.parameters())
        return self.module

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.restore(self.module.parameters())


def jsonable(value):
    """``value`` with every non-JSON leaf turned into its ``str`` (for settings and checkpoint records)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
