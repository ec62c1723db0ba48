"""The simulated VM-export daemon: the pure simulation, its push through the public API, and
``hyperdash demo`` as a real process."""

from __future__ import annotations

import asyncio
import math
import re
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import psutil
from support import get_json
import pytest
from hyperdash_process import HyperdashProcess

from hyperdash_otel import JOB_STATUSES, Config, Dashboard
from hyperdash_otel.demo import (
    DEFAULT_HANG_DURATION,
    COMMON_ERRORS,
    ERRORS,
    FAILURE_CRITICAL,
    FAILURE_WARNING,
    MAX_QUEUE,
    PROVIDERS,
    QUEUE_WARNING,
    REPORT_LIMIT,
    DemoSettings,
    JobState,
    Simulation,
    Step,
    apply_step,
    next_level,
    run_demo,
    sim_clock,
)

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
TERMINAL = {"completed", "failed", "cancelled"}


def run(sim: Simulation, dts: list[float]) -> list[Step]:
    return [sim.advance(dt) for dt in dts]


def final_jobs(steps: list[Step]) -> dict[str, JobState]:
    """Each job's last reported state."""
    jobs: dict[str, JobState] = {}
    for step in steps:
        for job in step.jobs:
            jobs[job.id] = job
    return jobs


# -- the simulation ----------------------------------------------------------------------------


def test_same_seed_same_steps() -> None:
    dts = [1.0] * 600
    assert run(Simulation(1), dts) == run(Simulation(1), dts)


def test_different_seeds_differ() -> None:
    a, b = run(Simulation(1), [1.0] * 120), run(Simulation(2), [1.0] * 120)
    assert final_jobs(a) != final_jobs(b)


def test_jobs_do_not_depend_on_the_step_size() -> None:
    """Every job-level draw happens at its simulated moment, so the jobs at t=300 s are the
    same whether the simulation got there in 600 steps, 150 or one."""
    fine = run(Simulation(7), [0.5] * 600)
    coarse = run(Simulation(7), [2.0] * 150)
    single = run(Simulation(7), [300.0])
    ends = [s[-1] for s in (fine, coarse, single)]
    assert {(e.now, e.active, e.completed, e.failed, e.pending) for e in ends} == {
        (300.0, ends[0].active, ends[0].completed, ends[0].failed, ends[0].pending)
    }
    assert final_jobs(fine) == final_jobs(coarse) == final_jobs(single)


def test_hangs_do_not_depend_on_the_step_size_either() -> None:
    fine = run(Simulation(7, hang_every=20, hang_duration=(30, 60)), [0.5] * 600)
    single = run(Simulation(7, hang_every=20, hang_duration=(30, 60)), [300.0])
    assert final_jobs(fine) == final_jobs(single)
    assert [s.hung for s in fine] == [s.hung for s in
                                      run(Simulation(7, hang_every=20, hang_duration=(30, 60)),
                                          [0.5] * 600)]


def test_a_hung_export_stands_still_then_moves_again_and_finishes() -> None:
    sim = Simulation(5, hang_every=30, hang_duration=(40, 40))
    progress: dict[str, list[tuple[float, float]]] = {}
    hung_at: dict[str, float] = {}
    for step in run(sim, [1.0] * 900):
        if step.hung is not None:
            hung_at.setdefault(step.hung, step.now)
        for job in step.jobs:
            progress.setdefault(job.id, []).append((step.now, job.progress))
    assert len(hung_at) >= 5
    for job_id, start in hung_at.items():
        seen = progress[job_id]
        still = [p for t, p in seen if start <= t <= start + 38]
        assert len(set(still)) == 1, (job_id, seen)  # stands still for the whole hang
        if start + 42 < sim.now:  # then moves again (or ends, further on than it stood)
            assert max(p for t, p in seen if t >= start + 40) > still[0], (job_id, seen)


def test_one_export_hangs_at_a_time() -> None:
    steps = run(Simulation(2, hang_every=5, hang_duration=(100, 100)), [1.0] * 600)
    hung = [s.hung for s in steps if s.hung]
    runs = [h for i, h in enumerate(hung) if i == 0 or hung[i - 1] != h]
    assert len(runs) == len(set(runs)) >= 3


def test_hangs_off_and_the_hang_length_follows_stall_after() -> None:
    assert all(s.hung is None for s in run(Simulation(1, hang_every=0), [10.0] * 360))
    settings = DemoSettings(seed=1, speed=4)
    assert settings.hang_duration(30) == (240.0, 480.0)  # 2x-4x stall_after, in real time
    assert settings.hang_duration(0) == DEFAULT_HANG_DURATION


def test_a_long_run_keeps_its_invariants() -> None:
    sim = Simulation(3, rate=12, workers=6)
    previous: Step | None = None
    seen: dict[str, JobState] = {}
    for _ in range(3600):
        step = sim.advance(1.0)
        assert 0 <= step.active <= 6
        assert step.pending == step.queue_length <= MAX_QUEUE
        assert 0 <= step.http_errors <= step.http_requests
        assert step.avg_response_time_ms > 0
        assert step.health in ("healthy", "degraded", "unhealthy")
        assert all(sev in ("info", "warning", "critical") and msg for sev, msg in step.alerts)
        if previous is not None:  # running totals never go back
            for name in ("completed", "failed", "http_requests", "http_errors"):
                assert getattr(step, name) >= getattr(previous, name), name
        for job in step.jobs:
            assert job.status in JOB_STATUSES and job.provider in PROVIDERS
            assert re.fullmatch(r"job-\d{5}", job.id)
            assert job.name.startswith(f"export-{job.vm_name}-")
            assert 0 <= job.progress <= 100
            assert (job.progress == 100) == (job.status == "completed")
            if job.status == "failed":
                assert job.error_msg in ERRORS[job.provider] + COMMON_ERRORS
            if job.status in TERMINAL:
                assert job.started_at is not None and job.ended_at is not None
                assert job.ended_at >= job.started_at
            old = seen.get(job.id)
            if old is not None:
                assert old.status not in TERMINAL, f"{job.id} changed after it ended"
                assert job.progress >= old.progress
            seen[job.id] = job
        previous = step
    assert step.completed > 300 and step.failed > 0
    assert {j.provider for j in seen.values()} == set(PROVIDERS)
    assert {j.status for j in seen.values()} >= {"completed", "failed", "cancelled"}


def test_alerts_and_health_follow_the_thresholds() -> None:
    sim = Simulation(1)
    steps = run(sim, [1.0] * 3600)
    alerts = [(step, sev, msg) for step in steps for sev, msg in step.alerts]
    failure = [a for a in alerts if a[2].startswith("Export failure ratio")]
    queue_ = [a for a in alerts if a[2].startswith("Export queue")]
    assert {sev for _, sev, _ in failure} >= {"warning", "critical", "info"}
    assert {sev for _, sev, _ in queue_} >= {"warning", "info"}
    for step, severity, message in failure + queue_:
        if severity == "critical":
            assert step.health == "unhealthy", message
        elif severity == "warning":
            assert step.health in ("degraded", "unhealthy"), message
    for _step, severity, message in failure:
        ratio = int(re.search(r"(\d+)%", message).group(1)) / 100  # type: ignore[union-attr]
        if severity == "warning":
            assert FAILURE_WARNING <= ratio < FAILURE_CRITICAL
        elif severity == "critical":
            assert ratio >= FAILURE_CRITICAL
    for step, severity, _message in queue_:
        if severity != "info":
            assert step.queue_length >= QUEUE_WARNING
    healths = [s.health for s in steps]
    assert healths.count("healthy") > len(steps) / 2  # trouble is the exception
    assert "unhealthy" in healths and "degraded" in healths


def test_an_overloaded_queue_is_bounded_and_refuses_exports() -> None:
    sim = Simulation(5, rate=600, workers=1)
    step = sim.advance(600.0)
    assert step.queue_length == MAX_QUEUE
    assert step.http_errors >= 5000 - MAX_QUEUE - 50  # each refused export is an API error
    assert len(step.jobs) <= REPORT_LIMIT + 1
    assert [j.seq for j in step.jobs] == sorted(j.seq for j in step.jobs)
    assert ("critical", f"Export queue at {MAX_QUEUE} jobs (critical at 36)") in step.alerts


@pytest.mark.parametrize(
    ("current", "value", "expected"),
    [
        (0, 0.10, 0), (0, 0.25, 1), (0, 0.40, 2), (1, 0.45, 2),
        (1, 0.19, 1),  # below the warning threshold but not yet clear of it
        (1, 0.15, 0), (2, 0.36, 2), (2, 0.30, 1), (2, 0.10, 0),
    ],
)
def test_next_level_rises_at_once_and_falls_with_hysteresis(
    current: int, value: float, expected: int
) -> None:
    assert next_level(current, value, 0.25, 0.40) == expected


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Simulation("1"), TypeError),  # type: ignore[arg-type]
        (lambda: Simulation(1, rate=0), ValueError),
        (lambda: Simulation(1, rate=601), ValueError),
        (lambda: Simulation(1, workers=0), ValueError),
        (lambda: Simulation(1).advance(-1), ValueError),
        (lambda: Simulation(1).advance(math.nan), ValueError),
        (lambda: DemoSettings(seed=1, speed=0), ValueError),
        (lambda: DemoSettings(seed=1, warmup=-1), ValueError),
        (lambda: DemoSettings(seed=1, rate=-3), ValueError),
        (lambda: DemoSettings(seed=1, hang_every=-1), ValueError),
        (lambda: Simulation(1, hang_duration=(5, 1)), ValueError),
    ],
)
def test_bad_settings_are_refused(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_sim_clock_maps_simulated_time_at_the_speed() -> None:
    clock = sim_clock(EPOCH, 120.0, 10.0)
    assert clock(120.0) == EPOCH
    assert clock(220.0) == EPOCH + timedelta(seconds=10)
    assert clock(0.0) == EPOCH - timedelta(seconds=12)


# -- through the public API --------------------------------------------------------------------


def test_steps_reach_the_dashboard_through_the_public_api(
    make_dashboard: Callable[..., Dashboard], monkeypatch: pytest.MonkeyPatch
) -> None:
    dash = make_dashboard(collect_system_metrics=True)

    def pushed(*args: object) -> None:
        raise AssertionError("the demo must leave system metrics to the sampler")

    monkeypatch.setattr(dash, "update_system_metrics", pushed)
    sim = Simulation(1)
    clock = sim_clock(EPOCH, 0.0, 1.0)
    raised = 0
    newest = 0
    for _ in range(900):
        step = sim.advance(1.0)
        apply_step(dash, step, clock)
        raised += len(step.alerts)
        newest = max([newest, *(j.seq for j in step.jobs)])
    snap = dash.snapshot(now=clock(sim.now))
    assert {k: snap[k] for k in ("jobs_active", "jobs_completed", "jobs_failed",
                                 "jobs_pending", "queue_length", "http_requests",
                                 "http_errors", "system_health")} == {
        "jobs_active": step.active, "jobs_completed": step.completed,
        "jobs_failed": step.failed, "jobs_pending": step.pending,
        "queue_length": step.queue_length, "http_requests": step.http_requests,
        "http_errors": step.http_errors, "system_health": step.health,
    }
    assert snap["avg_response_time"] == pytest.approx(step.avg_response_time_ms, abs=1e-3)
    assert set(snap["provider_stats"]) == set(PROVIDERS)
    assert sum(snap["provider_stats"].values()) == newest  # every job reported, once
    assert len(snap["alerts"]) == min(raised, dash.config.max_alerts)
    assert snap["memory_usage"] > 0 and snap["goroutines"] >= 1  # sampled, not pushed
    running = [j for j in snap["recent_jobs"] if j["status"] == "running"]
    assert running and all(j["start_time"] and j["end_time"] is None for j in running)
    ended = [j for j in snap["recent_jobs"] if j["status"] in TERMINAL]
    assert ended and all(j["end_time"] >= j["start_time"] for j in ended)


def test_run_demo_serves_and_stops_on_the_event() -> None:
    async def main() -> tuple[int, dict[str, Any], Dashboard]:
        stop = asyncio.Event()
        ready: list[Dashboard] = []
        config = Config(port=0, update_interval=0.05, collect_system_metrics=False)
        settings = DemoSettings(seed=1, warmup=0, speed=40)
        task = asyncio.ensure_future(run_demo(config, settings, stop, ready.append))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        snap: dict[str, Any] = {}
        while loop.time() < deadline and not task.done():
            if ready:
                snap = ready[0].snapshot()
                if snap["jobs_completed"] >= 1 and len(snap["provider_stats"]) == 3:
                    break
            await asyncio.sleep(0.02)
        assert ready and ready[0].port, "run_demo never reported ready"
        stop.set()
        steps = await asyncio.wait_for(task, 5)
        return steps, snap, ready[0]

    steps, snap, dash = asyncio.run(main())
    assert steps > 0
    assert snap["jobs_completed"] >= 1 and set(snap["provider_stats"]) == set(PROVIDERS)
    assert dash.port is None  # stopped serving


# -- `hyperdash demo` as a process -------------------------------------------------------------


def poll(fetch: Callable[[], dict[str, Any]], until: Callable[[dict[str, Any]], bool],
         timeout: float) -> dict[str, Any]:
    """Fetch until ``until`` holds; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not until(value):
        assert time.monotonic() < deadline, f"condition not met within {timeout}s: {value}"
        time.sleep(0.05)
        value = fetch()
    return value


def progressed(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Some job running in ``first`` is further along (or ended) in ``second``."""
    later = {j["id"]: j for j in second["recent_jobs"]}
    for job in first["recent_jobs"]:
        after = later.get(job["id"])
        if job["status"] == "running" and after is not None and (
            after["progress"] > job["progress"] or after["status"] != "running"
        ):
            return True
    return False


def assert_live_system_metrics(snap: dict[str, Any], pid: int) -> None:
    process = psutil.Process(pid)
    rss_mb = process.memory_info().rss / (1024 * 1024)
    assert snap["memory_usage"] == pytest.approx(rss_mb, rel=0.25, abs=8)
    assert abs(snap["goroutines"] - process.num_threads()) <= 3
    assert snap["goroutines"] >= 1 and snap["cpu_usage"] >= 0


def test_hyperdash_demo_shows_a_live_workload_and_stops_on_sigint(
    spawn: Callable[..., HyperdashProcess],
) -> None:
    demo = spawn("demo", "--port", "0", "--seed", "1")
    url = demo.line()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(":0/")
    api = url + "api/metrics"
    first = poll(lambda: get_json(api), lambda s: bool(s["recent_jobs"]), timeout=5)
    second = poll(lambda: get_json(api),
                  lambda s: s["timestamp"] != first["timestamp"] and progressed(first, s),
                  timeout=5)
    assert set(second["provider_stats"]) == set(PROVIDERS)
    assert {j["provider"] for j in second["recent_jobs"]} == set(PROVIDERS)
    assert second["jobs_completed"] >= 1
    assert second["http_requests"] > 0 and second["avg_response_time"] > 0
    assert second["jobs_active"] > 0
    assert_live_system_metrics(second, demo.proc.pid)
    code, took = demo.stop(signal.SIGINT)
    assert (code, took < 2.0) == (0, True), took
    assert "Traceback" not in demo.stderr()


def test_hyperdash_demo_completes_jobs_live_and_stops_on_sigterm(
    spawn: Callable[..., HyperdashProcess],
) -> None:
    """No warm-up: every job on the page was born, ran and ended while we watched."""
    demo = spawn("demo", "--port", "0", "--seed", "1", "--warmup", "0", "--speed", "20",
                 "--interval", "0.2")
    api = demo.line() + "api/metrics"
    snap = poll(lambda: get_json(api),
                lambda s: s["jobs_completed"] >= 1 and len(s["provider_stats"]) == 3,
                timeout=10)
    assert snap["http_requests"] > 0
    code, took = demo.stop(signal.SIGTERM)
    assert (code, took < 2.0) == (0, True), took


LINE = re.compile(
    r"\d\d:\d\d:\d\d  active +(\d+)  completed +(\d+)  failed +(\d+)  queue +(\d+)"
    r"  cpu +([\d.]+)%  mem +(\d+) MB  (healthy|degraded|unhealthy)"
)


def test_hyperdash_watch_follows_the_demo(spawn: Callable[..., HyperdashProcess]) -> None:
    demo = spawn("demo", "--port", "0", "--seed", "1", "--interval", "0.2")
    url = demo.line()
    watch = spawn("watch", url, "--count", "4")
    lines = [watch.line() for _ in range(4)]
    assert watch.proc.wait(10) == 0
    figures = [LINE.match(line) for line in lines]
    assert all(figures), lines
    completed = [int(m.group(2)) for m in figures if m]
    assert completed == sorted(completed) and completed[0] >= 1
    assert all(int(m.group(6)) > 0 for m in figures if m)  # live memory, in MB
    assert demo.stop()[0] == 0


def test_a_step_replays_as_job_infos() -> None:
    job = JobState(seq=1, id="job-00001", name="export-prod-web-01-ova", provider="aws",
                   vm_name="prod-web-01", status="failed", progress=42.0, started_at=10.0,
                   ended_at=30.0, error_msg="EBS snapshot did not complete within 15m")
    info = job.to_job_info(sim_clock(EPOCH, 0.0, 2.0))
    assert (info.start_time, info.end_time) == (EPOCH + timedelta(seconds=5),
                                                EPOCH + timedelta(seconds=15))
    assert (info.id, info.status, info.progress, info.error_msg) == (
        "job-00001", "failed", 42.0, "EBS snapshot did not complete within 15m")
    assert replace(job, started_at=None).to_job_info(sim_clock(EPOCH, 0, 1)).start_time is None
