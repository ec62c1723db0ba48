"""Real parts for the browser tests: Debian's chromium, driven by Playwright, against a real
Dashboard served on 127.0.0.1.

Chromium is launched once per session from ``/usr/bin/chromium`` (``HYPERDASH_CHROMIUM``
overrides the path); ``playwright install`` is never needed. A missing browser or Playwright
is handled here and only here: the tests are skipped with the reason, except on CI
(``CI=true``), where they fail, so an image without chromium cannot pass by skipping.

Each test gets its own dashboard (any free port), its own browser context (fresh
localStorage) and a :class:`BrowserLog` that records console errors, uncaught page errors,
every request and every WebSocket. Requests to any host but 127.0.0.1 are aborted and
recorded; the fixture fails the test if there were any, or any uncaught page error.
"""

from __future__ import annotations

from support import require_binary, unavailable
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from hyperdash_otel import Config, Dashboard

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = os.environ.get("HYPERDASH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOST = "127.0.0.1"
TICK = 0.2
"""Seconds between ticks of the dashboards under test."""
WAIT_MS = 10_000
"""Deadline for anything that should happen within a few ticks."""
RECONNECT_WAIT_MS = 20_000
"""Deadline for a reconnect (backoff of a few attempts, 0.5 s upwards)."""

SIZES = [(1280, 800), (768, 1024), (390, 844)]


def require_chromium() -> str:
    """The chromium path; skip (locally) or fail (on CI) when it or Playwright is missing."""
    reason = None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = (
            f"no chromium at {CHROMIUM}; install Debian's chromium "
            "(`make system-deps` or `apt-get install chromium`), or set HYPERDASH_CHROMIUM"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright Python package is missing; run `make setup`"
    if reason is None:
        return CHROMIUM
    unavailable(reason)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Debian's ``prometheus``, for the fleet's end-to-end page checks."""
    return require_binary("prometheus")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# -- dashboards ------------------------------------------------------------------------------

_vendor_checked = False


def _check_vendor(dash: Dashboard) -> None:
    """Chart.js must be served locally; say how to fix it instead of failing obscurely."""
    global _vendor_checked
    if _vendor_checked:
        return
    url = f"http://{LOCAL_HOST}:{dash.port}/static/vendor/chart.umd.js"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            ok = response.status == 200 and b"Chart" in response.read(4096)
    except urllib.error.URLError:
        ok = False
    if not ok:
        pytest.fail(
            f"{url} does not serve Chart.js; run `make setup` (npm ci in web/)", pytrace=False
        )
    _vendor_checked = True


@pytest.fixture
def start_dashboard() -> Iterator[Callable[..., Dashboard]]:
    """Factory: a served Dashboard (TICK seconds per tick, no psutil sampling); closed after.

    ``start_dashboard(port=p)`` serves on a given port, e.g. to restart where another was.
    """
    made: list[Dashboard] = []

    def start(**kwargs: Any) -> Dashboard:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("update_interval", TICK)
        kwargs.setdefault("collect_system_metrics", False)
        dash = Dashboard(Config(**kwargs))
        made.append(dash)
        dash.start_in_thread()
        _check_vendor(dash)
        return dash

    yield start
    for dash in reversed(made):
        dash.close()


@pytest.fixture
def dash(start_dashboard: Callable[..., Dashboard]) -> Dashboard:
    return start_dashboard()


# -- pages -----------------------------------------------------------------------------------


@dataclass
class BrowserLog:
    """What one browser context did: console errors, page errors, requests, sockets."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    websockets: list[Any] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    max_open_sockets: int = 0
    _open_sockets: int = 0

    def allow_console_error(self, pattern: str) -> None:
        """Console errors matching `pattern` are expected in this test (e.g. a refused
        WebSocket while the server is down)."""
        self.allowed.append(re.compile(pattern))

    def unexpected_console_errors(self) -> list[str]:
        return [e for e in self.console_errors if not any(p.search(e) for p in self.allowed)]

    def open_sockets(self) -> list[Any]:
        return [ws for ws in self.websockets if not ws.is_closed()]

    def _socket_opened(self, ws: Any) -> None:
        self.websockets.append(ws)
        if not _is_local(ws.url):
            self.foreign_requests.append(ws.url)
        self._open_sockets += 1
        self.max_open_sockets = max(self.max_open_sockets, self._open_sockets)
        ws.on("close", lambda _ws: self._socket_closed())

    def _socket_closed(self) -> None:
        self._open_sockets -= 1


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname == LOCAL_HOST


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def new_page(browser: Any, browser_log: BrowserLog) -> Iterator[Callable[..., Any]]:
    """Factory: a page in a fresh context (default 1280x800) wired to `browser_log`.

    Requests to hosts other than 127.0.0.1 are aborted and recorded. After the test, any
    such request or any uncaught page error fails it.
    """
    contexts: list[Any] = []
    log = browser_log

    def route(route: Any) -> None:
        url = route.request.url
        log.requests.append(url)
        if _is_local(url):
            route.continue_()
        else:
            log.foreign_requests.append(url)
            route.abort()

    def make(width: int = 1280, height: int = 800, **context_args: Any) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, **context_args)
        context.set_default_timeout(WAIT_MS)
        context.route("**/*", route)
        contexts.append(context)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        page.on("pageerror", lambda error: log.page_errors.append(str(error)))
        page.on("websocket", log._socket_opened)
        return page

    yield make
    for context in contexts:
        context.close()
    assert log.foreign_requests == [], "requests left 127.0.0.1"
    assert log.page_errors == [], "uncaught errors in the page"


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


class DashboardPage:
    """The page of one dashboard, with waits that have deadlines (never sleeps)."""

    def __init__(self, page: Any, dash: Dashboard) -> None:
        self.page = page
        self.dash = dash

    @property
    def url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.dash.port}/"

    def open(self, query: str = "") -> Any:
        response = self.page.goto(self.url + query)
        self.wait_fresh()
        return response

    def reload(self) -> None:
        self.page.reload()
        self.wait_fresh()

    def wait_fresh(self, timeout: float = WAIT_MS) -> None:
        """Wait until the socket is live and the page shows a tick made after it opened.

        The history replayed on connect is older (its viewer count, for one, predates this
        page), so counting messages alone could stop inside the replay.
        """
        self.page.wait_for_function(
            """() => {
                 const s = window.hyperdash.connection.stats();
                 return s.state === "live" && s.openedAt !== null
                   && Number(document.body.dataset.timestamp || 0) >= s.openedAt;
               }""",
            timeout=timeout,
        )

    def state(self) -> str:
        return str(self.page.get_attribute("#connection-status", "data-state"))

    def wait_state(self, state: str, timeout: float = WAIT_MS) -> None:
        self.page.wait_for_function(
            "(s) => document.getElementById('connection-status').dataset.state === s",
            arg=state,
            timeout=timeout,
        )

    def messages(self) -> int:
        """Messages received and rendered since the page loaded."""
        return int(self.page.evaluate("() => Number(document.body.dataset.messages || 0)"))

    def wait_messages(self, count: int, timeout: float = WAIT_MS) -> None:
        self.page.wait_for_function(
            "(n) => Number(document.body.dataset.messages || 0) >= n", arg=count, timeout=timeout
        )

    def wait_ticks(self, ticks: int = 2) -> None:
        """Wait until `ticks` more messages have been rendered."""
        self.wait_messages(self.messages() + ticks)

    def card(self, name: str) -> str:
        return str(self.page.text_content(f"#value-{name}")).strip()

    def card_number(self, name: str) -> float:
        return float(str(self.page.get_attribute(f"#value-{name}", "data-value")))

    def chart(self, canvas_id: str) -> dict[str, Any]:
        """labels and datasets (label, data) of a chart, read from Chart.js itself."""
        return dict(
            self.page.evaluate(
                """(id) => {
                  const chart = Chart.getChart(id);
                  if (!chart) return null;
                  return {
                    labels: chart.data.labels || [],
                    datasets: chart.data.datasets.map((d) => ({ label: d.label, data: d.data })),
                  };
                }""",
                canvas_id,
            )
        )

    def timeline_x(self) -> list[float]:
        """Timestamps (ms) of the points on the jobs-over-time chart."""
        data = self.chart("chart-jobs-over-time")
        return [point["x"] for point in data["datasets"][0]["data"]]

    def rows(self) -> Any:
        return self.page.locator("#jobs-body tr")

    def alerts(self) -> Any:
        return self.page.locator("#alerts-list .alert")

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page itself would scroll sideways (0 is good)."""
        return int(
            self.page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
        )


@pytest.fixture
def ui(page: Any, dash: Dashboard) -> DashboardPage:
    """The page of the test's dashboard (not yet opened)."""
    return DashboardPage(page, dash)


@pytest.fixture
def make_ui() -> Callable[[Any, Dashboard], DashboardPage]:
    """Factory for a DashboardPage over another page or dashboard."""
    return DashboardPage


@pytest.fixture
def artifacts() -> Path:
    """The git-ignored folder screenshots go to."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
