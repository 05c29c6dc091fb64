"""The Safety page: refusal rates per arm on the safety suites, and the items whose verdict changed."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from harness.ui._pages._common import current_page, esc
from harness.ui.views._cached import q_items, q_safety, q_trials
from harness.ui.views._runs import RunRow, default_baseline


def page_safety(url: str, run: RunRow) -> None:
    st.header("Safety")
    trials = q_trials(url, run.id)
    base = default_baseline(trials)
    rows = q_safety(url, run.id, base)
    if not rows:
        st.info(
            "This run has no safety suites (suites with category 'safety', e.g. refusal of harmful "
            "requests and over-refusal of benign ones). Build some with `tunegate safety advbench`, `xstest` "
            "or `harmbench`."
        )
        return
    st.caption(
        f"Refusal rate per arm; harmful probes should be refused (higher is better), benign probes "
        f"answered (lower is better). Δ is against {esc(base)}; ⚠ marks a change in the wrong direction."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "arm": r.trial,
                    "suite": r.suite,
                    "probes": r.probes,
                    "refusal rate": r.refusal_rate,
                    "n": r.n,
                    f"{base}": r.baseline_rate,
                    "Δ": r.delta,
                    "flag": "⚠ worse" if r.worse else "",
                }
                for r in rows
            ]
        ),
        hide_index=True,
        key="safety_table",
        column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in ("refusal rate", "Δ", base or "")},
    )
    order = [t.name for t in trials]
    chart = (
        alt.Chart(
            pd.DataFrame(
                [
                    {"arm": r.trial, "probes": f"{r.probes} probes ({r.suite})", "refusal rate": r.refusal_rate}
                    for r in rows
                ]
            )
        )
        .mark_bar()
        .encode(
            x=alt.X("probes:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=260)),
            xOffset=alt.XOffset("arm:N", sort=order),
            color=alt.Color("arm:N", sort=order),
            y=alt.Y("refusal rate:Q", scale=alt.Scale(domain=[0, 1])),
            tooltip=["arm", "probes", "refusal rate"],
        )
    )
    st.altair_chart(chart, key="safety_chart")

    st.subheader("Items that changed")
    suites = sorted({r.suite for r in rows})
    others = [t.name for t in trials if t.name != base and t.status == "finished"]
    if not others:
        return
    cols = st.columns(3)
    suite = cols[0].selectbox("Safety suite", suites, key="sf_suite")
    arm = cols[1].selectbox("Arm", others, key="sf_arm")
    metric = next(r.metric for r in rows if r.suite == suite)
    page_no = current_page("sf_page", (run.id, suite, arm))
    result = q_items(url, run.id, suite, (base, arm), base, metric, "changed", "", page_no, 50)
    st.session_state["sf_page"] = result.page
    st.caption(f"{result.total} items where {esc(arm)}'s {esc(metric)} differs from {esc(base)}'s")
    cols[2].number_input("Page", min_value=1, max_value=result.pages, step=1, key="sf_page")
    if result.items:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "item": i.key,
                        "prompt": i.prompt,
                        f"{base} output": i.arms[base].output if base in i.arms else "",
                        f"{base} {metric}": i.arms[base].scores.get(metric) if base in i.arms else None,
                        f"{arm} output": i.arms[arm].output if arm in i.arms else "",
                        f"{arm} {metric}": i.arms[arm].scores.get(metric) if arm in i.arms else None,
                    }
                    for i in result.items
                ]
            ),
            hide_index=True,
            key="sf_items",
        )
