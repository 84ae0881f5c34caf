"""`litevae cache-latents`: one writer per cache folder, defaults that fit the machine, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_caching import entries, make_folder

from diffusers_litevae.caching.index import CacheInputError
from diffusers_litevae.caching.writer import CacheBusyError, CacheLock
from diffusers_litevae.cli import main
from diffusers_litevae.testing_utils import tiny_autoencoder_lite

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path) -> tuple[list[str], Path]:
    """A two-image folder, a tiny AutoencoderLite, and the argv that caches one into the other."""
    folder = make_folder(tmp_path / "images", {"a.png": (64, 64), "b.png": (64, 48)}, captions=False)
    tiny_autoencoder_lite(seed=0).save_pretrained(tmp_path / "vae")
    cache = tmp_path / "cache"
    argv = ["cache-latents", "--train_data_dir", str(folder), "--vae", str(tmp_path / "vae")]
    argv += ["--output_dir", str(cache), "--resolution", "64", "--bucket_step", "8", "--num_workers", "0"]
    return [*argv, "--no_progress"], cache


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def _hold_lock_in_another_process(cache: Path) -> subprocess.Popen:
    """A process that takes the cache's lock as a caching run does, then waits (the 'other run')."""
    code = (
        "import sys, time; from diffusers_litevae.caching.writer import CacheLock; "
        "lock = CacheLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(300)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_stale_lock(setup, capsys):
    argv, cache = setup
    holder = _hold_lock_in_another_process(cache)
    try:
        assert main(argv) == 2
        lines = _error_lines(capsys)
        assert len(lines) == 1 and "another cache-latents run" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert "use another --output_dir" in lines[0]
        assert not (cache / "index.jsonl").exists()  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the holder never releases the lock itself
        holder.wait()
        holder.stdout.close()
    assert main(argv) == 0, capsys.readouterr().err
    assert set(entries(cache)) == {"a.png", "b.png"}
    # The lock is released when a run ends, so the same process can update the cache again.
    assert main(argv) == 0


def test_cache_lock_in_one_process():
    """Two locks on one folder exclude each other even within one process; release lets the next in."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        with CacheLock(folder):
            with pytest.raises(CacheBusyError, match=f"pid {os.getpid()}"):
                CacheLock(folder).acquire()
        with CacheLock(folder):
            pass


def test_bad_worker_count_and_unreadable_folder_are_clear_errors(setup, tmp_path, capsys):
    argv, cache = setup
    assert main([*argv, "--num_workers", "-1"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "num_workers must be >= 0" in lines[0], lines
    assert not cache.exists()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.jpg").write_text("not a JPEG")
    (bad / "empty.png").write_bytes(b"")
    bad_argv = [*argv, "--train_data_dir", str(bad), "--output_dir", str(tmp_path / "bad-cache")]
    assert main(bad_argv) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "no image of" in lines[0] and "2 could not be read" in lines[0], lines
    assert "errors.jsonl" in lines[0]


def test_defaults_fit_the_machine_and_use_the_bundled_vae():
    import argparse

    from diffusers_litevae.caching import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--train_data_dir", "x", "--output_dir", "y"])
    assert args.vae == "litevae-s-taef2"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= args.num_workers == min(4, cores)


def test_the_flags_parse_into_cache_settings_which_check_their_values():
    import argparse

    from diffusers_litevae.caching import CacheSettings, TransformConfig, cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    for sources in ([], ["--train_data_dir", "x", "--dataset_name", "d"]):  # exactly one source
        with pytest.raises(SystemExit):
            parser.parse_args([*sources, "--output_dir", "y"])
    argv = ["--dataset_name", "d", "--output_dir", "y", "--no_buckets", "--resolution", "64", "--flip", "--no_progress"]
    settings = cli.cache_settings(
        parser.parse_args([*argv, "--dtype", "fp32", "--split", "test", "--num_workers", "0"])
    )
    assert settings.transform == TransformConfig(resolution=64, bucketing=False, flip=True)
    assert (settings.dtype, settings.split, settings.num_workers, settings.progress) == ("fp32", "test", 0, False)
    # Python callers change settings and their transform by field name, as cache_latents(..., **overrides) does.
    changed = settings.replace(crop="random", batch_size=2)
    assert changed.transform == TransformConfig(resolution=64, bucketing=False, flip=True, crop="random")
    assert changed.batch_size == 2 and settings.batch_size == 16
    with pytest.raises(TypeError, match="not both"):
        settings.replace(transform=TransformConfig(), flip=False)
    for bad, message in [
        (dict(dtype="fp64"), "dtype must be one of"),
        (dict(mixed_precision="fp8"), "mixed_precision must be one of"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(max_images=0), "max_images must be >= 1"),
    ]:
        with pytest.raises(CacheInputError, match=message):
            CacheSettings(**bad)
