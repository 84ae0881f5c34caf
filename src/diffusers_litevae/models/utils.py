"""Small helpers shared by the models and the tools that save or compare them."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["cast_module"]


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
