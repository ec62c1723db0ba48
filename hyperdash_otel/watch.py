"""``hyperdash watch``: a terminal client for a dashboard's WebSocket stream.

One compact line per tick, or the raw JSON messages with ``--json``. On connect the server
replays its recent history; the client prints only the newest ``backlog`` of those, and after
a reconnect only the ones it has not printed yet, so a server restart leaves neither a gap
(within the server's history) nor a duplicate.

Connection policy: a first connection that fails ends the watch at once with a one-line
error (a wrong port should not look like a hang) unless ``wait`` is set; a connection that
drops later is retried with exponential backoff, giving up after ``max_retries`` attempts
in a row fail. Errors that a retry cannot fix (no WebSocket at that path, an auth failure)
end the watch at once.

The pieces that need no network, :func:`ws_url`, :func:`format_line` and
:func:`backoff_delay`, are plain functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketError, websocket_connect

from . import validation as v

__all__ = [
    "WatchError",
    "WatchOptions",
    "backoff_delay",
    "format_line",
    "replayed_after",
    "token_from_env",
    "watch",
    "ws_url",
]

TOKEN_ENV = "HYPERDASH_AUTH_TOKEN"
"""The same variable the server reads its token from; sent as ``Authorization: Bearer``."""

DEFAULT_MAX_RETRIES = 10
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_BACKLOG = 1
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
PING_INTERVAL = 10.0
"""Seconds between WebSocket pings: a dead peer is noticed without relying on tick cadence."""
PING_TIMEOUT = 10.0

# The replay ends at the message marked "replay": 0 (or at the first message with no
# "replay" key: live); these bound what is held before printing, whatever the server sends.
REPLAY_MAX_MESSAGES = 1000
MAX_MESSAGE_SIZE = 16 * 1024 * 1024

# Close codes after which reconnecting cannot help.
FATAL_CLOSE_CODES = {1002: "protocol error", 1003: "unsupported data",
                     1008: "policy violation (check the token)"}
CLOSE_NAMES = {1000: "normal closure", 1001: "going away", 1006: "abnormal closure",
               1011: "server error", 1012: "service restart", 1013: "try again later"}
FATAL_HTTP = {400, 401, 403, 404, 405, 426}


class WatchError(Exception):
    """A one-line reason to stop; ``fatal`` when retrying cannot help."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True, kw_only=True)
class WatchOptions:
    """How ``hyperdash watch`` behaves; the defaults are the command's."""

    raw_json: bool = False
    """Print each message as received (one JSON object a line, for ``jq``)."""
    count: int | None = None
    """Stop with exit code 0 after printing this many messages."""
    backlog: int = DEFAULT_BACKLOG
    """How many of the replayed snapshots to print on the first connect."""
    max_retries: int = DEFAULT_MAX_RETRIES
    """Failed reconnection attempts in a row before giving up (0: never reconnect)."""
    wait: bool = False
    """Retry the first connection too (start the watch before the server)."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    token: str | None = None
    color: bool = False
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP

    def __post_init__(self) -> None:
        for name in ("raw_json", "wait", "color"):
            v.flag(getattr(self, name), name)
        if self.count is not None:
            v.integer(self.count, "count", 1)
        v.integer(self.backlog, "backlog", 0)
        v.integer(self.max_retries, "max_retries", 0)
        object.__setattr__(self, "connect_timeout",
                           v.duration(self.connect_timeout, "connect_timeout", 0, low_open=True))
        for name in ("backoff_base", "backoff_cap"):
            object.__setattr__(self, name, v.duration(getattr(self, name), name, 0))


def ws_url(url: str) -> str:
    """The stream's ``ws://`` URL for a dashboard URL, or ``ValueError`` saying what is wrong.

    >>> ws_url("http://127.0.0.1:8080"), ws_url("https://ops.example.com/dash/")
    ('ws://127.0.0.1:8080/ws', 'wss://ops.example.com/dash/ws')
    >>> ws_url("localhost:8080"), ws_url("ws://h:1/ws")
    ('ws://localhost:8080/ws', 'ws://h:1/ws')
    """
    text = url.strip()
    if not text:
        raise ValueError("empty URL")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"unsupported scheme {parts.scheme!r} (use http, https, ws or wss)")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    path = parts.path
    if scheme in ("http", "https"):
        # A page URL: the stream lives at <page>/ws.
        path = path.rstrip("/")
        if not path.endswith("/ws"):
            path += "/ws"
        scheme = "ws" if scheme == "http" else "wss"
    elif path in ("", "/"):
        path = "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before the next attempt after ``failures`` failed ones in a row.

    >>> [backoff_delay(n) for n in range(7)]
    [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    """
    return min(cap, base * 2.0 ** max(0, failures - 1))


def _number(snapshot: Mapping[str, Any], key: str) -> float | None:
    value = snapshot.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _fmt(value: float | None, width: int, decimals: int = 0) -> str:
    """Right-aligned in ``width`` columns; ``-`` (aligned too) when missing."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{decimals}f}"


def _clock(timestamp: object) -> str:
    """``HH:MM:SS`` in local time for an RFC 3339 timestamp."""
    if not isinstance(timestamp, str):
        return "--:--:--"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp[:8]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime("%H:%M:%S")


HEALTH_COLORS = {"healthy": "32", "degraded": "33", "unhealthy": "31"}


def format_line(snapshot: Mapping[str, Any], *, color: bool = False) -> str:
    """One compact line for a snapshot; a field that is missing shows as ``-``. Stalled jobs
    (no progress for the server's ``stall_after``) and alerts are counted when there are any.

    >>> format_line({"timestamp": "2026-11-25T18:30:00.000Z", "jobs_active": 5,
    ...   "jobs_completed": 123, "jobs_failed": 2, "queue_length": 15, "cpu_usage": 45.25,
    ...   "memory_usage": 2048, "system_health": "healthy", "alerts": []})[10:]
    'active   5  completed    123  failed    2  queue   15  cpu  45.2%  mem   2048 MB  healthy'
    """
    health = snapshot.get("system_health")
    health_text = health if isinstance(health, str) else "-"
    if color and health_text in HEALTH_COLORS:
        health_text = f"\x1b[{HEALTH_COLORS[health_text]}m{health_text}\x1b[0m"
    line = (
        f"{_clock(snapshot.get('timestamp'))}"
        f"  active {_fmt(_number(snapshot, 'jobs_active'), 3)}"
        f"  completed {_fmt(_number(snapshot, 'jobs_completed'), 6)}"
        f"  failed {_fmt(_number(snapshot, 'jobs_failed'), 4)}"
        f"  queue {_fmt(_number(snapshot, 'queue_length'), 4)}"
        f"  cpu {_fmt(_number(snapshot, 'cpu_usage'), 5, 1)}%"
        f"  mem {_fmt(_number(snapshot, 'memory_usage'), 6)} MB"
        f"  {health_text}"
    )
    jobs = snapshot.get("recent_jobs")
    if isinstance(jobs, list):
        stalled = sum(1 for job in jobs if isinstance(job, dict) and job.get("stalled") is True)
        if stalled:
            word = f"stalled {stalled}"
            line += f"  \x1b[33m{word}\x1b[0m" if color else f"  {word}"
    alerts = snapshot.get("alerts")
    if isinstance(alerts, list) and alerts:
        line += f"  alerts {len(alerts)}"
    return line


def _error_detail(exc: HTTPClientError) -> str | None:
    """The server's own reason, from a hyperdash JSON error body, if there is one."""
    body = exc.response.body if exc.response is not None else b""
    try:
        value = json.loads(body[:4096]) if body else None
    except ValueError:
        return None
    detail = value.get("error") if isinstance(value, dict) else None
    return detail.splitlines()[0][:200] if isinstance(detail, str) and detail else None


def _describe_connect_error(target: str, exc: BaseException) -> WatchError:
    where = f"cannot connect to {target}"
    if isinstance(exc, HTTPClientError):
        if exc.code == 599:
            return WatchError(f"{where}: {exc.message or 'no response'}")
        hint = {401: " (set HYPERDASH_AUTH_TOKEN)",
                404: " (no WebSocket at this path; is it a hyperdash dashboard?)"}.get(
                    exc.code, "")
        detail = _error_detail(exc) or exc.message
        return WatchError(f"{where}: HTTP {exc.code}: {detail}{hint}",
                          fatal=exc.code in FATAL_HTTP)
    if isinstance(exc, ConnectionRefusedError):
        return WatchError(f"{where}: connection refused (is the dashboard running?)")
    if isinstance(exc, socket.gaierror):
        return WatchError(f"{where}: unknown host ({exc.strerror})")
    if isinstance(exc, ssl.SSLError):
        return WatchError(f"{where}: TLS error ({exc.reason or exc})", fatal=True)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return WatchError(f"{where}: timed out")
    if isinstance(exc, StreamClosedError):
        return WatchError(f"{where}: the server closed the connection")
    if isinstance(exc, WebSocketError):
        return WatchError(f"{where}: {exc or 'not a WebSocket endpoint'}", fatal=True)
    if isinstance(exc, OSError):
        return WatchError(f"{where}: {exc.strerror or exc}")
    return WatchError(f"{where}: {type(exc).__name__}: {exc}")


def _close_reason(conn: WebSocketClientConnection) -> tuple[str, bool]:
    code = conn.close_code
    if code is None:
        return "connection lost", False
    name = FATAL_CLOSE_CODES.get(code) or CLOSE_NAMES.get(code, "")
    text = f"server closed the stream ({code}{' ' + name if name else ''}"
    text += f": {conn.close_reason})" if conn.close_reason else ")"
    return text, code in FATAL_CLOSE_CODES


class _Printer:
    """Writes messages, dropping any whose ``seq`` is at or before the newest printed."""

    def __init__(self, out: TextIO, options: WatchOptions, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.options = options
        self.printed = 0
        self.last_seq: int | None = None
        self._warned = False

    @property
    def done(self) -> bool:
        return self.options.count is not None and self.printed >= self.options.count

    def parse(self, raw: str | bytes) -> tuple[str, dict[str, Any] | None]:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        return text, value if isinstance(value, dict) else None

    def is_new(self, snapshot: dict[str, Any] | None) -> bool:
        seq = _seq(snapshot)
        return seq is None or self.last_seq is None or seq > self.last_seq

    def reconnected(self, newest: dict[str, Any] | None) -> None:
        """A new connection's newest message so far: a seq below the last printed means a
        restarted server (its seq began again at 0), whose messages are all new."""
        seq = _seq(newest)
        if seq is not None and self.last_seq is not None and seq < self.last_seq:
            self.last_seq = None

    def emit(self, text: str, snapshot: dict[str, Any] | None) -> None:
        if self.done:
            return
        if snapshot is None and not self.options.raw_json:
            if not self._warned:
                self.err.write("hyperdash watch: skipping a message that is not a JSON object\n")
                self.err.flush()
                self._warned = True
            return
        if self.options.raw_json:
            self.out.write(text.rstrip("\n") + "\n")
        else:
            assert snapshot is not None
            self.out.write(format_line(snapshot, color=self.options.color) + "\n")
        self.out.flush()
        self.printed += 1
        seq = _seq(snapshot)
        if seq is not None:
            self.last_seq = seq


async def _connect(target: str, options: WatchOptions) -> WebSocketClientConnection:
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    request = HTTPRequest(
        target,
        headers=headers,
        connect_timeout=options.connect_timeout,
        request_timeout=options.connect_timeout * 2,
    )
    try:
        return await asyncio.wait_for(
            websocket_connect(
                request,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                max_message_size=MAX_MESSAGE_SIZE,
            ),
            options.connect_timeout * 2,
        )
    except Exception as exc:  # every failure becomes one line
        raise _describe_connect_error(target, exc) from exc


def _seq(snapshot: dict[str, Any] | None) -> int | None:
    """The message's tick sequence number (``seq``), if it has one."""
    seq = snapshot.get("seq") if snapshot else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def replayed_after(snapshot: dict[str, Any] | None) -> int | None:
    """How many replayed messages follow this one (its ``replay`` key), or None for a live
    message.

    >>> replayed_after({"seq": 3, "replay": 2}), replayed_after({"seq": 4})
    (2, None)
    """
    remaining = snapshot.get("replay") if snapshot else None
    if isinstance(remaining, int) and not isinstance(remaining, bool) and remaining >= 0:
        return remaining
    return None


Parsed = tuple[str, "dict[str, Any] | None"]


async def _read_replay(
    conn: WebSocketClientConnection, printer: _Printer
) -> tuple[list[Parsed], Parsed | None, bool]:
    """Split what arrives on connect into (replayed history, first live message, still open).

    The server marks each replayed message with how many follow: the replay is over after
    the one marked 0, or at a message with no mark (live; an empty history sends none).
    """
    burst: list[Parsed] = []
    while len(burst) < REPLAY_MAX_MESSAGES:
        message = await conn.read_message()
        if message is None:
            return burst, None, False
        parsed = printer.parse(message)
        remaining = replayed_after(parsed[1])
        if remaining is None:
            return burst, parsed, True
        burst.append(parsed)
        if remaining == 0:
            break
    return burst, None, True


async def _stream(
    conn: WebSocketClientConnection, printer: _Printer, first: bool
) -> None:
    """Print until the stream ends or ``count`` is reached."""
    replay, live, open_ = await _read_replay(conn, printer)
    newest = live or (replay[-1] if replay else None)
    printer.reconnected(None if newest is None else newest[1])
    if first:
        backlog = printer.options.backlog
        replay = replay[-backlog:] if backlog else []
    for text, snapshot in replay + ([live] if live else []):
        if printer.is_new(snapshot):
            printer.emit(text, snapshot)
    while open_ and not printer.done:
        message = await conn.read_message()
        if message is None:
            return
        text, snapshot = printer.parse(message)
        if printer.is_new(snapshot):
            printer.emit(text, snapshot)


CLOSE_WAIT = 1.0
"""Seconds the close handshake may take before the socket is cut."""


async def _close(conn: WebSocketClientConnection) -> None:
    """Close, and wait (bounded) until the socket really is closed, so none outlives us."""
    protocol = conn.protocol
    stream = None if protocol is None else protocol.stream
    conn.close(1000)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_WAIT
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        # Messages still queued are drained: the server's close frame comes after them.
        for _ in range(REPLAY_MAX_MESSAGES):
            remaining = deadline - loop.time()
            if remaining <= 0 or await asyncio.wait_for(conn.read_message(), remaining) is None:
                break
    if stream is not None and not stream.closed():
        stream.close()


async def watch(
    url: str,
    options: WatchOptions | None = None,
    *,
    out: TextIO,
    err: TextIO,
    rng: random.Random | None = None,
) -> int:
    """Follow the stream at ``url``; returns the exit code (0 done, 1 error, 2 bad URL).

    Errors are written to ``err`` as one line each; nothing is raised but cancellation.
    """
    options = options or WatchOptions()
    try:
        target = ws_url(url)
    except ValueError as exc:
        err.write(f"hyperdash watch: bad URL: {exc}\n")
        return 2
    jitter = rng or random.Random()
    printer = _Printer(out, options, err)
    failures = 0
    connected_before = False

    def say(message: str) -> None:
        err.write(f"hyperdash watch: {message}\n")
        err.flush()

    while True:
        try:
            conn = await _connect(target, options)
        except WatchError as exc:
            failures += 1
            if exc.fatal or not (connected_before or options.wait):
                say(str(exc))
                return 1
            if failures > options.max_retries:
                say(f"{exc}; giving up after {failures} attempts")
                return 1
            delay = backoff_delay(failures, options.backoff_base, options.backoff_cap)
            delay *= 1.0 + 0.1 * jitter.random()  # spread a crowd of clients out
            say(f"{exc}; retrying in {delay:.1f} s")
            await asyncio.sleep(delay)
            continue
        if connected_before:
            say(f"reconnected to {target}")
        failures = 0
        try:
            await _stream(conn, printer, first=not connected_before)
        finally:
            await _close(conn)
        connected_before = True
        if printer.done:
            return 0
        reason, fatal = _close_reason(conn)
        if fatal or options.max_retries == 0:
            say(reason)
            return 1
        delay = options.backoff_base
        say(f"{reason}; reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token to send, from ``HYPERDASH_AUTH_TOKEN`` (empty means none)."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None
