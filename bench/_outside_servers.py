"""The two baselines of bench/outside.py, each a server process streaming the same payload.

Usage: ``python -m bench._outside_servers floor|naive PORT PAYLOAD_FILE INTERVAL``.

* ``floor``: plain asyncio; the WebSocket handshake by hand; each tick the frame is built
  once and ``transport.write`` hands it to every client whose previous frame has left
  (busy ones are skipped). Nothing else runs per client: no pings, no task, no read loop
  beyond the protocol's ``data_received``. What a broadcast costs in Python at the least.
* ``naive``: Tornado's ``WebSocketHandler`` as a first version would use it: every tick
  ``write_message(text)`` to each client (a frame, a Future and a copy per client), with
  Tornado's defaults otherwise.

Both stamp the payload's ``"timestamp"`` with the time the tick starts, as hyperdash stamps
its snapshot when it takes it. Both run until SIGTERM, bounded to 15 minutes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import resource
import signal
import struct
import sys
from datetime import datetime, timezone
from typing import Any

LIFETIME = 900.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def stamped(template: bytes) -> bytes:
    """``template`` (compact JSON whose first key is "timestamp") stamped with now."""
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    rest = template[template.index(b'"', len(b'{"timestamp":"')) + 1:]
    return b'{"timestamp":"' + stamp.encode() + b'"' + rest


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


async def ticks(interval: float, tick: Any) -> None:
    """Call ``tick()`` on a fixed grid until cancelled (a late tick skips, never queues)."""
    loop = asyncio.get_running_loop()
    due = loop.time() + interval
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        tick()
        due += interval
        now = loop.time()
        while due <= now:
            due += interval


class FloorProtocol(asyncio.Protocol):
    clients: set[asyncio.Transport] = set()

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.open:
            if data[:1] and data[0] & 0x0F == 0x8:  # a close frame: answer it and go
                transport.write(b"\x88\x00")
                transport.close()
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            if len(self.head) > 8192:
                transport.close()
            return
        key = b""
        for line in self.head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                        b"\r\n\r\n")
        self.head = b""
        self.open = True
        self.clients.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.clients.discard(self.transport)


async def floor(port: int, template: bytes, interval: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", port, backlog=4096)
    clients = FloorProtocol.clients

    def tick() -> None:
        frame = text_frame(stamped(template))
        for transport in clients:
            if not transport.get_write_buffer_size():
                transport.write(frame)

    async with server:
        await ticks(interval, tick)


async def naive(port: int, template: bytes, interval: float) -> None:
    import tornado.web
    import tornado.websocket
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    clients: set[tornado.websocket.WebSocketHandler] = set()

    class Stream(tornado.websocket.WebSocketHandler):
        def open(self, *args: str, **kwargs: str) -> None:
            clients.add(self)

        def on_close(self) -> None:
            clients.discard(self)

    app = tornado.web.Application([(r"/ws", Stream)])
    server = HTTPServer(app)
    server.add_sockets(bind_sockets(port, "127.0.0.1", backlog=4096))

    def tick() -> None:
        text = stamped(template).decode()
        for client in list(clients):
            try:  # noqa: SIM105 (a with-block per client would slow the baseline down)
                client.write_message(text)
            except tornado.websocket.WebSocketClosedError:
                pass

    await ticks(interval, tick)


async def run(kind: str, port: int, template: bytes, interval: float) -> None:
    serve = floor if kind == "floor" else naive
    task = asyncio.ensure_future(serve(port, template, interval))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
        await asyncio.wait_for(task, LIFETIME)


def main() -> int:
    kind, port, path, interval = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    if kind not in ("floor", "naive"):
        raise SystemExit(f"unknown server {kind!r}: floor or naive")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(path, "rb") as f:
        template = f.read()
    if not template.startswith(b'{"timestamp":"'):
        raise SystemExit("the payload must be compact JSON starting with its timestamp")
    asyncio.run(run(kind, port, template, interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
