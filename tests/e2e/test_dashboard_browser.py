"""The dashboard in a real browser: `streamlit run` (headless, a free 127.0.0.1 port) on a loaded
database, every page opened by its URL in headless Chromium, its charts awaited, a screenshot
taken. The screenshots go to a temporary folder, or, with DWH_UPDATE_SCREENSHOTS=1 (`make
screenshots`), into dashboards/screenshots/ (referenced from the README): a plain test run
leaves the working tree as it was. Every page, Data quality and Pipeline health included, must
say in its sidebar that it reads as bi_reader.

Chromium is Debian's `chromium` package; the test installs it with apt-get when it is missing
and we are root, and is skipped with the reason otherwise. The browser is driven through its
DevTools protocol (the `websockets` client that Streamlit depends on), so the test waits for the
Plotly charts to be drawn instead of guessing a time budget. Every wait is bounded; the
Streamlit and Chromium processes are stopped in `finally` blocks.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwh.monitoring import run_checks
from dwh.orchestrator import run_pipeline
from dwh.stage import RunOptions

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "dashboards" / "screenshots"
# (url path, title shown on the page, screenshot name)
PAGES = (
    ("", "Overview", "overview"),
    ("sales-trends", "Sales trends", "sales-trends"),
    ("products", "Products and categories", "products"),
    ("customers", "Customers", "customers"),
    ("payments", "Payments", "payments"),
    ("data-quality", "Data quality", "data-quality"),
    ("pipeline-health", "Pipeline health", "pipeline-health"),
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SERVER_START_S = 60
PAGE_TIMEOUT_S = 45
WINDOW = (1400, 1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary, installed with apt-get when missing and possible."""
    found = _find_browser()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no Chromium, and apt-get install needs root: install the chromium package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            result = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=900, check=False
            )
            if result.returncode != 0:
                tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                pytest.skip(f"`{' '.join(command)}` failed, Chromium unavailable: {tail}")
    except subprocess.TimeoutExpired:
        pytest.skip("apt-get took too long: Chromium unavailable")
    found = _find_browser()
    if not found:
        pytest.skip("the chromium package installed no chromium binary")
    return found


def _stop(process: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop a process started in its own session, and its children."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
    except ProcessLookupError:
        pass


def _wait_http(url: str, timeout_s: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[:4]} exited early:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {timeout_s}s:\n{log.read_text(errors='replace')}")


@pytest.fixture
def dashboard(db_url, make_settings, tmp_path) -> Iterator[str]:
    """Base URL of the dashboard served by `streamlit run` on a loaded database: a history
    batch with a few injected defects (quarantine) and the next business day (a second run),
    then monitoring (a health report), as the command line does after a run."""
    settings = make_settings(db_url, dirty_rate=0.02)
    run_pipeline(settings)
    run_pipeline(settings, RunOptions(next_batch=True))
    run_checks(settings, db_url)  # health report and open alerts (no channel: log only)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DWH_"))}
    env["DATABASE_URL"] = db_url
    log = tmp_path / "streamlit.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "dashboards" / "app.py"),
                "--server.headless=true",
                "--server.address=127.0.0.1",
                f"--server.port={port}",
                "--server.fileWatcherType=none",
                "--browser.gatherUsageStats=false",
                "--client.toolbarMode=minimal",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/_stcore/health", SERVER_START_S, process, log)
        yield base
    finally:
        _stop(process)


class Browser:
    """Headless Chromium driven over the DevTools protocol (one tab)."""

    def __init__(self, binary: str, profile: Path, log: Path):
        from websockets.sync.client import connect

        port = _free_port()
        self._log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                f"--remote-debugging-port={port}",
                "--remote-debugging-address=127.0.0.1",
                "about:blank",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        try:
            _wait_http(f"http://127.0.0.1:{port}/json/version", 30, self.process, log)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            page = next(t for t in targets if t.get("type") == "page")
            self.socket = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
            )
            self.call("Page.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=WINDOW[0],
                height=WINDOW[1],
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def call(self, method: str, timeout_s: float = 30, **params: Any) -> dict:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"DevTools {method} did not answer in {timeout_s}s")
            message = json.loads(self.socket.recv(timeout=remaining))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._stack.close()
        _stop(self.process, grace_s=5)
        self._log.close()


# What the page shows: drawn Plotly charts, Streamlit exceptions, the page title, and whether
# a script run is still in progress (the status widget).
PROBE = """JSON.stringify({
  charts: document.querySelectorAll('.js-plotly-plot .main-svg').length,
  exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]'))
      .map(e => e.innerText.slice(0, 300)),
  title: (document.querySelector('h1') || {innerText: ''}).innerText,
  sidebar: (document.querySelector('[data-testid="stSidebar"]') || {innerText: ''}).innerText,
  running: !!document.querySelector('[data-testid="stStatusWidget"]'),
})"""


def _wait_for_charts(browser: Browser, title: str) -> dict:
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    stable_since, last = None, None
    state: dict = {}
    while time.monotonic() < deadline:
        state = json.loads(browser.evaluate(PROBE) or "{}")
        if state.get("exceptions"):
            pytest.fail(f"{title}: the page shows an exception: {state['exceptions']}")
        ready = state.get("charts", 0) > 0 and title in state.get("title", "")
        ready = ready and not state.get("running")
        if ready and state.get("charts") == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:  # no chart added for a second
                return state
        else:
            stable_since = None
        last = state.get("charts") if ready else None
        time.sleep(0.25)
    pytest.fail(f"{title}: charts not drawn within {PAGE_TIMEOUT_S}s (last state {state})")


def test_every_page_in_a_real_browser(dashboard, chromium, tmp_path):
    shots = SCREENSHOTS if os.environ.get("DWH_UPDATE_SCREENSHOTS") == "1" else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        browser = Browser(chromium, Path(profile), tmp_path / "chromium.log")
        try:
            for url_path, title, name in PAGES:
                browser.call("Page.navigate", url=f"{dashboard}/{url_path}")
                state = _wait_for_charts(browser, title)
                time.sleep(0.5)  # let Plotly finish its transitions
                shot = browser.call("Page.captureScreenshot", format="png")
                png = base64.b64decode(shot["data"])
                assert png.startswith(b"\x89PNG\r\n\x1a\n")
                assert len(png) > 20_000, f"{title}: the screenshot looks blank"
                (shots / f"{name}.png").write_bytes(png)
                assert state["charts"] >= 1
                # every page, the ops ones included, reads as bi_reader (no fallback note)
                assert "Reading as bi_reader" in state["sidebar"], f"{title}: {state['sidebar']}"
        finally:
            browser.close()
    assert {name for *_, name in PAGES} <= {p.stem for p in shots.glob("*.png")}
