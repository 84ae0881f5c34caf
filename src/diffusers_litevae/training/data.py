"""Training and validation data: crops of images from folders or Hub datasets (read by
:mod:`diffusers_litevae.image_io`, as every command reads them), deterministic step-indexed batches.

Every micro-batch is a pure function of ``(seed, micro-batch index, process rank)``: which images (a fresh
permutation per epoch), where each is cropped and whether it is flipped. A resumed run therefore sees exactly the
batches an uninterrupted one would have, with no data-loader state to save, and each process reads its own share.
An unreadable image is replaced by the next readable one, and its name travels with the batch to be reported.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..caching.preprocess import pixels_to_model_input
from ..image_io import (
    DatasetImages,
    ImageFiles,
    ImageInputError,
    describe_read_error,
    find_images,
    load_image_dataset,
    resize_and_crop,
    resize_short_side,
)
from .errors import TrainingInputError

__all__ = [
    "RandomCropDataset",
    "ResolutionSchedule",
    "StepIndexedBatchSampler",
    "TrainingData",
    "collate_batch",
    "data_folders",
    "image_to_signed_tensor",
    "load_eval_image",
    "parse_scale_range",
    "prepare_data",
    "random_crop_flip",
    "split_holdout",
]

# ------------------------------------------------------------------------------------------- validation split


def split_holdout(paths: Sequence[Path], count: int, pattern: str = "*") -> tuple[list[Path], list[Path]]:
    """``(train, held_out)``: the first ``count`` paths whose file name matches ``pattern`` are held out (excluded
    from training)."""
    held_out = [p for p in paths if fnmatch.fnmatch(p.name, pattern)][: max(count, 0)]
    held = set(held_out)
    return [p for p in paths if p not in held], held_out


def data_folders(settings) -> list[str]:
    """The training folders of ``settings.train_data_dir`` (one path or a list), as a list."""
    folders = settings.train_data_dir
    if not folders:
        return []
    return [str(folders)] if isinstance(folders, (str, Path)) else [str(folder) for folder in folders]


logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- transforms


def image_to_signed_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> ``(3, H, W)`` float tensor in ``[-1, 1]``."""
    array = np.asarray(image, dtype=np.uint8)
    return pixels_to_model_input(torch.from_numpy(array.copy()).permute(2, 0, 1))


def random_crop_flip(
    image: Image.Image,
    resolution: int,
    rng: np.random.Generator,
    flip: bool = True,
    scale_range: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """A random ``resolution`` x ``resolution`` crop of an RGB image, as a ``(3, R, R)`` tensor in ``[-1, 1]``, at a
    random scale (and, with ``flip``, a horizontal flip with probability 1/2); ``rng`` decides all three.

    A crop at scale ``s`` covers ``resolution / s`` source pixels per side, resized to ``resolution``: ``s = 1``
    keeps the photo's own pixels (smooth content at high resolution), ``s = 0.25`` a 4x larger region downscaled
    (busy content). ``s`` is drawn log-uniformly from ``scale_range`` (``(smallest, largest)`` in ``(0, 1]``), then
    raised where the image is too small to hold the region. An image whose short side is below ``resolution`` is
    resized up (bicubic) first.
    """
    if min(image.size) < resolution:
        image = resize_short_side(image, resolution)
    width, height = image.size
    region = resolution
    smallest, largest = scale_range
    if smallest < 1.0:
        # The largest region the image holds sets the smallest usable scale.
        low = max(smallest, resolution / min(width, height))
        high = max(largest, low)
        scale = low if high <= low else float(np.exp(rng.uniform(np.log(low), np.log(high))))
        region = min(min(width, height), max(resolution, round(resolution / scale)))
    left = int(rng.integers(0, width - region + 1))
    top = int(rng.integers(0, height - region + 1))
    image = image.crop((left, top, left + region, top + region))
    if region != resolution:
        image = image.resize((resolution, resolution), Image.BICUBIC)  # PIL low-pass filters when it downscales
    if flip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image_to_signed_tensor(image)


def parse_scale_range(text: str | tuple[float, float] | None) -> tuple[float, float]:
    """Parse ``--crop_scales``: ``"0.25,1"`` (a range) or ``"1"`` (one scale); raises
    :class:`TrainingInputError` unless one or two numbers in ``(0, 1]``, smallest first."""
    if text is None:
        return (1.0, 1.0)
    if isinstance(text, (tuple, list)):
        values = [float(v) for v in text]
    else:
        try:
            values = [float(part) for part in str(text).split(",") if part.strip()]
        except ValueError:
            values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 < values[0] <= values[1] <= 1:
        raise TrainingInputError(
            f"--crop_scales {text!r} must be one scale or 'SMALLEST,LARGEST' with 0 < SMALLEST <= LARGEST <= 1, "
            "e.g. '0.25,1' (1: the photo's own pixels; 0.25: a 4x larger region downscaled)."
        )
    return values[0], values[1]


def load_eval_image(image: Image.Image, resolution: int | None = None, multiple: int = 8) -> torch.Tensor:
    """A validation image as a ``(3, H, W)`` tensor in ``[-1, 1]``: full size centre-cropped to a multiple of
    ``multiple`` (``resolution=None``), or a centre ``resolution`` x ``resolution`` crop (short side resized up first
    if smaller)."""
    return image_to_signed_tensor(resize_and_crop(image, resolution, resize=False, multiple=multiple))


# ------------------------------------------------------------------------------------------ resolution schedule


@dataclass(frozen=True)
class ResolutionSchedule:
    """Training crop size per optimizer step, in phases: ``stages`` is a list of ``(resolutions, until_step)``, the
    last one open-ended (``until_step=None``).

    A phase with several sizes (``256/384/512``) takes them in turn, one size per step, and steps at larger sizes
    hold fewer images so that each step holds about the same number of pixels (:meth:`batch_size_at`). Parsed from
    ``"128:2000,256"`` (128 px before step 2000, then 256 px), ``"256/384/512:3000,512"`` or a single ``"256"``.
    """

    stages: tuple[tuple[tuple[int, ...], int | None], ...]

    @classmethod
    def parse(cls, text: str | int, multiple: int = 8) -> "ResolutionSchedule":
        """Parse and check a schedule string.

        Raises:
            TrainingInputError: malformed text, a resolution that is not a positive multiple of ``multiple``,
                or switch steps that do not increase.
        """
        stages: list[tuple[tuple[int, ...], int | None]] = []
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts:
            raise TrainingInputError("--resolution_schedule is empty; use e.g. '256' or '128:2000,256'.")
        for position, part in enumerate(parts):
            sizes_text, _, until_text = part.partition(":")
            try:
                sizes = tuple(int(size) for size in sizes_text.split("/"))
                until = int(until_text) if until_text else None
            except ValueError:
                raise TrainingInputError(
                    f"cannot read resolution stage {part!r}; use RESOLUTION[:UNTIL_STEP] or "
                    "SIZE/SIZE/...[:UNTIL_STEP], e.g. '128:2000,256' or '256/512:3000,512'."
                ) from None
            for resolution in sizes:
                if resolution <= 0 or resolution % multiple:
                    raise TrainingInputError(
                        f"training resolution {resolution} is not a positive multiple of {multiple}; use e.g. "
                        f"{max(multiple, resolution // multiple * multiple)}."
                    )
            if until is None and position != len(parts) - 1:
                raise TrainingInputError(
                    f"resolution stage {part!r} needs ':UNTIL_STEP' (only the last stage is open-ended)."
                )
            if until is not None and (until <= 0 or (stages and until <= stages[-1][1])):
                raise TrainingInputError(f"resolution schedule {text!r}: switch steps must be positive and increasing.")
            stages.append((sizes, until))
        stages[-1] = (stages[-1][0], None)
        return cls(tuple(stages))

    def _stage_at(self, step: int) -> tuple[int, ...]:
        return next((sizes for sizes, until in self.stages if until is None or step < until), self.stages[-1][0])

    def resolution_at(self, step: int) -> int:
        """Crop size of optimizer step ``step`` (0-based); a mixed phase takes its sizes in turn."""
        sizes = self._stage_at(step)
        return sizes[step % len(sizes)]

    def batch_size_at(self, step: int, batch_size: int) -> int:
        """Images per micro-batch at ``step``: ``batch_size`` at the phase's smallest size, fewer at its larger sizes
        (equal pixels per step, at least one image)."""
        return max(1, batch_size * min(self._stage_at(step)) ** 2 // self.resolution_at(step) ** 2)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every crop size of the schedule, ascending."""
        return tuple(sorted({size for sizes, _ in self.stages for size in sizes}))

    def __str__(self) -> str:
        return ",".join(
            "/".join(map(str, sizes)) + (f":{until}" if until is not None else "") for sizes, until in self.stages
        )


# ----------------------------------------------------------------------------------------- step-indexed sampling


class StepIndexedBatchSampler(torch.utils.data.Sampler):
    """Yields micro-batches of ``(item index, resolution, crop seed)`` for process ``rank`` of ``world_size``, for
    optimizer steps ``start_step`` to ``end_step`` (excluded), ``grad_accum`` micro-batches of ``batch_size`` images
    per step, ``num_items`` images in all.

    The global sample stream is an endless sequence of epochs, each a permutation of ``range(num_items)`` drawn from
    ``seed`` and the epoch number. Micro-batch ``m`` (``m = step * grad_accum + micro``) of process ``rank``
    takes stream positions ``(m * world_size + rank) * batch_size ...`` onward, so processes read disjoint shares
    and the stream does not depend on where a run was resumed.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        schedule: ResolutionSchedule,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
        start_step: int = 0,
        end_step: int = 1,
    ):
        if num_items <= 0:
            raise TrainingInputError("no training images left (after holding out validation images).")
        self.num_items, self.batch_size, self.schedule = num_items, batch_size, schedule
        self.seed, self.rank, self.world_size, self.grad_accum = seed, rank, world_size, grad_accum
        self.start_step, self.end_step = start_step, end_step
        self._epoch, self._permutation = -1, None

    def __len__(self) -> int:
        return max(self.end_step - self.start_step, 0) * self.grad_accum

    def _item_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutation = torch.randperm(self.num_items, generator=generator).tolist()
            self._epoch = epoch
        return self._permutation[offset]

    def micro_batch(self, micro_index: int) -> list[tuple[int, int, int]]:
        """The ``(item, resolution, crop_seed)`` triples of global micro-batch ``micro_index`` for this rank.

        Steps at a mixed phase's larger sizes take fewer images: the first ones of the micro-batch's stream positions
        (the stream itself never depends on the schedule, so a resume across a phase switch stays exact).
        """
        step = micro_index // self.grad_accum
        resolution = self.schedule.resolution_at(step)
        count = self.schedule.batch_size_at(step, self.batch_size)
        first = (micro_index * self.world_size + self.rank) * self.batch_size
        # The crop seed is the stream position: unique per sample, independent of where the run resumed.
        return [(self._item_at(p), resolution, self.seed * 1_000_003 + p) for p in range(first, first + count)]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for micro_index in range(self.start_step * self.grad_accum, self.end_step * self.grad_accum):
            yield self.micro_batch(micro_index)


class RandomCropDataset(torch.utils.data.Dataset):
    """Random crops (:func:`random_crop_flip`) of an image ``source`` (``image_io.ImageFiles`` or
    ``DatasetImages``), indexed by ``(item, resolution, crop_seed)`` triples; unreadable items are
    replaced as :func:`first_readable` says."""

    def __init__(self, source, flip: bool = True, scale_range: tuple[float, float] = (1.0, 1.0)):
        self.source = source
        self.flip = flip
        self.scale_range = scale_range

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        index, resolution, crop_seed = key

        def sample(item: int, rng: np.random.Generator) -> dict:
            image = self.source.load(item)
            return {"pixel_values": random_crop_flip(image, resolution, rng, self.flip, self.scale_range)}

        return first_readable(len(self.source), index, crop_seed, sample, self.source.name)


def first_readable(count: int, index: int, seed: int, make_sample, name_of) -> dict:
    """``make_sample(item, rng)`` for the first item from ``index`` on (cyclically) that can be read, the generator
    seeded by ``(seed, attempt)``; the unreadable ones' ``name_of(item)`` are in the sample's ``skipped`` list.

    Raises:
        RuntimeError: none of the ``count`` items could be read.
    """
    skipped = []
    for attempt in range(count):
        item = (index + attempt) % count
        try:
            sample = make_sample(item, np.random.default_rng([seed, attempt]))
        except Exception as error:  # noqa: BLE001 (any unreadable input is reported, never fatal)
            skipped.append(f"{name_of(item)} ({describe_read_error(error)})")
            continue
        return {**sample, "skipped": skipped}
    raise RuntimeError(f"none of the {count} training images could be read; first error: {skipped[0]}")


def collate_batch(samples: list[dict]) -> dict:
    """Stack samples into ``{"pixel_values": (B, 3, R, R), ..., "skipped": [names]}``: every tensor of the samples
    (cached teacher targets too; one that is ``None``, a deterministic teacher's log-variance, stays ``None``)."""
    batch = {
        key: None if samples[0][key] is None else torch.stack([sample[key] for sample in samples])
        for key in samples[0]
        if key != "skipped"
    }
    return {**batch, "skipped": [name for sample in samples for name in sample["skipped"]]}


# ---------------------------------------------------------------------------------------------------- a run's data


@dataclass
class TrainingData:
    """Training images and loaded validation images of a run (see :func:`prepare_data`)."""

    source: object
    validation_images: list[torch.Tensor]
    eval_set: str
    num_train_images: int
    train_paths: list | None = None


def prepare_data(config) -> TrainingData:
    """Find the training images of ``config`` (a ``DistillConfig`` or ``TrainConfig``), split off validation images
    and load them.

    Raises:
        TrainingInputError: one line naming the problem (a missing or empty folder, a dataset without the
            image column, no readable image, ...).
    """
    try:
        source, held_out, first, train_paths = (_folder_split if config.train_data_dir else _dataset_split)(config)
        if config.validation_dir:
            eval_sources, eval_set = ImageFiles(find_images(config.validation_dir)), f"{config.validation_dir}"
        else:
            eval_sources, eval_set = held_out or first
            if held_out is None and config.train_data_dir:
                logger.warning("validating on training images: %s", eval_set)
        images = _validation_images(config, source, eval_sources, eval_set)
    except ImageInputError as error:  # the training commands print their own error type as one line
        raise TrainingInputError(str(error)) from None
    size = (
        "full size (cropped to a multiple of 8)"
        if config.validation_resolution is None
        else f"centre {config.validation_resolution} px crops"
    )
    return TrainingData(source, images, f"{eval_set}: {len(images)} images, {size}", len(source), train_paths)


def _holdout_count(config, total: int) -> int:
    if config.num_validation_images is not None:
        return config.num_validation_images
    return 0 if config.validation_dir else min(16, total // 10)  # auto: up to 16 when there are images to spare


def _folder_split(config) -> tuple:
    """``(training source, (held-out source, description) or None, (first training images, description), training
    paths)`` of ``config.train_data_dir``."""
    folder_of: dict[Path, int] = {}  # each image's folder (the first one that holds it)
    for index, folder in enumerate(data_folders(config)):
        for path in find_images(folder):
            folder_of.setdefault(path, index)
    paths = list(folder_of)
    train_paths, held_out = split_holdout(paths, _holdout_count(config, len(paths)), config.validation_glob)
    if not train_paths:
        raise TrainingInputError(
            f"all {len(paths)} images of {config.train_data_dir!r} were held out for validation; "
            "lower --num_validation_images."
        )
    # Repeats weight a folder's share of every epoch (e.g. a few high-resolution photos among many small ones).
    repeats = config.train_data_repeats or [1] * len(data_folders(config))
    sampled = [path for path in train_paths for _ in range(repeats[folder_of[path]])]
    described = f"{len(held_out)} held-out images of {config.train_data_dir} (glob {config.validation_glob!r})"
    first = f"first {min(4, len(train_paths))} training images (too few images to hold any out)"
    held = (ImageFiles(held_out), described) if held_out else None
    return ImageFiles(sampled), held, (ImageFiles(train_paths[:4]), first), train_paths


def _dataset_split(config) -> tuple:
    """As :func:`_folder_split`, for the rows of ``config.dataset_name`` (no training paths)."""
    column = config.image_column
    dataset, _ = load_image_dataset(
        config.dataset_name, config.dataset_config_name, config.dataset_split, column, config.cache_dir
    )
    count = _holdout_count(config, len(dataset))
    source = DatasetImages(dataset, column, range(count, len(dataset)))
    if len(source) == 0:
        raise TrainingInputError(
            f"dataset {config.dataset_name!r} has no rows left for training after holding out {count}."
        )
    described = f"first {count} rows of {config.dataset_name} ({config.dataset_split})"
    held = (DatasetImages(dataset, column, range(count)), described) if count else None
    shown = min(4, len(dataset))
    first = DatasetImages(dataset, column, range(shown)), f"first {shown} training rows of {config.dataset_name}"
    return source, held, first, None


def _validation_images(config, source, eval_sources, eval_set: str) -> list[torch.Tensor]:
    """The readable validation images of ``eval_sources`` (unreadable ones are warned about); raises
    :class:`TrainingInputError` when none could be read (naming the training data when none of it is readable)."""
    limit = config.max_validation_images or len(eval_sources)
    images, unreadable = [], []
    for index in range(min(limit, len(eval_sources))):
        try:
            images.append(load_eval_image(eval_sources.load(index), config.validation_resolution))
        except Exception as error:  # an unreadable validation image is reported, not fatal
            unreadable.append(f"{eval_sources.name(index)} ({describe_read_error(error)})")
    if unreadable:
        logger.warning("skipped %d unreadable validation images: %s", len(unreadable), "; ".join(unreadable[:5]))
    if images:
        return images
    for index in range(len(source)):  # is the training data unusable too? (stops at the first readable image)
        try:
            source.load(index)
            break
        except Exception:  # noqa: BLE001 (any unreadable input)
            continue
    else:
        raise TrainingInputError(
            f"{config.train_data_dir or config.dataset_name!r} has no usable image: none of its {len(source)} "
            "training images could be read (damaged, truncated, or not images); pass readable images."
        )
    raise TrainingInputError(f"none of the validation images ({eval_set}) could be read.")
