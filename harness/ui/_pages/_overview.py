"""The Overview page: every run in the store, and the chosen run's trials with their primary metrics."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from harness.ui._pages._common import COST_COLUMNS, esc, verdict_chip
from harness.ui.views._cached import q_suites, q_summaries, q_trials
from harness.ui.views._runs import RunRow, config_summary


def page_overview(url: str, runs: list[RunRow], run: RunRow | None) -> None:
    st.header("Overview")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "run": r.id,
                    "name": r.name,
                    "status": r.status,
                    "trials done": f"{r.trials_finished}/{r.trials_total}",
                    "gate": verdict_chip(r.verdict) + (f" ({r.verdict_trial})" if r.verdict_trial else ""),
                    "arms": ", ".join(r.arms),
                    "suites": ", ".join(r.suites),
                    "base model": r.base_model,
                    "created": r.created_at,
                }
                for r in runs
            ]
        ),
        hide_index=True,
        key="runs_table",
    )
    st.caption("gate: the latest gate decision about any trial of the run.")
    if run is None:
        return
    st.subheader(f"Run #{run.id}: {esc(run.name)}")
    st.caption(
        f"base model {esc(run.base_model)} · status {esc(run.status)} · created {esc(run.created_at)}"
        + (f" · finished {esc(run.finished_at)}" if run.finished_at else "")
        + (f" · git {esc(run.git_sha[:10])}" if run.git_sha else "")
    )
    trials = q_trials(url, run.id)
    summaries = {s.trial: s for s in q_summaries(url, run.id)}
    suites = [s.name for s in q_suites(url, run.id)]
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.name, "type": t.arm_type, "status": t.status}
        for suite in suites:
            val = summaries[t.name].primary.get(suite) if t.name in summaries else None
            row[suite] = val[0] if val else None
        row |= {
            "train s": t.train_seconds,
            "tokens/s": t.tokens_per_second,
            "peak GiB": t.peak_memory_gib,
            "final loss": t.final_loss,
            "error": t.error or "",
            "config": config_summary(t.config),
        }
        rows.append(row)
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="trials_table",
        column_config=COST_COLUMNS
        | {s: st.column_config.NumberColumn(s, help="primary metric", format="%.3f") for s in suites},
    )
    st.caption("Suite columns show each suite's primary metric. Pick another run in the sidebar.")
    for t in trials:
        if t.status == "failed":
            st.error(f"**{esc(t.name)}** failed: {esc(t.error)}")
