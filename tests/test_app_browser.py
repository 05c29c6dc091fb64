"""The running app in headless Chromium: every page renders in a real browser (screenshots saved under
reports/screenshots/), navigation and search work, and hostile model outputs run nothing — in the
app and in the static HTML report.

Needs Debian's `chromium` and `chromium-driver` packages (/usr/bin/chromium, /usr/bin/chromedriver)
and the `selenium` Python package; without them these tests are skipped with that reason. No
browser is ever downloaded: Selenium is pointed at the system's driver and binary.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.app_store import CANDIDATE, HOSTILE_OUTPUT, RunStore, hostile_store, run_store
from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# tests never write into reports/: TUNEGATE_SCREENSHOTS=reports/screenshots to refresh the committed pictures
SHOTS = Path(os.environ.get("TUNEGATE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "tunegate-screenshots")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,1000", "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="headless Chromium is not installed: apt-get install -y chromium chromium-driver "
           "(needs /usr/bin/chromium and /usr/bin/chromedriver)")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package (pip install selenium)")
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="session")
def app_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return run_store(tiny_model_dir, tmp_path_factory.mktemp("app-run"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(store_url: str, log: Path) -> Iterator[str]:
    """`tunegate app --store URL --port P` (which runs `streamlit run app.py`) on a free local port, in its
    own process group so that the CLI and the Streamlit server it starts are stopped together."""
    port = free_port()
    cmd = [sys.executable, "-m", "harness.cli", "app", "--store", store_url, "--port", str(port)]
    env = os.environ | {"STREAMLIT_SERVER_ADDRESS": "127.0.0.1", "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
                        "STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tunegate app did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started: the CLI and its streamlit child
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app_url(app_run: RunStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with streamlit_server(app_run.url, tmp_path_factory.mktemp("streamlit") / "app.log") as url:
        yield url


def settled(driver: Any, timeout: float = 60) -> None:
    """Wait until the script run is over and the page has stopped changing."""
    def idle(d: Any) -> bool:
        state = d.execute_script("const a = document.querySelector('.stApp');"
                                 "return a ? a.getAttribute('data-test-script-state') : null")
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stSpinner"]')
        return state == "notRunning" and not running
    WebDriverWait(driver, timeout, poll_frequency=0.25).until(idle)
    time.sleep(0.8)  # let charts and the data grid paint
    WebDriverWait(driver, timeout, poll_frequency=0.25).until(idle)


def open_page(driver: Any, url: str, page: str, heading: str, run_id: int = 1) -> None:
    driver.get(f"{url}/?page={page}&run={run_id}")
    WebDriverWait(driver, 60).until(
        lambda d: any(h.text.strip() == heading for h in d.find_elements(By.CSS_SELECTOR, "h2")))
    settled(driver)


def screenshot(driver: Any, name: str, max_height: int = 2600) -> Path:
    """The whole page (up to max_height px) as a PNG under SHOTS."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "return Math.max(m.scrollHeight, document.body.scrollHeight)")
    driver.set_window_size(1440, min(max(int(height) + 40, 900), max_height))
    time.sleep(0.6)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    _shrink(path)
    driver.set_window_size(1440, 1000)
    return path


def _shrink(path: Path) -> None:
    """Palette PNGs are a third of the size and look the same for these flat pages."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)


def body_text(driver: Any) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def charts_drawn(driver: Any) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, '
                                                      '[data-testid="stVegaLiteChart"] svg.marks'))


def no_error(driver: Any) -> None:
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), body_text(driver)[:2000]


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
    label = next(e for e in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] label')
                 if e.text.strip() == "Gate")
    label.click()
    WebDriverWait(browser, 30).until(lambda d: "page=gate" in d.current_url)
    WebDriverWait(browser, 30).until(
        lambda d: any(h.text.strip() == "Gate" for h in d.find_elements(By.CSS_SELECTOR, "h2")))
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
            assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] img, "
                                                              "[data-testid='stMain'] iframe, a[href^='javascript'], "
                                                              "a[href*='127.0.0.1:9'], a[href^='mailto']")
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
