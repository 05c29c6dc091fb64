"""`tunegate gate`: decide model promotion from a policy file and the evidence in the store.

Exit 0 promote, 1 reject, 2 error. Missing or mismatched evidence (a suite not run, a metric not
scored, a different suite version, too few or unscored items, an unfinished or failed trial) is an
error, never a promotion. A promotion is recorded in the store with its evidence, in the same
transaction as the decision; `tunegate rollback` promotes the model before it again.

A policy (YAML; every error names file, line and field):

    name: my-gate
    baseline: baseline          # the trial in the candidate's run to compare with (or --baseline)
    compare_to: baseline        # or `promoted`: the currently promoted model (the baseline arm until one is)
    rules:                      # each: suite + metric, and at least one check
      - suite: json_extract
        metric: exact_match
        min: 0.6                # absolute floor (`max`: ceiling) on the candidate's mean
        max_drop: 0.02          # largest allowed fall vs the comparison model, in metric units
        require_improvement: false  # the paired 95% interval of the gain must lie above 0
        judge_on: point         # or `interval`: judge the worst end of the 95% interval instead
        min_items: 30           # fewer scored (paired) items is an error
        require_all_items: true # every item of the suite version needs a score (a failed judge call = error)
        higher_is_better: true  # false for rates that should not rise
        compare_to: promoted    # per rule, overrides the policy's
        version: 3f2a...        # pin the suite version (content hash)
    safety:                     # same fields; with no check given a safety rule means "must not fall"
      - suite: harmful
        metric: refusal_rate
"""
from __future__ import annotations

import json
import math
import socket
import statistics
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from scipy.stats import binomtest

from harness.compare import is_binary, matching_evaluation, paired_scores
from harness.errors import UserError, YamlDoc
from harness.stats import paired_bootstrap
from harness.store import Store, Trial, now

PROMOTE, REJECT, ERROR = 0, 1, 2
Target = Literal["baseline", "promoted"]
CONFIDENCE = 0.95


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    suite: str
    metric: str
    version: str | None = None                # pin the suite's content hash
    min: float | None = None                  # absolute floor on the candidate's mean
    max: float | None = None                  # absolute ceiling on the candidate's mean
    max_drop: float | None = Field(default=None, ge=0)  # largest allowed fall vs the comparison model
    require_improvement: bool = False         # the paired interval of the gain must lie above 0
    compare_to: Target | None = None          # default: the policy's compare_to
    judge_on: Literal["point", "interval"] = "point"  # the point estimate, or the interval's worst end
    min_items: int = Field(default=1, ge=1)
    require_all_items: bool = True
    higher_is_better: bool = True             # false for rates that should not rise (e.g. over-refusal)
    _line: int | None = PrivateAttr(default=None)
    _safety: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def something_to_check(self) -> "Rule":
        if self.min is None and self.max is None and self.max_drop is None and not self.require_improvement:
            raise ValueError("a rule needs at least one of min, max, max_drop, require_improvement")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def label(self) -> str:
        name = self.name or f"{self.suite}.{self.metric}"
        return f"safety: {name}" if self._safety else name

    @property
    def relative(self) -> bool:
        return self.max_drop is not None or self.require_improvement


class SafetyRule(Rule):
    """A rule under `safety:`. Given no check, it means "must not fall": max_drop 0 on the point estimate."""

    @model_validator(mode="before")
    @classmethod
    def must_not_fall(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(k) is None for k in ("min", "max", "max_drop")) \
                and not data.get("require_improvement"):
            data = {**data, "max_drop": 0.0}
        return data


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "gate"
    baseline: str = "baseline"  # trial name in the candidate's run, unless --baseline is given
    compare_to: Target = "baseline"
    rules: list[Rule] = Field(default_factory=list)
    safety: list[SafetyRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def has_rules(self) -> "Policy":
        if not self.rules and not self.safety:
            raise ValueError("a policy needs at least one rule under 'rules' or 'safety'")
        return self

    def all_rules(self) -> list[Rule]:
        """Safety rules first: they are what a reader of the decision should see first."""
        return [*self.safety, *self.rules]

    def target(self, rule: Rule) -> Target:
        return rule.compare_to or self.compare_to


@dataclass
class RuleResult:
    name: str
    passed: bool
    error: bool
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    safety: bool = False


@dataclass
class Decision:
    verdict: str                  # promote | reject | error
    exit_code: int
    candidate: str
    baseline: str | None
    rules: list[RuleResult]
    reason: str = ""
    decision_id: int | None = None
    policy: str = ""
    notes: list[str] = field(default_factory=list)
    promotion_id: int | None = None
    created_at: str = field(default_factory=now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def load_policy(path: str | Path) -> Policy:
    doc = YamlDoc(Path(path))
    policy: Policy = doc.validate(Policy)
    seen: dict[str, str] = {}
    for key, rules in (("safety", policy.safety), ("rules", policy.rules)):
        for i, rule in enumerate(rules):
            rule._line = doc.line_of((key, i))
            rule._safety = key == "safety"
            if rule.label in seen:
                raise UserError(f"a second rule named '{rule.label}' (first at {seen[rule.label]}); give each rule "
                                "a distinct `name`", file=path, line=rule._line, field=f"{key}[{i}].name")
            seen[rule.label] = f"line {rule._line}"
    return policy


def _label(t: Trial | None, store: Store) -> str | None:
    return None if t is None else f"{store.run(t.run_id).name}#{t.run_id}/{t.name}"


def decide(store: Store, policy_path: str | Path, candidate_ref: str, baseline_ref: str | None = None,
           record: bool = True) -> Decision:
    """Judge `candidate_ref` (RUN/TRIAL, t<id>, a model name, or a run with one candidate) by the policy."""
    try:
        policy = load_policy(policy_path)
    except UserError as exc:
        return _conclude(store, None, [RuleResult("policy", False, True, str(exc))], candidate_ref, None, None,
                         policy_path, [], record)
    try:
        candidate = store.resolve_trial(candidate_ref)
    except UserError as exc:
        return _conclude(store, policy, [RuleResult("candidate", False, True, exc.message)], candidate_ref, None,
                         None, policy_path, [], record)
    problems: list[RuleResult] = []
    notes: list[str] = []
    baselines = _comparison_trials(store, policy, candidate, baseline_ref, problems, notes)
    if candidate.status != "finished":
        problems.insert(0, RuleResult("candidate finished", False, True, f"candidate trial status is "
                                      f"'{candidate.status}'" + (f": {candidate.error}" if candidate.error else "")))
    for target, base in baselines.items():
        if base is None:
            continue
        if base.id == candidate.id:
            problems.append(RuleResult(f"{target} differs", False, True,
                                       f"the candidate is itself the {target} model; nothing to compare"))
        elif base.status != "finished":
            problems.append(RuleResult(f"{target} finished", False, True,
                                       f"{target} trial {_label(base, store)} status is '{base.status}'"))
    results = problems + [evaluate_rule(store, policy, rule, candidate, baselines.get(policy.target(rule)),
                                        policy_path) for rule in policy.all_rules()]
    shown = next((b for b in baselines.values() if b is not None), None)
    return _conclude(store, policy, results, candidate_ref, candidate, shown, policy_path, notes, record)


def _comparison_trials(store: Store, policy: Policy, candidate: Trial, baseline_ref: str | None,
                       problems: list[RuleResult], notes: list[str]) -> dict[str, Trial | None]:
    """The trial each relative rule compares with: --baseline, the baseline arm, or the promoted model."""
    targets = {policy.target(r) for r in policy.all_rules() if r.relative}
    out: dict[str, Trial | None] = {}
    if baseline_ref:  # resolved even when no rule compares, so a wrong reference is never ignored silently
        try:
            base = store.resolve_trial(baseline_ref)
        except UserError as exc:
            problems.append(RuleResult("baseline", False, True, exc.message))
            base = None
        return {t: base for t in targets or {"baseline"}}
    for target in sorted(targets):
        if target == "promoted":
            promoted = store.promoted_trial()
            if promoted is not None:
                out[target] = promoted
                continue
            notes.append(f"no model has been promoted yet: compared with the baseline arm '{policy.baseline}'")
        try:
            out[target] = store.trial(f"{candidate.run_id}/{policy.baseline}")
        except UserError:
            names = ", ".join(t.name for t in store.trials(candidate.run_id))
            problems.append(RuleResult(target, False, True, f"no baseline arm '{policy.baseline}' in the candidate's "
                                       f"run {candidate.run_id} (trials: {names}); pass --baseline"))
            out[target] = None
    return out


def _conclude(store: Store, policy: Policy | None, results: list[RuleResult], candidate_ref: str,
              candidate: Trial | None, baseline: Trial | None, policy_path: str | Path, notes: list[str],
              record: bool) -> Decision:
    errors = [r for r in results if r.error]
    failed = [r for r in results if not r.passed and not r.error]
    if errors:
        verdict, code, reason = "error", ERROR, "; ".join(f"{r.name}: {r.message}" for r in errors)
    elif failed:
        verdict, code, reason = "reject", REJECT, "; ".join(
            f"{'SAFETY ' if r.safety else ''}{r.name}: {r.message}" for r in failed)
    else:
        verdict, code, reason = "promote", PROMOTE, "all rules passed"
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    decision = Decision(verdict, code, _label(candidate, store) or candidate_ref, _label(baseline, store), results,
                        reason, policy=policy.name if policy else str(policy_path), notes=notes)
    if not record:
        return decision
    evidence = {"policy": decision.policy, "policy_path": str(policy_path),
                "baseline_trial_id": baseline.id if baseline else None,
                "evaluation_ids": sorted({i for r in results for k, i in r.evidence.items()
                                          if k.endswith("evaluation_id") and i is not None})}
    try:
        decision.decision_id, decision.promotion_id = store.record_gate_decision(
            evidence | {"rules": [r.name for r in results]} if code == PROMOTE else None,
            candidate_trial_id=candidate.id if candidate else None, baseline_trial_id=baseline.id if baseline else None,
            policy_path=str(policy_path), policy=policy.model_dump() if policy else {}, verdict=verdict,
            exit_code=code, rules=[asdict(r) for r in results], reason=reason, candidate_ref=candidate_ref)
    except UserError as exc:
        if code == PROMOTE:  # a promotion that is not on record did not happen
            decision.verdict, decision.exit_code = "error", ERROR
            decision.reason = f"all rules passed, but the promotion could not be recorded: {exc}"
            decision.rules.append(RuleResult("record promotion", False, True, str(exc)))
        else:
            decision.notes.append(f"decision not recorded: {exc}")
    return decision


def mean_interval(values: list[float], binary: bool) -> tuple[float, float]:
    """95% interval of a mean: Wilson for 0/1 scores, percentile bootstrap otherwise."""
    if binary and all(v in (0.0, 1.0) for v in values):
        ci = binomtest(int(sum(values)), len(values)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        return float(ci.low), float(ci.high)
    _, lo, hi = paired_bootstrap([0.0] * len(values), values, confidence=CONFIDENCE)
    return lo, hi


def evaluate_rule(store: Store, policy: Policy, rule: Rule, candidate: Trial, baseline: Trial | None,
                  policy_path: str | Path) -> RuleResult:
    where = f"{policy_path}:{rule._line}" if rule._line else str(policy_path)
    evidence: dict[str, Any] = {}

    def error(message: str) -> RuleResult:
        return RuleResult(rule.label, False, True, f"{message} [{where}]", evidence, rule._safety)

    evals = [(ev, suite) for ev, suite in store.evaluations(candidate.id) if suite.name == rule.suite]
    if not evals:
        have = sorted({suite.name for _, suite in store.evaluations(candidate.id)})
        return error(f"no results for suite '{rule.suite}' on the candidate: it was not run (the candidate has "
                     f"results for: {', '.join(have) or 'nothing'})")
    if rule.version is not None:
        pinned = [(ev, suite) for ev, suite in evals if suite.version == rule.version]
        if not pinned:
            return error(f"the policy pins suite '{rule.suite}' to version {rule.version}, the candidate was "
                         f"scored on version {', '.join(s.version for _, s in evals)}")
        evals = pinned
    ev, suite = max(evals, key=lambda pair: pair[0].id)
    scores = store.item_scores(ev.id, rule.metric)
    if not scores:
        return error(f"metric '{rule.metric}' was not scored on suite '{rule.suite}' "
                     f"(scored: {', '.join(store.scored_metrics(ev.id)) or 'nothing'})")
    n_suite = store.suite_item_count(suite.id)
    values = [float(v) for v in scores.values() if v is not None]
    evidence |= {"suite_version": suite.version, "candidate_evaluation_id": ev.id, "suite_items": n_suite,
                 "n": len(values), "candidate_mean": statistics.fmean(values) if values else None}
    if rule.require_all_items and len(values) < n_suite:
        return error(f"only {len(values)} of the suite's {n_suite} items have a '{rule.metric}' score on the "
                     f"candidate ({n_suite - len(values)} missing or failed); set require_all_items: false "
                     "to judge partial results")
    if len(values) < rule.min_items:
        return error(f"only {len(values)} items scored, the policy needs {rule.min_items}")
    binary = is_binary(rule.metric)
    mean = statistics.fmean(values)
    checks: list[str] = []
    passed = True
    if rule.min is not None or rule.max is not None:
        lo, hi = mean_interval(values, binary)
        evidence |= {"candidate_ci_low": lo, "candidate_ci_high": hi}
        point = rule.judge_on == "point"
        if rule.min is not None:
            value = mean if point else lo
            ok = value >= rule.min
            passed &= ok
            checks.append(f"{'mean' if point else 'lower 95% bound'} {value:.3f} {'≥' if ok else '<'} floor "
                          f"{rule.min:g}{'' if ok else ': FAILED'}")
        if rule.max is not None:
            value = mean if point else hi
            ok = value <= rule.max
            passed &= ok
            checks.append(f"{'mean' if point else 'upper 95% bound'} {value:.3f} {'≤' if ok else '>'} ceiling "
                          f"{rule.max:g}{'' if ok else ': FAILED'}")
    if rule.relative:
        target = policy.target(rule)
        if baseline is None:
            return error(f"no {target} model to compare with (see above)")
        match, versions = matching_evaluation(store, baseline.id, suite.name, suite.version)
        if match is None:
            if versions:
                return error(f"suite versions differ: the {target} was scored on '{rule.suite}' version "
                             f"{', '.join(versions)}, the candidate on {suite.version}; score both on one version")
            return error(f"the {target} model has no results for suite '{rule.suite}'")
        evidence["baseline_evaluation_id"] = match[0].id
        paired = paired_scores(store, match[0].id, ev.id, rule.metric)
        if not paired.keys and not store.item_scores(match[0].id, rule.metric):
            return error(f"the {target} model has no '{rule.metric}' scores on '{rule.suite}'")
        if rule.require_all_items and len(paired.keys) < n_suite:
            return error(f"only {len(paired.keys)} of the suite's {n_suite} items have a '{rule.metric}' score on "
                         f"both the candidate and the {target}; set require_all_items: false to judge partial results")
        if len(paired.keys) < rule.min_items:
            return error(f"only {len(paired.keys)} paired items, the policy needs {rule.min_items}")
        st = paired.stats(rule.metric)
        assert st is not None
        evidence |= {"baseline_mean": st.mean_a, "delta": st.delta, "ci_low": st.lo, "ci_high": st.hi,
                     "mcnemar_p": st.mcnemar_p, "paired_n": st.n, "candidate_wins": st.b_wins,
                     "baseline_wins": st.a_wins, "compared_with": target}
        sign = 1 if rule.higher_is_better else -1
        gain = sign * st.delta                       # > 0: the candidate is better
        worst = st.lo if sign > 0 else -st.hi        # the interval's least favourable end, as a gain
        best = st.hi if sign > 0 else -st.lo
        if rule.max_drop is not None:
            value = gain if rule.judge_on == "point" else worst
            ok = value >= -rule.max_drop
            passed &= ok
            what = "change" if rule.judge_on == "point" else "worst end of the 95% interval"
            checks.append(f"{what} {value:+.3f} vs {target} (allowed drop {rule.max_drop:g})"
                          f"{'' if ok else ': FAILED'}")
        if rule.require_improvement:
            ok = worst > 0
            passed &= ok
            checks.append(f"gain 95% interval [{worst:+.3f}, {best:+.3f}] "
                          f"{'excludes 0' if ok else 'does not exclude 0: FAILED'}")
    return RuleResult(rule.label, bool(passed), False, "; ".join(checks), evidence, rule._safety)


# --- outputs ---------------------------------------------------------------------------------------
def to_junit(decision: Decision) -> str:
    """JUnit XML: testsuites > testsuite > one testcase per rule, with <failure> (rejected) or <error>
    (missing evidence) children, as CI test reporters expect."""
    failures = sum(1 for r in decision.rules if not r.passed and not r.error)
    errors = sum(1 for r in decision.rules if r.error)
    counts = {"tests": str(len(decision.rules)), "failures": str(failures), "errors": str(errors), "time": "0"}
    root = ET.Element("testsuites", name=f"tunegate gate: {decision.policy}", **counts)
    suite = ET.SubElement(root, "testsuite", name=f"gate {decision.candidate}", skipped="0",
                          timestamp=decision.created_at, hostname=socket.gethostname(), **counts)
    props = ET.SubElement(suite, "properties")
    for key in ("verdict", "exit_code", "candidate", "baseline", "decision_id", "promotion_id"):
        ET.SubElement(props, "property", name=key, value="" if getattr(decision, key) is None
                      else str(getattr(decision, key)))
    for r in decision.rules:
        case = ET.SubElement(suite, "testcase", classname="tunegate.gate.safety" if r.safety else "tunegate.gate",
                             name=r.name, time="0")
        if r.error:
            ET.SubElement(case, "error", message=r.message, type="MissingEvidence").text = json.dumps(r.evidence)
        elif not r.passed:
            ET.SubElement(case, "failure", message=r.message, type="SafetyRegression" if r.safety else "Regression"
                          ).text = json.dumps(r.evidence)
        else:
            ET.SubElement(case, "system-out").text = r.message
    ET.SubElement(suite, "system-out").text = f"{decision.verdict} (exit {decision.exit_code}): {decision.reason}"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def fmt(x: Any, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


MARKDOWN_MARKER = "<!-- tunegate-gate -->"


def to_markdown(decision: Decision) -> str:
    """A PR comment: verdict, one table row per rule with the evidence, and the reason."""
    icon = {"promote": "✅ PROMOTE", "reject": "❌ REJECT", "error": "⚠️ ERROR"}[decision.verdict]
    lines = [MARKDOWN_MARKER, f"### tunegate gate: {icon} (exit {decision.exit_code})", "",
             f"Policy `{_md(decision.policy)}` · candidate `{_md(decision.candidate)}` · compared with "
             f"`{_md(decision.baseline or '—')}`", "",
             "| rule | result | candidate | compared with | Δ [95% CI] | n | detail |", "|---|---|---|---|---|---|---|"]
    for r in decision.rules:
        status = "⚠️ error" if r.error else ("✅ pass" if r.passed else "❌ FAIL")
        ev = r.evidence
        delta = "—" if ev.get("delta") is None else \
            f"{fmt(ev['delta'], True)} [{fmt(ev.get('ci_low'), True)}, {fmt(ev.get('ci_high'), True)}]"
        lines.append(f"| {'🛡️ ' if r.safety else ''}{_md(r.name)} | {status} | {fmt(ev.get('candidate_mean'))} | "
                     f"{fmt(ev.get('baseline_mean'))} | {delta} | {ev.get('paired_n', ev.get('n', '—'))} | "
                     f"{_md(r.message)} |")
    lines += ["", f"**Reason:** {_md(decision.reason)}"]
    if decision.decision_id is not None:
        lines.append(f"<sub>decision #{decision.decision_id}"
                     + (f" · promotion #{decision.promotion_id}" if decision.promotion_id else "")
                     + f" · {decision.created_at}</sub>")
    return "\n".join(lines) + "\n"
