"""What every training run shares: its data, timer, EMA swap, the validation loop and JSON records.

Used by :func:`~diffusers_litevae.training.distill` (encoder distillation) and
:func:`~diffusers_litevae.training.train_autoencoder` (a whole autoencoder from scratch).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..file_io import jsonable
from ..image_io import (
    DatasetImages,
    ImageFiles,
    ImageInputError,
    describe_read_error,
    find_images,
    load_image_dataset,
)
from .data import data_folders, load_eval_image, split_holdout
from .errors import TrainingInputError
from .validation import evaluate_autoencoder, save_reconstruction_grid

__all__ = [
    "EMAWeights",
    "RunTimer",
    "TrainingData",
    "TrainingRun",
    "apply_gradients",
    "comparable_config",
    "eager_mode",
    "has_accelerator_device",
    "prepare_data",
]

logger = logging.getLogger(__name__)

# curve.png is redrawn at a validation at most this often (~1 s a plot); the end of a run always draws it.
PLOT_INTERVAL_S = 120


@dataclass
class TrainingData:
    """Training images and loaded validation images of a run (see :func:`prepare_data`)."""

    source: object
    validation_images: list[torch.Tensor]
    eval_set: str
    num_train_images: int
    train_paths: list | None = None


def prepare_data(config) -> TrainingData:
    """Find training images, split off validation images, load them.

    ``config`` is a :class:`~diffusers_litevae.training.DistillConfig` or
    :class:`~diffusers_litevae.training.TrainConfig`: both carry the same data and validation settings.

    Raises:
        TrainingInputError: one line naming the problem (a missing or empty folder, a dataset without the
            image column, no readable image, ...).
    """
    try:
        return _read_data(config)
    except ImageInputError as error:  # the training commands print their own error type as one line
        raise TrainingInputError(str(error)) from None


def _read_data(config) -> TrainingData:
    if config.train_data_dir:
        folders = data_folders(config)
        folder_of: dict[Path, int] = {}  # each image's folder (the first one that holds it)
        for index, folder in enumerate(folders):
            for path in find_images(folder):
                folder_of.setdefault(path, index)
        paths = list(folder_of)
        count = config.num_validation_images
        if count is None:  # auto: hold out up to 16 when there are enough images to spare them
            count = 0 if config.validation_dir else min(16, len(paths) // 10)
        train_paths, held_out = split_holdout(paths, count, config.validation_glob)
        if not train_paths:
            raise TrainingInputError(
                f"all {len(paths)} images of {config.train_data_dir!r} were held out for validation; "
                "lower --num_validation_images."
            )
        # Repeats weight a folder's share of every epoch (e.g. a few high-resolution photos among many small ones).
        repeats = config.train_data_repeats or [1] * len(folders)
        sampled = [path for path in train_paths for _ in range(repeats[folder_of[path]])]
        source = ImageFiles(sampled)
        if config.validation_dir:
            eval_sources = ImageFiles(find_images(config.validation_dir))
            eval_set = f"{config.validation_dir}"
        elif held_out:
            eval_sources = ImageFiles(held_out)
            eval_set = f"{len(held_out)} held-out images of {config.train_data_dir} (glob {config.validation_glob!r})"
        else:
            eval_sources = ImageFiles(train_paths[:4])
            eval_set = f"first {min(4, len(train_paths))} training images (too few images to hold any out)"
            logger.warning("validating on training images: %s", eval_set)
        num_train = len(sampled)
    else:
        dataset, _ = load_image_dataset(
            config.dataset_name, config.dataset_config_name, config.dataset_split, config.image_column, config.cache_dir
        )
        count = config.num_validation_images
        if count is None:
            count = 0 if config.validation_dir else min(16, len(dataset) // 10)
        source = DatasetImages(dataset, config.image_column, range(count, len(dataset)))
        if len(source) == 0:
            raise TrainingInputError(
                f"dataset {config.dataset_name!r} has no rows left for training after holding out {count}."
            )
        if config.validation_dir:
            eval_sources = ImageFiles(find_images(config.validation_dir))
            eval_set = f"{config.validation_dir}"
        elif count:
            eval_sources = DatasetImages(dataset, config.image_column, range(count))
            eval_set = f"first {count} rows of {config.dataset_name} ({config.dataset_split})"
        else:
            eval_sources = DatasetImages(dataset, config.image_column, range(min(4, len(dataset))))
            eval_set = f"first {min(4, len(dataset))} training rows of {config.dataset_name}"
        num_train = len(source)
    limit = config.max_validation_images or len(eval_sources)
    images, unreadable = [], []
    for index in range(min(limit, len(eval_sources))):
        try:
            images.append(load_eval_image(eval_sources.load(index), config.validation_resolution))
        except Exception as error:  # an unreadable validation image is reported, not fatal
            unreadable.append(f"{eval_sources.name(index)} ({describe_read_error(error)})")
    if unreadable:
        logger.warning("skipped %d unreadable validation images: %s", len(unreadable), "; ".join(unreadable[:5]))
    if not images:
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


def apply_gradients(accelerator, module, optimizer, lr_scheduler=None, ema=None, max_grad_norm=None) -> dict:
    """End an optimizer step: clip ``module``'s gradient norm (returned as ``grad_norm``), step the optimizer and
    the LR schedule, clear the gradients, and update the EMA of ``module``'s (unwrapped) parameters."""
    record = {}
    if max_grad_norm is not None and max_grad_norm > 0:
        record["grad_norm"] = accelerator.clip_grad_norm_(module.parameters(), max_grad_norm).detach()
    optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.step(accelerator.unwrap_model(module).parameters())
    return record


def comparable_config(config) -> dict:
    """A model config without diffusers' private keys, JSON-normalised: equal for the same architecture."""
    return {k: v for k, v in jsonable(dict(config)).items() if not k.startswith("_")}


class TrainingRun:
    """The machinery one training invocation needs, whatever it trains: the accelerator, the step loop with
    gradient-accumulation micro-batches, the time budget, logging, atomic checkpoints and resume bookkeeping.

    Subclasses (distillation, training from scratch) build their models and optimisers between
    :meth:`setup_accelerator` and :meth:`start`, and provide:

    - ``optimizer_step(micro_batches, step) -> dict[str, Tensor]``: one optimizer step, its loss components;
    - ``unwrapped``: the module that trains, without accelerate's wrappers (validated with the EMA weights swapped
      in): a whole autoencoder, or with ``teacher`` and ``reference`` set (distillation), a student encoder;
    - ``plot()``: draw ``curve.png`` from ``state["curve"]`` and ``state["loss_history"]``;
    - ``dataset_and_collate() -> (Dataset, collate_fn)``: the training samples, indexed like
      :class:`~diffusers_litevae.training.data.RandomCropDataset`;
    - ``checkpoint_record() -> dict``: what ``trainer_state.json`` keeps about the model (checked on resume);
    - ``log_line(means) -> (postfix, text)``: the progress-bar fields and the log line of a logging interval.

    Every process builds one; the main process writes output while the others wait at the same barriers.
    """

    progress_description = "train"
    tracker_name = "litevae"
    teacher = None  # distillation: the frozen teacher whose decoder validation reconstructs the student's latents
    reference = None  # distillation: the teacher's side of validation (compute_teacher_reference)

    def setup_accelerator(self, config, schedule) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from .checkpointing import resolve_resume

        self.config, self.schedule = config, schedule
        self.output_dir = Path(config.output_dir).expanduser()
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.resume_path = resolve_resume(config.resume_from_checkpoint, self.checkpoints_dir)
        self.accelerator = Accelerator(
            # Without an accelerator device, multi-process runs (`accelerate launch --multi_gpu --num_processes N`
            # on a CPU machine) need cpu=True to use gloo instead of looking for GPUs.
            cpu=not has_accelerator_device(),
            mixed_precision=config.mixed_precision,
            log_with=config.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        if config.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.accelerator.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def schedule_and_ema(self, optimizer, parameters) -> None:
        """The LR schedule of ``optimizer`` and, with ``use_ema``, an EMA of ``parameters``, both saved in checkpoints.

        Call after ``accelerator.prepare``: the EMA must hold the parameters training updates.
        """
        from diffusers.optimization import get_scheduler

        config = self.config
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.max_train_steps,
        )
        # Stepped by hand once per optimizer step (a prepared scheduler steps once per process); saved with the state.
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        self.ema = None
        if config.use_ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(parameters, decay=config.ema_decay, use_ema_warmup=True, power=config.ema_power)
            self.ema.to(self.accelerator.device)
            self.accelerator.register_for_checkpointing(self.ema)

    def start(self, check_resume) -> None:
        """Restore a checkpoint (``check_resume(saved_trainer_state)`` raises when it does not fit), start the
        timer and make the output folder. Call after the models and optimisers are prepared."""
        from .checkpointing import load_checkpoint

        self.state = {
            "step": 0,
            "images_seen": 0,
            "train_time_s": 0.0,
            "wall_time_s": 0.0,
            "curve": [],
            "loss_history": [],
            "skipped_images": [],
        }
        if self.resume_path is None:
            if self.config.resume_from_checkpoint == "latest":
                logger.info("no checkpoint in %s yet: starting fresh", self.checkpoints_dir)
        else:
            check_resume(json.loads((self.resume_path / "trainer_state.json").read_text()))
            self.state.update(load_checkpoint(self.accelerator, self.resume_path))
            logger.info("resumed from %s at step %d", self.resume_path, self.state["step"])
        self.timer = RunTimer()
        self.wall_offset, self.train_offset = self.state["wall_time_s"], self.state["train_time_s"]
        self.images_at_start = self.state["images_seen"]
        self.skipped: dict[str, None] = dict.fromkeys(self.state["skipped_images"])
        self.last_plot = time.perf_counter()
        # Known on every process (the curve itself lives on the main process), so all reach the same barriers.
        self.validated_step = self.state["curve"][-1]["step"] if self.state["curve"] else None
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.config.report_to:
                trackable = {k: v for k, v in asdict(self.config).items() if isinstance(v, (int, float, str, bool))}
                self.accelerator.init_trackers(self.tracker_name, config=trackable)

    # -- validation ------------------------------------------------------------------------------------------------

    def validate(self, step: int, train_losses: dict[str, float]) -> None:
        """Validate on the main process (EMA weights when on), save a grid, put the step's entry in the curve (one
        per step: a step validated again replaces its entry); every process calls it."""
        if self.accelerator.is_main_process:
            config, images = self.config, self.data.validation_images
            # Eager: validation images may each have their own size (no recompilation per shape).
            with EMAWeights(self.unwrapped, self.ema) as model, eager_mode():
                metrics, grid = evaluate_autoencoder(
                    model,
                    images,
                    self.accelerator.autocast,
                    config.num_grid_images,
                    teacher=self.teacher,
                    reference=self.reference,
                )
            if grid:
                columns = {"reconstruction": grid}
                if self.reference is not None:
                    columns = {"teacher": self.reference.grid_reconstructions, "student": grid}
                save_reconstruction_grid(
                    self.output_dir / "validation" / f"step_{step:06d}.png", images[: len(grid)], columns
                )
            entry = {
                "step": step,
                "images_seen": self.state["images_seen"],
                "wall_time_s": round(self.wall_offset + self.timer.elapsed(), 2),
                "train_time_s": round(self.train_offset + self.timer.train_seconds, 2),
                **{k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
                **{f"train_{k}": round(v, 6) for k, v in train_losses.items()},
            }
            self.state["curve"] = [e for e in self.state["curve"] if e["step"] != step] + [entry]
            if config.report_to:
                self.accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
            if self.reference is None:
                logger.info("step %d: PSNR %.2f dB, SSIM %.4f", step, metrics["psnr"], metrics["ssim"])
            else:
                logger.info(
                    "step %d: PSNR student %.2f dB / teacher %.2f dB, SSIM %.4f / %.4f, latent MSE %.5f",
                    step,
                    metrics["psnr_student"],
                    metrics["psnr_teacher"],
                    metrics["ssim_student"],
                    metrics["ssim_teacher"],
                    metrics["latent_mse"],
                )
            if time.perf_counter() - self.last_plot > PLOT_INTERVAL_S:
                self.plot()
                self.last_plot = time.perf_counter()
        self.validated_step = step
        self.accelerator.wait_for_everyone()

    # -- checkpoints -----------------------------------------------------------------------------------------------

    def gather_skipped(self) -> None:
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            self.skipped.update(dict.fromkeys(gather_object(list(self.skipped))))

    def checkpoint(self, step: int) -> None:
        from .checkpointing import save_checkpoint

        self.gather_skipped()
        snapshot = {
            **self.state,
            "wall_time_s": round(self.wall_offset + self.timer.elapsed(), 2),
            "train_time_s": round(self.train_offset + self.timer.train_seconds, 2),
            "skipped_images": list(self.skipped),
            **self.checkpoint_record(),
            "settings": jsonable(asdict(self.config)),
        }
        save_checkpoint(self.accelerator, self.checkpoints_dir, step, snapshot, self.config.checkpoints_total_limit)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def _loader(self) -> torch.utils.data.DataLoader:
        from .data import StepIndexedBatchSampler

        config, accelerator = self.config, self.accelerator
        sampler = StepIndexedBatchSampler(
            self.data.num_train_images,
            config.train_batch_size,
            self.schedule,
            seed=config.seed,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            grad_accum=config.gradient_accumulation_steps,
            start_step=self.state["step"],
            end_step=config.max_train_steps,
        )
        dataset, collate = self.dataset_and_collate()
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=config.dataloader_num_workers,
            pin_memory=accelerator.device.type == "cuda",
            persistent_workers=config.dataloader_num_workers > 0,
        )

    def next_micro_batches(self, batches) -> list:
        """The next ``gradient_accumulation_steps`` batches; unreadable images they replaced are warned about once."""
        micro_batches = []
        for _ in range(self.config.gradient_accumulation_steps):
            batch = next(batches)
            for name in batch["skipped"]:
                if name not in self.skipped:
                    self.skipped[name] = None
                    logger.warning("skipping unreadable image %s", name)
            micro_batches.append(batch)
        return micro_batches

    def out_of_time(self, step: int) -> bool:
        if self.config.max_minutes is None:
            return False
        over = self.timer.elapsed() > self.config.max_minutes * 60
        if self.accelerator.num_processes == 1:
            return over
        if step % self.config.logging_steps:  # a collective costs a device sync: only at log steps
            return False
        from accelerate.utils import broadcast

        # The main process decides, so every process stops after the same step.
        return bool(broadcast(torch.tensor([float(over)], device=self.accelerator.device)).item())

    def train(self) -> None:
        from tqdm.auto import tqdm

        config, accelerator, state = self.config, self.accelerator, self.state
        step = state["step"]
        if step == 0 and self.validated_step is None:
            self.validate(0, {})
        batches = iter(self._loader())
        progress = tqdm(
            total=config.max_train_steps,
            initial=step,
            desc=self.progress_description,
            unit="step",
            dynamic_ncols=True,
            disable=not (accelerator.is_main_process and config.progress_bar),
        )
        pending: dict[str, list[torch.Tensor]] = defaultdict(list)  # per-step losses since the last log line
        since_validation: dict[str, list[float]] = defaultdict(list)  # logged means since the last validation
        try:  # the bar is closed however the loop ends (Ctrl-C included), before anything else is printed
            stop = False
            while step < config.max_train_steps and not stop:
                step_start = time.perf_counter()
                micro_batches = self.next_micro_batches(batches)
                components = self.optimizer_step(micro_batches, step)
                step += 1
                state["step"] = step
                # Steps of a mixed-size phase hold different numbers of images (equal pixels).
                images = sum(len(batch["pixel_values"]) for batch in micro_batches)
                state["images_seen"] += images * accelerator.num_processes
                self.timer.train_seconds += time.perf_counter() - step_start
                progress.update(1)
                for name, value in components.items():
                    pending[name].append(value)
                if step % config.logging_steps == 0 or step == config.max_train_steps:
                    means = self._log(step, pending, progress)
                    for name in components:
                        since_validation[name].append(means[name])
                stop = self.out_of_time(step)
                if stop:
                    logger.info("time budget of %.1f minutes reached at step %d", config.max_minutes, step)
                finished = step == config.max_train_steps or stop
                if step % config.validation_steps == 0 or finished:
                    self.validate(step, {k: sum(v) / len(v) for k, v in since_validation.items()})
                    since_validation.clear()
                if step % config.checkpointing_steps == 0 or finished:
                    self.checkpoint(step)
        finally:
            progress.close()

    def _log(self, step: int, pending: dict[str, list[torch.Tensor]], progress) -> dict[str, float]:
        # One device sync per logging interval (the float() calls), not one per step.
        means = {name: float(torch.stack([v.float() for v in values]).mean()) for name, values in pending.items()}
        pending.clear()
        throughput = (self.state["images_seen"] - self.images_at_start) / max(self.timer.train_seconds, 1e-9)
        means.update(
            lr=self.lr_scheduler.get_last_lr()[0],
            images_per_s=round(throughput, 2),
            resolution=self.schedule.resolution_at(step - 1),
        )
        self.state["loss_history"].append(
            {"step": step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in means.items()}}
        )
        postfix, text = self.log_line(means)
        progress.set_postfix(**postfix, img_s=f"{throughput:.1f}", res=means["resolution"])
        if not self.config.progress_bar and self.accelerator.is_main_process:
            # Without a bar, a line per logging interval shows the run is alive (and how fast it goes).
            logger.info(
                "step %d/%d: %s, lr %.2e, %.1f images/s, %d px",
                step,
                self.config.max_train_steps,
                text,
                means["lr"],
                throughput,
                means["resolution"],
            )
        if self.config.report_to:
            self.accelerator.log({f"train/{k}": v for k, v in means.items()}, step=step)
        return means

    def timing_summary(self) -> dict:
        """Steps, time and throughput of the run so far, for the JSON summary."""
        train_seconds = self.timer.train_seconds
        return {
            "wall_time_s": round(self.wall_offset + self.timer.elapsed(), 2),
            "train_time_s": round(self.train_offset + train_seconds, 2),
            # This invocation's training steps (data loading included; validation and checkpoints not).
            "train_images_per_s": round((self.state["images_seen"] - self.images_at_start) / train_seconds, 3)
            if train_seconds > 0
            else 0.0,
            "num_train_images": self.data.num_train_images,
            "skipped_images": list(self.skipped),
            "num_skipped_images": len(self.skipped),
        }
