"""Compiled hot paths: the compile policy, static-shape padding, and graph-break-free encode/decode/distill steps.

The graph-break tests trace with ``torch.compile(fullgraph=True, backend="aot_eager")``: dynamo raises on any
graph break and AOTAutograd traces the forward and backward graphs, as inductor would, without spending minutes
generating kernels on a 2-core CPU. They use the S preset at 32 px.
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch._dynamo

from diffusers_litevae import runtime
from diffusers_litevae.caching import cache_latents
from diffusers_litevae.runtime import pad_batch, resolve_compile
from diffusers_litevae.testing_utils import smooth_images, tiny_autoencoder_lite, tiny_autoencoder_lite_tiny


@pytest.fixture(autouse=True)
def _restore_global_flags(monkeypatch):
    # resolve_compile sets these process-wide; keep other tests' state as it was.
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    limit = getattr(config, name)
    yield
    setattr(config, name, limit)  # dynamo's config object, not a plain attribute: restored by hand


# ---------------------------------------------------------------------------------------------- policy


def test_compile_policy_is_on_for_cuda_and_off_on_cpu_unless_asked():
    assert resolve_compile(None, "cuda") is True
    assert torch.backends.cudnn.benchmark is True  # static shapes: autotuned algorithms are reused
    assert resolve_compile(False, "cuda") is False
    assert resolve_compile(None, "cpu") is False
    assert resolve_compile(True, "cpu") is True
    assert runtime.compile_mode("cuda", inference=True) == "reduce-overhead"
    assert runtime.compile_mode("cuda", inference=False) is None
    assert runtime.compile_mode("cpu", inference=True) is None


def test_cache_latents_cli_flag_defaults_to_auto():
    from diffusers_litevae.caching.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--train_data_dir", "x", "--output_dir", "y"]
    assert parser.parse_args(base).compile is None
    assert parser.parse_args([*base, "--compile"]).compile is True
    assert parser.parse_args([*base, "--no-compile"]).compile is False


def _image_folder(root, count: int = 5):
    from PIL import Image

    images = smooth_images(count, 32, 32, seed=3)
    root.mkdir(parents=True)
    for i, image in enumerate(images):
        pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
    return root


def _cached_means(cache) -> dict[str, torch.Tensor]:
    from diffusers_litevae.caching import LatentDataset

    dataset = LatentDataset(cache, latent_sampling="mean")
    return {dataset.sample_id(i): dataset.raw_moments(i)[0] for i in range(len(dataset))}


def test_cache_latents_compiles_where_it_pays_and_pads_the_last_batch(tmp_path, monkeypatch):
    """With the device check reporting CUDA, a default run on a few images stays eager (the compile would not pay
    back), a compiled run pads the partial last batch to the batch size, and its latents are identical to an eager,
    unpadded run's."""
    import diffusers_litevae.caching.encode as encode_module

    compiled, padded = [], []
    real_pad = encode_module.pad_batch

    def record_pad(batch, size):
        padded.append((batch.shape[0], size))
        return real_pad(batch, size)

    monkeypatch.setattr(runtime, "is_cuda", lambda device: True)
    monkeypatch.setattr(encode_module, "is_cuda", lambda device: True)
    # Compiling on a 2-core CPU takes minutes: record the call, run eager.
    monkeypatch.setattr(encode_module, "compile_for_inference", lambda module, device: compiled.append(module))
    monkeypatch.setattr(encode_module, "pad_batch", record_pad)
    folder = _image_folder(tmp_path / "images")
    vae = tiny_autoencoder_lite(seed=0)
    common = dict(resolution=32, bucketing=False, num_workers=0, batch_size=2, progress=False, dtype="fp32")
    default = cache_latents(folder, vae, tmp_path / "default", device="cpu", **common)
    assert not default.compiled and not compiled  # 5 images: far below what pays for a compile
    report = cache_latents(folder, vae, tmp_path / "auto", device="cpu", compile=True, **common)
    assert report.compiled and len(compiled) == 1
    assert (1, 2) in padded  # 5 images in batches of 2: the last one is padded from 1 to 2
    eager = cache_latents(folder, vae, tmp_path / "eager", device="cpu", compile=False, **common)
    assert not eager.compiled and len(compiled) == 1
    auto, reference = _cached_means(tmp_path / "auto"), _cached_means(tmp_path / "eager")
    assert auto.keys() == reference.keys() and len(auto) == 5
    for key in auto:
        # Not bitwise: a batch of 2 and a batch of 1 may take different convolution kernels (oneDNN, cuDNN).
        torch.testing.assert_close(auto[key], reference[key], atol=1e-5, rtol=1e-5, msg=key)


def test_padded_batch_gives_identical_latents():
    vae = tiny_autoencoder_lite(seed=0).eval()
    images = smooth_images(3, 32, 32, seed=1).contiguous(memory_format=torch.channels_last)
    padded = pad_batch(images, 8)
    assert padded.shape[0] == 8 and padded.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        full = vae.encode(smooth_images(8, 32, 32, seed=1).contiguous(memory_format=torch.channels_last))
        full = full.latent_dist.mean
        padded_mean = vae.encode(padded).latent_dist.mean
    # The padding cannot reach the real samples: identical to the same images in a full batch of the same size...
    assert torch.equal(padded_mean[:3], full[:3])
    # ...and to the unpadded batch up to float rounding (another batch size may pick another conv kernel).
    with torch.no_grad():
        torch.testing.assert_close(padded_mean[:3], vae.encode(images).latent_dist.mean, atol=1e-5, rtol=1e-5)
    assert pad_batch(images, 3) is images
    with pytest.raises(ValueError, match="more than the size"):
        pad_batch(images, 2)


# ---------------------------------------------------------------------------------------------- graph breaks


def _fullgraph(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager", dynamic=False)


@pytest.fixture(scope="module")
def s_model():
    torch.manual_seed(0)
    # The toy widths trace the same code paths as a preset (every block type, three wavelet levels) in a third of
    # the ops, so compiling them on the CPU takes seconds, not tens of seconds.
    return tiny_autoencoder_lite_tiny().eval().to(memory_format=torch.channels_last)


def _images(batch: int = 2, size: int = 32) -> torch.Tensor:
    return smooth_images(batch, size, size, seed=0).contiguous(memory_format=torch.channels_last)


@pytest.mark.slow  # tracing and AOT-compiling on the CPU: tens of seconds
def test_encode_and_decode_have_no_graph_breaks_under_bf16_autocast_channels_last(s_model):
    images = _images()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encode = _fullgraph(lambda x: s_model.encode(x).latent_dist.mode())
        latents = encode(images)
        decode = _fullgraph(lambda z: s_model.decode(z).sample)
        decoded = decode(latents)
    assert latents.shape == (2, 4, 4, 4) and decoded.shape == (2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(latents, s_model.encode(images).latent_dist.mode(), atol=0.05, rtol=0.05)


@pytest.mark.slow  # tracing and AOT-compiling on the CPU: tens of seconds
def test_distillation_step_has_no_graph_breaks(s_model):
    """One student step as distillation runs it: encoder forward, frozen TAESD-family decoder, losses, in one graph;
    ``backward()`` is called on its result as the trainer does, running the graph AOTAutograd compiled for it."""
    student = tiny_autoencoder_lite_tiny().to(memory_format=torch.channels_last)
    student.decoder.requires_grad_(False)
    teacher_latents = torch.randn(2, 4, 4, 4)
    images = _images()

    def losses(x, target):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            posterior = student.encode(x).latent_dist
            mean, logvar = posterior.mean, posterior.logvar
            decoded = student.decode(mean).sample
            loss = (mean.float() - target).square().mean() + (decoded.float() - x).abs().mean()
            return loss + 1e-4 * logvar.float().square().mean()

    loss = _fullgraph(losses)(images, teacher_latents)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in student.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_eval_speed_compiles_by_default_on_cuda_and_reports_warmup_apart(monkeypatch):
    from diffusers_litevae.evaluation import measure_throughput
    from diffusers_litevae.evaluation.vaes import as_reconstruction_model

    compiled = []

    def fake_compile(fn, **options):  # compiling on a 2-core CPU takes minutes: record, run eager
        compiled.append(options)
        return fn

    monkeypatch.setattr(runtime, "is_cuda", lambda device: True)
    monkeypatch.setattr(torch, "compile", fake_compile)
    model = as_reconstruction_model(tiny_autoencoder_lite(seed=0), "cpu", torch.float32)
    images = (smooth_images(2, 32, 32, seed=0) + 1) / 2
    details = {}
    encode_ips, decode_ips = measure_throughput(model, images, warmup=1, repeats=1, details=details)
    assert encode_ips > 0 and decode_ips > 0
    assert details["compiled"] is True and details["warmup_s"] > 0
    assert compiled == [{"dynamic": False, "mode": "reduce-overhead"}] * 2  # CUDA graphs for inference
    details = {}
    measure_throughput(model, images, warmup=1, repeats=1, compile=False, details=details)
    assert details["compiled"] is False and len(compiled) == 2
