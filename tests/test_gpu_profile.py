"""benchmarks/gpu_profile.py on the CPU: the run writes its sections, kernels are sorted into the right kinds, and
the best-mode table compares each model with the SD-VAE measured in the same run."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_profile  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name, kind",
    [
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
        ("triton_red_fused_native_group_norm_silu_0", "norm_reduction"),
        ("triton_per_fused_native_group_norm_3", "norm_reduction"),
        ("triton_poi_fused_convolution_silu_1", "pointwise"),  # a conv's bias and activation, not a conv
        ("triton_poi_fused_cat_2", "copy_cat"),
        ("_channel_stats_kernel", "norm_reduction"),
        ("_group_scale_shift_kernel", "norm_reduction"),
        ("_scale_shift_silu_kernel", "pointwise"),
        ("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float>", "norm_reduction"),
        ("void at::native::unrolled_elementwise_kernel<at::native::CUDAFunctor_add>", "pointwise"),
        ("void at::native::elementwise_kernel<copy_kernel_impl>", "copy_cat"),
    ],
)
def test_kernel_kinds(name, kind):
    assert gpu_profile.kernel_kind(name) == kind


def test_best_modes_pick_each_models_fastest_and_divide_by_the_sd_vae():
    report = {
        "encoders": [
            {
                "status": "ok",
                "model": "sd-vae",
                "resolution": 512,
                "batch": 32,
                "mode": "graph_bf16",
                "items_per_s": 100,
            },
            {"status": "ok", "model": "S", "resolution": 512, "batch": 32, "mode": "graph_bf16", "items_per_s": 300},
            {"status": "error", "model": "S", "resolution": 512, "batch": 32, "mode": "x", "items_per_s": 10**6},
        ],
        "compiled": [
            {"status": "ok", "model": "sd-vae", "resolution": 512, "batch": 32, "lever": "default", "items_per_s": 200},
            {"status": "ok", "model": "S", "resolution": 512, "batch": 32, "lever": "default", "items_per_s": 900},
        ],
    }
    cells = gpu_profile.best_modes(report)["cells"]["512x32"]
    assert cells["sd-vae"] == {"items_per_s": 200, "mode": "compiled:default"}
    assert cells["S"] == {"items_per_s": 900, "mode": "compiled:default", "vs_sd_vae": 4.5}


def test_smoke_run_writes_every_requested_section(tmp_path):
    output = tmp_path / "profile.json"
    code = gpu_profile.main(["--smoke", "--sections", "ceilings,work", "--output", str(output)])
    assert code == 0
    report = json.loads(output.read_text())
    assert report["ceilings"]["copy_gb_per_s"] > 0
    # FLOPs per image grow with the model: the SD-VAE encoder does far more work than LiteVAE-B, B more than S.
    work = report["work"]
    assert work["sd-vae@32"]["gflop_per_image"] > work["B@32"]["gflop_per_image"] > work["S@32"]["gflop_per_image"]
    assert report["best"] == {"cells": {}, "lines": []}
