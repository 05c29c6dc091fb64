"""Headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against a real Streamlit server: the
browser fixture, the server, and page helpers shared by the app's browser tests."""

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

from tests.support import REPO
from tests.support.app_store import RunStore, run_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# tests never write into reports/: TUNEGATE_SCREENSHOTS=reports/screenshots to refresh the committed pictures
SHOTS = Path(os.environ.get("TUNEGATE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "tunegate-screenshots")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
    "--hide-scrollbars",
]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="headless Chromium is not installed: apt-get install -y chromium chromium-driver "
    "(needs /usr/bin/chromium and /usr/bin/chromedriver)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package (pip install selenium)")
from selenium.webdriver.common.by import By
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
    env = os.environ | {
        "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
        "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
        "STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal",
    }
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
        state = d.execute_script(
            "const a = document.querySelector('.stApp');return a ? a.getAttribute('data-test-script-state') : null"
        )
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stSpinner"]')
        return state == "notRunning" and not running

    WebDriverWait(driver, timeout, poll_frequency=0.25).until(idle)
    time.sleep(0.8)  # let charts and the data grid paint
    WebDriverWait(driver, timeout, poll_frequency=0.25).until(idle)


def open_page(driver: Any, url: str, page: str, heading: str, run_id: int = 1) -> None:
    driver.get(f"{url}/?page={page}&run={run_id}")
    WebDriverWait(driver, 60).until(
        lambda d: any(h.text.strip() == heading for h in d.find_elements(By.CSS_SELECTOR, "h2"))
    )
    settled(driver)


def screenshot(driver: Any, name: str, max_height: int = 2600) -> Path:
    """The whole page (up to max_height px) as a PNG under SHOTS."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "return Math.max(m.scrollHeight, document.body.scrollHeight)"
    )
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
    return len(
        driver.find_elements(
            By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks'
        )
    )


def no_error(driver: Any) -> None:
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), body_text(driver)[:2000]
