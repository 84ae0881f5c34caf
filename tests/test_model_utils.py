"""Small helpers of ``models.utils`` that every command shares."""

from __future__ import annotations

import pytest
import torch

from diffusers_litevae.models.utils import DTYPE_NAMES, resolve_dtype


def test_one_dtype_table_for_every_command():
    """eval's --dtype, distill's --teacher_dtype and cache-latents' --dtype / --mixed_precision names."""
    assert {name: resolve_dtype(name) for name in DTYPE_NAMES} == {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    assert resolve_dtype(torch.float64) is torch.float64 and resolve_dtype(None) is torch.float32
    with pytest.raises(ValueError, match="dtype must be one of float32, fp32.*got 'half'"):
        resolve_dtype("half")
