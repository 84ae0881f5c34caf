"""The benchmarks' shared measuring core and ``gpu_suite.py --dry_run``: the headline's code path, tiny, on the CPU.

The GPU figures themselves need a GPU; this checks that the measuring code runs and reports what it promises
(first-call time apart from throughput, best mode per cell, ratios beside the published figures, JSON records).
"""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _core  # noqa: E402
import gpu_suite  # noqa: E402


def test_core_counts_ops_and_measures_with_warmup_apart():
    x = torch.ones(4)
    counts = _core.count_ops(lambda: torch.relu(x + 1))
    assert counts == {"add": 1, "relu": 1}
    calls = []
    result = _core.measure(lambda: calls.append(1), "cpu", items_per_call=8, warmup=2, min_time=0.0, min_calls=3)
    # 2 warm-up calls, then 3 timed ones (on the CPU the first of them only sizes the run and is left out).
    assert len(calls) == 2 + 3 and result["timed_calls"] == 2
    assert result["first_call_s"] <= result["warmup_s"] and result["items_per_s"] > 0
    assert result["peak_memory_mib"] is None  # CUDA only


def test_ratios_are_printed_beside_their_source_without_verdicts():
    text = _core.format_ratio(2.85, 1.9, "paper Table 3")
    assert text == "2.85x beside 1.90x (paper Table 3): 1.50 of it"
    assert _core.format_ratio(None, 1.9, "paper") == "not measured"
    for name in ("cache_speed.py", "distill_cached_targets.py", "gpu_suite.py"):
        source = (BENCHMARKS / name).read_text()
        assert "MISSED" not in source and "TARGET_" not in source, name


def test_headline_table_picks_each_models_fastest_mode():
    def record(model, mode, images_per_s):
        return dict(
            kind="headline", status="ok", model=model, mode=mode, resolution=256, batch_size=32,
            items_per_s=images_per_s, first_call_s=1.0, peak_memory_mib=10.0,
        )  # fmt: skip

    records = [
        record("sd-vae", "eager", 100.0),
        record("sd-vae", "compile+cudagraphs", 200.0),
        record("B", "eager", 150.0),
        record("B", "compile", 500.0),
        record("B", "compile+cudagraphs", 400.0),
    ]
    cell = gpu_suite.headline_table(records)["cells"]["256px_b32"]
    assert cell["sd-vae"]["mode"] == "compile+cudagraphs" and cell["B"]["mode"] == "compile"
    assert cell["B"]["speedup_vs_sd_vae"] == 2.5
    assert cell["B"]["beside"].startswith("2.50x beside 1.90x (LiteVAE paper Table 3")


@pytest.mark.slow
def test_dry_run_measures_the_headline_on_cpu(tmp_path, capsys):
    jsonl, summary_path = tmp_path / "suite.jsonl", tmp_path / "suite.json"
    argv = ["--dry_run", "--models", "S,taesd", "--output_jsonl", str(jsonl), "--output_json", str(summary_path)]
    # Seconds on a quiet machine; the budget (counted from the suite's import) must not skip cells on a busy one.
    argv += ["--budget_minutes", "60"]
    assert gpu_suite.main([*argv, "--work_dir", str(tmp_path / "work")]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    headline = [r for r in records if r["kind"] == "headline"]
    assert {(r["model"], r["resolution"], r["batch_size"], r["mode"]) for r in headline} == {
        (m, 32, b, "eager") for m in ("S", "taesd") for b in (1, 2)
    }
    assert all(r["status"] == "ok" and r["items_per_s"] > 0 and r["first_call_s"] > 0 for r in headline)
    distill = [r for r in records if r["kind"] == "headline_distill"]
    assert [r["status"] for r in distill] == ["ok"] and distill[0]["items_per_s"] > 0
    summary = json.loads(summary_path.read_text())
    assert set(summary["headline"]["cells"]) == {"32px_b1", "32px_b2"}
    assert "32px_b2 eager" in summary["headline"]["distill_step"]
    assert not summary["failed"]
    assert "== headline: each model in its fastest mode ==" in capsys.readouterr().out
