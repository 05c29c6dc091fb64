"""bench/sweep_throughput.py runs end to end on the CPU (`--tiny`: a tiny random model, one-step trials): both
paths of a plan with LoRA and DPO trials, at the same time (`--together`), compared verdict by verdict and output by
output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bench import run_bench


@pytest.mark.slow
def test_sweep_paths_together_agree_output_for_output(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    run_bench(
        "sweep_throughput.py",
        "--tiny",
        "--gpus",
        "none",
        "--together",
        "--work",
        str(tmp_path / "w"),
        "--out",
        str(out),
    )
    report = json.loads(out.read_text())
    assert set(report["paths"]) == {"peer", "workers"}
    assert all(p["exit_code"] == 0 for p in report["paths"].values())
    assert all(t["status"] == "finished" for p in report["paths"].values() for t in p["trials"].values())
    assert report["verdicts_identical"] and report["outputs_compared"] > 0
    assert report["outputs_differing"] == 0 and report["outputs_differing_by_trial"] == {}
    assert report["eval_numerics"] == "invariant" and "--together" in report["how_measured"]
    assert Path(report["model_prepared"]["folder"], "config.json").is_file()  # ready before either path was timed
    assert report["speedup"] == round(
        report["paths"]["peer"]["wall_seconds"] / report["paths"]["workers"]["wall_seconds"], 3
    )
