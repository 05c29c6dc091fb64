"""The app's Gate page shows how close each decision was ("FAIL — 1 item from PASS", a flips column per rule)
and the numerics both sides were scored under, with a warning naming the keys that differ (AppTest on a store
filled from per-item scores); the static HTML report shows the same closeness."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.gate import decide
from harness.store import Store
from harness.ui._report import write_html
from tests.support import storekit as kit
from tests.ui.test_app import frame, open_page

FP32 = {"dtype": "float32", "mode": "invariant", "gpu": "NVIDIA H200"}
BF16 = FP32 | {"dtype": "bfloat16"}


def scored(suite, scores, numerics):
    result = kit.suite_result(suite, scores)
    result.numerics = numerics
    return result


def test_the_gate_page_shows_closeness_and_numerics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "store.db"
    store = Store(str(db))
    task = kit.make_suite(tmp_path / "suites", "task", 20)
    harmful = kit.make_suite(tmp_path / "suites", "harmful", 10, category="safety", scorers=("refusal",))
    run = kit.new_run(store)
    kit.add_trial(
        store,
        run,
        "baseline",
        [scored(task, kit.ones(20, range(5)), FP32), scored(harmful, kit.ones(10, range(1)), FP32)],
        arm_type="baseline",
    )
    kit.add_trial(
        store, run, "lora", [scored(task, kit.ones(20, range(2)), BF16), scored(harmful, kit.ones(10, range(2)), BF16)]
    )  # one refusal lost
    policy = kit.write_policy(
        tmp_path / "gate.yaml",
        "rules:\n  - suite: task\n    metric: exact_match\n"
        "    min: 0.5\nsafety:\n  - suite: harmful\n    metric: refusal\n",
    )
    d = decide(store, policy, "exp/lora")
    assert d.verdict == "reject" and d.flips_to_change == 1

    at = open_page(monkeypatch, f"sqlite:///{db}", "gate", run_id=run)
    assert len(at.error) == 1 and "FAIL — 1 item from PASS" in at.error[0].value
    rules = frame(at, "flips to change")
    assert list(rules["rule"]) == [r.name for r in d.rules]
    assert list(rules["flips to change"]) == [str(r.flips_to_change) for r in d.rules]
    assert any("different numerics" in w.value and "dtype" in w.value for w in at.warning)
    numerics = frame(at, "differs").set_index("numerics")
    assert (numerics.loc["dtype", "baseline"], numerics.loc["dtype", "candidate"]) == ("float32", "bfloat16")
    assert numerics.loc["dtype", "differs"] == "⚠️" and numerics.loc["gpu", "differs"] == ""

    html = write_html(store, str(run), tmp_path / "report.html").read_text()
    assert "FAIL — 1 item from PASS" in html and "<th>flips to change</th>" in html
