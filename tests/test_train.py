"""`litevae train` / train_autoencoder: a whole LiteVAE from scratch (tiny models, 32 px, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusers_litevae import AutoencoderLite, AutoencoderLiteTiny
from diffusers_litevae.cli import main as litevae_main
from diffusers_litevae.testing_utils import TINY_ENCODER, save_png, smooth_images
from diffusers_litevae.training import AutoencoderLoss, TrainConfig, train_autoencoder
from diffusers_litevae.training.losses import gaussian_filtered_loss, kl_to_standard_normal, wavelet_loss

RESOLUTION = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """12 smooth 40x48 images; the first two (sorted) are held out for validation."""
    root = tmp_path_factory.mktemp("photos")
    for index, image in enumerate(smooth_images(12, 40, 48, seed=1)):
        save_png(image, root / f"img_{index:02d}.png")
    return root


def _config(photos: Path, output_dir: Path, **overrides) -> TrainConfig:
    values = dict(
        encoder="S",
        encoder_config=dict(TINY_ENCODER),
        decoder_block_out_channels=(8, 16, 16, 16),
        decoder_layers_per_block=1,
        decoder_norm_num_groups=4,
        decoder_attention=False,
        discriminator_block_out_channels=(8, 16),
        train_data_dir=str(photos),
        num_validation_images=2,
        validation_resolution=RESOLUTION,
        resolution_schedule=str(RESOLUTION),
        train_batch_size=4,
        max_train_steps=200,
        learning_rate=5e-3,
        discriminator_learning_rate=2e-3,
        adversarial_weight=0.0,
        validation_steps=1000,
        checkpointing_steps=1000,
        logging_steps=10,
        scaling_images=4,
        output_dir=str(output_dir),
        progress_bar=False,
        seed=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


class _Killed(Exception):
    pass


def test_a_tiny_run_learns_and_writes_a_loadable_model(photos, tmp_path):
    result = train_autoencoder(_config(photos, tmp_path / "out"))
    first, last = result["curve"][0], result["curve"][-1]
    assert first["step"] == 0 and last["step"] == 200
    # Measured: 12.77 dB at step 0, 14.81 dB after 200 steps (random colour fields, a 150 k-parameter model).
    assert last["psnr"] > first["psnr"] + 1.5, (first["psnr"], last["psnr"])
    # Each validation records the training time so far (validation and checkpoints excluded), as distill's do.
    assert first["train_time_s"] == 0 and 0 < last["train_time_s"] <= last["wall_time_s"]
    model = AutoencoderLite.from_pretrained(tmp_path / "out")
    assert model.config.use_smc and type(model) is AutoencoderLite
    # scaling_factor was measured on training crops: latents * scaling_factor have about unit variance there.
    assert model.config.scaling_factor == pytest.approx(result["model"]["scaling_factor"])
    assert model.config.scaling_factor != 1.0 and model.config.shift_factor is None
    summary = json.loads((tmp_path / "out" / "training.json").read_text())
    assert summary["trained_from_scratch"] and summary["final_metrics"]["step"] == 200
    assert (tmp_path / "out" / "curve.png").is_file() or summary["curve"]
    assert (tmp_path / "out" / "discriminator" / "config.json").is_file()

    # `litevae eval` and `litevae push --dry_run` take the folder; the card says how it was made.
    evaluation, upload = tmp_path / "eval", tmp_path / "upload"
    assert (
        litevae_main(
            [
                "eval",
                "--vae",
                f"{tmp_path / 'out'}:lite",
                "--image_dir",
                str(photos),
                "--resolution",
                str(RESOLUTION),
                "--skip_lpips",
                "--skip_rfid",
                "--skip_speed",
                "--grid_images",
                "0",
                "--output_dir",
                str(evaluation),
            ]
        )
        == 0
    )
    assert (
        litevae_main(
            [
                "push",
                str(tmp_path / "out"),
                "--metrics",
                str(evaluation / "summary.json"),
                "--repo_id",
                "someone/litevae-tiny",
                "--dry_run",
                "--output_dir",
                str(upload),
            ]
        )
        == 0
    )
    card = (upload / "README.md").read_text()
    assert "trained from scratch" in card and "training.json" in card and "scaling_factor" in card


@pytest.mark.parametrize("decoder", ["groupnorm", "tiny"])
def test_the_other_decoders_train_too(photos, tmp_path, decoder):
    result = train_autoencoder(_config(photos, tmp_path / decoder, decoder=decoder, max_train_steps=80))
    assert result["curve"][-1]["psnr"] > result["curve"][0]["psnr"] + 1.5
    model = AutoencoderLite.from_pretrained(tmp_path / decoder)
    if decoder == "tiny":
        assert (
            type(model) is AutoencoderLiteTiny and model.config.decoder_channels == model.config.block_out_channels[0]
        )
    else:
        assert type(model) is AutoencoderLite and not model.config.use_smc


def test_the_adversarial_phase_starts_at_the_configured_step(photos, tmp_path):
    result = train_autoencoder(
        _config(
            photos,
            tmp_path / "gan",
            max_train_steps=6,
            adversarial_weight=0.1,
            discriminator_start_step=3,
            logging_steps=1,
        )
    )
    history = {entry["step"]: entry for entry in result["loss_history"]}
    # Step n (1-based) ran with the discriminator on when n - 1 >= discriminator_start_step.
    assert all("discriminator" not in history[step] and "adversarial" not in history[step] for step in (1, 2, 3))
    assert all("discriminator" in history[step] and "adversarial" in history[step] for step in (4, 5, 6))


def test_resume_after_a_kill_equals_an_uninterrupted_run(photos, tmp_path, monkeypatch):
    """Killed after its step-4 checkpoint (discriminator on from step 2) and resumed: the same weights as 8 steps
    in one go, the discriminator's included."""
    import diffusers_litevae.training.checkpointing as module

    common = dict(
        max_train_steps=8,
        checkpointing_steps=4,
        adversarial_weight=0.1,
        discriminator_start_step=2,
        gradient_accumulation_steps=2,
        train_batch_size=2,
        use_ema=True,
        logging_steps=4,
        num_grid_images=0,
    )
    train_autoencoder(_config(photos, tmp_path / "straight", **common))
    real_save = module.save_checkpoint

    def save_then_die(accelerator, checkpoints_dir, step, *args, **kwargs):
        path = real_save(accelerator, checkpoints_dir, step, *args, **kwargs)
        if step == 4:
            raise _Killed
        return path

    monkeypatch.setattr(module, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train_autoencoder(_config(photos, tmp_path / "resumed", **common))
    monkeypatch.setattr(module, "save_checkpoint", real_save)
    assert not (tmp_path / "resumed" / "training.json").exists()
    result = train_autoencoder(_config(photos, tmp_path / "resumed", **common, resume_from_checkpoint="latest"))
    assert result["final_metrics"]["step"] == 8
    names = ["diffusion_pytorch_model.safetensors", "discriminator/diffusion_pytorch_model.safetensors"]
    names += ["checkpoints/checkpoint-8/model.safetensors", "checkpoints/checkpoint-8/model_1.safetensors"]
    for name in names:
        straight, resumed = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert straight.keys() == resumed.keys(), name
        for key in straight:
            assert torch.allclose(straight[key], resumed[key], atol=1e-6), (name, key)


def test_autoencoder_loss_is_the_weighted_sum_of_independent_references():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
    reconstruction = (images + 0.3 * torch.randn(2, 3, 16, 16, generator=generator)).clamp(-1, 1)
    mean, logvar = torch.randn(2, 4, 2, 2, generator=generator), torch.randn(2, 4, 2, 2, generator=generator)
    fake_logits = torch.randn(2, 1, 16, 16, generator=generator)
    weights = dict(reconstruction=1.0, kl=0.01, wavelet=0.1, gaussian=0.2, lpips=0.0, adversarial=0.5)
    total, parts = AutoencoderLoss(weights, wavelet_levels=2)(images, reconstruction, mean, logvar, fake_logits)
    reference = {
        "reconstruction": (reconstruction - images).abs().mean(),
        "kl": (0.5 * (mean**2 + logvar.exp() - 1 - logvar)).mean(),
        "wavelet": wavelet_loss(reconstruction, images, 2),
        "gaussian": gaussian_filtered_loss(reconstruction, images, 1.0),
        "adversarial": -fake_logits.mean(),
    }
    assert torch.allclose(reference["kl"], kl_to_standard_normal(mean, logvar))
    for name, value in reference.items():
        assert torch.allclose(parts[name], value, atol=1e-6), name
    assert torch.allclose(total, sum(weights[name] * value for name, value in reference.items()), atol=1e-6)
    _, parts = AutoencoderLoss(weights)(images, reconstruction, mean, logvar, None)  # before the adversarial phase
    assert "adversarial" not in parts


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = litevae_main(["train", *argv])
    return code, capsys.readouterr().err


def test_bad_input_is_one_error_line_before_training(photos, tmp_path, capsys, monkeypatch):
    import sys

    (tmp_path / "empty").mkdir()
    monkeypatch.setitem(sys.modules, "torchmetrics.image.lpip", None)  # LPIPS cannot load, wherever this runs
    base = ["--train_data_dir", str(photos), "--encoder", "S", "--max_train_steps", "10"]
    base += ["--discriminator_start_step", "5", "--output_dir"]
    cases = {
        "resolution": ([*base, str(tmp_path / "o1"), "--resolution_schedule", "100"], "multiple of 8"),
        "discriminator start": (
            [*base, str(tmp_path / "o2"), "--resolution", "32", "--discriminator_start_step", "-1"],
            "--discriminator_start_step must be >= 0",
        ),
        "lpips": ([*base, str(tmp_path / "o3"), "--resolution", "32", "--lpips_weight", "0.1"], "lpips"),
        "empty folder": (
            [*base, str(tmp_path / "o4"), "--resolution", "32", "--train_data_dir", str(tmp_path / "empty")],
            "holds no",
        ),
    }
    for name, (argv, message) in cases.items():
        code, err = _cli(argv, capsys)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and message in lines[0], (name, err)
        assert not (Path(argv[argv.index("--output_dir") + 1]) / "checkpoints").exists(), name


def test_train_compiles_where_the_policy_says(photos, tmp_path, monkeypatch):
    """--compile defaults to the shared policy (on for CUDA, mocked here); --no-compile keeps eager."""
    import diffusers_litevae.training.from_scratch as from_scratch_module

    asked, compiled = [], []
    monkeypatch.setattr(from_scratch_module, "resolve_compile", lambda flag, device: asked.append(flag) or flag is None)
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kwargs: compiled.append((type(self).__name__, kwargs))
    )
    train_autoencoder(_config(photos, tmp_path / "auto", max_train_steps=1))
    assert asked == [None]
    assert {name for name, _ in compiled} == {"_Reconstruct", "UNetDiscriminator"}
    assert all(kwargs["dynamic"] is False for _, kwargs in compiled)
    compiled.clear()
    train_autoencoder(_config(photos, tmp_path / "eager", max_train_steps=1, compile=False))
    assert asked[-1] is False and compiled == []
