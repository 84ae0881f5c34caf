"""The training loop every run shares (:class:`TrainingRun`): accelerator, micro-batches, time budget, logging,
validation, checkpoints and resume, with its helpers (EMA swap, gradient step).

Used by :func:`~diffusers_litevae.training.distill` (encoder distillation) and
:func:`~diffusers_litevae.training.train_autoencoder` (a whole autoencoder from scratch).
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from ..file_io import jsonable
from .validation import evaluate_autoencoder, save_reconstruction_grid

__all__ = [
    "TrainingRun",
    "accumulate_step",
    "apply_gradients",
    "comparable_config",
    "eager_mode",
    "ema_weights",
    "has_accelerator_device",
]

logger = logging.getLogger(__name__)

# curve.png is redrawn at a validation at most this often (~1 s a plot); the end of a run always draws it.
PLOT_INTERVAL_S = 120


def has_accelerator_device() -> bool:
    """Whether a CUDA, XPU or MPS device is present (else accelerate must be told ``cpu=True``)."""
    backends = (torch.cuda, getattr(torch, "xpu", None), getattr(torch.backends, "mps", None))
    return any(backend is not None and backend.is_available() for backend in backends)


def eager_mode():
    """Run torch.compile'd modules eagerly inside the block (torch >= 2.6; a no-op context before)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


@contextmanager
def ema_weights(module: nn.Module, ema):
    """The unwrapped ``module`` with the EMA weights swapped in for the block (no-op without EMA)."""
    if ema is not None:
        ema.store(module.parameters())
        ema.copy_to(module.parameters())
    try:
        yield module
    finally:
        if ema is not None:
            ema.restore(module.parameters())


def apply_gradients(
    accelerator, module, optimizer, lr_scheduler=None, ema=None, max_grad_norm=None, prefix: str = ""
) -> dict:
    """End an optimizer step: clip ``module``'s gradient norm (returned as ``<prefix>grad_norm``), step the optimizer
    and the LR schedule, clear the gradients, and update the EMA of ``module``'s (unwrapped) parameters."""
    record = {}
    if max_grad_norm is not None and max_grad_norm > 0:
        record[f"{prefix}grad_norm"] = accelerator.clip_grad_norm_(module.parameters(), max_grad_norm).detach()
    optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.step(accelerator.unwrap_model(module).parameters())
    return record


def accumulate_step(accelerator, module, micro_batches: list, loss_of, optimizer, **gradients) -> dict:
    """One optimizer step of ``module`` over ``micro_batches``: forward (``loss_of(batch) -> (loss, components)``,
    under autocast) and backward each one, then :func:`apply_gradients` (``gradients``: its keyword arguments) on the
    last, when gradients are synchronised across processes. Returns the components' means over the micro-batches
    and what :func:`apply_gradients` records."""
    totals: dict[str, torch.Tensor] = {}
    count = len(micro_batches)
    # accelerator.accumulate syncs gradients, and prepared optimizers step, on the last of these micro-batches
    # (backward divides each loss by count), whatever accelerate counted before (another module's micro-batches,
    # the count a checkpoint restored).
    accelerator.gradient_accumulation_steps = count
    accelerator.step = 0
    for batch in micro_batches:
        with accelerator.accumulate(module):
            with accelerator.autocast():
                loss, components = loss_of(batch)
            accelerator.backward(loss)
            for name, value in components.items():
                totals[name] = totals.get(name, 0.0) + value / count
            if accelerator.sync_gradients:
                totals.update(apply_gradients(accelerator, module, optimizer, **gradients))
    return totals


def comparable_config(config) -> dict:
    """A model config without diffusers' private keys, JSON-normalised: equal for the same architecture."""
    return {k: v for k, v in jsonable(dict(config)).items() if not k.startswith("_")}


class TrainingRun(abc.ABC):
    """One training invocation, whatever it trains: the accelerator, the step loop, the time budget, logging,
    validation, checkpoints and resume. Subclasses build their models and optimisers between :meth:`setup` and
    :meth:`start` and implement the abstract methods. Every process builds one; the main process writes output while
    the others wait at the same barriers.
    """

    progress_description = "train"
    tracker_name = "litevae"
    teacher = None  # distillation: the frozen teacher whose decoder validation reconstructs the student's latents
    reference = None  # distillation: the teacher's side of validation (compute_teacher_reference)

    @property
    @abc.abstractmethod
    def unwrapped(self) -> nn.Module:
        """The module that trains, unwrapped (validated with the EMA weights swapped in): a whole autoencoder, or
        with ``teacher`` and ``reference`` set (distillation), a student encoder."""

    @abc.abstractmethod
    def optimizer_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        """One optimizer step over the micro-batches of step ``step`` (0-based); returns its detached losses."""

    @abc.abstractmethod
    def checkpoint_record(self) -> dict:
        """What ``trainer_state.json`` keeps about the model (checked when a run resumes)."""

    @abc.abstractmethod
    def log_line(self, means: dict[str, float]) -> tuple[dict, str]:
        """``(progress-bar fields, log text)`` of a logging interval's mean losses."""

    @abc.abstractmethod
    def plot(self) -> None:
        """Draw ``curve.png`` from ``state["curve"]`` and ``state["loss_history"]``."""

    @abc.abstractmethod
    def summary(self) -> dict:
        """The run's JSON summary: the model's description, then :meth:`run_record`."""

    @abc.abstractmethod
    def write_output(self) -> dict:
        """Write the model folder, the JSON summary and ``curve.png`` (main process); return the summary."""

    def dataset_and_collate(self) -> tuple[torch.utils.data.Dataset, object]:
        """``(dataset, collate_fn)`` of the training samples: random crops of the training images."""
        from .data import RandomCropDataset, collate_batch, parse_scale_range

        scales = parse_scale_range(self.config.crop_scales)
        return RandomCropDataset(self.data.source, flip=self.config.random_flip, scale_range=scales), collate_batch

    def setup(self, config, schedule) -> None:
        """The accelerator, then what can fail on bad input before any training: LPIPS (with an LPIPS weight), data."""
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from .checkpointing import resolve_resume
        from .data import prepare_data
        from .losses import load_lpips

        self.config, self.schedule = config, schedule
        self.output_dir = Path(config.output_dir).expanduser()
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.resume_path = resolve_resume(config.resume_from_checkpoint, self.checkpoints_dir)
        self.accelerator = Accelerator(
            # Without an accelerator device, multi-process runs (`accelerate launch --multi_gpu --num_processes N`
            # on a CPU machine) need cpu=True to use gloo instead of looking for GPUs.
            cpu=not has_accelerator_device(),
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
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
        self.lpips_model = load_lpips(config.lpips_net, self.accelerator.device) if config.lpips_weight > 0 else None
        self.data = prepare_data(config)

    def schedule_and_ema(self, optimizer, parameters) -> None:
        """The LR schedule of ``optimizer`` and, with ``use_ema``, an EMA of ``parameters``, both saved in checkpoints
        (call after ``accelerator.prepare``: the EMA must hold the parameters training updates)."""
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
        self.started, self.train_seconds = time.perf_counter(), 0.0
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

    def times(self) -> dict[str, float]:
        """``wall_time_s`` (this invocation's, plus the resumed run's) and ``train_time_s`` (training steps only)."""
        return {
            "wall_time_s": round(self.wall_offset + time.perf_counter() - self.started, 2),
            "train_time_s": round(self.train_offset + self.train_seconds, 2),
        }

    # -- validation ------------------------------------------------------------------------------------------------

    def validate(self, step: int, train_losses: dict[str, float]) -> None:
        """Validate on the main process (EMA weights when on), save a grid, put the step's entry in the curve (one
        per step: a step validated again replaces its entry); every process calls it."""
        if self.accelerator.is_main_process:
            config, images = self.config, self.data.validation_images
            # Eager: validation images may each have their own size (no recompilation per shape).
            with ema_weights(self.unwrapped, self.ema) as model, eager_mode():
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
                **self.times(),
                **{k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
                **{f"train_{k}": round(v, 6) for k, v in train_losses.items()},
            }
            self.state["curve"] = [e for e in self.state["curve"] if e["step"] != step] + [entry]
            if config.report_to:
                self.accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
            text = "step %(step)d: PSNR %(psnr).2f dB, SSIM %(ssim).4f"
            if self.reference is not None:
                text = (
                    "step %(step)d: PSNR student %(psnr_student).2f dB / teacher %(psnr_teacher).2f dB, "
                    "SSIM %(ssim_student).4f / %(ssim_teacher).4f, latent MSE %(latent_mse).5f"
                )
            logger.info(text, {"step": step, **metrics})
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
            **self.times(),
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
        over = time.perf_counter() - self.started > self.config.max_minutes * 60
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
                self.train_seconds += time.perf_counter() - step_start
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
        throughput = (self.state["images_seen"] - self.images_at_start) / max(self.train_seconds, 1e-9)
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

    def finish(self) -> dict:
        """Validate the last step unless it was, write the output (main process) and end the trackers; returns the
        summary (its curve complete on the main process only)."""
        self.gather_skipped()
        if self.validated_step != self.state["step"]:  # e.g. resumed from the last checkpoint of a finished run
            self.validate(self.state["step"], {})
        result = self.write_output() if self.accelerator.is_main_process else self.summary()
        if self.config.report_to:
            self.accelerator.end_training()
        self.accelerator.wait_for_everyone()
        return result

    def run_record(self, metric_keys: tuple[str, ...]) -> dict:
        """What the run's JSON summary holds after the model's description: the settings, the command, the final
        metrics (``metric_keys`` of the last validation), the curves, and the steps, time and throughput so far."""
        state, train_seconds = self.state, self.train_seconds
        last = state["curve"][-1] if state["curve"] else {}
        return {
            "settings": jsonable(asdict(self.config)),
            "command": self.config.command_line,
            "final_metrics": {
                "step": state["step"],
                "images_seen": state["images_seen"],
                **{key: last.get(key) for key in metric_keys},
                "eval_set": self.data.eval_set,
            },
            "curve": state["curve"],
            "loss_history": state["loss_history"],
            **self.times(),
            # This invocation's training steps (data loading included; validation and checkpoints not).
            "train_images_per_s": round((state["images_seen"] - self.images_at_start) / train_seconds, 3)
            if train_seconds > 0
            else 0.0,
            "num_train_images": self.data.num_train_images,
            "skipped_images": list(self.skipped),
            "num_skipped_images": len(self.skipped),
        }
