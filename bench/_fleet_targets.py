"""Simulated fleet members for bench/fleet.py: many loopback endpoints in one process.

Usage: ``python -m bench._fleet_targets COUNT [--seed N]``. It prints one JSON line,
``{"ports": [...]}``, once every endpoint listens, then serves until SIGTERM or stdin closes
or a byte arrives on stdin (at most :data:`LIFETIME` seconds).

Each endpoint answers what a real dashboard answers to Prometheus and to ``hyperdash fleet``:

* ``GET /metrics``: a real Dashboard's exposition, taken once at start from a Dashboard that
  ran the demo's simulated workload and ticked, with every sample's value varied per
  endpoint and over time (gauges scaled per endpoint, counters growing in proportion to
  their start value, so ``rate()`` and ``increase()`` see movement; health per endpoint);
* ``GET /api/jobs`` and ``GET /api/metrics``: that Dashboard's jobs and snapshot, with the
  names and alerts marked per endpoint (the bytes are made once per endpoint);
* ``GET /healthz``.

The HTTP is the least that Prometheus and an HTTP client need (HTTP/1.1 keep-alive, GET
only, Content-Length), written on asyncio so that one process holds hundreds of endpoints
and the figures measure the fleet and Prometheus rather than the simulation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

LIFETIME = 1800.0
"""Seconds a targets process serves at most, whatever happens to its parent."""
MAX_HEAD = 8192
"""Longest request head accepted; a longer one closes the connection."""
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
TEMPLATE_SECONDS = 600.0
"""Simulated seconds of workload in the captured exposition."""


@dataclass(frozen=True)
class Template:
    """A real Dashboard's answers, taken once."""

    exposition: str
    jobs: list[dict[str, Any]]
    snapshot: dict[str, Any]


def capture(seed: int) -> Template:
    """Run a Dashboard on the demo's workload, serve it for a few ticks, take its answers."""
    from hyperdash_otel import Config, Dashboard
    from hyperdash_otel.demo import Simulation, apply_step, sim_clock

    dash = Dashboard(Config(port=0, update_interval=0.05))
    try:
        sim = Simulation(seed)
        for _ in range(int(TEMPLATE_SECONDS / 5)):  # jobs of every status, some alerts
            step = sim.advance(5.0)
            apply_step(dash, step, sim_clock(datetime.now(timezone.utc), sim.now, 1.0))
        dash.start_in_thread()
        deadline = time.monotonic() + 10.0
        # Ticks fill the server's own series (the tick histogram) as in production.
        while ticks(text := dash.metrics_text()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the dashboard's first ticks, bounded above
        return Template(text, dash.jobs(), dash.snapshot())
    finally:
        dash.close()


def ticks(text: str) -> float:
    """The tick histogram's count in an exposition (0 before the first tick)."""
    match = re.search(r"^hyperdash_tick_duration_seconds_count(?:\{.*\})? (\S+)$", text,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class Exposition:
    """The template's samples, rendered for one endpoint at one moment."""

    def __init__(self, text: str, index: int) -> None:
        # (text before the value, value, kind): "counter" grows, "gauge" is scaled, "fixed"
        # is kept (target_info, and the health state set, chosen per endpoint).
        self.parts: list[tuple[str, float, str]] = []
        self.tail: list[str] = []
        self.scale = 0.5 + (index % 7) / 4  # 0.5 .. 2.0
        health = "unhealthy" if index % 10 == 9 else "degraded" if index % 5 == 3 else "healthy"
        head: list[str] = []
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if line.startswith("#") or match is None:
                head.append(line)
                continue
            name, labels, value = match.group(1), match.group(2) or "", match.group(3)
            try:
                number = float(value)
            except ValueError:
                head.append(line)
                continue
            prefix = "\n".join([*head, f"{name}{labels} "])
            head = []
            kind = "counter" if name.endswith(COUNTER_SUFFIXES) else "gauge"
            if name == "hyperdash_system_health":
                kind, number = "fixed", float(f'status="{health}"' in labels)
            elif name == "target_info":
                kind = "fixed"
            elif kind == "gauge" and number.is_integer():
                kind = "count"  # a gauge of things: stays a whole number
            self.parts.append((prefix, number, kind))
        self.tail = head
        self.born = time.monotonic()

    def render(self) -> bytes:
        elapsed = time.monotonic() - self.born
        out: list[str] = []
        for prefix, value, kind in self.parts:
            if kind == "counter":
                # Each counter (histogram buckets, _sum and _count alike) grows in proportion
                # to its start value, as the captured ten simulated minutes did: buckets stay
                # cumulative, +Inf stays equal to _count, and a zero (tick errors) stays zero.
                number = value * self.scale * (1.0 + elapsed / TEMPLATE_SECONDS)
                number = float(math.floor(number)) if value.is_integer() else round(number, 3)
            elif kind == "gauge":
                number = value * self.scale
            elif kind == "count":
                number = float(round(value * self.scale))
            else:
                number = value
            out.append(f"{prefix}{number!r}")
        out.extend(self.tail)
        return ("\n".join(out) + "\n").encode()


class Endpoint:
    """One simulated instance: its exposition and its JSON answers."""

    def __init__(self, template: Template, index: int) -> None:
        self.index = index
        self.exposition = Exposition(template.exposition, index)
        self.cached: tuple[float, bytes] = (0.0, b"")
        tag = f"member-{index:04d}"
        jobs = [{**job, "name": f"{job['name']}@{tag}"} for job in template.jobs]
        self.jobs = json.dumps(jobs, separators=(",", ":")).encode()
        snap = dict(template.snapshot)
        snap["recent_jobs"] = jobs[:len(template.snapshot["recent_jobs"])]
        snap["alerts"] = [{**a, "message": f"{a['message']} ({tag})"}
                          for a in template.snapshot["alerts"]]
        self.snapshot = json.dumps(snap, separators=(",", ":")).encode()

    def metrics(self) -> bytes:
        # One rendering per 100 ms at most: a scrape per second per endpoint, plus the odd
        # manual request, never costs more than that.
        now = time.monotonic()
        at, body = self.cached
        if now - at >= 0.1:
            body = self.exposition.render()
            self.cached = (now, body)
        return body


ROUTES = {
    "/metrics": ("text/plain; version=0.0.4; charset=utf-8", Endpoint.metrics),
    "/api/jobs": ("application/json", lambda e: e.jobs),
    "/api/metrics": ("application/json", lambda e: e.snapshot),
    "/healthz": ("application/json", lambda e: b'{"status":"ok"}'),
}


class Http(asyncio.Protocol):
    """HTTP/1.1 GET with keep-alive, for one endpoint."""

    def __init__(self, endpoint: Endpoint, stats: dict[str, int]) -> None:
        self.endpoint = endpoint
        self.stats = stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            path = parts[1].split("?", 1)[0] if len(parts) == 3 else ""
            close = any(line.lower() == "connection: close" for line in lines[1:])
            route = ROUTES.get(path) if parts[0] == "GET" else None
            if route is None:
                status, kind, body = "404 Not Found", "application/json", b'{"error":"no"}'
            else:
                status, kind = "200 OK", route[0]
                body = route[1](self.endpoint)
            self.stats[path if route else "other"] = self.stats.get(
                path if route else "other", 0) + 1
            transport.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode() + body)
            if close:
                transport.close()
                return
        if len(self.buffer) > MAX_HEAD:
            transport.close()


async def serve(count: int, seed: int) -> None:
    template = await asyncio.to_thread(capture, seed)
    loop = asyncio.get_running_loop()
    stats: dict[str, int] = {}
    servers = []
    ports = []
    for index in range(count):
        endpoint = Endpoint(template, index)
        server = await loop.create_server(
            lambda e=endpoint: Http(e, stats), "127.0.0.1", 0, backlog=128)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports, "exposition_bytes": len(template.exposition),
                      "jobs": len(template.jobs)}), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # The parent holds our stdin: when it goes away (EOF) without a SIGTERM, so do we.
    with contextlib.suppress(ValueError, OSError, NotImplementedError):
        loop.add_reader(sys.stdin.fileno(), stop.set)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), LIFETIME)
    for server in servers:
        server.close()
    print(json.dumps({"requests": stats}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._fleet_targets")
    parser.add_argument("count", type=int)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 2000:
        parser.error("count must be 1..2000")
    asyncio.run(serve(args.count, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
