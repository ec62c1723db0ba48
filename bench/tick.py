"""One tick against a bare ``registry.collect()``, and how long the event loop stalls.

A tick is what the server's worker thread does each interval: one snapshot (collect and
build) and one encode of the full message and its light replay copy
(``Ticker._build``). The baseline is the collect alone, the least any exporter of the
same registry does. Then a real server ticks every 0.25 s while a probe callback on its
event loop asks to run every millisecond: the longest delay it sees is the longest stall a
tick inflicts on the connections (the tick runs in a thread, but shares the GIL).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server.stream import Ticker

from ._timing import compare, fmt_seconds

SERIES = (0, 1_000, 10_000)
PROBE_SECONDS = 3.0


def dashboard(series: int, *, port: int | None = None) -> Dashboard:
    config = Config(collect_system_metrics=False, max_custom_series=200,
                    update_interval=0.25, **({} if port is None else {"port": port}))
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


def stall(dash: Dashboard) -> tuple[float, int, GcPauses]:
    """(longest delay of a 1 ms probe on the serving loop, ticks during the probe, GC)."""
    pauses = GcPauses()
    dash.start_in_thread()
    try:
        runner = dash.server
        assert runner is not None and runner.context is not None and runner.loop is not None
        ticker, serving_loop = runner.context.ticker, runner.loop
        time.sleep(0.6)  # the first ticks (imports warm, caches filled)

        async def probe() -> tuple[float, int]:
            loop = asyncio.get_running_loop()
            first = ticker.ticks
            worst = 0.0
            end = loop.time() + PROBE_SECONDS
            while loop.time() < end:
                asked = loop.time()
                await asyncio.sleep(0.001)
                worst = max(worst, loop.time() - asked - 0.001)
            return worst, ticker.ticks - first

        gc.callbacks.append(pauses)
        try:
            worst, ticks = asyncio.run_coroutine_threadsafe(probe(), serving_loop).result(60)
        finally:
            gc.callbacks.remove(pauses)
        return worst, ticks, pauses
    finally:
        dash.close()


def main() -> None:
    print("\n## One tick against a bare registry.collect(), and the event loop's longest "
          "stall\n")
    print("| series in the registry | registry.collect() | tick (snapshot + encode) | ratio "
          "| longest loop stall while ticking (1 ms probe) | ticks probed "
          "| longest GC pause (full collections) |")
    print("|---|---|---|---|---|---|---|")
    for n in SERIES:
        dash = dashboard(n)
        build: Any = Ticker._build  # the worker thread's whole job, without the loop
        fake = Ticker.__new__(Ticker)
        fake._clock = time.time
        fake._source = dash
        number = 200 if n < 1_000 else 20 if n < 10_000 else 5
        base, cand = compare(lambda d=dash: list(d.registry.collect()),
                             lambda b=build, f=fake: b(f, 0), number=number, rounds=5)
        total = own_series(dash)
        dash.close()
        worst, ticks, pauses = stall(dashboard(n, port=0))
        print(f"| {total:,} | {fmt_seconds(base)} | {fmt_seconds(cand)} | {cand / base:.2f}x "
              f"| {worst * 1e3:.1f} ms | {ticks} | {pauses.longest * 1e3:.1f} ms "
              f"({pauses.full}) |", flush=True)


if __name__ == "__main__":
    main()
