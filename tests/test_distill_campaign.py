"""conversion/distill_campaign.py: a campaign stopped and resumed continues exactly as an uninterrupted one."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _campaign_module():
    spec = importlib.util.spec_from_file_location("distill_campaign", ROOT / "conversion" / "distill_campaign.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for index in range(5):
        # Smooth gradients plus noise: something the teacher encodes to structured latents.
        ramp = np.linspace(0, 255, 96)[None, :, None] * rng.uniform(0.3, 1.0, size=(1, 1, 3))
        pixels = np.clip(ramp + rng.normal(0, 20, size=(80, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{index}.png")
    return folder


def _args(module, campaign: Path, photos: Path, steps: int, create: bool):
    argv = ["--campaign", str(campaign), "--train_data_dir", str(photos), "--max_steps", str(steps)]
    argv += ["--device", "cpu", "--num_workers", "0", "--log_every", "1", "--minutes", "5"]
    if create:
        argv += ["--create", "--student", "S", "--resolution_schedule", "32/48", "--batch_size", "2"]
        argv += ["--warmup_steps", "2", "--learning_rate", "1e-3"]
    return module.parse_args(argv)


def test_a_resumed_campaign_continues_exactly(tmp_path, photos):
    module = _campaign_module()
    straight, split = tmp_path / "straight", tmp_path / "split"
    module.run(_args(module, straight, photos, 4, create=True))
    module.run(_args(module, split, photos, 2, create=True))
    halfway = json.loads((split / "campaign.json").read_text())
    assert halfway["step"] == 2
    halfway_weights = load_file(split / "student.safetensors")
    module.run(_args(module, split, photos, 2, create=False))

    done, resumed = (json.loads((folder / "campaign.json").read_text()) for folder in (straight, split))
    assert resumed["step"] == done["step"] == 4
    assert resumed["images_seen"] == done["images_seen"] == 2 + 1 + 2 + 1  # 32 px: 2 images, 48 px: 1 (pixels)
    assert [run["end_step"] for run in resumed["runs"]] == [2, 4]
    # The same crops in the same order: every logged loss of the resumed steps equals the straight run's.
    assert [entry["total"] for entry in resumed["curve"]] == [entry["total"] for entry in done["curve"]]
    for stem in ("student", "ema", "optimizer"):
        expected, got = load_file(straight / f"{stem}.safetensors"), load_file(split / f"{stem}.safetensors")
        assert expected.keys() == got.keys()
        for name in expected:
            assert (expected[name] == got[name]).all(), f"{stem}.{name} differs after resuming"
    # The resumed run trained: its steps moved the weights on from the saved ones.
    final = load_file(split / "student.safetensors")
    assert any((final[name] != halfway_weights[name]).any() for name in final)
    assert all(path.stat().st_size <= module.MAX_FILE_BYTES for path in straight.iterdir())


def test_campaign_settings_are_fixed_at_creation(tmp_path, photos):
    module = _campaign_module()
    module.run(_args(module, tmp_path / "c", photos, 1, create=True))
    with pytest.raises(SystemExit, match="exists"):
        module.run(_args(module, tmp_path / "c", photos, 1, create=True))
    changed = _args(module, tmp_path / "c", photos, 1, create=False)
    changed.learning_rate = 0.5
    with pytest.raises(SystemExit, match="fixed at creation"):
        module.run(changed)
    with pytest.raises(SystemExit, match="--create"):
        module.run(_args(module, tmp_path / "missing", photos, 1, create=False))
