"""Runs, trials, suites and aggregate metrics as plain rows for the app and the report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from harness.base._kinds import UNSHAPED
from harness.store._store import Store
from harness.store._tables import (
    Evaluation,
    GateDecision,
    Metric,
    Run,
    SuiteRow,
    Trial,
)


@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    status: str
    base_model: str
    created_at: str
    finished_at: str | None
    git_sha: str
    arms: tuple[str, ...]
    suites: tuple[str, ...]
    trials_finished: int
    trials_total: int
    verdict: str | None  # the latest gate decision on any trial of the run
    verdict_trial: str | None  # ... and the trial it was about

    @property
    def label(self) -> str:
        return f"#{self.id} {self.name} ({self.status})"


@dataclass(frozen=True)
class TrialRow:
    id: int
    run_id: int
    name: str
    arm: str
    arm_type: str
    status: str
    error: str | None
    config: dict[str, Any]
    train_seconds: float | None
    tokens_per_second: float | None
    peak_memory_gib: float | None
    final_loss: float | None
    started_at: str | None
    finished_at: str | None


def _trial_row(t: Trial) -> TrialRow:
    return TrialRow(
        t.id,
        t.run_id,
        t.name,
        t.arm,
        t.arm_type,
        t.status,
        t.error,
        dict(t.config or {}),
        t.train_seconds,
        t.tokens_per_second,
        t.peak_memory_gib,
        t.final_loss,
        t.started_at,
        t.finished_at,
    )


def list_runs(store: Store, limit: int = 200, run_id: int | None = None) -> list[RunRow]:
    """The newest runs (or just `run_id`) with their arms, suites, progress and latest gate verdict
    (four queries in all)."""
    with store.reading() as s:
        q = select(Run).order_by(Run.id.desc()).limit(limit)
        runs = list(s.scalars(q if run_id is None else q.where(Run.id == run_id)))
        ids = [r.id for r in runs]
        if not ids:
            return []
        trials = list(s.scalars(select(Trial).where(Trial.run_id.in_(ids)).order_by(Trial.id)))
        suites = s.execute(
            select(Trial.run_id, SuiteRow.name)
            .join(Evaluation, Evaluation.trial_id == Trial.id)
            .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
            .where(Trial.run_id.in_(ids))
            .distinct()
        ).all()
        decisions = s.execute(
            select(GateDecision.verdict, Trial.run_id, Trial.name)
            .join(Trial, Trial.id == GateDecision.candidate_trial_id)
            .where(Trial.run_id.in_(ids))
            .order_by(GateDecision.id)
        ).all()
    by_run: dict[int, list[Trial]] = defaultdict(list)
    for t in trials:
        by_run[t.run_id].append(t)
    suites_by_run: dict[int, set[str]] = defaultdict(set)
    for rid, name in suites:
        suites_by_run[rid].add(name)
    verdicts = {rid: (verdict, trial) for verdict, rid, trial in decisions}  # the last one wins
    planned = {r.id: tuple((r.plan or {}).get("suites") or ()) for r in runs}
    return [
        RunRow(
            r.id,
            r.name,
            r.status,
            r.base_model,
            r.created_at,
            r.finished_at,
            r.git_sha or "",
            tuple(t.name for t in by_run[r.id]),
            tuple(sorted(suites_by_run[r.id])) or tuple(str(x) for x in planned[r.id]),
            sum(t.status == "finished" for t in by_run[r.id]),
            len(by_run[r.id]),
            *verdicts.get(r.id, (None, None)),
        )
        for r in runs
    ]


def run_trials(store: Store, run_id: int) -> list[TrialRow]:
    return [_trial_row(t) for t in store.trials(run_id)]


def sweep_spec(store: Store, run_id: int) -> dict[str, Any] | None:
    """The plan's sweep block ({arm, method, params, ...}) or None."""
    return (store.get_run(run_id).plan or {}).get("sweep")


def config_summary(config: dict[str, Any], skip: Iterable[str] = ("name", "type")) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items() if k not in skip and v is not None)


def default_baseline(trials: list[TrialRow]) -> str | None:
    """The trial named 'baseline', else the first baseline-type trial, else the first trial."""
    if not trials:
        return None
    named = [t.name for t in trials if t.name == "baseline"]
    typed = [t.name for t in trials if t.arm_type in UNSHAPED]
    return (named or typed or [trials[0].name])[0]


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    version: str
    kind: str
    category: str
    primary: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class MetricRow:
    trial: str
    suite: str
    category: str
    metric: str
    primary: bool
    value: float
    stderr: float
    n: int


def run_suites(store: Store, run_id: int) -> list[SuiteInfo]:
    """Each suite (name) the run's trials were scored on, with its metrics; the newest version if several."""
    with store.reading() as s:
        pairs = s.execute(
            select(Evaluation.suite_id, Metric.metric)
            .join(Trial, Trial.id == Evaluation.trial_id)
            .join(Metric, Metric.evaluation_id == Evaluation.id)
            .where(Trial.run_id == run_id)
            .distinct()
        ).all()  # no DISTINCT over JSON (PostgreSQL)
        rows_by_id = {r.id: r for r in s.scalars(select(SuiteRow).where(SuiteRow.id.in_({i for i, _ in pairs})))}
    rows = sorted(((rows_by_id[i], m) for i, m in pairs), key=lambda r: (r[0].id, r[1]))
    suites: dict[str, SuiteRow] = {}
    metrics: dict[str, list[str]] = defaultdict(list)
    for suite, metric in rows:
        if suite.name not in suites or suite.id > suites[suite.name].id:
            suites[suite.name] = suite
        if metric not in metrics[suite.name]:
            metrics[suite.name].append(metric)
    out = []
    for name in sorted(suites):
        sr = suites[name]
        order = [m for m in _spec_metrics(sr.spec) if m in metrics[name]]
        order += sorted(m for m in metrics[name] if m not in order)
        out.append(SuiteInfo(name, sr.version, sr.kind, sr.category, sr.primary_metric, tuple(order)))
    return out


def _spec_metrics(spec: dict[str, Any] | None) -> list[str]:
    names = []
    for sc in (spec or {}).get("scorers") or []:
        names.append(sc if isinstance(sc, str) else sc.get("name"))
    return [n for n in names if n]


def metric_table(store: Store, run_id: int) -> list[MetricRow]:
    """Every aggregate (trial x suite x metric) of a run in one query."""
    with store.reading() as s:
        rows = s.execute(
            select(Trial.name, SuiteRow.name, SuiteRow.category, SuiteRow.primary_metric, Metric)
            .join(Evaluation, Evaluation.trial_id == Trial.id)
            .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
            .join(Metric, Metric.evaluation_id == Evaluation.id)
            .where(Trial.run_id == run_id)
            .order_by(Trial.id, SuiteRow.name, Metric.id)
        ).all()
    return [
        MetricRow(trial, suite, category, m.metric, m.metric == primary, m.value, m.stderr, m.n)
        for trial, suite, category, primary, m in rows
    ]
