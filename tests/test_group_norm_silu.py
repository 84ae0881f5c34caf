"""The fused Triton GroupNorm + SiLU: kernels against ``F.silu(F.group_norm(...))`` under Triton's interpreter, and
the dispatcher / encoder keeping the plain torch path (bit for bit) wherever the fused one does not apply."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffusers_litevae.models import group_norm_silu as gns
from diffusers_litevae.models.litevae_encoder import LiteVAEResBlock

# (batch, channels, groups, height, width): encoder widths 12-96 with their _num_groups counts and odd sizes so
# neither the channel tile (padded to a power of two) nor the spatial tiles divide evenly.
SHAPES = [
    (2, 12, 12, 7, 13),
    (1, 16, 16, 13, 7),
    (2, 36, 18, 7, 7),
    (1, 48, 24, 33, 13),
    (1, 96, 32, 13, 33),
    (2, 32, 1, 7, 13),  # one group over all channels
    (1, 64, 4, 33, 7),
]
DTYPE_BOUNDS = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 1e-2}

# Runs in a fresh interpreter with TRITON_INTERPRET=1 (Triton reads it when the kernels are decorated, so it must be
# set before the first import). Reads cases as JSON from argv, prints {case id: relative error}.
_INTERPRETER_SCRIPT = r"""
import json, sys
import torch
import torch.nn.functional as F
from diffusers_litevae.models import group_norm_silu as gns
from diffusers_litevae.models.litevae_encoder import LiteVAEResBlock

results = {}
torch.manual_seed(0)
for case in json.loads(sys.argv[1]):
    batch, channels, groups, height, width = case["shape"]
    dtype = getattr(torch, case["dtype"])
    # An offset and a scale so the mean matters and E[x^2] - E[x]^2 would lose digits.
    x = (torch.randn(batch, channels, height, width) * 3 + 5).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = None if case.get("no_affine") else torch.randn(channels)
    bias = None if case.get("no_affine") else torch.randn(channels)
    gns._TARGET_STATS_PROGRAMS = case.get("target_stats_programs", 1024)
    gns._TILE_ELEMENTS = case.get("tile_elements", 4096)
    with torch.no_grad():
        fused = gns.group_norm_silu(x, groups, weight, bias, 1e-6, force=True)
        # The reference in fp32 on the same (rounded) input: the fused path computes in fp32 too.
        reference = F.silu(F.group_norm(x.float(), groups, weight, bias, 1e-6))
    assert fused.dtype == dtype and fused.shape == x.shape, (fused.dtype, fused.shape)
    assert fused.is_contiguous(memory_format=torch.channels_last)
    results[case["id"]] = ((fused.float() - reference).abs().max() / reference.abs().max()).item()

# The encoder block on the fused path (pretending the CPU is supported) against its torch path.
gns.fused_group_norm_silu_supported = gns._layout_and_dtype_supported
gns._TARGET_STATS_PROGRAMS, gns._TILE_ELEMENTS = 1024, 4096
block = LiteVAEResBlock(36, 48, groups=18, groups_out=24).eval()
sample = torch.randn(1, 36, 9, 11).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    fused = block(sample)
    with gns.fused_group_norm_silu(False):
        plain = block(sample)
results["resblock"] = ((fused - plain).abs().max() / plain.abs().max()).item()
results["op_registered"] = hasattr(torch.ops.litevae, "group_norm_silu")
print(json.dumps(results))
"""


def _cases():
    cases = []
    for shape in SHAPES:
        for dtype in ("float32", "bfloat16"):
            cases.append({"id": f"{dtype}-{'x'.join(map(str, shape))}", "shape": shape, "dtype": dtype})
    # Several tiles per statistics program (Chan's merge across tiles, a partial and an empty tile in the last chunk).
    cases.append(
        {
            "id": "multi-tile",
            "shape": (2, 36, 18, 33, 13),
            "dtype": "float32",
            "target_stats_programs": 1,
            "tile_elements": 256,
        }
    )
    cases.append({"id": "float16", "shape": (1, 48, 24, 13, 7), "dtype": "float16"})
    cases.append({"id": "no-affine", "shape": (1, 12, 12, 7, 13), "dtype": "float32", "no_affine": True})
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def interpreter_results():
    pytest.importorskip("triton", reason="Triton is not installed: the fused kernels cannot run (CPU-only install)")
    if not gns.TRITON_AVAILABLE:
        pytest.skip("torch.library.triton_op needs torch>=2.6")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, "-c", _INTERPRETER_SCRIPT, json.dumps(CASES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_fused_kernels_match_torch(interpreter_results, case):
    error = interpreter_results[case["id"]]
    assert error <= DTYPE_BOUNDS[case["dtype"]], error


def test_fused_resblock_matches_torch_path(interpreter_results):
    assert interpreter_results["op_registered"]
    assert interpreter_results["resblock"] <= 1e-5, interpreter_results["resblock"]


def _inputs(channels=36, groups=18):
    x = torch.randn(2, channels, 7, 13).contiguous(memory_format=torch.channels_last)
    return x, groups, torch.randn(channels), torch.randn(channels)


def test_dispatcher_uses_torch_on_cpu():
    x, groups, weight, bias = _inputs()
    assert not gns.fused_group_norm_silu_supported(x)
    expected = F.silu(F.group_norm(x, groups, weight, bias, 1e-6))
    with torch.no_grad():
        assert torch.equal(gns.group_norm_silu(x, groups, weight, bias, 1e-6), expected)


def test_switch_and_gradients_keep_torch_path_even_when_forced():
    x, groups, weight, bias = _inputs()
    expected = F.silu(F.group_norm(x, groups, weight, bias, 1e-6))
    with gns.fused_group_norm_silu(False):
        assert not gns.fused_group_norm_silu_enabled()
        with torch.no_grad():
            assert torch.equal(gns.group_norm_silu(x, groups, weight, bias, 1e-6, force=True), expected)
    assert gns.fused_group_norm_silu_enabled()
    # A gradient is needed: the op has no backward, so even a forced call stays on torch and backpropagates.
    # (x requires grad too: torch 2.13's CPU GroupNorm backward crashes on a channels_last input that does not.)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    out = gns.group_norm_silu(x, groups, weight, bias, 1e-6, force=True)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    assert x.grad is not None and weight.grad is not None


def test_torch_compile_tracing_keeps_the_torch_path(monkeypatch):
    # Under torch.compile inductor fuses GroupNorm + SiLU itself (faster on the GPU than these kernels).
    x, groups, weight, bias = _inputs()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.no_grad():
        assert not gns.use_fused_group_norm_silu(x, weight, bias, force=True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    with torch.no_grad():
        assert gns.use_fused_group_norm_silu(x, weight, bias, force=True)


def test_triton_entry_point_refuses_unsupported_inputs(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, groups, weight, bias = _inputs()
    with pytest.raises(RuntimeError, match="fused GroupNorm"):
        gns.group_norm_silu_triton(x, groups, weight, bias)  # a CPU tensor (or no Triton at all)


def test_resblock_on_cpu_is_unchanged():
    block = LiteVAEResBlock(36, 48, groups=18, groups_out=24).eval()
    sample = torch.randn(1, 36, 9, 11)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = sample.contiguous(memory_format=memory_format)
        with torch.no_grad():
            hidden = block.conv1(F.silu(block.norm1(x)))
            expected = block.conv_shortcut(x) + block.conv2(F.silu(block.norm2(hidden)))
            assert torch.equal(block(x), expected)
