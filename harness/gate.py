"""`tunegate gate`: decide model promotion from a policy file and the evidence in the store.

Exit 0 promote, 1 reject, 2 error. Missing or mismatched evidence (no result for a suite, a
different suite version, too few items, a failed trial) is an error, never a promotion.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.compare import compare_trials
from harness.errors import UserError, YamlDoc
from harness.store import Store, Trial

PROMOTE, REJECT, ERROR = 0, 1, 2


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str
    metric: str
    min: float | None = None                 # absolute floor on the candidate's mean
    max_drop: float | None = Field(default=None, ge=0)  # largest allowed fall vs the baseline
    require_improvement: bool = False        # the delta's interval must lie above 0
    judge_on: Literal["point", "interval"] = "point"  # compare the point estimate, or the interval's worst end
    min_items: int = Field(default=1, ge=1)
    higher_is_better: bool = True            # false for rates that should not rise (e.g. over-refusal)

    @model_validator(mode="after")
    def something_to_check(self) -> "Rule":
        if self.min is None and self.max_drop is None and not self.require_improvement:
            raise ValueError("a rule needs at least one of min, max_drop, require_improvement")
        return self


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "gate"
    baseline: str = "baseline"  # trial name in the candidate's run, unless --baseline is given
    compare_to: Literal["baseline", "promoted"] = "baseline"
    rules: list[Rule] = Field(min_length=1)


@dataclass
class RuleResult:
    name: str
    passed: bool
    error: bool
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    verdict: str                  # promote | reject | error
    exit_code: int
    candidate: str
    baseline: str | None
    rules: list[RuleResult]
    reason: str = ""
    decision_id: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def load_policy(path: str | Path) -> Policy:
    return YamlDoc(Path(path)).validate(Policy)


def _label(t: Trial, store: Store) -> str:
    return f"{store.run(t.run_id).name}#{t.run_id}/{t.name}"


def decide(store: Store, policy_path: str | Path, candidate_ref: str, baseline_ref: str | None = None,
           record: bool = True) -> Decision:
    policy = load_policy(policy_path)
    candidate = store.trial(candidate_ref)
    if baseline_ref:
        baseline: Trial | None = store.trial(baseline_ref)
    elif policy.compare_to == "promoted":
        baseline = store.promoted_trial()
        if baseline is None:  # nothing promoted yet: fall back to the policy's baseline arm
            baseline = store.trial(f"{candidate.run_id}/{policy.baseline}")
    else:
        baseline = store.trial(f"{candidate.run_id}/{policy.baseline}")
    results = evaluate_rules(store, policy, candidate, baseline)
    errors = [r for r in results if r.error]
    failed = [r for r in results if not r.passed and not r.error]
    if candidate.status != "finished":
        errors.insert(0, RuleResult("candidate finished", False, True,
                                    f"candidate trial status is '{candidate.status}'" +
                                    (f": {candidate.error}" if candidate.error else "")))
        results = errors[:1] + results
    if baseline is not None and baseline.status != "finished":
        errors.insert(0, RuleResult("baseline finished", False, True, f"baseline trial status is '{baseline.status}'"))
        results = errors[:1] + results
    if errors:
        verdict, code, reason = "error", ERROR, "; ".join(r.message for r in errors)
    elif failed:
        verdict, code, reason = "reject", REJECT, "; ".join(f"{r.name}: {r.message}" for r in failed)
    else:
        verdict, code, reason = "promote", PROMOTE, "all rules passed"
    decision = Decision(verdict, code, _label(candidate, store), _label(baseline, store) if baseline else None,
                        results, reason)
    if record:
        decision.decision_id = store.record_decision(
            candidate_trial_id=candidate.id, baseline_trial_id=baseline.id if baseline else None,
            policy_path=str(policy_path), policy=policy.model_dump(), verdict=verdict, exit_code=code,
            rules=[asdict(r) for r in results], reason=reason)
        if code == PROMOTE:
            store.promote(candidate.id, decision.decision_id)
    return decision


def evaluate_rules(store: Store, policy: Policy, candidate: Trial, baseline: Trial | None) -> list[RuleResult]:
    cand_evals = {suite.name: (ev, suite) for ev, suite in store.evaluations(candidate.id)}
    comparisons = {(c.suite, c.metric): c for c in compare_trials(store, baseline, candidate)} if baseline else {}
    out: list[RuleResult] = []
    for rule in policy.rules:
        name = f"{rule.suite}.{rule.metric}"
        if rule.suite not in cand_evals:
            out.append(RuleResult(name, False, True, f"no results for suite '{rule.suite}' on the candidate"))
            continue
        ev, suite = cand_evals[rule.suite]
        metric = store.metrics(ev.id).get(rule.metric)
        if metric is None:
            out.append(RuleResult(name, False, True, f"metric '{rule.metric}' was not scored on suite '{rule.suite}'"))
            continue
        evidence: dict[str, Any] = {"candidate_mean": metric.value, "candidate_stderr": metric.stderr, "n": metric.n,
                                    "suite_version": suite.version, "evaluation_id": ev.id}
        if metric.n < rule.min_items:
            out.append(RuleResult(name, False, True, f"only {metric.n} items scored, policy needs {rule.min_items}",
                                  evidence))
            continue
        sign = 1 if rule.higher_is_better else -1
        checks: list[str] = []
        passed = True
        if rule.min is not None:
            value = metric.value if rule.judge_on == "point" else metric.value - sign * 1.96 * metric.stderr
            ok = value >= rule.min if rule.higher_is_better else value <= rule.min
            passed &= ok
            checks.append(f"{'mean' if rule.judge_on == 'point' else 'bound'} {value:.3f} "
                          f"{'>=' if rule.higher_is_better else '<='} {rule.min} {'ok' if ok else 'FAILED'}")
        if rule.max_drop is not None or rule.require_improvement:
            if baseline is None:
                out.append(RuleResult(name, False, True, "rule compares to a baseline but none was given", evidence))
                continue
            comp = comparisons.get((rule.suite, rule.metric))
            if comp is None:
                out.append(RuleResult(name, False, True, f"baseline has no '{rule.metric}' results on '{rule.suite}'",
                                      evidence))
                continue
            if comp.stats is None or comp.problem == "suite versions differ":
                out.append(RuleResult(name, False, True, f"cannot compare: {comp.problem} (baseline "
                                      f"{comp.baseline_version}, candidate {comp.candidate_version})", evidence))
                continue
            st = comp.stats
            if st.n < rule.min_items:
                out.append(RuleResult(name, False, True, f"only {st.n} paired items, policy needs {rule.min_items}",
                                      evidence))
                continue
            evidence |= {"baseline_mean": st.mean_a, "delta": st.delta, "ci_low": st.lo, "ci_high": st.hi,
                         "mcnemar_p": st.mcnemar_p, "paired_n": st.n}
            gain = sign * st.delta
            worst = sign * (st.lo if sign > 0 else st.hi)
            if rule.max_drop is not None:
                value = gain if rule.judge_on == "point" else worst
                ok = value >= -rule.max_drop
                passed &= ok
                checks.append(f"change {value:+.3f} (allowed drop {rule.max_drop}) {'ok' if ok else 'FAILED'}")
            if rule.require_improvement:
                ok = worst > 0
                passed &= ok
                checks.append(f"improvement interval [{st.lo:+.3f}, {st.hi:+.3f}] "
                              f"{'excludes 0' if ok else 'does not exclude 0: FAILED'}")
        out.append(RuleResult(name, bool(passed), False, "; ".join(checks), evidence))
    return out


def to_junit(decision: Decision) -> str:
    suite = ET.Element("testsuite", name="tunegate-gate", tests=str(len(decision.rules)),
                       failures=str(sum(1 for r in decision.rules if not r.passed and not r.error)),
                       errors=str(sum(1 for r in decision.rules if r.error)))
    for r in decision.rules:
        case = ET.SubElement(suite, "testcase", classname="tunegate.gate", name=r.name)
        if r.error:
            ET.SubElement(case, "error", message=r.message).text = json.dumps(r.evidence)
        elif not r.passed:
            ET.SubElement(case, "failure", message=r.message).text = json.dumps(r.evidence)
        else:
            ET.SubElement(case, "system-out").text = r.message
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def to_markdown(decision: Decision) -> str:
    icon = {"promote": "✅ PROMOTE", "reject": "❌ REJECT", "error": "⚠️ ERROR"}[decision.verdict]
    lines = [f"### tunegate gate: {icon}", "", f"Candidate `{decision.candidate}` vs baseline `{decision.baseline}`",
             "", "| rule | result | detail |", "|---|---|---|"]
    for r in decision.rules:
        status = "error" if r.error else ("pass" if r.passed else "FAIL")
        lines.append(f"| {_md_escape(r.name)} | {status} | {_md_escape(r.message)} |")
    lines += ["", f"Reason: {_md_escape(decision.reason)}"]
    return "\n".join(lines) + "\n"


def fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
