"""`litevae push` / conversion/push_to_hub.py, offline: the uploaded folder, its model card, fp16 variant, bad input.

``HfApi`` is replaced by ``create_autospec(HfApi)`` where the push code looks it up; ``HF_HUB_OFFLINE=1`` (conftest)
guarantees no request leaves the machine.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from safetensors import safe_open

from diffusers_litevae import AutoencoderLite
from diffusers_litevae.cli import main
from diffusers_litevae.evaluation import evaluate_vaes
from diffusers_litevae.testing_utils import tiny_autoencoder_kl, tiny_autoencoder_lite

REPO_ID = "someone/litevae-tiny-test"
TEACHER = "org/teacher-vae"
ROOT = Path(__file__).resolve().parents[1]


def _distillation_record(encoder_parameters: int) -> dict:
    """A distillation.json as `litevae distill` writes it (the contract in the project brief)."""
    return {
        "teacher": {
            "name_or_path": TEACHER,
            "type": "autoencoder_kl",
            "latent_channels": 4,
            "scaling_factor": 0.18215,
            "shift_factor": None,
            "has_logvar": True,
        },
        "student": {
            "preset": None,
            "encoder_config": {"encoder_feature_channels": 8},
            "encoder_parameters": encoder_parameters,
        },
        "settings": {
            "learning_rate": 1e-4,
            "train_batch_size": 8,
            "resolution": 128,
            "mixed_precision": "no",
            "loss_weights": {"latent_mse": 1.0, "pixel_l1": 0.1},
        },
        "final_metrics": {
            "step": 200,
            "images_seen": 1600,
            "psnr_student": 24.5,
            "psnr_teacher": 26.0,
            "ssim_student": 0.71,
            "ssim_teacher": 0.75,
            "latent_mse": 0.0123,
            "eval_images": 8,
            "eval_set": "photos-val",
        },
        "curve": [
            {"step": s, "wall_time_s": s * 0.5, "psnr_student": 10 + s / 20, "latent_mse": 1 / (s + 1)}
            for s in range(0, 201, 20)
        ],
        "loss_history": [{"step": s, "loss": 1 / (s + 1)} for s in range(200)],
        "wall_time_s": 100.0,
        "train_time_s": 90.0,
        "train_images_per_s": 16.0,
    }


@pytest.fixture(scope="module")
def pushed_inputs(tmp_path_factory):
    """A distilled-model folder (tiny AutoencoderLite + distillation.json) and a real `evaluate_vaes` summary of it."""
    root = tmp_path_factory.mktemp("push")
    model_dir, teacher_dir = root / "litevae-tiny", root / "teacher"
    model = tiny_autoencoder_lite(seed=0)
    model.save_pretrained(model_dir)
    tiny_autoencoder_kl(seed=1).save_pretrained(teacher_dir)
    encoder_parameters = sum(p.numel() for p in model.encoder.parameters())
    (model_dir / "distillation.json").write_text(json.dumps(_distillation_record(encoder_parameters)))
    Image.new("RGB", (64, 48), "white").save(model_dir / "curve.png")
    (model_dir / "checkpoint-100").mkdir()  # training leftovers must not be uploaded
    (model_dir / "checkpoint-100" / "optimizer.bin").write_bytes(b"\0" * 16)

    generator = torch.Generator().manual_seed(0)
    images = [Image.fromarray(torch.rand(16, 16, 3, generator=generator).mul(255).byte().numpy()) for _ in range(2)]
    result = evaluate_vaes(
        {"student": str(model_dir), "teacher": str(teacher_dir)},
        images,
        resolution=16,
        device="cpu",
        speed_repeats=1,
        grid_images=1,
        grid_tile_height=32,
        progress=False,
        dataset_name="kodak24",
    )
    result.summary["command"] = "litevae eval --vae ... (test)"
    paths = result.save(root / "eval")
    return model_dir, paths["summary"], teacher_dir


@pytest.fixture
def api_class():
    api_class = mock.create_autospec(HfApi)
    with mock.patch("diffusers_litevae.hub.push.HfApi", api_class):
        yield api_class


def _check_upload_folder(folder: Path, summary: dict) -> None:
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert files == {
        "README.md",
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "distillation.json",
        "curve.png",
        "eval/summary.json",
        "eval/per_image.csv",
        "eval/grid.png",
    }
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "AutoencoderLite"

    # weights: fp32 and a real fp16 variant with the same tensors
    with (
        safe_open(folder / "diffusion_pytorch_model.safetensors", "pt") as fp32,
        safe_open(folder / "diffusion_pytorch_model.fp16.safetensors", "pt") as fp16,
    ):
        assert set(fp32.keys()) == set(fp16.keys()) and len(fp32.keys()) > 10
        for key in fp32.keys():
            full, half = fp32.get_tensor(key), fp16.get_tensor(key)
            assert full.dtype == torch.float32 and half.dtype == torch.float16, key
            torch.testing.assert_close(half.float(), full, rtol=1e-3, atol=1e-4)
    loaded = AutoencoderLite.from_pretrained(folder, variant="fp16", torch_dtype=torch.float16)
    assert next(loaded.parameters()).dtype == torch.float16

    # model card: valid YAML metadata with model-index eval results
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "diffusers" and data.license == "apache-2.0"
    assert data.base_model == TEACHER
    assert {"diffusers", "litevae", "vae"} <= set(data.tags)
    results = {result.metric_type: result for result in data.eval_results}
    assert set(results) == {"psnr", "ssim"}  # LPIPS / rFID could not be measured here: no numbers for them
    assert results["psnr"].metric_value == pytest.approx(summary["models"]["student"]["psnr"], abs=1e-4)
    assert results["ssim"].metric_value == pytest.approx(summary["models"]["student"]["ssim"], abs=1e-4)
    assert results["psnr"].dataset_type == "kodak24"

    text = card.text
    assert "import diffusers_litevae" in text
    assert f'pipe.vae = AutoencoderLite.from_pretrained("{REPO_ID}"' in text
    model = AutoencoderLite.from_pretrained(folder)
    encoder_parameters = sum(p.numel() for p in model.encoder.parameters())
    assert f"| Encoder parameters | {encoder_parameters / 1e6:.2f} M |" in text
    student = summary["models"]["student"]
    assert f"{student['encode_images_per_s']:.2f}" in text and f"{student['decode_images_per_s']:.2f}" in text
    assert "`learning_rate`" in text and "`loss_weights.pixel_l1`" in text  # training settings, flattened
    assert "| PSNR (dB) | 24.50 | 26.00 |" in text  # final metrics from distillation.json
    assert "LPIPS not computed" in text  # says why the metric is missing
    assert "![reconstructions](eval/grid.png)" in text and "![training curve](curve.png)" in text


def test_push_uploads_complete_folder(pushed_inputs, api_class, capsys):
    model_dir, summary_file, _ = pushed_inputs
    summary = json.loads(summary_file.read_text())
    seen = {}

    def inspect_upload(**kwargs):  # the folder only exists during the call: check it here
        seen["called"] = True
        _check_upload_folder(Path(kwargs["folder_path"]), summary)

    api_class.return_value.upload_folder.side_effect = inspect_upload
    code = main(
        [
            "push",
            str(model_dir),
            "--metrics",
            str(summary_file),
            "--repo_id",
            REPO_ID,
            "--private",
            "--token",
            "hf_test_token",
            "--commit_message",
            "first upload",
        ]
    )
    assert code == 0 and seen["called"]
    api_class.assert_called_once_with(token="hf_test_token")
    api = api_class.return_value
    api.create_repo.assert_called_once_with(repo_id=REPO_ID, repo_type="model", private=True, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO_ID and kwargs["commit_message"] == "first upload"
    assert not Path(kwargs["folder_path"]).exists()  # the temporary upload folder is cleaned up
    assert f"https://huggingface.co/{REPO_ID}" in capsys.readouterr().out


def test_dry_run_writes_the_exact_folder(pushed_inputs, api_class, tmp_path, capsys):
    model_dir, summary_file, _ = pushed_inputs
    out = tmp_path / "upload"
    # the conversion script is the same command
    spec = importlib.util.spec_from_file_location("push_to_hub_script", ROOT / "conversion" / "push_to_hub.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    code = script.main(
        [str(model_dir), "--metrics", str(summary_file), "--repo_id", REPO_ID, "--dry-run", "--output_dir", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "diffusion_pytorch_model.fp16.safetensors" in printed
    _check_upload_folder(out, json.loads(summary_file.read_text()))
    api_class.assert_not_called()


def _make(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    if kind == "no_config":
        folder.mkdir()
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    elif kind == "autoencoder_kl":
        tiny_autoencoder_kl().save_pretrained(folder)
    elif kind == "no_weights":
        tiny_autoencoder_lite().save_config(folder)
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_metrics", "metrics file not found"),
        ("unknown_label", "has no entry 'nope'"),
        ("ambiguous_metrics", "pick this model's with --metrics_label"),
        ("wrong_model_metrics", "these metrics are not for this model"),
        ("no_config", "no config.json"),
        ("autoencoder_kl", "not an AutoencoderLite"),
        ("no_weights", "no weights"),
        ("missing_folder", "model folder not found"),
        ("no_repo_id", "--repo_id owner/name is required"),
        ("bad_repo_id", "must look like 'owner/name'"),
    ],
)
def test_bad_input_fails_before_any_network_call(pushed_inputs, api_class, tmp_path, capsys, case, message):
    model_dir, summary_file, teacher_dir = pushed_inputs
    metrics, extra = str(summary_file), ["--repo_id", REPO_ID]
    if case == "missing_metrics":
        metrics = str(tmp_path / "summary.json")
    elif case == "unknown_label":
        extra += ["--metrics_label", "nope"]
    elif case == "ambiguous_metrics":  # two entries, neither measured on this folder
        summary = json.loads(summary_file.read_text())
        for entry in summary["models"].values():
            entry["name_or_path"] = str(teacher_dir)
        metrics = str(tmp_path / "other.json")
        Path(metrics).write_text(json.dumps(summary))
    elif case == "wrong_model_metrics":  # the label exists, but it is the teacher's entry
        extra += ["--metrics_label", "teacher"]
    elif case in ("no_config", "autoencoder_kl", "no_weights"):
        model_dir = _make(tmp_path, case)
    elif case == "missing_folder":
        model_dir = tmp_path / "nothing"
    elif case == "no_repo_id":
        extra = []
    elif case == "bad_repo_id":
        extra = ["--repo_id", "not a repo"]
    code = main(["push", str(model_dir), "--metrics", metrics, "--token", "hf_test_token", *extra])
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("litevae push: error:") and len(error.strip().splitlines()) == 1
    api_class.assert_not_called()
    assert not api_class.return_value.create_repo.called and not api_class.return_value.upload_folder.called


def test_missing_token_fails_before_network(pushed_inputs, api_class, monkeypatch, capsys):
    model_dir, summary_file, _ = pushed_inputs
    monkeypatch.setattr("diffusers_litevae.hub.push.get_token", lambda: None)
    assert main(["push", str(model_dir), "--metrics", str(summary_file), "--repo_id", REPO_ID]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    api_class.assert_not_called()
