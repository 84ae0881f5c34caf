"""Latent caching under SIGKILL and with several processes: nothing lost, nothing duplicated, one index."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_litevae.caching import LatentDataset, cache_latents
from diffusers_litevae.caching.writer import read_shard_entries
from diffusers_litevae.testing_utils import tiny_autoencoder_lite

# Same settings through the CLI (children) and the Python API (references): fp32 storage and batch size 1, so
# values do not depend on how samples were batched and must match bit for bit.
CLI_SETTINGS = [
    "--resolution",
    "64",
    "--bucket_step",
    "8",
    "--dtype",
    "fp32",
    "--batch_size",
    "1",
    "--samples_per_shard",
    "2",
    "--no_progress",
]
API_SETTINGS = dict(
    resolution=64, bucket_step=8, dtype="fp32", batch_size=1, samples_per_shard=2, num_workers=0, progress=False
)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_images(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (96, 48), (48, 96), (80, 64)]
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        path = folder / f"part{i % 3}" / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        path.with_suffix(".txt").write_text(f"caption {i}")
    return folder


# Where a child kills itself: (file renamed into place, before or after the rename).
KILL_POINTS = {
    "shard_temp_written": ("shard", "before"),  # the shard is still a fsynced temporary file
    "shard_renamed": ("shard", "after"),
    "index_temp_written": ("index", "before"),
}


def _kill_at(crash: str) -> None:
    """Make this (forked, throw-away) process SIGKILL itself the ``n``-th time the cache renames a file of one kind
    into place, given as ``"<point>:<n>"`` (a key of ``KILL_POINTS``): the cache commits every shard and the index
    with ``os.replace`` of a fsynced temporary file, so these are the moments a crash can hit."""
    point, _, count = crash.partition(":")
    kind, when = KILL_POINTS[point]
    replace, seen = os.replace, [0]

    def kind_of(destination) -> str | None:
        path = Path(destination)
        if path.name == "index.jsonl":
            return "index"
        return "shard" if path.suffix == ".safetensors" and "shards" in path.parts else None

    def replace_or_die(source, destination, **kwargs):
        if kind_of(destination) != kind:
            return replace(source, destination, **kwargs)
        seen[0] += 1
        if seen[0] == int(count) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        replace(source, destination, **kwargs)
        if seen[0] == int(count) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_or_die


def _child(argv: list[str], crash: str | None) -> None:
    if crash:
        _kill_at(crash)
    torch.set_num_threads(1)
    from diffusers_litevae.cli import main

    os._exit(main(argv))


def start_cli(argv: list[str], crash: str | None = None) -> multiprocessing.Process:
    """The CLI in a forked child process (already-imported torch: no start-up cost), SIGKILL-able; ``crash``
    (``"<point>:<n>"``, see :func:`_kill_at`) makes it kill itself at that point of the write path."""
    process = multiprocessing.get_context("fork").Process(target=_child, args=(argv, crash))
    process.start()
    return process


def run_cli(argv: list[str], crash: str | None = None) -> int:
    process = start_cli(argv, crash)
    process.join(300)
    return process.exitcode


def cached_values(cache: Path) -> dict[str, tuple]:
    """sample id -> (mean, std, metadata) read through LatentDataset."""
    dataset = LatentDataset(cache, latent_sampling="mean")
    values = {}
    for i in range(len(dataset)):
        item = dataset[i]
        mean, std = dataset.raw_moments(i)
        values[dataset.sample_id(i)] = (
            mean,
            std,
            item["caption"],
            item["crop_ltrb"].tolist(),
            item["target_size"].tolist(),
            item["original_size"].tolist(),
        )
    return values


def assert_same_cache(cache: Path, reference: Path) -> None:
    got, expected = cached_values(cache), cached_values(reference)
    assert sorted(got) == sorted(expected)
    for sample_id, (mean, std, *metadata) in expected.items():
        assert torch.equal(got[sample_id][0], mean), sample_id
        assert torch.equal(got[sample_id][1], std), sample_id
        assert got[sample_id][2:] == tuple(metadata), sample_id
    lines = (cache / "index.jsonl").read_text().splitlines()[1:]
    slots = [(row["shard"], row["slot"]) for row in map(json.loads, lines)]
    assert len(slots) == len(set(slots)) == len(expected)  # every sample once, no slot shared
    assert not list(cache.rglob("*.tmp-*"))


def shard_files(cache: Path) -> list[Path]:
    return sorted((cache / "shards").rglob("*.safetensors")) if (cache / "shards").exists() else []


def samples_in_shards(cache: Path) -> int:
    return sum(len(read_shard_entries(path)) for path in shard_files(cache))


def test_killed_runs_resume_without_loss_or_duplicates(tmp_path):
    """SIGKILL mid-shard, after a shard, and mid-index; the resumed cache equals a clean run's."""
    folder = make_images(tmp_path / "images", 12)
    vae = tiny_autoencoder_lite(seed=0)
    vae.save_pretrained(tmp_path / "vae")
    reference = tmp_path / "reference"
    cache_latents(folder, vae, reference, **API_SETTINGS)
    cache = tmp_path / "cache"
    argv = [
        "cache-latents",
        "--train_data_dir",
        str(folder),
        "--vae",
        str(tmp_path / "vae"),
        "--output_dir",
        str(cache),
        "--num_workers",
        "0",
        *CLI_SETTINGS,
    ]

    # Killed while the 2nd shard is a temporary file: one shard (2 samples) complete, no index yet.
    assert run_cli(argv, crash="shard_temp_written:2") == -signal.SIGKILL
    assert samples_in_shards(cache) == 2 and list(cache.rglob("*.tmp-*")) and not (cache / "index.jsonl").exists()
    # Resumed (the 2 samples are not encoded again), killed right after its 3rd shard landed.
    assert run_cli(argv, crash="shard_renamed:3") == -signal.SIGKILL
    assert len(shard_files(cache)) == 4 and 2 + 3 <= samples_in_shards(cache) < 12
    assert not (cache / "index.jsonl").exists()
    # Resumed, encodes the rest, killed while writing the index: every sample is in a shard exactly once.
    assert run_cli(argv, crash="index_temp_written:1") == -signal.SIGKILL
    assert samples_in_shards(cache) == 12 and not (cache / "index.jsonl").exists()
    # Final resume: everything is already in shards; nothing is encoded again.
    report = cache_latents(folder, str(tmp_path / "vae"), cache, **API_SETTINGS)
    assert report.num_encoded == 0 and report.num_samples == 12
    assert_same_cache(cache, reference)

    # A second identical run does nothing; changing one image re-encodes that one only.
    assert cache_latents(folder, vae, cache, **API_SETTINGS).num_encoded == 0
    changed = folder / "part1" / "img004.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(changed)
    assert cache_latents(folder, vae, cache, **API_SETTINGS).encoded_ids == ["part1/img004.png"]


def test_external_sigkill_at_an_arbitrary_moment(tmp_path):
    """a kill from outside (DataLoader worker running, writer thread busy) loses nothing."""
    folder = make_images(tmp_path / "images", 40)
    vae = tiny_autoencoder_lite(seed=0)
    vae.save_pretrained(tmp_path / "vae")
    reference = tmp_path / "reference"
    cache_latents(folder, vae, reference, **API_SETTINGS)
    cache = tmp_path / "cache"
    argv = [
        "cache-latents",
        "--train_data_dir",
        str(folder),
        "--vae",
        str(tmp_path / "vae"),
        "--output_dir",
        str(cache),
        "--num_workers",
        "1",
        *CLI_SETTINGS[:-3],
        "--samples_per_shard",
        "1",
        "--no_progress",
    ]
    process = start_cli(argv)
    deadline = time.time() + 240
    while len(shard_files(cache)) < 3 and process.is_alive() and time.time() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.join(60)
    assert process.exitcode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(shard_files(cache))
    assert 3 <= done < 40 and not (cache / "index.jsonl").exists()
    report = cache_latents(folder, str(tmp_path / "vae"), cache, **{**API_SETTINGS, "samples_per_shard": 1})
    assert report.num_encoded == 40 - done
    assert_same_cache(cache, reference)


@pytest.mark.slow
def test_accelerate_launch_two_processes_write_one_index(tmp_path, free_port):
    """`accelerate launch --num_processes 2` on CPU: disjoint work, one merged index, every image once."""
    folder = make_images(tmp_path / "images", 10)
    vae = tiny_autoencoder_lite(seed=0)
    vae.save_pretrained(tmp_path / "vae")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    cache = tmp_path / "cache"
    # --multi_gpu makes accelerate start the processes through torchrun; without CUDA they form a gloo group.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "diffusers_litevae.cli",
        "cache-latents",
        "--train_data_dir",
        str(folder),
        "--vae",
        str(tmp_path / "vae"),
        "--output_dir",
        str(cache),
        "--device",
        "cpu",
        "--num_workers",
        "1",
        *CLI_SETTINGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(2 processes)" in result.stderr
    ranks = {path.parent.name for path in shard_files(cache)}
    assert ranks == {"r000", "r001"}  # both processes wrote shards
    lines = (cache / "index.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines[1:]]
    assert sorted(ids) == sorted(f"part{i % 3}/img{i:03d}.png" for i in range(10))  # every image exactly once
    errors = [json.loads(line) for line in (cache / "errors.jsonl").read_text().splitlines()]
    assert [row["sample_id"] for row in errors] == ["broken.png"]
    assert not list(cache.glob("errors.r*.partial.jsonl"))
    reference = tmp_path / "reference"
    cache_latents(folder, vae, reference, **API_SETTINGS)
    assert_same_cache(cache, reference)
