"""Real servers on 127.0.0.1, any free port, and clients that close what they open."""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rawhttp import upgrade
from support import self_signed_certificate, wait_until
from websockets.sync.client import ClientConnection, connect

from hyperdash_otel import Dashboard
from hyperdash_otel.server.handlers import ServerContext
from hyperdash_otel.server.runner import Runner
from hyperdash_otel.server.stream import Frame

TICK = 0.05
MANUAL = 3600.0
# A plain connect() call (not a context manager) warns from websockets 17.1 on unless it says
# legacy=True; the versions before (all that Python 3.10 gets) have no such argument.
PLAIN_CONNECT: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {})
T = TypeVar("T")


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Served:
    """A dashboard served by its own :class:`Runner` from a thread, and ways to talk to it."""

    def __init__(self, dash: Dashboard, **runner: Any) -> None:
        self.dash = dash
        self.runner = Runner(dash, **runner)
        self.clients: list[ClientConnection] = []

    @property
    def port(self) -> int:
        assert self.runner.port is not None
        return self.runner.port

    @property
    def ctx(self) -> ServerContext:
        ctx = self.runner.context
        assert ctx is not None
        return ctx

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        loop = self.runner.loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def tick(self) -> Frame:
        """One tick now (for servers started with a long ``update_interval``)."""
        frame = self.on_loop(self.ctx.ticker.tick())
        assert frame is not None
        return frame

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def ws(self, path: str = "/ws", **kwargs: Any) -> ClientConnection:
        kwargs.setdefault("proxy", None)
        kwargs.setdefault("compression", None)
        kwargs.setdefault("open_timeout", 10)
        kwargs.setdefault("close_timeout", 2)
        kwargs = {**PLAIN_CONNECT, **kwargs}  # a plain call, closed by the fixture
        client: ClientConnection = connect(f"ws://127.0.0.1:{self.port}{path}", **kwargs)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self.runner.stop()

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def serve(make_dashboard: Callable[..., Dashboard]) -> Iterator[Callable[..., Served]]:
    """``serve(**config)``: a started dashboard (ticking every 50 ms unless told).

    ``runner={...}`` passes keyword arguments to the Runner (ping timings). With
    ``update_interval=MANUAL`` the server ticks once at start, then only on ``tick()``.
    """
    made: list[Served] = []

    def start(*, runner: dict[str, Any] | None = None, **config: Any) -> Served:
        config.setdefault("update_interval", TICK)
        served = Served(make_dashboard(**config), **(runner or {}))
        served.runner.start_in_thread()
        if config["update_interval"] == MANUAL:
            wait_until(lambda: served.ctx.ticker.ticks >= 1, what="the first tick")
        made.append(served)
        return served

    yield start
    for served in made:
        served.close()
        served.stop()


@pytest.fixture
def wait() -> Callable[..., Any]:
    """``wait(predicate, timeout=5.0)``: poll until truthy (never a bare sleep)."""
    return wait_until


@pytest.fixture
def raw_ws() -> Iterator[Callable[..., tuple[socket.socket, bytes]]]:
    """``raw_ws(port, rcvbuf=None, headers=None)``: a hand-made WebSocket client socket."""
    opened: list[socket.socket] = []

    def open_(port: int, **kwargs: Any) -> tuple[socket.socket, bytes]:
        sock, head = raw_upgrade(port, **kwargs)
        opened.append(sock)
        return sock, head

    yield open_
    for sock in opened:
        sock.close()


def raw_upgrade(port: int, *, rcvbuf: int | None = None, path: str = "/ws",
                headers: dict[str, str] | None = None) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake by hand on a plain socket; returns it and the response head.

    ``rcvbuf`` shrinks the socket's receive buffer before connecting (so the TCP window
    the server sees is that small), for clients that stop reading.
    """
    return upgrade(port, headers, rcvbuf=rcvbuf, path=path)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made by Debian's openssl: (cert, key)."""
    return self_signed_certificate(tmp_path)
