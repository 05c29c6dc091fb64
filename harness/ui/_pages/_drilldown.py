"""The Drill-down page: item by item outputs of the chosen arms, filtered by flips and searched, with diffs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from harness.ui._pages._common import PAGE_SIZES, current_page, esc, fmt, pick_arms
from harness.ui.views._cached import q_items, q_suites, q_trials
from harness.ui.views._items import FLIP_FILTERS, FLIP_HELP, ItemView, diff_markdown
from harness.ui.views._runs import RunRow


def page_drilldown(url: str, run: RunRow) -> None:
    st.header("Drill-down")
    suites = q_suites(url, run.id)
    if not suites:
        st.info("No evaluations in this run yet.")
        return
    trials = q_trials(url, run.id)
    cols = st.columns([1, 1, 2])
    suite_names = [s.name for s in suites]
    suite = cols[0].selectbox("Suite", suite_names, key="dd_suite")
    info = next(s for s in suites if s.name == suite)
    metric = cols[1].selectbox(
        "Metric",
        list(info.metrics),
        index=list(info.metrics).index(info.primary) if info.primary in info.metrics else 0,
        key="dd_metric",
    )
    search = cols[2].text_input("Search prompt, reference and outputs", key="dd_search").strip()
    reference, arms = pick_arms(trials, "dd")
    cols = st.columns([3, 1, 1])
    flip = cols[0].radio(
        "Items",
        FLIP_FILTERS,
        horizontal=True,
        key="dd_flip",
        format_func=lambda f: f if f == "all" else f"{f}",
        help=" · ".join(f"{k}: {v}" for k, v in FLIP_HELP.items()),
    )
    diff_to = cols[1].radio("Diff against", ["reference answer", "reference arm"], key="dd_diff")
    page_size = cols[2].selectbox("Per page", PAGE_SIZES, index=1, key="dd_size")
    page_no = current_page("dd_page", (run.id, suite, tuple(arms), metric, flip, search, page_size))
    result = q_items(url, run.id, suite, tuple(arms), reference, metric, flip, search, page_no, page_size)
    st.session_state["dd_page"] = result.page
    if result.flip_counts:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "arm": a,
                        f"lost (ref right → arm wrong on {metric})": c["lost"],
                        "gained (ref wrong → arm right)": c["gained"],
                        "changed": c["changed"],
                    }
                    for a, c in result.flip_counts.items()
                ]
            ),
            hide_index=True,
            key="dd_flips",
        )
    if result.other_version:
        st.warning(
            f"Not shown: {esc(', '.join(result.other_version))} — scored on another version of {esc(suite)} "
            "than the reference arm (different items)."
        )
    cols = st.columns([3, 1])
    cols[0].caption(f"{result.total} of {result.suite_items} items match · page {result.page} of {result.pages}")
    cols[1].number_input("Page", min_value=1, max_value=result.pages, step=1, key="dd_page")
    for item in result.items:
        render_item(item, arms, reference, metric, diff_to)


def render_item(item: ItemView, arms: list[str], reference: str | None, metric: str, diff_to: str) -> None:
    with st.container(border=True):
        ref_scores = item.arms.get(reference).scores if reference in item.arms else {}
        st.markdown(
            f"**{esc(item.key)}**"
            + (
                f" · {esc(metric)}: "
                + " · ".join(f"{esc(a)} {fmt(o.scores.get(metric), 2)}" for a, o in item.arms.items())
                if item.arms
                else ""
            )
        )
        cols = st.columns(1 + len(arms))
        with cols[0]:
            st.caption("prompt")
            st.code(item.prompt, language=None, wrap_lines=True)
            st.caption("reference")
            st.code(item.reference or "—", language=None, wrap_lines=True)
        for col, arm in zip(cols[1:], arms):
            with col:
                out = item.arms.get(arm)
                st.caption(f"{esc(arm)}")
                if out is None:
                    st.text("no output")
                    continue
                st.code(out.output, language=None, wrap_lines=True)
                against = (
                    item.reference
                    if diff_to == "reference answer"
                    else (item.arms[reference].output if reference in item.arms else "")
                )
                if not (diff_to == "reference arm" and arm == reference):
                    st.markdown(diff_markdown(against, out.output) or "_(empty)_")
                scores = " · ".join(f"{m}={fmt(v, 2) if v is not None else 'failed'}" for m, v in out.scores.items())
                changed = arm != reference and out.scores.get(metric) != ref_scores.get(metric)
                st.caption(esc(scores) + (" · :orange[changed]" if changed else ""))
                for m, detail in out.details.items():
                    st.text(f"{m}: {detail}")
                with st.expander("prompt sent"):
                    st.code(out.prompt, language=None, wrap_lines=True)
