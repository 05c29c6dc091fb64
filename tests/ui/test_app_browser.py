"""The running app in headless Chromium: every page renders in a real browser (screenshots go to a tmp folder, or
to $TUNEGATE_SCREENSHOTS; the committed ones in reports/screenshots/ come from tests/ui/test_screenshots.py), navigation and search work, and hostile
model outputs run nothing — in the app and in the static HTML report.

Needs Debian's `chromium` and `chromium-driver` packages (/usr/bin/chromium, /usr/bin/chromedriver)
and the `selenium` Python package; without them these tests are skipped with that reason. No
browser is ever downloaded: Selenium is pointed at the system's driver and binary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.app_store import CANDIDATE, HOSTILE_OUTPUT, RunStore, hostile_store
from tests.support.browser import (  # noqa: F401  (fixtures: browser, app_run, app_url)
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    SHOTS,
    _shrink,
    app_run,
    app_url,
    body_text,
    browser,
    charts_drawn,
    free_port,
    no_error,
    open_page,
    pytestmark,
    screenshot,
    settled,
    streamlit_server,
    webdriver,
)


def test_overview_page(browser: Any, app_url: str, app_run: RunStore):
    open_page(browser, app_url, "overview", "Overview")
    no_error(browser)
    text = body_text(browser)
    assert "Run #1: tiny-app" in text and "base model" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')) == 2
    assert screenshot(browser, "overview").stat().st_size > 10_000


def test_comparison_page(browser: Any, app_url: str):
    open_page(browser, app_url, "comparison", "Comparison")
    no_error(browser)
    text = body_text(browser)
    assert "Deltas against baseline" in text and "Forest plot" in text and "Sweep / learning curve" in text
    WebDriverWait(browser, 30).until(lambda d: charts_drawn(d) >= 2)  # forest + learning curve
    screenshot(browser, "comparison")


def test_drilldown_page_and_search(browser: Any, app_url: str):
    open_page(browser, app_url, "drilldown", "Drill-down")
    no_error(browser)
    assert "12 of 12 items match" in body_text(browser)
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMarkdown"] del')  # the word diff is drawn
    screenshot(browser, "drilldown")
    box = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Search prompt, reference and outputs"]')
    box.send_keys("capital of France", Keys.ENTER)
    WebDriverWait(browser, 30).until(lambda d: "1 of 12 items match" in body_text(d))
    settled(browser)
    text = body_text(browser)
    assert "gk-00" in text and "gk-01" not in text


def test_training_page(browser: Any, app_url: str):
    open_page(browser, app_url, "training", "Training")
    no_error(browser)
    assert CANDIDATE in body_text(browser)
    WebDriverWait(browser, 30).until(lambda d: charts_drawn(d) >= 4)
    screenshot(browser, "training")


def test_safety_page(browser: Any, app_url: str):
    open_page(browser, app_url, "safety", "Safety")
    no_error(browser)
    text = body_text(browser)
    assert "Refusal rate per arm" in text and "Items that changed" in text
    WebDriverWait(browser, 30).until(lambda d: charts_drawn(d) >= 1)
    screenshot(browser, "safety")


def test_gate_page(browser: Any, app_url: str):
    open_page(browser, app_url, "gate", "Gate")
    no_error(browser)
    alerts = [a.text for a in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]')]
    assert len(alerts) == 3 and any("promote" in a for a in alerts) and any("reject" in a for a in alerts)
    assert "Promotion history" in body_text(browser)
    screenshot(browser, "gate")


def test_advisor_page_recommends(browser: Any, app_url: str):
    open_page(browser, app_url, "advisor", "Advisor")
    no_error(browser)
    button = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == "Recommend")
    button.click()
    try:
        WebDriverWait(browser, 60).until(lambda d: "Experiment plan" in body_text(d))
    except TimeoutException:
        pytest.fail(body_text(browser)[:3000])
    settled(browser)
    text = body_text(browser)
    assert "Recommendation" in text and "Why (rules that fired)" in text and "name: advise-train" in text
    screenshot(browser, "advisor", max_height=3400)


def test_sidebar_navigation_updates_the_url(browser: Any, app_url: str):
    open_page(browser, app_url, "overview", "Overview")
    label = next(
        e for e in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] label') if e.text.strip() == "Gate"
    )
    label.click()
    WebDriverWait(browser, 30).until(lambda d: "page=gate" in d.current_url)
    WebDriverWait(browser, 30).until(
        lambda d: any(h.text.strip() == "Gate" for h in d.find_elements(By.CSS_SELECTOR, "h2"))
    )
    assert "run=1" in browser.current_url


def pwned(driver: Any) -> Any:
    return driver.execute_script("return window.__pwned === undefined ? null : window.__pwned")


def test_hostile_outputs_run_nothing_in_the_app(browser: Any, tmp_path: Path):
    run = hostile_store(tmp_path / "hostile.db")
    with streamlit_server(run.url, tmp_path / "app.log") as url:
        for page, heading in (("drilldown", "Drill-down"), ("overview", "Overview"), ("comparison", "Comparison")):
            open_page(browser, url, page, heading)
            no_error(browser)
            assert pwned(browser) is None, page
            assert not browser.find_elements(
                By.CSS_SELECTOR,
                "[data-testid='stMain'] img, "
                "[data-testid='stMain'] iframe, a[href^='javascript'], "
                "a[href*='127.0.0.1:9'], a[href^='mailto']",
            )
            if page == "drilldown":
                text = body_text(browser)
                for line in HOSTILE_OUTPUT.splitlines():
                    assert line in text, line  # shown as the text it is
                screenshot(browser, "injection")


def test_static_report_in_chromium(browser: Any, app_run: RunStore, tmp_path: Path):
    from harness.store import Store
    from harness.ui import write_html

    report = write_html(Store(app_run.url), str(app_run.run_id), tmp_path / "report.html")
    browser.get(report.as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text == "tunegate · run 1: tiny-app"
    assert len(browser.find_elements(By.TAG_NAME, "svg")) >= 5
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = false)")
    screenshot(browser, "report", max_height=4000)
    hostile = hostile_store(tmp_path / "hostile.db")
    page = write_html(Store(hostile.url), str(hostile.run_id), tmp_path / "hostile.html")
    browser.get(page.as_uri())
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    time.sleep(0.5)
    assert pwned(browser) is None
    assert not browser.find_elements(By.CSS_SELECTOR, "script, img, iframe")
    assert "<script>window.__pwned = 'script';</script>" in body_text(browser)
