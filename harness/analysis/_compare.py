"""Arm-vs-arm comparison from the store: per suite and metric, paired deltas with intervals.

Only results of the same suite version (content hash) are paired; items pair by their id, and an
item with no score on either side (a failed scorer) is left out and counted. Which way is better, and
whether a metric is 0/1 per item, is read from the stored metric rows (the scorer registry only for rows
written before the store kept them). A corpus-level metric (one value per evaluation) is listed, not paired.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.base._stats import PairedDelta, compare
from harness.scorers import _registry as scorers
from harness.scorers._registry import MetricKind
from harness.store._store import Store
from harness.store._tables import Evaluation, Metric, SuiteRow, Trial


@dataclass(frozen=True)
class Comparison:
    suite: str
    category: str
    metric: str
    primary: bool
    baseline_version: str
    candidate_version: str
    stats: PairedDelta | None  # None when the suite versions differ or no item has a score on both sides
    problem: str | None = None
    kind: MetricKind = MetricKind()

    @property
    def verdict(self) -> str:
        """better | worse (the paired 95% interval excludes 0, read in the metric's direction) |
        no clear difference | not comparable."""
        return verdict(self.stats, self.kind.higher_is_better)


def verdict(stats: PairedDelta | None, higher_is_better: bool) -> str:
    if stats is None:
        return "not comparable"
    if stats.lo > 0 or stats.hi < 0:
        return "better" if (stats.lo > 0) == higher_is_better else "worse"
    return "no clear difference"


@dataclass(frozen=True)
class Paired:
    """Per-item scores of one metric on two evaluations, lined up by item."""

    keys: list[str]
    baseline: list[float]
    candidate: list[float]
    missing: int  # items scored on one side only, or with a failed (None) score
    kind: MetricKind  # binary only when both sides are

    def stats(self) -> PairedDelta | None:
        return compare(self.baseline, self.candidate, binary=self.kind.binary) if self.keys else None


def kind_of(metric: str, row: Metric | None) -> MetricKind:
    """How to read a metric: as stored on its row, or (a row written before the store kept it, or none) as
    the scorer registry has it."""
    registered = scorers.kind(metric)
    if row is None:
        return registered
    return MetricKind(
        higher_is_better=registered.higher_is_better if row.higher_is_better is None else row.higher_is_better,
        binary=registered.binary if row.binary is None else row.binary,
        corpus=bool(row.corpus),
    )


def metric_kind(store: Store, evaluation_id: int, metric: str) -> MetricKind:
    return kind_of(metric, store.metrics(evaluation_id).get(metric))


def paired_scores(store: Store, baseline_eval: int, candidate_eval: int, metric: str) -> Paired:
    a, b = store.item_scores(baseline_eval, metric), store.item_scores(candidate_eval, metric)
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    missing = len(set(a) | set(b)) - len(keys)
    base, cand = metric_kind(store, baseline_eval, metric), metric_kind(store, candidate_eval, metric)
    kind = MetricKind(higher_is_better=cand.higher_is_better, binary=base.binary and cand.binary)
    return Paired(
        keys,
        [float(a[k]) for k in keys],
        [float(b[k]) for k in keys],
        missing,  # type: ignore[arg-type]
        kind,
    )


def latest_evaluations(store: Store, trial_id: int) -> dict[str, tuple[Evaluation, SuiteRow]]:
    """Per suite name, the trial's most recent evaluation (a trial re-scored on a changed suite has several)."""
    out: dict[str, tuple[Evaluation, SuiteRow]] = {}
    for ev, suite in store.evaluations(trial_id):
        if suite.name not in out or ev.id > out[suite.name][0].id:
            out[suite.name] = (ev, suite)
    return out


def matching_evaluation(
    store: Store, trial_id: int, suite_name: str, version: str
) -> tuple[tuple[Evaluation, SuiteRow] | None, list[str]]:
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
        for metric, metric_row in store.metrics(ev.id).items():
            row = dict(
                suite=name,
                category=suite.category,
                metric=metric,
                primary=metric == suite.primary_metric,
                baseline_version=match[1].version if match else versions[-1],
                candidate_version=suite.version,
            )
            if match is None:
                out.append(
                    Comparison(**row, stats=None, problem="suite versions differ", kind=kind_of(metric, metric_row))
                )
                continue
            if metric_row.corpus:  # one value per evaluation: nothing to pair item by item
                out.append(
                    Comparison(
                        **row,
                        stats=None,
                        problem="corpus-level metric: no per-item scores to pair",
                        kind=kind_of(metric, metric_row),
                    )
                )
                continue
            paired = paired_scores(store, match[0].id, ev.id, metric)
            stats = paired.stats()
            problem = f"{paired.missing} items without a score on one side" if paired.missing else None
            if stats is None:
                problem = "no item has a score on both sides"
            out.append(Comparison(**row, stats=stats, problem=problem, kind=paired.kind))
    return out
