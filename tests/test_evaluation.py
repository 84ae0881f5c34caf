"""`litevae eval` and `evaluate_vaes`: metrics that agree with an independent computation, outputs, bad input."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_litevae import AutoencoderLite, TinyDecoder, TinyEncoder
from diffusers_litevae.cli import main
from diffusers_litevae.evaluation import EvalSettings, evaluate_vaes, prepare_image, psnr_per_image, ssim_per_image
from diffusers_litevae.evaluation.settings import EvaluationInputError
from diffusers_litevae.evaluation.vaes import load_reconstruction_model, parse_vae_spec
from diffusers_litevae.testing_utils import tiny_autoencoder_kl, tiny_autoencoder_lite

SIZE = 32  # smallest side that leaves SSIM's 11x11 window room and a 4x4 latent grid


# ---------------------------------------------------------------- independent reference metrics (numpy only)


def reference_psnr(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1] (any shape)."""
    return float(10 * np.log10(1.0 / np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)))


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (C, H, W) images in [0, 1]: 11x11 Gaussian window, sigma 1.5, valid region, mean over channels.

    Written from Wang et al. (2004): local means, variances and covariance from the Gaussian-weighted window.
    """
    coords = np.arange(11) - 5
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(a):  # valid correlation of each channel with the window
        views = np.lib.stride_tricks.sliding_window_view(a, (11, 11), axis=(1, 2))
        return np.einsum("chwij,ij->chw", views, window)

    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def _noisy_pairs(seed: int = 0):
    """Smooth images and noisy copies: SSIM lands mid-range, where a wrong window or constant would show."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(3, 3, 8, 8, generator=generator), size=(40, 48), mode="bilinear")
    noisy = (
        base + torch.randn(base.shape, generator=generator) * torch.tensor([0.02, 0.05, 0.1]).view(3, 1, 1, 1)
    ).clamp(0, 1)
    return noisy, base


def test_psnr_and_ssim_match_independent_numpy_computation():
    reconstructions, originals = _noisy_pairs()
    psnr = psnr_per_image(reconstructions, originals)
    ssim = ssim_per_image(reconstructions, originals)
    assert psnr.shape == ssim.shape == (3,)
    for i in range(3):
        x, y = reconstructions[i].numpy(), originals[i].numpy()
        assert psnr[i].item() == pytest.approx(reference_psnr(x, y), abs=1e-3)
        assert ssim[i].item() == pytest.approx(reference_ssim(x, y), abs=1e-4)
    assert psnr[0] > psnr[1] > psnr[2]  # more noise, lower PSNR
    assert 0.2 < ssim[2] < ssim[0] < 1.0


def test_ssim_matches_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    reconstructions, originals = _noisy_pairs(seed=1)
    ours = ssim_per_image(reconstructions, originals)
    for i in range(3):
        expected = skimage_metrics.structural_similarity(
            reconstructions[i].numpy().astype(np.float64),
            originals[i].numpy().astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        assert ours[i].item() == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------- preprocessing


def test_prepare_image_sizes():
    image = Image.new("RGB", (70, 45))
    assert prepare_image(image, 32).size == (32, 32)
    assert prepare_image(image, 32, crop="multiple_of_8").size == (48, 32)  # 70*32/45 = 49.8 -> 50 -> 48
    assert prepare_image(image, "native").size == (64, 40)
    assert prepare_image(image, 32, resize=False).size == (32, 32)
    # no resize: the crop is the centre of the full-size image, pixel for pixel
    gradient = Image.fromarray(np.tile(np.arange(70, dtype=np.uint8), (45, 1))).convert("RGB")
    crop = np.asarray(prepare_image(gradient, 32, resize=False))
    assert crop[0, :, 0].tolist() == list(range(19, 51))
    assert prepare_image(Image.new("L", (16, 16)), 16).mode == "RGB"
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_image(image, 30)


def test_parse_vae_spec():
    assert parse_vae_spec("path/to/vae:student") == ("path/to/vae", "student")
    assert parse_vae_spec("stabilityai/sd-vae-ft-mse") == ("stabilityai/sd-vae-ft-mse", None)
    assert parse_vae_spec("C:\\models\\vae") == ("C:\\models\\vae", None)


# ---------------------------------------------------------------- the command, end to end


@pytest.fixture
def image_dir(tmp_path):
    """Three smooth synthetic photos-to-be, already at SIZE so preprocessing leaves the pixels untouched."""
    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(3):
        small = torch.rand(1, 3, 4, 4, generator=generator)
        image = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bicubic").clamp(0, 1)[0]
        Image.fromarray(image.mul(255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"img{index}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def vae_dirs(tmp_path):
    lite_dir, kl_dir = tmp_path / "lite", tmp_path / "kl"
    tiny_autoencoder_lite(seed=0).save_pretrained(lite_dir)
    tiny_autoencoder_kl(seed=1).save_pretrained(kl_dir)
    return lite_dir, kl_dir


def _independent_reconstruction(vae, image_path) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.from_numpy(np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255).permute(
        2, 0, 1
    )
    with torch.no_grad():
        latents = vae.encode(pixels[None] * 2 - 1).latent_dist.mode()
        reconstruction = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)[0]
    return reconstruction.numpy(), pixels.numpy()


def test_eval_command_compares_two_vaes(tmp_path, image_dir, vae_dirs, capsys):
    lite_dir, kl_dir = vae_dirs
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--image_dir",
            str(image_dir),
            "--vae",
            f"{lite_dir}:student",
            "--vae",
            str(kl_dir),
            "--resolution",
            str(SIZE),
            "--batch_size",
            "2",
            "--device",
            "cpu",
            "--speed_repeats",
            "1",
            "--grid_images",
            "2",
            "--grid_tile_height",
            "64",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "student" in printed and "LPIPS not computed" in printed and "rFID not computed" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["resolution"] == SIZE
    assert summary["command"].startswith("litevae eval --vae")
    assert set(summary["models"]) == {"student", "kl"}
    for label, cls in (("student", "AutoencoderLite"), ("kl", "AutoencoderKL")):
        entry = summary["models"][label]
        assert entry["class"] == cls
        # no LPIPS/rFID networks here (no torchvision, no Inception weights): null plus a reason, never a number
        assert entry["lpips"] is None and entry["rfid"] is None
        assert "torchvision" in entry["missing_metrics"]["lpips"]
        assert "torch-fidelity" in entry["missing_metrics"]["rfid"].lower()
        assert entry["encode_images_per_s"] > 0 and entry["decode_images_per_s"] > 0
        assert entry["speed_batch_size"] == 2 and entry["speed_image_size"] == [SIZE, SIZE]
        assert entry["device"] == "cpu" and entry["dtype"] == "float32"
    lite, kl = (
        AutoencoderLite.from_pretrained(lite_dir).eval(),
        type(tiny_autoencoder_kl()).from_pretrained(kl_dir).eval(),
    )
    assert summary["models"]["student"]["encoder_parameters"] == sum(p.numel() for p in lite.encoder.parameters())
    assert summary["models"]["kl"]["encoder_parameters"] == sum(
        p.numel() for p in [*kl.encoder.parameters(), *kl.quant_conv.parameters()]
    )
    assert summary["models"]["kl"]["decoder_parameters"] == sum(
        p.numel() for p in [*kl.decoder.parameters(), *kl.post_quant_conv.parameters()]
    )

    with open(out / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {row["model"] for row in rows} == {"student", "kl"}
    for label, vae in (("student", lite), ("kl", kl)):
        model_rows = [row for row in rows if row["model"] == label]
        assert [row["image"] for row in model_rows] == ["img0.png", "img1.png", "img2.png"]
        for row in model_rows:
            reconstruction, original = _independent_reconstruction(vae, image_dir / row["image"])
            assert float(row["psnr"]) == pytest.approx(reference_psnr(reconstruction, original), abs=1e-3)
            assert float(row["ssim"]) == pytest.approx(reference_ssim(reconstruction, original), abs=1e-4)
            assert row["lpips"] == ""
        assert summary["models"][label]["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in model_rows]))

    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 64, 28 + 2 * 64)  # original | student | kl, two rows under a label header
    # the first row's original tile is the first image, scaled to the tile height
    first = np.asarray(Image.open(image_dir / "img0.png").resize((64, 64), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(np.asarray(grid, dtype=float)[28 : 28 + 64, :64] - first).mean() < 1.0


def test_evaluate_vaes_python_api(image_dir):
    """Modules and a TAESD-family pair go in directly; native size keeps the full image."""
    pair = (TinyEncoder(latent_channels=4, channels=8), TinyDecoder(latent_channels=4, channels=8))
    result = evaluate_vaes(
        {"lite": tiny_autoencoder_lite(), "taesd-like": pair},
        image_dir,
        resolution="native",
        device="cpu",
        measure_speed=False,
        compute_lpips=False,
        compute_rfid=False,
        grid_images=0,
        max_images=2,
        progress=False,
    )
    assert result.grid is None and result.summary["num_images"] == 2
    entry = result.summary["models"]["taesd-like"]
    assert entry["class"] == "TinyEncoder+TinyDecoder"
    assert entry["encoder_parameters"] == sum(p.numel() for p in pair[0].parameters())
    assert entry["encode_images_per_s"] is None and "disabled" in entry["missing_metrics"]["lpips"]
    assert {(row["width"], row["height"]) for row in result.per_image} == {(SIZE, SIZE)}


def test_lpips_values_flow_into_outputs_when_a_network_loads(image_dir, monkeypatch):
    """Where LPIPS loads, its per-image values reach the rows and the summary mean (network replaced by a stand-in)."""

    class MeanAbsoluteDifference(torch.nn.Module):  # stands in for torchmetrics' LPIPS network
        def forward(self, pred, target, normalize=False):
            return (pred - target).abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)

    import diffusers_litevae.evaluation.run as run_module
    from diffusers_litevae.evaluation.metrics import LPIPSDistance

    monkeypatch.setattr(run_module, "load_lpips", lambda net_type, device: LPIPSDistance(MeanAbsoluteDifference()))
    result = evaluate_vaes(
        {"lite": tiny_autoencoder_lite()},
        image_dir,
        resolution=SIZE,
        device="cpu",
        measure_speed=False,
        compute_rfid=False,
        grid_images=0,
        progress=False,
    )
    values = [row["lpips"] for row in result.per_image]
    assert all(value > 0 for value in values)
    assert result.summary["models"]["lite"]["lpips"] == pytest.approx(np.mean(values))
    assert "lpips" not in result.summary["models"]["lite"]["missing_metrics"]


def test_taesd_family_folder_loads(tmp_path):
    folder = tmp_path / "taesd-like"
    folder.mkdir()
    torch.save(TinyEncoder(latent_channels=4, channels=8).layers.state_dict(), folder / "tiny_encoder.pth")
    torch.save(TinyDecoder(latent_channels=4, channels=8).layers.state_dict(), folder / "tiny_decoder.pth")
    model = load_reconstruction_model(str(folder))
    assert model.class_name == "TinyEncoder+TinyDecoder"
    assert model.reconstruct(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image_dir", "{tmp}/missing"], "does not exist"),
        (["--image_dir", "{images}", "--resolution", "30"], "multiple of 8"),
        (["--image_dir", "{images}", "--vae", "{lite}"], "two models are labelled"),
        (["--image_dir", "{images}", "--vae", "{tmp}/images"], "not a VAE folder"),
        (["--image_dir", "{images}", "--dataset_name", "{images}"], "at most one of --image_dir"),
        (["--image_dir", "{images}", "--max_images", "0"], "--max_images must be >= 1, got 0."),
        (["--image_dir", "{images}", "--batch_size", "0"], "batch_size must be >= 1, got 0."),
        (["--image_dir", "{images}", *["--vae_subfolder", "vae"] * 2], "give --vae_subfolder once (for all)"),
    ],
)
def test_eval_bad_input_fails_clearly(tmp_path, image_dir, vae_dirs, capsys, extra, message):
    lite_dir, _ = vae_dirs
    fill = dict(tmp=tmp_path, images=image_dir, lite=lite_dir)
    argv = ["eval", "--vae", str(lite_dir), "--output_dir", str(tmp_path / "out")] + [a.format(**fill) for a in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_on_kodak_with_taef2(shared_dir, tmp_path):
    """The real reference: TAEF2's own encoder + decoder on two Kodak centre crops reconstruct at photo quality."""
    taef2 = shared_dir / "weights" / "taef2"
    result = evaluate_vaes(
        {"taef2": str(taef2)},
        shared_dir / "data" / "kodak24",
        resolution=64,
        resize=False,
        max_images=2,
        device="cpu",
        measure_speed=False,
        grid_images=1,
        progress=False,
    )
    entry = result.summary["models"]["taef2"]
    assert entry["class"] == "TinyEncoder+TinyDecoder" and entry["encoder_parameters"] > 1e6
    assert entry["psnr"] > 22 and entry["ssim"] > 0.6


def test_eval_on_a_dataset(tmp_path, image_dir, vae_dirs, monkeypatch):
    """--dataset_name goes through `datasets.load_dataset` (here on a local image folder: no network)."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    lite_dir, _ = vae_dirs
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--dataset_name",
        str(image_dir),
        "--split",
        "train",
        "--max_images",
        "2",
        "--vae",
        str(lite_dir),
        "--resolution",
        str(SIZE),
        "--skip_speed",
        "--device",
        "cpu",
        "--output_dir",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["dataset"] == f"{image_dir}:train"
    assert main([*argv[:-2], "--image_column", "photo", "--output_dir", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_several_sizes_in_one_run_match_separate_runs(tmp_path, image_dir, vae_dirs, capsys):
    """`--resolution 16,native` gives each model's metrics at both sizes, each equal to a run at that size alone."""
    lite_dir, _ = vae_dirs
    settings = dict(device="cpu", resize=False, measure_speed=False, compute_lpips=False, compute_rfid=False)
    alone = {
        size: evaluate_vaes(
            {"lite": str(lite_dir)}, image_dir, resolution=size, grid_images=0, progress=False, **settings
        )
        for size in (16, "native")
    }
    out = tmp_path / "eval"
    argv = ["eval", "--image_dir", str(image_dir), "--vae", f"{lite_dir}:lite", "--resolution", "16,native"]
    argv += ["--no_resize", "--speed_repeats", "1", "--grid_images", "1", "--output_dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "at 16 (no resize, centre crop 16x16)" in printed and "at native (native size" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolutions"] == [16, "native"] and list(summary["sizes"]) == ["16", "native"]
    for key, size in (("16", 16), ("native", "native")):
        measured = summary["sizes"][key]["models"]["lite"]
        reference = alone[size].summary["models"]["lite"]
        assert measured["psnr"] == pytest.approx(reference["psnr"], abs=1e-6)
        assert measured["ssim"] == pytest.approx(reference["ssim"], abs=1e-6)
    # The top-level entry is the first size's, with the speed (timed once, on a first-size batch).
    assert (
        summary["resolution"] == 16
        and summary["models"]["lite"]["psnr"] == summary["sizes"]["16"]["models"]["lite"]["psnr"]
    )
    assert summary["models"]["lite"]["speed_image_size"] == [16, 16]
    with open(out / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((row["image"], row["resolution"], row["width"]) for row in rows) == sorted(
        (f"img{i}.png", size, width) for i in range(3) for size, width in (("16", "16"), ("native", str(SIZE)))
    )


def test_unreadable_images_are_skipped_counted_and_listed(tmp_path, image_dir, vae_dirs, capsys):
    """Damaged files do not stop `litevae eval`: they are listed with their reason; none readable: exit 2."""
    lite_dir, _ = vae_dirs
    good = (image_dir / "img0.png").read_bytes()
    (image_dir / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_dir / "text.jpg").write_text("not a JPEG")
    (image_dir / "empty.png").write_bytes(b"")
    out = tmp_path / "eval"
    argv = ["eval", "--vae", f"{lite_dir}:lite", "--skip_speed", "--grid_images", "0", "--resolution", str(SIZE)]
    assert main([*argv, "--image_dir", str(image_dir), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["num_skipped"] == 3
    reasons = {item["image"]: item["error"] for item in summary["skipped"]}
    assert set(reasons) == {"truncated.png", "text.jpg", "empty.png"}
    assert "UnidentifiedImageError" in reasons["text.jpg"]
    assert "skipped 3 image(s)" in printed and all(f"  {name}: " in printed for name in reasons)

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("text.jpg", "empty.png"):
        (bad / name).write_bytes((image_dir / name).read_bytes())
    assert main([*argv, "--image_dir", str(bad), "--output_dir", str(tmp_path / "bad-eval")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "none of the 2 images" in lines[0] and "could be read" in lines[0], lines
    assert not (tmp_path / "bad-eval").exists()


def test_eval_settings_check_their_values_and_take_the_api_spellings():
    """`EvalSettings` refuses bad values as `litevae eval` reports them; `replace` also takes `evaluate_vaes`' positive
    spellings of the --skip_*/--no_resize switches."""
    for changes, message in [
        (dict(max_images=0), "--max_images must be >= 1, got 0."),
        (dict(batch_size=0), "batch_size must be >= 1, got 0."),
        (dict(crop="round"), "crop must be one of"),
        (dict(resolution="30"), "multiple of 8"),
        (dict(image_dir="a", dataset_name="b"), "at most one of --image_dir"),
        (dict(vae=["a", "b", "c"], vae_subfolder=["x", "y"]), "once per --vae (3), not 2 times"),
    ]:
        with pytest.raises(EvaluationInputError, match=re.escape(message)):
            EvalSettings(**changes)
    settings = EvalSettings().replace(resize=False, compute_lpips=False, measure_speed=True, batch_size=2)
    switches = (settings.no_resize, settings.skip_lpips, settings.skip_rfid, settings.skip_speed)
    assert switches == (True, True, False, False)
    assert settings.batch_size == 2 and EvalSettings(vae=["a", "b"], vae_subfolder=["vae"]).vae_subfolder == ["vae"]
    with pytest.raises(TypeError):
        EvalSettings().replace(no_such_setting=1)
