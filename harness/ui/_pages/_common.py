"""What the app's pages share: the cost columns, arm pickers, pagination and formatting helpers."""

from __future__ import annotations

from typing import Any

import streamlit as st

from harness.ui.views._items import md_escape
from harness.ui.views._runs import TrialRow, default_baseline

PAGE_SIZES = (10, 25, 50, 100)
COST_COLUMNS = {
    "train s": st.column_config.NumberColumn("train s", format="%.1f"),
    "tokens/s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
    "peak GiB": st.column_config.NumberColumn("peak GiB", format="%.2f"),
    "final loss": st.column_config.NumberColumn("final loss", format="%.4f"),
}
esc = md_escape


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def finished_names(trials: list[TrialRow]) -> list[str]:
    return [t.name for t in trials if t.status == "finished"]


def pick_arms(trials: list[TrialRow], key: str, label: str = "Arms") -> tuple[str | None, list[str]]:
    """Reference arm + the arms to show (reference first)."""
    names = finished_names(trials) or [t.name for t in trials]
    base = default_baseline([t for t in trials if t.name in names])
    cols = st.columns([1, 3])
    reference = cols[0].selectbox(
        "Reference arm", names, index=names.index(base) if base in names else 0, key=f"{key}_ref"
    )
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
