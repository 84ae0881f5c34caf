"""The models and sample images bundled in the package, and `litevae eval` with its built-in defaults."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import diffusers_litevae
from diffusers_litevae import AutoencoderLite, list_pretrained, pretrained_path
from diffusers_litevae.cli import main
from diffusers_litevae.evaluation.vaes import load_reconstruction_model
from diffusers_litevae.testing_utils import tiny_autoencoder_lite

ROOT = Path(__file__).resolve().parents[1]


def test_list_pretrained_and_paths():
    assert list_pretrained() == ["litevae-s-taef2", "taef2"]
    for name in [*list_pretrained(), "samples"]:
        path = Path(pretrained_path(name))
        assert path.is_absolute() and path.is_dir() and path.name == name
    lite = Path(pretrained_path("litevae-s-taef2"))
    assert {"config.json", "diffusion_pytorch_model.safetensors", "LICENSE-TAEF2"} <= {p.name for p in lite.iterdir()}
    taef2 = Path(pretrained_path("taef2"))
    assert {"taef2_encoder.safetensors", "taef2_decoder.safetensors", "LICENSE", "README.md"} <= {
        p.name for p in taef2.iterdir()
    }
    assert "MIT" in (taef2 / "LICENSE").read_text() and "Ollin Boer Bohan" in (taef2 / "README.md").read_text()
    samples = sorted(p.name for p in Path(pretrained_path("samples")).glob("*.png"))
    assert samples == ["kodim03.png", "kodim15.png", "kodim23.png"]
    assert {Image.open(Path(pretrained_path("samples")) / name).size for name in samples} == {(256, 256)}


def test_pretrained_path_unknown_name_lists_available():
    with pytest.raises(ValueError, match="no bundled model named 'litevae-xl'") as info:
        pretrained_path("litevae-xl")
    for name in ("litevae-s-taef2", "taef2", "samples"):
        assert name in str(info.value)


def test_bundled_weights_are_float16():
    for file in [
        Path(pretrained_path("litevae-s-taef2")) / "diffusion_pytorch_model.safetensors",
        *Path(pretrained_path("taef2")).glob("*.safetensors"),
    ]:
        with safe_open(file, "pt") as handle:
            assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}, file.name


def test_bundled_litevae_loads_offline_in_a_fresh_process(tmp_path):
    """From another working directory, offline: float32 model, 32-channel latents, TAEF2's (tiny) decoder."""
    code = textwrap.dedent(
        """
        import json, torch
        from diffusers_litevae import AutoencoderLite, pretrained_path

        vae = AutoencoderLite.from_pretrained(pretrained_path("litevae-s-taef2"), torch_dtype=torch.float32).eval()
        with torch.no_grad():
            latents = vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.mode()
            images = vae.decode(latents).sample
        print(json.dumps(dict(latents=list(latents.shape), images=list(images.shape), dtype=str(vae.dtype),
                              cls=type(vae).__name__, finite=bool(images.isfinite().all()))))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == dict(
        latents=[1, 32, 8, 8], images=[1, 3, 64, 64], dtype="torch.float32", cls="AutoencoderLiteTiny", finite=True
    )


def test_bundled_taef2_loads_with_the_project_loaders(shared_dir):
    from diffusers_litevae.training.teachers import load_teacher

    model = load_reconstruction_model(pretrained_path("taef2"))
    assert model.class_name == "TinyEncoder+TinyDecoder" and model.dtype == torch.float32
    images = torch.rand(1, 3, 64, 64)
    latents = model.encode(images)
    assert latents.shape == (1, 32, 8, 8) and model.decode(latents).shape == (1, 3, 64, 64)
    teacher = load_teacher(pretrained_path("taef2"))
    assert teacher.latent_channels == 32
    # the bundled decoder is the one the bundled LiteVAE carries, and the upstream weights unchanged
    lite = AutoencoderLite.from_pretrained(pretrained_path("litevae-s-taef2"), torch_dtype=torch.float32)
    for key, value in model.vae.decoder.state_dict().items():
        assert torch.equal(lite.decoder.state_dict()[key], value), key
    upstream = torch.load(shared_dir / "weights" / "taef2" / "taef2_encoder.pth", map_location="cpu", weights_only=True)
    for key, value in model.vae.encoder.layers.state_dict().items():
        assert torch.equal(upstream[key].float(), value), key


def test_eval_with_no_arguments_uses_the_bundled_models_and_samples(tmp_path, capsys, monkeypatch):
    import diffusers_litevae.evaluation.run as run_module

    # Timing is tested in test_evaluation.py; here a fixed figure keeps the test short and shows where it goes.
    monkeypatch.setattr(run_module, "measure_throughput", lambda model, images, warmup, repeats: (12.5, 6.25))
    out = tmp_path / "eval"
    assert main(["eval", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 images from the bundled samples" in printed
    lines = {line.split()[0]: line for line in printed.splitlines() if line.startswith(("litevae-s ", "taef2 "))}
    assert set(lines) == {"litevae-s", "taef2"}
    assert all("12.50" in line and "6.25" in line for line in lines.values())  # PSNR, SSIM, img/s on one row
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["litevae-s", "taef2"] and summary["num_images"] == 3
    assert summary["models"]["litevae-s"]["class"] == "AutoencoderLiteTiny"
    assert summary["models"]["taef2"]["class"] == "TinyEncoder+TinyDecoder"
    assert summary["models"]["taef2"]["psnr"] > 27  # TAEF2 on Kodak crops: ~31.6 dB
    # The bundled encoder is trained (a random one scores ~12 dB here): 25.4 dB on Kodak-24 crops.
    assert summary["models"]["litevae-s"]["psnr"] > 25
    for entry in summary["models"].values():
        assert entry["encode_images_per_s"] == 12.5 and entry["speed_batch_size"] == 3 and entry["device"] == "cpu"
    assert Image.open(out / "grid.png").size == (3 * 256, 28 + 3 * 256)  # original | litevae-s | taef2
    assert (
        summary["command"]
        == "litevae eval --resolution 256 --crop square --batch_size 4 --device auto --dtype float32 "
        f"--output_dir {out}"
    )


def test_eval_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: outputs/litevae-eval)" in text and "(default: 256)" in text and "litevae-s" in text


def test_bundle_model_writes_a_float16_folder(tmp_path):
    spec = importlib.util.spec_from_file_location("bundle_pretrained", ROOT / "conversion" / "bundle_pretrained.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tiny_autoencoder_lite().save_pretrained(tmp_path / "model")
    (tmp_path / "card.md").write_text("# a model card\n")
    (tmp_path / "LICENSE").write_text("licence text\n")
    target = script.bundle_model(
        tmp_path / "model",
        "tiny",
        readme=tmp_path / "card.md",
        extra_files={"LICENSE-TAEF2": tmp_path / "LICENSE"},
        output_root=tmp_path / "bundled",
    )
    assert sorted(p.name for p in target.iterdir()) == [
        "LICENSE-TAEF2",
        "README.md",
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert "_name_or_path" not in json.loads((target / "config.json").read_text())
    loaded = AutoencoderLite.from_pretrained(target, torch_dtype=torch.float16)
    assert loaded.dtype == torch.float16
    with pytest.raises(ValueError, match="plain folder name"):
        script.bundle_model(tmp_path / "model", "samples", output_root=tmp_path / "bundled")
    assert diffusers_litevae.pretrained_path is pretrained_path
