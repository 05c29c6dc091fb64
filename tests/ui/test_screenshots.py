"""The README's pictures come from the real GPU run (reports/gpu/plan_run.db: SmolLM2 on a GPU, real metrics),
opened from a copy in a tmp folder, in headless Chromium. Set TUNEGATE_SCREENSHOTS=reports/screenshots to
refresh the committed PNGs; by default they go to a tmp folder."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.support import REPO
from tests.support.browser import (  # noqa: F401  (browser: a fixture)
    By,
    WebDriverWait,
    body_text,
    browser,
    charts_drawn,
    no_error,
    open_page,
    screenshot,
    streamlit_server,
)

GPU_STORE = REPO / "reports" / "gpu" / "plan_run.db"


@pytest.fixture(scope="module")
def gpu_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not GPU_STORE.exists():
        pytest.skip("reports/gpu/plan_run.db is not in this checkout")
    folder = tmp_path_factory.mktemp("gpu-store")
    copy = folder / "plan_run.db"
    shutil.copy(GPU_STORE, copy)  # opening a store may upgrade it: never the committed file
    with streamlit_server(f"sqlite:///{copy}", folder / "app.log") as url:
        yield url


def test_gpu_run_overview_comparison_drilldown_and_training(browser: Any, gpu_app: str) -> None:
    before = GPU_STORE.read_bytes()
    open_page(browser, gpu_app, "overview", "Overview")
    no_error(browser)
    text = body_text(browser)
    assert "Run #1: gpu-json-extract" in text  # (trial names are drawn in the data grid canvas)
    assert screenshot(browser, "overview").stat().st_size > 10_000

    open_page(browser, gpu_app, "comparison", "Comparison")
    no_error(browser)
    assert "Forest plot" in body_text(browser)
    WebDriverWait(browser, 30).until(lambda d: charts_drawn(d) >= 2)
    screenshot(browser, "comparison")

    open_page(browser, gpu_app, "drilldown", "Drill-down")
    no_error(browser)
    assert "items match" in body_text(browser)
    screenshot(browser, "drilldown")

    open_page(browser, gpu_app, "training", "Training")
    no_error(browser)
    WebDriverWait(browser, 30).until(lambda d: charts_drawn(d) >= 1)
    screenshot(browser, "training")
    assert GPU_STORE.read_bytes() == before
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
