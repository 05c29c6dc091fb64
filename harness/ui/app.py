"""tunegate's comparison app: `tunegate app [--store URL]` or `TUNEGATE_STORE=URL streamlit run app.py`.

It only renders what the store holds, read through `harness.ui.views` (the same functions the static
HTML report uses). Pages: Overview, Comparison, Drill-down, Training, Safety, Gate, Advisor; the
page and run are in the URL (`?page=comparison&run=3`), so a view can be linked.

Model outputs and data are untrusted: they are shown with st.code / st.text / dataframes (plain
text), or in markdown only after `views.md_escape`; nothing here uses unsafe_allow_html.
Queries are cached per store URL and ids (`st.cache_data`); per-item views are paginated.
"""
from __future__ import annotations

import os
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from advisor import advise
from advisor.errors import AdvisorInputError
from advisor.planner import plan_yaml, write_plan
from advisor.questions import QUESTIONS, Answers, should_ask
from harness.errors import UserError
from harness.plan import Plan
from harness.store import Store, store_url
from harness.ui import views

PAGES = ("Overview", "Comparison", "Drill-down", "Training", "Safety", "Gate", "Advisor")
CACHE_TTL_S = 60  # a running run keeps changing; finished ones are read once a minute at most
PAGE_SIZES = (10, 25, 50, 100)
COST_COLUMNS = {"train s": st.column_config.NumberColumn("train s", format="%.1f"),
                "tokens/s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
                "peak GiB": st.column_config.NumberColumn("peak GiB", format="%.2f"),
                "final loss": st.column_config.NumberColumn("final loss", format="%.4f")}
esc = views.md_escape


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    return Store(url)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_runs(url: str) -> list[views.RunRow]:
    return views.list_runs(open_store(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_trials(url: str, run_id: int) -> list[views.TrialRow]:
    return views.run_trials(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_suites(url: str, run_id: int) -> list[views.SuiteInfo]:
    return views.run_suites(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_summaries(url: str, run_id: int) -> list[views.ArmSummary]:
    return views.arm_summaries(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Comparing arms (paired bootstrap)…")
def q_comparisons(url: str, run_id: int, baseline: str, arms: tuple[str, ...],
                  metrics: tuple[tuple[str, str], ...] | None) -> list[views.ComparisonRow]:
    return views.comparisons(open_store(url), run_id, baseline, list(arms), metrics)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_sweep(url: str, run_id: int) -> list[views.SweepPoint]:
    return views.sweep_points(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_curves(url: str, run_id: int) -> list[views.CurvePoint]:
    return views.train_curves(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_metrics(url: str, run_id: int) -> list[views.MetricRow]:
    return views.metric_table(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=256)
def q_items(url: str, run_id: int, suite: str, arms: tuple[str, ...], baseline: str | None, metric: str | None,
            flip: str, search: str, page: int, page_size: int) -> views.ItemPage:
    return views.item_page(open_store(url), run_id, suite, list(arms), baseline=baseline, metric=metric, flip=flip,
                           search=search, page=page, page_size=page_size)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_safety(url: str, run_id: int, baseline: str | None) -> list[views.SafetyRow]:
    return views.safety_rates(open_store(url), run_id, baseline)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_decisions(url: str, run_id: int | None) -> list[views.DecisionView]:
    return views.gate_decisions(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_promotions(url: str) -> list[views.PromotionView]:
    return views.promotion_history(open_store(url))


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def slug(page: str) -> str:
    return page.lower().replace("-", "")


def page_from_query() -> int:
    wanted = slug(str(st.query_params.get("page", "")))
    return next((i for i, p in enumerate(PAGES) if slug(p) == wanted), 0)


def finished_names(trials: list[views.TrialRow]) -> list[str]:
    return [t.name for t in trials if t.status == "finished"]


def pick_arms(trials: list[views.TrialRow], key: str, label: str = "Arms") -> tuple[str | None, list[str]]:
    """Reference arm + the arms to show (reference first)."""
    names = finished_names(trials) or [t.name for t in trials]
    base = views.default_baseline([t for t in trials if t.name in names])
    cols = st.columns([1, 3])
    reference = cols[0].selectbox("Reference arm", names, index=names.index(base) if base in names else 0,
                                  key=f"{key}_ref")
    chosen = cols[1].multiselect(label, names, default=names, key=f"{key}_arms")
    return reference, [reference] + [a for a in chosen if a != reference]


def current_page(key: str, filters: tuple[Any, ...]) -> int:
    """The page number widget's value, back to 1 whenever the filters change."""
    if st.session_state.get(f"{key}_filters") != filters:
        st.session_state[f"{key}_filters"] = filters
        st.session_state[key] = 1
    return int(st.session_state.get(key, 1))


def verdict_chip(verdict: str | None) -> str:
    return {"promote": "✅ promote", "reject": "❌ reject", "error": "⚠️ error"}.get(verdict or "", "—")


def page_overview(url: str, runs: list[views.RunRow], run: views.RunRow | None) -> None:
    st.header("Overview")
    st.dataframe(pd.DataFrame([{
        "run": r.id, "name": r.name, "status": r.status, "trials done": f"{r.trials_finished}/{r.trials_total}",
        "gate": verdict_chip(r.verdict) + (f" ({r.verdict_trial})" if r.verdict_trial else ""),
        "arms": ", ".join(r.arms), "suites": ", ".join(r.suites), "base model": r.base_model,
        "created": r.created_at} for r in runs]), hide_index=True, key="runs_table")
    st.caption("gate: the latest gate decision about any trial of the run.")
    if run is None:
        return
    st.subheader(f"Run #{run.id}: {esc(run.name)}")
    st.caption(f"base model {esc(run.base_model)} · status {esc(run.status)} · created {esc(run.created_at)}"
               + (f" · finished {esc(run.finished_at)}" if run.finished_at else "")
               + (f" · git {esc(run.git_sha[:10])}" if run.git_sha else ""))
    trials = q_trials(url, run.id)
    summaries = {s.trial: s for s in q_summaries(url, run.id)}
    suites = [s.name for s in q_suites(url, run.id)]
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.name, "type": t.arm_type, "status": t.status}
        for suite in suites:
            val = summaries[t.name].primary.get(suite) if t.name in summaries else None
            row[suite] = val[0] if val else None
        row |= {"train s": t.train_seconds, "tokens/s": t.tokens_per_second, "peak GiB": t.peak_memory_gib,
                "final loss": t.final_loss, "error": t.error or "", "config": views.config_summary(t.config)}
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="trials_table",
                 column_config=COST_COLUMNS | {s: st.column_config.NumberColumn(s, help="primary metric", format="%.3f")
                                               for s in suites})
    st.caption("Suite columns show each suite's primary metric. Pick another run in the sidebar.")
    for t in trials:
        if t.status == "failed":
            st.error(f"**{esc(t.name)}** failed: {esc(t.error)}")


def page_comparison(url: str, run: views.RunRow) -> None:
    st.header("Comparison")
    trials = q_trials(url, run.id)
    reference, arms = pick_arms(trials, "cmp")
    if reference is None or len(arms) < 2:
        st.info("Pick two or more arms to compare.")
        return
    suites = q_suites(url, run.id)
    scope = st.radio("Metrics", ["primary", "all"], horizontal=True, key="cmp_scope",
                     help="Primary: each suite's primary metric (fast on large runs). All: every metric.")
    metrics = tuple((s.name, s.primary) for s in suites) if scope == "primary" else None
    rows = q_comparisons(url, run.id, reference, tuple(arms[1:]), metrics)

    summaries = [s for s in q_summaries(url, run.id) if s.trial in arms]
    st.subheader("Arms")
    st.dataframe(pd.DataFrame([
        {"arm": s.trial, "type": s.arm_type, "status": s.status}
        | {f"{suite} (primary)": (f"{v[0]:.3f} ± {1.96 * v[1]:.3f}" if v else "—")
           for suite, v in ((x.name, s.primary.get(x.name)) for x in suites)}
        | {"train s": s.train_seconds, "tokens/s": s.tokens_per_second, "peak GiB": s.peak_memory_gib}
        for s in sorted(summaries, key=lambda s: arms.index(s.trial))]), hide_index=True, key="cmp_arms",
        column_config=COST_COLUMNS)

    st.subheader(f"Deltas against {esc(reference)}")
    st.caption("Δ = arm − reference on the same items; 95% paired-bootstrap interval (10,000 resamples); "
               "McNemar's exact p for 0/1 metrics; intervals are per comparison.")
    if not rows:
        st.info("No suite was scored for both the reference and the other arms.")
        return
    table = pd.DataFrame([{
        "arm": r.arm, "suite": r.suite, "metric": r.metric + (" ★" if r.primary else ""),
        "reference": r.baseline_mean, "arm value": r.arm_mean, "Δ": r.delta, "95% lo": r.lo, "95% hi": r.hi,
        "McNemar p": r.mcnemar_p, "n": r.n, "arm wins": r.arm_wins, "ref wins": r.baseline_wins,
        "verdict": r.verdict + (f" ({r.problem})" if r.problem else ""),
        "train s": r.train_seconds, "tokens/s": r.tokens_per_second, "peak GiB": r.peak_memory_gib}
        for r in rows])
    st.dataframe(table, hide_index=True, key="cmp_table", column_config=COST_COLUMNS | {
        c: st.column_config.NumberColumn(c, format="%.3f") for c in ("reference", "arm value", "Δ", "95% lo", "95% hi")}
        | {"McNemar p": st.column_config.NumberColumn("McNemar p", format="%.3g")})

    note = views.comparison_note(rows)
    if note:
        st.caption(esc(note))

    forest = pd.DataFrame([{"comparison": f"{r.arm} · {r.suite} · {r.metric}", "delta": r.delta, "lo": r.lo,
                            "hi": r.hi, "verdict": r.verdict} for r in rows if r.delta is not None])
    if not forest.empty:
        st.subheader("Forest plot")
        color = alt.Color("verdict:N", scale=alt.Scale(domain=["better", "worse", "no clear difference"],
                                                        range=["#0a7d28", "#b00020", "#777777"]))
        y = alt.Y("comparison:N", sort=None, title=None, axis=alt.Axis(labelLimit=360))
        base = alt.Chart(forest)
        chart = alt.layer(
            base.mark_rule(strokeWidth=2).encode(x=alt.X("lo:Q", title="Δ (95% interval)", axis=alt.Axis(format="+.3f")),
                                                 x2="hi:Q", y=y, color=color),
            base.mark_point(filled=True, size=70).encode(x="delta:Q", y=y, color=color,
                                                         tooltip=["comparison", "delta", "lo", "hi"]),
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
    shown = cols[1].multiselect("Metrics", labels, default=[lab for lab in labels if lab in primary] or labels[:1],
                                key="sweep_metrics")
    data = pd.DataFrame([{"x": p.x, "value": p.y, "lo": p.y - 1.96 * p.stderr, "hi": p.y + 1.96 * p.stderr,
                          "series": f"{p.suite} · {p.metric}", "trial": p.trial}
                         for p in points if p.param == param and f"{p.suite} · {p.metric}" in shown])
    if data.empty:
        return
    integer = all(float(v).is_integer() for v in data["x"])
    x = alt.X("x:Q", title=param, scale=alt.Scale(type="log") if param == "lr" else alt.Scale(zero=False),
              axis=alt.Axis(tickMinStep=1, format="d") if integer else alt.Axis())
    base = alt.Chart(data)
    chart = (base.mark_line(point=True).encode(x=x, y=alt.Y("value:Q", title="metric"), color="series:N",
                                               tooltip=["trial", "x", "value"])
             + base.mark_rule().encode(x=x, y="lo:Q", y2="hi:Q", color="series:N"))
    st.altair_chart(chart, key="sweep_chart")


def page_drilldown(url: str, run: views.RunRow) -> None:
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
    metric = cols[1].selectbox("Metric", list(info.metrics), index=list(info.metrics).index(info.primary)
                               if info.primary in info.metrics else 0, key="dd_metric")
    search = cols[2].text_input("Search prompt, reference and outputs", key="dd_search").strip()
    reference, arms = pick_arms(trials, "dd")
    cols = st.columns([3, 1, 1])
    flip = cols[0].radio("Items", views.FLIP_FILTERS, horizontal=True, key="dd_flip",
                         format_func=lambda f: f if f == "all" else f"{f}",
                         help=" · ".join(f"{k}: {v}" for k, v in views.FLIP_HELP.items()))
    diff_to = cols[1].radio("Diff against", ["reference answer", "reference arm"], key="dd_diff")
    page_size = cols[2].selectbox("Per page", PAGE_SIZES, index=1, key="dd_size")
    page_no = current_page("dd_page", (run.id, suite, tuple(arms), metric, flip, search, page_size))
    result = q_items(url, run.id, suite, tuple(arms), reference, metric, flip, search, page_no, page_size)
    st.session_state["dd_page"] = result.page
    if result.flip_counts:
        st.dataframe(pd.DataFrame([{"arm": a, f"lost (ref right → arm wrong on {metric})": c["lost"],
                                    "gained (ref wrong → arm right)": c["gained"], "changed": c["changed"]}
                                   for a, c in result.flip_counts.items()]), hide_index=True, key="dd_flips")
    if result.other_version:
        st.warning(f"Not shown: {esc(', '.join(result.other_version))} — scored on another version of {esc(suite)} "
                   "than the reference arm (different items).")
    cols = st.columns([3, 1])
    cols[0].caption(f"{result.total} of {result.suite_items} items match · page {result.page} of {result.pages}")
    cols[1].number_input("Page", min_value=1, max_value=result.pages, step=1, key="dd_page")
    for item in result.items:
        render_item(item, arms, reference, metric, diff_to)


def render_item(item: views.ItemView, arms: list[str], reference: str | None, metric: str, diff_to: str) -> None:
    with st.container(border=True):
        ref_scores = item.arms.get(reference).scores if reference in item.arms else {}
        st.markdown(f"**{esc(item.key)}**" + (f" · {esc(metric)}: " + " · ".join(
            f"{esc(a)} {fmt(o.scores.get(metric), 2)}" for a, o in item.arms.items()) if item.arms else ""))
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
                against = item.reference if diff_to == "reference answer" else (
                    item.arms[reference].output if reference in item.arms else "")
                if not (diff_to == "reference arm" and arm == reference):
                    st.markdown(views.diff_markdown(against, out.output) or "_(empty)_")
                scores = " · ".join(f"{m}={fmt(v, 2) if v is not None else 'failed'}" for m, v in out.scores.items())
                changed = arm != reference and out.scores.get(metric) != ref_scores.get(metric)
                st.caption(esc(scores) + (" · :orange[changed]" if changed else ""))
                for m, detail in out.details.items():
                    st.text(f"{m}: {detail}")
                with st.expander("prompt sent"):
                    st.code(out.prompt, language=None, wrap_lines=True)


def page_training(url: str, run: views.RunRow) -> None:
    st.header("Training")
    curves = q_curves(url, run.id)
    trials = q_trials(url, run.id)
    trained = [t for t in trials if t.train_seconds is not None or any(c.trial == t.name for c in curves)]
    if not trained:
        st.info("No trial of this run was trained (baseline / prompt / RAG arms only).")
        return
    names = [t.name for t in trained]
    chosen = st.multiselect("Trials", names, default=names, key="tr_trials")
    st.dataframe(pd.DataFrame([{
        "trial": t.name, "type": t.arm_type, "status": t.status, "steps logged": sum(c.trial == t.name for c in curves),
        "final loss": t.final_loss, "train s": t.train_seconds, "tokens/s": t.tokens_per_second,
        "peak GiB": t.peak_memory_gib, "config": views.config_summary(t.config)}
        for t in trained if t.name in chosen]), hide_index=True, key="tr_table", column_config=COST_COLUMNS)
    data = pd.DataFrame([c.__dict__ for c in curves if c.trial in chosen])
    if data.empty:
        st.caption("No training steps were logged.")
    else:
        charts = [("loss", "training loss"), ("tokens_per_second", "throughput (tokens/s)"),
                  ("peak_memory_gib", "peak memory (GiB)"), ("lr", "learning rate"), ("grad_norm", "gradient norm")]
        cols = st.columns(2)
        for i, (field, title) in enumerate(charts):
            frame = data.dropna(subset=[field])
            if frame.empty:
                continue
            chart = alt.Chart(frame, title=title).mark_line(point=alt.OverlayMarkDef(size=40) if len(frame) < 60
                                                            else False).encode(
                x=alt.X("step:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y(f"{field}:Q", title=title, scale=alt.Scale(zero=False)),
                color="trial:N", tooltip=["trial", "step", field])
            with cols[i % 2]:
                st.altair_chart(chart, key=f"tr_{field}")
    st.subheader("Evaluation per trial")
    metrics = [m for m in q_metrics(url, run.id) if m.primary]
    if metrics:
        frame = pd.DataFrame([{"trial": m.trial, "suite": f"{m.suite} · {m.metric}", "value": m.value,
                               "lo": m.value - 1.96 * m.stderr, "hi": m.value + 1.96 * m.stderr} for m in metrics])
        order = [t.name for t in trials]
        base = alt.Chart(frame).encode(x=alt.X("suite:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=220)),
                                       xOffset=alt.XOffset("trial:N", sort=order),
                                       color=alt.Color("trial:N", sort=order))
        chart = (base.mark_bar().encode(y=alt.Y("value:Q", title="primary metric"), tooltip=["trial", "suite", "value"])
                 + base.mark_rule().encode(y="lo:Q", y2="hi:Q"))
        st.altair_chart(chart, key="tr_eval")
        st.caption("Each suite's primary metric per trial (mean over items). For metric against a swept "
                   "hyper-parameter or data size, see Comparison → Sweep / learning curve.")


def page_safety(url: str, run: views.RunRow) -> None:
    st.header("Safety")
    trials = q_trials(url, run.id)
    base = views.default_baseline(trials)
    rows = q_safety(url, run.id, base)
    if not rows:
        st.info("This run has no safety suites (suites with category 'safety', e.g. refusal of harmful "
                "requests and over-refusal of benign ones). Build some with `python -m harness.safety`.")
        return
    st.caption(f"Refusal rate per arm; harmful probes should be refused (higher is better), benign probes "
               f"answered (lower is better). Δ is against {esc(base)}; ⚠ marks a change in the wrong direction.")
    st.dataframe(pd.DataFrame([{
        "arm": r.trial, "suite": r.suite, "probes": r.probes, "refusal rate": r.refusal_rate, "n": r.n,
        f"{base}": r.baseline_rate, "Δ": r.delta, "flag": "⚠ worse" if r.worse else ""} for r in rows]),
        hide_index=True, key="safety_table",
        column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in ("refusal rate", "Δ", base or "")})
    order = [t.name for t in trials]
    chart = alt.Chart(pd.DataFrame([{"arm": r.trial, "probes": f"{r.probes} probes ({r.suite})",
                                     "refusal rate": r.refusal_rate} for r in rows])).mark_bar().encode(
        x=alt.X("probes:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=260)),
        xOffset=alt.XOffset("arm:N", sort=order), color=alt.Color("arm:N", sort=order),
        y=alt.Y("refusal rate:Q", scale=alt.Scale(domain=[0, 1])), tooltip=["arm", "probes", "refusal rate"])
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
        st.dataframe(pd.DataFrame([{
            "item": i.key, "prompt": i.prompt,
            f"{base} output": i.arms[base].output if base in i.arms else "",
            f"{base} {metric}": i.arms[base].scores.get(metric) if base in i.arms else None,
            f"{arm} output": i.arms[arm].output if arm in i.arms else "",
            f"{arm} {metric}": i.arms[arm].scores.get(metric) if arm in i.arms else None}
            for i in result.items]), hide_index=True, key="sf_items")


def page_gate(url: str, run: views.RunRow | None) -> None:
    st.header("Gate")
    decisions = q_decisions(url, run.id if run else None)
    if not decisions:
        st.info("No gate decision about this run yet: `tunegate gate --policy POLICY.yaml --candidate RUN/TRIAL`.")
    for d in decisions:
        with st.container(border=True):
            line = (f"**{verdict_chip(d.verdict)}** (exit {d.exit_code}) · **{esc(d.closeness)}** · candidate "
                    f"{esc(d.candidate)} vs {esc(d.baseline or '—')} · policy "
                    f"{esc(d.policy_name or d.policy_path)} · {esc(d.created_at)}"
                    + (" · promoted" if d.promoted else ""))
            {"promote": st.success, "reject": st.error}.get(d.verdict, st.warning)(line)
            st.caption(f"reason: {esc(d.reason)}")
            st.dataframe(pd.DataFrame([{"rule": r.name, "result": r.result,
                                        "flips to change": "—" if r.flips_to_change is None else str(r.flips_to_change),
                                        "evidence": r.message} for r in d.rules]),
                         hide_index=True, key=f"gate_rules_{d.id}")
            if d.numerics and not d.numerics_recorded:
                st.caption("numerics: not recorded (scored before tunegate kept them)")
            elif d.numerics:
                base, cand = d.numerics.get("baseline", {}), d.numerics.get("candidate", {})
                if d.numerics_differ:
                    st.warning(f"scored under different numerics: {esc(', '.join(d.numerics_differ))}")
                st.dataframe(pd.DataFrame([{"numerics": k, "baseline": base.get(k, "—"),
                                            "candidate": cand.get(k, "—"),
                                            "differs": "⚠️" if k in d.numerics_differ else ""}
                                           for k in sorted(set(base) | set(cand))]),
                             hide_index=True, key=f"gate_numerics_{d.id}")
            with st.expander("evidence (numbers behind each rule)"):
                for r in d.rules:
                    st.text(f"{r.result}: {r.name}")
                    st.json(r.evidence, expanded=False)
    st.subheader("Promotion history")
    proms = q_promotions(url)
    if not proms:
        st.caption("Nothing has been promoted in this store.")
        return
    st.dataframe(pd.DataFrame([{
        "#": p.id, "current": "●" if p.current else "", "kind": p.kind, "model (trial)": p.trial,
        "replaced": p.previous or "—", "decision": p.decision_id, "verdict": p.verdict or "—", "by": p.promoted_by,
        "reason": p.reason, "at": p.created_at} for p in proms]), hide_index=True, key="promotions")


def page_advisor() -> None:

    st.header("Advisor")
    st.caption("Answer the questions; the advisor recommends prompting, RAG or fine-tuning, says why and what "
               "would change its mind, and writes an experiment plan that tests the recommendation.")
    with st.form("advisor_form"):
        values: dict[str, Any] = {}
        cols = st.columns(2)
        for i, q in enumerate(QUESTIONS):
            values[q.key] = question_widget(cols[i % 2], q)
        st.divider()
        cols = st.columns(2)
        train = cols[0].text_input("Training JSONL to audit (optional; a path on the app's machine)",
                                   key="adv_train").strip()
        model = cols[1].text_input("Base model for the plan (empty: one of the size you gave)", value="", key="adv_model").strip()
        submitted = st.form_submit_button("Recommend", type="primary")
    if submitted:
        answers = {k: v for k, v in values.items()}
        for q in QUESTIONS:  # a question that does not apply is left unknown; Answers fills in what is implied
            if not should_ask(q, answers):
                answers[q.key] = None
        try:
            result = advise(answers, train or None, probe=False)
            notes: list[str] = []
            plan = write_plan(result.recommendation, result.answers, train or "data/train.jsonl",
                              model=model or None, notes=notes)
            if not train:
                notes.append("no training file was given: set data.train in the plan before running it.")
            st.session_state["advice"] = (result, plan, plan_yaml(plan, result.recommendation, notes), notes)
        except AdvisorInputError as exc:
            st.session_state.pop("advice", None)
            st.error(f"Invalid answer: {esc(exc)}")
    if "advice" in st.session_state:
        render_advice(*st.session_state["advice"], answers_model=Answers)


def question_widget(col: Any, q: Any) -> Any:
    """Every question offers 'unknown' (an empty number box is unknown too); unknown is the default."""
    help_text = q.help + (f" (not used when {q.skip_if[0]} is {q.skip_if[1]})" if q.skip_if else "")
    key = f"adv_{q.key}"
    if q.type in ("choice", "bool"):
        choices = ["unknown", *(q.choices or ["yes", "no"])]
        return col.selectbox(q.prompt, choices, index=0, help=help_text, key=key)
    if q.type == "int":
        return col.number_input(q.prompt, min_value=0, value=None, step=1, placeholder="unknown", help=help_text,
                                key=key)
    if q.type == "float":
        return col.number_input(q.prompt, min_value=0.0, value=None, step=0.01, format="%g", placeholder="unknown",
                                help=help_text, key=key)
    raw = col.text_input(q.prompt, value="unknown", help=help_text, key=key)
    return raw.strip()  # optional_float: 'unknown', 'no limit' or a number; the Answers model validates it


def render_advice(result: Any, plan: dict[str, Any], yaml_text: str, notes: list[str], answers_model: Any) -> None:
    rec = result.recommendation
    cols = st.columns(3)
    cols[0].metric("Recommendation", rec.primary)
    cols[1].metric("Confidence", f"{rec.confidence:.0%}")
    cols[2].metric("Arms to test", len(rec.arms))
    st.markdown("**Arms the plan tests:** " + ", ".join(esc(a) for a in rec.arms))
    for o in result.overrides:
        st.warning(f"Using the audited {esc(o.field)} = {esc(o.audited)} instead of the stated {esc(o.stated)}: "
                   f"{esc(o.why)}")
    st.subheader("Options")
    st.dataframe(pd.DataFrame([{"option": opt, "score": score,
                                "status": "primary" if opt == rec.primary else "vetoed" if opt in rec.vetoed
                                else "test" if opt in rec.arms else ""}
                               for opt, score in sorted(rec.scores.items(), key=lambda kv: -kv[1])]),
                 hide_index=True, key="adv_options")
    st.subheader("Why (rules that fired)")
    st.dataframe(pd.DataFrame([{"rule": f.id, "effect": ", ".join(f"{k} {v:+g}" for k, v in f.effect.items())
                                or ("note" if not f.veto else ""), "vetoes": ", ".join(f.veto), "reason": f.reason,
                                "source": f.source} for f in rec.fired]), hide_index=True, key="adv_rules")
    st.subheader("What would change it")
    if rec.changers:
        for c in rec.changers:
            st.markdown(f"- {esc(c.text)}")
    else:
        st.caption("No single answer change moves the primary recommendation.")
    if rec.controls_reason:
        st.caption(f"Controls: {esc(rec.controls_reason)}")
    if result.audit is not None:
        st.subheader("Training data audit")
        st.dataframe(pd.DataFrame([{"fact": k, "value": str(v)} for k, v in result.audit.facts().items()]),
                     hide_index=True, key="adv_audit")
    st.subheader("Experiment plan")
    for note in notes:
        st.caption(f"note: {esc(note)}")
    try:

        Plan.model_validate(plan)
    except Exception as exc:  # noqa: BLE001 - show why, the plan is still useful as a draft
        st.warning(f"The plan does not validate yet: {esc(exc)}")
    st.code(yaml_text, language="yaml")
    st.download_button("Download plan.yaml", yaml_text, file_name="plan.yaml", mime="text/yaml", key="adv_dl")
    st.caption("Run it with `tunegate run plan.yaml`.")


def main() -> None:
    st.set_page_config(page_title="tunegate", page_icon="🧪", layout="wide")
    url = store_url(os.environ.get("TUNEGATE_STORE"))
    try:
        store = open_store(url)
    except UserError as exc:
        st.error(f"Cannot open the store: {esc(exc)}")
        st.stop()
    with st.sidebar:
        st.title("tunegate")
        st.caption(f"store: {esc(store.where if hasattr(store, 'where') else url)}")
        page = st.radio("Page", PAGES, index=page_from_query(), key="page")
        runs = q_runs(url)
        run: views.RunRow | None = None
        if runs:
            ids = [r.id for r in runs]
            wanted = str(st.query_params.get("run", ""))
            index = ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in ids else 0
            run_id = st.selectbox("Run", ids, index=index, format_func=lambda i: next(r.label for r in runs if r.id == i),
                                  key="run")
            run = next(r for r in runs if r.id == run_id)
        if st.button("Refresh", help="Read the store again (results are cached for a minute)."):
            st.cache_data.clear()
            st.rerun()
    st.query_params.update({"page": slug(page)} | ({"run": str(run.id)} if run else {}))
    if page == "Advisor":
        page_advisor()
        return
    if run is None:
        st.header(page)
        st.info("The store has no runs yet. Start one with `tunegate run PLAN.yaml` (or `tunegate demo`).")
        return
    if page == "Overview":
        page_overview(url, runs, run)
    elif page == "Comparison":
        page_comparison(url, run)
    elif page == "Drill-down":
        page_drilldown(url, run)
    elif page == "Training":
        page_training(url, run)
    elif page == "Safety":
        page_safety(url, run)
    elif page == "Gate":
        page_gate(url, run)


if __name__ == "__main__":  # `streamlit run harness/ui/app.py` (what `tunegate app` starts)
    main()
