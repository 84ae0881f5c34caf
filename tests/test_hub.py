"""`litevae push` / conversion/push_to_hub.py, offline: the uploaded folder, its model card, fp16 variant, bad input.

``HfApi`` is replaced by ``create_autospec(HfApi)`` where the push code looks it up; ``HF_HUB_OFFLINE=1`` (conftest)
guarantees no request leaves the machine.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open

from diffusers_litevae import AutoencoderLite
from diffusers_litevae.cli import main
from diffusers_litevae.evaluation import evaluate_vaes
from diffusers_litevae.testing_utils import (
    TINY_ENCODER,
    save_png,
    smooth_images,
    tiny_autoencoder_kl,
    tiny_autoencoder_lite,
)
from diffusers_litevae.training import DistillConfig, distill

REPO_ID = "someone/litevae-tiny-test"
TEACHER = "org/teacher-vae"
TEACHER_DESCRIPTION = "A tiny SD-layout AutoencoderKL trained for this test"
ROOT = Path(__file__).resolve().parents[1]
SIZES = (16, "native")  # evaluation sizes: 16 px centre crops and whole 24x32 images


@pytest.fixture(scope="module")
def pushed_inputs(tmp_path_factory):
    """A real `litevae distill` output folder (4 steps against a tiny AutoencoderKL teacher) and a real two-size
    `evaluate_vaes` summary of it."""
    root = tmp_path_factory.mktemp("push")
    teacher_dir, photos = root / "teacher", root / "photos"
    tiny_autoencoder_kl(seed=1).save_pretrained(teacher_dir)
    for index, image in enumerate(smooth_images(6, 24, 32, seed=1)):
        save_png(image, photos / f"img_{index}.png")
    model_dir = root / "litevae-tiny"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest
    try:
        distill(
            DistillConfig(
                teacher=str(teacher_dir),
                student=None,
                student_config=dict(TINY_ENCODER),
                train_data_dir=str(photos),
                num_validation_images=2,
                resolution_schedule="16:2,24",
                train_batch_size=2,
                max_train_steps=4,
                lr_warmup_steps=0,
                validation_steps=2,
                checkpointing_steps=2,  # leaves checkpoints/ in the folder: they must not be uploaded
                output_dir=str(model_dir),
                progress_bar=False,
                seed=0,
            )
        )
    finally:
        torch.set_num_threads(previous)
    assert (model_dir / "distillation.json").is_file() and (model_dir / "curve.png").is_file()

    result = evaluate_vaes(
        {"student": str(model_dir), "teacher": str(teacher_dir)},
        photos,
        resolution=SIZES,
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


def _check_card_describes_its_folder(folder: Path, text: str) -> None:
    """No placeholder; "Files" lists exactly the folder's files; every relative link and image is in the folder."""
    assert "YOUR_USERNAME" not in text and "stage-" not in text
    files_section = text.split("## Files", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([^`]+)`$", files_section, flags=re.MULTILINE))
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert listed == present | {"README.md"}, (listed, present)
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (folder / target).is_file(), f"the card links {target!r}, which is not in {folder}"


def _check_upload_folder(folder: Path, summary: dict, model_dir: Path) -> None:
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

    # model card: valid YAML metadata with model-index eval results, at both sizes
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "diffusers" and data.license == "apache-2.0"
    assert data.base_model == TEACHER and data.model_name == "litevae-tiny-test"
    assert {"diffusers", "litevae", "vae"} <= set(data.tags)
    results = {(result.metric_type, result.metric_config): result for result in data.eval_results}
    # LPIPS / rFID could not be measured here: no numbers for them
    assert set(results) == {(metric, f"resolution={size}") for metric in ("psnr", "ssim") for size in SIZES}
    for size in SIZES:
        measured = summary["sizes"][str(size)]["models"]["student"]
        assert results[("psnr", f"resolution={size}")].metric_value == pytest.approx(measured["psnr"], abs=1e-4)
        assert results[("ssim", f"resolution={size}")].metric_value == pytest.approx(measured["ssim"], abs=1e-4)
    assert results[("psnr", "resolution=16")].dataset_type == "kodak24"

    text = card.text
    _check_card_describes_its_folder(folder, text)
    assert "import diffusers_litevae" in text
    assert f'pipe.vae = AutoencoderLite.from_pretrained("{REPO_ID}"' in text and "pretrained_path" not in text
    model = AutoencoderLite.from_pretrained(folder)
    encoder_parameters = sum(p.numel() for p in model.encoder.parameters())
    assert f"| Encoder parameters | {encoder_parameters / 1e6:.2f} M |" in text
    assert model.post_quant_conv is not None and "(including post_quant_conv)" in text
    student = summary["models"]["student"]
    assert f"{student['encode_images_per_s']:.2f}" in text and f"{student['decode_images_per_s']:.2f}" in text
    # every size has its row, with that size's numbers
    for size, shown in ((16, "16 px"), ("native", "whole images")):
        psnr = summary["sizes"][str(size)]["models"]["student"]["psnr"]
        assert f"| {shown} | **student (this model)** | AutoencoderLite | {psnr:.2f} |" in text
    assert "- Trained at: 16 px crops until step 2, then 24 px crops (`--resolution_schedule 16:2,24`)." in text
    sizes = summary["sizes"]
    assert (
        f"- Measured at: 16 px ({sizes['16']['preprocessing']}); whole images ({sizes['native']['preprocessing']})."
        in text
    )
    # the teacher: described once, then named by its short name
    assert text.count(TEACHER_DESCRIPTION) == 1 and f"distilled against `{model_dir.parent.name}" not in text
    assert "distilled against `teacher` (A tiny SD-layout" in text
    record = json.loads((model_dir / "distillation.json").read_text())
    final = record["final_metrics"]
    assert f"| PSNR (dB) | {final['psnr_student']:.2f} | {final['psnr_teacher']:.2f} |" in text
    assert "`learning_rate`" in text and "`student_config.encoder_feature_channels`" in text  # settings, flattened
    assert "LPIPS not computed" in text  # says why the metric is missing
    assert "![reconstructions](eval/grid.png)" in text and "![training curve](curve.png)" in text


def _push_argv(model_dir, summary_file, *extra):
    return [
        str(model_dir),
        "--metrics",
        str(summary_file),
        "--metrics_label",
        "student",
        "--repo_id",
        REPO_ID,
        "--base_model",
        TEACHER,
        "--teacher_description",
        TEACHER_DESCRIPTION,
        *extra,
    ]


def test_push_uploads_complete_folder(pushed_inputs, api_class, capsys):
    model_dir, summary_file, _ = pushed_inputs
    summary = json.loads(summary_file.read_text())
    seen = {}

    def inspect_upload(**kwargs):  # the folder only exists during the call: check it here
        seen["called"] = True
        _check_upload_folder(Path(kwargs["folder_path"]), summary, model_dir)

    api_class.return_value.upload_folder.side_effect = inspect_upload
    code = main(
        [
            "push",
            *_push_argv(model_dir, summary_file),
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
    code = script.main(_push_argv(model_dir, summary_file, "--dry-run", "--output_dir", str(out)))
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "diffusion_pytorch_model.fp16.safetensors" in printed
    _check_upload_folder(out, json.loads(summary_file.read_text()), model_dir)
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
        ("autoencoder_kl", "not a LiteVAE model"),
        ("no_weights", "no weights"),
        ("missing_folder", "model folder not found"),
        ("no_repo_id", "the following arguments are required: --repo_id"),
        ("no_repo_id_dry_run", "the following arguments are required: --repo_id"),  # the card needs the repo id
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
    elif case == "no_repo_id_dry_run":
        extra = ["--dry_run", "--output_dir", str(tmp_path / "dry")]
    elif case == "no_repo_id":
        extra = []
    elif case == "bad_repo_id":
        extra = ["--repo_id", "not a repo"]
    try:
        code = main(["push", str(model_dir), "--metrics", metrics, "--token", "hf_test_token", *extra])
    except SystemExit as exit:  # argparse's own checks (a required flag) end the same way, one line and code 2
        code = exit.code
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


def _bundle_script():
    spec = importlib.util.spec_from_file_location("bundle_pretrained", ROOT / "conversion" / "bundle_pretrained.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_bundle_writes_the_card_from_litevae_eval_on_the_bundled_folder(pushed_inputs, tmp_path, capsys):
    """One command bundles a distilled folder, measures the float16 bundle with `litevae eval` and writes its card;
    --card_only re-measures and rewrites the card without touching the weights."""
    model_dir, _, teacher_dir = pushed_inputs
    script = _bundle_script()
    photos = model_dir.parent / "photos"
    card_args = [
        "--eval_image_dir",
        str(photos),
        "--compare",
        f"{teacher_dir}:teacher",
        "--eval_resolutions",
        "16,native",
        "--eval_args",
        "--skip_speed --grid_images 0 --batch_size 2",
        "--eval_output_dir",
        str(tmp_path / "eval"),
        "--teacher_description",
        TEACHER_DESCRIPTION,
        "--license",
        "mit",
    ]
    root = tmp_path / "bundled"
    assert script.main([str(model_dir), "--name", "litevae-tiny", "--output_root", str(root), *card_args]) == 0
    target = root / "litevae-tiny"
    card = ModelCard.load(target / "README.md")
    text = card.text
    _check_card_describes_its_folder(target, text)
    assert {"distillation.json", "curve.png", "eval/summary.json"} <= {
        p.relative_to(target).as_posix() for p in target.rglob("*")
    }
    assert 'AutoencoderLite.from_pretrained(pretrained_path("litevae-tiny"), torch_dtype=torch.float32)' in text
    assert 'from_pretrained("someone' not in text and "variant=" not in text  # no Hub repo, no fp16 variant file
    summary = json.loads((target / "eval" / "summary.json").read_text())
    # the metrics are litevae eval's, on the bundled (float16) folder, and the card quotes that command
    assert Path(summary["models"]["litevae-tiny"]["name_or_path"]).resolve() == target.resolve()
    assert summary["command"] in text and "--resolution 16,native" in summary["command"]
    assert "--no_resize" in summary["command"]
    assert set(summary["sizes"]) == {"16", "native"} and card.data.license == "mit"
    weights = (target / "diffusion_pytorch_model.safetensors").read_bytes()

    summary["sizes"]["16"]["models"]["litevae-tiny"]["psnr"] = -1.0  # so that a rewritten card shows
    (target / "eval" / "summary.json").write_text(json.dumps(summary))
    assert script.main(["--card_only", "--name", "litevae-tiny", "--output_root", str(root), *card_args]) == 0
    assert (target / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert "-1.00" not in (target / "README.md").read_text()  # re-measured, not the edited file
    capsys.readouterr()
    with pytest.raises(SystemExit):  # a card needs measurements
        script.main(["--card_only", "--name", "litevae-tiny", "--output_root", str(root)])
    assert "--card_only needs --eval_image_dir" in capsys.readouterr().err


def test_the_shipped_card_describes_the_shipped_folder():
    """The bundled litevae-s-taef2 card: loads offline by name, lists and links only its own files, describes its
    tiny decoder truthfully, and quotes `litevae eval` run on that float16 folder at three sizes."""
    from diffusers_litevae import pretrained_path

    folder = Path(pretrained_path("litevae-s-taef2"))
    card = ModelCard.load(folder / "README.md")
    text = card.text
    _check_card_describes_its_folder(folder, text)
    assert 'pretrained_path("litevae-s-taef2")' in text
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderLiteTiny" and "up_block_types" not in config
    assert "post_quant_conv)" not in text.replace("no post_quant_conv)", "")
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    assert "--vae src/diffusers_litevae/pretrained/litevae-s-taef2:litevae-s-taef2" in summary["command"]
    assert summary["command"] in text and "--no_resize" in summary["command"]
    assert set(summary["sizes"]) == {"256", "512", "native"}
    for size, shown in (("256", "256 px"), ("512", "512 px"), ("native", "whole images")):
        psnr = summary["sizes"][size]["models"]["litevae-s-taef2"]["psnr"]
        assert f"| {shown} | **litevae-s-taef2 (this model)** | AutoencoderLiteTiny | {psnr:.2f} |" in text
    assert "- Trained at: " in text and "- Measured at: 256 px" in text
    assert card.data.model_name == "litevae-s-taef2"


def test_the_shipped_card_is_what_write_card_writes(tmp_path):
    """Regenerating the bundled litevae-s-taef2 card from its own folder (the command in
    conversion/bundle_pretrained.py's docstring, without re-measuring) gives the committed README.md byte for byte."""
    import shutil

    from diffusers_litevae import pretrained_path

    shipped = Path(pretrained_path("litevae-s-taef2"))
    folder = tmp_path / "litevae-s-taef2"
    shutil.copytree(shipped, folder)
    (folder / "README.md").unlink()
    description = "TAEF2, the Tiny AutoEncoder for FLUX.2 by Ollin Boer Bohan, MIT licence"
    card = _bundle_script().write_card(folder, folder.name, folder / "eval" / "summary.json", None, "mit", description)
    assert card.read_bytes() == (shipped / "README.md").read_bytes()


def test_push_to_hub_from_python(pushed_inputs, api_class, tmp_path):
    """The Python call behind `litevae push`: the card's options in CardOptions, the upload's settings as keyword
    overrides of PushSettings; the card's name defaults to the repo's."""
    from diffusers_litevae.hub import CardOptions, push_to_hub

    assert CardOptions(repo_id=REPO_ID).title == "litevae-tiny-test"
    assert CardOptions(bundled_name="litevae-s").title == "litevae-s"
    assert CardOptions(repo_id=REPO_ID, bundled_name="litevae-s", name="mine").title == "mine"
    model_dir, summary_file, _ = pushed_inputs
    out = tmp_path / "upload"
    card = CardOptions(repo_id=REPO_ID, name="tiny", license="mit", pipeline_id="org/pipeline")
    assert push_to_hub(model_dir, summary_file, card, "student", output_dir=str(out), dry_run=True) == out
    text = (out / "README.md").read_text()
    assert text.startswith("---\n") and "\n# tiny\n" in text and "license: mit" in text
    assert 'DiffusionPipeline.from_pretrained("org/pipeline"' in text
    api_class.assert_not_called()
