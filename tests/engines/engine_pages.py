"""The page in Firefox and WebKit (Safari's engine): how each is driven, and the page helper.

- Firefox: Debian's ``firefox-esr``, driven over WebDriver BiDi by ``puppeteer-core``
  (tests/engines/firefox, installed by ``npm ci``; it never downloads a browser). A node
  process (firefox/driver.mjs) keeps one browser open and takes one JSON command per line.
- WebKit: Debian's ``webkit2gtk-driver`` (WebKitWebDriver) attached to WebKitGTK's MiniBrowser,
  through Selenium, on an Xvfb display this module starts.

One browser per engine for the whole module (the ``engine`` fixture), a fresh page per
check. Every wait polls the page with a deadline. The tests carry the ``firefox`` or
``webkit`` marker; a missing browser, driver or package skips them with the reason, except
on CI (``CI=true``), where it fails.

Console errors are read from each browser's own console and from collector.js, which both
engines run in the page (console.error, uncaught errors, unhandled rejections, failed resource
loads, CSP violations):
- Firefox: the console and page-error events puppeteer-core gets over BiDi; the collector runs
  before the page's scripts (a BiDi preload script).
- WebKit: MiniBrowser runs with WebKit's HTTP inspector on, and InspectorConsole reads its
  Console domain, which replays what was logged before it connected, so load-time errors are
  heard too. Classic WebDriver has no preload hook, so the collector starts after the load.
"""

from __future__ import annotations

from support import unavailable
import contextlib
import glob
import html
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import wait_until

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


class InspectorConsole:
    """WebKit's own console for one page, read over its remote inspector.

    MiniBrowser serves the inspector on WEBKIT_INSPECTOR_HTTP_SERVER. Console.enable replays
    every message the page logged before it was called, so connecting once the page has
    loaded still hears its load-time errors (CSP refusals, script errors, failed loads).
    """

    MAX = 500  # messages kept; a page stuck in an error loop must not grow this without end

    def __init__(self, port: int, url: str) -> None:
        from websockets.sync.client import connect

        self.port = port
        self.messages: list[str] = []
        self._enabled = threading.Event()
        self._next_id = 0
        # One row per inspectable page: its URL, then the socket that inspects it. The list
        # follows the browser's target list, which can lag the page by a moment.
        rows = wait_until(self._targets, WAIT, "a page in WebKit's inspector", every=POLL)
        path = next((p for u, p in rows if html.unescape(u) == url), rows[-1][1])
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(f"ws://{LOCAL_HOST}:{port}/{path}", open_timeout=10, max_size=None)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._enabled.wait(WAIT):
            self.close()
            raise AssertionError("WebKit's inspector did not enable its console")

    def _targets(self) -> list[tuple[str, str]]:
        with urllib.request.urlopen(  # noqa: S310 (loopback)
            f"http://{LOCAL_HOST}:{self.port}/", timeout=10
        ) as response:
            listing = response.read().decode()
        return re.findall(
            r'class="targeturl">([^<]*)<.*?(socket/\d+/\d+/WebPage)', listing, re.S
        )

    def _send(self, target: str, method: str) -> int:
        self._next_id += 1
        inner = json.dumps({"id": self._next_id, "method": method})
        self.ws.send(json.dumps({
            "id": self._next_id, "method": "Target.sendMessageToTarget",
            "params": {"targetId": target, "message": inner},
        }))
        return self._next_id

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        enable_ids: set[int] = set()
        try:
            for raw in self.ws:
                event = json.loads(raw)
                method = event.get("method")
                if method == "Target.targetCreated":
                    # Every page target (one per web process the page has lived in) is asked.
                    enable_ids.add(self._send(event["params"]["targetInfo"]["targetId"],
                                              "Console.enable"))
                elif method == "Target.dispatchMessageFromTarget":
                    inner = json.loads(event["params"]["message"])
                    if inner.get("id") in enable_ids:
                        self._enabled.set()  # replayed messages come before this reply
                    message = inner.get("params", {}).get("message", {})
                    if (inner.get("method") == "Console.messageAdded"
                            and message.get("level") == "error"
                            and len(self.messages) < self.MAX):
                        self.messages.append(f"{message.get('source')}: {message.get('text')}")
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self._stack.close()
        self._reader.join(5)


class WebKitEngine:
    """MiniBrowser, attached to by WebKitWebDriver, through Selenium, on its own Xvfb display.

    The tests start MiniBrowser themselves (``--automation``) with WebKit's HTTP inspector
    on, then point WebKitWebDriver at it (``--target``): a browser the driver started could
    not also serve the inspector, and the inspector is how the page's console is read.
    """

    name = "webkit"

    def __init__(self, minibrowser: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="hyperdash-webkit-"))
        (self.tmp / "gtk-3.0").mkdir()
        (self.tmp / "gtk-3.0" / "gtk.css").write_text(GTK_CSS)
        self.console: InspectorConsole | None = None
        self.xvfb: Xvfb | None = None
        self.browser: subprocess.Popen[bytes] | None = None
        self.driver: Any = None
        try:
            self._start(minibrowser)
        except BaseException:
            self.close()
            raise

    def _start(self, minibrowser: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        self.xvfb = Xvfb()
        self.inspector_port = _free_port()
        env = {
            **os.environ, "DISPLAY": self.xvfb.display, "XDG_CONFIG_HOME": str(self.tmp),
            "WEBKIT_INSPECTOR_HTTP_SERVER": f"{LOCAL_HOST}:{self.inspector_port}",
        }
        env.pop("WAYLAND_DISPLAY", None)
        _gstreamer_registry(env)
        self.browser = subprocess.Popen(
            [minibrowser, "--automation"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # With the HTTP inspector on, the automation socket listens on a port WebKit picks:
        # the browser's one listening port besides the HTTP inspector's.
        automation_port = wait_until(
            lambda: next(iter(_listening_ports(self.browser_pid) - {self.inspector_port}), None),
            START_WAIT, "MiniBrowser's automation socket", every=POLL,
        )
        options = Options()
        options.binary_location = minibrowser
        options.add_argument("--automation")
        with warnings.catch_warnings():
            # Selenium's own WebKitGTK class still uses its deprecated constructor path.
            warnings.filterwarnings(
                "ignore", message="setting remote_server_addr", category=DeprecationWarning
            )
            self.driver = webdriver.WebKitGTK(
                options=options,
                service=Service(executable_path=WEBKIT_DRIVER, env=env,
                                service_args=[f"--target={LOCAL_HOST}:{automation_port}"]),
            )
        self.driver.set_script_timeout(WAIT)
        self.driver.set_page_load_timeout(15)
        self.version = str(self.driver.capabilities.get("browserVersion"))

    @property
    def browser_pid(self) -> int:
        assert self.browser is not None
        if self.browser.poll() is not None:
            raise AssertionError(f"MiniBrowser exited {self.browser.returncode}")
        return self.browser.pid

    def open(self, url: str, width: int, height: int) -> None:
        if self.console is not None:
            self.console.close()
            self.console = None
        self.driver.set_window_size(width, height)
        self.driver.get(url)
        self.driver.execute_script(COLLECTOR)
        self.console = InspectorConsole(self.inspector_port, url)

    def evaluate(self, expr: str) -> Any:
        return self.driver.execute_script(f"return ({expr});")

    def errors(self) -> list[str]:
        assert self.console is not None, "no page open"
        return [*self.console.messages, *_page_errors(self)]

    def requests(self) -> list[str]:
        return list(self.evaluate(
            "[location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]"
        ))

    def close(self) -> None:
        try:
            if self.console is not None:
                self.console.close()
            if self.driver is not None:
                self.driver.quit()
        finally:
            if self.browser is not None and self.browser.poll() is None:
                self.browser.terminate()
                try:
                    self.browser.wait(10)
                except subprocess.TimeoutExpired:
                    self.browser.kill()
                    self.browser.wait(10)
            if self.xvfb is not None:
                self.xvfb.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_webkit() -> WebKitEngine:
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


def _gstreamer_registry(env: dict[str, str]) -> None:
    """Makes sure GStreamer's plugin registry exists before MiniBrowser starts.

    A MiniBrowser started while the registry does not exist yet (a fresh machine: WebKit
    builds it on its first start) never lists its page in the remote inspector, for as long
    as it runs: every WebKit check of the module then fails waiting for it (seen on a fresh
    machine: 7 of 7, even with a 60 s deadline; all pass once the registry exists).
    ``gst_init`` builds or refreshes the registry (under a second cold, far less warm); it
    runs in a child with the browser's environment, so it writes where the browser reads.
    """
    subprocess.run(
        [sys.executable, "-c",
         "import ctypes; ctypes.CDLL('libgstreamer-1.0.so.0').gst_init(None, None)"],
        env=env, check=True, timeout=START_WAIT, stdout=subprocess.DEVNULL,
    )


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _free_port() -> int:
    """A port free now on 127.0.0.1. Another process could take it before MiniBrowser does;
    then no inspector lists the page and the check fails saying so, never passes unheard."""
    with socket.socket() as probe:
        probe.bind((LOCAL_HOST, 0))
        return int(probe.getsockname()[1])


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
