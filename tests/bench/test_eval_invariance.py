"""bench/eval_invariance.py runs end to end on a tiny bf16 model on CPU: the base model and two adapters trained
in the bench, the GPU plan's suites, every configuration (batch 7, the suite's own, device-sized, mixed-adapter,
concurrent trial processes) compared bit for bit with each item scored alone, and the three speed paths."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench import run_bench


def test_eval_invariance_smoke(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "inv.json"
    run_bench(
        "eval_invariance.py",
        "--smoke",
        "--tokenizer",
        str(tiny_model_dir),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    )
    report = json.loads(out.read_text())
    assert report["outputs_differing"] == 0 and report["loglik_differing"] == 0
    assert report["outputs_compared"] >= 150 and report["loglik_compared"] >= 200
    assert set(report["per_configuration"]) == {"batch-7", "batch-own", "device", "mixed-adapter", "four-trials"}
    assert all(c["outputs_compared"] > 0 for c in report["per_configuration"].values())
    assert report["suites"].keys() == {"json_extract", "general_knowledge", "safety_harmful", "safety_overrefusal"}
    assert set(report["tokens_per_second"]) == {"invariant", "fast_batch_4", "fast_device_batch", "naive_loop"}
    assert all(v > 0 for v in report["tokens_per_second"].values())
    assert report["numerics"]["mode"] == "invariant" and report["numerics"]["dtype"] == "bfloat16"
    assert report["speedup_vs_fast_same_run"] > 0 and "versions" in report and "date" in report
    assert set(report["fast_mode"]) == {"batch-7", "device"}
