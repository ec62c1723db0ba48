"""The HTTP server with its connection rules: caps, a header timeout, and an accept loop
that backs off when the process runs out of descriptors.

Tornado's own accept loop treats ``EMFILE`` as an ordinary exception: the listening socket
stays readable, so the loop calls it again at once, and again, logging a traceback each
time, at full CPU, until a descriptor frees up. :class:`Acceptor` stops watching the
listener for :data:`ACCEPT_BACKOFF` seconds instead and logs the condition at most once
per :data:`LOG_INTERVAL`. :class:`GuardedHTTPServer` admits each accepted connection
through a :class:`~hyperdash_otel.server.limits.ConnectionTable`, so descriptors run out
far less often in the first place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from . import _tornado_fast
from .limits import ConnectionTable, LogThrottle

if TYPE_CHECKING:
    from .quick import QuickUpgrade

__all__ = ["ACCEPT_BACKOFF", "LOG_INTERVAL", "Acceptor", "GuardedHTTPServer"]

log = logging.getLogger("hyperdash_otel.server")

ACCEPT_BACKOFF = 0.5
"""Seconds the listener is left alone after accept() fails for lack of descriptors."""
LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same recurring condition."""
FD_HEADROOM = 16
"""When accept() runs out of descriptors, the connection cap drops to this many below the
connections then open (the longest-idle are closed), so the tick, log files and the
embedding service keep some descriptors."""
LOWERED_FOR = 60.0
"""Seconds without running out of descriptors after which the configured cap returns."""
ACCEPTS_PER_WAKEUP = 128
"""Connections accepted per readiness event, so a burst cannot starve the tick (Tornado's
own figure)."""
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept() errors that mean "no resources now": retried later, never in a loop."""
HEAD_END = rb"\r?\n\r?\n"
"""Where a request head ends: the pattern Tornado's HTTP/1.1 connection reads up to."""


class Acceptor:
    """Accepts connections on one listening socket and hands them to ``callback``.

    On :data:`EXHAUSTED` errors it pauses (the pending connections wait in the kernel's
    backlog) and resumes after ``backoff`` seconds, without a restart.
    """

    def __init__(
        self,
        sock: socket.socket,
        callback: Callable[[socket.socket, Any], None],
        *,
        backoff: float = ACCEPT_BACKOFF,
        throttle: LogThrottle | None = None,
        on_exhausted: Callable[[], None] | None = None,
    ) -> None:
        self._sock = sock
        self._callback = callback
        self._backoff = backoff
        self._on_exhausted = on_exhausted
        self._throttle = throttle or LogThrottle(LOG_INTERVAL)
        self._loop = IOLoop.current()
        self._watching = False
        self._resume: object | None = None
        self._stopped = False
        self.pauses = 0

    def start(self) -> None:
        if not self._stopped and not self._watching:
            self._loop.add_handler(self._sock, self._ready, IOLoop.READ)
            self._watching = True

    def stop(self) -> None:
        """Stop accepting for good (the server's ``stop()`` then closes the socket)."""
        self._stopped = True
        self._unwatch()
        if self._resume is not None:
            self._loop.remove_timeout(self._resume)
            self._resume = None

    @property
    def paused(self) -> bool:
        return self._resume is not None

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_handler(self._sock)
            self._watching = False

    def _ready(self, fd: Any, events: int) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            if self._stopped:
                return
            try:
                connection, address = self._sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue  # closed by the peer while still in the backlog
            except OSError as exc:
                if exc.errno in EXHAUSTED:
                    self._pause(exc)
                    return
                raise
            self._callback(connection, address)

    def _pause(self, exc: OSError) -> None:
        self.pauses += 1
        self._unwatch()
        self._resume = self._loop.call_later(self._backoff, self._wake)
        held = self._throttle.due("accept", now=time.monotonic())
        if held is not None:
            log.warning(
                "hyperdash: cannot accept connections (%s); pausing the listener for "
                "%gs at a time until descriptors free up%s", exc.strerror or exc,
                self._backoff, f" ({held} more pauses since the last message)" if held else "",
            )
        if self._on_exhausted is not None:
            self._on_exhausted()

    def _wake(self) -> None:
        self._resume = None
        self.start()


_TOO_MANY = b"too many connections from this address"
_SERVER_FULL = b"too many connections"


def _refusal(status: int, reason: str, message: bytes) -> bytes:
    body = b'{"error": "%s", "status": %d}' % (message, status)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


REFUSED_PER_ADDRESS = _refusal(429, "Too Many Requests", _TOO_MANY)
REFUSED_FULL = _refusal(503, "Service Unavailable", _SERVER_FULL)


class _Tracked(httputil.HTTPMessageDelegate):
    """Passes a request through, telling the table when its headers are complete."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, on_headers: Callable[[], None]
                 ) -> None:
        self._inner = inner
        self._on_headers = on_headers

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self._on_headers()
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()


class GuardedHTTPServer(HTTPServer):
    """Tornado's HTTPServer, with connection caps and :class:`Acceptor` for its sockets.

    ``header_timeout`` (seconds) closes a connection that has not sent a complete request
    head that long after connecting or after its previous response; ``connections`` holds
    the caps. WebSocket connections leave the table once upgraded (``max_clients`` bounds
    them). With ``quick`` (plain TCP only) each new connection's first request head is read
    here and offered to :class:`~hyperdash_otel.server.quick.QuickUpgrade`; what it does
    not take goes back to the stream for Tornado, with the same limits (``max_header_size``,
    the header timeout). Construct with ``GuardedHTTPServer(app, connections=...,
    header_timeout=..., quick=..., **HTTPServer options)``.
    """

    connections: ConnectionTable[IOStream]
    acceptors: list[Acceptor]
    quick: QuickUpgrade | None

    def initialize(  # type: ignore[override]
        self,
        request_callback: httputil.HTTPServerConnectionDelegate,
        *,
        connections: ConnectionTable[IOStream],
        header_timeout: float,
        quick: QuickUpgrade | None = None,
        **kwargs: Any,
    ) -> None:
        # Tornado names the header timeout idle_connection_timeout: it runs from the moment
        # the server starts waiting for a request head, on a new or a kept-alive connection.
        super().initialize(
            request_callback, idle_connection_timeout=header_timeout,
            body_timeout=header_timeout, **kwargs,
        )
        self.connections = connections
        self.acceptors = []
        self.quick = quick if self.ssl_options is None else None
        self._heads: set[IOStream] = set()
        """Connections whose first request head is being read for :attr:`quick`."""
        self._throttle = LogThrottle(LOG_INTERVAL)
        self._restore_at: float | None = None

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            acceptor = Acceptor(sock, self._handle_connection, throttle=self._throttle,
                                on_exhausted=self._exhausted)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = acceptor.stop
            self.acceptors.append(acceptor)
            acceptor.start()

    @property
    def accept_pauses(self) -> int:
        return sum(a.pauses for a in self.acceptors)

    def _exhausted(self) -> None:
        """Out of descriptors: hold the cap below what is open now, and make room."""
        table = self.connections
        victims = table.lower(len(table) - FD_HEADROOM)
        for stream in victims:
            stream.close()
        self._restore_at = time.monotonic() + LOWERED_FOR
        held = self._throttle.due("lowered", now=time.monotonic())
        if held is not None:
            log.warning(
                "hyperdash: out of descriptors with %d HTTP connections open; holding "
                "max_connections at %d (configured %d) for %gs", len(table) + len(victims),
                table.max_total, table.configured_total, LOWERED_FOR,
            )

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) and address else str(address)
        if self._restore_at is not None and time.monotonic() >= self._restore_at:
            self._restore_at = None
            self.connections.restore()
        admitted, victim = self.connections.admit(stream, host)
        if not admitted:
            per_address = self.connections.count(host) >= self.connections.max_per_address
            self._refuse(stream, REFUSED_PER_ADDRESS if per_address else REFUSED_FULL)
            held = self._throttle.due("refused", now=time.monotonic())
            if held is not None:
                log.warning(
                    "hyperdash: refusing connections: %s (max_connections=%d, "
                    "max_connections_per_ip=%d)%s",
                    f"{host} holds {self.connections.count(host)}" if per_address
                    else "every place holds a request in progress",
                    self.connections.max_total, self.connections.max_per_address,
                    f" ({held} more since the last message)" if held else "",
                )
            return
        if victim is not None:
            victim.close()
            held = self._throttle.due("evicted", now=time.monotonic())
            if held is not None:
                log.info(
                    "hyperdash: max_connections=%d reached; closing the longest-idle "
                    "connections to admit new ones%s", self.connections.max_total,
                    f" ({held} more since the last message)" if held else "",
                )
        if self.quick is not None and _tornado_fast.OWN_UPGRADE and _tornado_fast.QUICK_UPGRADE:
            self._read_head(stream, address)
            return
        super().handle_stream(stream, address)

    def _read_head(self, stream: IOStream, address: Any) -> None:
        """Read the first request head as Tornado would (up to ``max_header_size``, within
        the header timeout), then offer it to :attr:`quick`."""
        self.connections.idle(stream)
        self._heads.add(stream)
        params = self.conn_params
        future = cast("asyncio.Future[bytes]",  # Tornado types it as an Awaitable
                      stream.read_until_regex(HEAD_END, max_bytes=params.max_header_size))
        timeout = params.header_timeout
        # The head is often read at once, with the accept: no timer for it then.
        timer = (None if timeout is None or future.done()
                 else asyncio.get_running_loop().call_later(timeout, stream.close))

        def done(read: asyncio.Future[bytes]) -> None:
            if timer is not None:
                timer.cancel()
            self._heads.discard(stream)
            if read.cancelled() or read.exception() is not None:
                # Closed, timed out or over max_header_size: what Tornado does (the stream
                # is closed and has logged an oversized head).
                stream.close()
                self.connections.release(stream)
                return
            head = read.result()
            self.connections.busy(stream)
            assert self.quick is not None
            try:
                taken = self.quick.answer(head, stream, address)
            except Exception:  # a fault of ours: this connection ends, the server goes on
                held = self._throttle.due("quick", now=time.monotonic())
                if held is not None:
                    log.error("hyperdash: the quick upgrade failed; connection closed%s",
                              f" ({held} more since the last message)" if held else "",
                              exc_info=True)
                stream.close()
                self.connections.release(stream)
                return
            if taken:
                self.connections.release(stream)  # a WebSocket now: max_clients counts it
                return
            _tornado_fast.unread(stream, head)
            HTTPServer.handle_stream(self, stream, address)

        future.add_done_callback(done)

    async def close_all_connections(self) -> None:
        for stream in list(self._heads):  # no request yet: nothing to finish
            stream.close()
        await super().close_all_connections()

    def _refuse(self, stream: IOStream, response: bytes) -> None:
        """Close a connection over a cap; plain HTTP first gets a JSON answer if the socket
        takes it at once (never waited for: the point is to free the descriptor)."""
        if self.ssl_options is None:
            sock = stream.socket
            with contextlib.suppress(OSError):
                sock.recv(65536)  # unread input would turn the close into a reset
            with contextlib.suppress(OSError):
                sock.send(response)
        stream.close()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        # Called when the connection starts waiting for a request head: idle from now on.
        stream = _stream_of(server_conn)
        self.connections.idle(stream)
        delegate = super().start_request(server_conn, request_conn)
        return _Tracked(delegate, lambda: self.connections.busy(stream))

    def on_close(self, server_conn: object) -> None:
        self.connections.release(_stream_of(server_conn))
        super().on_close(server_conn)


def _stream_of(server_conn: object) -> IOStream:
    assert isinstance(server_conn, HTTP1ServerConnection)
    return server_conn.stream
