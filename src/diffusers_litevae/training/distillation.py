"""Encoder distillation: train a LiteVAE encoder to reproduce a frozen teacher VAE's latents.

The student is a LiteVAE model (:class:`~diffusers_litevae.AutoencoderLite`, or ``AutoencoderLiteTiny`` for a
TAESD-family teacher) holding a fresh LiteVAE encoder and an exact copy of the teacher's decoder; only the encoder
trains. :class:`DistillConfig` holds a run's settings, :func:`compute_distillation_loss` is one forward pass,
:func:`distill_step` one optimizer step and :func:`distill` the whole run (on :class:`~.loop.TrainingRun`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..file_io import jsonable, save_pretrained
from ..models.autoencoder_lite_base import AutoencoderLiteBase
from ..models.litevae_encoder import ENCODER_PRESETS, encoder_config, preset_name_of
from ..models.utils import normalize_sequences
from ..runtime import DTYPE_NAMES, cast_module, resolve_compile, resolve_dtype
from ..settings import setting
from .data import ResolutionSchedule, collate_batch, data_folders, parse_scale_range
from .errors import TrainingInputError
from .loop import TrainingRun, accumulate_step, comparable_config, eager_mode, ema_weights
from .losses import DistillationLoss, LossWeights
from .settings import RunSettings, check_loss_weights, check_positive, check_run_inputs, json_object
from .teachers import TEACHER_TYPES, DistillationTeacher, load_teacher, wrap_teacher
from .validation import compute_teacher_reference, plot_curve

__all__ = [
    "DistillConfig",
    "compute_distillation_loss",
    "distill",
    "distill_step",
    "initial_encoder",
    "validate_config",
]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw")


@dataclass
class DistillConfig(RunSettings):
    """All settings of a distillation run (``litevae distill --help`` lists each with its flag). Only ``teacher`` and
    one data source (``train_data_dir`` or ``dataset_name``) are required; a value out of range raises
    :class:`TrainingInputError`."""

    # --help sections: what to distil first, then the shared run settings.
    setting_groups = ("teacher", "student", "data", "validation", "optimisation", "speed", "losses")

    teacher: str = setting(
        "",
        "teacher VAE: diffusers folder, Hub id, TAESD-family folder (*_encoder.pth + *_decoder.pth), or a "
        "bundled model by name (taef2, litevae-s-taef2)",
        group="teacher",
        required=True,
    )
    teacher_subfolder: str | None = setting(
        None, "subfolder of the VAE in a pipeline repo/folder, usually 'vae'", group="teacher"
    )
    teacher_type: str = setting("auto", group="teacher", choices=TEACHER_TYPES)
    teacher_revision: str | None = setting(None, "Hub revision of the teacher", group="teacher")
    teacher_variant: str | None = setting(None, "weights variant of the teacher, e.g. fp16", group="teacher")
    teacher_dtype: str = setting(
        "auto", "teacher weights dtype: auto (the training dtype), float32, bf16, fp16", group="teacher"
    )
    teacher_scaling_factor: float | None = setting(
        None, "override the latent scaling factor (TAESD-family checkpoints carry none: 1.0)", group="teacher"
    )
    teacher_shift_factor: float | None = setting(None, "override the latent shift factor", group="teacher")
    teacher_latents: str | None = setting(
        None,
        "train from the teacher's posteriors cached in DIR (a latent cache of whole images, built on "
        "the first run and updated incrementally): no teacher encoder runs in a training step",
        group="teacher",
        metavar="DIR",
    )
    build_teacher_latents: bool = setting(
        True,
        "encode images missing from --teacher_latents (off: use the cache as it is and fail on missing images)",
        group="teacher",
    )
    teacher_latents_border: int = setting(
        0,
        "latent pixels at each crop border left out of the latent losses with --teacher_latents "
        "(the teacher saw context beyond the crop there)",
        group="teacher",
    )
    student: str | None = setting("B", "LiteVAE encoder preset: S, B, M or L", group="student")
    student_config: dict | None = setting(
        None, "JSON text or file of encoder_* config keys overriding the preset", group="student", type=json_object
    )
    init_from: str | None = setting(
        None,
        "start from this AutoencoderLite's encoder (folder, Hub id or bundled name, distilled against the same "
        "teacher): its architecture and weights replace --student; e.g. fine-tune a distilled encoder at the size "
        "you encode at",
        group="student",
        metavar="PATH_OR_ID",
    )
    optimizer: str = setting("adamw", group="optimisation", choices=OPTIMIZERS)
    channels_last: bool = setting(
        False, "student and teacher in channels-last memory format", group="speed", action="store_true"
    )
    teacher_channels_last: bool = setting(
        False,
        "only the frozen teacher in channels-last (on CPU with bf16 this halves the step time of a "
        "TAESD-family teacher, while the student's GroupNorm is faster in the default layout)",
        group="speed",
        action="store_true",
    )
    latent_weight: float = setting(1.0, "posterior-mean MSE (normalized latents)", group="losses")
    std_weight: float = setting(
        1.0,
        "posterior-std MSE: matches the teacher's log-variance (0 noise for deterministic teachers)",
        group="losses",
    )
    latent_stats_weight: float = setting(
        0.0,
        "MSE of each image's per-channel latent mean and std (whole-image offsets: colour casts, contrast)",
        group="losses",
    )
    low_frequency_weight: float = setting(
        0.0,
        "L1 of the average-pooled reconstruction (colour and tone over regions of --low_frequency_pool px)",
        group="losses",
    )
    low_frequency_pool: int = setting(16, group="losses")

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_dtype != "auto" and self.teacher_dtype not in DTYPE_NAMES:
            raise TrainingInputError(
                f"--teacher_dtype must be auto, float32, bf16 or fp16, got {self.teacher_dtype!r}."
            )
        self._check_student()
        check_positive(self, ("low_frequency_pool",))
        weights = self.loss_weights()
        check_loss_weights(weights.as_dict())
        if weights.latent == 0 and not weights.needs_decode():
            raise TrainingInputError("every loss weight is 0; set --latent_weight and/or --reconstruction_weight > 0.")
        if self.teacher_latents:
            self._check_teacher_latents()

    def _check_student(self) -> None:
        if self.student and self.student.upper() not in ENCODER_PRESETS:
            raise TrainingInputError(
                f"unknown --student preset {self.student!r}; choose one of {', '.join(ENCODER_PRESETS)}."
            )
        if not self.student and not self.student_config and not self.init_from:
            raise TrainingInputError("give a --student preset (S, B, M, L), a --student_config or --init_from.")
        if self.init_from and self.student_config:
            raise TrainingInputError(
                "--init_from takes the encoder's architecture from that model; drop --student_config."
            )
        bad = [key for key in self.student_config or {} if not key.startswith("encoder_")]
        if bad:
            raise TrainingInputError(
                f"--student_config may only set encoder_* keys (the decoder is the teacher's); got {bad}."
            )

    def _check_teacher_latents(self) -> None:
        if len(data_folders(self)) != 1 or (self.train_data_repeats or [1]) != [1]:
            raise TrainingInputError(
                "--teacher_latents needs exactly one --train_data_dir, without --train_data_repeats (cached targets "
                "are keyed by file path)."
            )
        if parse_scale_range(self.crop_scales) != (1.0, 1.0):
            raise TrainingInputError(
                "--crop_scales below 1 need the live teacher (cached targets are whole images at one scale); "
                "drop --teacher_latents or --crop_scales."
            )
        border = self.teacher_latents_border
        if border < 0 or 2 * border >= ResolutionSchedule.parse(self.resolution_schedule).sizes[0] // 8:
            raise TrainingInputError(
                f"--teacher_latents_border {border} must be >= 0 and leave latent pixels inside the "
                "smallest training crop (crop / 8 > 2 * border)."
            )

    def loss_weights(self) -> LossWeights:
        return LossWeights.from_settings(self)

    def student_encoder_spec(self) -> str | dict:
        """What ``make_student`` takes: the preset name, or ``encoder_*`` keys (preset values overridden)."""
        if not self.student_config:
            return self.student or "B"
        base = encoder_config(self.student) if self.student else {}
        return {**base, **self.student_config}


def validate_config(config: DistillConfig) -> ResolutionSchedule:
    """Check every setting that can be checked without loading anything (:class:`TrainingInputError` at the first
    problem) and return the parsed resolution schedule."""
    if not config.teacher:
        raise TrainingInputError(
            "no teacher given; pass --teacher (a diffusers VAE folder, Hub id, or TAESD-family folder)."
        )
    return check_run_inputs(config, "distill")


# -------------------------------------------------------------------------------------------- one training step


def compute_distillation_loss(
    encoder: nn.Module,
    teacher: DistillationTeacher,
    loss_fn: DistillationLoss,
    images: torch.Tensor,
    targets: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    border: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward pass of one micro-batch: teacher targets (no grad), student moments, decode, weighted losses; returns
    ``(loss, components)`` as :meth:`DistillationLoss.forward` does.

    Args:
        encoder: the student LiteVAE encoder (or its DDP/compiled wrapper): ``(B, 3, H, W)`` -> ``(B, 2C, H/8, W/8)``.
        teacher, loss_fn: the frozen teacher and the :class:`DistillationLoss`.
        images: ``(B, 3, H, W)`` in ``[-1, 1]`` on the training device.
        targets: precomputed teacher ``(mean, logvar or None)`` raw latents of ``images`` (from a teacher-latent
            cache); ``None`` runs the teacher's encoder here.
        border: latent pixels at each border left out of the latent losses (cached targets saw more context there).
    """
    teacher_parameter = next(teacher.parameters())
    # The teacher may run in another memory format than the student (see ``teacher_channels_last``).
    teacher_format = getattr(teacher, "memory_format", torch.contiguous_format)
    if targets is None:
        with torch.no_grad():
            teacher_mean, teacher_logvar = teacher.encode(
                images.to(teacher_parameter.dtype).contiguous(memory_format=teacher_format)
            )
    else:
        teacher_mean, teacher_logvar = targets
    moments = encoder(images)
    student_mean, student_logvar = moments.chunk(2, dim=1)
    reconstruction = None
    if loss_fn.weights.needs_decode():
        # Gradients flow through the frozen decoder into the student's latents only.
        reconstruction = teacher.decode(
            student_mean.to(teacher_parameter.dtype).contiguous(memory_format=teacher_format)
        )
    if border:
        inner = (Ellipsis, slice(border, -border), slice(border, -border))
        student_mean, student_logvar, teacher_mean = student_mean[inner], student_logvar[inner], teacher_mean[inner]
        teacher_logvar = None if teacher_logvar is None else teacher_logvar[inner]
    return loss_fn(
        teacher.normalize_latents(student_mean.float()),
        student_logvar,
        teacher.normalize_latents(teacher_mean.float()),
        teacher_logvar,
        reconstruction,
        images,
    )


def distill_step(
    accelerator,
    encoder: nn.Module,
    teacher: DistillationTeacher,
    loss_fn: DistillationLoss,
    micro_batches: list[torch.Tensor | dict],
    optimizer: torch.optim.Optimizer,
    lr_scheduler=None,
    ema=None,
    max_grad_norm: float | None = 1.0,
    channels_last: bool = False,
    border: int = 0,
) -> dict[str, torch.Tensor]:
    """One optimizer step (:func:`~.loop.accumulate_step`): forward/backward over each micro-batch, then clip, step
    and EMA; returns each loss component's mean over the micro-batches (detached), plus ``grad_norm`` when clipping.

    Args:
        accelerator: an ``accelerate.Accelerator`` (``encoder`` and ``optimizer`` prepared with it).
        encoder, teacher, loss_fn: the student encoder, the frozen teacher (on the device), the loss.
        micro_batches: ``gradient_accumulation_steps`` tensors ``(B, 3, R, R)`` in ``[-1, 1]`` (any device), or
            dicts with ``pixel_values`` and the cached teacher targets ``teacher_mean`` / ``teacher_logvar``.
        optimizer: the optimizer.
        lr_scheduler: stepped once per optimizer step, or ``None``.
        ema: a ``diffusers.training_utils.EMAModel`` over the encoder's parameters, or ``None``.
        max_grad_norm: clip the global gradient norm to this (``None``: no clipping).
        channels_last: feed images in channels-last memory format.
        border: see :func:`compute_distillation_loss`.
    """
    encoder.train()

    def to_device(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(accelerator.device, non_blocking=True)

    def loss_of(batch):
        images, targets = batch, None
        if isinstance(batch, dict):
            images = batch["pixel_values"]
            targets = to_device(batch["teacher_mean"]), to_device(batch.get("teacher_logvar"))
        images = to_device(images)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return compute_distillation_loss(encoder, teacher, loss_fn, images, targets, border)

    gradients = dict(lr_scheduler=lr_scheduler, ema=ema, max_grad_norm=max_grad_norm)
    return accumulate_step(accelerator, encoder, micro_batches, loss_of, optimizer, **gradients)


# ------------------------------------------------------------------------------------------------- the run


def _teacher_dtype(config: DistillConfig, mixed_precision: str) -> torch.dtype:
    if config.teacher_dtype != "auto":
        return resolve_dtype(config.teacher_dtype)
    return resolve_dtype(mixed_precision) if mixed_precision in ("bf16", "fp16") else torch.float32  # "no": fp32


def _compile_teacher(teacher: DistillationTeacher, mode: str | None) -> None:
    vae = getattr(teacher, "vae", None)
    for name in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
        module = getattr(vae, name, None)
        if isinstance(module, nn.Module):
            module.compile(mode=mode, dynamic=False)


def initial_encoder(name_or_path: str, teacher: DistillationTeacher) -> tuple[dict, dict]:
    """``(encoder_* config, encoder state dict)`` of the ``AutoencoderLite`` that ``--init_from`` names, checked
    against the teacher: the latent space must be the teacher's (fine-tuning a distilled encoder, e.g. at a new
    size)."""
    from ..vae_io import VAELoadError, load_vae

    try:
        model = load_vae(name_or_path, torch_dtype=torch.float32)
    except VAELoadError as error:
        raise TrainingInputError(f"--init_from: {error}") from error
    if not isinstance(model, AutoencoderLiteBase):
        raise TrainingInputError(
            f"--init_from {name_or_path!r} is a {type(model).__name__}, not a LiteVAE model: pass a LiteVAE "
            "folder, Hub id or bundled name (a model this command wrote)."
        )
    if model.config.latent_channels != teacher.latent_channels:
        raise TrainingInputError(
            f"--init_from {name_or_path!r} makes {model.config.latent_channels} latent channels but the teacher "
            f"{teacher.name_or_path!r} has {teacher.latent_channels}; start from a model distilled against this "
            "teacher."
        )
    spec = {key: value for key, value in model.config.items() if key.startswith("encoder_")}
    logger.info("starting the student encoder from %s", name_or_path)
    return spec, {key: value.clone() for key, value in model.encoder.state_dict().items()}


def _student_description(config: DistillConfig, student: AutoencoderLiteBase) -> dict:
    encoder_config = {k: normalize_sequences(v, list) for k, v in student.config.items() if k.startswith("encoder_")}
    return {
        "preset": preset_name_of(student.config),  # what was built (--init_from or --student_config may decide it)
        "init_from": config.init_from,
        "encoder_config": encoder_config,
        "encoder_parameters": sum(p.numel() for p in student.encoder.parameters()),
    }


class _DistillRun(TrainingRun):
    """One invocation of :func:`distill` (every process builds one; output on the main process)."""

    progress_description = "distill"
    tracker_name = "litevae-distill"

    def __init__(self, config: DistillConfig, teacher: DistillationTeacher | nn.Module | None):
        if teacher is not None and not config.teacher:
            config.teacher = getattr(teacher, "name_or_path", type(teacher).__name__)
        self.setup(config, validate_config(config))
        self.teacher, self.student = self._teacher_and_student(teacher)
        self.loss_fn = DistillationLoss(
            config.loss_weights(),
            lpips_model=self.lpips_model,
            latent_scale=self.teacher.normalization.scale_std,
            low_frequency_pool=config.low_frequency_pool,
            **config.image_loss_settings(),
        )
        self._build_optimisation()
        self.start(self._check_resume)
        if self.accelerator.is_main_process:
            with eager_mode():
                self.reference = compute_teacher_reference(
                    self.teacher, self.data.validation_images, self.accelerator.autocast, config.num_grid_images
                )
            logger.info(
                "teacher on %s: PSNR %.2f dB, SSIM %.4f", self.data.eval_set, *self.reference.summary().values()
            )

    def _teacher_and_student(self, teacher) -> tuple[DistillationTeacher, AutoencoderLiteBase]:
        from accelerate.utils import set_seed

        config, accelerator = self.config, self.accelerator
        if teacher is None:
            teacher = load_teacher(
                config.teacher,
                subfolder=config.teacher_subfolder,
                teacher_type=config.teacher_type,
                revision=config.teacher_revision,
                variant=config.teacher_variant,
                torch_dtype=torch.float32,
                scaling_factor=config.teacher_scaling_factor,
                shift_factor=config.teacher_shift_factor,
            )
        else:
            teacher = wrap_teacher(teacher, config.teacher)
        set_seed(config.seed)
        initial = initial_encoder(config.init_from, teacher) if config.init_from else None
        spec = config.student_encoder_spec() if initial is None else initial[0]
        # Built from the full-precision teacher, so the saved decoder holds the teacher's exact weights.
        student = cast_module(teacher.make_student(spec), dtype=torch.float32)
        if initial is not None:
            student.encoder.load_state_dict(initial[1])
        self.targets = None
        if config.teacher_latents:
            # Before the teacher is cast to the training dtype: targets are computed from the full-precision weights.
            from .targets import prepare_teacher_latents

            self.targets = prepare_teacher_latents(
                config.teacher_latents,
                teacher.to(accelerator.device),
                data_folders(config)[0],
                self.data.train_paths,
                self.schedule.sizes[-1],
                config.random_flip,
                build=config.build_teacher_latents,
                mixed_precision=accelerator.mixed_precision,
                num_workers=config.dataloader_num_workers,
                progress=config.progress_bar and accelerator.is_main_process,
            )
        teacher.to(accelerator.device, dtype=_teacher_dtype(config, accelerator.mixed_precision))
        if config.channels_last or config.teacher_channels_last:
            teacher.to(memory_format=torch.channels_last)
            teacher.memory_format = torch.channels_last
        return teacher, student

    def _build_optimisation(self) -> None:
        config, accelerator = self.config, self.accelerator
        encoder = self.student.encoder  # only the encoder trains; the decoder copy is carried to the output
        if config.gradient_checkpointing:
            self.student.enable_gradient_checkpointing()
            # The frozen teacher decoder's activations dominate memory when image losses are on.
            vae = getattr(self.teacher, "vae", None)
            if vae is not None and getattr(vae, "_supports_gradient_checkpointing", False):
                vae.enable_gradient_checkpointing()
        if config.channels_last:
            encoder.to(memory_format=torch.channels_last)
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(
            encoder.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
        )
        self.encoder, self.optimizer = accelerator.prepare(encoder, optimizer)
        self.schedule_and_ema(optimizer, self.unwrapped.parameters())
        # One graph per crop size (static shapes: a schedule has a handful); validation runs eagerly.
        if resolve_compile(config.compile, accelerator.device):
            self.unwrapped.compile(mode=config.compile_mode, dynamic=False)
            _compile_teacher(self.teacher, config.compile_mode)

    def _check_resume(self, saved: dict) -> None:
        if saved.get("student_config") and comparable_config(saved["student_config"]) != comparable_config(
            self.student.config
        ):
            raise TrainingInputError(
                f"checkpoint {str(self.resume_path)!r} was made for a different student or teacher; "
                "resume with the same --teacher/--student settings or use a new --output_dir."
            )

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.encoder)

    def plot(self) -> None:
        title = f"{self.teacher.name_or_path} -> LiteVAE"
        plot_curve(self.state["curve"], self.state["loss_history"], self.output_dir / "curve.png", title=title)

    def checkpoint_record(self) -> dict:
        return {"student_config": jsonable(dict(self.student.config))}

    def dataset_and_collate(self):
        if self.targets is None:
            return super().dataset_and_collate()
        from .targets import CachedTargetDataset

        return CachedTargetDataset(self.data.train_paths, self.targets, flip=self.config.random_flip), collate_batch

    def optimizer_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        config = self.config
        return distill_step(
            self.accelerator,
            self.encoder,
            self.teacher,
            self.loss_fn,
            [batch if "teacher_mean" in batch else batch["pixel_values"] for batch in micro_batches],
            self.optimizer,
            self.lr_scheduler,
            self.ema,
            config.max_grad_norm,
            config.channels_last,
            config.teacher_latents_border,
        )

    def log_line(self, means: dict[str, float]) -> tuple[dict, str]:
        postfix = {"loss": f"{means['total']:.4f}", "latent": f"{means['latent']:.4f}"}
        return postfix, f"loss {means['total']:.4f}, latent {means['latent']:.4f}"

    def write_output(self) -> dict:
        """Write the model folder, ``distillation.json`` and ``curve.png``; return the summary."""
        result = self.summary()
        with ema_weights(self.unwrapped, self.ema) as encoder:
            weights = {k: v.detach().float().cpu() for k, v in encoder.state_dict().items()}
        self.student.encoder.load_state_dict(weights)
        cast_module(self.student, device="cpu")
        save_pretrained(self.student, self.output_dir, safe_serialization=True)
        (self.output_dir / "distillation.json").write_text(json.dumps(result, indent=1))
        self.plot()
        logger.info(
            "wrote %s (%d steps, %.1f images/s)", self.output_dir, self.state["step"], result["train_images_per_s"]
        )
        return result

    def summary(self) -> dict:
        metric_keys = ("psnr_student", "psnr_teacher", "ssim_student", "ssim_teacher", "latent_mse", "eval_images")
        return {
            "teacher": self.teacher.describe(),
            "student": _student_description(self.config, self.student),
            **self.run_record(metric_keys),
        }


def distill(config: DistillConfig, teacher: DistillationTeacher | nn.Module | None = None) -> dict:
    """Run a distillation and write ``config.output_dir`` (under ``accelerate launch`` every process calls it).

    Every input is checked before training starts (settings, data, teacher, LPIPS); problems raise a one-line
    :class:`~diffusers_litevae.training.errors.TrainingInputError`.

    Args:
        config: the run's settings.
        teacher: an already loaded teacher (a :class:`DistillationTeacher` or a diffusers VAE module) to use
            instead of loading ``config.teacher``; ``config.teacher`` is then only recorded.

    Returns the content written to ``distillation.json`` (the curve complete on the main process only). The main
    process writes the model (``from_pretrained`` loads it), ``distillation.json``, ``curve.png``,
    ``validation/step_<step>.png`` grids and ``checkpoints/checkpoint-<step>``.
    """
    run = _DistillRun(config, teacher)
    run.train()
    return run.finish()
