"""Deciding promotion: every rule of a policy checked against the store's evidence, with paired statistics."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.analysis._compare import matching_evaluation, metric_kind, paired_scores
from harness.base._errors import UserError
from harness.gate._closeness import RuleScores, decision_flips, judge, mean_interval, rule_flip
from harness.gate._numerics import describe, differing, merged, numerics_of
from harness.gate._policy import Policy, Rule, RuleResult, load_policy
from harness.store._store import Store
from harness.store._tables import Trial, now

PROMOTE, REJECT, ERROR = 0, 1, 2
FLIP_KEYS_SHOWN = 20  # item keys named in a rule's evidence as one set whose change flips it


@dataclass
class Decision:
    verdict: str  # promote | reject | error
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
    flips_to_change: int | None = None  # fewest item changes that flip the verdict (None: error, not item-based)
    numerics: dict[str, dict[str, str]] = field(default_factory=dict)  # candidate / baseline -> key -> value
    numerics_differ: list[str] = field(default_factory=list)  # keys scored differently on the two sides

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _label(t: Trial | None, store: Store) -> str | None:
    return None if t is None else f"{store.get_run(t.run_id).name}#{t.run_id}/{t.name}"


def decide(
    store: Store, policy_path: str | Path, candidate_ref: str, baseline_ref: str | None = None, record: bool = True
) -> Decision:
    """Judge `candidate_ref` (RUN/TRIAL, t<id>, a model name, or a run with one candidate) by the policy."""
    try:
        policy = load_policy(policy_path)
    except UserError as exc:
        return _conclude(
            store,
            None,
            [RuleResult("policy", False, True, str(exc))],
            candidate_ref,
            None,
            None,
            policy_path,
            [],
            record,
        )
    try:
        candidate = store.resolve_trial(candidate_ref)
    except UserError as exc:
        return _conclude(
            store,
            policy,
            [RuleResult("candidate", False, True, exc.message)],
            candidate_ref,
            None,
            None,
            policy_path,
            [],
            record,
        )
    problems: list[RuleResult] = []
    notes: list[str] = []
    baselines = _comparison_trials(store, policy, candidate, baseline_ref, problems, notes)
    if candidate.status != "finished":
        problems.insert(
            0,
            RuleResult(
                "candidate finished",
                False,
                True,
                f"candidate trial status is '{candidate.status}'" + (f": {candidate.error}" if candidate.error else ""),
            ),
        )
    for target, base in baselines.items():
        if base is None:
            continue
        if base.id == candidate.id:
            problems.append(
                RuleResult(
                    f"{target} differs", False, True, f"the candidate is itself the {target} model; nothing to compare"
                )
            )
        elif base.status != "finished":
            problems.append(
                RuleResult(
                    f"{target} finished", False, True, f"{target} trial {_label(base, store)} status is '{base.status}'"
                )
            )
    judged = [
        _evaluate(store, policy, rule, candidate, baselines.get(policy.target(rule)), policy_path)
        for rule in policy.all_rules()
    ]
    results = problems + [r for r, _ in judged]
    numerics, differ = _numerics(policy, judged, results, notes)
    shown = next((b for b in baselines.values() if b is not None), None)
    return _conclude(
        store,
        policy,
        results,
        candidate_ref,
        candidate,
        shown,
        policy_path,
        notes,
        record,
        judged=[(r.passed, s) for r, s in judged] if not problems else None,
        numerics=numerics,
        numerics_differ=differ,
    )


def _numerics(
    policy: Policy, judged: list[tuple[RuleResult, RuleScores | None]], results: list[RuleResult], notes: list[str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Both sides' numerics (merged over the evaluations the rules read) and the keys that differ between the
    two evaluations a relative rule pairs. A difference, or a record missing on one side, adds a warning note;
    with `require_same_numerics` it (or a record missing on both sides) is an error rule instead."""
    sides: dict[str, list[dict[str, str]]] = {"candidate": [], "baseline": []}
    seen: set[tuple[int, int | None]] = set()
    keys: set[str] = set()
    problems: list[str] = []  # one per pair of evaluations whose numerics differ or are unknown
    for r, s in judged:
        if s is None:
            continue
        pair = (r.evidence["candidate_evaluation_id"], r.evidence.get("baseline_evaluation_id"))
        if pair in seen:
            continue
        seen.add(pair)
        cand = r.evidence["candidate_numerics"]
        sides["candidate"].append(cand)
        if pair[1] is None:
            continue
        base = r.evidence["baseline_numerics"]
        sides["baseline"].append(base)
        if not cand and not base:
            if policy.require_same_numerics:
                problems.append(f"{r.name}: not recorded on either side (scored before tunegate kept them)")
        elif not cand or not base:
            keys.add("numerics")
            problems.append(
                f"{r.name}: not recorded for the {'candidate' if not cand else 'baseline'} "
                "(scored before tunegate kept them)"
            )
        elif differ := differing(cand, base):
            keys.update(differ)
            problems.append(f"{r.name}: {describe(differ, cand, base)}")
    every_key = {k for records in sides.values() for r in records for k in r}
    numerics = {side: merged(records, every_key) for side, records in sides.items() if records}
    if problems and policy.require_same_numerics:
        results.append(
            RuleResult(
                "same numerics",
                False,
                True,
                "require_same_numerics: baseline and candidate "
                f"must be scored under the same numerics: {'; '.join(problems)}",
            )
        )
    elif problems:
        notes.append(
            f"warning: baseline and candidate were scored under different numerics ({'; '.join(problems)}); "
            "part of the difference may come from numerics, not the model"
        )
    return numerics, sorted(keys)


def _comparison_trials(
    store: Store,
    policy: Policy,
    candidate: Trial,
    baseline_ref: str | None,
    problems: list[RuleResult],
    notes: list[str],
) -> dict[str, Trial | None]:
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
            out[target] = store.get_trial(f"{candidate.run_id}/{policy.baseline}")
        except UserError:
            names = ", ".join(t.name for t in store.trials(candidate.run_id))
            problems.append(
                RuleResult(
                    target,
                    False,
                    True,
                    f"no baseline arm '{policy.baseline}' in the candidate's "
                    f"run {candidate.run_id} (trials: {names}); pass --baseline",
                )
            )
            out[target] = None
    return out


def _conclude(
    store: Store,
    policy: Policy | None,
    results: list[RuleResult],
    candidate_ref: str,
    candidate: Trial | None,
    baseline: Trial | None,
    policy_path: str | Path,
    notes: list[str],
    record: bool,
    judged: list[tuple[bool, RuleScores | None]] | None = None,
    numerics: dict[str, dict[str, str]] | None = None,
    numerics_differ: list[str] | None = None,
) -> Decision:
    errors = [r for r in results if r.error]
    failed = [r for r in results if not r.passed and not r.error]
    if errors:
        verdict, code, reason = "error", ERROR, "; ".join(f"{r.name}: {r.message}" for r in errors)
    elif failed:
        verdict, code, reason = (
            "reject",
            REJECT,
            "; ".join(f"{'SAFETY ' if r.safety else ''}{r.name}: {r.message}" for r in failed),
        )
    else:
        verdict, code, reason = "promote", PROMOTE, "all rules passed"
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    flips = (
        None
        if judged is None or code == ERROR
        else decision_flips(judged, [r.flips_to_change for r in results], verdict)
    )
    decision = Decision(
        verdict,
        code,
        _label(candidate, store) or candidate_ref,
        _label(baseline, store),
        results,
        reason,
        policy=policy.name if policy else str(policy_path),
        notes=notes,
        flips_to_change=flips,
        numerics=numerics or {},
        numerics_differ=numerics_differ or [],
    )
    if not record:
        return decision
    evidence = {
        "policy": decision.policy,
        "policy_path": str(policy_path),
        "baseline_trial_id": baseline.id if baseline else None,
        "evaluation_ids": sorted(
            {i for r in results for k, i in r.evidence.items() if k.endswith("evaluation_id") and i is not None}
        ),
    }
    try:
        decision.decision_id, decision.promotion_id = store.record_gate_decision(
            evidence | {"rules": [r.name for r in results]} if code == PROMOTE else None,
            candidate_trial_id=candidate.id if candidate else None,
            baseline_trial_id=baseline.id if baseline else None,
            policy_path=str(policy_path),
            policy=policy.model_dump() if policy else {},
            verdict=verdict,
            exit_code=code,
            rules=[asdict(r) for r in results],
            reason=reason,
            candidate_ref=candidate_ref,
            flips_to_change=flips,
            numerics={**decision.numerics, "differ": decision.numerics_differ} if decision.numerics else None,
        )
    except UserError as exc:
        if code == PROMOTE:  # a promotion that is not on record did not happen
            decision.verdict, decision.exit_code = "error", ERROR
            decision.reason = f"all rules passed, but the promotion could not be recorded: {exc}"
            decision.rules.append(RuleResult("record promotion", False, True, str(exc)))
        else:
            decision.notes.append(f"decision not recorded: {exc}")
    return decision


def evaluate_rule(
    store: Store, policy: Policy, rule: Rule, candidate: Trial, baseline: Trial | None, policy_path: str | Path
) -> RuleResult:
    """One rule's result: passed or failed with its checks and evidence, or an error naming what is missing."""
    return _evaluate(store, policy, rule, candidate, baseline, policy_path)[0]


def _evaluate(
    store: Store, policy: Policy, rule: Rule, candidate: Trial, baseline: Trial | None, policy_path: str | Path
) -> tuple[RuleResult, RuleScores | None]:
    """The rule's result, and the scores it was judged on (None for an error)."""
    where = f"{policy_path}:{rule._line}" if rule._line else str(policy_path)
    evidence: dict[str, Any] = {}

    def error(message: str) -> tuple[RuleResult, None]:
        return RuleResult(rule.label, False, True, f"{message} [{where}]", evidence, rule._safety), None

    evals = [(ev, suite) for ev, suite in store.evaluations(candidate.id) if suite.name == rule.suite]
    if not evals:
        have = sorted({suite.name for _, suite in store.evaluations(candidate.id)})
        return error(
            f"no results for suite '{rule.suite}' on the candidate: it was not run (the candidate has "
            f"results for: {', '.join(have) or 'nothing'})"
        )
    if rule.version is not None:
        pinned = [(ev, suite) for ev, suite in evals if suite.version == rule.version]
        if not pinned:
            return error(
                f"the policy pins suite '{rule.suite}' to version {rule.version}, the candidate was "
                f"scored on version {', '.join(s.version for _, s in evals)}"
            )
        evals = pinned
    ev, suite = max(evals, key=lambda pair: pair[0].id)
    corpus = store.metrics(ev.id).get(rule.metric)
    if corpus is not None and corpus.corpus:
        return _corpus_rule(rule, corpus.value, ev.id, suite.version, error)
    scores = store.item_scores(ev.id, rule.metric)
    if not scores:
        return error(
            f"metric '{rule.metric}' was not scored on suite '{rule.suite}' "
            f"(scored: {', '.join(store.scored_metrics(ev.id)) or 'nothing'})"
        )
    n_suite = store.suite_item_count(suite.id)
    values = [float(v) for v in scores.values() if v is not None]
    evidence |= {
        "suite_version": suite.version,
        "candidate_evaluation_id": ev.id,
        "suite_items": n_suite,
        "n": len(values),
        "candidate_mean": statistics.fmean(values) if values else None,
        "candidate_numerics": numerics_of(ev),
    }
    if rule.require_all_items and len(values) < n_suite:
        return error(
            f"only {len(values)} of the suite's {n_suite} items have a '{rule.metric}' score on the "
            f"candidate ({n_suite - len(values)} missing or failed); set require_all_items: false "
            "to judge partial results"
        )
    if len(values) < rule.min_items:
        return error(f"only {len(values)} items scored, the policy needs {rule.min_items}")
    kind = metric_kind(store, ev.id, rule.metric)
    by_item = {k: float(v) for k, v in scores.items() if v is not None}
    if rule.min is not None or rule.max is not None:
        lo, hi = mean_interval(values, kind.binary)
        evidence |= {"candidate_ci_low": lo, "candidate_ci_high": hi}
    scored = RuleScores(rule, policy.target(rule), by_item, binary=kind.binary, group=(ev.id, rule.metric))
    if rule.relative:
        target = policy.target(rule)
        if baseline is None:
            return error(f"no {target} model to compare with (see above)")
        match, versions = matching_evaluation(store, baseline.id, suite.name, suite.version)
        if match is None:
            if versions:
                return error(
                    f"suite versions differ: the {target} was scored on '{rule.suite}' version "
                    f"{', '.join(versions)}, the candidate on {suite.version}; score both on one version"
                )
            return error(f"the {target} model has no results for suite '{rule.suite}'")
        evidence |= {"baseline_evaluation_id": match[0].id, "baseline_numerics": numerics_of(match[0])}
        paired = paired_scores(store, match[0].id, ev.id, rule.metric)
        if not paired.keys and not store.item_scores(match[0].id, rule.metric):
            return error(f"the {target} model has no '{rule.metric}' scores on '{rule.suite}'")
        if rule.require_all_items and len(paired.keys) < n_suite:
            return error(
                f"only {len(paired.keys)} of the suite's {n_suite} items have a '{rule.metric}' score on "
                f"both the candidate and the {target}; set require_all_items: false to judge partial results"
            )
        if len(paired.keys) < rule.min_items:
            return error(f"only {len(paired.keys)} paired items, the policy needs {rule.min_items}")
        st = paired.stats()
        assert st is not None
        evidence |= {
            "baseline_mean": st.mean_a,
            "delta": st.delta,
            "ci_low": st.lo,
            "ci_high": st.hi,
            "mcnemar_p": st.mcnemar_p,
            "paired_n": st.n,
            "candidate_wins": st.b_wins,
            "baseline_wins": st.a_wins,
            "compared_with": target,
        }
        higher = kind.higher_is_better if rule.higher_is_better is None else rule.higher_is_better
        evidence["higher_is_better"] = higher
        scored = replace(scored, paired=tuple(paired.keys), baseline=tuple(paired.baseline), higher=higher)
    checks = judge(scored)
    passed = all(c.ok for c in checks)
    flip = rule_flip(scored)
    evidence["flip_items"] = list(flip.keys[:FLIP_KEYS_SHOWN]) if flip else []
    return RuleResult(
        rule.label,
        passed,
        False,
        "; ".join(c.text for c in checks),
        evidence,
        rule._safety,
        flips_to_change=flip.items if flip else None,
    ), scored


def _corpus_rule(
    rule: Rule, value: float, evaluation_id: int, version: str, error: Callable[[str], tuple[RuleResult, None]]
) -> tuple[RuleResult, None]:
    """A rule on a corpus-level metric (one value for the suite, no item scores): a floor or ceiling on that
    value; anything item-based (a paired comparison, an interval over items) is refused."""
    item_based = [
        what
        for what, asked in (
            ("max_drop", rule.max_drop is not None),
            ("require_improvement", rule.require_improvement),
            ("judge_on: interval", rule.judge_on == "interval"),
        )
        if asked
    ]
    if item_based:
        return error(
            f"'{rule.metric}' on suite '{rule.suite}' is a corpus-level metric (one value for the suite, no "
            f"per-item scores), so {' and '.join(item_based)} cannot apply; judge it with min/max on its "
            "value, or score it per item (per_item: true)"
        )
    evidence = {
        "suite_version": version,
        "candidate_evaluation_id": evaluation_id,
        "corpus": True,
        "candidate_value": value,
    }
    checks, passed = [], True
    if rule.min is not None:
        ok = value >= rule.min
        passed &= ok
        checks.append(f"corpus value {value:.3f} {'≥' if ok else '<'} floor {rule.min:g}{'' if ok else ': FAILED'}")
    if rule.max is not None:
        ok = value <= rule.max
        passed &= ok
        checks.append(f"corpus value {value:.3f} {'≤' if ok else '>'} ceiling {rule.max:g}{'' if ok else ': FAILED'}")
    return RuleResult(rule.label, bool(passed), False, "; ".join(checks), evidence, rule._safety), None
