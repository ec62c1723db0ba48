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
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import tornado
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

__all__ = ["ENABLED", "ENV", "WRITTEN_FOR", "FastWrites", "PublicWrites", "Writes", "decide",
           "split_frames", "write_now"]

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


if TYPE_CHECKING:
    Writes = FastWrites
else:
    Writes = FastWrites if ENABLED else PublicWrites
"""The base class ``StreamHandler`` takes its writes from (type-checked as the fast one;
both have the same methods)."""
