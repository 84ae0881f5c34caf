"""Training losses: latent matching, reconstruction through the frozen teacher decoder, wavelet, Gaussian, LPIPS,
and for a whole autoencoder KL and the hinge GAN.

Every component has its own weight (0 switches it off) and is reported separately, unweighted. Latent terms are
measured in diffusion-model units (``(z - shift_factor) * scaling_factor``); ``docs/distillation.md`` explains
what each term is for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.tiny_autoencoder import signed_to_unit
from ..settings import check_choice
from ..transforms.haar import haar_wavedec
from .errors import TrainingInputError
from .settings import RECONSTRUCTION_LOSSES, check_loss_weights

__all__ = [
    "DistillationLoss",
    "LossWeights",
    "charbonnier",
    "discriminator_hinge_loss",
    "gaussian_blur",
    "gaussian_filtered_loss",
    "generator_adversarial_loss",
    "image_losses",
    "kl_to_standard_normal",
    "latent_scaling",
    "latent_statistics_loss",
    "low_frequency_loss",
    "load_lpips",
    "wavelet_loss",
]


@dataclass
class LossWeights:
    """Weights of the distillation loss components (0 disables one), named like the ``--<name>_weight`` flags.

    Attributes:
        latent: posterior-mean MSE (normalized latent units).
        std: posterior standard-deviation MSE (normalized latent units).
        reconstruction: L1 or Charbonnier between the reconstruction and the image (``[-1, 1]`` pixels).
        wavelet: Charbonnier on the high-frequency Haar sub-bands (LiteVAE paper).
        gaussian: L1 between the high-pass residuals ``x - blur(x)`` (LiteVAE paper).
        lpips: LPIPS (torchmetrics' network: needs torchvision and the backbone weights).
        latent_stats: MSE of each image's per-channel latent mean and standard deviation.
        low_frequency: L1 between the average-pooled reconstruction and image.
    """

    latent: float = 1.0
    std: float = 1.0
    reconstruction: float = 1.0
    wavelet: float = 0.1
    gaussian: float = 0.1
    lpips: float = 0.0
    latent_stats: float = 0.0
    low_frequency: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> LossWeights:
        """The weights that ``settings`` holds as ``<component>_weight`` attributes (``DistillConfig``, the distillation
        campaign's settings); a component without one keeps its default."""
        names = [field.name for field in fields(cls) if hasattr(settings, f"{field.name}_weight")]
        return cls(**{name: getattr(settings, f"{name}_weight") for name in names})

    def needs_decode(self) -> bool:
        """Whether any image-space term is on (otherwise the teacher decoder is never run)."""
        return any(w > 0 for w in (self.reconstruction, self.wavelet, self.gaussian, self.lpips, self.low_frequency))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean Charbonnier distance ``sqrt((x - y)^2 + eps^2) - eps`` (a smooth L1; 0 when ``x == y``)."""
    return (torch.sqrt((x - y).square() + eps * eps) - eps).mean()


def wavelet_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, levels: int = 3, eps: float = 1e-3
) -> torch.Tensor:
    """Mean over ``levels`` Haar levels of the Charbonnier distance (``eps``) between the high-frequency sub-bands
    (LH, HL, HH) of ``(B, C, H, W)`` tensors, ``H`` and ``W`` multiples of ``2**levels``. The LL band is left out:
    low frequencies are the reconstruction loss's job; this term sharpens detail."""
    channels = reconstruction.shape[1]
    bands = zip(haar_wavedec(reconstruction, levels), haar_wavedec(target, levels))
    return torch.stack([charbonnier(rec[:, channels:], tgt[:, channels:], eps) for rec, tgt in bands]).mean()


def gaussian_blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (same size as ``x``; ``(B, C, H, W)``)."""
    radius = max(1, math.ceil(3 * sigma))
    positions = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), vertical, groups=channels)


def gaussian_filtered_loss(reconstruction: torch.Tensor, target: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """L1 between the high-pass residuals ``x - blur(x)`` of reconstruction and target (LiteVAE's Gaussian loss)."""
    return F.l1_loss(reconstruction - gaussian_blur(reconstruction, sigma), target - gaussian_blur(target, sigma))


def latent_statistics_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE of the per-image, per-channel spatial means of ``(B, C, h, w)`` latents plus that of their standard
    deviations: whole-image offsets (colour casts, contrast), which the plain latent MSE weighs like any error."""
    student, teacher = student.float().flatten(2), teacher.float().flatten(2)
    mean_error = F.mse_loss(student.mean(-1), teacher.mean(-1))
    return mean_error + F.mse_loss(student.std(-1, correction=0), teacher.std(-1, correction=0))


def low_frequency_loss(reconstruction: torch.Tensor, target: torch.Tensor, pool: int = 16) -> torch.Tensor:
    """L1 between ``pool`` x ``pool`` average-pooled reconstruction and target: errors of colour and tone over
    regions, which a per-pixel loss on detailed crops weighs little (a sky's colour cast, too much contrast)."""
    pool = max(1, min(pool, *reconstruction.shape[-2:]))
    return F.l1_loss(F.avg_pool2d(reconstruction, pool), F.avg_pool2d(target, pool))


def image_losses(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    weights: dict[str, float],
    reconstruction_loss: str = "l1",
    charbonnier_eps: float = 1e-3,
    wavelet_levels: int = 3,
    gaussian_sigma: float = 1.0,
    lpips_model: nn.Module | None = None,
    low_frequency_pool: int = 16,
) -> dict[str, torch.Tensor]:
    """``{name: unweighted scalar}`` of the image-space terms whose weight in ``weights`` is > 0 (distillation and
    training share them).

    Args:
        reconstruction, target: ``(B, 3, H, W)`` in ``[-1, 1]``.
        weights: ``reconstruction``, ``wavelet``, ``gaussian``, ``low_frequency`` and ``lpips`` weights (missing
            keys count as 0).
        reconstruction_loss: ``"l1"`` or ``"charbonnier"``.
        charbonnier_eps: epsilon of the Charbonnier terms.
        wavelet_levels: Haar levels of the wavelet loss.
        gaussian_sigma: blur sigma of the Gaussian-filtered loss (pixels).
        lpips_model: a module from :func:`load_lpips`; required when ``weights["lpips"] > 0``.
        low_frequency_pool: pooling window of the ``low_frequency`` term (pixels).
    """
    reconstruction, target = reconstruction.float(), target.float()
    terms: dict[str, torch.Tensor] = {}
    if weights.get("reconstruction", 0) > 0:
        if reconstruction_loss == "l1":
            terms["reconstruction"] = F.l1_loss(reconstruction, target)
        else:
            terms["reconstruction"] = charbonnier(reconstruction, target, charbonnier_eps)
    if weights.get("wavelet", 0) > 0:
        terms["wavelet"] = wavelet_loss(reconstruction, target, wavelet_levels, charbonnier_eps)
    if weights.get("gaussian", 0) > 0:
        terms["gaussian"] = gaussian_filtered_loss(reconstruction, target, gaussian_sigma)
    if weights.get("low_frequency", 0) > 0:
        terms["low_frequency"] = low_frequency_loss(reconstruction, target, low_frequency_pool)
    if weights.get("lpips", 0) > 0:
        if lpips_model is None:
            raise ValueError("an LPIPS weight > 0 needs an LPIPS model; load it with load_lpips().")
        # The LPIPS module takes [0, 1] images; reconstructions and targets here are in [-1, 1].
        terms["lpips"] = lpips_model(signed_to_unit(reconstruction), signed_to_unit(target)).mean()
    return terms


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of the posterior ``N(mean, exp(logvar))`` from ``N(0, I)``, averaged over latent elements.

    Per element ``0.5 * (mean^2 + exp(logvar) - 1 - logvar)``; the log-variance is clamped to ``[-30, 20]`` like
    diffusers' ``DiagonalGaussianDistribution``. The mean (not diffusers' per-image sum) keeps the weight
    independent of the latent size, so one ``--kl_weight`` serves 128 and 256 px crops alike.
    """
    logvar = logvar.clamp(-30.0, 20.0)
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of a (per-pixel) discriminator: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The autoencoder's side of the hinge GAN: ``-mean(D(reconstruction))`` over every pixel's logit."""
    return -fake_logits.mean()


def latent_scaling(latents: torch.Tensor, with_shift: bool = False) -> tuple[float, float | None]:
    """``(scaling_factor, shift_factor)`` that give ``latents`` (``(N, C, h, w)`` posterior samples of training
    images) unit variance, and with ``with_shift`` zero mean (else the shift is ``None``, SD 1.x/2.x/SDXL style).

    Stable Diffusion set its VAE's ``scaling_factor`` (0.18215) as ``1 / std`` of the latents of a batch of
    training images (LDM paper, section 4.3.2); SD3 and FLUX.1 also subtract a ``shift_factor``, the latents' mean.
    """
    latents = latents.detach().float()
    if latents.numel() < 2:
        raise ValueError("latent_scaling needs at least two latent values.")
    std = float(latents.std())  # about the mean, as Stable Diffusion computed it
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"the latents have no spread (std {std}); cannot set a scaling factor.")
    return 1.0 / std, float(latents.mean()) if with_shift else None


def load_lpips(net: str = "vgg", device: torch.device | str = "cpu") -> nn.Module:
    """The package's one LPIPS (:func:`diffusers_litevae.evaluation.metrics.load_lpips`), as a training loss.

    Raises:
        TrainingInputError: LPIPS cannot be built here (one line, with the fix). It is never skipped silently.
    """
    from ..evaluation.metrics import LPIPSUnavailableError
    from ..evaluation.metrics import load_lpips as load_lpips_metric

    try:
        return load_lpips_metric(net, device)
    except LPIPSUnavailableError as error:
        raise TrainingInputError(
            f"LPIPS was requested (--lpips_weight > 0) but {error} Install torchvision and run once with network "
            "access, or pass --lpips_weight 0."
        ) from error


class DistillationLoss(nn.Module):
    """Weighted sum of the distillation losses, with every component reported.

    Args:
        weights: :class:`LossWeights`.
        reconstruction_loss, charbonnier_eps, wavelet_levels, gaussian_sigma, lpips_model, low_frequency_pool: as
            in :func:`image_losses` (``lpips_model`` required when ``weights.lpips > 0``).
        latent_scale: the teacher's ``scaling_factor`` (posterior standard deviations of raw latents are multiplied
            by it), or a function doing that conversion (``LatentNormalization.scale_std``, for per-channel
            ``latents_std``), so the ``std`` term is in the same units as the (normalized) means.
    """

    def __init__(
        self,
        weights: LossWeights | None = None,
        reconstruction_loss: str = "l1",
        charbonnier_eps: float = 1e-3,
        wavelet_levels: int = 3,
        gaussian_sigma: float = 1.0,
        lpips_model: nn.Module | None = None,
        latent_scale: float = 1.0,
        low_frequency_pool: int = 16,
    ):
        super().__init__()
        self.weights = weights or LossWeights()
        check_choice("reconstruction_loss", reconstruction_loss, RECONSTRUCTION_LOSSES, TrainingInputError)
        check_loss_weights(self.weights.as_dict())
        if self.weights.lpips > 0 and lpips_model is None:
            raise TrainingInputError("--lpips_weight > 0 needs an LPIPS model; load it with load_lpips().")
        self.image_settings = dict(
            reconstruction_loss=reconstruction_loss,
            charbonnier_eps=charbonnier_eps,
            wavelet_levels=wavelet_levels,
            gaussian_sigma=gaussian_sigma,
            low_frequency_pool=low_frequency_pool,
        )
        self.lpips_model = lpips_model
        self.latent_scale = latent_scale if callable(latent_scale) else float(latent_scale)

    def forward(
        self,
        student_mean: torch.Tensor,
        student_logvar: torch.Tensor,
        teacher_mean: torch.Tensor,
        teacher_logvar: torch.Tensor | None,
        reconstruction: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, components)``: the scalar loss to backpropagate and the detached, unweighted components
        (``latent`` and ``total`` always, the others when their weight is > 0).

        Args:
            student_mean, teacher_mean: ``(B, C, h, w)`` posterior means, normalized latent units.
            student_logvar, teacher_logvar: ``(B, C, h, w)`` log-variances of the *raw* latents (the teacher's
                ``None`` when it is deterministic).
            reconstruction: ``(B, 3, H, W)`` student latents decoded by the teacher, ``[-1, 1]``; needed when any
                image-space weight is > 0.
            target: ``(B, 3, H, W)`` input images, ``[-1, 1]``.
        """
        weights = self.weights
        student_mean, teacher_mean = student_mean.float(), teacher_mean.float()
        components: dict[str, torch.Tensor] = {"latent": F.mse_loss(student_mean, teacher_mean)}
        total = weights.latent * components["latent"]
        if weights.latent_stats > 0:
            components["latent_stats"] = latent_statistics_loss(student_mean, teacher_mean)
            total = total + weights.latent_stats * components["latent_stats"]
        if weights.std > 0:
            # Same clamp as diffusers' DiagonalGaussianDistribution; std scaled like the latents.
            scale = self.latent_scale if callable(self.latent_scale) else (lambda std: std * self.latent_scale)
            student_std = scale(torch.exp(0.5 * student_logvar.float().clamp(-30.0, 20.0)))
            if teacher_logvar is None:
                teacher_std = torch.zeros_like(student_std)
            else:
                teacher_std = scale(torch.exp(0.5 * teacher_logvar.float().clamp(-30.0, 20.0)))
            components["std"] = F.mse_loss(student_std, teacher_std)
            total = total + weights.std * components["std"]
        if weights.needs_decode():
            if reconstruction is None or target is None:
                raise ValueError("image-space loss weights are > 0 but no reconstruction/target was given.")
            image_terms = image_losses(
                reconstruction, target, weights.as_dict(), lpips_model=self.lpips_model, **self.image_settings
            )
            for name, value in image_terms.items():
                components[name] = value
                total = total + getattr(weights, name) * value
        components = {name: value.detach() for name, value in components.items()}
        components["total"] = total.detach()
        return total, components
