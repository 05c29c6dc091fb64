"""Arm-vs-arm comparison from the store: per suite and metric, paired deltas with intervals."""
from __future__ import annotations

from dataclasses import dataclass

from harness import scorers
from harness.stats import PairedDelta, compare
from harness.store import Store, Trial


@dataclass(frozen=True)
class Comparison:
    suite: str
    category: str
    metric: str
    primary: bool
    baseline_version: str
    candidate_version: str
    stats: PairedDelta | None   # None when the suite versions differ or items do not line up
    problem: str | None = None


def _binary(metric: str) -> bool:
    try:
        return scorers.build(metric).binary
    except KeyError:
        return False


def compare_trials(store: Store, baseline: Trial, candidate: Trial) -> list[Comparison]:
    """Every metric both trials were scored on, paired item by item (same suite version only)."""
    base = {suite.name: (ev, suite) for ev, suite in store.evaluations(baseline.id)}
    out: list[Comparison] = []
    for ev, suite in store.evaluations(candidate.id):
        if suite.name not in base:
            continue
        bev, bsuite = base[suite.name]
        for metric in store.metrics(ev.id):
            row = dict(suite=suite.name, category=suite.category, metric=metric,
                       primary=metric == suite.primary_metric, baseline_version=bsuite.version,
                       candidate_version=suite.version)
            if bsuite.version != suite.version:
                out.append(Comparison(**row, stats=None, problem="suite versions differ"))
                continue
            a, b = store.item_scores(bev.id, metric), store.item_scores(ev.id, metric)
            keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
            missing = len(set(a) | set(b)) - len(keys)
            stats = compare([a[k] for k in keys], [b[k] for k in keys], binary=_binary(metric)) if keys else None
            out.append(Comparison(**row, stats=stats,
                                  problem=f"{missing} items without a score on one side" if missing else None))
    return out
