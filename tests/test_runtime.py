"""Small helpers of ``runtime`` that every command shares."""

from __future__ import annotations

import pytest
import torch

from diffusers_litevae.runtime import DTYPE_NAMES, resolve_dtype


def test_one_dtype_table_for_every_command():
    """eval's --dtype, distill's --teacher_dtype and cache-latents' --dtype / --mixed_precision names."""
    names = ["fp32", "float32", "fp16", "float16", "bf16", "bfloat16"]
    assert sorted(DTYPE_NAMES) == sorted(names)
    assert [resolve_dtype(name) for name in names] == [torch.float32] * 2 + [torch.float16] * 2 + [torch.bfloat16] * 2
    assert resolve_dtype(torch.float64) is torch.float64 and resolve_dtype(None) is torch.float32
    with pytest.raises(ValueError, match="dtype must be one of float32, fp32.*got 'half'"):
        resolve_dtype("half")
