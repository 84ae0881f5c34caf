"""Where and how a hot path runs: the dtype table, moving modules between devices and dtypes, and the one
compile policy that caching, evaluation, distillation and training share."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn as nn

__all__ = [
    "DTYPE_NAMES",
    "cast_module",
    "compile_for_inference",
    "compile_mode",
    "is_cuda",
    "pad_batch",
    "raise_recompile_limit",
    "resolve_compile",
    "resolve_dtype",
]


def cast_module(
    module: nn.Module, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """``module.to(device=device, dtype=dtype)``, minus diffusers' spurious float32 warning; returns ``module``.

    diffusers' ``ModelMixin.to`` logs "There are modules in X that should be kept in float32: []" on every dtype
    cast even when the model pins no modules to float32; for such a model (not quantized) that warning is all it
    adds, so ``torch.nn.Module.to`` is called directly. Every other module goes through its own ``.to``.
    """
    kwargs = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    if not kwargs:
        return module
    spurious_warning = (
        dtype is not None
        and hasattr(module, "_keep_in_fp32_modules")
        and not module._keep_in_fp32_modules
        and not getattr(module, "is_quantized", False)
    )
    return nn.Module.to(module, **kwargs) if spurious_warning else module.to(**kwargs)


# ---------------------------------------------------------------------------------------------- compiled hot paths

# Each static shape (every caching bucket, every evaluation size) is its own graph: keep all of them compiled
# rather than falling back to eager after dynamo's default of 8.
_RECOMPILE_LIMIT = 64


def resolve_compile(flag: bool | None, device: torch.device | str) -> bool:
    """The one policy for compiling a hot path (caching, evaluation speed, distillation and training).

    Args:
        flag: ``True``/``False`` from ``--compile``/``--no-compile``; ``None``: compile on CUDA only (on the CPU
            compiled LiteVAE encoders were slower than eager, and compiling costs minutes).
        device: the device the hot path runs on.

    Returns:
        Whether to compile. On CUDA it turns on ``cudnn.benchmark`` (the hot paths run static shapes). When
        compiling it turns on inductor's on-disk FX graph cache (``TORCHINDUCTOR_CACHE_DIR``), so a later run reuses
        the kernels, and :func:`raise_recompile_limit`.
    """
    cuda = is_cuda(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
    enabled = cuda if flag is None else bool(flag)
    if enabled:
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        with contextlib.suppress(ImportError, AttributeError):  # torch builds without inductor skip its cache
            import torch._inductor.config as inductor_config

            inductor_config.fx_graph_cache = True
        raise_recompile_limit()
    return enabled


def is_cuda(device: torch.device | str) -> bool:
    """Whether ``device`` is a CUDA device."""
    return torch.device(device).type == "cuda"


def raise_recompile_limit() -> None:
    """Let dynamo keep up to 64 graphs per code object (default 8): every bucket shape, and every ResBlock width under
    regional compilation, is its own graph, and past the limit dynamo silently runs the code eagerly."""
    import torch._dynamo  # noqa: F401  (registers torch._dynamo.config)

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), _RECOMPILE_LIMIT))
            break


def compile_mode(device: torch.device | str, inference: bool) -> str | None:
    """``torch.compile`` mode for a hot path: CUDA graphs (``"reduce-overhead"``) for inference on CUDA, where
    small batches are launch-bound; the default mode for training (gradients) and on other devices."""
    return "reduce-overhead" if inference and is_cuda(device) else None


def compile_for_inference(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Compile ``module`` in place for inference on ``device`` (static shapes, CUDA graphs on CUDA); returns it.

    A CUDA-graphed call's outputs are overwritten by the next call: ``.clone()`` what you keep, and call
    ``torch.compiler.cudagraph_mark_step_begin()`` before each call.
    """
    mode = compile_mode(device, inference=True)
    module.compile(dynamic=False, **({"mode": mode} if mode else {}))
    return module


def pad_batch(batch: torch.Tensor, size: int) -> torch.Tensor:
    """``batch`` ``(n, ...)`` padded with zeros to ``(size, ...)`` along dim 0, in the same memory format, so a
    partial last batch reuses a static-shape compiled graph (take ``output[:n]``; samples are independent in eval).
    """
    count = batch.shape[0]
    if count == size:
        return batch
    if count > size:
        raise ValueError(f"pad_batch: the batch has {count} samples, more than the size {size} to pad to.")
    memory_format = (
        torch.channels_last
        if batch.ndim == 4 and batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous()
        else torch.contiguous_format
    )
    padded = batch.new_zeros((size, *batch.shape[1:])).contiguous(memory_format=memory_format)
    padded[:count] = batch
    return padded


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DTYPE_NAMES = tuple(_DTYPES)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A dtype by one of :data:`DTYPE_NAMES` (the table every command uses); a ``torch.dtype`` is returned as is,
    ``None`` is float32.

    Raises:
        ValueError: an unknown name.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} (or a torch.dtype), got {dtype!r}.")
    return _DTYPES[dtype]
