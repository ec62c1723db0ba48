"""HTTP endpoints against the same answer built per request behind a bare handler.

One dashboard (50 jobs, the demo's kind of content) is served by hyperdash and, on a
second port of the same process, by bare Tornado handlers that build each answer per
request: ``encode_snapshot(dashboard.snapshot())`` for ``/api/metrics`` (what the original
did), prometheus_client's ``generate_latest`` for ``/metrics``, and a file read plus
``gzip.compress`` for a static file.

The server is measured, not the client: the server process runs on the first core, a
client process (``bench._http_client``: raw sockets, several keep-alive connections each
with one GET in flight, as ``wrk`` makes them) on the other, so the server is the
bottleneck. Baseline and hyperdash alternate in rounds of the same length with the same
client; each round gives requests per second and the server process's CPU per request
(every thread's ``/proc/self/task/*/schedstat``: run time in nanoseconds). Every response
is checked (status, full body, a gzip body's CRC-32 and size against the file).

A last row per endpoint is the older figure: one ``http.client``-like sequential
connection (``--connections 1``), where the client's own parsing and two wake-ups per
request are part of every round trip, on both sides.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import tornado.web
from prometheus_client import generate_latest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.stream import encode_snapshot

ROUNDS = 5
STATIC = "static/vendor/chart.umd.js"
CONNECTIONS = 8
"""Keep-alive connections the client keeps busy (one request in flight on each)."""
ROUND_SECONDS = 1.5
"""Each round's length; a round also ends after :data:`MAX_PER_ROUND` responses."""
MAX_PER_ROUND = 20_000


def client_cores() -> set[int] | None:
    have = sorted(os.sched_getaffinity(0))
    return set(have[1:]) if len(have) > 1 else None


def server_cpu_ns() -> int:
    """Run time of every thread of this (the server) process so far, in nanoseconds."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
    return total


def fetch(port: int, path: str, *, connections: int, gzipped: bool = False,
          seconds: float = ROUND_SECONDS) -> dict[str, float]:
    """One round of the client against ``port``: its JSON plus ``cpu``, the server
    process's CPU seconds per response over the round."""
    cores = client_cores()
    argv = [sys.executable, "-m", "bench._http_client", str(port), path, str(connections),
            str(MAX_PER_ROUND), str(seconds)]
    if gzipped:
        argv.append("gzip")
    before = server_cpu_ns()
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    used = server_cpu_ns() - before
    if out.returncode != 0:
        raise SystemExit(f"client against {port}{path} failed: {out.stderr.strip()[-400:]}")
    got = dict(json.loads(out.stdout))
    # The client's start-up and warm-up are in ``used`` too, on both sides alike; at
    # thousands of responses per round they are a small share.
    got["cpu"] = used / 1e9 / max(1, got["responses"])
    return got


def floor_server(response: bytes) -> tuple[int, asyncio.AbstractEventLoop, asyncio.Event]:
    """The floor for a static file: an asyncio protocol that answers every request on a
    connection with the same pre-built bytes (hyperdash's own 200 for the file, headers
    and all), parsing nothing but the end of each request's head."""

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.pending = b""

        def data_received(self, data: bytes) -> None:
            data = self.pending + data
            while (end := data.find(b"\r\n\r\n")) >= 0:
                data = data[end + 4:]
                self.transport.write(response)  # type: ignore[attr-defined]
            self.pending = data

    return _on_thread("floor", lambda: asyncio.get_running_loop().create_server(
        Answer, "127.0.0.1", 0))


def _on_thread(name: str, make: Any) -> tuple[int, asyncio.AbstractEventLoop, asyncio.Event]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            server = await make()
            box["port"] = server.sockets[0].getsockname()[1]
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()
            server.close()

        asyncio.run(main())

    threading.Thread(target=run, name=name, daemon=True).start()
    ready.wait(10)
    return int(box["port"]), box["loop"], box["stop"]


def bare_server(dash: Dashboard, static_file: Path
                ) -> tuple[int, asyncio.AbstractEventLoop, asyncio.Event]:
    """The baselines: each answer built per request, on its own thread and loop."""

    class Build(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.finish(encode_snapshot(dash.snapshot()))

    class Scrape(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.finish(generate_latest(dash.registry))

    class Gzip(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/javascript")
            self.set_header("Content-Encoding", "gzip")
            self.finish(gzip.compress(static_file.read_bytes(), compresslevel=6))

    async def make() -> Any:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application(
            [("/api/metrics", Build), ("/metrics", Scrape), ("/static", Gzip)]))
        server.add_sockets(sockets)
        return _Stoppable(server, sockets)

    return _on_thread("bare-baselines", make)


class _Stoppable:
    """A Tornado server with the two attributes ``_on_thread`` uses of an asyncio one."""

    def __init__(self, server: HTTPServer, sockets: list[socket.socket]) -> None:
        self.server = server
        self.sockets = sockets

    def close(self) -> None:
        self.server.stop()


def raw_get(port: int, path: str, headers: str = "") -> bytes:
    """One response's bytes as they come off the wire (read until the peer's idle)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}"
                     "Connection: close\r\n\r\n".encode())
        out = bytearray()
        while chunk := sock.recv(1 << 16):
            out += chunk
    return bytes(out)


def main() -> None:
    have = sorted(os.sched_getaffinity(0))
    if len(have) > 1:
        # The server (this process and every thread it starts from here on) on the first
        # core, the client on the others: the server is what runs out of CPU.
        os.sched_setaffinity(0, {have[0]})
    # Thousands of requests from 127.0.0.1: the per-address rate limit is lifted.
    dash = Dashboard(Config(port=0, collect_system_metrics=False, update_interval=1.0,
                            rate_limit=0))
    for i in range(50):
        dash.add_job(JobInfo(id=f"job-{i:03d}", name=f"export-vm-{i}", status="running",
                             progress=i * 2, provider=("aws", "azure", "gcp")[i % 3],
                             vm_name=f"vm-{i}"))
    dash.update_job_metrics(8, 271, 17, 4, 4)
    dash.start_in_thread()
    assets = Assets.locate()
    file = assets.chart_js.read_bytes()
    expected = (zlib.crc32(file), len(file))
    port, loop, stop = bare_server(dash, assets.chart_js)
    ours_port = dash.port or 0
    # The floor answers with hyperdash's own bytes for the file, Connection: close dropped.
    answer = raw_get(ours_port, f"/{STATIC}", "Accept-Encoding: gzip\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    head = b"\r\n".join(line for line in head.split(b"\r\n")
                         if not line.lower().startswith(b"connection:"))
    floor_port, floor_loop, floor_stop = floor_server(head + b"\r\n\r\n" + body)
    cases = [
        ("/api/metrics", "/api/metrics", "per-request snapshot + encode", False),
        ("/metrics", "/metrics", "generate_latest per request", False),
        (f"/{STATIC} (gzip)", "/static", "file read + gzip.compress per request", True),
    ]
    print("\n## HTTP endpoints against a bare handler building each answer per request\n")
    print(f"Server process on core {have[0]}, the client on the other(s); "
          f"{ROUNDS} alternating rounds of {ROUND_SECONDS} s per side, medians. CPU: the "
          "server process's, all threads, per response.\n")
    print("| endpoint | baseline | connections | baseline req/s | hyperdash req/s | speed-up "
          "| baseline CPU/req | hyperdash CPU/req | CPU ratio | body |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    floor: list[dict[str, float]] = []
    try:
        for name, base_path, base_name, gzipped in cases:
            ours_path = name.split(" ")[0]
            for connections, rounds in ((CONNECTIONS, ROUNDS), (1, 3)):
                base: list[dict[str, float]] = []
                ours: list[dict[str, float]] = []
                for _ in range(rounds):
                    base.append(fetch(port, base_path, connections=connections,
                                      gzipped=gzipped))
                    ours.append(fetch(ours_port, ours_path, connections=connections,
                                      gzipped=gzipped))
                    if gzipped and connections == CONNECTIONS:
                        floor.append(fetch(floor_port, ours_path, connections=connections,
                                           gzipped=True))
                for got in base + ours + floor:
                    if gzipped and (got["decoded_crc32"], got["decoded_bytes"]) != expected:
                        raise SystemExit(f"{name}: a gzip body does not decode to the file")
                b_rate = statistics.median(r["responses"] / r["seconds"] for r in base)
                o_rate = statistics.median(r["responses"] / r["seconds"] for r in ours)
                b_cpu = statistics.median(r["cpu"] for r in base)
                o_cpu = statistics.median(r["cpu"] for r in ours)
                print(f"| {name} | {base_name} | {connections} | {b_rate:,.0f} | {o_rate:,.0f} "
                      f"| {o_rate / b_rate:.2f}x | {b_cpu * 1e6:,.0f} us | {o_cpu * 1e6:,.0f} us "
                      f"| {b_cpu / o_cpu:.2f}x | {ours[0]['bytes'] / 1024:.1f} KiB |",
                      flush=True)
        f_rate = statistics.median(r["responses"] / r["seconds"] for r in floor)
        f_cpu = statistics.median(r["cpu"] for r in floor)
        print(f"\nFloor for the static file, same client, same rounds ({CONNECTIONS} "
              f"connections): an asyncio protocol writing hyperdash's pre-built answer: "
              f"{f_rate:,.0f} req/s, {f_cpu * 1e6:,.0f} us of CPU per request.", flush=True)
    finally:
        loop.call_soon_threadsafe(stop.set)
        floor_loop.call_soon_threadsafe(floor_stop.set)
        dash.close()


if __name__ == "__main__":
    main()
