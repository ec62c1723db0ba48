"""Thin request handlers: each reads its arguments, asks the dashboard, writes JSON.

Every response carries the security headers; every error is JSON
(``{"error": "...", "status": N}``), never an HTML page or a traceback.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:  # SIOCOUTQ, for the keep-alive rounds; elsewhere every client is simply pinged
    import fcntl
    import termios

    SIOCOUTQ: int | None = termios.TIOCOUTQ
except ImportError:  # pragma: no cover (not POSIX)
    SIOCOUTQ = None
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.web import HTTPError, RequestHandler, StaticFileHandler
from tornado.websocket import WebSocketHandler

from ..validation import rfc3339
from .pool import Pool
from .security import SECURITY_HEADERS, OriginPolicy, presented_token, token_matches
from .stream import FanOut, Ticker

if TYPE_CHECKING:
    from ..dashboard import Dashboard

__all__ = [
    "ApiError",
    "HealthHandler",
    "JobHandler",
    "JobsHandler",
    "MetricsApiHandler",
    "NotFoundHandler",
    "PageHandler",
    "PrometheusHandler",
    "ServerContext",
    "StaticHandler",
    "StreamHandler",
]

log = logging.getLogger("hyperdash_otel.server")

JSON_TYPE = "application/json"
PLACEHOLDER_PAGE = (
    b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hyperdash</title>"
    b"</head><body><h1>hyperdash</h1><p>The page is not installed; the JSON API is at "
    b"<a href=\"api/metrics\">api/metrics</a> and the stream at <code>/ws</code>.</p>"
    b"</body></html>"
)

# Kernel-side cap on bytes queued but not yet sent per WebSocket. Without it Linux lets
# a stuck client's socket absorb megabytes, so Tornado's buffer looks empty and the
# fan-out keeps writing for minutes; with it the skip rule starts within a few ticks.
NOTSENT_LOWAT = 64 * 1024
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # 25 on Linux
_INT_ZERO = bytes(4)  # the ioctl's int argument (SIOCOUTQ, named TIOCOUTQ in termios)
WRITE_BUFFER_SLACK = 4 * 1024 * 1024
"""Tornado-side cap per WebSocket beyond the history replayed on connect. After the replay
the fan-out writes only into an empty buffer, so one frame plus control frames is the
most it ever holds; a frame larger than this closes that client instead of growing."""
MAX_INCOMING_MESSAGE = 4096
"""Clients have nothing to say; a message larger than this closes the connection (1009)."""


@dataclass
class ServerContext:
    """What the handlers share: one per running server."""

    dashboard: Dashboard
    fanout: FanOut
    ticker: Ticker
    pool: Pool
    origins: OriginPolicy
    page_path: Path
    started: float = field(default_factory=time.monotonic)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    """WebSocket connections still being served (each runs as one task)."""

    def counter(self, name: str) -> Any:
        return self.dashboard.telemetry.instrument(name)


class ApiError(HTTPError):
    """An HTTP error whose ``message`` the client sees in the JSON body."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.message = message
        self.headers = headers or {}


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode("utf-8")


class _Common(RequestHandler):
    """Security headers, bearer-token auth and JSON errors, for every handler."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")
    requires_auth = True
    ctx: ServerContext

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no version banner for scanners
        for name, value in SECURITY_HEADERS:
            self.set_header(name, value)

    def authorized(self) -> bool:
        expected = self.ctx.dashboard.config.auth_token
        if expected is None or not self.requires_auth:
            return True
        offered = presented_token(
            self.request.headers.get("Authorization"),
            self.get_query_argument("token", None),
        )
        return token_matches(offered, expected)

    def prepare(self) -> None:
        if not self.authorized():
            raise ApiError(401, "missing or wrong token (Authorization: Bearer <token>)")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None)
        if message is None:
            try:
                message = HTTPStatus(status_code).phrase.lower()
            except ValueError:
                message = "error"
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="hyperdash"')
        elif status_code == 405:
            self.set_header("Allow", ", ".join(self.SUPPORTED_METHODS))
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", JSON_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(error_body(status_code, message))

    def send_json(self, value: Any) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class NotFoundHandler(_Common):
    """Any path not in the routing table, with any method."""

    SUPPORTED_METHODS = RequestHandler.SUPPORTED_METHODS

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"no such endpoint: {self.request.path}")


class PageHandler(_Common):
    """``/``: the page, served as written (it is plain HTML, not a template)."""

    def get(self) -> None:
        try:
            body = self.ctx.page_path.read_bytes()
        except FileNotFoundError:
            body = PLACEHOLDER_PAGE
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(body)

    head = get


class StaticHandler(_Common, StaticFileHandler):
    """``/static/*``: files only (a directory is a 404, never a listing).

    Not behind the token: these are the package's own files, identical in every install,
    and the browser fetches them without the page's ``?token=``.
    """

    requires_auth = False

    def initialize(self, ctx: ServerContext, path: str) -> None:  # type: ignore[override]
        self.ctx = ctx
        StaticFileHandler.initialize(self, path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if Path(absolute_path).is_dir():
            raise ApiError(404, "not found")
        return super().validate_absolute_path(root, absolute_path)


class MetricsApiHandler(_Common):
    """``/api/metrics``: the last tick's JSON, byte for byte what the stream sent."""

    async def get(self) -> None:
        payload = await self.ctx.ticker.current_payload()
        self.set_header("Content-Type", JSON_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(payload)

    head = get


class JobsHandler(_Common):
    """``/api/jobs?status=&limit=``: recent jobs, newest first."""

    def get(self) -> None:
        status = self.get_query_argument("status", None)
        raw_limit = self.get_query_argument("limit", None)
        limit: int | None = None
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
            except ValueError:
                raise ApiError(400, f"limit must be an integer, got {raw_limit!r}") from None
        try:
            jobs = self.ctx.dashboard.jobs(status=status or None, limit=limit)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        self.send_json(jobs)

    head = get


class JobHandler(_Common):
    """``/api/jobs/{id}``: one job."""

    def get(self, job_id: str) -> None:
        job = self.ctx.dashboard.job(job_id)
        if job is None:
            raise ApiError(404, f"no job with id {job_id!r}")
        self.send_json(job)

    head = get


class PrometheusHandler(_Common):
    """``/metrics``: the registry for Prometheus; OpenMetrics and gzip when asked."""

    async def get(self) -> None:
        accept = self.request.headers.get("Accept", "")
        gzipped = _accepts_gzip(self.request.headers.get("Accept-Encoding", ""))
        body, content_type = await self.ctx.pool.run(self._encode, accept, gzipped)
        self.set_header("Content-Type", content_type)
        self.set_header("Vary", "Accept")  # compress_response appends ", Accept-Encoding"
        self.set_header("Cache-Control", "no-store")
        if gzipped:
            self.set_header("Content-Encoding", "gzip")
        self.finish(body)

    def _encode(self, accept: str, gzipped: bool) -> tuple[bytes, str]:
        body, content_type = self.ctx.dashboard.exposition(accept)
        return (gzip.compress(body, compresslevel=6) if gzipped else body), content_type

    head = get


def _accepts_gzip(header: str) -> bool:
    # Tornado's own rule for compress_response (which gzips the other endpoints), so that
    # every endpoint answers one Accept-Encoding alike.
    return "gzip" in header


class HealthHandler(_Common):
    """``/healthz``: liveness for probes and load balancers; never behind the token."""

    requires_auth = False

    def get(self) -> None:
        ctx = self.ctx
        latest = ctx.fanout.latest
        last = None if latest is None else datetime.fromtimestamp(latest.at, timezone.utc)
        self.send_json({
            "status": "ok",
            "uptime_seconds": round(time.monotonic() - ctx.started, 3),
            "last_tick": None if last is None else rfc3339(last),
            "last_tick_age_seconds": (
                None if latest is None else round(max(0.0, time.time() - latest.at), 3)
            ),
            "clients": ctx.fanout.clients,
            "max_clients": ctx.fanout.max_clients,
            "ticks": ctx.ticker.ticks,
            "tick_errors": ctx.ticker.errors,
        })

    head = get


def write_now(stream: IOStream, data: bytes) -> None:
    """``stream.write(data)`` minus the Future nobody awaits.

    The fan-out never waits for a write: it learns of progress from the size of the
    stream's buffer. ``IOStream.write`` makes a Future, a callback and a queue entry per
    call, and at thousands of clients per tick those allocations are what drives the
    garbage collector. This does the rest of what ``write`` does (Tornado 6.x internals;
    ``tests/server/test_websocket.py`` holds it to Tornado's behaviour): the same buffer
    limit, the same bookkeeping, an immediate attempt to send, a wakeup for the rest.

    On a plain TCP stream with nothing queued (the fan-out's usual case) the bytes go
    straight to ``socket.send``, as asyncio's ``transport.write`` does: only what the
    kernel did not take enters Tornado's buffer. TLS streams take Tornado's own path.
    """
    if stream._closed:  # closed() and len() below without their calls: once per client and tick
        raise StreamClosedError(real_error=stream.error)
    buffer = stream._write_buffer
    limit = stream.max_write_buffer_size
    if not buffer._size and type(stream) is IOStream:
        if limit is not None and len(data) > limit:
            raise StreamBufferFullError("Reached maximum write buffer size")
        try:
            sent = stream.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # what _handle_write does with a write error
            stream.close(exc_info=exc)
            return
        stream._total_write_index += len(data)
        stream._total_write_done_index += sent
        if sent == len(data):
            return
        buffer.append(data[sent:])
        stream._add_io_state(IOLoop.WRITE)
        return
    if limit is not None and len(buffer) + len(data) > limit:
        raise StreamBufferFullError("Reached maximum write buffer size")
    buffer.append(data)
    stream._total_write_index += len(data)
    stream._handle_write()
    if stream._write_buffer and not stream.closed():
        stream._add_io_state(IOLoop.WRITE)


class StreamHandler(_Common, WebSocketHandler):
    """``/ws``: the live stream. The handler subscribes, unsubscribes and writes; the
    fan-out decides what and when."""

    SUPPORTED_METHODS = ("GET",)

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._reserved = False
        self._out: IOStream | None = None

    def prepare(self) -> None:
        if not self.authorized():
            self._reject("unauthorized")
        super().prepare()

    def _reject(self, reason: str) -> None:
        self.ctx.counter("hyperdash.websocket.rejected").add(1, {"reason": reason})

    async def get(self, *args: Any, **kwargs: Any) -> None:
        ctx = self.ctx
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "this endpoint speaks WebSocket only (Upgrade: websocket)")
        if not headers.get("Sec-WebSocket-Key"):
            raise ApiError(400, "missing Sec-WebSocket-Key")
        if headers.get("Sec-WebSocket-Version") != "13":
            raise ApiError(426, "WebSocket version 13 required",
                           headers={"Sec-WebSocket-Version": "13"})
        origin = self.request.headers.get("Origin")
        if not self.check_origin_header(origin):
            self._reject("origin")
            raise ApiError(403, f"origin not allowed: {origin}")
        # Checked and claimed in one step on the loop: no await between them, so parallel
        # upgrades cannot both take the last place.
        if not ctx.fanout.reserve():
            if ctx.fanout.closed:
                raise ApiError(503, "server shutting down")
            self._reject("max_clients")
            raise ApiError(
                503, f"too many clients (max_clients={ctx.fanout.max_clients})",
                headers={"Retry-After": "5"},
            )
        self._reserved = True
        task = asyncio.current_task()
        if task is not None:
            ctx.tasks.add(task)
            task.add_done_callback(ctx.tasks.discard)
        try:
            await super().get(*args, **kwargs)
        finally:
            self._release()

    def check_origin_header(self, origin: str | None) -> bool:
        return self.ctx.origins.allows(
            origin, host=self.request.headers.get("Host"), scheme=self.request.protocol
        )

    def check_origin(self, origin: str) -> bool:
        return self.check_origin_header(origin)

    def _release(self) -> None:
        if self._reserved:
            self._reserved = False
            self.ctx.fanout.release()

    _plain = False
    """Set in open(): the stream is plain TCP (not TLS), frames may go straight to its socket."""

    def open(self, *args: str, **kwargs: str) -> None:
        assert self.ws_connection is not None
        stream = self.ws_connection.stream
        assert stream is not None
        self._out = stream
        self._plain = type(stream) is IOStream
        try:
            stream.socket.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        except OSError:  # not TCP (a test's socketpair) or an old kernel: skip the cap
            log.debug("hyperdash: TCP_NOTSENT_LOWAT not available", exc_info=True)
        # The 101 response is written and its headers are never read again (Tornado's
        # set_header and friends now refuse to run); at about 1 KB they were the largest
        # thing this handler kept for the life of the connection.
        self._headers = HTTPHeaders()
        fanout = self.ctx.fanout
        stream.max_write_buffer_size = fanout.history_bytes + WRITE_BUFFER_SLACK
        self.set_nodelay(True)
        settings = self.settings
        fanout.keep_alive(settings.get("websocket_ping_interval"),
                          settings.get("websocket_ping_timeout"))
        fanout.subscribe(self)

    @property
    def ping_interval(self) -> float | None:
        """None: no ping task per connection. The fan-out pings every client from one
        timer with the application's ``websocket_ping_interval``/``_timeout``
        (:meth:`FanOut.keep_alive <hyperdash_otel.server.stream.FanOut.keep_alive>`)."""
        return None

    def on_message(self, message: str | bytes) -> None:
        """Ignored: the stream is one-way (oversized messages are refused by Tornado)."""

    def on_pong(self, data: bytes) -> None:
        self.ctx.fanout.pong(self)

    def on_close(self) -> None:
        self.ctx.fanout.unsubscribe(self)
        self._release()

    # -- Sink -------------------------------------------------------------------------------

    def unsent(self) -> int:
        out = self._out
        if out is None:
            return 0
        # _StreamBuffer's own counter: len() would be one more Python call per client.
        # A stream that closed (its close callback not run yet) has no buffer any more.
        buffer = out._write_buffer
        return 0 if buffer is None else buffer._size

    def unacked(self) -> int:
        out = self._out
        sock = None if out is None else out.socket
        if sock is None or SIOCOUTQ is None:
            return 1  # unknown: the keep-alive round pings it
        try:
            queued = fcntl.ioctl(sock.fileno(), SIOCOUTQ, _INT_ZERO)
        except OSError:  # closed meanwhile: on_close follows
            return 1
        return int.from_bytes(queued, sys.byteorder, signed=True)

    def send(self, frame: bytes) -> None:
        ws = self.ws_connection
        out = self._out
        if ws is None or out is None or ws.is_closing():
            return  # on_close follows and unsubscribes
        write_now(out, frame)

    def offer(self, frame: bytes) -> bool:
        # unsent() and send() in one call, with write_now's fast path inlined: the fan-out
        # makes this call for every client on every tick, and each Python call counts.
        ws = self.ws_connection
        out = self._out
        if ws is None or out is None or ws.server_terminated or ws.client_terminated:
            return True  # on_close follows and unsubscribes
        buffer = out._write_buffer
        if buffer is None:  # closed, its on_close not run yet: the fan-out drops it
            raise StreamClosedError(real_error=out.error)
        if buffer._size:
            return False
        if not self._plain:
            write_now(out, frame)
            return True
        limit = out.max_write_buffer_size
        if limit is not None and len(frame) > limit:
            raise StreamBufferFullError("Reached maximum write buffer size")
        try:
            sent = out.socket.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # what _handle_write does with a write error
            out.close(exc_info=exc)
            return True
        out._total_write_index += len(frame)
        out._total_write_done_index += sent
        if sent < len(frame):
            buffer.append(frame[sent:])
            out._add_io_state(IOLoop.WRITE)
        return True

    def drop(self, code: int, reason: str) -> None:
        try:
            self.close(code, reason)
        except StreamBufferFullError:
            # No room even for the close frame: cut the connection.
            if self._out is not None:
                self._out.close()
