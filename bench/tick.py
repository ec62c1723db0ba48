"""One tick against a bare ``registry.collect()``, and how long the event loop stalls.

A tick is what the server's worker thread does each interval: one snapshot (collect and
build) and one encode of the full message and its light replay copy
(``Ticker._build``). The baseline is the collect alone, the least any exporter of the
same registry does; both are timed in CPU time of the thread. Then a real server ticks
every 0.25 s while a probe callback on its event loop asks to run every millisecond: the
longest delay it sees is the longest stall a tick inflicts on the connections (the tick
runs in a thread, but shares the GIL), measured with the collect's short switch interval
and, alternating in the same run, with Python's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from hyperdash_otel import Config, Dashboard, JobInfo, telemetry
from hyperdash_otel.server.stream import Ticker

from ._timing import compare, fmt_seconds

SERIES = (0, 1_000, 10_000)
PROBE_SECONDS = 3.0


def dashboard(series: int, *, port: int | None = None, interval: float = 0.25) -> Dashboard:
    config = Config(collect_system_metrics=False, max_custom_series=200,
                    update_interval=interval, **({} if port is None else {"port": port}))
    dash = Dashboard(config)
    meter = dash.meter_provider.get_meter("bench")
    gauges = [meter.create_gauge(f"tenant.queue.{k}") for k in range((series + 999) // 1000)]
    for i in range(series):
        gauges[i // 1000].set(i, {"tenant": f"t{i}"})
    for i in range(50):
        dash.add_job(JobInfo(id=f"j{i}", name=f"export-vm-{i}", status="running",
                             provider=("aws", "azure", "gcp")[i % 3], vm_name=f"vm-{i}"))
    return dash


def own_series(dash: Dashboard) -> int:
    return sum(len(family.samples) for family in dash.registry.collect())


class GcPauses:
    """The longest garbage-collector pause (any thread), and how many full collections."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.full = 0
        self._started: dict[int, float] = {}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        me = threading.get_ident()
        if phase == "start":
            self._started[me] = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._started.pop(me, 0.0))
        self.full += info["generation"] == 2


PROBE_ROUNDS = 3
"""Probe windows per variant, alternating (a busy machine moves single windows a lot)."""


@contextlib.contextmanager
def default_switch_interval() -> Iterator[None]:
    """Collects as before :func:`~hyperdash_otel.telemetry.gil_shared`: Python's interval."""
    saved = telemetry.COLLECT_SWITCH_INTERVAL
    telemetry.COLLECT_SWITCH_INTERVAL = sys.getswitchinterval()  # nothing to shorten
    try:
        yield
    finally:
        telemetry.COLLECT_SWITCH_INTERVAL = saved


def probe_window(dash: Dashboard) -> tuple[float, float, int, GcPauses]:
    """(longest delay of a 1 ms probe on the serving loop, its 99th percentile, ticks
    during the probe, GC pauses) over :data:`PROBE_SECONDS`."""
    pauses = GcPauses()
    runner = dash.server
    assert runner is not None and runner.context is not None and runner.loop is not None
    ticker, serving_loop = runner.context.ticker, runner.loop

    async def probe() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        first = ticker.ticks
        delays = []
        end = loop.time() + PROBE_SECONDS
        while loop.time() < end:
            asked = loop.time()
            await asyncio.sleep(0.001)
            delays.append(loop.time() - asked - 0.001)
        return delays, ticker.ticks - first

    gc.callbacks.append(pauses)
    try:
        delays, ticks = asyncio.run_coroutine_threadsafe(probe(), serving_loop).result(60)
    finally:
        gc.callbacks.remove(pauses)
    delays.sort()
    return delays[-1], delays[int(len(delays) * 0.99)], ticks, pauses


def stalls(series: int) -> dict[str, list[tuple[float, float, int, GcPauses]]]:
    """Probe windows on a serving dashboard, alternating the collect's switch interval
    (ours, then Python's default), and, with that one stopped, on a second one that does
    not tick (the control: what the machine alone does to a loop of this process), so
    that all three see the same machine."""
    dash = dashboard(series, port=0)
    # Its one tick comes at start; then none for an hour.
    idle = dashboard(0, port=0, interval=3600.0).start_in_thread()
    out: dict[str, list[tuple[float, float, int, GcPauses]]] = {
        "ours": [], "default": [], "idle": []}
    try:
        for _ in range(PROBE_ROUNDS):
            dash.start_in_thread()
            time.sleep(0.6)  # the first ticks (imports warm, caches filled)
            out["ours"].append(probe_window(dash))
            with default_switch_interval():
                out["default"].append(probe_window(dash))
            dash.stop()
            out["idle"].append(probe_window(idle))
    finally:
        dash.close()
        idle.close()
    return out


def main() -> None:
    print("\n## One tick against a bare registry.collect(), and the event loop's longest "
          "stall\n")
    print("Times are the CPU time of the calling thread (`time.thread_time`), medians of "
          "alternating rounds. The stall columns give the median over "
          f"{PROBE_ROUNDS} windows of {PROBE_SECONDS:g} s each of the longest (and the "
          "99th percentile) delay of a 1 ms probe on the serving loop while it ticks every "
          "0.25 s; the next column runs the same windows, alternating, with the collect at "
          "Python's default switch interval (5 ms) instead of "
          f"{telemetry.COLLECT_SWITCH_INTERVAL * 1e3:g} ms, and the last one on a second "
          "server of the same process that does not tick, with the first one stopped: "
          "the machine's own share.\n")
    print("| series in the registry | registry.collect() | tick (snapshot + encode) | ratio "
          "| longest loop stall (p99) | ticks probed | longest GC pause (full collections) "
          "| same, Python's default switch interval: longest stall (p99) "
          "| a server not ticking: longest stall (p99) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in SERIES:
        dash = dashboard(n)
        build: Any = Ticker._build  # the worker thread's whole job, without the loop
        fake = Ticker.__new__(Ticker)
        fake._clock = time.time
        fake._source = dash
        number = 200 if n < 1_000 else 20 if n < 10_000 else 5
        base, cand = compare(lambda d=dash: list(d.registry.collect()),
                             lambda b=build, f=fake: b(f, 0), number=number, rounds=7,
                             clock=time.thread_time)
        total = own_series(dash)
        dash.close()
        windows = stalls(n)

        def summary(rows: list[tuple[float, float, int, GcPauses]]) -> str:
            worst = statistics.median(r[0] for r in rows)
            p99 = statistics.median(r[1] for r in rows)
            return f"{worst * 1e3:.1f} ms ({p99 * 1e3:.1f} ms)"

        ours = windows["ours"]
        gc_longest = max(r[3].longest for r in ours)
        gc_full = sum(r[3].full for r in ours)
        print(f"| {total:,} | {fmt_seconds(base)} | {fmt_seconds(cand)} | {cand / base:.2f}x "
              f"| {summary(ours)} | {sum(r[2] for r in ours)} "
              f"| {gc_longest * 1e3:.1f} ms ({gc_full}) | {summary(windows['default'])} "
              f"| {summary(windows['idle'])} |",
              flush=True)


if __name__ == "__main__":
    main()
