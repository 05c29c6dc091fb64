"""Arm-vs-arm comparisons, sweeps and training curves as plain rows."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from harness.analysis._compare import compare_trials
from harness.base._stats import multiple_comparison_note
from harness.store._store import Store
from harness.store._tables import (
    TrainStep,
    Trial,
)
from harness.ui.views._runs import TrialRow, metric_table, run_trials, sweep_spec


@dataclass(frozen=True)
class ComparisonRow:
    arm: str
    baseline: str
    suite: str
    category: str
    metric: str
    primary: bool
    baseline_mean: float | None
    arm_mean: float | None
    delta: float | None
    lo: float | None
    hi: float | None
    mcnemar_p: float | None
    n: int
    arm_wins: int
    baseline_wins: int
    verdict: str  # better | worse | no clear difference | not comparable (in the metric's direction)
    problem: str | None
    train_seconds: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def comparisons(
    store: Store, run_id: int, baseline: str, arms: list[str], metrics: Iterable[tuple[str, str]] | None = None
) -> list[ComparisonRow]:
    """Each arm against `baseline` on every suite and metric both were scored on: paired deltas with 95%
    bootstrap intervals (and McNemar's p for 0/1 metrics), plus the arm's cost. `metrics` keeps only
    these (suite, metric) pairs."""
    by_name = {t.name: t for t in store.trials(run_id)}
    if baseline not in by_name:
        return []
    keep = set(metrics) if metrics is not None else None
    base = by_name[baseline]
    out: list[ComparisonRow] = []
    for arm in arms:
        cand = by_name.get(arm)
        if cand is None or cand.id == base.id:
            continue
        for c in compare_trials(store, base, cand):
            if keep is not None and (c.suite, c.metric) not in keep:
                continue
            st = c.stats
            out.append(
                ComparisonRow(
                    arm,
                    baseline,
                    c.suite,
                    c.category,
                    c.metric,
                    c.primary,
                    _finite(st.mean_a) if st else None,
                    _finite(st.mean_b) if st else None,
                    _finite(st.delta) if st else None,
                    _finite(st.lo) if st else None,
                    _finite(st.hi) if st else None,
                    st.mcnemar_p if st else None,
                    st.n if st else 0,
                    st.b_wins if st else 0,
                    st.a_wins if st else 0,
                    c.verdict,
                    c.problem,
                    cand.train_seconds,
                    cand.tokens_per_second,
                    cand.peak_memory_gib,
                )
            )
    return out


def comparison_note(rows: list[ComparisonRow]) -> str:
    """How many of the table's McNemar p-values survive Holm's adjustment (several arms and metrics
    compared at once)."""
    return multiple_comparison_note({f"{r.arm} vs {r.baseline}: {r.suite}.{r.metric}": r.mcnemar_p for r in rows})


@dataclass(frozen=True)
class ArmSummary:
    trial: str
    arm_type: str
    status: str
    primary: dict[str, tuple[float, float, int]]  # suite -> (mean, stderr, n) of its primary metric
    train_seconds: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None
    final_loss: float | None


def arm_summaries(store: Store, run_id: int, arms: list[str] | None = None) -> list[ArmSummary]:
    """One row per trial: its primary metric on each suite and its cost."""
    trials = run_trials(store, run_id)
    primary: dict[str, dict[str, tuple[float, float, int]]] = defaultdict(dict)
    for m in metric_table(store, run_id):
        if m.primary:
            primary[m.trial][m.suite] = (m.value, m.stderr, m.n)
    return [
        ArmSummary(
            t.name,
            t.arm_type,
            t.status,
            primary[t.name],
            t.train_seconds,
            t.tokens_per_second,
            t.peak_memory_gib,
            t.final_loss,
        )
        for t in trials
        if arms is None or t.name in arms
    ]


@dataclass(frozen=True)
class SweepPoint:
    trial: str
    param: str
    x: float
    suite: str
    metric: str
    y: float
    stderr: float


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def sweep_params(trials: list[TrialRow], sweep: dict[str, Any] | None) -> dict[str, list[str]]:
    """Which numeric hyper-parameters vary, and over which trials: the plan's sweep if it has one, else
    any config key that differs between trials of the same arm type (e.g. r, lr, data_fraction)."""
    if sweep:
        swept = sweep["arm"] if isinstance(sweep.get("arm"), list) else [sweep.get("arm")]
        members = [t.name for t in trials if any(t.name.startswith(f"{arm}-") for arm in swept)]
        return {
            p: members
            for p in sweep.get("params", {})
            if len({_numeric(t.config.get(p)) for t in trials if t.name in members} - {None}) > 1
        }
    out: dict[str, list[str]] = {}
    by_type: dict[str, list[TrialRow]] = defaultdict(list)
    for t in trials:
        by_type[t.arm_type].append(t)
    for group in by_type.values():
        if len(group) < 2:
            continue
        keys = {k for t in group for k in t.config if k not in ("name", "type", "seed")}
        for key in sorted(keys):
            values = [_numeric(t.config.get(key)) for t in group]
            if None not in values and len(set(values)) > 1:
                out.setdefault(key, []).extend(t.name for t in group)
    return out


def sweep_points(store: Store, run_id: int) -> list[SweepPoint]:
    """Metric against hyper-parameter (or data fraction / steps) for every varying parameter."""
    trials = run_trials(store, run_id)
    params = sweep_params(trials, sweep_spec(store, run_id))
    if not params:
        return []
    config = {t.name: t.config for t in trials}
    out = []
    for m in metric_table(store, run_id):
        for param, members in params.items():
            x = _numeric(config.get(m.trial, {}).get(param))
            if m.trial in members and x is not None:
                out.append(SweepPoint(m.trial, param, x, m.suite, m.metric, m.value, m.stderr))
    return out


@dataclass(frozen=True)
class CurvePoint:
    trial: str
    step: int
    loss: float | None
    lr: float | None
    grad_norm: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None


def train_curves(store: Store, run_id: int, trials: list[str] | None = None) -> list[CurvePoint]:
    """Logged training steps of a run's trials (one query)."""
    with store.reading() as s:
        q = (
            select(Trial.name, TrainStep)
            .join(TrainStep, TrainStep.trial_id == Trial.id)
            .where(Trial.run_id == run_id)
            .order_by(Trial.id, TrainStep.step)
        )
        if trials is not None:
            q = q.where(Trial.name.in_(trials))
        rows = s.execute(q).all()
    return [
        CurvePoint(name, st.step, st.loss, st.lr, st.grad_norm, st.tokens_per_second, st.peak_memory_gib)
        for name, st in rows
    ]
