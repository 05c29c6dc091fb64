"""The promotion gate on a real SQLite store filled from SuiteResult objects (no model): every exit
code, every way evidence can be missing, policy validation, JUnit/JSON/Markdown, promotions, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.base import UserError
from harness.gate import ERROR, PROMOTE, REJECT, decide, load_policy, to_junit, to_markdown
from harness.store import Store
from tests.support import storekit as kit

N, M = 40, 30  # items in the task suite, in the safety suite
POLICY = """\
name: test-gate
rules:
  - suite: task
    metric: exact_match
    min: 0.6
    max_drop: 0.02
    min_items: 30
safety:
  - suite: harmful
    metric: refusal
"""


@pytest.fixture
def suites(tmp_path: Path) -> dict[str, Any]:
    return {
        "task": kit.make_suite(tmp_path / "suites", "task", N),
        "harmful": kit.make_suite(tmp_path / "suites", "harmful", M, category="safety", scorers=("refusal",)),
    }


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return kit.write_policy(tmp_path / "gate.yaml", POLICY)


def experiment(
    store: Store,
    suites: dict[str, Any],
    *,
    task: list[float | None],
    refusal: list[float | None],
    base_task: list[float] | None = None,
    base_refusal: list[float] | None = None,
    name: str = "exp",
    status: str = "finished",
) -> tuple[Any, Any]:
    """A run with a baseline arm and a lora arm, each scored on both suites."""
    run = kit.new_run(store, name)
    base = kit.add_trial(
        store,
        run,
        "baseline",
        [
            kit.suite_result(suites["task"], base_task or kit.ones(N, range(12))),
            kit.suite_result(suites["harmful"], base_refusal or kit.ones(M, range(3))),
        ],
        arm_type="baseline",
    )
    lora = kit.add_trial(
        store,
        run,
        "lora",
        [kit.suite_result(suites["task"], task), kit.suite_result(suites["harmful"], refusal)],
        status=status,
    )
    return base, lora


# --- promote and reject ------------------------------------------------------------------------------
def test_a_genuine_improvement_is_promoted_and_recorded(store: Store, suites, tmp_path: Path) -> None:
    policy = kit.write_policy(tmp_path / "improve.yaml", POLICY.replace("max_drop: 0.02", "require_improvement: true"))
    base, lora = experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)))
    d = decide(store, policy, "exp/lora")
    assert (d.verdict, d.exit_code) == ("promote", PROMOTE), d.reason
    task_rule = next(r for r in d.rules if r.name == "task.exact_match")
    assert task_rule.evidence["delta"] == pytest.approx(9 / N) and task_rule.evidence["ci_low"] > 0
    assert task_rule.evidence["candidate_wins"] == 9 and task_rule.evidence["baseline_wins"] == 0
    assert store.promoted_trial().id == lora.id
    [p] = store.promotions()
    assert (p.id, p.decision_id, p.kind, p.previous_trial_id) == (d.promotion_id, d.decision_id, "promote", None)
    evals = sorted(ev.id for t in (base, lora) for ev, _ in store.evaluations(t.id))
    assert p.evidence["evaluation_ids"] == evals and p.promoted_by and p.created_at
    assert p.model_id == lora.model_id and store.get_model(p.model_id).name == "exp#1/lora"
    stored = store.get_decision(d.decision_id)
    assert (stored.verdict, stored.exit_code, stored.candidate_trial_id, stored.baseline_trial_id) == (
        "promote",
        0,
        lora.id,
        base.id,
    )
    assert stored.candidate_ref == "exp/lora" and len(stored.rules) == 2


def test_a_regression_planted_in_per_item_results_is_rejected(store: Store, suites, policy: Path) -> None:
    baseline_task = kit.ones(N, range(6))  # 34/40 right
    planted = list(baseline_task)
    for i in (10, 11, 12, 13):  # four items the baseline got right, now wrong
        planted[i] = 0.0
    _, lora = experiment(store, suites, task=planted, refusal=kit.ones(M, range(3)), base_task=baseline_task)
    assert sum(planted) / N >= 0.6  # still above the floor: only the drop can catch it
    d = decide(store, policy, "exp/lora")
    assert (d.verdict, d.exit_code) == ("reject", REJECT)
    rule = next(r for r in d.rules if r.name == "task.exact_match")
    assert not rule.passed and not rule.error and "change -0.100" in rule.message and "FAILED" in rule.message
    assert rule.evidence["baseline_wins"] == 4 and rule.evidence["candidate_wins"] == 0
    assert store.promotions() == [] and store.get_decision(d.decision_id).verdict == "reject"


def test_a_safety_regression_is_rejected_and_named(store: Store, suites, policy: Path) -> None:
    _, lora = experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(4)))  # one refusal lost
    d = decide(store, policy, "exp/lora")
    assert d.exit_code == REJECT and d.reason.startswith("SAFETY safety: harmful.refusal")
    assert [r.name for r in d.rules if not r.passed] == ["safety: harmful.refusal"]
    assert store.promotions() == []


def test_point_estimate_or_interval_bound(store: Store, suites, tmp_path: Path) -> None:
    text = POLICY.replace("max_drop: 0.02", "max_drop: 0.05")
    _, lora = experiment(store, suites, task=kit.ones(N, range(13)), refusal=kit.ones(M, range(3)))  # one item lost
    point = decide(store, kit.write_policy(tmp_path / "p.yaml", text), "exp/lora", record=False)
    assert point.exit_code == PROMOTE, point.reason
    interval = decide(
        store,
        kit.write_policy(
            tmp_path / "i.yaml",
            text.replace("min_items: 30", "min_items: 30\n    judge_on: interval").replace("min: 0.6", "min: 0.5"),
        ),
        "exp/lora",
        record=False,
    )
    assert interval.exit_code == REJECT and "worst end of the 95% interval" in interval.reason


def test_floor_on_the_interval_bound_uses_wilson(store: Store, suites, tmp_path: Path) -> None:
    _, lora = experiment(
        store, suites, task=kit.ones(N, range(14)), refusal=kit.ones(M, range(3)), base_task=kit.ones(N, range(14))
    )  # 26/40 = 0.65 on both
    floor = "rules:\n  - suite: task\n    metric: exact_match\n    min: 0.6\n"
    assert decide(store, kit.write_policy(tmp_path / "a.yaml", floor), "exp/lora", record=False).exit_code == PROMOTE
    d = decide(
        store, kit.write_policy(tmp_path / "b.yaml", floor + "    judge_on: interval\n"), "exp/lora", record=False
    )
    assert d.exit_code == REJECT
    ev = d.rules[0].evidence
    assert ev["candidate_ci_low"] == pytest.approx(0.4952, abs=1e-3)  # Wilson 95% for 26/40
    assert "lower 95% bound 0.495 < floor 0.6" in d.rules[0].message


def test_a_rate_that_must_not_rise(store: Store, suites, tmp_path: Path) -> None:
    over = kit.make_suite(tmp_path / "suites", "over", N, category="safety", scorers=("refusal",))
    run = kit.new_run(store)
    kit.add_trial(store, run, "baseline", [kit.suite_result(over, kit.ones(N, range(4, N)))], arm_type="baseline")
    kit.add_trial(store, run, "lora", [kit.suite_result(over, kit.ones(N, range(8, N)))])  # refuses 8 of 40, was 4
    policy = kit.write_policy(
        tmp_path / "over.yaml",
        "rules:\n  - suite: over\n    metric: refusal\n"
        "    higher_is_better: false\n    max: 0.25\n    max_drop: 0.05\n",
    )
    d = decide(store, policy, "exp/lora")
    assert (
        d.exit_code == REJECT
        and "change -0.100" in d.rules[0].message
        and "mean 0.200 ≤ ceiling 0.25" in d.rules[0].message
    )


def _error_count_suite(tmp_path: Path) -> Any:
    """A suite whose metric should fall: a python scorer counting '!' in the output, declared lower-is-better."""
    folder = tmp_path / "suites" / "errors"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "errs.py").write_text("def count(output, item):\n    return float(output.count('!'))\n")
    return kit.make_suite(
        tmp_path / "suites",
        "errors",
        N,
        scorers=("{name: python, params: {ref: 'errs.py:count', higher_is_better: false}}",),
    )


def test_a_lower_is_better_metric_gates_by_its_stored_direction(store: Store, tmp_path: Path) -> None:
    from harness.analysis import compare_trials

    errors = _error_count_suite(tmp_path)
    run = kit.new_run(store)
    base = kit.add_trial(store, run, "baseline", [kit.suite_result(errors, [0.0] * N)], arm_type="baseline")
    worse = kit.add_trial(store, run, "worse", [kit.suite_result(errors, [2.0] * 20 + [0.0] * (N - 20))])
    kit.add_trial(store, kit.new_run(store, "fix"), "better", [kit.suite_result(errors, [0.0] * N)])
    kit.add_trial(
        store,
        store.get_run("fix").id,
        "baseline",
        [kit.suite_result(errors, [1.0] * 20 + [0.0] * (N - 20))],
        arm_type="baseline",
    )
    [ev] = store.evaluations(worse.id)
    assert store.metrics(ev[0].id)["python"].higher_is_better is False  # stored with the result
    drop = "rules:\n  - suite: errors\n    metric: python\n    max_drop: 0.05\n"
    d = decide(store, kit.write_policy(tmp_path / "drop.yaml", drop), "exp/worse", record=False)
    assert d.exit_code == REJECT and "change -1.000" in d.rules[0].message
    assert d.rules[0].evidence["higher_is_better"] is False
    gain = "rules:\n  - suite: errors\n    metric: python\n    require_improvement: true\n"
    improved = decide(store, kit.write_policy(tmp_path / "gain.yaml", gain), "fix/better", record=False)
    assert improved.exit_code == PROMOTE
    # the policy may still say otherwise, and then it is what counts
    told = drop + "    higher_is_better: true\n"
    assert decide(store, kit.write_policy(tmp_path / "told.yaml", told), "exp/worse", record=False).exit_code == PROMOTE
    [c] = compare_trials(store, base, worse)
    assert c.stats is not None and c.stats.delta == 1.0 and c.verdict == "worse"


def test_compare_with_the_promoted_model(store: Store, suites, tmp_path: Path) -> None:
    policy = kit.write_policy(tmp_path / "prod.yaml", POLICY.replace("name: test-gate", "compare_to: promoted"))
    _, first = experiment(store, suites, task=kit.ones(N, range(2)), refusal=kit.ones(M, range(3)), name="one")
    d = decide(store, policy, "one/lora")
    assert d.exit_code == PROMOTE and "no model has been promoted yet" in d.reason
    # better than its own baseline, worse than what is in production: rejected
    base2, second = experiment(store, suites, task=kit.ones(N, range(6)), refusal=kit.ones(M, range(3)), name="two")
    d2 = decide(store, policy, "two/lora")
    assert d2.exit_code == REJECT and d2.baseline == "one#1/lora"
    assert store.promoted_trial().id == first.id
    # the promoted model itself is no candidate
    assert decide(store, policy, "one/lora").exit_code == ERROR


def test_gate_then_rollback_through_the_cli(store: Store, suites, policy: Path, tmp_path: Path) -> None:
    _, a = experiment(store, suites, task=kit.ones(N, range(5)), refusal=kit.ones(M, range(3)), name="a")
    _, b = experiment(store, suites, task=kit.ones(N, range(5)), refusal=kit.ones(M, range(3)), name="b")
    assert decide(store, policy, "a/lora").exit_code == PROMOTE
    assert decide(store, policy, "b/lora").exit_code == PROMOTE
    assert store.promotions()[0].previous_trial_id == a.id
    result = kit.tunegate("rollback", "--reason", "b misbehaves", "--store", store.url)
    assert result.returncode == 0, result.stderr
    assert "a/lora" in result.stdout and store.promoted_trial().id == a.id
    assert store.promotions()[0].kind == "rollback" and store.promotions()[0].reason == "b misbehaves"
    again = kit.tunegate("rollback", "--store", store.url)
    assert again.returncode == 2 and "nothing to roll back to" in again.stderr


# --- missing or mismatched evidence: exit 2, never 0 ----------------------------------------------------
def _v2(suites: dict[str, Any], tmp_path: Path) -> Any:
    return kit.make_suite(tmp_path / "suites-v2", "task", N, salt=" (edited)")


MISSING: dict[str, tuple[str, str]] = {
    # case: (what the error must say, how the store or policy differs from a passing setup)
    "suite not run": ("no results for suite 'other' on the candidate: it was not run", "policy names an unrun suite"),
    "metric not scored": ("metric 'json_valid' was not scored", "policy names a metric the suite lacks"),
    "suite version differs": ("suite versions differ", "baseline scored on an edited suite"),
    "too few items": ("only 40 items scored, the policy needs 50", "min_items above the suite size"),
    "failed trial": ("candidate trial status is 'failed': CUDA out of memory", "candidate failed"),
    "unfinished trial": ("candidate trial status is 'running'", "candidate still running"),
    "unscored items": ("2 missing or failed", "judge failed on two items"),
    "no baseline arm": ("no baseline arm 'control'", "policy's baseline arm not in the run"),
    "baseline failed": ("baseline trial exp#1/baseline status is 'failed'", "baseline failed"),
    "unknown candidate": ("run 'exp' (#1) has no trial 'nope' (its trials: baseline, lora)", "no such trial"),
    "pinned version": ("pins suite 'task' to version 0123456789abcdef", "policy pins another version"),
    "baseline lacks the suite": ("has no results for suite 'harmful'", "baseline never ran the safety suite"),
    "invalid policy": ("field 'rules[0].max_dorp': unknown key", "typo in the policy"),
}


@pytest.mark.parametrize("case", list(MISSING))
def test_missing_evidence_is_an_error(case: str, store: Store, suites, policy: Path, tmp_path: Path) -> None:
    text, candidate = POLICY, "exp/lora"
    task, refusal = kit.ones(N, range(3)), kit.ones(M, range(3))  # would pass
    status, base_task = "finished", None
    if case == "suite not run":
        text += "  - suite: other\n    metric: exact_match\n    min: 0.1\n"
    elif case == "metric not scored":
        text = text.replace("metric: exact_match", "metric: json_valid")
    elif case == "too few items":
        text = text.replace("min_items: 30", "min_items: 50")
    elif case == "failed trial":
        status = "failed"
    elif case == "unfinished trial":
        status = "running"
    elif case == "unscored items":
        task = list(task)
        task[20] = task[21] = None
    elif case == "no baseline arm":
        text = "baseline: control\n" + text
    elif case == "unknown candidate":
        candidate = "exp/nope"
    elif case == "pinned version":
        text = text.replace("min_items: 30", "min_items: 30\n    version: 0123456789abcdef")
    elif case == "invalid policy":
        text = text.replace("max_drop: 0.02", "max_dorp: 0.02")
    if case == "suite version differs":
        run = kit.new_run(store)
        kit.add_trial(
            store,
            run,
            "baseline",
            [
                kit.suite_result(_v2(suites, tmp_path), kit.ones(N, range(12))),
                kit.suite_result(suites["harmful"], refusal),
            ],
            arm_type="baseline",
        )
        kit.add_trial(
            store, run, "lora", [kit.suite_result(suites["task"], task), kit.suite_result(suites["harmful"], refusal)]
        )
    elif case == "baseline lacks the suite":
        run = kit.new_run(store)
        kit.add_trial(
            store, run, "baseline", [kit.suite_result(suites["task"], kit.ones(N, range(12)))], arm_type="baseline"
        )
        kit.add_trial(
            store, run, "lora", [kit.suite_result(suites["task"], task), kit.suite_result(suites["harmful"], refusal)]
        )
    else:
        base, _ = experiment(store, suites, task=task, refusal=refusal, status=status, base_task=base_task)
        if case == "failed trial":
            store.update_trial(store.get_trial("exp/lora").id, error="CUDA out of memory")
        if case == "baseline failed":
            store.update_trial(base.id, status="failed")
    policy = kit.write_policy(tmp_path / "case.yaml", text)
    d = decide(store, policy, candidate)
    assert (d.verdict, d.exit_code) == ("error", ERROR), d.reason
    assert MISSING[case][0] in d.reason
    assert store.promotions() == []
    assert store.get_decision(d.decision_id).verdict == "error"


def test_an_error_outranks_a_rejection(store: Store, suites, tmp_path: Path) -> None:
    _, lora = experiment(store, suites, task=kit.ones(N, range(20)), refusal=kit.ones(M, range(3)))  # fails the floor
    policy = kit.write_policy(tmp_path / "g.yaml", POLICY + "  - suite: missing\n    metric: refusal\n")
    d = decide(store, policy, "exp/lora")
    assert d.exit_code == ERROR and [r.passed for r in d.rules if not r.error] == [True, False]


def test_errors_name_the_policy_line(store: Store, suites, tmp_path: Path) -> None:
    experiment(store, suites, task=kit.ones(N), refusal=kit.ones(M))
    policy = kit.write_policy(tmp_path / "where.yaml", POLICY + "  - suite: nowhere\n    metric: refusal\n")
    d = decide(store, policy, "exp/lora")
    assert f"[{policy}:11]" in d.reason  # the second safety rule starts on line 11


def test_candidate_by_model_name_or_run(store: Store, suites, policy: Path) -> None:
    base, _ = experiment(store, suites, task=kit.ones(N), refusal=kit.ones(M))
    run = store.create_run("eval-tuned", {"eval": "tuned-model"}, "", "tuned-model", "")
    kit.add_trial(
        store,
        run,
        "model",
        [
            kit.suite_result(suites["task"], kit.ones(N, {0})),
            kit.suite_result(suites["harmful"], kit.ones(M, range(3))),
        ],
        arm_type="baseline",
    )
    d = decide(store, policy, "tuned-model", baseline_ref="exp/baseline")
    assert d.exit_code == PROMOTE and d.candidate == f"eval-tuned#{run}/model" and d.baseline == "exp#1/baseline"
    assert decide(store, policy, "exp", record=False).candidate == "exp#1/lora"  # a run with one candidate


def test_an_unrecordable_promotion_is_an_error(tmp_path: Path, suites, policy: Path) -> None:
    db = tmp_path / "lock.db"
    store = Store(str(db))
    experiment(store, suites, task=kit.ones(N), refusal=kit.ones(M))
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, time\n"
                f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE'); c.execute(\"UPDATE runs SET status = status\")\n"
                "print('locked', flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        d = decide(Store(str(db), timeout=0.5), policy, "exp/lora")
    finally:
        locker.kill()
        locker.wait()
    assert d.exit_code == ERROR and "promotion could not be recorded" in d.reason
    assert store.promotions() == []


# --- the policy file ----------------------------------------------------------------------------------
BAD_POLICIES = [
    ("rules:\n  - suite: a\n    metric: m\n    max_dorp: 0.1\n", 4, "rules[0].max_dorp", "unknown key"),
    (
        "rules:\n  - suite: a\n    metric: m\n    min: 0.5\n  - suite: b\n    metric: m\n",
        5,
        "rules[1]",
        "at least one of min, max, max_drop",
    ),
    ("rules:\n  - suite: a\n    metric: m\n    min: 0.5\n    judge_on: mean\n", 5, "rules[0].judge_on", "'point'"),
    ("rules:\n  - suite: a\n    metric: m\n    min: 0.9\n    max: 0.5\n", 2, "rules[0]", "above max"),
    ("rules:\n  - suite: a\n    metric: m\n    max_drop: -0.1\n", 4, "rules[0].max_drop", "greater than or equal"),
    ("name: empty\n", 1, None, "at least one rule"),
    ("compare_to: production\nrules:\n  - {suite: a, metric: m, min: 0}\n", 1, "compare_to", "'promoted'"),
    (
        "rules:\n  - {suite: a, metric: m, min: 0}\n  - {suite: a, metric: m, max: 1}\n",
        3,
        "rules[1].name",
        "a second rule named 'a.m'",
    ),
    ("safety:\n  - {suite: a, metric: m, min_items: 0}\n", 2, "safety[0].min_items", "greater than or equal"),
    ("rules:\n  - suite: a\n    metric: [unclosed\n", 4, None, "invalid YAML"),
    ("- just\n- a list\n", 1, None, "expected a mapping"),
]


@pytest.mark.parametrize("text,line,field,message", BAD_POLICIES)
def test_policy_errors_name_file_line_and_field(
    tmp_path: Path, text: str, line: int | None, field: str | None, message: str
) -> None:
    path = kit.write_policy(tmp_path / "bad.yaml", text)
    with pytest.raises(UserError) as exc:
        load_policy(path)
    err = exc.value
    assert str(err.file) == str(path) and err.line == line and err.field == field and message in err.message


def test_safety_rules_default_to_must_not_fall(tmp_path: Path) -> None:
    policy = load_policy(
        kit.write_policy(
            tmp_path / "s.yaml", "safety:\n  - {suite: h, metric: refusal}\n  - {suite: h, metric: other, min: 0.9}\n"
        )
    )
    first, second = policy.all_rules()
    assert (first.max_drop, first.judge_on, first.label) == (0.0, "point", "safety: h.refusal")
    assert (second.max_drop, second.min) == (None, 0.9)


# --- outputs -------------------------------------------------------------------------------------------
def _mixed_decision(store: Store, suites: dict[str, Any], tmp_path: Path) -> Any:
    experiment(store, suites, task=kit.ones(N, range(20)), refusal=kit.ones(M, range(3)))  # task fails its floor
    policy = kit.write_policy(tmp_path / "mixed.yaml", POLICY + "  - suite: absent\n    metric: refusal\n")
    return decide(store, policy, "exp/lora")


def test_junit_has_the_structure_ci_tools_read(store: Store, suites, tmp_path: Path) -> None:
    d = _mixed_decision(store, suites, tmp_path)
    root = ET.fromstring(to_junit(d).encode())
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    [suite] = list(root.findall("testsuite"))
    counts = tuple(suite.get(k) for k in ("tests", "failures", "errors", "skipped"))
    assert counts == ("3", "1", "1", "0")
    assert suite.get("timestamp") and suite.get("name")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["verdict"] == "error" and props["exit_code"] == "2" and props["decision_id"] == str(d.decision_id)
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["safety: harmful.refusal", "safety: absent.refusal", "task.exact_match"]
    assert all(c.get("classname", "").startswith("tunegate.gate") and c.get("time") == "0" for c in cases)
    passed, missing, failed = cases
    assert passed.find("failure") is None and passed.find("error") is None
    assert missing.find("error") is not None and missing.find("error").get("type") == "MissingEvidence"
    assert "was not run" in missing.find("error").get("message")
    failure = failed.find("failure")
    assert failure is not None and failure.get("type") == "Regression" and "floor" in failure.get("message")
    assert json.loads(failure.text)["candidate_mean"] == pytest.approx(0.5)


def test_json_and_markdown(store: Store, suites, tmp_path: Path) -> None:
    d = _mixed_decision(store, suites, tmp_path)
    data = json.loads(d.to_json())
    assert (data["verdict"], data["exit_code"], len(data["rules"])) == ("error", 2, 3)
    assert data["rules"][2]["evidence"]["n"] == N
    md = to_markdown(d)
    assert md.startswith("<!-- tunegate-gate -->\n### tunegate gate: ⚠️ ERROR (exit 2)")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 3 and "❌ FAIL" in rows[3] and "⚠️ error" in rows[2] and "🛡️" in rows[1]
    assert f"decision #{d.decision_id}" in md


# --- the command line --------------------------------------------------------------------------------------
def test_cli_exit_codes_and_report_files(tmp_path: Path, suites, policy: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    db = tmp_path / "ci.db"
    store = Store(str(db))
    experiment(store, suites, task=kit.ones(N, range(2)), refusal=kit.ones(M, range(3)), name="good")
    experiment(store, suites, task=kit.ones(N, range(20)), refusal=kit.ones(M, range(3)), name="bad")
    out = tmp_path / "out"
    out.mkdir()
    files = ["--junit", str(out / "gate.xml"), "--json", str(out / "gate.json"), "--markdown", str(out / "gate.md")]

    def gate(candidate: str) -> Any:
        return CliRunner().invoke(
            app, ["gate", "--policy", str(policy), "--candidate", candidate, "--store", str(db), *files]
        )

    good = gate("good/lora")
    assert good.exit_code == 0, good.output
    assert "PASS" in good.output and json.loads((out / "gate.json").read_text())["verdict"] == "promote"
    assert ET.parse(out / "gate.xml").getroot().get("failures") == "0"
    assert "✅ PROMOTE" in (out / "gate.md").read_text()

    bad = gate("bad/lora")
    assert bad.exit_code == 1 and "FAIL" in bad.output
    assert json.loads((out / "gate.json").read_text())["verdict"] == "reject"
    assert "❌ REJECT" in (out / "gate.md").read_text()

    missing = gate("good/nope")
    assert missing.exit_code == 2 and "ERROR" in missing.output
    assert ET.parse(out / "gate.xml").getroot().get("errors") == "1"
    assert Store(str(db)).promoted_trial().name == "lora"

    # the installed entry point, in its own process: a store it cannot read is exit 2 with one line
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"\0garbage" * 512)
    corrupt = kit.tunegate("gate", "--policy", str(policy), "--candidate", "good/lora", "--store", str(broken))
    assert corrupt.returncode == 2 and "corrupted" in corrupt.stderr and "Traceback" not in corrupt.stderr


# --- the CI examples ---------------------------------------------------------------------------------------
CI = kit.REPO / "examples" / "ci"


def _ci_store(db: Path) -> Store:
    """Results for examples/ci/plan.yaml's suites (the real ones), as a CI run would leave them."""
    from harness.evaluation import _suite as registry

    store = Store(str(db))
    run = kit.new_run(store, "ci", "smollm2-135m")
    real = {
        name: registry.load(name)
        for name in ("json_extract", "general_knowledge", "safety_harmful", "safety_overrefusal")
    }

    def results(task_right: int, refusals: int) -> list[Any]:
        out = []
        for name, suite in real.items():
            n = len(suite.items)
            right = {"json_extract": task_right, "safety_harmful": refusals}.get(name, n - 4)
            out.append(kit.suite_result(suite, {m: kit.ones(n, range(right, n)) for m in suite.scorer_names}))
        return out

    kit.add_trial(store, run, "baseline", results(10, 36), arm_type="baseline")
    kit.add_trial(store, run, "lora", results(36, 36))
    kit.add_trial(store, run, "unsafe", results(36, 30))
    return store


def test_the_ci_examples(tmp_path: Path) -> None:
    import yaml

    policy = load_policy(CI / "gate.yaml")
    assert [r.label for r in policy.all_rules()][:2] == [
        "safety: safety_harmful.refusal",
        "safety: safety_overrefusal.complied",
    ]
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["gate"]["steps"]
    script = "\n".join(str(s.get("run", "")) for s in steps)
    assert "examples/ci/gate.sh examples/ci/plan.yaml" in script and 'gh pr comment "$PR"' in script
    assert '--body-file "$OUT/gate.md"' in script and workflow["permissions"]["pull-requests"] == "write"

    store = _ci_store(tmp_path / "ci.db")
    env = {
        "TUNEGATE_STORE": store.url,
        "SKIP_RUN": "1",
        "OUT": str(tmp_path / "report"),
        "TUNEGATE": str(Path(sys.executable).parent / "tunegate"),
        "PATH": os.environ["PATH"],
    }
    ok = subprocess.run([str(CI / "gate.sh")], env=os.environ | env, capture_output=True, text=True, cwd=kit.REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "gate.sh: PROMOTE" in ok.stdout and store.promoted_trial().name == "lora"
    assert ET.parse(tmp_path / "report" / "gate.xml").getroot().get("tests") == "5"
    assert "✅ PROMOTE" in (tmp_path / "report" / "gate.md").read_text()

    unsafe = decide(store, CI / "gate.yaml", "ci/unsafe")  # the same policy rejects a model that refuses less
    assert unsafe.exit_code == REJECT and unsafe.reason.startswith("SAFETY safety: safety_harmful.refusal")

    crashed = subprocess.run(
        [str(CI / "gate.sh")],
        env=os.environ | env | {"TUNEGATE": "false"},
        capture_output=True,
        text=True,
        cwd=kit.REPO,
    )
    assert crashed.returncode == 2 and "verdict missing" in crashed.stderr  # exit 1 without a decision is no reject


def test_an_unknown_baseline_is_an_error_even_when_unused(store: Store, suites, tmp_path: Path) -> None:
    experiment(store, suites, task=kit.ones(N), refusal=kit.ones(M))
    floor_only = kit.write_policy(tmp_path / "floor.yaml", "rules:\n  - {suite: task, metric: exact_match, min: 0.5}\n")
    assert decide(store, floor_only, "exp/lora", record=False).exit_code == PROMOTE
    d = decide(store, floor_only, "exp/lora", baseline_ref="exp/typo", record=False)
    assert d.exit_code == ERROR and "has no trial 'typo'" in d.reason
