"""One tick's fan-out to N WebSocket clients: the shared pre-framed bytes written without
a Future (what the server does, to the connections it upgraded itself) against Tornado's
``WebSocketHandler`` and its ``write_message`` per client (the baseline: frames per client
and allocates a Future, like the original's per-client write).

The clients are raw sockets in a second process that read and discard. The tick is
driven by hand on the server's loop so that only the fan-out is timed; between ticks the
bench waits for every client to drain, so no client is skipped.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import subprocess
import sys
import time
from typing import Any

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server import _tornado_fast, handlers
from hyperdash_otel.server.stream import Frame, encode_snapshot, text_frame

TICKS = 20


class GcWatch:
    def __init__(self) -> None:
        self.full = 0
        self.collections = 0
        self.longest = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.collections += 1
            self.full += info["generation"] == 2
            self.longest = max(self.longest, time.perf_counter() - self._start)


def _payload_of(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    return frame[2 + {126: 2, 127: 8}.get(n, 0):]


def run(clients: int, mode: str) -> dict[str, float]:
    own_upgrade = _tornado_fast.OWN_UPGRADE
    # Every client comes from 127.0.0.1: the per-address limits, meant for many addresses,
    # are lifted (they cost nothing per tick; the fan-out is what is measured).
    dash = Dashboard(Config(port=0, update_interval=3600, max_clients=clients + 10,
                            collect_system_metrics=False, history_size=1, rate_limit=0,
                            max_connections_per_ip=4096))
    for i in range(50):
        dash.add_job(JobInfo(id=f"job-{i}", name=f"export-vm-{i}", status="running",
                             progress=i * 2, provider=("aws", "azure", "gcp")[i % 3],
                             vm_name=f"vm-{i}"))
    original = handlers.StreamHandler.offer
    written = [0]
    if mode == "write_message":
        # The baseline needs Tornado's WebSocketHandler on every connection: the server's
        # own upgrade (plain TCP) would hand the clients to its slotted connections instead.
        _tornado_fast.OWN_UPGRADE = False

        def offer(self: handlers.StreamHandler, frame: bytes) -> bool:
            if self.ws_connection is not None and not self.ws_connection.is_closing():
                self.write_message(_payload_of(frame))
                written[0] += 1
            return True
        handlers.StreamHandler.offer = offer  # type: ignore[method-assign]
    dash.start_in_thread()
    proc = subprocess.Popen([sys.executable, "-m", "bench._drain_clients", str(dash.port),
                             str(clients)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        runner = dash.server
        assert runner is not None and runner.context is not None and runner.loop is not None
        fanout = runner.context.fanout
        loop = runner.loop
        deadline = time.monotonic() + 30
        while fanout.clients < clients and time.monotonic() < deadline:
            time.sleep(0.05)  # bench set-up, not a test: wait for the subscriptions
        payload = encode_snapshot(dash.snapshot())

        async def ticks() -> tuple[list[float], GcWatch]:
            watch = GcWatch()
            times = []
            gc.collect()
            gc.callbacks.append(watch)
            try:
                for _ in range(TICKS):
                    frame = Frame(fanout.begin_tick(), payload, text_frame(payload), time.time())
                    start = time.perf_counter()
                    fanout.publish(frame)
                    times.append(time.perf_counter() - start)
                    end = time.monotonic() + 5
                    while time.monotonic() < end and any(s.unsent() for s in fanout.sinks()):
                        await asyncio.sleep(0.005)
            finally:
                gc.callbacks.remove(watch)
            return times, watch

        times, watch = asyncio.run_coroutine_threadsafe(ticks(), loop).result(120)
        if mode == "write_message" and written[0] != clients * TICKS:
            raise RuntimeError(f"the baseline wrote {written[0]} messages, not "
                               f"{clients * TICKS}: it did not measure write_message")
        return {"tick": statistics.median(times), "full_gc": watch.full,
                "gc": watch.collections, "gc_pause": watch.longest,
                "clients": fanout.clients, "bytes": len(payload)}
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        dash.close()
        handlers.StreamHandler.offer = original  # type: ignore[method-assign]
        _tornado_fast.OWN_UPGRADE = own_upgrade


def main(sizes: tuple[int, ...] = (500, 2000)) -> None:
    print(f"\n## Fan-out of one tick to N WebSocket clients ({TICKS} ticks, median)\n")
    print("| clients | payload | write_message per client (baseline) | shared frame, no Future "
          "| ratio | GC runs (full) baseline -> ours | longest GC pause baseline -> ours |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        base = run(n, "write_message")
        ours = run(n, "shared")
        assert base["clients"] == ours["clients"] == n
        print(f"| {n:,} | {base['bytes'] / 1024:.1f} KiB | {base['tick'] * 1e3:.1f} ms "
              f"| {ours['tick'] * 1e3:.1f} ms | {ours['tick'] / base['tick']:.2f}x "
              f"| {base['gc']:.0f} ({base['full_gc']:.0f}) -> {ours['gc']:.0f} "
              f"({ours['full_gc']:.0f}) | {base['gc_pause'] * 1e3:.1f} ms -> "
              f"{ours['gc_pause'] * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
