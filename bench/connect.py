"""Connect cost in process: ``/ws``'s upgrades against Tornado's, alternating in one run.

Three ways of answering ``/ws`` take turns: the quick upgrade (:mod:`hyperdash_otel.server.
quick`: the request head read and answered below Tornado's HTTP layer), the own upgrade
from the handler (Tornado parses and routes, the handler sends the 101 and detaches), and
Tornado's ``WebSocketHandler``.

One server (a Dashboard with 50 jobs and a full 50-message history, so each new client
gets the replay it gets in production) serves from its thread; a client process opens
N raw WebSocket connections (handshakes pipelined in batches), reads each one's 101 and
replay, and keeps them open; the server then takes the next round with the other
upgrade. Between rounds every client closes. Per round it reports, per connection:

* the event loop thread's CPU (``/proc/self/task/TID/schedstat``: user and kernel time
  in nanoseconds) from the first handshake until the last replay was read;
* the garbage collector's time on the loop thread over the same span (``gc.callbacks``),
  and the full (generation 2) collections;
* GC-tracked objects that stay per open connection (``gc.get_objects()`` after a
  collection, before and after the round's connections).

``python -m bench connect --clients 2000 --rounds 3`` (loopback only; the clients and
the server each have a deadline; the client process is stopped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server import _tornado_fast
from hyperdash_otel.server.runner import Runner

VARIANTS = {
    "quick": ("own, quick (hyperdash's default)", True, True),
    "handler": ("own, from the handler", True, False),
    "tornado": ("Tornado's WebSocketHandler", False, False),
}
"""Name: (table label, ``OWN_UPGRADE``, ``QUICK_UPGRADE``)."""
BATCH = 50
DEADLINE = 120.0
HANDSHAKE = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n")


# -- the client process ----------------------------------------------------------------------


def _client(port: int, n: int) -> None:
    """Commands on stdin: ``open`` (N connections, each read to its last replayed
    message), ``close`` (all of them), ``quit``; answers ``ok`` on stdout."""
    request = HANDSHAKE.format(port=port).encode()
    opened: list[socket.socket] = []
    for line in sys.stdin:
        command = line.strip()
        if command == "open":
            deadline = time.monotonic() + DEADLINE
            while len(opened) < n:
                batch = []
                for _ in range(min(BATCH, n - len(opened))):
                    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                    sock.sendall(request)
                    batch.append(sock)
                for sock in batch:
                    data = b""
                    while b'"replay":0}' not in data[-64:]:
                        chunk = sock.recv(1 << 16)
                        if not chunk or time.monotonic() > deadline:
                            raise SystemExit(f"connection ended early: {data[:200]!r}")
                        data += chunk
                opened.extend(batch)
        elif command == "close":
            for sock in opened:
                sock.close()
            opened.clear()
        elif command == "quit":
            return
        print("ok", flush=True)


# -- the server side -------------------------------------------------------------------------


def _schedstat(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def _user_system(tid: int) -> tuple[float, float]:
    """The thread's user and kernel time (clock ticks: 10 ms resolution)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class _GcClock:
    """Time the collector spends on one thread, and its full collections."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_native_id() != self.tid:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            if info.get("generation") == 2:
                self.full += 1


def _on_loop(runner: Runner, coro: Any) -> Any:
    loop = runner.loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(coro, loop).result(30)


async def _native_id() -> int:
    return threading.get_native_id()


def _wait(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench connect", description=__doc__)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each upgrade")
    args = parser.parse_args(argv)
    if not _tornado_fast.ENABLED:
        print("the fast path is off here (HYPERDASH_FAST_PATH=0 or another Tornado)")
        return
    dash = Dashboard(Config(port=0, collect_system_metrics=False, update_interval=3600.0,
                            max_clients=args.clients + 100, rate_limit=0,
                            max_connections_per_ip=args.clients + 100, history_size=50))
    for i in range(50):  # the demo's table: about 12 KB a message
        dash.add_job(JobInfo(id=f"job-{i:03d}", name=f"nightly-build-{i}", provider="aws"))
    runner = Runner(dash)
    runner.start_in_thread()
    client: subprocess.Popen[str] | None = None
    try:
        _wait(lambda: runner.port is not None and runner.context is not None, "the server")
        ctx = runner.context
        assert ctx is not None and runner.port is not None
        for _ in range(50):
            _on_loop(runner, ctx.ticker.tick())
        tid = _on_loop(runner, _native_id())
        clock = _GcClock(tid)
        gc.callbacks.append(clock)
        client = subprocess.Popen(
            [sys.executable, "-c", "import sys; from bench.connect import _client; "
             f"_client({runner.port}, {args.clients})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

        def command(word: str) -> None:
            assert client is not None and client.stdin is not None and client.stdout is not None
            client.stdin.write(word + "\n")
            client.stdin.flush()
            if client.stdout.readline().strip() != "ok":
                raise RuntimeError(f"the client process failed on {word!r}")

        n = args.clients
        results: dict[str, list[tuple[float, float, int, float, float]]] = {
            name: [] for name in VARIANTS}
        print(f"replay: {ctx.fanout.history_bytes:,} bytes per new client")
        order = [name for _ in range(args.rounds) for name in VARIANTS]
        for own in order:
            _tornado_fast.OWN_UPGRADE, _tornado_fast.QUICK_UPGRADE = VARIANTS[own][1:]
            gc.collect()
            objects = len(gc.get_objects())
            clock.seconds, clock.full = 0.0, 0
            cpu = _schedstat(tid)
            user, system = _user_system(tid)
            command("open")
            cpu = _schedstat(tid) - cpu
            user_after, system_after = _user_system(tid)
            kernel = (system_after - system) / max(user_after - user + system_after - system,
                                                   1e-9)
            gc_seconds, full = clock.seconds, clock.full
            _wait(lambda: ctx.fanout.clients == n, "every client subscribed")
            gc.collect()
            per_conn = (len(gc.get_objects()) - objects) / n
            results[own].append((cpu / n * 1e6, gc_seconds / n * 1e6, full, per_conn, kernel))
            print(f"  {own}: {cpu / n * 1e6:.0f} µs loop CPU per "
                  f"connection ({kernel:.0%} in the kernel), GC {gc_seconds * 1e3:.0f} ms "
                  f"({full} full), "
                  f"{per_conn:.1f} objects per connection", flush=True)
            command("close")
            _wait(lambda: ctx.fanout.clients == 0 and ctx.fanout.reserved == 0,
                  "every client gone")
        gc.callbacks.remove(clock)
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"\n## Connect cost in process, {n:,} clients per round, {args.rounds} rounds "
              f"each, alternating (load {load})\n")
        print("| upgrade | loop thread CPU per connection (median) | in the kernel | of it GC "
              "| full collections per round | GC-tracked objects per connection |")
        print("|---|---|---|---|---|---|")
        for own, (name, _, _) in VARIANTS.items():
            rows = results[own]
            print(f"| {name} | {statistics.median(r[0] for r in rows):.0f} µs | "
                  f"{statistics.median(r[4] for r in rows):.0%} | "
                  f"{statistics.median(r[1] for r in rows):.0f} µs | "
                  f"{statistics.median(r[2] for r in rows):g} | "
                  f"{statistics.median(r[3] for r in rows):.1f} |")
        tornado = statistics.median(r[0] for r in results["tornado"])
        print()
        for own in ("quick", "handler"):
            ratio = statistics.median(r[0] for r in results[own]) / tornado
            print(f"{own} / Tornado's, loop CPU per connection: {ratio:.2f}x")
    finally:
        _tornado_fast.OWN_UPGRADE = _tornado_fast.ENABLED
        _tornado_fast.QUICK_UPGRADE = _tornado_fast.ENABLED
        if client is not None:
            try:
                if client.stdin is not None:
                    client.stdin.write("quit\n")
                    client.stdin.flush()
                client.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                client.kill()
                client.wait(10)
        runner.stop()
        dash.close()
