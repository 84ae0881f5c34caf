"""Training and validation data: crops of images from folders or Hub datasets (read by
:mod:`diffusers_litevae.image_io`, as every command reads them), deterministic step-indexed batches.

Every micro-batch is a pure function of ``(seed, micro-batch index, process rank)``: which images (a fresh
permutation per epoch), where each is cropped and whether it is flipped. Resuming at step ``k`` therefore
continues with exactly the batches an uninterrupted run would have seen, with no data-loader state to save, and
every process of a multi-GPU run reads its own disjoint share.

Unreadable images (truncated files, non-images with an image extension, undecodable dataset rows) are skipped:
the sample is replaced by the next readable image, and the skipped names travel with the batch so the trainer
counts and reports them. A run never crashes on one bad file.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..caching.preprocess import pixels_to_model_input
from ..image_io import describe_read_error, resize_and_crop, resize_short_side
from .errors import TrainingInputError

__all__ = [
    "RandomCropDataset",
    "ResolutionSchedule",
    "StepIndexedBatchSampler",
    "collate_batch",
    "data_folders",
    "image_to_signed_tensor",
    "load_eval_image",
    "parse_scale_range",
    "random_crop_flip",
    "split_holdout",
]

# ------------------------------------------------------------------------------------------- validation split


def split_holdout(paths: Sequence[Path], count: int, pattern: str = "*") -> tuple[list[Path], list[Path]]:
    """Hold out the first ``count`` paths (sorted order) whose file name matches ``pattern``.

    Returns:
        ``(train, held_out)``; the held-out images are excluded from training.
    """
    held_out = [p for p in paths if fnmatch.fnmatch(p.name, pattern)][: max(count, 0)]
    held = set(held_out)
    return [p for p in paths if p not in held], held_out


def data_folders(settings) -> list[str]:
    """The training folders of ``settings.train_data_dir`` (one path or a list), as a list."""
    folders = settings.train_data_dir
    if not folders:
        return []
    return [str(folders)] if isinstance(folders, (str, Path)) else [str(folder) for folder in folders]


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
    """A random ``resolution`` x ``resolution`` crop at a random scale (and a horizontal flip with probability 1/2).

    A crop at scale ``s`` covers ``resolution / s`` source pixels per side, resized to ``resolution``: ``s = 1``
    keeps the photo's own pixels (at high resolution: smooth content, as the images users encode at 1024 px have),
    ``s = 0.25`` takes a 4x larger region downscaled (busy, detailed content). ``s`` is drawn log-uniformly from
    ``scale_range``, then raised where the image is too small to hold the region. Images whose short side is below
    ``resolution`` are resized up (bicubic) so the short side fits.

    Args:
        image: an RGB PIL image.
        resolution: crop side in pixels.
        rng: the generator that decides scale, position and flip.
        flip: random horizontal flips.
        scale_range: ``(smallest, largest)`` scale, ``0 < smallest <= largest <= 1``; ``(1, 1)``: plain crops.

    Returns:
        ``(3, resolution, resolution)`` tensor in ``[-1, 1]``.
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
    """Parse ``--crop_scales``: ``"0.25,1"`` (a range) or ``"1"`` (one scale).

    Raises:
        TrainingInputError: not one or two numbers in ``(0, 1]``, smallest first.
    """
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
    """A validation image: full size centre-cropped to a multiple of ``multiple`` (``resolution=None``), or a
    centre ``resolution`` x ``resolution`` crop (short side resized up first if smaller).

    Returns:
        ``(3, H, W)`` tensor in ``[-1, 1]``.
    """
    return image_to_signed_tensor(resize_and_crop(image, resolution, resize=False, multiple=multiple))


# ------------------------------------------------------------------------------------------ resolution schedule


@dataclass(frozen=True)
class ResolutionSchedule:
    """Training crop size per optimizer step, in phases.

    ``stages`` is a list of ``(resolutions, until_step)``, the last one open-ended (``until_step=None``). A phase
    with one size crops every image at that size; a phase with several sizes (``256/384/512``) takes them in turn,
    one size per step (a bucket: every image of a batch has the same size), and steps at larger sizes hold fewer
    images so that each step of the phase holds about the same number of pixels (:meth:`batch_size_at`).

    Parsed from ``"128:2000,256"`` (128 px before step 2000, then 256 px), ``"256/384/512:3000,512"`` (mixed sizes
    before step 3000, then a final phase at 512 px, the size users encode) or a single ``"256"``.
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
        sizes, _ = stages[-1]
        stages[-1] = (sizes, None)
        return cls(tuple(stages))

    def _stage_at(self, step: int) -> tuple[int, ...]:
        for sizes, until in self.stages:
            if until is None or step < until:
                return sizes
        return self.stages[-1][0]

    def resolution_at(self, step: int) -> int:
        """Crop size of optimizer step ``step`` (0-based); a mixed phase takes its sizes in turn."""
        sizes = self._stage_at(step)
        return sizes[step % len(sizes)]

    def batch_size_at(self, step: int, batch_size: int) -> int:
        """Images per micro-batch at ``step``: ``batch_size`` at the phase's smallest size, fewer at its larger sizes
        (equal pixels per step, at least one image)."""
        sizes = self._stage_at(step)
        resolution = sizes[step % len(sizes)]
        return max(1, batch_size * min(sizes) ** 2 // resolution**2)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every crop size of the schedule, ascending."""
        return tuple(sorted({size for sizes, _ in self.stages for size in sizes}))

    @property
    def max_resolution(self) -> int:
        return self.sizes[-1]

    @property
    def min_resolution(self) -> int:
        return self.sizes[0]

    def __str__(self) -> str:
        return ",".join(
            "/".join(map(str, sizes)) + (f":{until}" if until is not None else "") for sizes, until in self.stages
        )


# ----------------------------------------------------------------------------------------- step-indexed sampling


class StepIndexedBatchSampler(torch.utils.data.Sampler):
    """Yields micro-batches of ``(item index, resolution, crop seed)`` for one process, from a given step on.

    The global sample stream is an endless sequence of epochs, each a permutation of ``range(num_items)`` drawn from
    ``seed`` and the epoch number. Micro-batch ``m`` (``m = step * grad_accum + micro``) of process ``rank``
    takes stream positions ``(m * world_size + rank) * batch_size ...`` onward, so processes read disjoint shares
    and the stream does not depend on where a run was resumed.

    Args:
        num_items: dataset size.
        batch_size: images per micro-batch per process.
        schedule: resolution per optimizer step.
        seed: data seed.
        rank: this process's index.
        world_size: number of processes.
        grad_accum: micro-batches per optimizer step.
        start_step: first optimizer step to yield.
        end_step: yield up to (not including) this step.
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
    """Random crops of an image source, indexed by ``(item, resolution, crop_seed)`` triples.

    Unreadable items are replaced by the next readable one (deterministically) and reported in the sample's
    ``skipped`` list.

    Args:
        source: a :class:`~diffusers_litevae.image_io.ImageFiles` or
            :class:`~diffusers_litevae.image_io.DatasetImages`.
        flip: random horizontal flips.
        scale_range: crop scales, see :func:`random_crop_flip`.
    """

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
    """``make_sample(item, rng)`` for the first item from ``index`` on (cyclically) that can be read.

    Unreadable items (PIL raises many error types for bad files) are skipped, never fatal: the sample is replaced
    by the next readable one, deterministically (the generator is seeded by ``(seed, attempt)``), and the skipped
    names are returned in the sample's ``skipped`` list.

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
    """Stack samples into ``{"pixel_values": (B, 3, R, R), "skipped": [names]}``."""
    return {
        "pixel_values": torch.stack([sample["pixel_values"] for sample in samples]),
        "skipped": [name for sample in samples for name in sample["skipped"]],
    }
