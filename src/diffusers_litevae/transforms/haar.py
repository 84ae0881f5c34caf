"""Orthonormal 2D Haar wavelet transform, multi-level, forward and inverse.

LiteVAE's encoder front end. The forward transform is one strided convolution per level, straight from the
input: level ``l``'s four bands are sums of ``2**l x 2**l`` blocks of pixels with weights ``+-1/2**l``, so a
``2**l``-strided convolution with those (composite Haar) filters computes them in one kernel, with no chain
through the coarser ``LL`` bands. It is exact up to float rounding (the weights are powers of two), differentiable,
keeps the input dtype (also under autocast) and memory format.

Conventions (match ``pywt.dwt2(x, "haar")``, tested against PyWavelets):

- For each 2x2 block ``[[a, b], [c, d]]`` of every channel:
  ``LL = (a + b + c + d) / 2``, ``LH = (a + b - c - d) / 2``, ``HL = (a - b + c - d) / 2``,
  ``HH = (a - b - c + d) / 2``. ``LH`` is PyWavelets' ``cH`` (detail across rows), ``HL`` its ``cV``,
  ``HH`` its ``cD``.
- One level maps ``(B, C, H, W)`` to a band-major tensor ``(B, 4*C, H/2, W/2)``: channels
  ``[LL(C), LH(C), HL(C), HH(C)]``.
- The transform is orthonormal, so ``LL`` grows by 2x per level for smooth inputs; LiteVAE rescales
  level ``l`` by ``1 / 2**l``, which :func:`haar_filters` can fold into the filters (``level_scale=0.5``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

__all__ = ["haar_dwt", "haar_filters", "haar_idwt", "haar_wavedec", "haar_waverec"]

# One level's 2x2 analysis filters, rows of [a, b, c, d] for the block [[a, b], [c, d]]: LL, LH, HL, HH (x 1/2).
_HAAR_2X2 = ((1.0, 1.0, 1.0, 1.0), (1.0, 1.0, -1.0, -1.0), (1.0, -1.0, 1.0, -1.0), (1.0, -1.0, -1.0, 1.0))
# Devices whose autocast could lower the transform's precision (autocast rejects devices it does not know).
_AUTOCAST_DEVICES = ("cpu", "cuda")


def haar_filters(
    levels: int,
    channels: int,
    level_scale: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """The convolution weights of a ``levels``-level Haar decomposition of ``channels``-channel images.

    Entry ``l - 1`` maps the input straight to level ``l``'s bands: ``F.conv2d(x, weight, stride=2**l)`` gives
    ``(B, 4*C, H/2**l, W/2**l)`` with channels ``[LL, LH, HL, HH]``, each ``C`` wide (a dense weight that is zero
    between different channels, so the output comes out band-major).

    Args:
        levels: number of levels.
        channels: image channels ``C``.
        level_scale: level ``l``'s filters are multiplied by ``level_scale**l`` (LiteVAE's ``1/2**l`` is 0.5).
        dtype: weight dtype (default: the default float dtype).
        device: weight device.

    Returns:
        ``levels`` tensors; entry ``l - 1`` is ``(4*C, C, 2**l, 2**l)``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}.")
    base = torch.tensor(_HAAR_2X2, dtype=torch.float64).view(4, 2, 2) * 0.5
    low = torch.ones(1, 1, dtype=torch.float64)  # the level-(l-1) LL filter, as a 2**(l-1) square
    filters = []
    for level in range(1, levels + 1):
        # Level l applies the 2x2 filters to 2x2 blocks of level-(l-1) LL values: a Kronecker product.
        bands = torch.stack([torch.kron(band, low) for band in base]) * level_scale**level
        # Output channel band * C + c reads input channel c only: an identity over channels per band.
        weight = torch.einsum("bhw,oi->boihw", bands, torch.eye(channels, dtype=torch.float64))
        weight = weight.reshape(4 * channels, channels, 2**level, 2**level)
        filters.append(weight.to(dtype=dtype or torch.get_default_dtype(), device=device))
        low = torch.kron(base[0], low)
    return filters


def _analysis(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    # Autocast would run the convolution in bf16/fp16; the transform keeps the input's precision instead.
    no_autocast = (
        torch.autocast(x.device.type, enabled=False) if x.device.type in _AUTOCAST_DEVICES else contextlib.nullcontext()
    )
    with no_autocast:
        return F.conv2d(x, weight.to(dtype=x.dtype), stride=stride)


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the 2D Haar transform.

    Args:
        x: ``(B, C, H, W)`` tensor, ``H`` and ``W`` even.

    Returns:
        ``(B, 4*C, H/2, W/2)`` tensor with channels ``[LL, LH, HL, HH]``, each block ``C`` channels wide.
    """
    if x.ndim != 4:
        raise ValueError(f"haar_dwt expects a 4D tensor (batch, channels, height, width), got shape {tuple(x.shape)}.")
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(
            f"haar_dwt needs even height and width, got {tuple(x.shape[-2:])}; crop or pad the image to a multiple "
            "of 2**levels first."
        )
    (weight,) = haar_filters(1, x.shape[1], dtype=x.dtype, device=x.device)
    return _analysis(x, weight, 2)


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


def haar_wavedec(x: torch.Tensor, levels: int = 3, filters: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Multi-level 2D Haar decomposition, finest level first.

    Level 1 transforms ``x``; level ``l + 1`` transforms the ``LL`` band of level ``l``. Each level is one strided
    convolution of ``x`` itself (see :func:`haar_filters`), so the levels do not wait on each other.

    Args:
        x: ``(B, C, H, W)`` tensor, ``H`` and ``W`` multiples of ``2**levels``.
        levels: number of levels.
        filters: the weights from :func:`haar_filters` (``levels`` entries), e.g. built once and kept as a
            buffer, optionally with the per-level scale folded in; built on the fly when ``None``.

    Returns:
        ``levels`` tensors; entry ``l - 1`` is ``(B, 4*C, H/2**l, W/2**l)`` with channels ``[LL, LH, HL, HH]``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}.")
    if x.ndim != 4:
        raise ValueError(
            f"haar_wavedec expects a 4D tensor (batch, channels, height, width), got shape {tuple(x.shape)}."
        )
    if x.shape[-2] % 2**levels or x.shape[-1] % 2**levels:
        raise ValueError(
            f"a {levels}-level Haar transform needs height and width divisible by {2**levels}, got "
            f"{tuple(x.shape[-2:])}."
        )
    if filters is None:
        filters = haar_filters(levels, x.shape[1], dtype=x.dtype, device=x.device)
    elif len(filters) != levels:
        raise ValueError(f"haar_wavedec got {len(filters)} filters for {levels} levels; pass haar_filters(levels, C).")
    return [_analysis(x, weight, 2**level) for level, weight in enumerate(filters, start=1)]


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
