"""What users install and what the package writes: the wheel carries the bundled models, and every file the commands
write follows the umask, as a file made by ``open()`` would."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from diffusers_litevae.testing_utils import save_png, smooth_images, tiny_autoencoder_lite

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_bundled_models(tmp_path):
    """``pip wheel .`` (what ``python -m build --wheel`` runs too), on a copy of the checkout so no build files are
    left in it."""
    source = tmp_path / "checkout"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    (wheel,) = (tmp_path / "dist").glob("diffusers_litevae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = ROOT / "src" / "diffusers_litevae" / "pretrained"
    shipped = {
        path.relative_to(ROOT / "src").as_posix()
        for path in bundled.rglob("*")
        if path.is_file() and path.suffix in (".json", ".safetensors", ".md", ".png") or path.name.startswith("LICENSE")
    }
    assert "diffusers_litevae/pretrained/litevae-s-taef2/diffusion_pytorch_model.safetensors" in shipped
    assert "diffusers_litevae/pretrained/taef2/taef2_encoder.safetensors" in shipped
    assert shipped <= names, sorted(shipped - names)
    assert "diffusers_litevae/cli.py" in names
    assert "diffusers_litevae/hub/model_card_template.md" in names  # the model cards are rendered from it
    assert "diffusers_litevae/caching/cache_card_template.md" in names  # and the latent caches' dataset cards
    assert any(name.endswith("entry_points.txt") for name in names)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_every_written_file_follows_the_umask(umask_022, tmp_path):
    from diffusers_litevae.caching import cache_latents
    from diffusers_litevae.evaluation import EvaluationResult
    from diffusers_litevae.file_io import save_pretrained, write_json_atomic
    from diffusers_litevae.hub import CardOptions
    from diffusers_litevae.hub.push import prepare_upload_folder
    from diffusers_litevae.pretrained import pretrained_path

    for i, image in enumerate(smooth_images(2, 64, 64, seed=0)):
        save_png(image, tmp_path / "images" / f"{i}.png")
    cache = tmp_path / "cache"
    vae = tiny_autoencoder_lite(seed=0)
    cache_latents(tmp_path / "images", vae, cache, resolution=64, bucket_step=8, num_workers=0, progress=False)
    save_pretrained(vae, tmp_path / "weights")
    write_json_atomic(tmp_path / "atomic" / "record.json", {"a": 1})
    EvaluationResult(summary={"models": {}}).save(tmp_path / "eval")
    model = Path(pretrained_path("litevae-s-taef2"))
    summary = model / "eval" / "summary.json"
    prepare_upload_folder(model, summary, tmp_path / "upload", CardOptions(repo_id="user/name"), "litevae-s-taef2")

    written = {}
    for name in ("cache", "weights", "atomic", "eval", "upload"):
        written.update({f"{name}/{path}": mode for path, mode in _modes(tmp_path / name).items()})
    assert any(path.endswith(".safetensors") for path in written if path.startswith("cache/shards/"))
    assert {"cache/index.jsonl", "cache/manifest.json", "upload/README.md", "eval/summary.json"} <= set(written)
    assert "weights/diffusion_pytorch_model.safetensors" in written
    assert "upload/diffusion_pytorch_model.fp16.safetensors" in written
    assert {path: oct(mode) for path, mode in written.items() if mode != 0o644} == {}
