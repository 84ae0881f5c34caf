"""AutoencoderLite under diffusers' model-level machinery: group offloading, gradient checkpointing, attention
processors on models without attention, and PEFT adapters.

Pipelines call ``vae.encode()`` / ``vae.decode()`` directly, never ``vae.forward()``, so every offloading
group has to be onloaded by a submodule's own forward, not by the top-level one.
"""

from __future__ import annotations

import inspect

import diffusers
import pytest
import torch
from diffusers.models.modeling_utils import ModelMixin

from diffusers_litevae import AutoencoderLite
from diffusers_litevae.testing_utils import tiny_autoencoder_lite, tiny_autoencoder_lite_tiny

# name -> a tiny model of each decoder layout (AutoencoderLite's SD decoder in three configs, AutoencoderLiteTiny)
VARIANTS = {
    "kl": lambda **kw: tiny_autoencoder_lite(**kw),
    "kl-no-post-quant-conv": lambda **kw: tiny_autoencoder_lite(use_post_quant_conv=False, **kw),
    "kl-smc": lambda **kw: tiny_autoencoder_lite(use_smc=True, **kw),
    "tiny": lambda **kw: tiny_autoencoder_lite_tiny(**kw),
}

SUPPORTS_DISK = "offload_to_disk_path" in inspect.signature(ModelMixin.enable_group_offload).parameters
# diffusers 0.36-0.40 build group offloading on torch.accelerator.current_accelerator().type, which is None on a
# machine without an accelerator; from 0.41 it also runs on CPU-only machines (the CUDA test below covers older ones).
CPU_GROUP_OFFLOAD = (
    not hasattr(torch, "accelerator")
    or torch.accelerator.current_accelerator() is not None
    or (tuple(int(part) for part in diffusers.__version__.split(".")[:2]) >= (0, 41))
)


def _plain_outputs(vae: AutoencoderLite, x: torch.Tensor, z: torch.Tensor):
    with torch.no_grad():
        return vae.encode(x).latent_dist.mean, vae.decode(z).sample


@pytest.mark.skipif(not CPU_GROUP_OFFLOAD, reason="this diffusers needs an accelerator device for group offloading")
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("to_disk", [False, True] if SUPPORTS_DISK else [False])
def test_group_offloading_encode_and_decode_match_plain(variant, offload_type, to_disk, tmp_path):
    vae = VARIANTS[variant](seed=1).eval()
    x = torch.rand(2, 3, 32, 24) * 2 - 1
    z = torch.randn(2, 4, 4, 3)
    mean, image = _plain_outputs(vae, x, z)

    options = dict(offload_type=offload_type)
    if offload_type == "block_level":
        options["num_blocks_per_group"] = 1
    if to_disk:
        options["offload_to_disk_path"] = str(tmp_path)
    vae.enable_group_offload(torch.device("cpu"), offload_device=torch.device("cpu"), **options)

    # encode/decode called directly (the way pipelines do), decode first, twice each so re-onloading is covered.
    for _ in range(2):
        offloaded_image = _decode(vae, z)
        offloaded_mean = _encode(vae, x)
        assert torch.allclose(offloaded_image, image, atol=1e-5), (variant, offload_type, to_disk)
        assert torch.allclose(offloaded_mean, mean, atol=1e-5), (variant, offload_type, to_disk)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to onload to")
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
def test_group_offloading_to_cuda_encode_and_decode(variant, offload_type):
    vae = VARIANTS[variant](seed=1).eval()
    x = torch.rand(2, 3, 32, 24) * 2 - 1
    z = torch.randn(2, 4, 4, 3)
    mean, image = _plain_outputs(vae, x, z)
    options = {"num_blocks_per_group": 1} if offload_type == "block_level" else {}
    vae.enable_group_offload(
        torch.device("cuda"), offload_device=torch.device("cpu"), offload_type=offload_type, **options
    )
    for _ in range(2):
        offloaded_image = _decode(vae, z.cuda())
        offloaded_mean = _encode(vae, x.cuda())
        assert offloaded_image.is_cuda and offloaded_mean.is_cuda
        torch.testing.assert_close(offloaded_image.cpu(), image, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(offloaded_mean.cpu(), mean, atol=1e-4, rtol=1e-4)
    assert all(p.device.type == "cpu" for p in vae.parameters())  # offloaded again after use


def _decode(vae, z):
    with torch.no_grad():
        return vae.decode(z).sample


def _encode(vae, x):
    with torch.no_grad():
        return vae.encode(x).latent_dist.mean


def test_group_offload_block_modules_name_real_submodules():
    for build in VARIANTS.values():
        vae = build()
        children = dict(vae.named_children())
        declared = AutoencoderLite._group_offload_block_modules
        assert {"encoder", "decoder"} <= set(declared)
        # Every declared name is a submodule slot of this class (post_quant_conv is None for some configs).
        assert set(declared) <= {"encoder", "decoder", "post_quant_conv"}
        assert set(children) <= set(declared), f"{set(children) - set(declared)} would share the top-level group"


def test_tiny_decoder_gradient_checkpointing_checkpoints_its_blocks():
    from diffusers_litevae.models.tiny_autoencoder import TinyBlock

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    grads, calls = [], []

    def counting_checkpoint(module, *args):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    for checkpointing in (False, True):
        vae = tiny_autoencoder_lite_tiny(seed=3).train()
        if checkpointing:
            vae.enable_gradient_checkpointing(gradient_checkpointing_func=counting_checkpoint)
            assert vae.decoder.gradient_checkpointing
        vae(x).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in vae.decoder.parameters()]))

    tiny_blocks = sum(isinstance(m, TinyBlock) for m in vae.decoder.modules())
    assert calls.count("TinyBlock") == tiny_blocks > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)

    # No checkpointing (and no calls) without gradients, e.g. when a pipeline decodes.
    calls.clear()
    with torch.no_grad():
        vae.decode(torch.randn(1, 4, 4, 4))
    assert "TinyBlock" not in calls


def test_cast_module_skips_only_the_spurious_fp32_warning(monkeypatch):
    from diffusers_litevae.runtime import cast_module

    calls = []
    original = ModelMixin.to
    monkeypatch.setattr(ModelMixin, "to", lambda self, *a, **k: calls.append(k) or original(self, *a, **k))

    vae = tiny_autoencoder_lite()
    assert cast_module(vae, dtype=torch.float16) is vae and vae.dtype == torch.float16
    assert calls == []  # no float32-pinned modules: nn.Module.to, no warning
    cast_module(vae, device="cpu")
    assert calls == [{"device": "cpu"}]  # device moves keep ModelMixin.to (group-offload checks)

    calls.clear()
    monkeypatch.setattr(vae, "_keep_in_fp32_modules", ["encoder"])
    cast_module(vae, dtype=torch.float32)
    assert calls == [{"dtype": torch.float32}]  # a real fp32 pin: ModelMixin.to and its warning

    linear = cast_module(torch.nn.Linear(2, 2), dtype=torch.float64)
    assert linear.weight.dtype == torch.float64


def test_from_autoencoder_kl_casts_without_model_mixin_warning(monkeypatch):
    from diffusers_litevae.testing_utils import TINY_ENCODER, tiny_autoencoder_kl

    teacher = tiny_autoencoder_kl().to(torch.float16)
    calls = []
    monkeypatch.setattr(ModelMixin, "to", lambda self, *a, **k: calls.append(k))
    lite = AutoencoderLite.from_autoencoder_kl(teacher, encoder=TINY_ENCODER)
    assert lite.dtype == torch.float16 and calls == []


def test_smc_conversion_keeps_the_pretrained_conv_weights():
    from diffusers.models.resnet import ResnetBlock2D

    from diffusers_litevae import SelfModulatedConv2d
    from diffusers_litevae.models.smc import replace_resnet_norms_with_smc

    block = ResnetBlock2D(in_channels=8, out_channels=16, temb_channels=None, groups=4).to(torch.float64)
    originals = {
        name: (getattr(block, name).weight.clone(), getattr(block, name).bias.clone()) for name in ("conv1", "conv2")
    }
    shortcut = block.conv_shortcut.weight.clone()

    assert replace_resnet_norms_with_smc(block) == 1
    for name, (weight, bias) in originals.items():
        smc = getattr(block, name)
        assert isinstance(smc, SelfModulatedConv2d)
        assert smc.weight.dtype == torch.float64
        assert torch.equal(smc.weight, weight) and torch.equal(smc.bias, bias)
        assert torch.equal(smc.modulation, torch.ones_like(smc.modulation)) and smc.gain.item() == 1.0
        # The effective kernel is the pretrained one, demodulated to unit norm per output channel.
        expected = weight / weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        assert torch.allclose(smc.modulated_weight(), expected, atol=1e-6)
    assert isinstance(block.norm1, torch.nn.Identity) and isinstance(block.norm2, torch.nn.Identity)
    assert torch.equal(block.conv_shortcut.weight, shortcut)
    assert replace_resnet_norms_with_smc(block) == 0  # already converted: nothing changes
    block(torch.randn(1, 8, 8, 8, dtype=torch.float64), None)


def test_attention_api_on_a_decoder_without_attention():
    """An attention-free SD decoder has no processors; the calls still work, as on AutoencoderKL (the SD decoder
    with attention is tested through a pipeline in test_pipelines.py)."""
    vae = tiny_autoencoder_lite(use_smc=True, mid_block_add_attention=False).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = vae(x).sample
        assert vae.attn_processors == {}
        vae.fuse_qkv_projections()
        vae.set_default_attn_processor()
        vae.unfuse_qkv_projections()
        assert torch.equal(vae(x).sample, reference)


def test_peft_lora_adapter_on_encoder_and_decoder():
    """PeftAdapterMixin: a LoRA on the encoder's and decoder's convolutions and attention changes the output,
    trains only the adapter weights, and disabling it restores the model exactly."""
    peft = pytest.importorskip("peft", reason="LoRA adapters need peft")
    vae = tiny_autoencoder_lite(seed=0).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = vae(x).sample
    config = peft.LoraConfig(r=2, target_modules=["conv1", "conv2", "to_q", "to_v"], init_lora_weights=False)
    vae.add_adapter(config, adapter_name="style")
    assert vae.active_adapters() == ["style"]
    trainable = {name for name, parameter in vae.named_parameters() if parameter.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    assert any(name.startswith("encoder.") for name in trainable)
    assert any("mid_block.attentions" in name for name in trainable)
    with torch.no_grad():
        assert (vae(x).sample - reference).abs().max() > 1e-3
        vae.disable_adapters()
        assert torch.equal(vae(x).sample, reference)
