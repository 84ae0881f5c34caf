"""Every command on a folder of good photos mixed with damaged and unusual files (made by ``damaged_images``), and
on the same files as rows of a Hugging Face dataset: no traceback, every good photo used, every file either used or
listed as skipped with a count. Bundled models are
named on the command line (``--teacher taef2``, ``--vae litevae-s-taef2``, cache-latents' default ``--vae``), and a
quick ``litevae train`` that ends before the adversarial phase runs with a warning."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
from damaged_images import make_damaged_folder

from diffusers_litevae.cli import main
from diffusers_litevae.testing_utils import TINY_ENCODER, save_png, smooth_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    return make_damaged_folder(tmp_path_factory.mktemp("damaged"))


@pytest.fixture(scope="module")
def validation_dir(damaged, tmp_path_factory) -> Path:
    """One good photo, so that training validates on readable images whatever the mixed folder holds."""
    folder = tmp_path_factory.mktemp("validation")
    shutil.copy(damaged.root / damaged.good[0], folder / damaged.good[0])
    return folder


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _skipped_training_files(result: dict, root: Path) -> set[str]:
    """File names in a training run's ``skipped_images`` ("<path> (<error>)")."""
    names = set()
    for item in result["skipped_images"]:
        path = item.split(" (", 1)[0]
        names.add(Path(path).relative_to(root).as_posix())
    assert result["num_skipped_images"] == len(result["skipped_images"])
    return names


def test_eval_uses_or_lists_every_file(damaged, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--image_dir", str(damaged.root), "--vae", "litevae-s-taef2", "--resolution", "32"]
    code, printed, _ = _run([*argv, "--skip_speed", "--grid_images", "0", "--output_dir", str(out)], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["litevae-s-taef2"]["class"] == "AutoencoderLiteTiny"
    with open(out / "per_image.csv") as handle:
        used = {row["image"] for row in csv.DictReader(handle)}
    skipped = {item["image"] for item in summary["skipped"]}
    assert set(damaged.good) <= used and set(damaged.unreadable) <= skipped
    assert used | skipped == set(damaged.all_files) and not used & skipped
    assert summary["num_images"] == len(used) and summary["num_skipped"] == len(skipped)
    assert f"skipped {len(skipped)} image(s)" in printed


def test_cache_latents_with_the_default_bundled_vae_uses_or_lists_every_file(damaged, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["cache-latents", "--train_data_dir", str(damaged.root), "--output_dir", str(cache)]  # no --vae
    argv += ["--resolution", "32", "--no_buckets", "--num_workers", "0", "--no_progress"]
    code, printed, _ = _run(argv, capsys)
    assert code == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["vae"]["class"] == "AutoencoderLiteTiny"
    used = {json.loads(line)["id"] for line in (cache / "index.jsonl").read_text().splitlines()[1:]}
    skipped = {json.loads(line)["sample_id"] for line in (cache / "errors.jsonl").read_text().splitlines()}
    assert set(damaged.good) <= used and set(damaged.unreadable) <= skipped
    assert used | skipped == set(damaged.all_files) and not used & skipped
    report = json.loads(printed)
    assert report["num_samples"] == len(used) and report["num_failed"] + report["num_skipped_files"] == len(skipped)


def test_distill_with_the_bundled_teacher_by_name_skips_and_lists_bad_files(damaged, validation_dir, tmp_path, capsys):
    out = tmp_path / "distill"
    files = len(damaged.all_files)
    argv = ["distill", "--teacher", "taef2", "--student", "S", "--train_data_dir", str(damaged.root)]
    argv += ["--validation_dir", str(validation_dir), "--num_validation_images", "0", "--resolution_schedule", "32"]
    # One epoch of the folder in 2 steps: every file is drawn once (unreadable ones are replaced by readable ones).
    argv += ["--train_batch_size", str((files + 1) // 2), "--max_train_steps", "2", "--output_dir", str(out)]
    code, _, _ = _run([*argv, "--validation_steps", "2", "--checkpointing_steps", "2"], capsys)
    assert code == 0
    skipped = _skipped_training_files(json.loads((out / "distillation.json").read_text()), damaged.root)
    assert set(damaged.unreadable) <= skipped and not skipped & set(damaged.good)


def test_train_skips_and_lists_bad_files(damaged, validation_dir, tmp_path, capsys):
    out = tmp_path / "train"
    files = len(damaged.all_files)
    argv = ["train", "--train_data_dir", str(damaged.root), "--validation_dir", str(validation_dir)]
    argv += ["--num_validation_images", "0", "--resolution_schedule", "32", "--validation_resolution", "32"]
    argv += ["--train_batch_size", str((files + 1) // 2), "--max_train_steps", "2", "--output_dir", str(out)]
    code, _, _ = _run([*argv, *_TINY_MODEL, "--adversarial_weight", "0"], capsys)
    assert code == 0
    skipped = _skipped_training_files(json.loads((out / "training.json").read_text()), damaged.root)
    assert set(damaged.unreadable) <= skipped and not skipped & set(damaged.good)


_TINY_MODEL = [
    "--encoder",
    "S",
    "--encoder_config",
    json.dumps(TINY_ENCODER),
    "--decoder_block_out_channels",
    "8,16,16,16",
    "--decoder_layers_per_block",
    "1",
    "--decoder_norm_num_groups",
    "4",
    "--no-decoder_attention",
    "--discriminator_block_out_channels",
    "8,16",
    "--scaling_images",
    "4",
    "--validation_steps",
    "1000",
    "--checkpointing_steps",
    "1000",
]


def test_a_quick_train_before_the_adversarial_phase_runs_and_warns(tmp_path, capsys, caplog):
    """`litevae train --max_train_steps 2` with the default discriminator start (step 100000) trains and warns."""
    photos = tmp_path / "photos"
    for index, image in enumerate(smooth_images(8, 40, 48, seed=1)):
        save_png(image, photos / f"img_{index}.png")
    argv = ["train", "--train_data_dir", str(photos), "--max_train_steps", "2", "--resolution_schedule", "32"]
    argv += ["--train_batch_size", "2", "--validation_resolution", "32", "--output_dir", str(tmp_path / "out")]
    with caplog.at_level(logging.WARNING):
        code, _, _ = _run([*argv, *_TINY_MODEL], capsys)
    assert code == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("adversarial phase is not reached" in message for message in warnings), warnings
    result = json.loads((tmp_path / "out" / "training.json").read_text())
    assert result["final_metrics"]["step"] == 2


def test_training_on_a_folder_without_a_readable_image_says_so(damaged, tmp_path, capsys):
    """distill and train name the folder as having no usable image (not a validation-image problem); a negative
    worker count is one error line too."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in damaged.unreadable:
        shutil.copy(damaged.root / name, bad / name)
    commands = {
        "distill": ["distill", "--teacher", "taef2", "--student", "S", "--resolution_schedule", "32"],
        "train": ["train", *_TINY_MODEL, "--resolution_schedule", "32"],
    }
    for command, argv in commands.items():
        code, _, err = _run([*argv, "--train_data_dir", str(bad), "--output_dir", str(tmp_path / command)], capsys)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and "has no usable image" in lines[0], (command, err)
        good = [*argv, "--train_data_dir", str(damaged.root), "--output_dir", str(tmp_path / f"{command}-workers")]
        code, _, err = _run([*good, "--dataloader_num_workers", "-1"], capsys)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and "--dataloader_num_workers must be >= 0" in lines[0], (command, err)


@pytest.fixture(scope="module")
def damaged_dataset(damaged, tmp_path_factory) -> Path:
    """The damaged folder as rows of a Hugging Face dataset (encoded bytes), written with ``save_to_disk``."""
    datasets = pytest.importorskip("datasets")
    rows = [{"bytes": (damaged.root / name).read_bytes(), "path": None} for name in damaged.all_files]
    folder = tmp_path_factory.mktemp("damaged_dataset")
    table = datasets.Dataset.from_dict({"image": rows}).cast_column("image", datasets.Image())
    table.save_to_disk(str(folder))
    return folder


def test_every_command_on_a_dataset_with_damaged_rows_skips_and_lists_them(
    damaged, damaged_dataset, validation_dir, tmp_path, capsys
):
    """Rows of a Hub dataset are read as files are: eval, cache-latents, distill and train each use every good row
    and list every unreadable one (none stops the run)."""
    files = damaged.all_files
    good = {files.index(name) for name in damaged.good}
    unreadable = {files.index(name) for name in damaged.unreadable}
    dataset = ["--dataset_name", str(damaged_dataset)]

    out = tmp_path / "eval"
    argv = ["eval", *dataset, "--vae", "litevae-s-taef2", "--resolution", "32", "--skip_speed", "--grid_images", "0"]
    code, _, _ = _run([*argv, "--output_dir", str(out)], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "per_image.csv") as handle:
        used = {int(row["image"].split("/")[1]) for row in csv.DictReader(handle)}
    skipped = {int(item["image"].split("/")[1]) for item in summary["skipped"]}
    assert good <= used and unreadable <= skipped and used | skipped == set(range(len(files)))

    cache = tmp_path / "cache"
    argv = ["cache-latents", *dataset, "--output_dir", str(cache), "--resolution", "32", "--no_buckets"]
    code, _, _ = _run([*argv, "--num_workers", "0", "--no_progress"], capsys)
    assert code == 0
    used = {int(json.loads(line)["id"][:9]) for line in (cache / "index.jsonl").read_text().splitlines()[1:]}
    skipped = {int(json.loads(line)["sample_id"][:9]) for line in (cache / "errors.jsonl").read_text().splitlines()}
    assert good <= used and unreadable <= skipped and used | skipped == set(range(len(files)))

    training = ["--validation_dir", str(validation_dir), "--num_validation_images", "0", "--resolution_schedule", "32"]
    training += ["--train_batch_size", str((len(files) + 1) // 2), "--max_train_steps", "2"]  # every row drawn once
    commands = {
        "distill": (["distill", "--teacher", "taef2", "--student", "S", "--validation_steps", "2"], "distillation"),
        "train": (["train", *_TINY_MODEL, "--adversarial_weight", "0", "--validation_resolution", "32"], "training"),
    }
    for command, (argv, record) in commands.items():
        out = tmp_path / command
        code, _, _ = _run([*argv, *dataset, *training, "--output_dir", str(out)], capsys)
        assert code == 0, command
        result = json.loads((out / f"{record}.json").read_text())
        skipped = {int(item.split(" (", 1)[0].removeprefix("row ")) for item in result["skipped_images"]}
        assert unreadable <= skipped and not skipped & good, command
