"""Arm-vs-arm comparison from the store: per suite and metric, paired deltas with intervals.

Only results of the same suite version (content hash) are paired; items pair by their id, and an
item with no score on either side (a failed scorer) is left out and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.analysis._stats import PairedDelta, compare
from harness.scorers import _registry as scorers
from harness.store._store import Store
from harness.store._tables import Evaluation, SuiteRow, Trial


@dataclass(frozen=True)
class Comparison:
    suite: str
    category: str
    metric: str
    primary: bool
    baseline_version: str
    candidate_version: str
    stats: PairedDelta | None   # None when the suite versions differ or no item has a score on both sides
    problem: str | None = None


@dataclass(frozen=True)
class Paired:
    """Per-item scores of one metric on two evaluations, lined up by item."""
    keys: list[str]
    baseline: list[float]
    candidate: list[float]
    missing: int          # items scored on one side only, or with a failed (None) score

    def stats(self, metric: str) -> PairedDelta | None:
        return compare(self.baseline, self.candidate, binary=is_binary(metric)) if self.keys else None


def is_binary(metric: str) -> bool:
    """Whether a metric is 0/1 per item (then McNemar applies, and Wilson intervals for its mean)."""
    return scorers.is_binary(metric)


def paired_scores(store: Store, baseline_eval: int, candidate_eval: int, metric: str) -> Paired:
    a, b = store.item_scores(baseline_eval, metric), store.item_scores(candidate_eval, metric)
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    missing = len(set(a) | set(b)) - len(keys)
    return Paired(keys, [float(a[k]) for k in keys], [float(b[k]) for k in keys], missing)  # type: ignore[arg-type]


def latest_evaluations(store: Store, trial_id: int) -> dict[str, tuple[Evaluation, SuiteRow]]:
    """Per suite name, the trial's most recent evaluation (a trial re-scored on a changed suite has several)."""
    out: dict[str, tuple[Evaluation, SuiteRow]] = {}
    for ev, suite in store.evaluations(trial_id):
        if suite.name not in out or ev.id > out[suite.name][0].id:
            out[suite.name] = (ev, suite)
    return out


def matching_evaluation(store: Store, trial_id: int, suite_name: str,
                        version: str) -> tuple[tuple[Evaluation, SuiteRow] | None, list[str]]:
    """The trial's evaluation on exactly this suite version, and the versions of the suite it does have."""
    same_name = [(ev, suite) for ev, suite in store.evaluations(trial_id) if suite.name == suite_name]
    exact = [pair for pair in same_name if pair[1].version == version]
    return (exact[-1] if exact else None), [suite.version for _, suite in same_name]


def compare_trials(store: Store, baseline: Trial, candidate: Trial) -> list[Comparison]:
    """Every metric both trials were scored on, paired item by item (same suite version only)."""
    out: list[Comparison] = []
    for name, (ev, suite) in sorted(latest_evaluations(store, candidate.id).items()):
        match, versions = matching_evaluation(store, baseline.id, name, suite.version)
        if match is None and not versions:
            continue
        for metric in store.metrics(ev.id):
            row = dict(suite=name, category=suite.category, metric=metric, primary=metric == suite.primary_metric,
                       baseline_version=match[1].version if match else versions[-1], candidate_version=suite.version)
            if match is None:
                out.append(Comparison(**row, stats=None, problem="suite versions differ"))
                continue
            paired = paired_scores(store, match[0].id, ev.id, metric)
            stats = paired.stats(metric)
            problem = f"{paired.missing} items without a score on one side" if paired.missing else None
            if stats is None:
                problem = "no item has a score on both sides"
            out.append(Comparison(**row, stats=stats, problem=problem))
    return out
