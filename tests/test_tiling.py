"""Tiled encoding and decoding of a 1024 x 1024 image.

Two different questions, two different tolerances:

1. Is the tiling machinery exact? With a patch-local encoder and decoder (every latent depends on its own
   8 x 8 pixel patch only) tiling must not change anything: tiled == untiled to 1e-5, for square and ragged
   sizes. Misplaced tiles (a window that does not start on the latent grid) break this by orders of
   magnitude, which the test checks too. In the ragged 776 x 520 case the last tile overlaps more than the
   ramps span, so the weights do not sum to one: a tiling that forgot to divide by them fails there (checked
   by hand: max error 1.9 instead of 1e-7).
2. How close is it for a real network? Any network whose receptive field is wider than the tile overlap, or
   that normalises over the whole tensor (GroupNorm, attention), gives different results per tile: diffusers'
   own ``AutoencoderKL`` tiling does too. On stationary content (uniform-noise images, Gaussian latents), where
   per-tile GroupNorm statistics match the whole image's so what remains is the seams, the tiny model with
   the default tile size (``sample_size=512``: 3 x 3 tiles at 1024 px, 128 px overlap) gives a relative RMS
   difference (RMS(tiled - untiled) / std(untiled)) of 0.10 (encode) and 0.064 (decode). The test asserts
   0.15 and 0.10; blending without the linear ramps measured 0.22 / 0.18, so a broken blend fails. Decoding is
   also held against ``AutoencoderKL``'s tiling on bit-identical decoder weights (measured 0.071): ours must
   not be worse. On structured images random-weight GroupNorm networks (ours and ``AutoencoderKL``) differ far
   more, because per-tile statistics differ; that is a property of GroupNorm, not of the blend.

Peak memory is measured without timing: a child process (glibc's mmap threshold pinned so freed tensors go back
to the OS) reads its resident-set high-water mark ``VmHWM`` around each call, reset through
``/proc/self/clear_refs`` (one process per measurement where that is refused). Not ``ru_maxrss``: after
fork+exec it still holds the parent's (pytest's) peak. Without procfs the memory test skips. Measured:
encode 76 MiB tiled vs 165 MiB untiled, decode 84 vs 221 MiB; the test asserts tiled < 0.75 x untiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn as nn

import diffusers_litevae.models.autoencoder_lite_base as autoencoder_lite_base
from diffusers_litevae import AutoencoderLite
from diffusers_litevae.testing_utils import tiny_autoencoder_kl, tiny_autoencoder_lite

RESOLUTION = 1024
TILE = 512  # sample_size: the tile size of every preset; at 1024 px this is 3 x 3 tiles
ENCODE_REL_RMS_BOUND = 0.15
DECODE_REL_RMS_BOUND = 0.10


def _relative_rms(tiled: torch.Tensor, reference: torch.Tensor) -> float:
    return ((tiled - reference).pow(2).mean().sqrt() / reference.std()).item()


def _stationary_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform-noise image in [-1, 1] (1, 3, 1024, 1024) and Gaussian latents (1, 4, 128, 128)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, RESOLUTION, RESOLUTION, generator=generator) * 2 - 1
    latents = torch.randn(1, 4, RESOLUTION // 8, RESOLUTION // 8, generator=generator)
    return image, latents


# ---------------------------------------------------------------------------------------------- exactness


class _PatchEncoder(nn.Module):
    """Each latent sees exactly its own 8 x 8 patch: tiling cannot change the result."""

    def __init__(self, latent_channels: int = 4):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, kernel_size=8, stride=8)
        self.out = nn.Conv2d(16, 2 * latent_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.patch(x)))


class _PatchDecoder(nn.Module):
    """Each 8 x 8 output patch sees exactly its own latent."""

    def __init__(self, latent_channels: int = 4):
        super().__init__()
        self.unpatch = nn.ConvTranspose2d(latent_channels, 16, kernel_size=8, stride=8)
        self.out = nn.Conv2d(16, 3, kernel_size=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.unpatch(z)))


def _patch_local_model() -> AutoencoderLite:
    model = tiny_autoencoder_lite(sample_size=256).eval()  # 256 px tiles: 5 x 5 of them at 1024 px
    model.encoder, model.decoder = _PatchEncoder(), _PatchDecoder()
    return model


@pytest.mark.parametrize("height,width", [(1024, 1024), (776, 520)], ids=["1024x1024", "ragged_776x520"])
def test_tiling_is_exact_for_patch_local_networks(height, width):
    model = _patch_local_model()
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    latents = torch.randn(1, 4, height // 8, width // 8, generator=generator)
    with torch.no_grad():
        moments = model.encode(image).latent_dist.parameters
        decoded = model.decode(latents).sample
        model.enable_tiling()
        tiled_moments = model.encode(image).latent_dist.parameters
        tiled_decoded = model.decode(latents).sample
        also_public = model.tiled_decode(latents).sample
    torch.testing.assert_close(tiled_moments, moments, rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled_decoded, decoded, rtol=0, atol=1e-5)
    torch.testing.assert_close(also_public, decoded, rtol=0, atol=1e-5)


def test_misplaced_encoder_tiles_would_be_caught():
    """A tiling that lets encoder windows start off the 8-pixel latent grid misplaces latents by half a cell."""
    model = _patch_local_model()
    image = torch.rand(1, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(2)) * 2 - 1
    real_starts = autoencoder_lite_base._tile_starts

    def off_grid_starts(size: int, tile: int, stride: int) -> list[int]:
        return [s if s in (0, size - tile) else s + 4 for s in real_starts(size, tile, stride)]

    with torch.no_grad():
        reference = model.encode(image).latent_dist.mean
        model.enable_tiling()
        with mock.patch.object(autoencoder_lite_base, "_tile_starts", off_grid_starts):
            broken = model.encode(image).latent_dist.mean
    assert (broken - reference).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------- real network + memory

_MEASURE_IN_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from diffusers_litevae import AutoencoderLite
    from diffusers_litevae.testing_utils import TINY_ENCODER, tiny_autoencoder_kl

    out_dir, resolution, tile, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    torch.set_num_threads(2)
    kl = tiny_autoencoder_kl(sample_size=tile, seed=0).eval()
    model = AutoencoderLite.from_autoencoder_kl(kl, encoder=TINY_ENCODER).eval()
    del kl
    generator = torch.Generator().manual_seed(0)  # the same inputs as _stationary_inputs() in the test
    image = torch.rand(1, 3, resolution, resolution, generator=generator) * 2 - 1
    latents = torch.randn(1, 4, resolution // 8, resolution // 8, generator=generator)

    def rss_kib(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # VmHWM := current RSS
            return True
        except OSError:
            return False

    procfs = os.path.exists("/proc/self/status")
    results = {}
    for job in jobs:
        op, mode = job.split("_")
        model.enable_tiling() if mode == "tiled" else model.disable_tiling()
        if procfs and not reset_peak() and len(jobs) > 1:
            print(json.dumps({"error": "cannot reset VmHWM; run one job per process"}))
            sys.exit(3)
        before = rss_kib("VmRSS") if procfs else None
        with torch.no_grad():
            result = model.encode(image).latent_dist.mean if op == "encode" else model.decode(latents).sample
        results[job] = (rss_kib("VmHWM") - before) / 1024 if procfs else None
        torch.save(result, f"{out_dir}/{job}.pt")
        del result
    print(json.dumps({"peak_mib": results}))
    """
)

# Tiled jobs first: what a job leaves cached in the heap can only make the jobs after it look smaller.
_JOBS = ["encode_tiled", "decode_tiled", "encode_untiled", "decode_untiled"]


def _run_child(out_dir: Path, jobs: list[str]) -> dict:
    # A fixed mmap threshold makes glibc return every freed block of 1 MiB or more to the OS at once, so RSS
    # follows the live tensors (the default threshold grows and keeps freed activations cached in the heap).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE_IN_CHILD, str(out_dir), str(RESOLUTION), str(TILE), ",".join(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    if result.returncode == 3 and "error" in report:
        return report
    assert result.returncode == 0, result.stderr[-3000:]
    return report


@pytest.fixture(scope="module")
def tiled_vs_untiled(tmp_path_factory) -> dict:
    """Runs the 1024 px encode and decode, tiled and untiled, in a child process: outputs and peak RSS (MiB)."""
    out_dir = tmp_path_factory.mktemp("tiling")
    report = _run_child(out_dir, _JOBS)
    if "error" in report:  # no /proc/self/clear_refs (not Linux, or locked down): one process per measurement
        report = {"peak_mib": {}}
        for job in _JOBS:
            report["peak_mib"].update(_run_child(out_dir, [job])["peak_mib"])
    outputs = {job: torch.load(out_dir / f"{job}.pt") for job in _JOBS}
    return {"peak_mib": report["peak_mib"], "outputs": outputs}


def test_tiled_encode_and_decode_match_untiled_at_1024(tiled_vs_untiled):
    outputs = tiled_vs_untiled["outputs"]
    assert outputs["encode_tiled"].shape == (1, 4, RESOLUTION // 8, RESOLUTION // 8)
    assert outputs["decode_tiled"].shape == (1, 3, RESOLUTION, RESOLUTION)
    encode_error = _relative_rms(outputs["encode_tiled"], outputs["encode_untiled"])
    decode_error = _relative_rms(outputs["decode_tiled"], outputs["decode_untiled"])
    assert encode_error < ENCODE_REL_RMS_BOUND, f"tiled encode differs by {encode_error:.3f} (relative RMS)"
    assert decode_error < DECODE_REL_RMS_BOUND, f"tiled decode differs by {decode_error:.3f} (relative RMS)"
    assert encode_error > 0 and decode_error > 0, "tiling did not happen at 1024 px with 512 px tiles"


def test_tiled_decode_is_no_worse_than_autoencoder_kl_tiling(tiled_vs_untiled):
    """Same decoder weights, same latents: our blend against diffusers' ``AutoencoderKL.tiled_decode``."""
    kl = tiny_autoencoder_kl(sample_size=TILE, seed=0).eval()  # the child copied its decoder (from_autoencoder_kl)
    _, latents = _stationary_inputs()
    outputs = tiled_vs_untiled["outputs"]
    kl.enable_tiling()
    with torch.no_grad():
        kl_error = _relative_rms(kl.decode(latents).sample, outputs["decode_untiled"])
    lite_error = _relative_rms(outputs["decode_tiled"], outputs["decode_untiled"])
    assert lite_error <= kl_error * 1.05, f"AutoencoderLite tiling error {lite_error:.3f}, AutoencoderKL {kl_error:.3f}"


def test_tiling_lowers_peak_memory(tiled_vs_untiled):
    peak = tiled_vs_untiled["peak_mib"]
    if None in peak.values():
        pytest.skip("no /proc/self/status here to read the resident-set high-water mark from")
    for op in ("encode", "decode"):
        tiled, untiled = peak[f"{op}_tiled"], peak[f"{op}_untiled"]
        assert untiled > 0, f"no memory growth measured for an untiled {op} at 1024 px: {peak}"
        assert tiled < 0.75 * untiled, f"tiled {op} peaked at {tiled:.0f} MiB, untiled at {untiled:.0f} MiB"
