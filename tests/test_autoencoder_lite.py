"""AutoencoderLite keeps the diffusers VAE contract and the teacher's decoder exactly."""

import json
from pathlib import Path

import pytest
import torch
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from safetensors import safe_open

from diffusers_litevae import AutoencoderLite, AutoencoderLiteTiny, SelfModulatedConv2d, TinyDecoder
from diffusers_litevae.testing_utils import TINY_ENCODER, tiny_autoencoder_kl, tiny_autoencoder_lite

LATENT_SPACE_KEYS = (
    "latent_channels",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "block_out_channels",
    "sample_size",
)


@pytest.mark.parametrize(
    "latent_channels, extra",
    [
        (4, dict(scaling_factor=0.13025, force_upcast=True)),  # SD 1.x / SDXL style
        (
            16,
            dict(
                scaling_factor=1.5305,
                shift_factor=0.0609,
                use_quant_conv=False,
                use_post_quant_conv=False,
                force_upcast=False,
            ),
        ),  # SD3 / FLUX style
        (4, dict(latents_mean=(0.1, 0.2, 0.3, 0.4), latents_std=(1.0, 1.1, 1.2, 1.3))),
    ],
)
def test_from_autoencoder_kl_decodes_exactly_like_the_teacher(latent_channels, extra):
    teacher = tiny_autoencoder_kl(latent_channels, **extra).eval()
    lite = AutoencoderLite.from_autoencoder_kl(teacher, encoder=TINY_ENCODER).eval()
    z = torch.randn(2, latent_channels, 8, 12)
    with torch.no_grad():
        assert torch.equal(lite.decode(z).sample, teacher.decode(z).sample)
    for key in LATENT_SPACE_KEYS:
        expected = teacher.config[key]
        expected = tuple(expected) if isinstance(expected, list) else expected
        got = lite.config[key]
        assert (tuple(got) if isinstance(got, list) else got) == expected, key
    assert (lite.post_quant_conv is None) == (not teacher.config.use_post_quant_conv)
    # Pipelines derive vae_scale_factor from block_out_channels.
    assert 2 ** (len(lite.config.block_out_channels) - 1) == 8


def test_from_autoencoder_kl_keeps_dtype_and_uses_presets():
    teacher = tiny_autoencoder_kl().to(torch.float16)
    lite = AutoencoderLite.from_autoencoder_kl(teacher, encoder="S", encoder_norm_num_groups=8)
    assert lite.dtype == torch.float16
    assert lite.config.encoder_feature_channels == 16
    with pytest.raises(TypeError, match="AutoencoderKL"):
        AutoencoderLite.from_autoencoder_kl(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "override, teacher_value, why",
    [
        (dict(latent_channels=16), 4, "latent space"),
        (dict(scaling_factor=0.5), 0.18215, "latent space"),
        (dict(block_out_channels=(8, 16, 16)), (8, 16, 16, 16), "need its architecture"),
        (dict(layers_per_block=2), 1, "need its architecture"),
        (dict(use_smc=True), False, "Self-Modulated"),
        (dict(force_upcast=False), True, "fp16"),
    ],
)
def test_from_autoencoder_kl_rejects_conflicting_overrides(override, teacher_value, why):
    teacher = tiny_autoencoder_kl()
    ((key, value),) = override.items()
    pattern = rf"{key}={value!r} conflicts with the teacher's {key}={teacher_value!r}; .*{why}"
    with pytest.raises(ValueError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        AutoencoderLite.from_autoencoder_kl(teacher, encoder=TINY_ENCODER, **override)
    with pytest.raises(ValueError, match=f"encoder {key}="):
        AutoencoderLite.from_autoencoder_kl(teacher, encoder={**TINY_ENCODER, **override})


def test_from_autoencoder_kl_accepts_matching_overrides_and_tile_size():
    teacher = tiny_autoencoder_kl(scaling_factor=0.13025)
    lite = AutoencoderLite.from_autoencoder_kl(
        teacher,
        encoder=TINY_ENCODER,
        latent_channels=4,
        scaling_factor=0.13025,
        block_out_channels=[8, 16, 16, 16],
        sample_size=32,
    )
    assert lite.config.scaling_factor == 0.13025 and lite.config.sample_size == 32
    assert lite.tile_sample_min_size == 32


def test_encode_decode_contract():
    vae = tiny_autoencoder_lite().eval()
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        out = vae.encode(x)
        assert isinstance(out, AutoencoderKLOutput)
        dist = out.latent_dist
        assert isinstance(dist, DiagonalGaussianDistribution)
        assert dist.mean.shape == dist.std.shape == (2, 4, 8, 6)
        assert torch.equal(dist.mode(), dist.mean)
        a = dist.sample(generator=torch.Generator().manual_seed(1))
        b = dist.sample(generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and not torch.equal(a, dist.mean)
        (dist_tuple,) = vae.encode(x, return_dict=False)
        assert torch.equal(dist_tuple.mean, dist.mean)

        decoded = vae.decode(dist.mean, return_dict=True, generator=torch.Generator().manual_seed(0))
        assert isinstance(decoded, DecoderOutput) and decoded.sample.shape == x.shape
        (sample,) = vae.decode(dist.mean, return_dict=False)
        assert torch.equal(sample, decoded.sample)
        assert torch.equal(vae(x).sample, decoded.sample)
        sampled = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        assert torch.equal(sampled, vae.decode(a).sample)


def test_slicing_gives_the_same_result():
    vae = tiny_autoencoder_lite().eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        moments, images = vae.encode(x).latent_dist.mean, vae(x).sample
        vae.enable_slicing()
        assert torch.allclose(vae.encode(x).latent_dist.mean, moments, atol=1e-6)
        assert torch.allclose(vae(x).sample, images, atol=1e-5)  # batch-size dependent conv kernels


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    grads = []
    for checkpointing in (False, True):
        vae = tiny_autoencoder_lite(seed=3).train()
        if checkpointing:
            vae.enable_gradient_checkpointing()
            assert vae.encoder.feature_unets[0].gradient_checkpointing and vae.decoder.gradient_checkpointing
        vae(x).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in vae.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_save_load_round_trip_with_safetensors_and_dtype(tmp_path):
    vae = tiny_autoencoder_lite(latent_channels=16, shift_factor=0.1, scaling_factor=0.5).eval()
    vae.save_pretrained(tmp_path / "fp32")
    assert (tmp_path / "fp32" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = AutoencoderLite.from_pretrained(tmp_path / "fp32").eval()
    assert loaded.config.shift_factor == 0.1 and loaded.config.latent_channels == 16
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x).sample, vae(x).sample)
    half = AutoencoderLite.from_pretrained(tmp_path / "fp32", torch_dtype=torch.float16)
    assert half.dtype == torch.float16


def test_fp16_variant_holds_real_fp16_tensors(tmp_path):
    vae = tiny_autoencoder_lite()
    vae.save_pretrained(tmp_path)
    # diffusers' variant only renames the file: cast first.
    vae.to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    with safe_open(str(tmp_path / "diffusion_pytorch_model.fp16.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(name).dtype for name in f.keys()}
    with safe_open(str(tmp_path / "diffusion_pytorch_model.safetensors"), "pt") as f:
        full_dtypes = {f.get_tensor(name).dtype for name in f.keys()}
    assert dtypes == {torch.float16} and full_dtypes == {torch.float32}
    loaded = AutoencoderLite.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    assert loaded.dtype == torch.float16


def test_mismatched_config_fails_with_a_clear_message(tmp_path):
    folder = tmp_path / "model"
    tiny_autoencoder_lite().save_pretrained(folder)
    with pytest.raises(ValueError, match=r"config overrides \['latent_channels'\] change the architecture") as info:
        AutoencoderLite.from_pretrained(folder, latent_channels=8)
    assert repr(str(folder)) in str(info.value) and "drop them" in str(info.value)
    # diffusers' own error, naming the weight that does not fit, is kept as the cause (not rewritten).
    assert type(info.value.__cause__) is ValueError and "decoder.conv_in.weight" in str(info.value.__cause__)

    config = json.loads((folder / "config.json").read_text())
    config["encoder_feature_channels"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json was edited.*different architecture.*re-save") as info:
        AutoencoderLite.from_pretrained(folder)
    assert repr(str(folder)) in str(info.value)
    assert "encoder.feature_unets" in str(info.value.__cause__)

    tiny_autoencoder_kl().save_pretrained(tmp_path / "kl")
    with pytest.raises(ValueError, match="class AutoencoderKL.*not an AutoencoderLite.*from_autoencoder_kl"):
        AutoencoderLite.from_pretrained(tmp_path / "kl")

    with pytest.raises(OSError):  # a missing folder is not rewrapped
        AutoencoderLite.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 4, 32, 32), r"expects 3 input channels.*got 4"),
        ((1, 1, 32, 32), r"expects 3 input channels"),
        ((3, 32, 32), r"4D tensor \(batch, 3, H, W\)"),
        ((32, 32), r"4D tensor \(batch, 3, H, W\)"),
        ((1, 3, 36, 32), r"multiples of 8.*got H x W = 36 x 32.*32 x 32"),
        ((1, 3, 32, 30), r"multiples of 8"),
    ],
)
def test_bad_images_raise_value_errors_naming_the_expected_shape(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_autoencoder_lite().encode(torch.randn(*shape))


def test_bad_latents_raise_value_errors():
    vae = tiny_autoencoder_lite()
    with pytest.raises(ValueError, match=r"latents shaped \(batch, 4, h, w\)"):
        vae.decode(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match=r"latents shaped"):
        vae.decode(torch.randn(4, 4, 4))


def test_inconsistent_configs_are_rejected():
    with pytest.raises(ValueError, match="set wavelet_levels=2"):
        AutoencoderLite(block_out_channels=(8, 16, 16), norm_num_groups=4, **TINY_ENCODER)
    with pytest.raises(ValueError, match=r"at least 2 block_out_channels.*\(8,\)"):
        AutoencoderLite(wavelet_levels=0, block_out_channels=(8,), norm_num_groups=4, **TINY_ENCODER)
    with pytest.raises(ValueError, match=r"at least one wavelet level.*wavelet_levels=0"):
        AutoencoderLite(wavelet_levels=0, block_out_channels=(8, 8), norm_num_groups=4, **TINY_ENCODER)
    with pytest.raises(ValueError, match="set wavelet_levels=1"):
        AutoencoderLiteTiny(decoder_num_blocks=(1, 1), decoder_midblock_gn=(False, False), **TINY_ENCODER)


def test_a_one_block_autoencoder_kl_is_rejected_when_converted():
    """A default AutoencoderKL() has one block (no downsampling): no LiteVAE encoder fits it, say so at once."""
    from diffusers import AutoencoderKL

    with pytest.raises(ValueError, match=r"block_out_channels=\(64,\), one block.*at least 2 block_out_channels"):
        AutoencoderLite.from_autoencoder_kl(AutoencoderKL(), encoder=TINY_ENCODER)


def test_wrong_dtypes_name_the_mismatch_and_the_fix():
    vae = tiny_autoencoder_lite()  # float32 weights
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match=r"images of dtype torch.float16, but the model's weights are torch.float32"):
        vae.encode(images.half())
    with pytest.raises(ValueError, match=r"latents of dtype torch.bfloat16.*\.to\(vae.dtype\)"):
        vae.decode(torch.randn(1, 4, 4, 4, dtype=torch.bfloat16))
    pixels = ((images + 1) * 127.5).to(torch.uint8)
    with pytest.raises(ValueError, match=r"float images in \[-1, 1\]; got a torch.uint8 tensor.*/ 127.5 - 1"):
        vae.encode(pixels)
    with pytest.raises(ValueError, match=r"float latents; got a torch.int64"):
        vae.decode(torch.zeros(1, 4, 4, 4, dtype=torch.long))
    # Under autocast the input dtype is autocast's business: mixed-precision training feeds bf16 tensors.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        latents = vae.encode(images.bfloat16()).latent_dist.mode()
        assert vae.decode(latents).sample.shape == (1, 3, 32, 32)
    with torch.no_grad():  # the fix the message names works
        assert vae.encode(pixels.float() / 127.5 - 1).latent_dist.mean.shape == (1, 4, 4, 4)


def test_self_modulated_convolution_decoder():
    vae = tiny_autoencoder_lite(use_smc=True)
    smc = [m for m in vae.decoder.modules() if isinstance(m, SelfModulatedConv2d)]
    resnets = [m for m in vae.decoder.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert len(smc) == 2 * len(resnets) > 0
    assert all(isinstance(r.norm1, torch.nn.Identity) and isinstance(r.norm2, torch.nn.Identity) for r in resnets)
    # Demodulation: every output kernel has norm |gain|, whatever the raw weights and modulation.
    conv = smc[0]
    with torch.no_grad():
        conv.weight.mul_(7.0)
        conv.modulation.uniform_(0.5, 2.0)
        conv.gain.fill_(1.5)
    norms = conv.modulated_weight().flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 1.5), atol=1e-4)
    vae(torch.rand(1, 3, 32, 32) * 2 - 1).sample.mean().backward()
    assert conv.modulation.grad is not None and conv.gain.grad is not None


def test_tiny_decoder_variant_matches_its_source_decoder():
    torch.manual_seed(0)
    tiny = TinyDecoder(latent_channels=8, channels=16, num_blocks=(2, 1, 1, 1), midblock_gn=(True, False, False, False))
    lite = AutoencoderLiteTiny.from_tiny_decoder(tiny, encoder=TINY_ENCODER).eval()
    assert lite.config.latent_channels == 8 and lite.config.decoder_channels == 16
    assert lite.config.decoder_num_blocks == (2, 1, 1, 1) and lite.config.scaling_factor == 1.0
    # Only keys that mean something for this model, plus the two pipelines read (as on AutoencoderTiny).
    assert not {"up_block_types", "use_post_quant_conv", "use_smc", "layers_per_block"} & set(lite.config)
    assert lite.config.block_out_channels == (16,) * 4 and lite.config.force_upcast is False
    z = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        assert torch.equal(lite.decode(z).sample, tiny.eval()(z) * 2 - 1)
    assert lite.encode(torch.rand(1, 3, 32, 32)).latent_dist.mean.shape == (1, 8, 4, 4)


def test_taef2_weights_load_and_reconstruct(shared_dir):
    from diffusers_litevae import load_tiny_decoder, load_tiny_encoder

    weights = shared_dir / "weights" / "taef2"
    encoder, decoder = (
        load_tiny_encoder(weights / "taef2_encoder.pth"),
        load_tiny_decoder(weights / "taef2_decoder.pth"),
    )
    assert sum(p.numel() for p in encoder.parameters()) == 1338528
    # A smooth synthetic image reconstructs well through the real pretrained pair.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    image = torch.stack([xx, yy, (xx + yy) / 2])[None]
    with torch.no_grad():
        latents = encoder(image)
        assert latents.shape == (1, 32, 8, 8)
        psnr = -10 * torch.log10((decoder(latents).clamp(0, 1) - image).square().mean())
    assert psnr > 25, psnr
    lite = AutoencoderLiteTiny.from_tiny_decoder(decoder, encoder="S")
    with torch.no_grad():
        assert torch.equal(lite.decode(latents).sample, decoder(latents) * 2 - 1)


def test_tiny_checkpoint_loader_errors(tmp_path):
    from diffusers_litevae import load_tiny_decoder

    with pytest.raises(FileNotFoundError, match="not found"):
        load_tiny_decoder(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        load_tiny_decoder(tmp_path / "junk.pth")


def test_cli_info_prints_presets(capsys):
    from diffusers_litevae.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "6.751 M" in out and "1.036 M" in out


def test_cli_help_imports_neither_torch_nor_diffusers():
    import subprocess
    import sys

    probe = (
        "import sys, contextlib, io\n"
        "from diffusers_litevae.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['push', '--help'])\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
        "# diffusers' pipeline loader finds the VAE class in sys.modules: registered, not yet run\n"
        "print('AutoencoderLite' in vars(sys.modules['diffusers_litevae.models.autoencoder_lite']))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "False"]


def test_package_import_keeps_autoencoder_lite_resolvable_for_pipelines():
    import subprocess
    import sys

    # inspect.getmodule scans sys.modules while torch imports; that must not run the deferred module half-way.
    probe = (
        "import diffusers_litevae\n"
        # What diffusers' pipeline loader does with the library name recorded in model_index.json.
        "import importlib\n"
        "module = importlib.import_module('diffusers_litevae.models.autoencoder_lite')\n"
        "from diffusers_litevae import AutoencoderLite\n"
        "assert module.AutoencoderLite is AutoencoderLite and module.ModelMixin is not None\n"
        "assert diffusers_litevae.models.autoencoder_lite is module\n"
        "from diffusers_litevae.models.autoencoder_lite import *\n"
        "print(AutoencoderLite.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "diffusers_litevae.models.autoencoder_lite"


def test_every_subcommand_help_shows_defaults():
    import argparse

    from diffusers_litevae.cli import SUBCOMMANDS, DefaultsHelpFormatter, build_parser

    for name in SUBCOMMANDS:
        parser = build_parser([name])
        (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        sub = subparsers.choices[name]
        assert sub.formatter_class is DefaultsHelpFormatter, name  # one formatter for every subcommand
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                shown = f"default: {action.default}" in text or "%(default)" in (action.help or "")
                # A help text that states its default itself ("Default: the bundled ...") is not given a second one.
                assert shown or "default" in (action.help or "").lower(), (name, action.dest)

    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--no_help", default="bicubic")
    parser.add_argument("--named", default=3, help="already says it (default: 3)")
    parser.add_argument("--unset", default=None, help="computed when not given")
    parser.add_argument("--switch", action="store_true", help="a switch")
    text = " ".join(parser.format_help().split())
    assert "--no_help NO_HELP default: bicubic" in text
    assert text.count("default: 3") == 1 and "default: None" not in text and "default: False" not in text


def test_misaligned_tile_size_is_rejected():
    vae = tiny_autoencoder_lite()
    vae.enable_tiling()
    vae.tile_sample_min_size = 36
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.encode(torch.rand(1, 3, 72, 72))


def test_readme_python_snippets_import_every_name_they_use():
    """Each README Python block is valid Python, and every name it reads is imported or assigned in the README's
    blocks (they build on each other) or is a builtin: a snippet pasted as it is does not hit a NameError."""
    import ast
    import builtins
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 3
    trees = [ast.parse(block) for block in blocks]
    bound = set(dir(builtins))
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
    used = {node.id for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert used <= bound, f"README snippets use names they never import or define: {sorted(used - bound)}"


V01_FOLDERS = Path(__file__).parent / "fixtures" / "v0.1"


@pytest.mark.parametrize(
    "folder, loader, expected_class",
    [
        ("autoencoder_lite_sd_decoder", AutoencoderLite, AutoencoderLite),
        ("autoencoder_lite_tiny_decoder", AutoencoderLite, AutoencoderLiteTiny),
        ("autoencoder_lite_tiny_decoder", AutoencoderLiteTiny, AutoencoderLiteTiny),
    ],
)
def test_folders_saved_by_version_0_1_load_and_reconstruct_as_they_did(folder, loader, expected_class, tmp_path):
    """Version 0.1 saved both decoders as one class (``decoder_type``, ``tiny_decoder_*`` and the SD keys in every
    config). Those folders load as the class their decoder now has, reconstruct as 0.1 did (``expected.pt``
    was written by 0.1's code), and save in the new format, with no key of the other decoder."""
    model = loader.from_pretrained(V01_FOLDERS / folder).eval()
    assert type(model) is expected_class
    expected = torch.load(V01_FOLDERS / folder / "expected.pt")
    with torch.no_grad():  # to float rounding: the thread count changes the order of convolution sums
        torch.testing.assert_close(model(expected["input"]).sample, expected["output"], rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["_class_name"] == expected_class.__name__ and "decoder_type" not in saved
    assert not any(key.startswith("tiny_") for key in saved)
    assert ("use_post_quant_conv" in saved) == (expected_class is AutoencoderLite)
    assert type(AutoencoderLite.from_pretrained(tmp_path)) is expected_class


def test_the_tiny_class_refuses_a_folder_of_the_sd_decoder_class():
    with pytest.raises(ValueError, match=r"holds an AutoencoderLite .* not an AutoencoderLiteTiny"):
        AutoencoderLiteTiny.from_pretrained(V01_FOLDERS / "autoencoder_lite_sd_decoder")


def test_compile_repeated_blocks_compiles_each_encoder_resblock_and_nothing_else():
    # Regional compilation (diffusers' convention): one graph per ResBlock shape, not one per model and input size.
    from diffusers_litevae.models.litevae_encoder import LiteVAEResBlock

    vae = tiny_autoencoder_lite()
    vae.compile_repeated_blocks()
    compiled = [module for module in vae.modules() if getattr(module, "_compiled_call_impl", None) is not None]
    blocks = [module for module in vae.encoder.modules() if isinstance(module, LiteVAEResBlock)]
    assert blocks and compiled == blocks
    # One forward serves every block width: dynamo must keep a graph per width, not stop at its default of 8.
    import torch._dynamo

    config = torch._dynamo.config
    assert getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 0)) >= 64
