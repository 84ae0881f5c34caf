"""How every command ends on a user mistake, on Ctrl-C and on a closed pipe, through the ``litevae`` entry point in
a fresh Python process: one ``error:`` line and exit code 2 before any work; one ``interrupted:`` line saying what
is kept and how to resume, exit code 130; nothing at all for a reader that went away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from diffusers_litevae.pretrained import pretrained_path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = ("eval", "cache-latents", "distill", "train", "push")

# Runs each argv through `diffusers_litevae.cli.main` (what the `litevae` script calls) in one process, each call's
# stderr captured on its own; prints [exit code, stderr] per argv as JSON. `patch` names functions that raise
# KeyboardInterrupt, as a Ctrl-C in the middle of that function would.
_HARNESS = """
import contextlib, io, json, logging, sys
from unittest import mock
from diffusers_litevae.cli import main

results = []
for argv, patch in json.loads(sys.argv[1]):
    stderr = io.StringIO()
    patcher = mock.patch(patch, side_effect=KeyboardInterrupt) if patch else contextlib.nullcontext()
    with patcher, contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    logging.root.handlers.clear()  # a command's logging set up on this call's stderr
    results.append([code, stderr.getvalue()])
print(json.dumps(results))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(":")}


def _images(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = (
            (Image.radial_gradient("L").resize((size, size)).point(lambda v, i=i: (v * (i + 3)) % 256))
            .convert("RGB")
            .rotate(i * 7)
        )
        pixels.save(folder / f"{i:03d}.png")
    return folder


def _unwritable(tmp_path: Path) -> Path:
    """A folder path that cannot be created: below a read-only folder (for root, a read-only file system)."""
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o555)
        return locked / "out"
    for candidate in (Path("/proc/sys"), Path("/sys")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate / "litevae-out"
    pytest.skip("running as root with no read-only folder to write into")


def _one_line(stderr: str, prefix: str) -> str:
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith(prefix), stderr
    return lines[0]


def test_every_mistake_in_every_command_is_one_error_line_before_any_work(tmp_path):
    images = _images(tmp_path / "images", 2, 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    cache = tmp_path / "a-cache"  # what cache-latents leaves: another command must not write into it
    cache.mkdir()
    (cache / "manifest.json").write_text("{}")
    results = tmp_path / "eval-results"
    results.mkdir()
    (results / "summary.json").write_text("{}")
    (results / "per_image.csv").write_text("")
    distilled = tmp_path / "distilled"
    distilled.mkdir()
    (distilled / "distillation.json").write_text("{}")
    model = Path(pretrained_path("litevae-s-taef2"))
    unwritable = _unwritable(tmp_path)
    missing = tmp_path / "no-such-folder"

    def argv(command: str, output: Path, source: Path | None = None) -> list[str]:
        if command == "eval":
            return ["eval", "--image_dir", str(source or images), "--output_dir", str(output)]
        if command == "cache-latents":
            return ["cache-latents", "--train_data_dir", str(source or images), "--output_dir", str(output)]
        if command == "distill":
            return [
                "distill",
                "--teacher",
                "taef2",
                "--train_data_dir",
                str(source or images),
                "--output_dir",
                str(output),
            ]
        if command == "train":
            return ["train", "--train_data_dir", str(source or images), "--output_dir", str(output)]
        metrics = model / "eval" / "summary.json"
        return [
            "push",
            str(source or model),
            "--metrics",
            str(metrics),
            "--repo_id",
            "user/name",
            "--metrics_label",
            "litevae-s-taef2",
            "--dry_run",
        ] + [
            "--output_dir",
            str(output),
        ]

    another = {"eval": cache, "cache-latents": results, "distill": cache, "train": distilled, "push": results}
    cases = []  # (command, mistake, argv, text the error names, a folder that must not have been created)
    for command in COMMANDS:
        new = tmp_path / f"out-{command}"
        cases += [
            (command, "output is a file", argv(command, a_file), "is a file", None),
            (command, "output below a file", argv(command, a_file / "sub"), "is a file", None),
            (command, "output cannot be written", argv(command, unwritable), "cannot be written", None),
            (command, "output holds another command's", argv(command, another[command]), "holds", None),
            (command, "input folder missing", argv(command, new, missing), "no-such-folder", new),
        ]
    cases.append(("cache-latents", "empty input folder", argv("cache-latents", tmp_path / "c", empty), "no ", None))
    cases.append(("eval", "empty input folder", argv("eval", tmp_path / "e", empty), "holds no", None))

    run = subprocess.run(
        [sys.executable, "-c", _HARNESS, json.dumps([[case[2], None] for case in cases])],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    for (command, mistake, _, named, not_created), (code, stderr) in zip(cases, json.loads(run.stdout)):
        assert code == 2, (command, mistake, stderr)
        line = _one_line(stderr, f"litevae {command}: error:")
        assert named in line, (command, mistake, line)
        assert not_created is None or not not_created.exists(), (command, mistake)
    # An empty folder is refused before the cache folder is made: no manifest, index or lock left behind.
    assert not (tmp_path / "c").exists()


def test_the_litevae_script_reports_a_mistake_at_once(tmp_path):
    """The real entry point, as a shell runs it: a missing image folder is reported before torch is imported."""
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "diffusers_litevae.cli", "eval", "--image_dir", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert run.returncode == 2
    assert "does not exist" in _one_line(run.stderr, "litevae eval: error:")
    assert time.perf_counter() - started < 5  # no model loads and no torch import: ~0.2 s


def test_ctrl_c_in_eval_train_and_push_is_one_line_with_exit_130(tmp_path):
    """Ctrl-C in the middle of each command's work (the work function interrupted as a SIGINT would)."""
    images = _images(tmp_path / "images", 2, 64)
    model = Path(pretrained_path("litevae-s-taef2"))
    cases = [
        (
            ["eval", "--image_dir", str(images), "--output_dir", str(tmp_path / "e")],
            "diffusers_litevae.evaluation.run.evaluate_vaes",
            "nothing was written",
        ),
        (
            ["train", "--train_data_dir", str(images), "--output_dir", str(tmp_path / "t")],
            "diffusers_litevae.training.from_scratch.train_autoencoder",
            "no checkpoint was written yet",
        ),
        (
            [
                "push",
                str(model),
                "--metrics",
                str(model / "eval" / "summary.json"),
                "--repo_id",
                "user/name",
                "--metrics_label",
                "litevae-s-taef2",
            ]
            + ["--token", "hf_test"],
            "diffusers_litevae.hub.push.prepare_upload_folder",
            "all of this upload or none of it",
        ),
    ]
    run = subprocess.run(
        [sys.executable, "-c", _HARNESS, json.dumps([[argv, patch] for argv, patch, _ in cases])],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    for (argv, _, said), (code, stderr) in zip(cases, json.loads(run.stdout)):
        assert code == 130, stderr
        assert said in _one_line(stderr, f"litevae {argv[0]}: interrupted:")


def _interrupt_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never got going"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)


def test_ctrl_c_in_cache_latents_and_distill_says_what_is_kept_and_how_to_resume(tmp_path):
    """A real SIGINT to the real entry point, once the command has written its first file."""
    images = _images(tmp_path / "images", 48, 256)
    cache, run_dir = tmp_path / "cache", tmp_path / "distilled"
    litevae = [sys.executable, "-m", "diffusers_litevae.cli"]
    caching = [*litevae, "cache-latents", "--train_data_dir", str(images), "--output_dir", str(cache)]
    caching += ["--resolution", "256", "--no_buckets", "--batch_size", "1", "--samples_per_shard", "1"]
    distilling = [*litevae, "distill", "--teacher", "taef2", "--student", "S", "--train_data_dir", str(images)]
    distilling += ["--output_dir", str(run_dir), "--resolution", "64", "--train_batch_size", "1"]
    distilling += ["--checkpointing_steps", "1", "--max_train_steps", "100000", "--validation_steps", "100000"]
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for command in (caching, distilling)
    ]
    try:
        _interrupt_when(processes[0], lambda: any((cache / "shards").rglob("*.safetensors")))
        _interrupt_when(processes[1], lambda: any((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")))
        (_, cache_err), (_, distill_err) = (process.communicate(timeout=120) for process in processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert processes[0].returncode == 130 and processes[1].returncode == 130
    for stderr, command, said in (
        (cache_err, "cache-latents", "run the same command again to resume"),
        (distill_err, "distill", "--resume_from_checkpoint latest"),
    ):
        assert "Traceback" not in stderr, stderr
        lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
        assert lines[-1].startswith(f"litevae {command}: interrupted:") and said in lines[-1], stderr
        assert sum("interrupted" in line for line in lines) == 1, stderr

    from diffusers_litevae.caching import LatentDataset

    assert len(LatentDataset(cache)) >= 1  # what was encoded before Ctrl-C is in the cache


@pytest.mark.parametrize("command", ["info", "push"])
def test_a_closed_pipe_ends_quietly(command, tmp_path):
    """``litevae info | head -1`` with the reader already gone: no traceback, exit code 141 as for SIGPIPE."""
    argv = [command]
    if command == "push":
        model = Path(pretrained_path("litevae-s-taef2"))
        argv = [
            "push",
            str(model),
            "--metrics",
            str(model / "eval" / "summary.json"),
            "--repo_id",
            "user/name",
            "--metrics_label",
            "litevae-s-taef2",
        ]
        argv += ["--dry_run", "--output_dir", str(tmp_path / "upload")]
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout fails with EPIPE
    try:
        run = subprocess.run(
            [sys.executable, "-m", "diffusers_litevae.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert run.returncode == 141 and run.stderr.strip() == "", run.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_an_input_error_written_over_several_lines_prints_as_one(command, capsys):
    from diffusers_litevae.settings import input_error

    # e.g. a cache built with other settings lists each difference on a line of its own
    assert (
        input_error(command, "the cache was built with other settings:\n  - dtype: 'bf16' -> 'fp32'\nUse another") == 2
    )
    assert capsys.readouterr().err == (
        f"litevae {command}: error: the cache was built with other settings: - dtype: 'bf16' -> 'fp32' Use another\n"
    )
