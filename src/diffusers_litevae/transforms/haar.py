"""Orthonormal 2D Haar wavelet transform, multi-level, forward and inverse.

LiteVAE's encoder front end. Written with strided slicing and ``pixel_shuffle`` instead of convolutions:
it is exact (the Haar filters are +-1/2 sums of a 2x2 block), differentiable, keeps the input dtype and
memory format, and costs a handful of element-wise kernels on any device.

Conventions (match ``pywt.dwt2(x, "haar")``, tested against PyWavelets):

- For each 2x2 block ``[[a, b], [c, d]]`` of every channel:
  ``LL = (a + b + c + d) / 2``, ``LH = (a + b - c - d) / 2``, ``HL = (a - b + c - d) / 2``,
  ``HH = (a - b - c + d) / 2``. ``LH`` is PyWavelets' ``cH`` (detail across rows), ``HL`` its ``cV``,
  ``HH`` its ``cD``.
- One level maps ``(B, C, H, W)`` to a band-major tensor ``(B, 4*C, H/2, W/2)``: channels
  ``[LL(C), LH(C), HL(C), HH(C)]``.
- The transform is orthonormal, so ``LL`` grows by 2x per level for smooth inputs; LiteVAE rescales
  level ``l`` by ``1 / 2**l`` (done in the encoder, not here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["haar_dwt", "haar_idwt", "haar_wavedec", "haar_waverec", "split_bands"]


def _check_even(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} expects a 4D tensor (batch, channels, height, width), got shape {tuple(x.shape)}.")
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(
            f"{what} needs even height and width, got {tuple(x.shape[-2:])}; crop or pad the image to a multiple "
            "of 2**levels first."
        )


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the 2D Haar transform.

    Args:
        x: ``(B, C, H, W)`` tensor, ``H`` and ``W`` even.

    Returns:
        ``(B, 4*C, H/2, W/2)`` tensor with channels ``[LL, LH, HL, HH]``, each block ``C`` channels wide.
    """
    _check_even(x, "haar_dwt")
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    # Butterfly: 8 additions instead of 12, then one scale.
    top, bottom = a + b, c + d
    top_diff, bottom_diff = a - b, c - d
    bands = torch.cat([top + bottom, top - bottom, top_diff + bottom_diff, top_diff - bottom_diff], dim=1)
    return bands * 0.5


def haar_idwt(bands: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`.

    Args:
        bands: ``(B, 4*C, h, w)`` tensor with channels ``[LL, LH, HL, HH]``.

    Returns:
        ``(B, C, 2h, 2w)`` reconstruction.
    """
    if bands.ndim != 4 or bands.shape[1] % 4:
        raise ValueError(
            f"haar_idwt expects (batch, 4*C, h, w) sub-bands [LL, LH, HL, HH], got shape {tuple(bands.shape)}."
        )
    ll, lh, hl, hh = bands.chunk(4, dim=1)
    s, t = ll + lh, ll - lh  # (a + b), (c + d) up to scale
    u, v = hl + hh, hl - hh  # (a - b), (c - d) up to scale
    a, b, c, d = (s + u) * 0.5, (s - u) * 0.5, (t + v) * 0.5, (t - v) * 0.5
    batch, channels, height, width = a.shape
    # pixel_shuffle reads channel c*4 + (2*i + j) into position (i, j) of each 2x2 output block.
    stacked = torch.stack([a, b, c, d], dim=2).reshape(batch, channels * 4, height, width)
    return F.pixel_shuffle(stacked, 2)


def haar_wavedec(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """Multi-level 2D Haar decomposition, finest level first.

    Level 1 transforms ``x``; level ``l + 1`` transforms the ``LL`` band of level ``l``.

    Args:
        x: ``(B, C, H, W)`` tensor, ``H`` and ``W`` multiples of ``2**levels``.
        levels: number of levels.

    Returns:
        ``levels`` tensors; entry ``l - 1`` is ``(B, 4*C, H/2**l, W/2**l)`` with channels ``[LL, LH, HL, HH]``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}.")
    if x.ndim == 4 and (x.shape[-2] % 2**levels or x.shape[-1] % 2**levels):
        raise ValueError(
            f"a {levels}-level Haar transform needs height and width divisible by {2**levels}, got "
            f"{tuple(x.shape[-2:])}."
        )
    coeffs = []
    low = x
    channels = x.shape[1] if x.ndim == 4 else 0
    for _ in range(levels):
        bands = haar_dwt(low)
        coeffs.append(bands)
        low = bands[:, :channels]
    return coeffs


def haar_waverec(coeffs: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`haar_wavedec`.

    Uses the deepest level's four bands and the detail bands (``LH, HL, HH``) of every finer level; the
    ``LL`` bands of finer levels are redundant and ignored.
    """
    if not coeffs:
        raise ValueError("haar_waverec needs at least one level of coefficients.")
    low = haar_idwt(coeffs[-1])
    for bands in reversed(coeffs[:-1]):
        channels = bands.shape[1] // 4
        low = haar_idwt(torch.cat([low, bands[:, channels:]], dim=1))
    return low


def split_bands(bands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a band-major ``(B, 4*C, h, w)`` tensor into its ``(LL, LH, HL, HH)`` parts."""
    return tuple(bands.chunk(4, dim=1))  # type: ignore[return-value]
