"""bench/multi_gpu.py's sweep analysis: the time outside the trials, the most trials at once, the critical path
of `from_arm` dependencies and the list-scheduling bound, computed from trial records whose answers are known
(the pure function, and `--analyse` on a report written earlier)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import REPO
from tests.support.bench import bench_module, run_bench

T0 = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with bench_module("multi_gpu.py") as module:
        yield module


def trial(begin: float, end: float, pid: int, **phases: float) -> dict[str, Any]:
    """A finished trial's record, `begin` and `end` in seconds after T0; `phases` as its manifest has them."""
    return {
        "status": "finished",
        "started_at": (T0 + timedelta(seconds=begin)).isoformat(),
        "finished_at": (T0 + timedelta(seconds=end)).isoformat(),
        "pid": pid,
        "phases": phases or None,
    }


def one_gpu() -> dict[str, Any]:
    """One slot: a (trained after 5 + 15 of its 30 s), a 5 s gap, b, then c; 110 s wall."""
    return {
        "wall_seconds": 110.0,
        "trials": {
            "a": trial(10, 40, 1, start=8.0, train_setup=5.0, train=15.0),
            "b": trial(45, 60, 1),
            "c": trial(60, 80, 1),
        },
    }


def two_gpus() -> dict[str, Any]:
    """a beside b then d (b ends the instant d starts: two at once, not three), c after a; 70 s wall."""
    return {
        "wall_seconds": 70.0,
        "trials": {
            "a": trial(10, 40, 1, start=9.0, train_setup=5.0, train=15.0),
            "b": trial(10, 30, 2),
            "d": trial(30, 40, 2),
            "c": trial(40, 65, 1),
            "never-ran": {"status": "failed", "started_at": None, "finished_at": None},
        },
    }


def test_the_bound_of_each_run_and_the_speedups_it_allows(bench: ModuleType):
    a = bench.sweep_analysis(one_gpu(), two_gpus(), {"c": "a"})
    assert a["trials_timed"] == {"one_gpu": 3, "two_gpus": 4}  # the trial without timestamps is left out
    assert a["trials_span_seconds"] == {"one_gpu": 70.0, "two_gpus": 55.0}
    assert a["outside_trials_seconds"] == {"one_gpu": 40.0, "two_gpus": 15.0}
    assert a["trial_seconds_total"] == {"one_gpu": 65.0, "two_gpus": 85.0}
    assert a["slots"] == {"one_gpu": 1, "two_gpus": 2} and a["worker_processes"] == {"one_gpu": 1, "two_gpus": 2}
    assert a["worker_start_seconds_max"] == {"one_gpu": 8.0, "two_gpus": 9.0}
    # c may start once a has trained (5 + 15 s after a's start), not once a has finished
    assert a["critical_path_seconds"] == {"one_gpu": 40.0, "two_gpus": 45.0}
    assert a["critical_path"] == {"one_gpu": ["a", "c"], "two_gpus": ["a", "c"]}
    assert a["bound_seconds"] == {"one_gpu": 105.0, "two_gpus": 60.0}  # 40 + 65 / 1, 15 + max(45, 85 / 2)
    assert a["bound_by"] == {"one_gpu": "trial_seconds_per_slot", "two_gpus": "critical_path"}
    assert a["dependencies"] == {"c": "a"}
    assert a["measured_speedup"] == round(110 / 70, 3)
    assert a["best_possible_speedup"] == round(110 / 60, 3) and a["bound_speedup"] == round(105 / 60, 3)
    assert "set by the critical path (a -> c, 45.0s)" in a["reading"] and "1.83x" in a["reading"]


def test_the_time_outside_the_trials_is_split_where_the_command_start_is_known(bench: ModuleType):
    run = one_gpu() | {"started_at": (T0 + timedelta(seconds=4)).isoformat()}
    run["trials"]["a"]["phases"] |= {"start_imports": 6.5, "start_waiting": 1.5}
    a = bench.sweep_analysis(run, two_gpus(), {})
    assert a["worker_imports_seconds_max"] == {"one_gpu": 6.5, "two_gpus": None}
    assert "up to 8.0s, of which imports up to 6.5s and waiting for the driver up to 1.5s" in a["reading"]
    # one GPU: started at 4 s, first trial at 10 s, last trial ended at 80 s, the command at 4 + 110 s
    assert a["before_first_trial_seconds"] == {"one_gpu": 6.0, "two_gpus": None}
    assert a["after_last_trial_seconds"] == {"one_gpu": 34.0, "two_gpus": None}
    assert "40.0s outside the trials (6.0s before the first, 34.0s after the last)" in a["reading"]


def test_a_parent_without_training_phases_counts_to_its_end(bench: ModuleType):
    """b has no train phases: c, continuing b, waits for b's end (15 s) and the chain is 15 + 20 s."""
    a = bench.sweep_analysis(one_gpu(), two_gpus(), {"c": "b"})
    assert a["critical_path"]["one_gpu"] == ["b", "c"] and a["critical_path_seconds"]["one_gpu"] == 35.0
    assert a["critical_path"]["two_gpus"] == ["b", "c"] and a["critical_path_seconds"]["two_gpus"] == 45.0
    without = bench.sweep_analysis(one_gpu(), two_gpus(), {})  # no dependency: the longest trial alone
    assert without["critical_path"] == {"one_gpu": ["a"], "two_gpus": ["a"]}


def test_runs_without_timestamps_are_not_analysed(bench: ModuleType):
    untimed = {"wall_seconds": 5.0, "trials": {"a": {"status": "failed", "started_at": None, "finished_at": None}}}
    a = bench.sweep_analysis(one_gpu(), untimed, {})
    assert a["trials_timed"] == {"one_gpu": 3, "two_gpus": 0}
    assert a["reading"].startswith("not analysed") and "best_possible_speedup" not in a


def test_the_gpu_plan_has_one_dependency(bench: ModuleType):
    assert bench.plan_parents(REPO / "examples" / "gpu" / "plan.yaml") == {"dpo-sft": "lora-r16-lr0.0002"}


def test_analyse_adds_the_analysis_to_an_earlier_report_and_changes_nothing_else(tmp_path: Path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: p\narms:\n  - {name: a, type: lora}\n  - {name: c, type: dpo, from_arm: a}\n")
    report = {
        "bench": "multi_gpu",
        "sweep_speedup": 1.571,
        "parts": {
            "sweep": {"one_gpu": one_gpu(), "two_gpus": two_gpus(), "sweep_speedup": 1.571},
            "ddp": {"ddp_speedup": 1.8},
        },
    }
    earlier = tmp_path / "multi_gpu.json"
    earlier.write_text(json.dumps(report))
    out = tmp_path / "analysed.json"
    run_bench("multi_gpu.py", "--analyse", str(earlier), "--plan", str(plan), "--out", str(out), timeout=120)
    analysed = json.loads(out.read_text())
    analysis = analysed.pop("sweep_analysis")
    assert analysed["parts"]["sweep"].pop("analysis") == analysis and analysed == report
    assert analysis["dependencies"] == {"c": "a"} and analysis["best_possible_speedup"] == round(110 / 60, 3)


def test_analyse_refuses_a_report_without_the_sweep_trials(tmp_path: Path):
    earlier = tmp_path / "multi_gpu.json"
    earlier.write_text(json.dumps({"parts": {"ddp": {"ddp_speedup": 1.8}}}))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "multi_gpu.py"),
            "--analyse",
            str(earlier),
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0 and "nothing to analyse" in result.stderr
    assert not (tmp_path / "out.json").exists()
