"""The live stream over real sockets, with real WebSocket clients."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import sys
import json
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import sample
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hyperdash_otel import JobInfo
from hyperdash_otel.server import _tornado_fast
from hyperdash_otel.server._tornado_fast import Connection, FastWrites, write_now
from hyperdash_otel.server.handlers import NOTSENT_LOWAT, StreamHandler
from hyperdash_otel.server.stream import (
    CLOSE_GOING_AWAY,
    CLOSE_TOO_SLOW,
    FanOut,
    Frame,
    light_snapshot,
    text_frame,
)

MANUAL = 3600.0  # ticks once at start, then only when a test calls tick()


def recv_json(client: Any, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(client.recv(timeout=timeout))  # type: ignore[no-any-return]


def recv_n(client: Any, n: int) -> list[str]:
    return [client.recv(timeout=5) for _ in range(n)]


def assert_nothing_pending(client: Any) -> None:
    with pytest.raises(TimeoutError):
        client.recv(timeout=0.05)


def rejected(s: Any, reason: str) -> float:
    value = sample(s.dash.metrics_text(), "hyperdash_websocket_rejected_total", reason=reason)
    return value or 0.0


def test_history_on_connect_oldest_first_then_every_tick(serve: Callable[..., Any]) -> None:
    """The replay: every retained tick with all its keys and numbers (what the charts
    need); the job, alert and custom lists only in the newest, which the page shows."""
    s = serve(update_interval=MANUAL, history_size=5)
    s.dash.add_job(JobInfo(id="j1", name="export web-01", status="running", provider="aws"))
    s.dash.add_alert("warning", "disk almost full")
    frames = [s.tick() for _ in range(7)]
    assert [f.seq for f in s.ctx.fanout.history] == [f.seq for f in frames[-5:]]
    full = [json.loads(f.payload) for f in frames[-5:]]
    assert all(m["recent_jobs"] and m["alerts"] for m in full)
    client = s.ws()
    got = [json.loads(m) for m in recv_n(client, 5)]
    # Each replayed message says how many more follow: history ends at "replay": 0.
    assert [m.pop("replay") for m in got] == [4, 3, 2, 1, 0]
    assert got[-1] == full[-1]
    assert got[:-1] == [light_snapshot(m) for m in full[:-1]]
    assert all(list(m) == list(full[-1]) for m in got)  # every key, in the same order
    assert_nothing_pending(client)
    live = s.tick()
    assert client.recv(timeout=5) == live.payload.decode()  # live: no "replay" key
    seqs = [m["seq"] for m in got] + [json.loads(live.payload)["seq"]]
    assert seqs == [f.seq for f in frames[-5:]] + [live.seq]
    assert seqs == list(range(seqs[0], seqs[0] + 6))  # one per tick, in order


def test_an_update_is_in_the_next_tick(serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL, history_size=1)
    client = s.ws()
    recv_n(client, 1)
    s.dash.update_job_metrics(active=42, completed=7, failed=1, pending=3, queue_len=3)
    s.tick()
    msg = recv_json(client)
    assert (msg["jobs_active"], msg["jobs_completed"], msg["queue_length"]) == (42, 7, 3)


def test_updates_reach_clients_within_a_tick_or_two_in_real_time(serve: Callable[..., Any]
                                                                  ) -> None:
    s = serve(update_interval=0.1)
    client = s.ws()
    client.recv(timeout=5)  # history (the first tick) is there
    s.dash.update_job_metrics(active=9, completed=0, failed=0, pending=0, queue_len=0)
    sent = time.monotonic()
    seen = 0
    while True:
        msg = recv_json(client)
        if msg["jobs_active"] == 9:
            break
        seen += 1
    # The tick collecting at the moment of the update may miss it; the next one cannot.
    assert seen <= 2
    assert time.monotonic() - sent < 2.0


def test_every_client_gets_the_same_bytes(serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL, history_size=1)
    clients = [s.ws() for _ in range(4)]
    for c in clients:
        recv_n(c, 1)
    s.dash.add_job(JobInfo(id="j1", name="export ünïcode ✓", status="running", provider="aws"))
    for _ in range(3):
        frame = s.tick()
        got = {c.recv(timeout=5) for c in clients}
        assert got == {frame.payload.decode()}


def test_active_connections_counts_the_receiver(serve: Callable[..., Any], wait: Any) -> None:
    s = serve(update_interval=MANUAL, history_size=1)
    a = s.ws()
    recv_n(a, 1)
    s.tick()
    assert recv_json(a)["active_connections"] == 1
    b = s.ws()
    recv_n(b, 1)
    s.tick()
    assert recv_json(a)["active_connections"] == recv_json(b)["active_connections"] == 2
    a.close()
    wait(lambda: s.ctx.fanout.clients == 1)
    s.tick()
    assert recv_json(b)["active_connections"] == 1
    assert s.request("/healthz").json()["clients"] == 1


def test_a_burst_of_clients_is_counted_by_the_next_scrape(
        serve: Callable[..., Any], raw_ws: Any, wait: Any) -> None:
    """Joins are added to ``hyperdash.websocket.connections`` once per pass of the event
    loop, not once per client: a scrape right after the last handshake (no tick between)
    still counts every client, and every one that left."""
    s = serve(update_interval=MANUAL)

    def exposed() -> float:
        text = s.request("/metrics").body.decode()
        return float(next(line for line in text.splitlines()
                          if line.startswith("hyperdash_websocket_connections{")).split()[-1])

    socks = [raw_ws(s.port)[0] for _ in range(30)]  # each has read its 101
    assert exposed() == 30
    for sock in socks[:20]:
        sock.close()
    wait(lambda: s.ctx.fanout.clients == 10)
    assert exposed() == 10


def test_max_clients_holds_under_50_parallel_connects(serve: Callable[..., Any], wait: Any
                                                       ) -> None:
    s = serve(max_clients=10)
    url = f"ws://127.0.0.1:{s.port}/ws"

    async def main() -> tuple[int, list[InvalidStatus]]:
        attempts = [aconnect(url, proxy=None, compression=None, open_timeout=10)
                    for _ in range(50)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        connected = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, InvalidStatus)]
        # Every connected client really is served.
        for conn in connected:
            await asyncio.wait_for(conn.recv(), 5)
        server_view = s.ctx.fanout.clients
        for conn in connected:
            await conn.close()
        return server_view, refused

    server_view, refused = asyncio.run(main())
    assert server_view == 10
    assert len(refused) == 40
    for exc in refused:
        assert exc.response.status_code == 503
        assert json.loads(exc.response.body) == {
            "error": "too many clients (max_clients=10)", "status": 503}
        assert exc.response.headers["Retry-After"] == "5"
    assert rejected(s, "max_clients") == 40
    wait(lambda: s.ctx.fanout.reserved == 0, what="every place released")
    s.ws().recv(timeout=5)  # places are given back


class TestOrigin:
    def test_no_origin_and_same_origin_are_allowed(self, serve: Callable[..., Any]) -> None:
        s = serve()
        s.ws().recv(timeout=5)
        s.ws(origin=f"http://127.0.0.1:{s.port}").recv(timeout=5)

    @pytest.mark.parametrize("origin", ["http://evil.test", "http://127.0.0.1:1", "null",
                                        "https://example.com"])
    def test_other_origins_get_403(self, serve: Callable[..., Any], origin: str) -> None:
        s = serve()
        with pytest.raises(InvalidStatus) as err:
            s.ws(origin=origin)
        assert err.value.response.status_code == 403
        body = json.loads(err.value.response.body)
        assert body["status"] == 403 and "origin not allowed" in body["error"]
        assert rejected(s, "origin") == 1
        assert s.ctx.fanout.reserved == 0

    def test_allowed_origins_widen_the_rule(self, serve: Callable[..., Any]) -> None:
        s = serve(allowed_origins=("https://*.example.com", "http://grafana.local:3000"))
        s.ws(origin="https://ops.example.com").recv(timeout=5)
        s.ws(origin="http://grafana.local:3000").recv(timeout=5)
        with pytest.raises(InvalidStatus):
            s.ws(origin="https://example.com")


class TestAuth:
    TOKEN = "correct-horse-battery"

    def test_the_stream_needs_the_token(self, serve: Callable[..., Any]) -> None:
        s = serve(auth_token=self.TOKEN)
        with pytest.raises(InvalidStatus) as err:
            s.ws()
        assert err.value.response.status_code == 401
        assert json.loads(err.value.response.body)["status"] == 401
        with pytest.raises(InvalidStatus):
            s.ws("/ws?token=wrong-token-here")
        assert rejected(s, "unauthorized") == 2
        s.ws(f"/ws?token={self.TOKEN}").recv(timeout=5)
        s.ws(additional_headers={"Authorization": f"Bearer {self.TOKEN}"}).recv(timeout=5)


def test_small_messages_are_ignored_and_big_ones_close(serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL, history_size=1)
    client = s.ws()
    recv_n(client, 1)
    client.send("hello")
    s.tick()
    recv_json(client)  # still connected
    client.send("x" * 5000)
    with pytest.raises(ConnectionClosed) as err:
        while True:
            client.recv(timeout=5)
    assert err.value.rcvd is not None and err.value.rcvd.code == 1009


def test_stop_closes_clients_with_going_away(serve: Callable[..., Any]) -> None:
    s = serve()
    client = s.ws()
    client.recv(timeout=5)
    s.stop()
    with pytest.raises(ConnectionClosed) as err:
        while True:
            client.recv(timeout=5)
    assert err.value.rcvd is not None
    assert (err.value.rcvd.code, err.value.rcvd.reason) == (CLOSE_GOING_AWAY,
                                                            "server shutting down")


def test_keepalive_pings_close_a_silent_peer(serve: Callable[..., Any], raw_ws: Any,
                                             wait: Any) -> None:
    s = serve(update_interval=MANUAL, runner={"ping_interval": 0.1, "ping_timeout": 0.1})
    answering = s.ws()  # websockets answers pings by itself
    silent, head = raw_ws(s.port)  # never reads, never pongs
    assert head.startswith(b"HTTP/1.1 101")
    wait(lambda: s.ctx.fanout.clients == 2)
    # Missed pong after 0.1 s, then Tornado's 5 s wait for a close reply that never comes.
    wait(lambda: s.ctx.fanout.clients == 1, timeout=15,
         what="the silent peer closed by the ping timeout")
    time.sleep(0.5)  # five more ping periods: the answering client stays
    assert s.ctx.fanout.clients == 1
    answering.recv(timeout=5)


def test_unacked_is_what_the_peer_has_not_acknowledged(serve: Callable[..., Any],
                                                        raw_ws: Any, wait: Any) -> None:
    """The evidence the keep-alive round goes by: 0 once a reading peer's TCP has taken
    a tick, more than 0 while a peer that stopped reading leaves ticks unacknowledged."""
    s = serve(update_interval=MANUAL, history_size=1)
    for i in range(50):  # ~60 KB frames: a small window is full after one
        s.dash.add_job(JobInfo(id=f"job-{i:03d}", name="n" * 1000, provider="aws"))
    reader, head = raw_ws(s.port)
    assert head.startswith(b"HTTP/1.1 101")
    wait(lambda: s.ctx.fanout.clients == 1)
    handler = server_stream(s)
    s.tick()
    reader.settimeout(5)
    got = 0
    while got < 50_000:
        got += len(reader.recv(1 << 20))
    wait(lambda: handler.unacked() == 0, what="the reader's TCP to acknowledge the tick")
    stuck, head = raw_ws(s.port, rcvbuf=4096)  # never reads
    assert head.startswith(b"HTTP/1.1 101")
    wait(lambda: s.ctx.fanout.clients == 2)
    stuck_handler = next(h for h in s.ctx.fanout.sinks() if h is not handler)
    for _ in range(3):
        s.tick()
    wait(lambda: stuck_handler.unacked() > 0, what="ticks the stuck peer cannot take")  # type: ignore[attr-defined]


def peer_port(sink: Any) -> int:
    """The client's port of a server-side connection (either path's sink)."""
    return int(sink.connection_stream.socket.getpeername()[1])


def server_stream(s: Any) -> StreamHandler:
    sinks = s.ctx.fanout.sinks()
    assert len(sinks) == 1
    return sinks[0]  # type: ignore[no-any-return]


def kernel_unsent(sock: socket.socket) -> int:
    """Bytes in a socket's send queue (not yet acknowledged by the peer)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked frame in ``data``."""
    frames = []
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i:i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i:i + 8])
            i += 8
        if i + n > len(data):
            break
        frames.append((opcode, data[i:i + n]))
        i += n
    return frames


def test_a_client_that_never_reads(serve: Callable[..., Any], raw_ws: Any, wait: Any) -> None:
    """Its buffers stay bounded, the others get every tick, and it is cut off after
    ``slow_client_max_skips`` skipped ticks with 1008 "too slow"."""
    s = serve(update_interval=0.05, history_size=2, slow_client_max_skips=10)
    for i in range(50):  # frames of about 60 KB: a stuck socket fills within a few ticks
        s.dash.add_job(JobInfo(id=f"job-{i:03d}", name="n" * 1000, provider="aws"))
    published: list[bytes] = []
    real_publish = s.ctx.fanout.publish

    cut_at: list[int] = []

    def publish(frame: Any) -> None:
        published.append(frame.payload)
        before = s.ctx.fanout.clients
        real_publish(frame)
        if (before, s.ctx.fanout.clients) == (2, 1):
            cut_at.append(frame.seq)

    s.ctx.fanout.publish = publish

    received: list[bytes] = []
    good = s.ws(max_size=None)
    stop_reading = threading.Event()

    def read() -> None:
        while not stop_reading.is_set():
            try:
                received.append(good.recv(timeout=0.1).encode())
            except TimeoutError:
                continue
            except ConnectionClosed:
                return

    reader = threading.Thread(target=read, name="good-client")
    reader.start()
    try:
        wait(lambda: len(received) >= 3)
        first = len(published)

        # The stuck client's first tick comes after the last one published before it
        # connected (a tick collecting while it joins is not sent to it).
        last_seq_before = s.ctx.fanout.latest.seq
        stuck, head = raw_ws(s.port, rcvbuf=4096)
        assert head.startswith(b"HTTP/1.1 101")
        wait(lambda: s.ctx.fanout.clients == 2)
        handler = next(h for h in s.ctx.fanout.sinks()
                       if peer_port(h) == stuck.getsockname()[1])
        out = handler.connection_stream
        assert out is not None
        server_sock = out.socket
        frame_size = len(published[-1]) + 10
        peak_tornado = peak_kernel = 0
        while s.ctx.fanout.clients == 2:
            peak_tornado = max(peak_tornado, handler.unsent())
            peak_kernel = max(peak_kernel, kernel_unsent(server_sock))
            assert s.ctx.fanout.latest.seq - last_seq_before < 200, "never cut off"
            time.sleep(0.002)
        wait(lambda: cut_at)
        ticks_to_cut = cut_at[0] - last_seq_before  # ticks it was offered, the last included

        # Bounded: Tornado holds at most the history replay plus one frame; the kernel
        # at most about TCP_NOTSENT_LOWAT beyond what the peer's tiny window took.
        assert peak_tornado <= 3 * frame_size + 1024, (peak_tornado, frame_size)
        assert peak_kernel <= 2 * NOTSENT_LOWAT + frame_size, peak_kernel
        assert 10 <= ticks_to_cut <= 60, ticks_to_cut
        print(f"\nstuck client: frame {frame_size} B, peak Tornado buffer {peak_tornado} B, "
              f"peak kernel send queue {peak_kernel} B, cut after {ticks_to_cut} ticks")

        # What it had been sent ends with the close frame: 1008 "too slow".
        data = b""
        stuck.settimeout(5)
        while True:
            chunk = stuck.recv(1 << 20)
            if not chunk:
                break
            data += chunk
            frames = parse_frames(data)
            if frames and frames[-1][0] == 0x8:
                break
        opcode, payload = parse_frames(data)[-1]
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == CLOSE_TOO_SLOW
        assert payload[2:] == b"too slow"

        # The good client missed nothing in the meantime.
        last = len(published)
        wait(lambda: published[last - 1] in received, what="the good client to catch up")
        missing = [i for i in range(first + 1, last) if published[i] not in received]
        assert missing == []
        assert last - first >= ticks_to_cut
    finally:
        stop_reading.set()
        reader.join()
    text = s.dash.metrics_text()
    assert sample(text, "hyperdash_websocket_disconnects_total", reason="too_slow") == 1


class TestWriteNow:
    """``write_now`` is ``IOStream.write`` without the Future: hold it to Tornado."""

    @staticmethod
    async def pair() -> tuple[IOStream, IOStream]:
        a, b = socket.socketpair()
        return IOStream(a), IOStream(b)

    def test_bytes_arrive_in_order_and_later_writes_resolve(self) -> None:
        async def main() -> None:
            a, b = await self.pair()
            big = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
            write_now(a, big)
            write_now(a, b"second")
            assert len(a._write_buffer) > 0  # the rest waits for the loop
            reading = asyncio.ensure_future(b.read_bytes(len(big) + 11))
            await asyncio.wait_for(a.write(b"third"), 5)  # Tornado's own future resolves
            assert await asyncio.wait_for(reading, 5) == big + b"second" + b"third"
            assert len(a._write_buffer) == 0
            a.close()
            b.close()

        asyncio.run(main())

    def test_the_buffer_limit_and_a_closed_stream(self) -> None:
        async def main() -> None:
            a, b = await self.pair()
            a.max_write_buffer_size = 1000
            b.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024)
            with pytest.raises(StreamBufferFullError):
                for _ in range(10_000):
                    write_now(a, b"x" * 500)
            a.close()
            with pytest.raises(StreamClosedError):
                write_now(a, b"late")
            b.close()

        asyncio.run(main())

    def test_a_closed_stream_still_subscribed_is_evicted_not_fatal(self) -> None:
        """Between a stream closing and its on_close, a tick must still reach the others."""
        async def main() -> None:
            a, b = await self.pair()
            c, d = await self.pair()
            fan = FanOut(max_clients=5, history_size=1, max_skips=3)
            class Sink(FastWrites):  # the fast path's writes, whichever path the server runs
                def unacked(self) -> int:
                    return 0

                def drop(self, code: int, reason: str) -> None:
                    pass

            gone, alive = Sink.__new__(Sink), Sink.__new__(Sink)
            for handler, stream in ((gone, a), (alive, c)):
                handler.attach(stream)
                handler.ws_connection = None
            alive.ws_connection = type("Open", (), {"server_terminated": False,
                                                    "client_terminated": False})()  # type: ignore[assignment]
            gone.ws_connection = alive.ws_connection
            fan.subscribe(gone)
            fan.subscribe(alive)
            a.close()  # closed; its on_close has not run yet
            assert gone.unsent() == 0
            frame = Frame(fan.begin_tick(), b"{}", text_frame(b"{}"), 0.0)
            fan.publish(frame)
            assert fan.clients == 1
            assert await d.read_bytes(len(frame.frame)) == frame.frame
            for s in (b, c, d):
                s.close()

        asyncio.run(main())


@pytest.mark.parametrize("own_upgrade", [True, False], ids=["own-upgrade", "tornado-upgrade"])
def test_an_open_stream_keeps_few_objects(serve: Callable[..., Any], raw_ws: Any, wait: Any,
                                          monkeypatch: pytest.MonkeyPatch,
                                          own_upgrade: bool) -> None:
    """Each object an idle connection keeps is walked by every full garbage collection;
    at 10,000 clients those walks were most of a connect storm's cost (78 objects per
    connection before the handshake's leftovers were dropped, about 52 after through
    Tornado's ``WebSocketHandler``, about 13 on the server's own upgrade)."""
    if own_upgrade and not _tornado_fast.ENABLED:
        own_upgrade = False  # the fallback never takes its own upgrade: check it anyway
    monkeypatch.setattr(_tornado_fast, "OWN_UPGRADE", own_upgrade)
    s = serve(update_interval=MANUAL)
    n = 40
    raw_ws(s.port)  # the first connection starts the keep-alive task: not per connection
    wait(lambda: s.ctx.fanout.clients == 1)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(n):
        raw_ws(s.port)
    wait(lambda: s.ctx.fanout.clients == n + 1)
    gc.collect()
    per_connection = (len(gc.get_objects()) - before) / n - 1  # (minus our client socket)
    print(f"\n{per_connection:.1f} GC-tracked objects per open connection")
    handler = next(iter(s.ctx.fanout.sinks()))
    if own_upgrade:
        assert per_connection <= 20, per_connection
        assert isinstance(handler, Connection)
        return
    # Python 3.10's coroutines and tasks keep a few more objects each (about 65 there).
    assert per_connection <= (60 if sys.version_info >= (3, 11) else 70), per_connection
    assert isinstance(handler, StreamHandler)
    assert handler.request.connection is None and not handler.request.headers
