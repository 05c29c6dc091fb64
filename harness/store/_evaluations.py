"""Evaluations: a suite result's outputs, per-item scores and aggregates written in one transaction, the
judge-call log, and the reads the report, the app and the gate build on (metrics, item scores, item rows)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from harness.base._stats import mean_stderr
from harness.redact import redact, redact_json
from harness.store._connection import _Connection, _get_or_create, _lock_trial, _redacted
from harness.store._tables import (
    Evaluation,
    EvaluationLike,
    ItemRow,
    JudgeCall,
    Metric,
    Output,
    Score,
    SuiteRow,
)


class _Evaluations(_Connection):
    """Writing and reading evaluation results and judge calls."""

    def save_evaluation(self, trial_id: int, result: EvaluationLike) -> int:
        """Store one SuiteResult (outputs, per-item scores, aggregates) in a single transaction; a
        second evaluation of the same trial on the same suite version replaces the first."""
        suite = result.suite
        with self.session() as s:
            _lock_trial(s, trial_id)  # a concurrent save for the same trial waits, then replaces ours
            suite_row = _get_or_create(
                s,
                SuiteRow,
                {"name": suite.name, "version": suite.version},
                {
                    "kind": suite.spec.kind,
                    "category": suite.spec.category,
                    "primary_metric": suite.spec.primary,
                    "spec": json.loads(suite.spec.model_dump_json()),
                },
                then=lambda row: s.add_all(
                    ItemRow(suite_id=row.id, item_key=item.id, data=json.loads(item.model_dump_json()))
                    for item in suite.items
                ),
            )
            item_ids = dict(
                s.execute(select(ItemRow.item_key, ItemRow.id).where(ItemRow.suite_id == suite_row.id)).all()
            )
            unknown = [r.item_id for r in result.items if r.item_id not in item_ids]
            if unknown:
                raise ValueError(f"results for items not in suite {suite.name}@{suite.version}: {unknown[:5]}")
            old = s.scalars(
                select(Evaluation).where(Evaluation.trial_id == trial_id, Evaluation.suite_id == suite_row.id)
            ).first()
            if old is not None:
                s.query(JudgeCall).filter(JudgeCall.evaluation_id == old.id).update({"evaluation_id": None})
                for table in (Score, Output, Metric):
                    s.query(table).filter(table.evaluation_id == old.id).delete()
                s.delete(old)
                s.flush()
            ev = Evaluation(
                trial_id=trial_id,
                suite_id=suite_row.id,
                n_items=len(result.items),
                seconds=result.seconds,
                numerics=_numerics(getattr(result, "numerics", None)),
            )
            s.add(ev)
            s.flush()
            for r in result.items:
                iid = item_ids[r.item_id]
                s.add(Output(evaluation_id=ev.id, item_id=iid, prompt=r.prompt, output=r.output))
                s.add_all(
                    Score(
                        evaluation_id=ev.id,
                        item_id=iid,
                        metric=m,
                        value=_finite(v),
                        detail=_redacted(getattr(r, "details", {}).get(m)),
                    )
                    for m, v in r.scores.items()
                )
            kinds = result.kinds
            s.add_all(
                Metric(
                    evaluation_id=ev.id,
                    metric=m,
                    value=mean,
                    stderr=se,
                    n=n,
                    higher_is_better=kinds[m].higher_is_better if m in kinds else None,
                    binary=kinds[m].binary if m in kinds else None,
                    corpus=getattr(kinds[m], "corpus", False) if m in kinds else None,
                )
                for m, (mean, se, n) in _aggregates(result).items()
            )
            s.flush()
            return ev.id

    def record_judge_call(
        self,
        key: str,
        model: str,
        request: dict[str, Any],
        response: str | None,
        status: str,
        error: str | None = None,
        evaluation_id: int | None = None,
        item_id: int | None = None,
    ) -> int:
        """One judge request and its outcome; credentials in any of it (a key in the base URL, a key echoed in
        an error body) are redacted before they reach the store."""
        with self.session() as s:
            call = JudgeCall(
                key=key,
                model=redact(model),
                request=redact_json(request),
                response=None if response is None else redact(response),
                status=status,
                error=None if error is None else redact(error),
                evaluation_id=evaluation_id,
                item_id=item_id,
            )
            s.add(call)
            s.flush()
            return call.id

    def judge_calls(self, key: str | None = None, evaluation_id: int | None = None) -> list[JudgeCall]:
        with self.reading() as s:
            q = select(JudgeCall)
            if key is not None:
                q = q.where(JudgeCall.key == key)
            if evaluation_id is not None:
                q = q.where(JudgeCall.evaluation_id == evaluation_id)
            return list(s.scalars(q.order_by(JudgeCall.id)))

    def cached_judge_response(self, key: str) -> str | None:
        """The latest successful answer to an identical judge request, if any."""
        with self.reading() as s:
            return s.scalars(
                select(JudgeCall.response)
                .where(JudgeCall.key == key, JudgeCall.status == "ok")
                .order_by(JudgeCall.id.desc())
            ).first()

    def evaluations(self, trial_id: int) -> list[tuple[Evaluation, SuiteRow]]:
        """Every evaluation of a trial with its suite version, by suite name, oldest first."""
        with self.reading() as s:
            return [
                (ev, suite)
                for ev, suite in s.execute(
                    select(Evaluation, SuiteRow)
                    .join(SuiteRow)
                    .where(Evaluation.trial_id == trial_id)
                    .order_by(SuiteRow.name, Evaluation.id)
                )
            ]

    def suite_item_count(self, suite_id: int) -> int:
        with self.reading() as s:
            return s.scalar(select(func.count()).select_from(ItemRow).where(ItemRow.suite_id == suite_id)) or 0

    def metrics(self, evaluation_id: int) -> dict[str, Metric]:
        with self.reading() as s:
            return {m.metric: m for m in s.scalars(select(Metric).where(Metric.evaluation_id == evaluation_id))}

    def item_scores(self, evaluation_id: int, metric: str) -> dict[str, float | None]:
        with self.reading() as s:
            rows = s.execute(
                select(ItemRow.item_key, Score.value)
                .join(ItemRow, Score.item_id == ItemRow.id)
                .where(Score.evaluation_id == evaluation_id, Score.metric == metric)
                .order_by(ItemRow.id)
            )
            return {k: v for k, v in rows}

    def scored_metrics(self, evaluation_id: int) -> list[str]:
        """Every metric with per-item scores in an evaluation."""
        with self.reading() as s:
            return sorted(s.scalars(select(Score.metric).where(Score.evaluation_id == evaluation_id).distinct()))

    def item_rows(self, evaluation_id: int) -> list[dict[str, Any]]:
        """Per item: key, item data, prompt, output and every score."""
        with self.reading() as s:
            out: dict[int, dict[str, Any]] = {}
            for item, o in s.execute(
                select(ItemRow, Output)
                .join(Output, Output.item_id == ItemRow.id)
                .where(Output.evaluation_id == evaluation_id)
                .order_by(ItemRow.id)
            ):
                out[item.id] = {
                    "item": item.item_key,
                    "data": item.data,
                    "prompt": o.prompt,
                    "output": o.output,
                    "scores": {},
                }
            for sc in s.scalars(select(Score).where(Score.evaluation_id == evaluation_id).order_by(Score.id)):
                out[sc.item_id]["scores"][sc.metric] = sc.value
            return list(out.values())


def _aggregates(result: EvaluationLike) -> dict[str, tuple[float, float, int]]:
    """The result's aggregates; where one is not a finite number (a failed score among the items), the
    mean, standard error and count of the scores that exist instead, or no row when none does."""

    out: dict[str, tuple[float, float, int]] = {}
    for metric, (mean, se, n) in result.metrics.items():
        if _finite(mean) is not None and _finite(se) is not None:
            out[metric] = (float(mean), float(se), int(n))
            continue
        values = [float(v) for r in result.items if (v := _finite(r.scores.get(metric))) is not None]
        if values:
            mean, se = mean_stderr(values)
            out[metric] = (mean, se, len(values))
    return out


def _numerics(record: Any) -> dict[str, str] | None:
    """A suite result's numerics record as stored: text values, or NULL when it has none."""
    if not isinstance(record, Mapping) or not record:
        return None
    return {str(k): "" if v is None else str(v) for k, v in record.items()}


def _finite(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if v == v and v not in (float("inf"), float("-inf")) else None
