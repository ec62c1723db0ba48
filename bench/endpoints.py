"""HTTP endpoints against the same answer built per request behind a bare handler.

One dashboard (50 jobs, the demo's kind of content) is served by hyperdash and, on a
second port of the same process, by bare Tornado handlers that build each answer per
request: ``encode_snapshot(dashboard.snapshot())`` for ``/api/metrics`` (what the original
did), prometheus_client's ``generate_latest`` for ``/metrics``, and a file read plus
``gzip.compress`` for a static file. A client process makes sequential keep-alive GETs,
baseline and hyperdash in alternating rounds; the table shows requests per second.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import tornado.web
from prometheus_client import generate_latest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.stream import encode_snapshot

ROUNDS = 5
STATIC = "static/vendor/chart.umd.js"


def client_cores() -> set[int] | None:
    have = sorted(os.sched_getaffinity(0))
    return set(have[1:]) if len(have) > 1 else None


def fetch(port: int, path: str, n: int, *, gzipped: bool = False) -> dict[str, float]:
    cores = client_cores()
    argv = [sys.executable, "-m", "bench._http_client", str(port), path, str(n)]
    if gzipped:
        argv.append("gzip")
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, check=True,
        cwd=Path(__file__).resolve().parent.parent,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    return dict(json.loads(out.stdout))


def bare_server(dash: Dashboard, static_file: Path) -> tuple[int, asyncio.AbstractEventLoop]:
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

    ready = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        async def main() -> None:
            sockets = bind_sockets(0, "127.0.0.1")
            server = HTTPServer(tornado.web.Application(
                [("/api/metrics", Build), ("/metrics", Scrape), ("/static", Gzip)]))
            server.add_sockets(sockets)
            box["port"] = sockets[0].getsockname()[1]
            box["loop"] = asyncio.get_running_loop()
            stop = asyncio.Event()
            box["stop"] = stop
            ready.set()
            await stop.wait()
            server.stop()

        asyncio.run(main())

    threading.Thread(target=run, name="bare-baselines", daemon=True).start()
    ready.wait(10)
    return int(box["port"]), box["loop"], box["stop"]  # type: ignore[return-value]


def main() -> None:
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
    port, loop, stop = bare_server(dash, assets.chart_js)
    # (name, baseline path, baseline, requests to the baseline, to hyperdash, gzip): the
    # static file is served ~40x faster than its baseline, so it gets more requests for
    # a measurable time (both figures are means per request).
    cases = [
        ("/api/metrics", "/api/metrics", "per-request snapshot + encode", 300, 300, False),
        ("/metrics", "/metrics", "generate_latest per request", 300, 300, False),
        (f"/{STATIC} (gzip)", "/static", "file read + gzip.compress per request", 40, 1000,
         True),
    ]
    print("\n## HTTP endpoints against a bare handler building each answer per request\n")
    print("| endpoint | baseline | baseline req/s | hyperdash req/s | speed-up | body |")
    print("|---|---|---|---|---|---|")
    try:
        for name, base_path, base_name, n, n_ours, gzipped in cases:
            ours_path = name.split(" ")[0]
            base, ours = [], []
            size = 0.0
            for _ in range(ROUNDS):
                base.append(fetch(port, base_path, n, gzipped=gzipped)["seconds"])
                got = fetch(dash.port or 0, ours_path, n_ours, gzipped=gzipped)
                ours.append(got["seconds"])
                size = got["bytes"]
            b, o = statistics.median(base), statistics.median(ours)
            print(f"| {name} | {base_name} | {1 / b:,.0f} | {1 / o:,.0f} | {b / o:.2f}x "
                  f"| {size / 1024:.1f} KiB |", flush=True)
    finally:
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        dash.close()


if __name__ == "__main__":
    main()
