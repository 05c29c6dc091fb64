"""bench/multi_gpu.py as a command: the data-parallel part, the sweep part and the ray part (small plan and the
whole sweep plan) in tiny mode on this CPU machine (two gloo ranks and two fake GPU ids), and a part that fails
being recorded in the JSON instead of ending the invocation."""
from __future__ import annotations

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
    run_bench("multi_gpu.py", "--tiny", "--parts", "sweep", "--one-gpu-json", str(earlier),
              "--work", str(tmp_path / "work"), "--out", str(out), timeout=300)
    report = json.loads(out.read_text())
    assert "no 'workers' path" in report["parts"]["sweep"]["error"]
    assert report["errors"] == {"sweep": report["parts"]["sweep"]["error"]}
    assert report["sweep_speedup"] is None and report["targets"] == {}
    assert report["date"] and report["versions"]["torch"] and report["device"]["type"] == "cpu"
    assert not (tmp_path / "work" / "sweep-2gpus").exists()  # the bad input stopped the part before it ran


def test_unknown_part_is_refused():
    result = subprocess.run([sys.executable, str(REPO / "bench" / "multi_gpu.py"), "--parts", "sweep,tpu",
                             "--out", "/dev/null"], capture_output=True, text=True, cwd=REPO)
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
def test_sweep_part_in_tiny_mode(tmp_path: Path):
    """The tiny plan by persistent workers on one fake GPU id and on two: the same verdicts and outputs, each
    trial pinned to exactly one id, both ids used (about 4 minutes on 2 CPU cores)."""
    out = tmp_path / "multi_gpu.json"
    run_bench("multi_gpu.py", "--tiny", "--parts", "sweep", "--work", str(tmp_path / "work"), "--out", str(out))
    report = json.loads(out.read_text())
    sweep = report["parts"]["sweep"]
    assert report["errors"] == {} and report["sweep_speedup"] > 0
    assert report["verdicts_identical"] and sweep["verdicts"]["two_gpus"]
    assert report["trials_saw_one_gpu"] and sweep["gpus_used"] == {"one_gpu": ["0"], "two_gpus": ["0", "1"]}
    assert sweep["trials_not_finished"] == {"one_gpu": [], "two_gpus": []}
    assert sweep["outputs_compared"] > 0 and sweep["outputs_differing"] == 0
    assert "one_gpu_problem" not in sweep
    assert_analysis_fits_the_trials(report)


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
            + max(analysis["critical_path_seconds"][run], total / analysis["slots"][run]), abs=0.03)
    assert analysis["worker_processes"] == {"one_gpu": 1, "two_gpus": 2}  # one worker per (fake) GPU on 2 cores
    assert analysis["best_possible_speedup"] == round(
        sweep["one_gpu"]["wall_seconds"] / analysis["bound_seconds"]["two_gpus"], 3)
    assert analysis["reading"].startswith("One GPU: ")


RAY_MISSING = "Ray is not installed in this environment (pip install 'ray>=2.9'): the ray part records itself skipped"


@pytest.mark.slow
@pytest.mark.parametrize("plan", ["small", "full"])
def test_ray_part_in_tiny_mode(tmp_path: Path, plan: str):
    """A Ray head with two (fake) GPU resources started and stopped by the bench; the ray executor's item
    outputs are the local executor's: the small plan, or the whole tiny sweep plan (six trials, one continuing
    another) with its gate verdicts, the local run made here by the sweep's two-GPU options."""
    pytest.importorskip("ray", reason=RAY_MISSING)
    out = tmp_path / "multi_gpu.json"
    run_bench("multi_gpu.py", "--tiny", "--parts", "ray", "--ray-plan", plan, "--work", str(tmp_path / "work"),
              "--out", str(out))
    report = json.loads(out.read_text())
    ray = report["parts"]["ray"]
    assert report["errors"] == {} and report["ray_results_identical"] is True and ray["ray_plan"] == plan
    assert ray["ray"]["exit_code"] == 0 and set(ray["ray"]["trials"].values()) == {"finished"}
    if plan == "small":
        assert ray["outputs_compared"] == 6 and report["ray_verdicts_identical"] is None
        return
    trials = {"baseline", "prompt", "lora-a", "lora-b", "dpo", "dpo-sft"}
    assert set(ray["ray"]["trials"]) == set(ray["local"]["trials"]) == trials
    assert ray["local"]["source"] == "run here" and ray["local"]["exit_code"] == 0
    assert "--executor" in ray["local"]["command"] and "workers" in ray["local"]["command"]
    assert ray["verdicts_compared"] == 5 and set(ray["ray"]["verdicts"]) == trials - {"baseline"}
    assert report["ray_verdicts_identical"] is True and ray["verdicts_differing"] == {}
    assert ray["outputs_compared"] == 6 * 6 and ray["outputs_differing"] == 0  # 3 + 3 items per trial, CPU
    assert ray["wall_seconds"] == {"local": ray["local"]["wall_seconds"], "ray": ray["ray"]["wall_seconds"]}


@pytest.mark.slow
def test_ray_full_plan_reuses_the_sweep_parts_two_gpu_run(tmp_path: Path):
    """`--parts sweep,ray --ray-plan full`: Ray runs the plan the sweep part ran and is compared with that part's
    two-GPU run (its store read, no third local run)."""
    pytest.importorskip("ray", reason=RAY_MISSING)
    out = tmp_path / "multi_gpu.json"
    run_bench("multi_gpu.py", "--tiny", "--parts", "sweep,ray", "--ray-plan", "full", "--work",
              str(tmp_path / "work"), "--out", str(out))
    report = json.loads(out.read_text())
    sweep, ray = report["parts"]["sweep"], report["parts"]["ray"]
    assert report["errors"] == {} and ray["plan"] == sweep["plan"]
    assert ray["local"]["source"] == "the sweep part's two-GPU run of this invocation"
    assert ray["local"]["store"] == sweep["two_gpus"]["store"] and not (tmp_path / "work" / "ray" / "local").exists()
    assert ray["wall_seconds"]["local"] == sweep["two_gpus"]["wall_seconds"]
    assert ray["local"]["verdicts"] == sweep["verdicts"]["two_gpus"] and report["ray_verdicts_identical"] is True
    assert ray["statuses_identical"] and set(ray["ray"]["trials"].values()) == {"finished"}
    assert_analysis_fits_the_trials(report)
