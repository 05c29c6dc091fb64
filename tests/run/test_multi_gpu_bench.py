"""bench/multi_gpu.py as a command: the data-parallel part, and the sweep part with the whole plan by Ray, in
tiny mode on this CPU machine (two gloo ranks and two fake GPU ids), and a part that fails
being recorded in the JSON instead of ending the invocation."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.bench import run_bench


def test_a_failing_part_is_recorded_and_the_json_still_written(tmp_path: Path):
    earlier = tmp_path / "one_gpu.json"
    earlier.write_text(json.dumps({"paths": {"peer": {"wall_seconds": 10.0}}}))
    out = tmp_path / "multi_gpu.json"
    run_bench(
        "multi_gpu.py",
        "--tiny",
        "--parts",
        "sweep",
        "--one-gpu-json",
        str(earlier),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert "no 'workers' path" in report["parts"]["sweep"]["error"]
    assert report["errors"] == {"sweep": report["parts"]["sweep"]["error"]}
    assert report["sweep_speedup"] is None and report["targets"] == {}
    assert report["date"] and report["versions"]["torch"] and report["device"]["type"] == "cpu"
    assert not (tmp_path / "work" / "sweep-2gpus").exists()  # the bad input stopped the part before it ran


def test_unknown_part_is_refused():
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "multi_gpu.py"), "--parts", "sweep,tpu", "--out", "/dev/null"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and "unknown part(s) tpu" in result.stderr


@pytest.mark.slow
def test_data_parallel_part_in_tiny_mode(tmp_path: Path):
    """One LoRA trial on one (fake) GPU with accumulation 2, the same on two gloo ranks with accumulation 1: the
    same global batch, so on the CPU (float32) the same loss at every step and the same tokens counted."""
    out = tmp_path / "multi_gpu.json"
    run_bench("multi_gpu.py", "--tiny", "--parts", "ddp", "--work", str(tmp_path / "work"), "--out", str(out))
    report = json.loads(out.read_text())
    ddp = report["parts"]["ddp"]
    assert report["errors"] == {} and report["ddp_speedup"] == ddp["ddp_speedup"] > 0
    one, two = ddp["trials"]["one_gpu"], ddp["trials"]["two_gpus"]
    assert (one["world_size"], one["cuda_visible_devices"]) == (1, "0")
    assert (two["world_size"], two["cuda_visible_devices"]) == (2, "0,1")
    curves = report["loss_curves"]
    assert len(curves["one_gpu"]) == len(curves["two_gpus"]) == ddp["settings"]["steps"] == 3
    assert curves["one_gpu"] == pytest.approx(curves["two_gpus"], rel=1e-4)
    assert report["loss_curve_rel_diff"] < 1e-4 and report["targets"]["loss_curve_rel_diff"]["met"]
    # tokens/s of the data-parallel trial counts every rank's tokens: the same total as the one-process trial
    assert ddp["same_tokens"] and one["tokens_total"] > 0
    assert report["ddp_speedup"] == pytest.approx(two["tokens_per_second"] / one["tokens_per_second"], rel=1e-3)


@pytest.mark.slow
def test_sweep_part_and_the_whole_plan_by_ray_in_tiny_mode(tmp_path: Path):
    """The tiny plan by persistent workers on one fake GPU id and on two: the same verdicts and outputs, each
    trial pinned to exactly one id, both ids used, the speedup explained from the trial records; then (where Ray
    is installed) the same plan by Ray, compared with the sweep part's two-GPU run, whose store is read rather than
    run a third time (about 2 minutes on 2 CPU cores)."""
    ray = importlib.util.find_spec("ray") is not None
    out = tmp_path / "multi_gpu.json"
    parts = ["--parts", "sweep,ray", "--ray-plan", "full"] if ray else ["--parts", "sweep"]
    run_bench("multi_gpu.py", "--tiny", *parts, "--work", str(tmp_path / "work"), "--out", str(out))
    report = json.loads(out.read_text())
    sweep = report["parts"]["sweep"]
    assert report["errors"] == {} and report["sweep_speedup"] > 0
    assert report["verdicts_identical"] and sweep["verdicts"]["two_gpus"]
    assert report["trials_saw_one_gpu"] and sweep["gpus_used"] == {"one_gpu": ["0"], "two_gpus": ["0", "1"]}
    assert sweep["trials_not_finished"] == {"one_gpu": [], "two_gpus": []}
    assert sweep["outputs_compared"] > 0 and sweep["outputs_differing"] == 0
    assert "one_gpu_problem" not in sweep
    assert_analysis_fits_the_trials(report)
    if not ray:
        return
    ray_part = report["parts"]["ray"]
    trials = {"baseline", "prompt", "lora-a", "lora-b", "dpo", "dpo-sft"}
    assert ray_part["ray_plan"] == "full" and ray_part["plan"] == sweep["plan"]
    assert ray_part["local"]["source"] == "the sweep part's two-GPU run of this invocation"
    assert ray_part["local"]["store"] == sweep["two_gpus"]["store"]
    assert not (tmp_path / "work" / "ray" / "local").exists()  # no third local run
    assert ray_part["wall_seconds"]["local"] == sweep["two_gpus"]["wall_seconds"]
    assert set(ray_part["ray"]["trials"]) == trials and set(ray_part["ray"]["trials"].values()) == {"finished"}
    assert ray_part["statuses_identical"] and ray_part["local"]["verdicts"] == sweep["verdicts"]["two_gpus"]
    assert ray_part["verdicts_compared"] == 5 and set(ray_part["ray"]["verdicts"]) == trials - {"baseline"}
    assert report["ray_verdicts_identical"] is True and ray_part["verdicts_differing"] == {}
    assert ray_part["outputs_compared"] == 6 * 6 and ray_part["outputs_differing"] == 0  # 3 + 3 items a trial, CPU
    assert report["ray_results_identical"] is True


def assert_analysis_fits_the_trials(report: dict) -> None:
    """The sweep analysis (and its top-level copy) against the trial records it was computed from."""
    sweep = report["parts"]["sweep"]
    analysis = sweep["analysis"]
    assert report["sweep_analysis"] == analysis and analysis["dependencies"] == {"dpo-sft": "lora-a"}
    for run in ("one_gpu", "two_gpus"):
        trials = sweep[run]["trials"].values()
        starts = [datetime.fromisoformat(t["started_at"]) for t in trials]
        ends = [datetime.fromisoformat(t["finished_at"]) for t in trials]
        span = (max(ends) - min(starts)).total_seconds()
        durations = [(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)]
        total = sum(durations)
        assert analysis["outside_trials_seconds"][run] == pytest.approx(sweep[run]["wall_seconds"] - span, abs=0.02)
        assert analysis["trial_seconds_total"][run] == pytest.approx(total, abs=0.02)
        assert 1 <= analysis["slots"][run] <= analysis["worker_processes"][run] == len({t["pid"] for t in trials})
        assert analysis["critical_path_seconds"][run] >= max(durations) - 0.01
        assert analysis["bound_seconds"][run] == pytest.approx(
            analysis["outside_trials_seconds"][run]
            + max(analysis["critical_path_seconds"][run], total / analysis["slots"][run]),
            abs=0.03,
        )
    assert analysis["worker_processes"] == {"one_gpu": 1, "two_gpus": 2}  # one worker per (fake) GPU on 2 cores
    assert analysis["best_possible_speedup"] == round(
        sweep["one_gpu"]["wall_seconds"] / analysis["bound_seconds"]["two_gpus"], 3
    )
    assert analysis["reading"].startswith("One GPU: ")
