"""Lifecycle: start, serve, stop, and nothing left behind."""

from __future__ import annotations

import asyncio
import errno
import gc
import http.client
import inspect
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import websocket_connect
from websockets.exceptions import ConnectionClosed
from support import over_tls
from websockets.sync.client import connect

from hyperdash_otel import Dashboard


# websockets 17.1+ wants legacy=True on a plain connect() call; Python 3.10 gets 16.x, which
# has no such argument.
PLAIN_CONNECT: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {})


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def server_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("hyperdash")}


def ws_client(port: int, **kwargs: Any) -> Any:
    return connect(f"ws://127.0.0.1:{port}/ws", proxy=None, compression=None,
                   close_timeout=2, **PLAIN_CONNECT, **kwargs)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_stop_leaves_no_thread_socket_or_fd(make_dashboard: Callable[..., Dashboard],
                                            wait: Any) -> None:
    dash = make_dashboard(update_interval=0.05)
    gc.collect()
    fds_before, threads_before = open_fds(), server_threads()
    dash.start_in_thread()
    port = dash.port
    assert isinstance(port, int) and port > 0
    assert dash.url == f"http://127.0.0.1:{port}/"

    client = ws_client(port)
    client.recv(timeout=5)
    keepalive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    keepalive.request("GET", "/api/metrics")
    assert keepalive.getresponse().read()  # and the connection stays open
    assert get(port, "/metrics")[0] == 200  # the pool's threads have started
    assert server_threads() - threads_before

    dash.stop()
    with pytest.raises(ConnectionClosed) as err:
        while True:
            client.recv(timeout=5)
    assert err.value.rcvd is not None and err.value.rcvd.code == 1001
    dash.stop()  # idempotent
    dash.stop()
    assert dash.port is None and dash.url is None

    client.close()
    keepalive.close()
    assert server_threads() == threads_before
    wait(lambda: open_fds() == fds_before, what="every socket closed")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_new_server_binds_the_same_port_at_once(make_dashboard: Callable[..., Dashboard]
                                                  ) -> None:
    first = make_dashboard(update_interval=0.05)
    first.start_in_thread()
    port = first.port
    assert port is not None
    client = ws_client(port)
    client.recv(timeout=5)
    first.stop()  # the server closes first, so its side of the connection is in TIME_WAIT
    client.close()
    second = make_dashboard(update_interval=0.05, port=port)
    second.start_in_thread()
    assert second.port == port
    assert get(port, "/healthz")[0] == 200


def test_the_same_dashboard_restarts(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard(update_interval=0.05)
    for _ in range(3):
        dash.start_in_thread()
        assert dash.port is not None and get(dash.port, "/healthz")[0] == 200
        dash.stop()
        assert dash.port is None


def test_starting_twice_is_an_error(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard()
    dash.start_in_thread()
    with pytest.raises(RuntimeError, match="already serving"):
        dash.start_in_thread()
    assert dash.port is not None and get(dash.port, "/healthz")[0] == 200


def test_with_block(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard()
    with dash as served:
        assert served is dash and dash.port is not None
        assert get(dash.port, "/healthz")[0] == 200
    assert dash.port is None


def test_two_dashboards_in_one_process(make_dashboard: Callable[..., Dashboard],
                                       wait: Any) -> None:
    a, b = make_dashboard(update_interval=0.05), make_dashboard(update_interval=0.05)
    a.start_in_thread()
    b.start_in_thread()
    assert a.port != b.port
    a.update_job_metrics(active=1, completed=0, failed=0, pending=0, queue_len=0)
    b.update_job_metrics(active=2, completed=0, failed=0, pending=0, queue_len=0)
    for dash, active in ((a, 1), (b, 2)):
        assert dash.port is not None
        wait(lambda d=dash, n=active: json.loads(get(d.port, "/api/metrics")[1])["jobs_active"]
             == n)
        client = ws_client(dash.port)
        wait(lambda c=client, n=active: json.loads(c.recv(timeout=5))["jobs_active"] == n)
        client.close()
    a.stop()
    assert b.port is not None and get(b.port, "/healthz")[0] == 200


class TestListenErrors:
    def test_port_in_use(self, make_dashboard: Callable[..., Dashboard]) -> None:
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = blocker.getsockname()[1]
            threads_before = server_threads()
            dash = make_dashboard(port=port)
            with pytest.raises(OSError) as err:
                dash.start_in_thread()
            assert err.value.errno == errno.EADDRINUSE
            assert f"cannot listen on 127.0.0.1:{port}" in str(err.value)
            assert server_threads() == threads_before
            assert dash.port is None
            with pytest.raises(OSError):
                asyncio.run(dash.start())

    @pytest.mark.parametrize("host", ["no-such-host.invalid", "203.0.113.7"])
    def test_bad_host(self, make_dashboard: Callable[..., Dashboard], host: str) -> None:
        dash = make_dashboard(host=host)
        with pytest.raises(OSError, match=f"cannot listen on {host}"):
            dash.start_in_thread()
        assert dash.port is None

    def test_bad_tls_files(self, make_dashboard: Callable[..., Dashboard],
                           tmp_path: Path) -> None:
        dash = make_dashboard(tls_certfile=str(tmp_path / "no.pem"),
                              tls_keyfile=str(tmp_path / "no.key"))
        with pytest.raises(OSError):
            dash.start_in_thread()


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def settle() -> None:
    """Let tasks that were told to finish take their last steps."""
    for _ in range(100):
        if not other_tasks():
            return
        await asyncio.sleep(0.01)


def test_async_with_on_the_callers_loop(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard(update_interval=0.05)
    threads_before = server_threads()

    async def main() -> None:
        async with dash:
            assert dash.port is not None
            client = await websocket_connect(f"ws://127.0.0.1:{dash.port}/ws")
            assert json.loads(await client.read_message())["timestamp"]  # type: ignore[arg-type]
            assert other_tasks()  # ticker, watcher, the connection
        assert await client.read_message() is None
        assert client.close_code == 1001
        client.close()
        await settle()
        assert other_tasks() == set()
        assert dash.port is None

    asyncio.run(main())
    assert server_threads() == threads_before


def test_start_serves_until_cancelled(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard(update_interval=0.05)

    async def main() -> None:
        task = asyncio.create_task(dash.start())
        while dash.port is None:
            await asyncio.sleep(0.005)
        client = await websocket_connect(f"ws://127.0.0.1:{dash.port}/ws")
        await client.read_message()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # A tick sent before the cancel took effect may still arrive first (under load).
        for _ in range(100):
            if await client.read_message() is None:
                break
        assert client.close_code == 1001
        client.close()
        await settle()
        assert other_tasks() == set() and dash.port is None

    asyncio.run(main())
    assert server_threads() == set()


def test_stop_from_the_serving_loop_and_from_another_thread(
    make_dashboard: Callable[..., Dashboard]
) -> None:
    dash = make_dashboard(update_interval=0.05)

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.2, dash.stop)  # the loop's own thread
        await dash.start()  # returns once stopped
        assert dash.port is None

        task = asyncio.create_task(dash.start())
        while dash.port is None:
            await asyncio.sleep(0.005)
        stopper = threading.Thread(target=dash.stop)  # returns once the server is down
        stopper.start()
        await task
        await asyncio.get_running_loop().run_in_executor(None, stopper.join)
        assert dash.port is None

    asyncio.run(main())


def test_disabled_is_a_logged_no_op(make_dashboard: Callable[..., Dashboard],
                                    caplog: pytest.LogCaptureFixture) -> None:
    dash = make_dashboard(enabled=False)
    with caplog.at_level(logging.INFO):
        assert dash.start_in_thread() is dash
        asyncio.run(dash.start())
    assert dash.port is None
    assert "disabled" in caplog.text
    dash.stop()



def test_tls(make_dashboard: Callable[..., Dashboard], certificate: tuple[str, str]) -> None:
    cert, key = certificate
    dash = make_dashboard(update_interval=0.05, tls_certfile=cert, tls_keyfile=key)
    dash.start_in_thread()
    assert dash.port is not None and dash.url == f"https://127.0.0.1:{dash.port}/"
    context = ssl.create_default_context(cafile=cert)
    conn = http.client.HTTPSConnection("127.0.0.1", dash.port, context=context, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert json.loads(conn.getresponse().read())["status"] == "ok"
    finally:
        conn.close()
    first: list[str] = []
    over_tls(f"wss://127.0.0.1:{dash.port}/ws", context, first.append)
    assert json.loads(first[0])["timestamp"]
    with pytest.raises(OSError):  # plain HTTP on the TLS port gets nowhere
        get(dash.port, "/healthz")
