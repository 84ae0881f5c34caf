"""Reconstruction metrics, the package's one definition of each (evaluation, training validation and the
distillation LPIPS loss): PSNR and SSIM always, LPIPS and rFID only where torchmetrics can load their pretrained
networks (evaluation then reports ``null``, never a made-up number). All take ``(B, 3, H, W)`` images in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

SSIM_WINDOW = 11

__all__ = [
    "LPIPSUnavailableError",
    "load_fid_factory",
    "load_lpips",
    "lpips_per_image",
    "psnr_per_image",
    "ssim_per_image",
]


class LPIPSUnavailableError(RuntimeError):
    """LPIPS cannot be built here (no torchvision, or its backbone weights cannot be downloaded); one line."""


def psnr_per_image(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image, ``10 log10(1 / MSE)`` over all pixels and channels; ``(B,)`` float32."""
    _check_pair(reconstructions, originals)
    return peak_signal_noise_ratio(
        reconstructions.float(), originals.float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def ssim_per_image(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """SSIM of each image (``H, W >= 11``): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03; ``(B,)`` float32.

    torchmetrics' SSIM map is averaged over the *valid* region (pixels whose whole window lies inside the image), as
    in Wang et al.'s reference code and scikit-image; torchmetrics' own mean also averages a reflect-padded border,
    which reads high on small images.
    """
    _check_pair(reconstructions, originals)
    if min(originals.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(originals.shape[-2:])}."
        )
    _, ssim_map = structural_similarity_index_measure(
        reconstructions.float(),
        originals.float(),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=SSIM_WINDOW,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    border = SSIM_WINDOW // 2
    return ssim_map[..., border:-border, border:-border].mean(dim=(1, 2, 3))


class LPIPSDistance(nn.Module):
    """LPIPS distance of image pairs (Zhang et al., CVPR 2018), frozen and always in eval mode: ``(B,)`` distances
    of two batches in ``[0, 1]``, differentiable in its inputs (the evaluation metric and the distillation loss)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSDistance:  # the network's dropout/norm stay in eval mode
        return super().train(False)

    def forward(self, reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        _check_pair(reconstructions, originals)
        distances = self.network(reconstructions.float(), originals.float(), normalize=True)
        return distances.reshape(reconstructions.shape[0])


def load_lpips(net_type: str = "alex", device: str | torch.device = "cpu") -> LPIPSDistance:
    """Build LPIPS from torchmetrics' network (``net_type``: ``"alex"``, ``"vgg"`` or ``"squeeze"``).

    Raises:
        LPIPSUnavailableError: torchvision is missing or the backbone weights cannot be downloaded (one line).
    """
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        network = LearnedPerceptualImagePatchSimilarity(net_type=net_type, normalize=True).net
    except Exception as error:  # missing torchvision, no network for the backbone weights, ...
        raise LPIPSUnavailableError(
            f"torchmetrics' LPIPS ({net_type} backbone) could not be loaded ({type(error).__name__}: "
            f"{_first_line(error)}). It needs torchvision and the pretrained {net_type} weights (downloaded on "
            "first use)."
        ) from error
    return LPIPSDistance(network).to(device)


def lpips_per_image(metric: nn.Module, reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """LPIPS distance of each image pair with a module from :func:`load_lpips`; ``(B,)`` float32 on the CPU."""
    _check_pair(reconstructions, originals)
    with torch.no_grad():
        return metric(reconstructions.clamp(0, 1), originals.clamp(0, 1)).detach().float().cpu()


def load_fid_factory(device: str | torch.device = "cpu") -> tuple[Callable | None, str | None]:
    """``(factory, None)`` where ``factory()`` builds a fresh torchmetrics ``FrechetInceptionDistance`` (2048-d
    Inception features, images in ``[0, 1]``) on ``device``, or ``(None, message)`` naming what is missing."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        def factory():
            return FrechetInceptionDistance(feature=2048, normalize=True).to(device)

        factory()  # builds the Inception network now, so a missing dependency is reported before the run
    except Exception as error:  # missing torch-fidelity, no network for the Inception weights, ...
        return None, (
            f"rFID not computed: torchmetrics' FrechetInceptionDistance could not be loaded "
            f"({type(error).__name__}: {_first_line(error)}). It needs torch-fidelity and its Inception-v3 "
            "weights (downloaded on first use)."
        )
    return factory, None


def _check_pair(reconstructions: torch.Tensor, originals: torch.Tensor) -> None:
    if reconstructions.shape != originals.shape or reconstructions.ndim != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of the same shape, got {tuple(reconstructions.shape)} and "
            f"{tuple(originals.shape)}."
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0].rstrip(".") if text else ""
