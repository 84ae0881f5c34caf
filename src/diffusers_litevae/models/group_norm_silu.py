"""Fused GroupNorm + SiLU for channels_last (NHWC) tensors, in Triton.

``silu(group_norm(x))`` is what every :class:`~diffusers_litevae.models.litevae_encoder.LiteVAEResBlock` runs twice.
On a GPU the encoder keeps its activations channels_last (for the convolutions), and PyTorch's CUDA GroupNorm,
written for NCHW, is slow on such tensors at the encoder's narrow widths (12-192 channels, groups of 1-6 channels).
The kernels read the tensor in its own layout, with tiles contiguous along channels:

1. statistics: per (image, spatial chunk), a per-channel mean and sum of squared deviations (M2), tiles combined
   with Chan's parallel formula (no ``E[x^2] - E[x]^2`` cancellation);
2. a tiny kernel combines the chunks per image into group mean / rstd, folded with the affine parameters into a
   per-channel ``scale``/``shift``;
3. ``y = x * scale_c + shift_c``, then ``y * sigmoid(y)``, in fp32, stored in ``x``'s dtype.

The op is registered with ``torch.library.triton_op`` so ``torch.compile`` keeps it inside a graph. It has no
backward: :func:`group_norm_silu` takes it only when no gradient is needed, and runs ``F.silu(F.group_norm(...))``
everywhere else (CPU, NCHW tensors, training, no Triton, torch < 2.6). Tests run the kernels on CPU tensors with
``TRITON_INTERPRET=1`` (set before Triton is imported) and ``force=True``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton: only the torch path exists
    triton = None
    tl = None

__all__ = [
    "TRITON_AVAILABLE",
    "fused_group_norm_silu",
    "fused_group_norm_silu_enabled",
    "fused_group_norm_silu_supported",
    "group_norm_silu",
    "group_norm_silu_triton",
    "use_fused_group_norm_silu",
]

# torch.library.triton_op / wrap_triton arrived in torch 2.6; older torch keeps the plain path.
TRITON_AVAILABLE = triton is not None and hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Elements per tile (rows x padded channels): large enough to hide load latency, small enough to stay in registers.
_TILE_ELEMENTS = 4096
# Widest channel count handled: one tile row spans all channels, so BLOCK_C must stay a reasonable register size.
_MAX_CHANNELS = 2048
# Tiles one statistics program reduces: fewer, longer programs keep the partial buffer (and its torch combine) small
# on large images; small images still get one program per tile so the GPU has enough of them.
_MAX_TILES_PER_STATS_PROGRAM = 8
_TARGET_STATS_PROGRAMS = 1024

_enabled = True


@contextlib.contextmanager
def fused_group_norm_silu(enabled: bool) -> Iterator[None]:
    """Turn the fused path of :func:`group_norm_silu` on or off inside a ``with`` block (e.g. to benchmark the
    encoder with and without it), restoring the previous setting on exit. ``torch.compile`` guards on the setting,
    so a compiled model recompiles once when it changes."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def fused_group_norm_silu_enabled() -> bool:
    """Whether :func:`group_norm_silu` may take the fused path (see :func:`fused_group_norm_silu`)."""
    return _enabled


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling()) if is_compiling is not None else False


def _layout_and_dtype_supported(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and x.dtype in _SUPPORTED_DTYPES
        and 0 < x.shape[1] <= _MAX_CHANNELS
        and x.numel() > 0
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def fused_group_norm_silu_supported(x: torch.Tensor) -> bool:
    """Whether the fused kernels can run on ``x``: a CUDA ``(N, C, H, W)`` channels_last fp16/bf16/fp32 tensor, with
    Triton and ``torch.library.triton_op`` available. Gradients are not considered here."""
    return TRITON_AVAILABLE and x.is_cuda and _layout_and_dtype_supported(x)


def use_fused_group_norm_silu(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, *, force: bool = False
) -> bool:
    """Whether :func:`group_norm_silu` takes the fused path: the switch is on, no gradient is needed (the op has no
    backward), ``x`` is supported (any device when ``force``, for interpreter tests), and ``torch.compile`` is not
    tracing: inductor fuses GroupNorm + SiLU itself, faster than these kernels (H200, LiteVAE-S at 512 px x 32: 1545
    img/s compiled against 1055 img/s eager with them, ``benchmarks/results/gpu_profile_h200.json``), and it failed
    to compile the registered op there (torch 2.11, Triton 3.6)."""
    if not _enabled or _compiling() or not (force or fused_group_norm_silu_supported(x)):
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)))


def group_norm_silu(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-6,
    *,
    force: bool = False,
) -> torch.Tensor:
    """``silu(group_norm(x))``, fused in Triton where :func:`use_fused_group_norm_silu` allows it, otherwise
    ``F.silu(F.group_norm(...))`` (bit-identical to ``nn.GroupNorm`` followed by ``nn.SiLU``).

    Args:
        x: input of shape ``(N, C, H, W)``.
        num_groups: GroupNorm groups (must divide ``C``).
        weight: per-channel scale of shape ``(C,)``, or ``None`` for 1.
        bias: per-channel shift of shape ``(C,)``, or ``None`` for 0.
        eps: added to the group variance.
        force: take the fused path even for non-CUDA tensors (switch and gradient checks still apply); with
            ``TRITON_INTERPRET=1`` this runs the kernels on the CPU, for tests.

    Returns:
        A tensor like ``x`` (same shape, dtype and memory format).
    """
    if use_fused_group_norm_silu(x, weight, bias, force=force):
        return group_norm_silu_triton(x, num_groups, weight, bias, eps)
    return F.silu(F.group_norm(x, num_groups, weight, bias, eps))


def group_norm_silu_triton(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Always the fused Triton path (for benchmarks and tests), arguments as in :func:`group_norm_silu`; raises
    ``RuntimeError`` where it cannot run (``x`` must be a CUDA, or with ``TRITON_INTERPRET=1`` a CPU, channels_last
    fp16/bf16/fp32 tensor). It has no backward: call it under ``torch.no_grad()`` / ``torch.inference_mode()``.
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError(
            "the fused GroupNorm + SiLU needs Triton and torch>=2.6 (torch.library.triton_op); "
            f"found torch {torch.__version__}, Triton {'missing' if triton is None else triton.__version__}."
        )
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET", "0") == "1"):
        raise RuntimeError(
            f"the fused GroupNorm + SiLU runs on CUDA tensors (got {x.device}; TRITON_INTERPRET=1 runs it on the CPU)."
        )
    if not _layout_and_dtype_supported(x):
        raise RuntimeError(
            "the fused GroupNorm + SiLU needs a non-empty (N, C, H, W) channels_last tensor in fp16/bf16/fp32 with "
            f"C <= {_MAX_CHANNELS}; got shape {tuple(x.shape)}, strides {x.stride()}, dtype {x.dtype}."
        )
    channels = x.shape[1]
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the {channels} channels.")
    # The kernels read fp32 affine parameters; None means the identity affine, as in F.group_norm.
    weight = x.new_ones(channels, dtype=torch.float32) if weight is None else weight.float().contiguous()
    bias = x.new_zeros(channels, dtype=torch.float32) if bias is None else bias.float().contiguous()
    return torch.ops.litevae.group_norm_silu(x, num_groups, weight, bias, float(eps))


if TRITON_AVAILABLE:

    @triton.jit
    def _channel_stats_kernel(
        x_ptr,
        mean_ptr,
        m2_ptr,
        HW,
        C,
        rows_per_program,
        tiles_per_program,
        num_chunks,
        BLOCK_HW: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """Per-channel mean and M2 of ``rows_per_program`` spatial rows of one image, written to
        ``mean_ptr[n, chunk, :]`` and ``m2_ptr[n, chunk, :]`` (fp32, shape ``(N, num_chunks, C)``)."""
        n = tl.program_id(0)
        chunk = tl.program_id(1)
        channel = tl.arange(0, BLOCK_C)
        channel_mask = channel < C
        row_in_tile = tl.arange(0, BLOCK_HW)
        image = x_ptr + n.to(tl.int64) * HW * C
        chunk_start = chunk * rows_per_program

        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        count = 0.0
        for tile in range(0, tiles_per_program):
            tile_start = chunk_start + tile * BLOCK_HW
            rows = tile_start + row_in_tile
            row_mask = rows < HW
            mask = row_mask[:, None] & channel_mask[None, :]
            offsets = rows.to(tl.int64)[:, None] * C + channel[None, :]
            values = tl.load(image + offsets, mask=mask, other=0.0).to(tl.float32)
            # Rows of this tile inside the image (0 for a tile past the end of the last chunk).
            tile_count = tl.minimum(tl.maximum(HW - tile_start, 0), BLOCK_HW).to(tl.float32)
            tile_mean = tl.sum(values, axis=0) / tl.maximum(tile_count, 1.0)
            deviations = tl.where(mask, values - tile_mean[None, :], 0.0)
            tile_m2 = tl.sum(deviations * deviations, axis=0)
            # Chan et al.'s pairwise update: merge (count, mean, m2) with the tile's statistics.
            total = tl.maximum(count + tile_count, 1.0)
            delta = tile_mean - mean
            mean += delta * (tile_count / total)
            m2 += tile_m2 + delta * delta * (count * tile_count / total)
            count = count + tile_count

        out = (n.to(tl.int64) * num_chunks + chunk) * C + channel
        tl.store(mean_ptr + out, mean, mask=channel_mask)
        tl.store(m2_ptr + out, m2, mask=channel_mask)

    @triton.jit
    def _group_scale_shift_kernel(
        mean_ptr,
        m2_ptr,
        weight_ptr,
        bias_ptr,
        scale_shift_ptr,
        HW,
        C,
        num_chunks,
        rows_per_program,
        num_groups,
        eps,
        BLOCK_C: tl.constexpr,
    ):
        """One image's chunk statistics -> per-channel ``scale = rstd_g * weight`` and ``shift = bias - mean_g *
        scale``, written to ``scale_shift_ptr[0, n, :]`` and ``scale_shift_ptr[1, n, :]`` (fp32, ``(2, N, C)``): the
        combine step in one launch instead of a dozen small torch ops, which would cost more than the two passes
        themselves on the encoder's small tensors."""
        n = tl.program_id(0)
        group_size = C // num_groups
        channel = tl.arange(0, BLOCK_C)
        channel_mask = channel < C
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        count = 0.0
        base = n.to(tl.int64) * num_chunks * C
        for chunk in range(0, num_chunks):
            chunk_count = tl.minimum(HW - chunk * rows_per_program, rows_per_program).to(tl.float32)
            chunk_mean = tl.load(mean_ptr + base + chunk * C + channel, mask=channel_mask, other=0.0)
            chunk_m2 = tl.load(m2_ptr + base + chunk * C + channel, mask=channel_mask, other=0.0)
            total = count + chunk_count
            delta = chunk_mean - mean
            mean += delta * (chunk_count / total)
            m2 += chunk_m2 + delta * delta * (count * chunk_count / total)
            count = total
        # Channels of a group are contiguous: one masked reduction per group (at most 32 groups here).
        group = channel // group_size
        scale = tl.zeros([BLOCK_C], dtype=tl.float32)
        group_mean_per_channel = tl.zeros([BLOCK_C], dtype=tl.float32)
        for g in range(0, num_groups):
            member = (group == g) & channel_mask
            group_mean = tl.sum(tl.where(member, mean, 0.0), axis=0) / group_size
            spread = tl.where(member, m2 + count * (mean - group_mean) * (mean - group_mean), 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(spread, axis=0) / (count * group_size) + eps)
            scale = tl.where(member, rstd, scale)
            group_mean_per_channel = tl.where(member, group_mean, group_mean_per_channel)
        weight = tl.load(weight_ptr + channel, mask=channel_mask, other=0.0)
        bias = tl.load(bias_ptr + channel, mask=channel_mask, other=0.0)
        scale = scale * weight
        out = n.to(tl.int64) * C + channel
        shift_offset = tl.num_programs(0).to(tl.int64) * C
        tl.store(scale_shift_ptr + out, scale, mask=channel_mask)
        tl.store(scale_shift_ptr + shift_offset + out, bias - group_mean_per_channel * scale, mask=channel_mask)

    @triton.jit
    def _scale_shift_silu_kernel(
        x_ptr,
        out_ptr,
        scale_ptr,
        shift_ptr,
        HW,
        C,
        BLOCK_HW: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``y = x * scale[n, c] + shift[n, c]; out = y * sigmoid(y)`` for ``BLOCK_HW`` spatial rows of one image."""
        n = tl.program_id(0)
        rows = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        channel = tl.arange(0, BLOCK_C)
        channel_mask = channel < C
        mask = (rows < HW)[:, None] & channel_mask[None, :]
        scale = tl.load(scale_ptr + n * C + channel, mask=channel_mask, other=0.0)
        shift = tl.load(shift_ptr + n * C + channel, mask=channel_mask, other=0.0)
        offsets = n.to(tl.int64) * HW * C + rows.to(tl.int64)[:, None] * C + channel[None, :]
        values = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        normalised = values * scale[None, :] + shift[None, :]
        activated = normalised * tl.sigmoid(normalised)
        tl.store(out_ptr + offsets, activated.to(out_ptr.dtype.element_ty), mask=mask)

    @torch.library.triton_op("litevae::group_norm_silu", mutates_args=())
    def _group_norm_silu_op(
        x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """The registered op behind :func:`group_norm_silu_triton` (fp32 ``weight``/``bias`` of shape ``(C,)``)."""
        batch, channels, height, width = x.shape
        hw = height * width
        # The tile shapes are compile-time constants of the kernels: a symbolic channel count (torch.compile with
        # dynamic shapes) is specialised here; batch and spatial sizes stay runtime arguments.
        block_c = triton.next_power_of_2(int(channels))
        block_hw = max(1, _TILE_ELEMENTS // block_c)
        num_tiles = triton.cdiv(hw, block_hw)
        # Longer stats programs only once there are plenty of tiles to go round.
        tiles_per_program = max(1, min(_MAX_TILES_PER_STATS_PROGRAM, batch * num_tiles // _TARGET_STATS_PROGRAMS))
        rows_per_program = tiles_per_program * block_hw
        num_chunks = triton.cdiv(hw, rows_per_program)

        chunk_mean = x.new_empty((batch, num_chunks, channels), dtype=torch.float32)
        chunk_m2 = x.new_empty((batch, num_chunks, channels), dtype=torch.float32)
        torch.library.wrap_triton(_channel_stats_kernel)[(batch, num_chunks)](
            x,
            chunk_mean,
            chunk_m2,
            hw,
            channels,
            rows_per_program,
            tiles_per_program,
            num_chunks,
            BLOCK_HW=block_hw,
            BLOCK_C=block_c,
        )

        scale_shift = x.new_empty((2, batch, channels), dtype=torch.float32)
        torch.library.wrap_triton(_group_scale_shift_kernel)[(batch,)](
            chunk_mean,
            chunk_m2,
            weight,
            bias,
            scale_shift,
            hw,
            channels,
            num_chunks,
            rows_per_program,
            num_groups,
            eps,
            BLOCK_C=block_c,
        )
        scale, shift = scale_shift.unbind(0)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        torch.library.wrap_triton(_scale_shift_silu_kernel)[(batch, triton.cdiv(hw, block_hw))](
            x, out, scale, shift, hw, channels, BLOCK_HW=block_hw, BLOCK_C=block_c
        )
        return out
