"""System metrics: the psutil sampler against psutil's own reading of this process, the
dashboard's use of it, and pushed values winning."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psutil
from support import get_json
import pytest

from hyperdash_otel import Dashboard
from hyperdash_otel.system import ProcessSampler

MB = 1024 * 1024


def rss() -> int:
    return psutil.Process().memory_info().rss


def threads() -> int:
    return psutil.Process().num_threads()


@pytest.fixture
def parked_threads() -> Iterator[Callable[[int], None]]:
    """Starts threads that wait on an event; releases and joins them after the test."""
    release = threading.Event()
    started: list[threading.Thread] = []

    def park(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=release.wait, args=(10,), daemon=True)
            t.start()
            started.append(t)

    yield park
    release.set()
    for t in started:
        t.join(10)


def exposition_value(text: str, name: str) -> float:
    """The value of the one series of family ``name`` in a text exposition."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith((name + " ", name + "{"))]
    assert len(values) == 1, (name, values)
    return values[0]


def burn(seconds: float) -> None:
    """Keep one core busy for ``seconds`` of wall time (bounded by the clock, not a count)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def test_memory_is_the_resident_set_size() -> None:
    sample = ProcessSampler().sample()
    assert sample.memory_bytes == pytest.approx(rss(), rel=0.1, abs=4 * MB)


def test_memory_follows_an_allocation() -> None:
    sampler = ProcessSampler()
    before = sampler.sample().memory_bytes
    block = bytearray(64 * MB)  # zero-filled, so the pages are touched
    try:
        after = sampler.sample().memory_bytes
    finally:
        del block
    assert after - before >= 48 * MB


def test_threads_are_the_live_threads(parked_threads: Callable[[int], None]) -> None:
    sampler = ProcessSampler()
    before = sampler.sample().threads
    assert abs(before - threads()) <= 1
    parked_threads(5)
    after = sampler.sample().threads
    assert after - before >= 5
    assert abs(after - threads()) <= 1


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def test_cpu_covers_the_last_interval_not_the_whole_life() -> None:
    """Each reading matches psutil's CPU time over the window since the previous sample: a
    busy window reads high, the idle window after it low (an average since the start would
    sit in between)."""
    sampler = ProcessSampler()
    readings: list[tuple[float, float]] = []
    for work in (lambda: burn(0.4), lambda: threading.Event().wait(0.4)):
        sampler.sample()
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        work()
        reading = sampler.sample().cpu_percent
        expected = 100 * (cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        readings.append((reading, expected))
    (busy, busy_expected), (idle, idle_expected) = readings
    assert busy == pytest.approx(busy_expected, abs=15), readings
    assert idle == pytest.approx(idle_expected, abs=10), readings
    if busy_expected - idle_expected >= 5:  # else the machine was too loaded to tell
        assert idle < busy / 2, readings


def test_the_dashboard_reports_this_process(
    make_dashboard: Callable[..., Dashboard], parked_threads: Callable[[int], None]
) -> None:
    dash = make_dashboard(collect_system_metrics=True)
    parked_threads(3)
    snap = dash.snapshot()
    assert snap["memory_usage"] == pytest.approx(rss() / MB, rel=0.1, abs=4)
    assert abs(snap["goroutines"] - threads()) <= 1
    assert snap["cpu_usage"] >= 0
    exposed = exposition_value(dash.metrics_text(), "hyperdash_process_memory_usage_bytes")
    assert exposed == pytest.approx(rss(), rel=0.1, abs=4 * MB)


def test_pushed_values_win_over_sampling(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard(collect_system_metrics=True)
    assert dash.snapshot()["memory_usage"] > 0
    dash.update_system_metrics(512.0, 42.5, 64)
    for _ in range(3):  # and keep winning, tick after tick
        snap = dash.snapshot()
        assert (snap["memory_usage"], snap["cpu_usage"], snap["goroutines"]) == (512, 42.5, 64)
    text = dash.metrics_text()
    assert exposition_value(text, "hyperdash_process_memory_usage_bytes") == 512 * MB
    assert exposition_value(text, "hyperdash_process_threads") == 64


def test_without_collection_nothing_is_sampled(make_dashboard: Callable[..., Dashboard]) -> None:
    snap = make_dashboard(collect_system_metrics=False).snapshot()
    assert (snap["memory_usage"], snap["cpu_usage"], snap["goroutines"]) == (0, 0.0, 0)


def test_a_served_dashboard_samples_every_tick(make_dashboard: Callable[..., Dashboard]) -> None:
    dash = make_dashboard(collect_system_metrics=True, update_interval=0.05).start_in_thread()
    api = f"{dash.url}api/metrics"
    first = get_json(api)
    block = bytearray(64 * MB)
    try:
        deadline = time.monotonic() + 10
        snap = get_json(api)
        while snap["memory_usage"] - first["memory_usage"] < 48:
            assert time.monotonic() < deadline, (first["memory_usage"], snap["memory_usage"])
            time.sleep(0.02)
            snap = get_json(api)
    finally:
        del block
    assert abs(snap["goroutines"] - threads()) <= 2
