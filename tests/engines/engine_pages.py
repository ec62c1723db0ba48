"""The page in Firefox and WebKit (Safari's engine): how each is driven, and the page helper.

- Firefox: Debian's ``firefox-esr``, driven over WebDriver BiDi by ``puppeteer-core``
  (tests/engines/firefox, installed by ``npm ci``; it never downloads a browser). A node
  process (firefox/driver.mjs) keeps one browser open and takes one JSON command per line.
- WebKit: Debian's ``webkit2gtk-driver`` (WebKitWebDriver) starting WebKitGTK's MiniBrowser,
  through Selenium, on an Xvfb display this module starts.

One browser per engine for the whole module (the ``engine`` fixture), a fresh page per
check. Every wait polls the page with a deadline. The tests carry the ``firefox`` or
``webkit`` marker; a missing browser, driver or package skips them with the reason, except
on CI (``CI=true``), where it fails.

Console errors: both engines run collector.js in the page (console.error, uncaught errors,
unhandled rejections, failed resource loads, CSP violations). In Firefox it runs before the
page's own scripts and the browser's console and page-error events are collected as well.
WebKit's classic WebDriver has no way to run a script before the page's, and MiniBrowser
under automation does not print console messages, so there the collector starts once the
page has loaded; a script that failed earlier shows as a page that never goes Live.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


HERE = Path(__file__).resolve().parent
FIREFOX_DIR = HERE / "firefox"
COLLECTOR = (HERE / "collector.js").read_text()
FIREFOX = os.environ.get("HYPERDASH_FIREFOX", "/usr/bin/firefox-esr")
WEBKIT_DRIVER = os.environ.get("HYPERDASH_WEBKIT_DRIVER", "/usr/bin/WebKitWebDriver")
MINIBROWSER_GLOB = "/usr/lib/*/webkit2gtk-4.*/MiniBrowser"
LOCAL_HOST = "127.0.0.1"
TICK = 0.2
"""Seconds between ticks of the dashboards under test."""
WAIT = 10.0
"""Deadline (s) for anything that should happen within a few ticks."""
RECONNECT_WAIT = 20.0
"""Deadline (s) for a reconnect (backoff of a few attempts, 0.5 s upwards)."""
POLL = 0.05
"""Seconds between two looks at the page while waiting for a condition."""
START_WAIT = 60.0
"""Deadline (s) for a browser to start (both are slow to start under load)."""

# MiniBrowser's toolbar keeps its window at least ~450 px wide; this user stylesheet (GTK's,
# not the page's) shrinks the toolbar so the window, and so the page, can be phone-narrow.
GTK_CSS = "* { font-size: 1px; padding: 0; margin: 0; min-width: 0; min-height: 0; }\n"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """A real part this test needs is missing: fail on CI, skip elsewhere, with the reason."""
    if on_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _executable(path: str | None) -> bool:
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


# -- Firefox ---------------------------------------------------------------------------------


class FirefoxEngine:
    """firefox-esr behind firefox/driver.mjs (puppeteer-core over WebDriver BiDi)."""

    name = "firefox"

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(FIREFOX_DIR / "driver.mjs")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HYPERDASH_FIREFOX": FIREFOX},
        )
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        hello = self._reply(START_WAIT)
        assert hello.get("ready"), hello
        self.version = str(hello["version"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"firefox driver: no reply within {timeout} s") from None
        if line is None:
            code = self.proc.wait(10)
            assert self.proc.stderr is not None
            raise AssertionError(f"firefox driver exited {code}: {self.proc.stderr.read()}")
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    def call(self, op: str, timeout: float = 20.0, **args: Any) -> Any:
        self._next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": self._next_id, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        reply = self._reply(timeout)
        assert reply.get("id") == self._next_id, reply
        if "error" in reply:
            raise AssertionError(f"firefox {op}: {reply['error']}")
        return reply.get("value")

    def open(self, url: str, width: int, height: int) -> None:
        self.call("open", url=url, width=width, height=height)

    def evaluate(self, expr: str) -> Any:
        return self.call("eval", expr=expr)

    def errors(self) -> list[str]:
        log = self.call("log") or {}
        return [*log.get("consoleErrors", []), *log.get("pageErrors", []), *_page_errors(self)]

    def requests(self) -> list[str]:
        return list((self.call("log") or {}).get("requests", []))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("quit", timeout=20)
                self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(5)
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def start_firefox() -> FirefoxEngine:
    if not _executable(FIREFOX):
        unavailable(f"no firefox at {FIREFOX}; `make system-deps` (apt-get install firefox-esr)"
                    " or set HYPERDASH_FIREFOX")
    if shutil.which("node") is None:
        unavailable("node is not on PATH (needed to run puppeteer-core)")
    if not (FIREFOX_DIR / "node_modules" / "puppeteer-core").is_dir():
        unavailable("puppeteer-core is not installed; run `make setup` "
                    "(npm ci in tests/engines/firefox)")
    return FirefoxEngine()


# -- WebKit ----------------------------------------------------------------------------------


class Xvfb:
    """A private X display for MiniBrowser (it has no headless mode)."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1920x1200x24", "-nolisten",
             "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write)
        # Xvfb writes the display number it chose once it accepts connections.
        with os.fdopen(read) as stream:
            number = stream.readline().strip()
        if not number:
            self.close()
            raise AssertionError("Xvfb did not report a display")
        self.display = f":{number}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class WebKitEngine:
    """MiniBrowser behind WebKitWebDriver, through Selenium, on its own Xvfb display."""

    name = "webkit"

    def __init__(self, minibrowser: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        self.tmp = Path(tempfile.mkdtemp(prefix="hyperdash-webkit-"))
        (self.tmp / "gtk-3.0").mkdir()
        (self.tmp / "gtk-3.0" / "gtk.css").write_text(GTK_CSS)
        self.xvfb = Xvfb()
        env = {**os.environ, "DISPLAY": self.xvfb.display, "XDG_CONFIG_HOME": str(self.tmp)}
        env.pop("WAYLAND_DISPLAY", None)
        options = Options()
        options.binary_location = minibrowser
        options.add_argument("--automation")
        try:
            with warnings.catch_warnings():
                # Selenium's own WebKitGTK class still uses its deprecated constructor path.
                warnings.filterwarnings(
                    "ignore", message="setting remote_server_addr", category=DeprecationWarning
                )
                self.driver = webdriver.WebKitGTK(
                    options=options,
                    service=Service(executable_path=WEBKIT_DRIVER, env=env),
                )
        except BaseException:
            self.xvfb.close()
            raise
        self.driver.set_script_timeout(WAIT)
        self.driver.set_page_load_timeout(15)
        self.version = str(self.driver.capabilities.get("browserVersion"))

    def open(self, url: str, width: int, height: int) -> None:
        self.driver.set_window_size(width, height)
        self.driver.get(url)
        self.driver.execute_script(COLLECTOR)

    def evaluate(self, expr: str) -> Any:
        return self.driver.execute_script(f"return ({expr});")

    def errors(self) -> list[str]:
        return _page_errors(self)

    def requests(self) -> list[str]:
        return list(self.evaluate(
            "[location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]"
        ))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self.xvfb.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_webkit() -> WebKitEngine:
    import glob

    found = sorted(glob.glob(MINIBROWSER_GLOB))
    minibrowser = os.environ.get("HYPERDASH_MINIBROWSER") or (found[-1] if found else None)
    reason = None
    if not _executable(WEBKIT_DRIVER):
        reason = f"no WebKitWebDriver at {WEBKIT_DRIVER}"
    elif not _executable(minibrowser):
        reason = f"no MiniBrowser matching {MINIBROWSER_GLOB}"
    elif shutil.which("Xvfb") is None:
        reason = "no Xvfb"
    if reason is not None:
        unavailable(f"{reason}; `make system-deps` (apt-get install webkit2gtk-driver xvfb)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("the selenium Python package is missing; run `make setup`")
    assert minibrowser is not None
    return WebKitEngine(minibrowser)


def _page_errors(engine: Any) -> list[str]:
    errors = engine.evaluate("window.__engineLog ? window.__engineLog.errors : null")
    assert errors is not None, "the error collector is not in the page"
    return list(errors)


STARTERS: dict[str, Callable[[], Any]] = {"firefox": start_firefox, "webkit": start_webkit}


# -- dashboards and the page -----------------------------------------------------------------


class EnginePage:
    """The dashboard's page in one engine, with waits that poll under a deadline."""

    def __init__(self, engine: Any, port: int) -> None:
        self.engine = engine
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}/"

    def open(self, width: int = 1280, height: int = 800) -> None:
        self.engine.open(self.url, width, height)
        self.wait_fresh()

    def evaluate(self, expr: str) -> Any:
        return self.engine.evaluate(expr)

    def wait_for(self, expr: str, timeout: float = WAIT, what: str = "") -> Any:
        """Poll the page until `expr` is truthy; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.engine.name}: timed out after {timeout} s waiting for "
                    f"{what or expr}; connection: {self.connection_state()}"
                )
            time.sleep(POLL)

    def connection_state(self) -> Any:
        return self.evaluate(
            "document.getElementById('connection-status')"
            " ? document.getElementById('connection-status').dataset.state : null"
        )

    def wait_fresh(self, timeout: float = WAIT) -> None:
        """Live, and showing a tick made after the socket opened (not the replayed history)."""
        self.wait_for(
            """(() => {
                 const s = window.hyperdash && window.hyperdash.connection.stats();
                 return !!s && s.state === "live" && s.openedAt !== null
                   && Number(document.body.dataset.timestamp || 0) >= s.openedAt;
               })()""",
            timeout, "a live socket and a fresh tick",
        )

    def wait_state(self, state: str, timeout: float = WAIT) -> None:
        self.wait_for(
            f"document.getElementById('connection-status').dataset.state === {json.dumps(state)}",
            timeout, f"connection state {state!r}",
        )

    def messages(self) -> int:
        return int(self.evaluate("Number(document.body.dataset.messages || 0)"))

    def wait_ticks(self, ticks: int = 2) -> None:
        target = self.messages() + ticks
        self.wait_for(f"Number(document.body.dataset.messages || 0) >= {target}",
                      what=f"{ticks} more messages")

    def text(self, selector: str) -> str | None:
        value = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " return el ? el.textContent : null; })()"
        )
        return None if value is None else str(value)

    def card(self, name: str) -> str:
        return str(self.text(f"#value-{name}")).strip()

    def errors(self, allow: tuple[str, ...] = ()) -> list[str]:
        """Console errors, JS exceptions and CSP violations, less those matching `allow`."""
        import re

        patterns = [re.compile(p) for p in allow]
        return [e for e in self.engine.errors() if not any(p.search(e) for p in patterns)]
