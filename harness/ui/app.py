"""tunegate's comparison app: `tunegate app [--store URL]` or `TUNEGATE_STORE=URL streamlit run app.py`.

It only renders what the store holds, read through `harness.ui.views` (the same functions the static
HTML report uses). Pages: Overview, Comparison, Drill-down, Training, Safety, Gate, Advisor; the
page and run are in the URL (`?page=comparison&run=3`), so a view can be linked.

Model outputs and data are untrusted: they are shown with st.code / st.text / dataframes (plain
text), or in markdown only after `views.md_escape`; nothing here uses unsafe_allow_html.
Queries are cached per store URL and ids (`st.cache_data`, `views/_cached.py`); per-item views are paginated.
Each page is one module of `harness/ui/_pages/`; this module wires the navigation.
"""

from __future__ import annotations

import os

import streamlit as st

from harness.base._errors import UserError
from harness.store._engine import store_url
from harness.ui._pages._advisor import page_advisor
from harness.ui._pages._common import esc
from harness.ui._pages._comparison import page_comparison
from harness.ui._pages._drilldown import page_drilldown
from harness.ui._pages._gate import page_gate
from harness.ui._pages._overview import page_overview
from harness.ui._pages._safety import page_safety
from harness.ui._pages._training import page_training
from harness.ui.views._cached import open_store, q_runs
from harness.ui.views._runs import RunRow

PAGES = ("Overview", "Comparison", "Drill-down", "Training", "Safety", "Gate", "Advisor")


def slug(page: str) -> str:
    return page.lower().replace("-", "")


def page_from_query() -> int:
    wanted = slug(str(st.query_params.get("page", "")))
    return next((i for i, p in enumerate(PAGES) if slug(p) == wanted), 0)


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
        run: RunRow | None = None
        if runs:
            ids = [r.id for r in runs]
            wanted = str(st.query_params.get("run", ""))
            index = ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in ids else 0
            run_id = st.selectbox(
                "Run", ids, index=index, format_func=lambda i: next(r.label for r in runs if r.id == i), key="run"
            )
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
