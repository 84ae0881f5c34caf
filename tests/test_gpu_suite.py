"""The benchmarks' shared measuring core and ``gpu_suite.py --smoke``: every section's code path, tiny, on the CPU.

The GPU figures themselves need a GPU; this checks that the measuring code runs and reports what it promises
(first-call time apart from throughput, best mode per cell, ratios beside the published figures, a record for every
cell, skipped ones with their reason, and the budget).
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
from gpu_sections import encoders  # noqa: E402


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
    sources = [
        "cache_speed.py",
        "distill_cached_targets.py",
        "gpu_suite.py",
        *(BENCHMARKS / "gpu_sections").glob("*.py"),
    ]
    for name in sources:
        source = (BENCHMARKS / name).read_text()
        assert "MISSED" not in source and "TARGET_" not in source, name


def test_cell_runner_records_every_outcome_and_counts_the_budget(tmp_path):
    budget = _core.Budget(minutes=1.0)
    rec = _core.Recorder(tmp_path / "cells.jsonl", budget)
    fields = {"resolution": 32, "model": "B"}
    # A result sharing a field with the settings is recorded once (its value wins), never passed twice.
    ok = _core.run_cell(rec, "k", "ok", fields, lambda: {"resolution": 64, "images_per_s": 2.0}, estimate_s=1)
    assert ok["status"] == "ok" and ok["resolution"] == 64 and ok["duration_s"] >= 0
    late = _core.run_cell(rec, "k", "late", fields, lambda: 1 / 0, estimate_s=30, reserve_s=40)
    assert late["status"] == "skipped" and late["reason"].startswith("budget:") and "reserved" in late["reason"]

    def oom():
        raise MemoryError("out of memory")

    assert _core.run_cell(rec, "k", "oom", fields, oom, estimate_s=1)["status"] == "skipped"
    failed = _core.run_cell(rec, "k", "bad", fields, lambda: 1 / 0, estimate_s=1)
    assert failed["status"] == "failed" and failed["reason"].startswith("ZeroDivisionError")
    lines = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert [r["name"] for r in lines] == ["ok", "late", "oom", "bad"]
    budget.note("compile B", 10.0)
    assert budget.seen("compile B", 60.0) == pytest.approx(11.0) and budget.seen("compile S", 60.0) == 60.0


def test_encoder_table_picks_each_models_fastest_mode():
    def record(model, mode, images_per_s, batch=32):
        return dict(
            kind="encoder_speed", status="ok", model=model, mode=mode, resolution=256, batch_size=batch,
            images_per_s=images_per_s, first_call_s=1.0, peak_memory_mib=10.0,
        )  # fmt: skip

    records = [
        record("sd-vae", "eager", 100.0),
        record("sd-vae", "compile+cudagraphs", 200.0),
        record("B", "eager", 150.0),
        record("B", "compile", 500.0),
        record("B", "compile+cudagraphs", 400.0),
        record("B", "eager", 50.0, batch=1),
        record("sd-vae", "eager", 25.0, batch=1),
    ]
    table = encoders.encoder_table(records)
    cell = table["256px_b32"]
    assert cell["sd-vae"]["best_mode"] == "compile+cudagraphs" and cell["B"]["best_mode"] == "compile"
    assert cell["B"]["speedup_vs_sd_vae"] == 2.5 and cell["B"]["compile_images_per_s"] == 500.0
    assert cell["B"]["beside"].startswith("2.50x beside 1.90x (LiteVAE paper Table 3")
    # The paper measured batch 32: other cells get the ratio without the paper's beside it.
    assert table["256px_b1"]["B"]["speedup_vs_sd_vae"] == 2.0 and "beside" not in table["256px_b1"]["B"]


@pytest.mark.slow
def test_smoke_runs_every_section_on_cpu(tmp_path, capsys):
    jsonl, summary_path = tmp_path / "suite.jsonl", tmp_path / "suite.json"
    argv = ["--smoke", "--device", "cpu", "--output_jsonl", str(jsonl), "--output_json", str(summary_path)]
    # ~20 s on a quiet machine; the budget (counted from the suite's import) must not skip cells on a busy one.
    argv += ["--budget_minutes", "30", "--work_dir", str(tmp_path / "work")]
    assert gpu_suite.main(argv) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by_section = {name: [r for r in records if r.get("section") == name] for name in gpu_suite.SECTIONS}
    assert all(by_section.values()), {name: len(found) for name, found in by_section.items()}
    for name, found in by_section.items():
        assert all(r["status"] in ("ok", "skipped") for r in found), name
        assert all(r.get("reason") for r in found if r["status"] == "skipped"), name
        if name != "compile":  # torch.compile is measured on CUDA only: every compiled cell is skipped here
            assert any(r["status"] == "ok" for r in found), name

    encoder = [r for r in by_section["encoder"] if r["status"] == "ok"]
    assert {r["model"] for r in encoder} == set(encoders.MODELS)
    assert all(r["images_per_s"] > 0 and r["first_call_s"] > 0 for r in encoder)
    batch1 = {(r["model"], r["mode"]): r for r in by_section["batch1"]}
    assert batch1[("B", "eager")]["status"] == "ok" and batch1[("B", "eager")]["batch_size"] == 1
    assert "CUDA graphs need CUDA" in batch1[("B", "compile+cudagraphs")]["reason"]
    cache = {r["vae"]: r for r in by_section["cache"]}
    assert set(cache) == {"litevae-b", "sd-vae"} and all(r["bucketing"] for r in cache.values())
    assert cache["sd-vae"]["litevae_b_speedup_vs_sd_vae"] > 0 and "warmup_s" in cache["sd-vae"]

    summary = json.loads(summary_path.read_text())
    assert not summary["failed"] and summary["wall_s"] <= summary["budget_s"]
    assert set(summary["encoder_speed"]) == {"32px_b1", "32px_b2"}
    assert set(summary["cache_latents"]) == {"litevae-b", "sd-vae"}
    assert set(summary["train_speed"]) == {"live", "cached"} and summary["distill_quality"]["status"] == "ok"
    assert "== encoder speed: each model's fastest mode per cell ==" in capsys.readouterr().out


def test_dry_run_is_the_encoder_grid_on_cpu():
    args = gpu_suite.parse_args(["--dry_run"])
    assert args.smoke and args.device == "cpu" and args.sections == ["encoder"]
    assert gpu_suite.parse_args(["--smoke"]).sections == list(gpu_suite.SECTIONS)
    assert gpu_suite.parse_args(["--smoke", "--sections", "headline"]).sections == [
        "encoder",
        "compile",
        "distill_step",
    ]
