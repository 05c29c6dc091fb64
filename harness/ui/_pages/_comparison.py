"""The Comparison page: paired deltas of each arm against a reference arm, a forest plot, and the
sweep or learning curve."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from harness.ui._pages._common import COST_COLUMNS, esc, pick_arms
from harness.ui.views._cached import q_comparisons, q_suites, q_summaries, q_sweep, q_trials
from harness.ui.views._compare import comparison_note
from harness.ui.views._runs import RunRow


def page_comparison(url: str, run: RunRow) -> None:
    st.header("Comparison")
    trials = q_trials(url, run.id)
    reference, arms = pick_arms(trials, "cmp")
    if reference is None or len(arms) < 2:
        st.info("Pick two or more arms to compare.")
        return
    suites = q_suites(url, run.id)
    scope = st.radio(
        "Metrics",
        ["primary", "all"],
        horizontal=True,
        key="cmp_scope",
        help="Primary: each suite's primary metric (fast on large runs). All: every metric.",
    )
    metrics = tuple((s.name, s.primary) for s in suites) if scope == "primary" else None
    rows = q_comparisons(url, run.id, reference, tuple(arms[1:]), metrics)

    summaries = [s for s in q_summaries(url, run.id) if s.trial in arms]
    st.subheader("Arms")
    st.dataframe(
        pd.DataFrame(
            [
                {"arm": s.trial, "type": s.arm_type, "status": s.status}
                | {
                    f"{suite} (primary)": (f"{v[0]:.3f} ± {1.96 * v[1]:.3f}" if v else "—")
                    for suite, v in ((x.name, s.primary.get(x.name)) for x in suites)
                }
                | {"train s": s.train_seconds, "tokens/s": s.tokens_per_second, "peak GiB": s.peak_memory_gib}
                for s in sorted(summaries, key=lambda s: arms.index(s.trial))
            ]
        ),
        hide_index=True,
        key="cmp_arms",
        column_config=COST_COLUMNS,
    )

    st.subheader(f"Deltas against {esc(reference)}")
    st.caption(
        "Δ = arm − reference on the same items; 95% paired-bootstrap interval (10,000 resamples); "
        "McNemar's exact p for 0/1 metrics; intervals are per comparison."
    )
    if not rows:
        st.info("No suite was scored for both the reference and the other arms.")
        return
    table = pd.DataFrame(
        [
            {
                "arm": r.arm,
                "suite": r.suite,
                "metric": r.metric + (" ★" if r.primary else ""),
                "reference": r.baseline_mean,
                "arm value": r.arm_mean,
                "Δ": r.delta,
                "95% lo": r.lo,
                "95% hi": r.hi,
                "McNemar p": r.mcnemar_p,
                "n": r.n,
                "arm wins": r.arm_wins,
                "ref wins": r.baseline_wins,
                "verdict": r.verdict + (f" ({r.problem})" if r.problem else ""),
                "train s": r.train_seconds,
                "tokens/s": r.tokens_per_second,
                "peak GiB": r.peak_memory_gib,
            }
            for r in rows
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        key="cmp_table",
        column_config=COST_COLUMNS
        | {
            c: st.column_config.NumberColumn(c, format="%.3f")
            for c in ("reference", "arm value", "Δ", "95% lo", "95% hi")
        }
        | {"McNemar p": st.column_config.NumberColumn("McNemar p", format="%.3g")},
    )

    note = comparison_note(rows)
    if note:
        st.caption(esc(note))

    forest = pd.DataFrame(
        [
            {
                "comparison": f"{r.arm} · {r.suite} · {r.metric}",
                "delta": r.delta,
                "lo": r.lo,
                "hi": r.hi,
                "verdict": r.verdict,
            }
            for r in rows
            if r.delta is not None
        ]
    )
    if not forest.empty:
        st.subheader("Forest plot")
        color = alt.Color(
            "verdict:N",
            scale=alt.Scale(domain=["better", "worse", "no clear difference"], range=["#0a7d28", "#b00020", "#777777"]),
        )
        y = alt.Y("comparison:N", sort=None, title=None, axis=alt.Axis(labelLimit=360))
        base = alt.Chart(forest)
        chart = alt.layer(
            base.mark_rule(strokeWidth=2).encode(
                x=alt.X("lo:Q", title="Δ (95% interval)", axis=alt.Axis(format="+.3f")), x2="hi:Q", y=y, color=color
            ),
            base.mark_point(filled=True, size=70).encode(
                x="delta:Q", y=y, color=color, tooltip=["comparison", "delta", "lo", "hi"]
            ),
            base.mark_rule(strokeDash=[4, 4], color="#444").encode(x=alt.datum(0)),
        )
        st.altair_chart(chart.properties(height=max(90, 30 * len(forest))), key="forest")

    points = q_sweep(url, run.id)
    st.subheader("Sweep / learning curve")
    if not points:
        st.caption("No hyper-parameter varies between trials of this run (no sweep).")
        return
    params = sorted({p.param for p in points})
    cols = st.columns(2)
    param = cols[0].selectbox("Hyper-parameter", params, key="sweep_param")
    series = sorted({(p.suite, p.metric) for p in points if p.param == param})
    labels = [f"{s} · {m}" for s, m in series]
    primary = [f"{s.name} · {s.primary}" for s in suites]
    shown = cols[1].multiselect(
        "Metrics", labels, default=[lab for lab in labels if lab in primary] or labels[:1], key="sweep_metrics"
    )
    data = pd.DataFrame(
        [
            {
                "x": p.x,
                "value": p.y,
                "lo": p.y - 1.96 * p.stderr,
                "hi": p.y + 1.96 * p.stderr,
                "series": f"{p.suite} · {p.metric}",
                "trial": p.trial,
            }
            for p in points
            if p.param == param and f"{p.suite} · {p.metric}" in shown
        ]
    )
    if data.empty:
        return
    integer = all(float(v).is_integer() for v in data["x"])
    x = alt.X(
        "x:Q",
        title=param,
        scale=alt.Scale(type="log") if param == "lr" else alt.Scale(zero=False),
        axis=alt.Axis(tickMinStep=1, format="d") if integer else alt.Axis(),
    )
    base = alt.Chart(data)
    chart = base.mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="metric"), color="series:N", tooltip=["trial", "x", "value"]
    ) + base.mark_rule().encode(x=x, y="lo:Q", y2="hi:Q", color="series:N")
    st.altair_chart(chart, key="sweep_chart")
