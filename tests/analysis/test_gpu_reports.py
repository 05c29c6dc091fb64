"""The committed GPU results are what the store of that run held, and carry device, versions and date.

reports/gpu/plan_run.db is the store of the measured run (tracked on purpose: a `!` line in .gitignore); tests
read a copy of it in tmp, never the committed file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support import REPO

GPU = REPO / "reports" / "gpu"


def test_plan_report_matches_the_store_of_that_run(tmp_path: Path):
    from harness.analysis import run_report
    from harness.store import Store

    db = tmp_path / "plan_run.db"
    shutil.copy(GPU / "plan_run.db", db)  # opening may migrate; never touch the committed file
    committed = json.loads((GPU / "plan_run.json").read_text())
    rebuilt = run_report(Store(str(db)), str(committed["run"]["id"]))
    assert "H100" in committed["device"]["name"]
    assert committed["versions"]["torch"].startswith("2.11") and committed["date"].startswith("2026-")
    by_name = {t["trial"]: t for t in rebuilt["trials"]}
    assert len(committed["trials"]) == len(by_name) == 12
    types = {t["type"] for t in committed["trials"]}
    assert {"baseline", "prompt", "rag", "lora", "qlora", "dpo"} <= types
    for trial in committed["trials"]:
        again = by_name[trial["trial"]]
        assert trial["status"] == again["status"] == "finished"
        assert trial["metrics"] == again["metrics"]
        assert trial["train_seconds"] == again["train_seconds"] and trial["peak_memory_gib"] == again["peak_memory_gib"]


def test_perf_reports_name_device_versions_and_targets():
    for name in ("train_throughput.json", "eval_throughput.json", "qlora_8b.json", "sweep_throughput.json"):
        report = json.loads((REPO / "reports" / "perf" / name).read_text())
        assert report["device"]["name"].startswith("NVIDIA H"), name
        assert report["versions"]["torch"].startswith("2.11") and report["date"] >= "2026-11-", name
    train = json.loads((REPO / "reports" / "perf" / "train_throughput.json").read_text())
    assert train["comparisons"]["ours_vs_peer"]["throughput_ratio"] > 1
    best = train["vs_best_stock"]
    assert best["peer"] in train["runs"] and not train["runs"][best["peer"]]["error"]
    assert {"throughput_ratio", "peak_memory_ratio", "loss_rel_diff"} <= best.keys() and "mfu" in train["runs"]["ours"]
    assert json.loads((REPO / "reports" / "perf" / "qlora_8b.json").read_text())["qlora_8b"]["peak_memory_ratio"] < 0.45


def test_sweep_and_multi_gpu_reports_hold_what_the_readme_quotes():
    sweep = json.loads((REPO / "reports" / "perf" / "sweep_throughput.json").read_text())
    peer, ours = sweep["paths"]["peer"], sweep["paths"]["workers"]
    assert sweep["speedup"] == round(peer["wall_seconds"] / ours["wall_seconds"], 3)
    assert sweep["gpu_utilization_mean"] == ours["gpu_utilization"]["mean"] and sweep["verdicts_identical"]
    assert len(peer["trials"]) == len(ours["trials"]) == 12
    assert all(t["status"] == "finished" for t in ours["trials"].values())
    multi = json.loads((REPO / "reports" / "gpu" / "multi_gpu.json").read_text())
    parts = multi["parts"]
    one, two = parts["sweep"]["one_gpu"], parts["sweep"]["two_gpus"]
    assert multi["sweep_speedup"] == round(one["wall_seconds"] / two["wall_seconds"], 3)
    alone = json.loads((REPO / "reports" / "gpu" / "sweep_one_gpu.json").read_text())["paths"]["workers"]
    assert one["wall_seconds"] == alone["wall_seconds"]  # the one-GPU run: the sweep bench's default path, alone
    assert multi["trials_saw_one_gpu"] and multi["verdicts_identical"]
    assert multi["ddp_speedup"] > 0 and len(parts["ddp"]["loss_curves"]) == 2


def test_multi_gpu_sweep_analysis_is_the_one_its_trial_records_give():
    """The committed sweep analysis (derived from the measured timestamps, no run of its own) recomputed here from
    the trial records: time outside the trials, trial seconds, slots, the dpo-sft chain and the bounds."""
    from datetime import datetime

    import yaml

    multi = json.loads((REPO / "reports" / "gpu" / "multi_gpu.json").read_text())
    sweep = multi["parts"]["sweep"]
    analysis = sweep["analysis"]
    assert multi["sweep_analysis"] == analysis
    plan = yaml.safe_load((REPO / "examples" / "gpu" / "plan.yaml").read_text())
    parents = {a["name"]: a["from_arm"] for a in plan["arms"] if a.get("from_arm")}
    assert analysis["dependencies"] == parents == {"dpo-sft": "lora-r16-lr0.0002"}
    bounds = {}
    for run in ("one_gpu", "two_gpus"):
        trials = sweep[run]["trials"]
        start = {n: datetime.fromisoformat(t["started_at"]).timestamp() for n, t in trials.items()}
        end = {n: datetime.fromisoformat(t["finished_at"]).timestamp() for n, t in trials.items()}
        seconds = {n: end[n] - start[n] for n in trials}
        outside = sweep[run]["wall_seconds"] - (max(end.values()) - min(start.values()))
        slots = len({t["pid"] for t in trials.values()})  # every worker had a trial running at one instant
        parent = trials["lora-r16-lr0.0002"]["phases"]
        chain = parent["train_setup"] + parent["train"] + seconds["dpo-sft"]  # dpo-sft waits for its parent's training
        path = max(chain, *seconds.values())
        bounds[run] = outside + max(path, sum(seconds.values()) / slots)
        assert analysis["outside_trials_seconds"][run] == round(outside, 2)
        assert analysis["trial_seconds_total"][run] == round(sum(seconds.values()), 2)
        assert analysis["slots"][run] == slots and analysis["critical_path_seconds"][run] == round(path, 2)
        assert analysis["bound_seconds"][run] == round(bounds[run], 2) <= sweep[run]["wall_seconds"]
    assert analysis["best_possible_speedup"] == round(sweep["one_gpu"]["wall_seconds"] / bounds["two_gpus"], 3)
    assert analysis["bound_speedup"] == round(bounds["one_gpu"] / bounds["two_gpus"], 3)
    assert analysis["measured_speedup"] == multi["sweep_speedup"] < analysis["best_possible_speedup"]
    reading = analysis["reading"]
    assert reading.startswith("One GPU: ") and f"beats {analysis['best_possible_speedup']:.2f}x" in reading
    assert all(by in ("critical_path", "trial_seconds_per_slot") for by in analysis["bound_by"].values())
