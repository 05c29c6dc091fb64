"""The gate's numerics checks and its closeness report, end to end on a real SQLite store: numerics written with
each evaluation and shown in every output, a warning (or, with require_same_numerics, exit 2) when baseline and
candidate differ, old rows as "unknown"; flips_to_change in JSON, JUnit, Markdown and the terminal, and the items
it names really flipping the decision when their scores are changed in the store."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.cli._console import print_decision
from harness.gate import PROMOTE, REJECT, decide, to_junit, to_markdown
from harness.store import Store
from tests.support import storekit as kit

N, M = 40, 30
POLICY = """\
name: numerics-gate
rules:
  - suite: task
    metric: exact_match
    min: 0.6
    max_drop: 0.02
safety:
  - suite: harmful
    metric: refusal
"""
FP32 = {"dtype": "float32", "mode": "invariant", "engine": "tunegate", "torch": "2.9.0", "gpu": "NVIDIA H200"}
BF16 = FP32 | {"dtype": "bfloat16"}


@pytest.fixture
def suites(tmp_path: Path) -> dict[str, Any]:
    return {
        "task": kit.make_suite(tmp_path / "suites", "task", N),
        "harmful": kit.make_suite(tmp_path / "suites", "harmful", M, category="safety", scorers=("refusal",)),
    }


def scored(suite: Any, scores: list[float], numerics: dict[str, str] | None) -> Any:
    result = kit.suite_result(suite, scores)
    if numerics is not None:
        result.numerics = numerics  # what the evaluation attaches to its SuiteResult
    return result


def experiment(
    store: Store,
    suites: dict[str, Any],
    *,
    task: list[float],
    refusal: list[float],
    base: dict[str, str] | None,
    cand: dict[str, str] | None,
    name: str = "exp",
) -> tuple[Any, Any]:
    run = kit.new_run(store, name)
    baseline = kit.add_trial(
        store,
        run,
        "baseline",
        [scored(suites["task"], kit.ones(N, range(12)), base), scored(suites["harmful"], kit.ones(M, range(3)), base)],
        arm_type="baseline",
    )
    lora = kit.add_trial(
        store, run, "lora", [scored(suites["task"], task, cand), scored(suites["harmful"], refusal, cand)]
    )
    return baseline, lora


def terminal(decision: Any) -> str:
    out = Console(record=True, width=200)
    print_decision(decision, out=out)
    return out.export_text()


# --- numerics ------------------------------------------------------------------------------------------------
def test_numerics_are_stored_with_each_evaluation_and_shown(store: Store, suites, tmp_path: Path) -> None:
    _, lora = experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)), base=FP32, cand=FP32)
    assert [ev.numerics for ev, _ in store.evaluations(lora.id)] == [FP32, FP32]
    d = decide(store, kit.write_policy(tmp_path / "g.yaml", POLICY), "exp/lora")
    assert d.exit_code == PROMOTE and d.numerics == {"candidate": FP32, "baseline": FP32} and d.numerics_differ == []
    assert "numerics" not in d.reason
    data = json.loads(d.to_json())
    assert data["numerics"]["candidate"]["dtype"] == "float32" and data["numerics_differ"] == []
    assert data["rules"][0]["evidence"]["baseline_numerics"] == FP32
    props = {p.get("name"): p.get("value") for p in ET.fromstring(to_junit(d).encode()).find("testsuite/properties")}
    assert props["numerics.candidate.gpu"] == "NVIDIA H200" and props["numerics.baseline.dtype"] == "float32"
    assert "numerics_differ" not in props
    md = to_markdown(d)
    assert "<summary>Numerics</summary>" in md and "| dtype | float32 | float32 |" in md
    text = terminal(d)
    assert "scored under" in text and "NVIDIA H200" in text
    assert store.get_decision(d.decision_id).numerics == {"candidate": FP32, "baseline": FP32, "differ": []}


def test_different_numerics_warn_and_name_the_keys(store: Store, suites, tmp_path: Path) -> None:
    experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)), base=FP32, cand=BF16)
    d = decide(store, kit.write_policy(tmp_path / "g.yaml", POLICY), "exp/lora")
    assert d.exit_code == PROMOTE  # a warning, not a verdict
    assert d.numerics_differ == ["dtype"]
    assert "different numerics" in d.reason and "dtype (baseline float32, candidate bfloat16)" in d.reason
    props = {p.get("name"): p.get("value") for p in ET.fromstring(to_junit(d).encode()).find("testsuite/properties")}
    assert props["numerics_differ"] == "dtype" and props["numerics.candidate.dtype"] == "bfloat16"
    md = to_markdown(d)
    assert "(differ: dtype)" in md and "| dtype ⚠️ | float32 | bfloat16 |" in md
    assert "bfloat16" in terminal(d)


def test_require_same_numerics_is_an_error_naming_the_keys(store: Store, suites, tmp_path: Path) -> None:
    experiment(
        store,
        suites,
        task=kit.ones(N, range(3)),
        refusal=kit.ones(M, range(3)),
        base=FP32,
        cand=BF16 | {"gpu": "NVIDIA H100"},
    )
    policy = kit.write_policy(tmp_path / "strict.yaml", "require_same_numerics: true\n" + POLICY)
    result = kit.tunegate("gate", "--policy", str(policy), "--candidate", "exp/lora", "--store", store.url)
    assert result.returncode == 2, result.stdout + result.stderr
    flat = " ".join(result.stdout.split())
    assert "require_same_numerics" in flat and "dtype (baseline float32, candidate bfloat16)" in flat
    assert "gpu (baseline NVIDIA H200, candidate NVIDIA H100)" in flat and "Traceback" not in result.stderr
    d = decide(store, policy, "exp/lora", record=False)
    assert d.verdict == "error" and d.numerics_differ == ["dtype", "gpu"] and d.flips_to_change is None
    [same] = [r for r in d.rules if r.name == "same numerics"]
    assert same.error


def test_same_numerics_pass_a_strict_policy(store: Store, suites, tmp_path: Path) -> None:
    experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)), base=BF16, cand=BF16)
    policy = kit.write_policy(tmp_path / "strict.yaml", "require_same_numerics: true\n" + POLICY)
    assert decide(store, policy, "exp/lora").exit_code == PROMOTE


@pytest.mark.parametrize(
    "base,cand,warned,strict", [(None, BF16, True, 2), (BF16, None, True, 2), (None, None, False, 2)]
)
def test_rows_without_numerics_read_as_unknown(
    store: Store, suites, tmp_path: Path, base, cand, warned: bool, strict: int
) -> None:
    experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)), base=base, cand=cand)
    d = decide(store, kit.write_policy(tmp_path / "g.yaml", POLICY), "exp/lora", record=False)
    assert d.exit_code == PROMOTE and ("not recorded for the" in d.reason) == warned
    side = "baseline" if base is None else "candidate"
    assert (
        d.numerics[side]
        == {"dtype": "unknown", "engine": "unknown", "gpu": "unknown", "mode": "unknown", "torch": "unknown"}
        if warned
        else {"numerics": "unknown"}
    )
    if not warned:
        assert "numerics: not recorded" in to_markdown(d) and "numerics: not recorded" in terminal(d)
    strict_policy = kit.write_policy(tmp_path / "strict.yaml", "require_same_numerics: true\n" + POLICY)
    assert decide(store, strict_policy, "exp/lora", record=False).exit_code == strict


# --- flips_to_change ------------------------------------------------------------------------------------------
def rescore(store: Store, suites: dict[str, Any], trial: Any, suite: str, scores: list[float], keys: list[str]) -> None:
    """Store the trial's scores on `suite` again with the items `keys` flipped (0 <-> 1)."""
    index = {item.id: i for i, item in enumerate(suites[suite].items)}
    changed = list(scores)
    for key in keys:
        changed[index[key]] = 1.0 - changed[index[key]]
    store.save_evaluation(trial.id, kit.suite_result(suites[suite], changed))


def test_a_rejection_one_item_from_passing(store: Store, suites, tmp_path: Path) -> None:
    refusal = kit.ones(M, range(4))  # the baseline refuses 27 of 30, the candidate 26: max_drop 0 fails by one
    _, lora = experiment(store, suites, task=kit.ones(N, range(3)), refusal=refusal, base=None, cand=None)
    policy = kit.write_policy(tmp_path / "g.yaml", POLICY)
    d = decide(store, policy, "exp/lora")
    assert d.exit_code == REJECT and d.flips_to_change == 1
    safety, task = d.rules
    assert (safety.passed, safety.flips_to_change, len(safety.evidence["flip_items"])) == (False, 1, 1)
    assert task.passed and task.flips_to_change is not None and task.flips_to_change > 1
    data = json.loads(d.to_json())
    assert data["flips_to_change"] == 1 and [r["flips_to_change"] for r in data["rules"]] == [1, task.flips_to_change]
    assert "FAIL — 1 item from PASS" in to_markdown(d) and "FAIL — 1 item from PASS" in terminal(d)
    cases = ET.fromstring(to_junit(d).encode()).findall("testsuite/testcase")
    assert [c.find("properties/property").get("value") for c in cases] == ["1", str(task.flips_to_change)]
    assert store.get_decision(d.decision_id).flips_to_change == 1
    rescore(store, suites, lora, "harmful", refusal, safety.evidence["flip_items"])  # the item it names
    assert decide(store, policy, "exp/lora").exit_code == PROMOTE


def test_a_promotion_and_the_items_that_would_reject_it(store: Store, suites, tmp_path: Path) -> None:
    task = kit.ones(N, range(10))  # 30/40 = 0.75, the baseline 28/40: floor 0.6 and max_drop 0.02 both pass
    _, lora = experiment(store, suites, task=task, refusal=kit.ones(M, range(3)), base=None, cand=None)
    policy = kit.write_policy(tmp_path / "g.yaml", POLICY)
    d = decide(store, policy, "exp/lora")
    safety, task_rule = d.rules
    # the safety rule: one refusal lost is a fall; the task rule: 3 items lost puts it 1 below the baseline (-0.025)
    assert (safety.flips_to_change, task_rule.flips_to_change) == (1, 3)
    assert d.exit_code == PROMOTE and d.flips_to_change == 1
    assert "PASS — 1 item from FAIL" in terminal(d)
    rescore(store, suites, lora, "task", task, task_rule.evidence["flip_items"])
    after = decide(store, policy, "exp/lora", record=False)
    assert after.exit_code == REJECT and [r.passed for r in after.rules] == [True, False]


def test_a_rejection_needs_every_failing_rule_fixed(store: Store, suites, tmp_path: Path) -> None:
    task = kit.ones(N, range(15))  # 25/40: the floor 0.6 is met (0.625) but the baseline had 28: -0.075
    refusal = kit.ones(M, range(5))  # 25/30 vs 27/30: two refusals lost
    experiment(store, suites, task=task, refusal=refusal, base=None, cand=None)
    d = decide(store, kit.write_policy(tmp_path / "g.yaml", POLICY), "exp/lora", record=False)
    assert [r.flips_to_change for r in d.rules] == [2, 3] and d.flips_to_change == 5
    assert "FAIL — 5 items from PASS" in to_markdown(d)


def test_an_error_has_no_count(store: Store, suites, tmp_path: Path) -> None:
    experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)), base=None, cand=None)
    policy = kit.write_policy(tmp_path / "g.yaml", POLICY + "  - suite: absent\n    metric: refusal\n")
    d = decide(store, policy, "exp/lora", record=False)
    assert d.exit_code == 2 and d.flips_to_change is None
    assert [r.flips_to_change is None for r in d.rules] == [False, True, False]
    assert json.loads(d.to_json())["flips_to_change"] is None and "ERROR — cannot decide" in terminal(d)


def test_show_lists_what_each_suite_was_scored_under(store: Store, suites) -> None:
    experiment(store, suites, task=kit.ones(N, range(3)), refusal=kit.ones(M, range(3)), base=None, cand=BF16)
    result = kit.tunegate("show", "exp", "--store", store.url, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "dtype=" in line or "unknown" in line]
    assert len(rows) == 4 and sum("dtype=bfloat16" in r for r in rows) == 2 and sum("unknown" in r for r in rows) == 2
