"""``benchmarks/gpu_suite.py --smoke``: every code path of the GPU suite, run small on the CPU (~30-60 s)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("encoder_speed", "cache_latents", "train_speed", "distill_quality")


@pytest.mark.slow
def test_gpu_suite_smoke_run(tmp_path):
    jsonl, summary_path = tmp_path / "suite.jsonl", tmp_path / "suite.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_suite.py"),
        "--smoke",
        # Generous: the smoke run takes ~30-60 s on a quiet machine; a loaded one must not skip sections for time.
        "--budget_minutes",
        "8",
        "--device",
        "cpu",
        "--output_jsonl",
        str(jsonl),
        "--output_json",
        str(summary_path),
        "--work_dir",
        str(tmp_path / "work"),
    ]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len({r["run_id"] for r in records}) == 1
    for kind in KINDS:
        of_kind = [r for r in records if r["kind"] == kind]
        assert of_kind, f"no {kind} line in the JSONL"
        assert any(r["status"] == "ok" for r in of_kind), f"every {kind} measurement was skipped or failed: {of_kind}"
    assert not [r for r in records if r["status"] == "failed"]
    # The grid's largest SD-VAE cell is skipped by rule, compiled cells are skipped in --smoke: both recorded.
    skipped = {r["name"] for r in records if r["status"] == "skipped"}
    assert "sd-vae 64px b3 eager" in skipped and "B 32px b3 compile" in skipped

    summary = json.loads(summary_path.read_text())
    expected = {f"{m}_speedup_vs_sd_vae_{r}px_b3" for m in ("B", "S") for r in (32, 48)}
    expected |= {f"B_memory_ratio_vs_sd_vae_{r}px_b3" for r in (32, 48)}
    expected |= {f"B_speedup_vs_sd_vae_{r}px_b2" for r in (32, 48, 64)}
    assert {t["id"] for t in summary["targets"]} == expected
    for target in summary["targets"]:
        assert target["status"] in ("MET", "MISSED", "NOT MEASURED"), target
        assert target["status"] == "NOT MEASURED" or target["value"] is not None
    assert {r["name"] for r in records if r["kind"] == "target"} == expected
    assert summary["cache_latents"]["sd-vae"]["litevae_b_speedup_vs_sd_vae"] > 0
    assert summary["train_speed"]["cached"]["cached_speedup_vs_live"] > 0
    assert summary["distill_quality"]["psnr_teacher"] > summary["distill_quality"]["psnr_student"] > 0
    assert "== targets ==" in completed.stdout
