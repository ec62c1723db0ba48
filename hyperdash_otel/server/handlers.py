"""Thin request handlers: each reads its arguments, asks the source, writes JSON.

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
from prometheus_client.exposition import choose_encoder
from tornado.httputil import (
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerRequest,
    RequestStartLine,
    ResponseStartLine,
    format_timestamp,
)
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError
from tornado.web import HTTPError, RequestHandler
from tornado.websocket import WebSocketProtocol13

from ..source import AmbiguousJobError
from ..validation import clipped, quoted, rfc3339
from .limits import RequestLimits
from .logs import access_log
from .logs import log_exception as _log_exception
from .pool import Busy, Coalescing, Pool
from .security import (
    HSTS,
    SECURITY_HEADERS,
    BasicAuth,
    OriginPolicy,
    basic_credentials,
    presented_token,
    redact_token,
    token_matches,
)
from . import _tornado_fast
from ._tornado_fast import Connection, Writes
from .static import (
    Asset,
    ByteRange,
    HeadBlocks,
    OutsideRoot,
    StaticFiles,
    accepts_gzip,
    etag_matches,
    modified_since,
    parse_range,
)
from .stream import FanOut, Ticker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tornado.web import _HandlerDelegate

    from ..source import Source

__all__ = [
    "ApiError",
    "HealthHandler",
    "JobHandler",
    "JobsHandler",
    "MetricsApiHandler",
    "MisdirectedHandler",
    "NotFoundHandler",
    "PageHandler",
    "PrometheusHandler",
    "ServerContext",
    "StaticHandler",
    "StreamHandler",
    "accepted_tokens",
    "credentials_verdict",
    "open_upgraded",
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

    source: Source
    """What is served: the snapshot, the jobs, ``/metrics`` and the config."""
    fanout: FanOut
    ticker: Ticker
    pool: Pool
    origins: OriginPolicy
    page_path: Path
    started: float = field(default_factory=time.monotonic)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    """WebSocket connections still being served through Tornado (each runs as one task)."""
    upgraded: Upgraded = field(init=False)
    """WebSocket connections ``/ws`` upgraded itself (the fast path), still open."""
    limits: RequestLimits | None = None
    """Per-address request and failed-authentication rates (None: unlimited)."""
    expositions: Coalescing[tuple[str, bool], tuple[bytes, str]] | None = None
    """``/metrics`` encoding on its own thread, never the tick's (None: the tick's pool)."""
    http_connections: Callable[[], int] | None = None
    """HTTP connections held now (WebSockets excluded), for ``/healthz``."""
    basic: BasicAuth = field(default_factory=lambda: BasicAuth({}))
    """Users who may log in with a password (``Config.basic_auth``)."""

    def __post_init__(self) -> None:
        self.upgraded = Upgraded(self.fanout)


class Upgraded:
    """The owner of every connection ``/ws`` upgraded itself (one per server): passes
    their pongs to the fan-out and, when one closes, unsubscribes it and frees its place.
    ``open`` holds those not closed yet (shutdown waits for them, then cuts the rest)."""

    __slots__ = ("_drained", "fanout", "open")

    def __init__(self, fanout: FanOut) -> None:
        self.fanout = fanout
        self.open: set[Connection] = set()
        self._drained: asyncio.Event | None = None

    def pong(self, connection: Connection) -> None:
        self.fanout.pong(connection)

    def closed(self, connection: Connection) -> None:
        self.open.discard(connection)
        self.fanout.unsubscribe(connection)
        self.fanout.release()
        if not self.open and self._drained is not None:
            self._drained.set()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until every connection has closed, at most ``timeout`` seconds; True if
        they all did."""
        if not self.open:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def abort_all(self) -> None:
        """Cut every connection still open."""
        for connection in list(self.open):
            connection.abort()


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


MAX_PASSWORD_CHECKS = 2
"""Password (scrypt) checks running at once, per server; more answer 429 at once, so a
flood of guesses costs bounded CPU and never blocks the event loop (checks run in threads)."""
REALM = 'realm="hyperdash"'


def accepted_tokens(ctx: ServerContext, *, metrics_scope: bool = False) -> list[str]:
    """The bearer tokens an endpoint accepts: ``auth_token``, and on ``/metrics``
    (``metrics_scope``) the metrics token too."""
    config = ctx.source.config
    tokens = [] if config.auth_token is None else [config.auth_token]
    if metrics_scope and config.metrics_token is not None:
        tokens.append(config.metrics_token)
    return tokens


def credentials_verdict(ctx: ServerContext, authorization: str | None,
                        query_token: str | None, *, metrics_scope: bool = False
                        ) -> bool | tuple[str, str]:
    """The credential rule, as far as it goes without a thread: True (a token matches, a
    user and password passed before, or none is configured), False, or the user and
    password still to check (scrypt, on a thread). Used by every handler and by ``/ws``'s
    quick upgrade, which hands a password still to check to the handler."""
    tokens = accepted_tokens(ctx, metrics_scope=metrics_scope)
    basic = ctx.basic
    if not tokens and not basic:
        return True
    offered = presented_token(authorization, query_token)
    # Every token is compared (no short cut), so timing does not tell which one it was.
    if sum(token_matches(offered, token) for token in tokens):
        return True
    credentials = basic_credentials(authorization) if basic else None
    if credentials is None:
        return False
    if basic.cached(*credentials):
        return True
    return credentials


class _Common(RequestHandler):
    """Security headers, authentication and JSON errors, for every handler."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")
    requires_auth = True
    rate_limited = True
    """Counted against the per-address request rate (``Config.rate_limit``)."""
    metrics_scope = False
    """Whether ``Config.metrics_token`` opens this endpoint (``/metrics`` only)."""
    ctx: ServerContext

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no version banner for scanners
        for name, value in SECURITY_HEADERS:
            self.set_header(name, value)
        if self.request.protocol == "https":
            self.set_header("Strict-Transport-Security", HSTS)

    def _tokens(self) -> list[str]:
        return accepted_tokens(self.ctx, metrics_scope=self.metrics_scope)

    async def authorized(self) -> bool:
        """Whether the request carries a credential this endpoint accepts (or needs none):
        the bearer token (header or ``?token=``), on ``/metrics`` the metrics token, or a
        basic-auth user and password."""
        if not self.requires_auth:
            return True
        verdict = credentials_verdict(
            self.ctx, self.request.headers.get("Authorization"),
            self.get_query_argument("token", None), metrics_scope=self.metrics_scope)
        if isinstance(verdict, bool):
            return verdict
        return await self._check_password(self.ctx.basic, *verdict)

    async def _check_password(self, basic: BasicAuth, user: str, password: str) -> bool:
        if basic.running >= MAX_PASSWORD_CHECKS:
            raise ApiError(429, "too many password checks at once; retry shortly",
                           headers={"Retry-After": "1"})
        basic.running += 1  # only ever touched on the loop
        try:
            return await IOLoop.current().run_in_executor(None, basic.check, user, password)
        finally:
            basic.running -= 1

    def refused_credentials(self) -> None:
        """Called before a 401; the stream counts it."""

    def prepare(self) -> Awaitable[None] | None:
        """The rate limit, then the credentials. When this endpoint needs none (or none is
        configured) it all happens here, with no coroutine for Tornado to run: a storm of
        10,000 WebSocket upgrades pays for every object made per request."""
        limits = self.ctx.limits
        if limits is not None and self.rate_limited:
            refusal = limits.check(self.request.remote_ip or "")
            if refusal is not None:
                raise ApiError(429, f"{refusal.reason}; retry after "
                               f"{refusal.retry_after_header} s",
                               headers={"Retry-After": refusal.retry_after_header})
        if not self.requires_auth or (not self.ctx.basic and not self._tokens()):
            return None
        return self._authenticate()

    async def _authenticate(self) -> None:
        limits = self.ctx.limits
        if not await self.authorized():
            if limits is not None:
                limits.failed_auth(self.request.remote_ip or "")
            self.refused_credentials()
            raise ApiError(401, f"missing or wrong {self._wanted()}")

    def _wanted(self) -> str:
        """The credentials this endpoint accepts, as the 401 names them."""
        if not self.ctx.basic:
            return "token (Authorization: Bearer <token>)"
        if not self._tokens():
            return "user and password (Authorization: Basic)"
        return "token or user and password (Authorization: Bearer or Basic)"

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        """Tornado's, minus the raw URI: an HTTP error's detail at DEBUG (its access line
        has the status), an uncaught exception at ERROR with its traceback, rate-limited."""
        _log_exception(self, typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None)
        if message is None:
            try:
                message = HTTPStatus(status_code).phrase.lower()
            except ValueError:
                message = "error"
        if status_code == 401:
            # One challenge per scheme this endpoint accepts; Basic makes a browser ask.
            if self._tokens() or not self.ctx.basic:
                self.add_header("WWW-Authenticate", f"Bearer {REALM}")
            if self.ctx.basic:
                self.add_header("WWW-Authenticate", f'Basic {REALM}, charset="UTF-8"')
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

    async def prepare(self) -> None:
        checking = super().prepare()
        if checking is not None:
            await checking
        raise ApiError(404, f"no such endpoint: {clipped(self.request.path)}")


class MisdirectedHandler(_Common):
    """Any request whose ``Host`` is not in the allowlist, whatever its path and method:
    the answer to DNS rebinding. Refused before anything else, credentials included."""

    SUPPORTED_METHODS = RequestHandler.SUPPORTED_METHODS

    async def prepare(self) -> None:
        host = self.request.headers.get("Host", "")
        raise ApiError(
            421, f"host not allowed: {quoted(host)}; a name this server answers to must be in "
            "allowed_hosts (HYPERDASH_ALLOWED_HOSTS)",
        )


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


class StaticHandler(_Common):
    """``/static/*``: files only (a directory is a 404, never a listing), from memory.

    Not behind the token: these are the package's own files, identical in every install,
    and the browser fetches them without the page's ``?token=``. Each file's bytes and
    gzip are built once (:class:`~.static.StaticFiles`, which also says how a changed file
    is picked up and what bounds the memory); a request is answered with a strong ETag
    per representation, ``304`` on ``If-None-Match`` (or ``If-Modified-Since``),
    ``Vary: Accept-Encoding``, one byte range (``206``; several are answered with the
    whole file; one past the end is a JSON ``416``), and ``HEAD``.
    """

    requires_auth = False
    rate_limited = False

    def initialize(self, ctx: ServerContext, files: StaticFiles) -> None:  # type: ignore[override]
        self.ctx = ctx
        self.files = files

    def prepare(self) -> None:
        """Nothing to check: no credential, no rate limit (the Host rule ran already)."""

    def get(self, path: str) -> None:
        try:
            asset = self.files.get(path)
        except OutsideRoot:
            raise ApiError(403, "path outside the static directory") from None
        except ValueError:  # a NUL byte: no file system takes it
            asset = None
        if asset is None:
            raise ApiError(404, "not found")
        answer = static_answer(asset, self.request.headers, self.request.method == "HEAD")
        self.set_status(answer.status)
        for name, value in answer.headers:
            self.set_header(name, value)
        if answer.body:
            self.finish(answer.body)
        else:
            self.finish()

    head = get


@dataclass(frozen=True)
class StaticAnswer:
    """What a static file request is answered with: status, headers (beyond the security
    headers every response carries) and body (empty for HEAD and 304)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def static_answer(asset: Asset, headers: HTTPHeaders, head: bool) -> StaticAnswer:
    """The answer to a request for ``asset`` with these request headers: the encoding,
    the validators (304), one byte range (206). Raises :class:`ApiError` 416 for a range
    past the end."""
    out = [("Cache-Control", "no-cache"),  # unversioned names: revalidate (304)
           ("Last-Modified", asset.last_modified), ("Accept-Ranges", "bytes"),
           ("Vary", "Accept-Encoding")]
    wanted = headers.get("Range")
    span = None
    if wanted is not None:
        if_range = headers.get("If-Range")
        if if_range is None or if_range.strip() in (asset.etag, asset.last_modified):
            span = parse_range(wanted, len(asset.body))
    gzipped = (span is None and asset.gzipped is not None
               and accepts_gzip(headers.get("Accept-Encoding")))
    etag = asset.gzip_etag if gzipped else asset.etag
    out.append(("Etag", etag))
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        fresh = etag_matches(if_none_match, (etag,))
    else:
        since = headers.get("If-Modified-Since")
        fresh = since is not None and not modified_since(since, asset.mtime)
    if fresh:
        return StaticAnswer(304, out, b"")
    out.append(("Content-Type", asset.content_type))
    status = 200
    if span is False:
        size = len(asset.body)
        raise ApiError(416, f"range not satisfiable: the file has {size} bytes",
                       headers={"Content-Range": f"bytes */{size}"})
    if isinstance(span, ByteRange):
        status = 206
        out.append(("Content-Range", f"bytes {span.start}-{span.end}/{len(asset.body)}"))
        body = asset.body[span.start:span.end + 1]
    elif gzipped:
        assert asset.gzipped is not None
        out.append(("Content-Encoding", "gzip"))
        body = asset.gzipped
    else:
        body = asset.body
    out.append(("Content-Length", str(len(body))))
    return StaticAnswer(status, out, b"" if head else body)


_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified"}
_HTTP_HEADERS = tuple(SECURITY_HEADERS)
_HTTPS_HEADERS = (*SECURITY_HEADERS, ("Strict-Transport-Security", HSTS))


def _keeps_alive(request: HTTPServerRequest) -> bool:
    """Whether Tornado keeps this connection after the answer with no ``Connection``
    header of its own: HTTP/1.1 without ``Connection: close``, keep-alive not switched off
    (its ``_can_keep_alive`` and ``write_headers``)."""
    if request.version != "HTTP/1.1":
        return False
    value = request.headers.get("Connection")
    if value is not None and value.lower() == "close":
        return False
    params = getattr(request.connection, "params", None)
    return params is not None and not params.no_keep_alive


class StaticFast(HTTPMessageDelegate):
    """A static file's usual answers (200, 206, 304, GET or HEAD) written straight to the
    connection, below the ``RequestHandler`` layer; anything else (404, 403, 405, 416, an
    undecodable path) goes on to :class:`StaticHandler` as Tornado would route it.

    A ``RequestHandler`` costs about half a millisecond of Python per request (its set-up,
    its coroutine, eleven ``set_header`` calls and their checks); a cached file's answer
    needs none of it. The Host allowlist has already run (``DashboardApp.find_handler``);
    the static files need no credential and are not rate-limited; the answer carries the
    same security headers as every other response, and the same access-log line.
    """

    def __init__(self, fallback: _HandlerDelegate, files: StaticFiles,
                 heads: HeadBlocks | None) -> None:
        self._fallback = fallback
        self._files = files
        self._heads = heads
        """The server's pre-built heads; None writes every head through ``write_headers``
        (``HYPERDASH_FAST_PATH=0``)."""

    def headers_received(self, start_line: RequestStartLine | ResponseStartLine,
                         headers: HTTPHeaders) -> Awaitable[None] | None:
        return self._fallback.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._fallback.data_received(chunk)

    def on_connection_close(self) -> None:
        self._fallback.on_connection_close()

    def finish(self) -> None:
        if not self._answer():
            self._fallback.finish()

    def _answer(self) -> bool:
        request = self._fallback.request
        args = self._fallback.path_args
        if request.method not in ("GET", "HEAD") or len(args) != 1:
            return False
        raw = args[0]
        try:
            path = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            asset = self._files.get(path)
            if asset is None:
                return False
            answer = static_answer(asset, request.headers, request.method == "HEAD")
        except (ValueError, ApiError):  # not UTF-8, outside the root, NUL, 416: the handler's
            return False
        connection = request.connection
        assert connection is not None
        headers = ((_HTTPS_HEADERS if request.protocol == "https" else _HTTP_HEADERS)
                   + tuple(answer.headers))
        if self._heads is not None and answer.status != 206 and _keeps_alive(request):
            # The usual case: one pre-built head (only its Date line made per second) and
            # the body in one write. HTTP1Connection.write takes a head it did not format
            # (Tornado's documented pre-encoded form); it then has no Content-Length to
            # check the body against, so this path is only taken where Tornado would add
            # no Connection header of its own (HTTP/1.1, keeping the connection).
            head = self._heads.head(answer.status, _REASONS[answer.status], time.time(),
                                    headers)
            connection.write(head + answer.body if answer.body else head)
        else:
            out = HTTPHeaders()
            out["Date"] = format_timestamp(time.time())
            for name, value in headers:
                out[name] = value
            connection.write_headers(
                ResponseStartLine("", answer.status, _REASONS[answer.status]), out,
                answer.body or None)
        connection.finish()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%d %s %s (%s) %.2fms", answer.status, request.method,
                            redact_token(request.uri or ""), request.remote_ip,
                            1000.0 * request.request_time())
        return True


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
                raise ApiError(400, f"limit must be an integer, got {quoted(raw_limit)}") from None
        try:
            jobs = self.ctx.source.jobs(status=status or None, limit=limit)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        self.send_json(jobs)

    head = get


class JobHandler(_Common):
    """``/api/jobs/{id}?instance=``: one job (``instance`` picks it on a fleet; 409 when
    several instances have the id and none was named)."""

    def get(self, job_id: str) -> None:
        instance = self.get_query_argument("instance", None)
        try:
            job = (self.ctx.source.job(job_id) if instance is None
                   else self.ctx.source.job(job_id, instance=instance))
        except AmbiguousJobError as exc:
            raise ApiError(409, str(exc)) from None
        if job is None:
            where = "" if instance is None else f" on instance {quoted(instance)}"
            raise ApiError(404, f"no job with id {quoted(job_id)}{where}")
        self.send_json(job)

    head = get


class PrometheusHandler(_Common):
    """``/metrics``: the registry for Prometheus; OpenMetrics and gzip when asked.

    Encoded on a thread of its own, never the tick's; concurrent scrapes asking for the same
    format share one encoding made after they arrived (see :class:`Coalescing`).
    """

    metrics_scope = True

    async def get(self) -> None:
        accept = self.request.headers.get("Accept", "")
        gzipped = _accepts_gzip(self.request.headers.get("Accept-Encoding", ""))
        ctx = self.ctx

        def encode() -> tuple[bytes, str]:
            body, content_type = ctx.source.exposition(accept)
            return (gzip.compress(body, compresslevel=6) if gzipped else body), content_type

        if ctx.expositions is None:
            body, content_type = await ctx.pool.run(encode)
        else:
            # Same encoder, same bytes: the content type names the format and its version.
            key = (choose_encoder(accept)[1], gzipped)
            try:
                body, content_type = await ctx.expositions.run(key, encode)
            except Busy:
                raise ApiError(503, "too many different /metrics formats asked at once",
                               headers={"Retry-After": "1"}) from None
        self.set_header("Content-Type", content_type)
        self.set_header("Vary", "Accept")  # compress_response appends ", Accept-Encoding"
        self.set_header("Cache-Control", "no-store")
        if gzipped:
            self.set_header("Content-Encoding", "gzip")
        self.finish(body)

    head = get


def _accepts_gzip(header: str) -> bool:
    # Tornado's own rule for compress_response (which gzips the other endpoints), so that
    # every endpoint answers one Accept-Encoding alike.
    return "gzip" in header


HEALTH_FAILED_TICKS = 3
"""Consecutive failed ticks after which ``/healthz`` answers 503 "failing"."""
HEALTH_STALE_INTERVALS = 3
"""``/healthz`` answers 503 "stale" when no tick has succeeded for this many intervals
(and at least :data:`HEALTH_STALE_MIN` seconds)."""
HEALTH_STALE_MIN = 2.0


def health(
    *, consecutive_errors: int, last_error: str | None, since_success: float, interval: float
) -> tuple[str, str | None]:
    """``("ok", None)``, or the unhealthy state and its reason, from the ticker's record.

    ``since_success`` is the seconds since the last successful tick (or since the server
    started, before the first).

    >>> health(consecutive_errors=0, last_error=None, since_success=0.5, interval=1.0)
    ('ok', None)
    >>> health(consecutive_errors=3, last_error="ValueError", since_success=3.1, interval=1.0)
    ('failing', 'the last 3 ticks failed (ValueError)')
    """
    if consecutive_errors >= HEALTH_FAILED_TICKS:
        cause = f" ({last_error})" if last_error else ""
        return "failing", f"the last {consecutive_errors} ticks failed{cause}"
    stale_after = max(HEALTH_STALE_INTERVALS * interval, HEALTH_STALE_MIN)
    if since_success > stale_after:
        return "stale", (
            f"no tick has completed for {since_success:.1f} s "
            f"(update_interval={interval:g} s)"
        )
    return "ok", None


class HealthHandler(_Common):
    """``/healthz``: 200 while ticks succeed on schedule, 503 with the reason when they fail
    or stall; for probes and load balancers, never behind the token or the rate limit."""

    requires_auth = False
    rate_limited = False

    def get(self) -> None:
        ctx = self.ctx
        ticker = ctx.ticker
        latest = ctx.fanout.latest
        last = None if latest is None else datetime.fromtimestamp(latest.at, timezone.utc)
        now = time.monotonic()
        since = ticker.last_success if ticker.last_success is not None else ctx.started
        status, reason = health(
            consecutive_errors=ticker.consecutive_errors, last_error=ticker.last_error,
            since_success=now - since, interval=ctx.source.config.update_interval,
        )
        if status != "ok":
            self.set_status(503)
        self.send_json({
            "status": status,
            "reason": reason,
            "uptime_seconds": round(now - ctx.started, 3),
            "last_tick": None if last is None else rfc3339(last),
            "last_tick_age_seconds": (
                None if latest is None else round(max(0.0, time.time() - latest.at), 3)
            ),
            "clients": ctx.fanout.clients,
            "max_clients": ctx.fanout.max_clients,
            "http_connections": (
                None if ctx.http_connections is None else ctx.http_connections()
            ),
            "ticks": ticker.ticks,
            "tick_errors": ticker.errors,
            "ticks_skipped": ticker.skipped,
        })

    head = get


def open_upgraded(ctx: ServerContext, stream: IOStream, head: bytes,
                  settings: dict[str, Any]) -> Connection:
    """A plain-TCP stream whose upgrade to ``/ws`` passed every check (its place in the
    fan-out reserved) becomes a :class:`~._tornado_fast.Connection`: subscribed, the 101
    ``head`` sent with the replay in one write, the client's frames read. ``settings``
    are the application's (the keep-alive's ping interval and timeout)."""
    fanout = ctx.fanout
    upgraded = ctx.upgraded
    ws = Connection(stream, head, max_message=MAX_INCOMING_MESSAGE, owner=upgraded)
    upgraded.open.add(ws)
    try:
        try:
            stream.socket.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        except OSError:  # an old kernel: skip the cap
            log.debug("hyperdash: TCP_NOTSENT_LOWAT not available", exc_info=True)
        stream.set_nodelay(True)
        stream.max_write_buffer_size = fanout.history_bytes + WRITE_BUFFER_SLACK
        fanout.keep_alive(settings.get("websocket_ping_interval"),
                          settings.get("websocket_ping_timeout"))
        fanout.subscribe(ws)  # writes the 101 and the replay
        ws.start()  # the 101 if there was no replay; then reads the client's frames
    except BaseException:
        stream.close()
        ws.finish()  # unsubscribed, its place given back (once, whatever reads later)
        raise
    return ws


class StreamHandler(_Common, Writes):
    """``/ws``: the live stream. The handler subscribes, unsubscribes and writes; the
    fan-out decides what and when. The writes (``unsent``, ``send``, ``offer``) come from
    :mod:`._tornado_fast`: on Tornado's internals, or on its public API."""

    SUPPORTED_METHODS = ("GET",)

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._reserved = False

    def refused_credentials(self) -> None:
        self._reject("unauthorized")

    def _reject(self, reason: str) -> None:
        self.ctx.source.server_instruments.websocket_rejected.add(1, {"reason": reason})

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # The checks run in a plain call: this coroutine stays suspended for the life of
        # the connection, and whatever its frame holds (the request's headers) with it.
        self._admit()
        if _tornado_fast.OWN_UPGRADE and self._upgrade_here():
            return
        try:
            # WebSocketHandler.get's own checks (Upgrade, Connection, the origin) were all
            # made by _admit; its coroutine would stay suspended for the connection's life.
            self.open_args, self.open_kwargs = args, kwargs
            protocol = self.ws_connection = self.get_websocket_protocol()
            assert protocol is not None  # version 13, checked by _admit
            await protocol.accept_connection(self)
        finally:
            self._release()

    def _admit(self) -> None:
        """Every check of the handshake, then a claimed place (or an ApiError)."""
        ctx = self.ctx
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "this endpoint speaks WebSocket only (Upgrade: websocket)")
        # What Tornado would refuse with a text/html 400 of its own, refused here as JSON.
        if "upgrade" not in {v.strip().lower() for v in headers.get("Connection", "").split(",")}:
            raise ApiError(400, "a WebSocket handshake needs Connection: Upgrade")
        if not headers.get("Host"):
            raise ApiError(400, "a WebSocket handshake needs a Host header")
        if not headers.get("Sec-WebSocket-Key"):
            raise ApiError(400, "missing Sec-WebSocket-Key")
        if headers.get("Sec-WebSocket-Version") != "13":
            raise ApiError(426, "WebSocket version 13 required",
                           headers={"Sec-WebSocket-Version": "13"})
        origin = self.request.headers.get("Origin")
        if not self.check_origin_header(origin):
            self._reject("origin")
            raise ApiError(403, f"origin not allowed: {clipped(str(origin))}")
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

    def _upgrade_here(self) -> bool:
        """The fast path, once every check has passed: the 101 Tornado would write (same
        headers, same access log line), the stream detached from HTTP, and a
        :class:`~._tornado_fast.Connection` in place of this handler for the
        connection's life; the 101 goes out with the replay, in one send. False (nothing
        done) on TLS, which keeps Tornado's path."""
        connection = self.request.connection
        if type(getattr(connection, "stream", None)) is not IOStream:
            return False
        ctx = self.ctx
        self.clear_header("Content-Type")
        self.set_status(101)
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        self.set_header("Sec-WebSocket-Accept", WebSocketProtocol13.compute_accept_value(
            self.request.headers["Sec-WebSocket-Key"]))
        head = _tornado_fast.response_head(self)
        stream = self.detach()
        self.application.log_request(self)
        self._reserved = False  # the connection gives the place back when it closes
        open_upgraded(ctx, stream, head, self.settings)
        return True

    def check_origin_header(self, origin: str | None) -> bool:
        """The origin rule of :class:`~.security.OriginPolicy`: the page's own origin only
        when its host is in the Host allowlist, plus ``allowed_origins``."""
        return self.ctx.origins.allows(
            origin, host=self.request.headers.get("Host"), scheme=self.request.protocol
        )

    def check_origin(self, origin: str) -> bool:
        return self.check_origin_header(origin)

    def _release(self) -> None:
        if self._reserved:
            self._reserved = False
            self.ctx.fanout.release()

    def open(self, *args: str, **kwargs: str) -> None:
        assert self.ws_connection is not None
        stream = self.ws_connection.stream
        assert stream is not None
        self.attach(stream)
        try:
            stream.socket.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        except OSError:  # not TCP (a test's socketpair) or an old kernel: skip the cap
            log.debug("hyperdash: TCP_NOTSENT_LOWAT not available", exc_info=True)
        # The 101 response is written and its headers are never read again (Tornado's
        # set_header and friends now refuse to run); at about 1 KB they were the largest
        # thing this handler kept for the life of the connection.
        self._headers = HTTPHeaders()
        # Nor are the request's headers, the template namespace or the spent HTTP/1.1
        # connection: every object a connection keeps is one more the garbage collector
        # walks on each full collection, and at 10,000 clients those walks are most of
        # what a connect storm costs.
        self.ui = None  # type: ignore[assignment]
        self.request.headers = HTTPHeaders()
        self.request.connection = None
        self.request.server_connection = None  # (it keeps its finished serving task)
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

    # -- Sink (unsent, send and offer: from Writes) ----------------------------------------

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

    def drop(self, code: int, reason: str) -> None:
        try:
            self.close(code, reason)
        except StreamBufferFullError:
            # No room even for the close frame: cut the connection.
            if self._out is not None:
                self._out.close()
