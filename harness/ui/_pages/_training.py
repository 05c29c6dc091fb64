"""The Training page: the trained trials' cost, their logged curves, and each suite's primary metric per trial."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from harness.ui._pages._common import COST_COLUMNS
from harness.ui.views._cached import q_curves, q_metrics, q_trials
from harness.ui.views._runs import RunRow, config_summary


def page_training(url: str, run: RunRow) -> None:
    st.header("Training")
    curves = q_curves(url, run.id)
    trials = q_trials(url, run.id)
    trained = [t for t in trials if t.train_seconds is not None or any(c.trial == t.name for c in curves)]
    if not trained:
        st.info("No trial of this run was trained (baseline / prompt / RAG arms only).")
        return
    names = [t.name for t in trained]
    chosen = st.multiselect("Trials", names, default=names, key="tr_trials")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "trial": t.name,
                    "type": t.arm_type,
                    "status": t.status,
                    "steps logged": sum(c.trial == t.name for c in curves),
                    "final loss": t.final_loss,
                    "train s": t.train_seconds,
                    "tokens/s": t.tokens_per_second,
                    "peak GiB": t.peak_memory_gib,
                    "config": config_summary(t.config),
                }
                for t in trained
                if t.name in chosen
            ]
        ),
        hide_index=True,
        key="tr_table",
        column_config=COST_COLUMNS,
    )
    data = pd.DataFrame([c.__dict__ for c in curves if c.trial in chosen])
    if data.empty:
        st.caption("No training steps were logged.")
    else:
        charts = [
            ("loss", "training loss"),
            ("tokens_per_second", "throughput (tokens/s)"),
            ("peak_memory_gib", "peak memory (GiB)"),
            ("lr", "learning rate"),
            ("grad_norm", "gradient norm"),
        ]
        cols = st.columns(2)
        for i, (field, title) in enumerate(charts):
            frame = data.dropna(subset=[field])
            if frame.empty:
                continue
            chart = (
                alt.Chart(frame, title=title)
                .mark_line(point=alt.OverlayMarkDef(size=40) if len(frame) < 60 else False)
                .encode(
                    x=alt.X("step:Q", axis=alt.Axis(tickMinStep=1)),
                    y=alt.Y(f"{field}:Q", title=title, scale=alt.Scale(zero=False)),
                    color="trial:N",
                    tooltip=["trial", "step", field],
                )
            )
            with cols[i % 2]:
                st.altair_chart(chart, key=f"tr_{field}")
    st.subheader("Evaluation per trial")
    metrics = [m for m in q_metrics(url, run.id) if m.primary]
    if metrics:
        frame = pd.DataFrame(
            [
                {
                    "trial": m.trial,
                    "suite": f"{m.suite} · {m.metric}",
                    "value": m.value,
                    "lo": m.value - 1.96 * m.stderr,
                    "hi": m.value + 1.96 * m.stderr,
                }
                for m in metrics
            ]
        )
        order = [t.name for t in trials]
        base = alt.Chart(frame).encode(
            x=alt.X("suite:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=220)),
            xOffset=alt.XOffset("trial:N", sort=order),
            color=alt.Color("trial:N", sort=order),
        )
        chart = base.mark_bar().encode(
            y=alt.Y("value:Q", title="primary metric"), tooltip=["trial", "suite", "value"]
        ) + base.mark_rule().encode(y="lo:Q", y2="hi:Q")
        st.altair_chart(chart, key="tr_eval")
        st.caption(
            "Each suite's primary metric per trial (mean over items). For metric against a swept "
            "hyper-parameter or data size, see Comparison → Sweep / learning curve."
        )
