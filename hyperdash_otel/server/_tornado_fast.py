"""Every use of Tornado's private internals, in one module, with a public fallback.

The fan-out writes one pre-built frame to every client on every tick. Tornado's public
``write_message`` frames the message again for each client and makes a Future, a callback
and a queue entry per call; at thousands of clients those allocations are what drives the
garbage collector. :class:`FastWrites` therefore reads ``IOStream``'s buffer and writes to
its socket directly: private attributes of Tornado 6.4 to 6.6 (``_write_buffer`` and its
``_size``, ``_total_write_index``, ``_total_write_done_index``, ``_add_io_state``,
``_handle_write``, ``_closed``), which a minor release may change.

So the fast path runs only on the versions in :data:`WRITTEN_FOR`. On any other version,
or with ``HYPERDASH_FAST_PATH=0`` in the environment (read once, at import), the server
uses :class:`PublicWrites`: Tornado's public ``write_message`` and ``ping``, and the
write Futures to know what is still unsent. The choice is logged once, and
:data:`ENABLED` says which path runs. ``make test`` runs the server suite on both.

On the fast path ``/ws`` also upgrades plain-TCP connections itself (:data:`OWN_UPGRADE`):
:func:`response_head` writes the 101 Tornado would (it reads the handler's ``_headers``
and ``_reason``), and a :class:`Connection` replaces Tornado's ``WebSocketHandler`` for
the connection's life, through public ``IOStream`` calls plus :class:`FastWrites`'s
internals. TLS connections, and the public path, keep Tornado's upgrade.

Below that, :mod:`.quick` reads each new plain-TCP connection's first request head itself
(:data:`QUICK_UPGRADE`) and answers a simple ``/ws`` handshake without Tornado's HTTP
layer; a head it does not answer goes back with :func:`unread`, which writes to
``IOStream``'s ``_read_buffer`` and ``_read_buffer_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import tornado
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.web import RequestHandler
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .wsframes import BINARY, CLOSE, PING, PONG, TEXT, FrameError, FrameParser

try:  # SIOCOUTQ, for the keep-alive rounds; elsewhere every client is simply pinged
    import fcntl
    import termios

    SIOCOUTQ: int | None = termios.TIOCOUTQ
except ImportError:  # pragma: no cover (not POSIX)
    SIOCOUTQ = None
_INT_ZERO = bytes(4)  # the ioctl's int argument

__all__ = ["CLOSE_WAIT", "ENABLED", "ENV", "OWN_UPGRADE", "QUICK_ENV", "QUICK_UPGRADE",
           "READ_CHUNK", "UPGRADE_ENV", "WRITTEN_FOR", "Connection", "FastWrites", "Owner",
           "PublicWrites", "Writes", "close_frame", "decide", "response_head",
           "split_frames", "unread", "write_now"]

log = logging.getLogger("hyperdash_otel.server")

ENV = "HYPERDASH_FAST_PATH"
"""Environment variable: ``0`` forces the public path (to test it, or on a Tornado whose
internals misbehave); anything else, or unset, lets the version decide."""
WRITTEN_FOR = ((6, 4), (6, 5), (6, 6))
"""Tornado minor releases whose internals :class:`FastWrites` was written and tested for
(pyproject.toml's bound, ``tornado>=6.4,<6.7``, matches)."""


def decide() -> bool:
    """Whether the fast path may run here: the environment and the Tornado version."""
    if os.environ.get(ENV, "").strip() == "0":
        log.info("hyperdash: %s=0: WebSockets are written through Tornado's public API", ENV)
        return False
    if tuple(tornado.version_info[:2]) not in WRITTEN_FOR:
        log.warning(
            "hyperdash: Tornado %s is not one the fast write path was written for (%s); "
            "WebSockets are written through Tornado's public API instead", tornado.version,
            ", ".join(f"{a}.{b}" for a, b in WRITTEN_FOR),
        )
        return False
    return True


ENABLED = decide()
"""Whether the fan-out writes through :class:`FastWrites` (decided once, at import)."""
UPGRADE_ENV = "HYPERDASH_OWN_UPGRADE"
"""Environment variable: ``0`` keeps Tornado's ``WebSocketHandler`` for ``/ws`` while the
fast writes stay on (to compare the two upgrades in ``python -m bench outside``)."""
OWN_UPGRADE = ENABLED and os.environ.get(UPGRADE_ENV, "").strip() != "0"
"""Whether ``/ws`` upgrades plain-TCP connections itself (:class:`Connection`) instead of
through Tornado's ``WebSocketHandler``: the fast path, unless :data:`UPGRADE_ENV` is
``0``. Read on each upgrade, so tests can compare both."""


QUICK_ENV = "HYPERDASH_QUICK_UPGRADE"
"""Environment variable: ``0`` keeps ``/ws``'s own upgrade in its ``RequestHandler``
(after Tornado's HTTP/1.1 parsing and routing) instead of :mod:`.quick`'s, to compare the
two in the benches."""
QUICK_UPGRADE = OWN_UPGRADE and os.environ.get(QUICK_ENV, "").strip() != "0"
"""Whether a new plain-TCP connection's first request head is read by
:class:`~hyperdash_otel.server.quick.QuickUpgrade`, which answers a ``/ws`` upgrade that
passes every check itself and hands anything else to Tornado (:func:`unread`). Read on
each connection, so tests can compare."""


def unread(stream: IOStream, data: bytes) -> None:
    """Put ``data``, just read from ``stream``, back in front of its read buffer: the next
    read (Tornado's HTTP/1.1 connection reading the request head) sees it first. Only
    between reads (no read pending, no user buffer), as :mod:`.quick` calls it."""
    assert stream._read_future is None and not stream._user_read_buffer
    stream._read_buffer[:0] = data
    stream._read_buffer_size += len(data)


def write_now(stream: IOStream, data: bytes) -> None:
    """``stream.write(data)`` minus the Future nobody awaits.

    The fan-out never waits for a write: it learns of progress from the size of the
    stream's buffer. This does the rest of what ``write`` does (``tests/server`` holds it
    to Tornado's behaviour): the same buffer limit, the same bookkeeping, an immediate
    attempt to send, a wakeup for the rest.

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


class _Writes(WebSocketHandler):
    """What both paths share: the connection's stream, once open."""

    _out: IOStream | None = None
    _plain = False
    """The stream is plain TCP (not TLS): frames may go straight to its socket."""

    def attach(self, stream: IOStream) -> None:
        """Write to ``stream`` from now on (called once the connection is open)."""
        self._out = stream
        self._plain = type(stream) is IOStream

    @property
    def connection_stream(self) -> IOStream | None:
        """The connection's stream once open, else None."""
        return self._out


class FastWrites(_Writes):
    """The fan-out's half of a client (:class:`~hyperdash_otel.server.stream.Sink`'s
    ``unsent``, ``send``, ``offer``) on Tornado's internals."""

    def unsent(self) -> int:
        out = self._out
        if out is None:
            return 0
        # _StreamBuffer's own counter: len() would be one more Python call per client.
        # A stream that closed (its close callback not run yet) has no buffer any more.
        buffer = out._write_buffer
        return 0 if buffer is None else buffer._size

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


def split_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(opcode, payload)`` of each unmasked, final frame in ``data``: the frames the
    fan-out builds (text frames from ``text_frame``, and ``PING_FRAME``).

    >>> list(split_frames(b"\\x81\\x02hi\\x89\\x00"))
    [(1, b'hi'), (9, b'')]
    """
    at = 0
    while at < len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, at)
            at += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, at)
            at += 8
        yield opcode, data[at:at + size]
        at += size


class PublicWrites(_Writes):
    """The fallback: the same three calls on Tornado's public API only. Each frame is sent
    with ``write_message`` (text) or ``ping``; what is unsent is the size of the messages
    whose write Future has not resolved yet."""

    _pending = 0

    def unsent(self) -> int:
        return self._pending

    def send(self, frame: bytes) -> None:
        ws = self.ws_connection
        if ws is None or ws.is_closing():
            return  # on_close follows and unsubscribes
        try:
            for opcode, payload in split_frames(frame):
                if opcode == 0x9:
                    self.ping(payload)
                else:
                    self._write(payload)
        except WebSocketClosedError:
            return  # closing meanwhile: on_close follows

    def offer(self, frame: bytes) -> bool:
        if self._pending:
            return False
        self.send(frame)
        return True

    def _write(self, payload: bytes) -> None:
        size = len(payload)
        # bytes with binary=False: a text frame of these (UTF-8) bytes, as the fast path sends
        written = self.write_message(payload)
        self._pending += size

        def done(future: Any) -> None:
            self._pending -= size
            if not future.cancelled():
                future.exception()  # retrieved: a closed connection is on_close's business

        written.add_done_callback(done)


READ_CHUNK = 8192
"""Most bytes one read callback takes from a client's socket (clients send only a few
small control frames; a longer message is read in pieces and refused from its header)."""
CLOSE_WAIT = 5.0
"""Seconds a connection the server closed waits for the client's close frame before the
socket is cut (Tornado's own wait)."""


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A server's close frame: ``code`` and ``reason`` (none at all when ``code`` is None).

    >>> close_frame(1000, "bye")
    b'\\x88\\x05\\x03\\xe8bye'
    """
    body = b"" if code is None else struct.pack("!H", code) + reason.encode()[:123]
    return struct.pack("!BB", 0x88, len(body)) + body


def response_head(handler: RequestHandler) -> bytes:
    """The response head ``handler.finish()`` would write for its status and headers, with
    the application's transforms applied (for a 101: the ``Vary`` header Tornado's gzip
    transform adds), as HTTP/1.1 sends it; for the upgrade that writes it itself."""
    status, headers = handler.get_status(), handler._headers
    for transform in handler.application.transforms:
        status, headers, _ = transform(handler.request).transform_first_chunk(
            status, headers, b"", True)
    lines = [f"HTTP/1.1 {status} {handler._reason}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.get_all()]
    lines.append("\r\n")
    return "".join(lines).encode("latin1")


class Owner(Protocol):
    """What a :class:`Connection` reports to: one object for all of them."""

    def pong(self, connection: Connection) -> None:
        """``connection``'s client answered a ping."""

    def closed(self, connection: Connection) -> None:
        """``connection``'s stream has closed (called once)."""


class Connection:
    """A WebSocket the server upgraded itself: the fan-out's sink on the fast path.

    Tornado's ``WebSocketHandler`` keeps, for each connection's life, the handler and its
    request, a protocol object and a chain of seven coroutines, a task and five contexts
    reading frames: about 50 objects the garbage collector walks on every full
    collection, which at 10,000 clients was most of what a connect storm cost. This keeps
    itself (slots), the stream and one pending read whose done-callback is the
    connection itself (no bound method, no coroutine). It parses the client's frames with
    :class:`~.wsframes.FrameParser` (made on its first bytes): pongs reach the fan-out,
    pings are answered, text is ignored, a close is echoed and ends the connection, a
    message over ``max_message`` is refused with 1009 and a protocol error with its code.
    Writes are :class:`FastWrites`'s; the first one carries the 101 response in front.

    ``owner`` (one for all connections: nothing per connection but the reference) hears
    of each pong and, once, of the stream's close.
    """

    __slots__ = ("_closer", "_head", "_max_message", "_owner", "_parser", "_plain",
                 "closing", "stream")

    def __init__(self, stream: IOStream, head: bytes, *, max_message: int,
                 owner: Owner) -> None:
        self.stream = stream
        self._plain = type(stream) is IOStream
        self._head = head
        """The 101 response, sent in front of the first write (normally the replay)."""
        self._max_message = max_message
        self._owner: Owner | None = owner
        self._parser: FrameParser | None = None
        self._closer: asyncio.TimerHandle | None = None
        self.closing = False
        """A close frame was sent or received: nothing more is written but the close."""

    # -- reading ----------------------------------------------------------------------------

    def start(self) -> None:
        """Send the 101 if nothing has carried it yet, then read the client's frames."""
        if self._head:
            try:
                self._write(b"")
            except (StreamClosedError, StreamBufferFullError):
                self.stream.close()
        self._read()

    def _read(self) -> None:
        try:
            future = self.stream.read_bytes(READ_CHUNK, partial=True)
        except StreamClosedError:
            self._closed()
            return
        # Tornado types it as an Awaitable; it is an asyncio Future (tornado.concurrent).
        cast("asyncio.Future[bytes]", future).add_done_callback(self)

    def __call__(self, future: asyncio.Future[bytes]) -> None:
        """A read finished: handle what came, read again; or the stream has closed."""
        if future.cancelled() or future.exception() is not None:
            self._closed()
            return
        data = future.result()
        parser = self._parser
        if parser is None:
            parser = self._parser = FrameParser(self._max_message)
        try:
            messages = parser.feed(data)
        except FrameError as err:
            self._fail(err.code, err.reason)
            messages = []
        for opcode, payload in messages:
            if opcode == PONG:
                if self._owner is not None:
                    self._owner.pong(self)
            elif opcode == PING:
                self._control(0x8A, payload)
            elif opcode == CLOSE:
                self._peer_closed(payload)
                break
            # TEXT and BINARY: the stream is one-way; what a client says is ignored.
            assert opcode in (PONG, PING, TEXT, BINARY)
        # No read is pending here, so a stream closed meanwhile signals no one: say it.
        if self.stream.closed():
            self._closed()
        else:
            self._read()

    def _control(self, first: int, payload: bytes) -> None:
        if self.closing:
            return
        try:
            self._write(struct.pack("!BB", first, len(payload)) + payload)
        except (StreamClosedError, StreamBufferFullError):
            self.stream.close()

    def _peer_closed(self, payload: bytes) -> None:
        """The client's close frame: echo its code (RFC 6455 section 5.5.1) unless ours
        went first, then cut."""
        if not self.closing:
            self.closing = True
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            with contextlib.suppress(StreamClosedError, StreamBufferFullError):
                self._write(close_frame(code))
        self.stream.close()

    def _fail(self, code: int, reason: str) -> None:
        """The client broke the protocol: a close frame saying how, and the socket cut."""
        if not self.closing:
            self.closing = True
            with contextlib.suppress(StreamClosedError, StreamBufferFullError):
                self._write(close_frame(code, reason))
        self.stream.close()

    def finish(self) -> None:
        """The connection is over (its stream closed, or it never got going): tell the
        owner, once; later calls, and a read callback after this one, do nothing."""
        self._closed()

    def _closed(self) -> None:
        closer = self._closer
        if closer is not None:
            self._closer = None
            closer.cancel()
        self.closing = True
        self._parser = None
        owner = self._owner
        if owner is not None:
            self._owner = None
            owner.closed(self)

    # -- the fan-out's sink -----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        head = self._head
        if head:
            self._head = b""
            data = head + data  # the 101 and the replay in one send
        write_now(self.stream, data)

    def unsent(self) -> int:
        buffer = self.stream._write_buffer
        return 0 if buffer is None else buffer._size

    def unacked(self) -> int:
        sock = self.stream.socket
        if sock is None or SIOCOUTQ is None:
            return 1  # unknown: the keep-alive round pings it
        try:
            queued = fcntl.ioctl(sock.fileno(), SIOCOUTQ, _INT_ZERO)
        except OSError:  # closed meanwhile: the read callback follows
            return 1
        return int.from_bytes(queued, sys.byteorder, signed=True)

    def send(self, frame: bytes) -> None:
        if self.closing:
            return  # the close follows
        self._write(frame)

    def offer(self, frame: bytes) -> bool:
        # FastWrites.offer for this class: the fan-out's call per client and tick.
        if self.closing:
            return True  # the close follows and unsubscribes
        out = self.stream
        buffer = out._write_buffer
        if buffer is None:  # closed, its read callback not run yet: the fan-out drops it
            raise StreamClosedError(real_error=out.error)
        if buffer._size:
            return False
        if not self._plain or self._head:
            self._write(frame)
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
        """Send a close frame; the socket is cut when the client answers, or after
        :data:`CLOSE_WAIT` seconds (at once if not even the close frame fits)."""
        if self.closing:
            return
        self.closing = True
        stream = self.stream
        try:
            self._write(close_frame(code, reason))
        except StreamBufferFullError:
            stream.close()  # no room even for the close frame: cut the connection
            return
        except StreamClosedError:
            return
        if not stream.closed():
            self._closer = asyncio.get_running_loop().call_later(CLOSE_WAIT, stream.close)

    @property
    def connection_stream(self) -> IOStream:
        """The connection's stream (as ``StreamHandler.connection_stream``)."""
        return self.stream

    def abort(self) -> None:
        """Cut the socket now (shutdown, once the close grace has passed)."""
        self.stream.close()


if TYPE_CHECKING:
    Writes = FastWrites
else:
    Writes = FastWrites if ENABLED else PublicWrites
"""The base class ``StreamHandler`` takes its writes from (type-checked as the fast one;
both have the same methods)."""
