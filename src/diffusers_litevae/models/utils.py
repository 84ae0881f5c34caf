"""Small helpers shared by the models and the tools that run, save or compare them."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn as nn
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

__all__ = [
    "DTYPE_NAMES",
    "LazyDiagonalGaussian",
    "cast_module",
    "compile_for_inference",
    "hub_offline_message",
    "is_hub_repo_id",
    "is_owner_repo_id",
    "compile_mode",
    "is_cuda",
    "normalize_sequences",
    "pad_batch",
    "raise_recompile_limit",
    "resolve_compile",
    "resolve_dtype",
]


def normalize_sequences(value, kind: type = tuple):
    """``value`` with every list and tuple in it, at any depth, made a ``kind``; other values unchanged.

    A config read back from JSON holds lists where one built in Python holds tuples: normalised to tuples they
    compare equal, and normalised to lists they serialise like JSON (``json.dumps`` writes either as a list).
    """
    if isinstance(value, (list, tuple)):
        return kind(normalize_sequences(v, kind) for v in value)
    return value


def is_owner_repo_id(value: str | None) -> bool:
    """``True`` for a valid Hub repo id with an owner (``owner/name``), by huggingface_hub's own rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not value or "/" not in value:
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def is_hub_repo_id(value: str | os.PathLike | None) -> bool:
    """``True`` for ``owner/name`` strings that are not existing local paths (what loaders send to the Hub)."""
    value = os.fspath(value) if value is not None else None
    return is_owner_repo_id(value) and not os.path.exists(os.path.expanduser(value))


def hub_offline_message(name_or_path: str | os.PathLike) -> str | None:
    """The reason a Hub id cannot load when the Hub is switched off (``HF_HUB_OFFLINE`` set), else ``None``.

    Loading a repo id that is not in the local Hugging Face cache then fails with errors that do not mention being
    offline (diffusers: "does not appear to have a file named config.json"); this message names the cause and the fix.
    """
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }
    if not offline or not is_hub_repo_id(name_or_path):
        return None
    return (
        f"Hugging Face Hub repo {os.fspath(name_or_path)!r} is not in the local cache, and HF_HUB_OFFLINE is set, so "
        "it cannot be downloaded: unset HF_HUB_OFFLINE (with network access) to download it once, or pass a local "
        "folder."
    )


def cast_module(
    module: nn.Module, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """``module.to(device=device, dtype=dtype)``, minus diffusers' spurious float32 warning; returns ``module``.

    diffusers' ``ModelMixin.to`` logs "There are modules in X that should be kept in float32: []" on every dtype
    cast, even when the model declares no such modules (``_keep_in_fp32_modules`` is ``None``), which is noise
    for ``AutoencoderLite``. For a model with no float32-pinned modules that is not quantized, the warning is the
    only thing ``ModelMixin.to`` adds, so this calls ``torch.nn.Module.to`` directly. Every other module (plain
    ``nn.Module``s, models that pin modules to float32, quantized models) goes through its own ``.to``, with all
    its checks and warnings.
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


class LazyDiagonalGaussian(DiagonalGaussianDistribution):
    """diffusers' ``DiagonalGaussianDistribution`` that computes ``std`` and ``var`` on first use.

    Same values, same attributes, same methods (it is a subclass, so ``isinstance`` checks hold): ``parameters``
    ``(B, 2*C, h, w)`` split into ``mean`` and ``logvar`` (clamped to ``[-30, 20]``), ``std = exp(0.5 * logvar)``,
    ``var = exp(logvar)``, zeros for both when ``deterministic``. Most callers read only ``mean``/``mode()`` or
    ``logvar`` (latent caching, distillation, pipelines' ``argmax`` mode), and for them the three element-wise
    kernels building ``std`` and ``var`` were wasted launches.
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self._std: torch.Tensor | None = None
        self._var: torch.Tensor | None = None

    @property
    def std(self) -> torch.Tensor:
        if self._std is None:
            self._std = torch.zeros_like(self.mean) if self.deterministic else torch.exp(0.5 * self.logvar)
        return self._std

    @std.setter
    def std(self, value: torch.Tensor) -> None:
        self._std = value

    @property
    def var(self) -> torch.Tensor:
        if self._var is None:
            self._var = torch.zeros_like(self.mean) if self.deterministic else torch.exp(self.logvar)
        return self._var

    @var.setter
    def var(self, value: torch.Tensor) -> None:
        self._var = value


# ---------------------------------------------------------------------------------------------- compiled hot paths

# Each static shape (every caching bucket, every evaluation size) is its own graph: keep all of them compiled
# rather than falling back to eager after dynamo's default of 8.
_RECOMPILE_LIMIT = 64


def resolve_compile(flag: bool | None, device: torch.device | str) -> bool:
    """The one policy for compiling a hot path (caching, evaluation speed, distillation and training).

    Args:
        flag: ``True``/``False`` from a ``--compile``/``--no-compile`` flag; ``None`` (the default) means auto:
            compile on CUDA, stay eager elsewhere (on the CPU compiled LiteVAE encoders were slower than eager,
            and compiling costs minutes there).
        device: the device the hot path runs on.

    Returns:
        Whether to compile. Either way, on CUDA it turns on ``torch.backends.cudnn.benchmark`` (the hot paths run
        static shapes, so the autotuned algorithm is reused). When compiling it also turns on inductor's
        on-disk FX graph cache (``TORCHINDUCTOR_CACHE_DIR`` picks the folder) so a later run reuses the compiled
        kernels instead of compiling again, and lets dynamo keep one graph per shape for up to 64 shapes.
    """
    cuda = is_cuda(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
    enabled = cuda if flag is None else bool(flag)
    if enabled:
        _enable_compile_caches()
    return enabled


def is_cuda(device: torch.device | str) -> bool:
    """Whether ``device`` is a CUDA device: the device check behind :func:`resolve_compile`'s default."""
    return torch.device(device).type == "cuda"


def _enable_compile_caches() -> None:
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    with contextlib.suppress(ImportError, AttributeError):  # torch builds without inductor skip its cache
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
    raise_recompile_limit()


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

    Outputs of a CUDA-graphed call live in memory the next call overwrites: copy what you keep (``.clone()``)
    before calling again, and call ``torch.compiler.cudagraph_mark_step_begin()`` before each call.
    """
    mode = compile_mode(device, inference=True)
    module.compile(dynamic=False, **({"mode": mode} if mode else {}))
    return module


def pad_batch(batch: torch.Tensor, size: int) -> torch.Tensor:
    """``batch`` ``(n, ...)`` padded with zeros to ``(size, ...)`` along dim 0, in the same memory format.

    A compiled, static-shape hot path sees every batch of a shape at the full batch size, so the last, partial
    batch reuses the same graph; drop the padding from the output with ``output[:n]``. Encoders and decoders
    here treat each sample independently (no batch statistics in eval), so the padding cannot change the others.
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
    """A dtype by name, the one table every command uses: ``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``,
    ``"bfloat16"``/``"bf16"`` (:data:`DTYPE_NAMES`); a ``torch.dtype`` is returned as is, ``None`` is float32.

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
