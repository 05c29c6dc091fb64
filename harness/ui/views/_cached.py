"""The app's queries: the views' functions cached per store URL and ids (`st.cache_data`), so a page that reruns
on every widget change reads the store once a minute at most. The store itself is opened once per URL."""

from __future__ import annotations

import streamlit as st

from harness.store._store import Store
from harness.ui.views._compare import (
    ArmSummary,
    ComparisonRow,
    CurvePoint,
    SweepPoint,
    arm_summaries,
    comparisons,
    sweep_points,
    train_curves,
)
from harness.ui.views._gate import DecisionView, PromotionView, gate_decisions, promotion_history
from harness.ui.views._items import ItemPage, item_page
from harness.ui.views._runs import (
    MetricRow,
    RunRow,
    SuiteInfo,
    TrialRow,
    list_runs,
    metric_table,
    run_suites,
    run_trials,
)
from harness.ui.views._safety import SafetyRow, safety_rates

CACHE_TTL_S = 60  # a running run keeps changing; finished ones are read once a minute at most


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    return Store(url)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_runs(url: str) -> list[RunRow]:
    return list_runs(open_store(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_trials(url: str, run_id: int) -> list[TrialRow]:
    return run_trials(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_suites(url: str, run_id: int) -> list[SuiteInfo]:
    return run_suites(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_summaries(url: str, run_id: int) -> list[ArmSummary]:
    return arm_summaries(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Comparing arms (paired bootstrap)…")
def q_comparisons(
    url: str, run_id: int, baseline: str, arms: tuple[str, ...], metrics: tuple[tuple[str, str], ...] | None
) -> list[ComparisonRow]:
    return comparisons(open_store(url), run_id, baseline, list(arms), metrics)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_sweep(url: str, run_id: int) -> list[SweepPoint]:
    return sweep_points(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_curves(url: str, run_id: int) -> list[CurvePoint]:
    return train_curves(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_metrics(url: str, run_id: int) -> list[MetricRow]:
    return metric_table(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=256)
def q_items(
    url: str,
    run_id: int,
    suite: str,
    arms: tuple[str, ...],
    baseline: str | None,
    metric: str | None,
    flip: str,
    search: str,
    page: int,
    page_size: int,
) -> ItemPage:
    return item_page(
        open_store(url),
        run_id,
        suite,
        list(arms),
        baseline=baseline,
        metric=metric,
        flip=flip,
        search=search,
        page=page,
        page_size=page_size,
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_safety(url: str, run_id: int, baseline: str | None) -> list[SafetyRow]:
    return safety_rates(open_store(url), run_id, baseline)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_decisions(url: str, run_id: int | None) -> list[DecisionView]:
    return gate_decisions(open_store(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def q_promotions(url: str) -> list[PromotionView]:
    return promotion_history(open_store(url))
