"""Each update call against the raw OpenTelemetry calls it makes, on the same instruments.

The baseline records the same values through the dashboard's own OpenTelemetry
instruments (``set``/``add`` on the instrument behind each field, with the same
attributes): what is left of the ratio is the update call's own work (validation, the
lock, the running totals). Every call changes every value, so no "unchanged, skipped"
shortcut flatters the dashboard; a change of health status moves two of the three
series, and the baseline sets those two. Before timing, one call of each runs with the
instruments spied on, and the bench stops unless both make the same calls (instrument,
value, attributes). Times are the CPU time of the thread (``time.thread_time``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hyperdash_otel import Config, Dashboard

from ._timing import compare, print_table

NUMBER = 5_000


def rows() -> list[tuple[str, str, float, float]]:
    dash = Dashboard(Config(collect_system_metrics=False))
    inst = dash._instrument  # bench only: the same instrument each update call records to
    state = {"n": 0, "raw": 0}
    jobs_active, jobs_pending, queue = (inst("jobs_active"), inst("jobs_pending"),
                                        inst("queue_length"))
    completed, failed = inst("jobs_completed"), inst("jobs_failed")
    memory, cpu, threads = inst("memory_usage"), inst("cpu_usage"), inst("goroutines")
    requests, errors, latency = (inst("http_requests"), inst("http_errors"),
                                 inst("avg_response_time"))
    health = inst("system_health")
    statuses = ("healthy", "degraded", "unhealthy")

    def raw_jobs() -> None:
        state["raw"] += 1
        n = state["raw"]
        jobs_active.set(n % 50)
        jobs_pending.set(n % 7)
        queue.set(n % 9)
        completed.add(1)
        failed.add(1)

    def ours_jobs() -> None:
        state["n"] += 1
        n = state["n"]
        dash.update_job_metrics(n % 50, n, n, n % 7, n % 9)

    def raw_system() -> None:
        state["raw"] += 1
        n = state["raw"]
        memory.set(n * 1024 * 1024.0)
        cpu.set(n % 100 + 0.5)
        threads.set(n % 40)

    def ours_system() -> None:
        state["n"] += 1
        n = state["n"]
        dash.update_system_metrics(float(n), n % 100 + 0.5, n % 40)

    def raw_http() -> None:
        state["raw"] += 1
        requests.add(3)
        errors.add(1)
        latency.set(state["raw"] % 300 / 1000.0)

    def ours_http() -> None:
        state["n"] += 1
        n = state["n"]
        dash.update_http_metrics(3 * n, n, n % 300)

    def raw_health() -> None:
        # A change of status moves two series (the old one to 0, the new one to 1); the
        # third stays 0 and is not set again, by the dashboard either.
        state["raw"] += 1
        n = state["raw"]
        health.set(0, {"status": statuses[(n - 1) % 3]})
        health.set(1, {"status": statuses[n % 3]})

    def ours_health() -> None:
        state["n"] += 1
        dash.set_system_health(statuses[state["n"] % 3])

    out = []
    for name, raw_name, raw, ours in (
        ("update_job_metrics", "3 gauge sets + 2 counter adds", raw_jobs, ours_jobs),
        ("update_system_metrics", "3 gauge sets", raw_system, ours_system),
        ("update_http_metrics", "2 counter adds + 1 gauge set", raw_http, ours_http),
        ("set_system_health", "2 gauge sets with a status label", raw_health, ours_health),
    ):
        state["n"] = state["raw"] = 0
        dash_totals_reset(dash)
        check_same_calls(name, [jobs_active, jobs_pending, queue, completed, failed, memory,
                                cpu, threads, requests, errors, latency, health], raw, ours)
        base, cand = compare(raw, ours, number=NUMBER, rounds=15, clock=time.thread_time)
        out.append((name, f"raw OpenTelemetry: {raw_name}", base, cand))
    dash.close()
    return out


Call = tuple[str, str, float, tuple[tuple[str, Any], ...]]


def recorded_calls(instruments: list[Any], fn: Callable[[], None]) -> list[Call]:
    """The OpenTelemetry calls ``fn`` makes on ``instruments``: (instrument, method, value,
    attributes), in order."""
    calls: list[Call] = []

    def spy(instrument: Any, method: str) -> Callable[..., None]:
        real = getattr(instrument, method)

        def record(amount: float, attributes: Any = None, context: Any = None) -> None:
            calls.append((instrument.name, method, amount,
                          tuple(sorted((attributes or {}).items()))))
            real(amount, attributes, context)
        return record

    for instrument in instruments:
        for method in ("set", "add"):
            if hasattr(instrument, method):
                setattr(instrument, method, spy(instrument, method))
    try:
        fn()
    finally:
        for instrument in instruments:
            for method in ("set", "add"):
                instrument.__dict__.pop(method, None)
    return calls


def check_same_calls(name: str, instruments: list[Any], raw: Callable[[], None],
                     ours: Callable[[], None]) -> None:
    """An honest baseline: one call of each makes the same OpenTelemetry calls (same
    instruments, values and attributes), or the bench stops."""
    baseline, candidate = recorded_calls(instruments, raw), recorded_calls(instruments, ours)
    if sorted(baseline) != sorted(candidate):
        raise SystemExit(f"{name}: the baseline makes {baseline}, the call makes {candidate}")


def dash_totals_reset(dash: Dashboard) -> None:
    """A fresh start for the running totals, so the next case's counts may begin at 1."""
    for field in dash._totals:  # bench only: the totals are private bookkeeping
        dash._totals[field] = 0


def main() -> None:
    print_table("Update calls against the raw OpenTelemetry calls they make (per call)", rows())


if __name__ == "__main__":
    main()
