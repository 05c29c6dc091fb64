"""`tunegate export-results`: metrics or per-item rows as CSV, Parquet or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    select,
)

from harness.base._errors import UserError, ensure_folder
from harness.store._store import Store
from harness.store._tables import Evaluation, ItemRow, Metric, ModelRow, Output, Run, Score, SuiteRow, Trial

EXPORT_LEVELS = ("metrics", "items")
EXPORT_FORMATS = ("csv", "parquet", "json")


def results_frame(store: Store, runs: Sequence[str] | None = None, level: str = "metrics") -> Any:
    """Results as a pandas DataFrame. level 'metrics': one row per trial, suite version and metric;
    'items': one row per trial and item with its prompt, output and one `score_<metric>` column per metric."""
    import pandas as pd

    if level not in EXPORT_LEVELS:
        raise UserError(f"unknown level '{level}'; use one of {', '.join(EXPORT_LEVELS)}", field="level")
    run_ids = [store.get_run(r).id for r in runs] if runs else None
    with store.reading() as s:
        q = (
            select(Run, Trial, ModelRow.name, Evaluation, SuiteRow)
            .join(Trial, Trial.run_id == Run.id)
            .join(Evaluation, Evaluation.trial_id == Trial.id)
            .join(SuiteRow, SuiteRow.id == Evaluation.suite_id)
            .outerjoin(ModelRow, ModelRow.id == Trial.model_id)
            .order_by(Run.id, Trial.id, SuiteRow.name, Evaluation.id)
        )
        if run_ids is not None:
            q = q.where(Run.id.in_(run_ids))
        evals = list(s.execute(q))
        rows: list[dict[str, Any]] = []
        for run, trial, model, ev, suite in evals:
            base = {
                "run_id": run.id,
                "run": run.name,
                "trial_id": trial.id,
                "trial": trial.name,
                "arm_type": trial.arm_type,
                "trial_status": trial.status,
                "model": model or run.base_model,
                "suite": suite.name,
                "suite_version": suite.version,
                "category": suite.category,
                "evaluation_id": ev.id,
                "evaluated_at": ev.created_at,
            }
            if level == "metrics":
                for m in s.scalars(select(Metric).where(Metric.evaluation_id == ev.id).order_by(Metric.metric)):
                    rows.append(
                        base
                        | {
                            "metric": m.metric,
                            "primary": m.metric == suite.primary_metric,
                            "value": m.value,
                            "stderr": m.stderr,
                            "n": m.n,
                            "corpus": bool(m.corpus),
                        }
                    )  # corpus-level: the suite's value, no items
                continue
            per_item: dict[int, dict[str, Any]] = {}
            for item, o in s.execute(
                select(ItemRow, Output)
                .join(Output, Output.item_id == ItemRow.id)
                .where(Output.evaluation_id == ev.id)
                .order_by(ItemRow.id)
            ):
                per_item[item.id] = base | {"item": item.item_key, "prompt": o.prompt, "output": o.output}
            for sc in s.scalars(select(Score).where(Score.evaluation_id == ev.id)):
                if sc.item_id in per_item:
                    per_item[sc.item_id][f"score_{sc.metric}"] = sc.value
            rows.extend(per_item.values())
    return pd.DataFrame(rows)


def export_results(
    store: Store, path: str | Path, *, runs: Sequence[str] | None = None, level: str = "metrics", fmt: str | None = None
) -> int:
    """Write results_frame() to CSV, Parquet or JSON (records); returns the number of rows."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise UserError(
            f"unknown format '{fmt or path.name}'; use --format csv, parquet or json "
            "(or a file ending in .csv, .parquet or .json)",
            file=path,
            field="format",
        )
    frame = results_frame(store, runs, level)
    if path.is_dir():
        raise UserError("is a folder; give the output file (e.g. results.csv)", file=path)
    ensure_folder(path.parent)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text(frame.to_json(orient="records", indent=2), encoding="utf-8")
    return len(frame)
