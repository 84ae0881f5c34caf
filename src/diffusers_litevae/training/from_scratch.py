"""Train a whole LiteVAE (encoder and decoder) from scratch, with the paper's recipe (``litevae train``).

LiteVAE (NeurIPS 2024), sections 4.2-4.3 and appendix D: L1 reconstruction, KL to N(0, I), the wavelet and
Gaussian losses, LPIPS, and an adversarial loss from a U-Net discriminator that scores every pixel, at a constant
weight (no adaptive weight: unstable in mixed precision) and only in a later phase; Adam with lr 1e-4 and betas
(0.5, 0.9); pre-training at 128 px, then fine-tuning at 256 px (100k + 50k steps matched 150k steps at 256 px).

:class:`TrainConfig` holds a run's settings, :func:`build_autoencoder` builds the model, :class:`AutoencoderLoss`
weighs the losses, :func:`autoencoder_step` is one optimizer step and :func:`train_autoencoder` the whole run, which
ends by measuring the latent ``scaling_factor`` (and ``shift_factor`` on request) on training images.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..file_io import jsonable, save_pretrained
from ..models.autoencoder_lite import AutoencoderLite
from ..models.autoencoder_lite_base import AutoencoderLiteBase
from ..models.autoencoder_lite_tiny import AutoencoderLiteTiny
from ..models.litevae_encoder import ENCODER_PRESETS
from ..models.unet_discriminator import UNetDiscriminator
from ..runtime import cast_module, resolve_compile
from ..settings import setting
from .data import RandomCropDataset, ResolutionSchedule
from .errors import TrainingInputError
from .loop import TrainingRun, accumulate_step, comparable_config, ema_weights
from .losses import (
    discriminator_hinge_loss,
    generator_adversarial_loss,
    image_losses,
    kl_to_standard_normal,
    latent_scaling,
)
from .settings import RunSettings, check_loss_weights, check_positive, check_run_inputs, json_object
from .validation import plot_curve

__all__ = [
    "DECODERS",
    "AutoencoderLoss",
    "TrainConfig",
    "autoencoder_step",
    "build_autoencoder",
    "train_autoencoder",
    "validate_train_config",
]

logger = logging.getLogger(__name__)

DECODERS = ("smc", "groupnorm", "tiny")
_LOSSES = ("reconstruction", "kl", "wavelet", "gaussian", "lpips", "adversarial")


def _int_tuple(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive integers (``--decoder_block_out_channels 64,128,256``)."""
    try:
        values = tuple(int(value) for value in text.split(",") if value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,128,256, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


@dataclass
class TrainConfig(RunSettings):
    """All settings of a from-scratch run (``litevae train --help`` lists each with its flag): those of
    :class:`~diffusers_litevae.training.settings.RunSettings` with the paper's recipe as defaults, and the model's.
    Only a data source (``train_data_dir`` or ``dataset_name``) is required; a value out of range raises
    :class:`TrainingInputError`.
    """

    # --help sections: the model first, then the shared run settings.
    setting_groups = ("model", "data", "validation", "optimisation", "speed", "losses", "latent scaling")

    # the recipe's defaults for shared settings
    resolution_schedule: str = "128:100000,256"
    validation_steps: int = 1000
    output_dir: str = "litevae-trained"
    train_batch_size: int = 16
    max_train_steps: int = 150_000
    learning_rate: float = 1e-4
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    checkpointing_steps: int = 1000
    encoder: str = setting("B", "LiteVAE encoder preset: S, B, M or L", group="model")
    encoder_config: dict | None = setting(
        None, "JSON text or file of encoder_* config keys overriding the preset", group="model", type=json_object
    )
    latent_channels: int = setting(4, "4 (SD 1.x/2.x/SDXL), 12, 16 (SD3/FLUX)", group="model")
    decoder: str = setting(
        "smc",
        "smc: SD-layout decoder with Self-Modulated Convolutions (the paper's); groupnorm: the same with "
        "GroupNorm; tiny: a TAESD-family decoder",
        group="model",
        choices=DECODERS,
    )
    decoder_block_out_channels: tuple[int, ...] = setting(
        (128, 256, 512, 512),
        "decoder widths, one per stage (tiny: the first is its width)",
        group="model",
        type=_int_tuple,
    )
    decoder_layers_per_block: int = setting(2, group="model")
    decoder_norm_num_groups: int = setting(32, group="model")
    decoder_attention: bool = setting(True, "self-attention in the decoder's mid block", group="model")
    discriminator_block_out_channels: tuple[int, ...] = setting(
        (64, 128, 256),
        "U-Net discriminator widths (training crops must be multiples of 2 ** their count)",
        group="model",
        type=_int_tuple,
    )
    discriminator_learning_rate: float = setting(1e-4, group="optimisation")
    kl_weight: float = setting(1e-4, "KL to N(0, I), mean per latent", group="losses")
    adversarial_weight: float = setting(
        0.1, "hinge GAN loss from the per-pixel U-Net discriminator (constant weight, as in the paper)", group="losses"
    )
    discriminator_start_step: int = setting(
        100_000, "first step with the discriminator on (the paper: when the 256 px phase starts)", group="losses"
    )
    set_shift_factor: bool = setting(
        False,
        "also set shift_factor (the latents' mean), as SD3/FLUX-style VAEs have",
        group="latent scaling",
        action="store_true",
    )
    scaling_images: int = setting(
        64, "training crops whose latents set scaling_factor (1 / std) at the end", group="latent scaling"
    )

    def __post_init__(self):
        super().__post_init__()
        if self.encoder.upper() not in ENCODER_PRESETS:
            raise TrainingInputError(
                f"unknown --encoder preset {self.encoder!r}; choose one of {', '.join(ENCODER_PRESETS)}."
            )
        if self.encoder_config and any(not key.startswith("encoder_") for key in self.encoder_config):
            raise TrainingInputError("--encoder_config may only set encoder_* keys of AutoencoderLite's config.")
        factor = 2 ** len(self.discriminator_block_out_channels)
        odd = [size for size in ResolutionSchedule.parse(self.resolution_schedule).sizes if size % factor]
        if self.adversarial_weight > 0 and odd:
            raise TrainingInputError(
                f"training resolution {odd[0]} is not a multiple of {factor}, which the discriminator "
                "needs (2 ** len(--discriminator_block_out_channels))."
            )
        check_positive(self, ("latent_channels", "scaling_images"), ("discriminator_learning_rate",))
        check_loss_weights(self.loss_weights())
        if self.reconstruction_weight == 0 and self.lpips_weight == 0:
            raise TrainingInputError(
                "set --reconstruction_weight and/or --lpips_weight > 0: nothing would reconstruct."
            )
        if self.discriminator_start_step < 0:
            raise TrainingInputError(f"--discriminator_start_step must be >= 0, got {self.discriminator_start_step}.")

    def loss_weights(self) -> dict[str, float]:
        return {name: float(getattr(self, f"{name}_weight")) for name in _LOSSES}


def validate_train_config(config: TrainConfig) -> ResolutionSchedule:
    """Check every setting that can be checked without loading anything (and warn when the adversarial phase is
    not reached); one-line :class:`TrainingInputError` errors."""
    schedule = check_run_inputs(config, "train")
    if config.adversarial_weight > 0 and config.discriminator_start_step >= config.max_train_steps:
        # Legitimate: the paper's first phase has no discriminator, and a resumed run with more steps reaches it.
        logger.warning(
            "the adversarial phase is not reached: --discriminator_start_step %d is not before the last step "
            "(--max_train_steps %d), so this run trains without the discriminator (the first phase of the recipe). "
            "Lower --discriminator_start_step to train adversarially in this run.",
            config.discriminator_start_step,
            config.max_train_steps,
        )
    return schedule


def build_autoencoder(config: TrainConfig) -> AutoencoderLiteBase:
    """The randomly initialised LiteVAE model that ``config`` describes (``AutoencoderLiteTiny`` for the ``"tiny"``
    decoder); ``scaling_factor`` starts at 1 and is measured at the end of training."""
    widths = tuple(int(width) for width in config.decoder_block_out_channels)
    kwargs = dict(latent_channels=config.latent_channels, scaling_factor=1.0, **(config.encoder_config or {}))
    if config.decoder == "tiny":
        # TAESD's layout: three blocks per stage, one in the last; one stage per width (the factor is the same).
        stages = (3,) * (len(widths) - 1) + (1,)
        return AutoencoderLiteTiny.from_preset(
            config.encoder.upper(),
            decoder_channels=widths[0],
            decoder_num_blocks=stages,
            decoder_midblock_gn=(False,) * len(stages),
            **kwargs,
        )
    return AutoencoderLite.from_preset(
        config.encoder.upper(),
        block_out_channels=widths,
        layers_per_block=config.decoder_layers_per_block,
        norm_num_groups=config.decoder_norm_num_groups,
        mid_block_add_attention=config.decoder_attention,
        use_smc=config.decoder == "smc",
        **kwargs,
    )


class AutoencoderLoss(nn.Module):
    """Weighted sum of the from-scratch losses, each component reported unweighted.

    Args:
        weights: ``{"reconstruction", "kl", "wavelet", "gaussian", "lpips", "adversarial"}`` -> weight.
        lpips_model: a module from :func:`~diffusers_litevae.training.losses.load_lpips` (with an LPIPS weight).
        image_settings: ``reconstruction_loss``, ``charbonnier_eps``, ``wavelet_levels``, ``gaussian_sigma``, as in
            :func:`~diffusers_litevae.training.losses.image_losses` (and its defaults).
    """

    def __init__(self, weights: dict[str, float], lpips_model: nn.Module | None = None, **image_settings):
        super().__init__()
        self.weights = dict(weights)
        self.image_settings = image_settings
        self.lpips_model = lpips_model

    def forward(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        fake_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, components)``: ``images``/``reconstruction`` ``(B, 3, H, W)`` in ``[-1, 1]``, the posterior
        ``mean``/``logvar`` ``(B, C, h, w)``, and the discriminator's logits of the reconstruction (``None`` before
        the adversarial phase)."""
        components = image_losses(
            reconstruction, images, self.weights, lpips_model=self.lpips_model, **self.image_settings
        )
        if self.weights.get("kl", 0) > 0:
            components["kl"] = kl_to_standard_normal(mean.float(), logvar.float())
        if fake_logits is not None and self.weights.get("adversarial", 0) > 0:
            components["adversarial"] = generator_adversarial_loss(fake_logits.float())
        total = sum(self.weights[name] * value for name, value in components.items())
        components = {name: value.detach() for name, value in components.items()}
        components["total"] = total.detach()
        return total, components


class _Reconstruct(nn.Module):
    """``images -> (mean, logvar, reconstruction)`` through one forward, so distributed wrappers see every use."""

    def __init__(self, autoencoder: AutoencoderLiteBase):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.autoencoder.encode(images).latent_dist
        reconstruction = self.autoencoder.decode(posterior.sample(generator)).sample
        return posterior.mean, posterior.logvar, reconstruction


def autoencoder_step(
    accelerator,
    model: nn.Module,
    discriminator: nn.Module,
    loss_fn: AutoencoderLoss,
    micro_batches: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    discriminator_optimizer: torch.optim.Optimizer,
    lr_scheduler=None,
    ema=None,
    max_grad_norm: float | None = 1.0,
    adversarial: bool = False,
    noise_seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """One optimizer step of the autoencoder, then (``adversarial``) one of the discriminator on the same images;
    returns the mean loss components over the micro-batches (detached), ``discriminator`` when it trained, and the
    gradient norms.

    Args:
        accelerator: an ``accelerate.Accelerator`` with ``model``, ``discriminator`` and both optimizers prepared.
        model: a module mapping images to ``(mean, logvar, reconstruction)`` (the autoencoder, wrapped).
        discriminator, loss_fn: the :class:`~diffusers_litevae.models.UNetDiscriminator`, the :class:`AutoencoderLoss`.
        micro_batches: ``gradient_accumulation_steps`` image tensors ``(B, 3, R, R)`` in ``[-1, 1]``.
        optimizer, discriminator_optimizer: their optimizers.
        lr_scheduler, ema: the autoencoder's LR schedule and ``EMAModel``, or ``None``.
        max_grad_norm: clip each model's global gradient norm to this (``None``: no clipping).
        adversarial: the adversarial phase is on (the discriminator scores reconstructions and trains).
        noise_seed: seeds the posterior sampling noise (``noise_seed + micro-batch index``), so a resumed run draws
            the same noise whatever else drew from torch's global generator; ``None`` uses the global generator.
    """
    model.train()
    discriminator.train()
    reconstructions = []

    def autoencoder_loss(images):
        images = images.to(accelerator.device, non_blocking=True)
        index = len(reconstructions)
        generator = None if noise_seed is None else torch.Generator().manual_seed(noise_seed + index)
        mean, logvar, reconstruction = model(images, generator)
        fake_logits = discriminator(reconstruction) if adversarial else None
        reconstructions.append((images, reconstruction.detach()))
        return loss_fn(images, reconstruction, mean, logvar, fake_logits)

    def discriminator_loss(pair):
        loss = discriminator_hinge_loss(discriminator(pair[0]), discriminator(pair[1])).float()
        return loss, {"discriminator": loss.detach()}

    gradients = dict(lr_scheduler=lr_scheduler, ema=ema, max_grad_norm=max_grad_norm)
    totals = accumulate_step(accelerator, model, micro_batches, autoencoder_loss, optimizer, **gradients)
    if adversarial:
        # The autoencoder's backward also left gradients in the discriminator: its own step starts from zero.
        discriminator_optimizer.zero_grad(set_to_none=True)
        totals.update(
            accumulate_step(
                accelerator,
                discriminator,
                reconstructions,
                discriminator_loss,
                discriminator_optimizer,
                max_grad_norm=max_grad_norm,
                prefix="discriminator_",
            )
        )
    discriminator_optimizer.zero_grad(set_to_none=True)
    return totals


class _TrainRun(TrainingRun):
    """One invocation of :func:`train_autoencoder` (every process builds one; output on the main process)."""

    tracker_name = "litevae-train"

    def __init__(self, config: TrainConfig):
        from accelerate.utils import set_seed

        self.setup(config, validate_train_config(config))
        accelerator = self.accelerator
        set_seed(config.seed)
        self.autoencoder = cast_module(build_autoencoder(config), dtype=torch.float32)
        self.discriminator = UNetDiscriminator(block_out_channels=tuple(config.discriminator_block_out_channels))
        if config.gradient_checkpointing:
            self.autoencoder.enable_gradient_checkpointing()
        self.loss_fn = AutoencoderLoss(
            config.loss_weights(), lpips_model=self.lpips_model, **config.image_loss_settings()
        )
        betas = (config.adam_beta1, config.adam_beta2)
        optimizer = torch.optim.Adam(
            self.autoencoder.parameters(),
            lr=config.learning_rate,
            betas=betas,
            eps=config.adam_epsilon,
            weight_decay=config.adam_weight_decay,
        )
        discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.discriminator_learning_rate, betas=betas, eps=config.adam_epsilon
        )
        self.model, self.discriminator, self.optimizer, self.discriminator_optimizer = accelerator.prepare(
            _Reconstruct(self.autoencoder), self.discriminator, optimizer, discriminator_optimizer
        )
        self.schedule_and_ema(optimizer, self.autoencoder.parameters())
        # One graph per crop size (static shapes); validation runs eagerly.
        if resolve_compile(config.compile, accelerator.device):
            for module in (self.model, self.discriminator):
                accelerator.unwrap_model(module).compile(mode=config.compile_mode, dynamic=False)
        self.start(self._check_resume)

    def _check_resume(self, saved: dict) -> None:
        if comparable_config(saved.get("model_config", {})) != comparable_config(self.autoencoder.config):
            raise TrainingInputError(
                f"checkpoint {str(self.resume_path)!r} was made for another model; resume with the same model "
                "settings (--encoder, --decoder, ...) or use a new --output_dir."
            )

    def adversarial_at(self, step: int) -> bool:
        """Whether the optimizer step that follows ``step`` completed steps runs the adversarial phase."""
        return self.config.adversarial_weight > 0 and step >= self.config.discriminator_start_step

    @property
    def unwrapped(self) -> nn.Module:
        return self.autoencoder

    def plot(self) -> None:
        plot_curve(
            self.state["curve"],
            self.state["loss_history"],
            self.output_dir / "curve.png",
            title=f"LiteVAE-{self.config.encoder.upper()} from scratch ({self.config.decoder} decoder)",
            psnr_key="psnr",
            psnr_label="encode -> decode",
        )

    def checkpoint_record(self) -> dict:
        return {"model_config": jsonable(dict(self.autoencoder.config))}

    def optimizer_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        config, accelerator = self.config, self.accelerator
        if self.adversarial_at(step) and step > 0 and not self.adversarial_at(step - 1):
            logger.info("step %d: adversarial phase on (weight %g)", step, config.adversarial_weight)
        return autoencoder_step(
            accelerator,
            self.model,
            self.discriminator,
            self.loss_fn,
            [batch["pixel_values"] for batch in micro_batches],
            self.optimizer,
            self.discriminator_optimizer,
            self.lr_scheduler,
            self.ema,
            config.max_grad_norm,
            adversarial=self.adversarial_at(step),
            # Per step and process: a resumed run draws exactly the noise an uninterrupted one would have.
            noise_seed=int(np.random.SeedSequence([config.seed, step, accelerator.process_index]).generate_state(1)[0]),
        )

    def log_line(self, means: dict[str, float]) -> tuple[dict, str]:
        text = f"loss {means['total']:.4f}" + (
            f", discriminator {means['discriminator']:.4f}" if "discriminator" in means else ""
        )
        return {"loss": f"{means['total']:.4f}"}, text

    def measure_latent_scaling(self, autoencoder: AutoencoderLiteBase) -> tuple[float, float | None]:
        """``scaling_factor`` (and ``shift_factor``) from posterior samples of ``scaling_images`` training crops, as
        Stable Diffusion set its VAE's (see :func:`~diffusers_litevae.training.losses.latent_scaling`)."""
        config = self.config
        dataset = RandomCropDataset(self.data.source, flip=False)
        resolution = self.schedule.resolution_at(max(0, config.max_train_steps - 1))
        count = min(config.scaling_images, self.data.num_train_images)
        generator = torch.Generator().manual_seed(config.seed)
        parameter = next(autoencoder.parameters())
        latents = []
        autoencoder.eval()
        with torch.no_grad():
            for index in range(count):
                sample = dataset[(index, resolution, config.seed + index)]
                images = sample["pixel_values"][None].to(parameter.device, parameter.dtype)
                posterior = autoencoder.encode(images).latent_dist
                noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
                latents.append((posterior.mean + posterior.std * noise).float().cpu())
        return latent_scaling(torch.cat(latents), with_shift=config.set_shift_factor)

    def write_output(self) -> dict:
        """Write the model folder (its latent scaling measured), ``discriminator/``, ``training.json`` and
        ``curve.png``; return the summary."""
        with ema_weights(self.autoencoder, self.ema):
            weights = {k: v.detach().float().cpu().clone() for k, v in self.autoencoder.state_dict().items()}
        output = cast_module(build_autoencoder(self.config), dtype=torch.float32)
        output.load_state_dict(weights)
        scaling, shift = self.measure_latent_scaling(output)
        output.register_to_config(scaling_factor=scaling, shift_factor=shift)
        save_pretrained(output, self.output_dir, safe_serialization=True)
        save_pretrained(self.accelerator.unwrap_model(self.discriminator), self.output_dir / "discriminator")
        result = self.summary(scaling, shift)
        (self.output_dir / "training.json").write_text(json.dumps(result, indent=1))
        self.plot()
        logger.info(
            "wrote %s (%d steps, %.1f images/s, scaling_factor %.5f)",
            self.output_dir,
            self.state["step"],
            result["train_images_per_s"],
            scaling,
        )
        return result

    def summary(self, scaling: float | None = None, shift: float | None = None) -> dict:
        return {
            "trained_from_scratch": True,
            "model": {
                "encoder_preset": self.config.encoder.upper(),
                "decoder": self.config.decoder,
                "latent_channels": self.config.latent_channels,
                "encoder_parameters": sum(p.numel() for p in self.autoencoder.encoder.parameters()),
                "parameters": sum(p.numel() for p in self.autoencoder.parameters()),
                "scaling_factor": scaling,
                "shift_factor": shift,
            },
            **self.run_record(("psnr", "ssim", "eval_images")),
        }


def train_autoencoder(config: TrainConfig) -> dict:
    """Train an ``AutoencoderLite`` from scratch and write ``config.output_dir`` (under ``accelerate launch`` every
    process calls it). Every input is checked before training starts: problems raise a one-line
    :class:`~diffusers_litevae.training.errors.TrainingInputError`.

    Returns the content written to ``training.json`` (complete on the main process). The main process writes the
    model (``from_pretrained`` loads it; ``scaling_factor`` measured on training images), ``discriminator/``,
    ``training.json``, ``curve.png``, ``validation/step_<step>.png`` grids and ``checkpoints/checkpoint-<step>``.
    """
    run = _TrainRun(config)
    run.train()
    return run.finish()
