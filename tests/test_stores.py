"""The records: JobInfo's names, the JSON of a job and an alert, progress history and ETA."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support import samples

from hyperdash_otel import Dashboard, JobInfo, JobStore
from hyperdash_otel.stores import (
    HISTORY_POINTS,
    MAX_ETA_SECONDS,
    JobRecord,
    StallChange,
    StallReport,
    json_progress,
    stall_alerts,
)

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)


def test_error_is_a_deprecated_alias_of_error_msg(dash: Dashboard) -> None:
    with pytest.warns(DeprecationWarning, match="error_msg"):
        job = JobInfo(id="a", status="failed", error="disk full")
    assert job.error_msg == "disk full"
    with pytest.warns(DeprecationWarning):
        assert job.error == "disk full"
    with pytest.warns(DeprecationWarning):
        job.error = "quota"
    assert job.error_msg == "quota"
    assert "error=" not in repr(job) and "error_msg='quota'" in repr(job)
    dash.add_job(job)
    assert dash.job("a")["error_msg"] == "quota"  # type: ignore[index]


def test_error_and_error_msg_together_is_refused() -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="not both"):
        JobInfo(id="a", error="x", error_msg="y")


@pytest.mark.parametrize(("progress", "shown"), [
    (0, 0), (7.8, 7), (12.5, 12), (99.4, 99), (99.9, 99), (99.999, 99), (100, 100),
])
def test_progress_is_an_int_floored_so_only_done_shows_100(progress: float, shown: int) -> None:
    assert json_progress(progress) == shown
    assert type(json_progress(progress)) is int


def test_job_and_alert_entries_use_the_originals_keys(dash: Dashboard) -> None:
    dash.add_job(JobInfo(id="a", status="running", progress=33.3, error_msg=""))
    dash.add_alert("info", "hello")
    snap = dash.snapshot(now=NOW)
    (job,) = snap["recent_jobs"]
    assert list(job)[:10] == ["id", "name", "status", "progress", "start_time", "end_time",
                              "duration", "provider", "vm_name", "error_msg"]
    assert job["progress"] == 33
    (alert,) = snap["alerts"]
    assert list(alert) == ["id", "severity", "message", "time"]


# -- progress history, ETA, stalls (an injected clock: every call takes `now`) ---------------

def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def running(job_id: str = "j", progress: float = 0.0, provider: str = "aws",
            status: str = "running") -> JobRecord:
    return JobRecord(id=job_id, name=f"export {job_id}", status=status, progress=progress,
                     start_time=None, end_time=None, duration=None, provider=provider,
                     vm_name="vm", error_msg="")


def live(store: JobStore, seconds: float, job_id: str = "j") -> JobRecord:
    record = store.get(job_id, at(seconds))
    assert record is not None
    return record


def test_steady_progress_gives_an_eta_within_ten_percent_after_five_updates() -> None:
    store = JobStore(50, stall_after=300)
    # 10% a minute: done at t=600.
    for n in range(5):
        store.upsert(running(progress=10.0 * n), at(60.0 * n))
    for now in (240.0, 250.0, 290.0):
        truth = 600.0 - now
        eta = live(store, now).eta_seconds
        assert eta is not None and abs(eta - truth) <= 0.1 * truth, (now, eta)


def test_no_eta_until_there_is_evidence() -> None:
    store = JobStore(50)
    store.upsert(running(progress=10), at(0))
    assert live(store, 0).eta_seconds is None
    store.upsert(running(progress=10), at(5))  # an update that does not move is no evidence
    store.upsert(running(progress=20), at(60))
    assert live(store, 60).eta_seconds is None
    store.upsert(running(progress=30), at(120))
    assert live(store, 120).eta_seconds == pytest.approx(420)


@pytest.mark.parametrize("step", [0.5, 1.0, 7.0])
def test_coarse_or_frequent_updates_measure_the_real_rate(step: float) -> None:
    # 0.1 %/s reported in whole percents, updated every `step` seconds: changes come every
    # 10 s, with many unchanged updates (or several changes merged) in between.
    store = JobStore(50)
    t = 0.0
    while t <= 300:
        store.upsert(running(progress=float(int(t * 0.1))), at(t))
        t += step
    eta = live(store, 300).eta_seconds
    assert eta is not None and abs(eta - 700) <= 70, eta


def test_a_jump_does_not_move_the_estimate_much() -> None:
    store = JobStore(50)
    for n in range(10):  # 1% a minute
        store.upsert(running(progress=float(n)), at(60.0 * n))
    store.upsert(running(progress=60.0), at(545))  # a skipped empty disk: +51% in 5 s
    eta = live(store, 545).eta_seconds
    assert eta is not None and abs(eta - 40 * 60) <= 0.2 * 40 * 60, eta


def test_a_brief_pause_barely_moves_the_estimate_and_a_long_one_slows_it() -> None:
    store = JobStore(50, stall_after=0)
    for n in range(21):  # 10 minutes of 1% every 30 s
        store.upsert(running(progress=float(n)), at(30.0 * n))
    before = live(store, 600).eta_seconds
    assert before == pytest.approx(80 * 30)
    brief = live(store, 700).eta_seconds  # 100 s without a change
    assert brief is not None and abs(brief - before) <= 0.1 * before
    long = live(store, 600 + 3600).eta_seconds  # an hour without a change
    assert long is not None and long > 2 * before
    store.upsert(running(progress=21.0), at(4200))  # moving again, at its old pace
    store.upsert(running(progress=22.0), at(4230))
    resumed = live(store, 4230).eta_seconds
    assert resumed == pytest.approx(78 * 30)  # the ended pause is an outlier, left out


@pytest.mark.parametrize("sequence", [
    [0, 10, 20, 100],                # jumps to 100 while still running
    [50, 60, 70, 30, 31],            # goes backwards (a retried phase), then on
    [10, 20, 30, 5],                 # ends backwards
    [99, 99.5, 99.9, 99.95],         # crawls at the end
    [0, 0.001, 0.002, 0.003],        # almost no rate at all
])
def test_no_negative_or_absurd_eta(sequence: list[float]) -> None:
    store = JobStore(50)
    for n, progress in enumerate(sequence):
        store.upsert(running(progress=progress), at(10.0 * n))
        for later in (0.0, 1.0, 30.0, 3600.0, 86400.0 * 60):
            eta = live(store, 10.0 * n + later).eta_seconds
            assert eta is None or 0 <= eta <= MAX_ETA_SECONDS, (progress, later, eta)
    if sequence[-1] == 100:
        assert live(store, 10.0 * len(sequence)).eta_seconds == 0
    if sequence[-1] < sequence[-2]:
        assert live(store, 10.0 * len(sequence)).eta_seconds is None  # starts over


def test_backwards_progress_restarts_the_history() -> None:
    store = JobStore(50)
    for n, progress in enumerate([50, 60, 70, 80]):
        store.upsert(running(progress=progress), at(10.0 * n))
    store.upsert(running(progress=20), at(40))
    assert store.history_points() == 1


def test_a_pause_longer_than_stall_after_marks_the_job_stalled_and_moving_clears_it() -> None:
    store = JobStore(50, stall_after=300)
    store.upsert(running(progress=10), at(0))
    store.upsert(running(progress=20), at(60))
    assert store.evaluate(at(60)) == StallReport((), {"aws": 0})
    # Updates keep coming, but the progress stands still.
    for t in range(61, 360, 30):
        store.upsert(running(progress=20), at(t))
    assert live(store, 359).stalled is False
    assert store.evaluate(at(359)) is None  # nothing can have changed: no scan
    report = store.evaluate(at(360))
    assert report is not None and report.stalled_by_provider == {"aws": 1}
    (change,) = report.changes
    assert (change.job.id, change.stalled, change.since, change.at) == (
        "j", True, at(60).timestamp(), at(360).timestamp())
    stalled = live(store, 400)
    assert (stalled.stalled, stalled.eta_seconds, stalled.progress_at) == (True, None, at(60))
    assert store.evaluate(at(400)) is None  # reported once
    store.upsert(running(progress=21), at(450))
    assert live(store, 450).stalled is False
    report = store.evaluate(at(451))
    assert report is not None and report.stalled_by_provider == {"aws": 0}
    assert [(c.stalled, c.job.progress) for c in report.changes] == [(False, 21)]


def test_a_job_that_is_no_longer_updated_still_becomes_stalled() -> None:
    store = JobStore(50, stall_after=5)
    store.upsert(running(progress=40), at(0))
    assert store.evaluate(at(1)) is not None  # a new running job: its provider's 0
    assert store.evaluate(at(4.9)) is None
    report = store.evaluate(at(5))
    assert report is not None and [c.stalled for c in report.changes] == [True]


def test_stall_after_zero_turns_stalls_off() -> None:
    store = JobStore(50, stall_after=0)
    store.upsert(running(progress=40), at(0))
    assert live(store, 86400).stalled is False
    assert store.evaluate(at(86400)) == StallReport((), {"aws": 0})


def test_a_stalled_job_that_ends_is_reported_once_and_leaves_the_counts() -> None:
    store = JobStore(50, stall_after=10)
    store.upsert(running("a", 40, "gcp"), at(0))
    store.upsert(running("b", 40, "gcp"), at(0))
    report = store.evaluate(at(20))
    assert report is not None and report.stalled_by_provider == {"gcp": 2}
    store.upsert(running("a", 40, "gcp", status="failed"), at(25))
    report = store.evaluate(at(26))
    assert report is not None and report.stalled_by_provider == {"gcp": 1}
    assert [(c.job.id, c.job.status, c.stalled) for c in report.changes] == [
        ("a", "failed", False)]
    assert live(store, 26, "a").eta_seconds is None and live(store, 26, "a").stalled is False


def test_history_memory_is_bounded_over_an_hour_of_ticks() -> None:
    """max_jobs jobs updated every 1 s tick for an hour of simulated time, with the jobs
    turning over (each runs 10 minutes, then completes and a new one starts)."""
    max_jobs = 50
    store = JobStore(max_jobs, stall_after=300)
    started: dict[str, float] = {}
    seq = 0
    peak_points = peak_tracks = 0
    for tick in range(3600):
        now = at(tick)
        for job_id in [j for j, t0 in started.items() if tick - t0 >= 600]:
            store.upsert(running(job_id, 100, status="completed"), now)
            del started[job_id]
        while len(started) < max_jobs:
            seq += 1
            started[f"job-{seq}"] = tick - (seq % 600)  # staggered ages
        for job_id, t0 in started.items():
            store.upsert(running(job_id, min(99.9, (tick - t0) / 6)), now)
        store.evaluate(now)
        peak_points = max(peak_points, store.history_points())
        peak_tracks = max(peak_tracks, len(store._tracks))
    assert len(store) == max_jobs
    assert peak_tracks <= max_jobs
    assert peak_points <= max_jobs * HISTORY_POINTS
    assert store.history_points() > max_jobs * 2  # it did keep history


def test_evicted_jobs_take_their_history_with_them() -> None:
    store = JobStore(3)
    for n in range(10):
        store.upsert(running(f"j{n}", 10), at(n))
        store.upsert(running(f"j{n}", 20), at(n + 0.5))
    assert len(store._tracks) == 3 and store.history_points() == 6


def test_stall_alerts_name_each_job_or_sum_up_many() -> None:
    def change(n: int, stalled: bool, status: str = "running") -> StallChange:
        return StallChange(running(f"job-{n}", 42.5, status=status), stalled, 0.0, 330.0)

    assert stall_alerts([change(1, True)]) == [
        ("warning", "Job job-1 (export job-1) stalled at 42%: no progress for 5m")]
    assert stall_alerts([change(1, False), change(2, False, "completed")]) == [
        ("info", "Job job-1 (export job-1) is moving again (42%) after 5m without progress"),
        ("info", "Job job-2 (export job-2) completed after a stall"),
    ]
    many = stall_alerts([change(n, True) for n in range(12)])
    assert many == [("warning", "12 jobs stalled (no progress): job-0, job-1, job-2 "
                                "and 9 more")]


# -- through the Dashboard: the gauge and the page's alerts ---------------------------------

def series(dash: Dashboard, name: str, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples(dash.metrics_text(), name)}


def stalled_series(dash: Dashboard) -> dict[str, float]:
    return series(dash, "hyperdash_jobs_stalled", "provider")


def raised(dash: Dashboard) -> dict[str, float]:
    return series(dash, "hyperdash_alerts_raised_total", "severity")


def test_dashboard_raises_alerts_and_moves_the_gauge(make_dashboard: Any) -> None:
    dash = make_dashboard(stall_after=60)
    dash.add_job(JobInfo(id="e1", name="export web", status="running", progress=10,
                         provider="aws"))
    dash.add_job(JobInfo(id="e2", status="pending", provider="gcp"))
    real = datetime.now(timezone.utc)
    snap = dash.snapshot(now=real + timedelta(seconds=1))
    assert [j["stalled"] for j in snap["recent_jobs"]] == [False, False]
    assert snap["alerts"] == []
    assert stalled_series(dash) == {"aws": 0.0}  # a pending job has no progress to watch
    # No more add_job calls: the tick alone finds the stall.
    snap = dash.snapshot(now=real + timedelta(seconds=61))
    by_id = {j["id"]: j for j in snap["recent_jobs"]}
    assert (by_id["e1"]["stalled"], by_id["e2"]["stalled"]) == (True, False)
    assert by_id["e1"]["eta_seconds"] is None
    (alert,) = snap["alerts"]
    assert (alert["severity"], alert["message"]) == (
        "warning", "Job e1 (export web) stalled at 10%: no progress for 1m")
    assert stalled_series(dash) == {"aws": 1.0}
    assert raised(dash) == {"critical": 0.0, "warning": 1.0, "info": 0.0}
    dash.add_job(JobInfo(id="e1", status="running", progress=12, provider="aws"))
    snap = dash.snapshot()
    assert snap["alerts"][0]["severity"] == "info"
    assert snap["alerts"][0]["message"].startswith("Job e1 (export web) is moving again (12%)")
    assert all(j["stalled"] is False for j in snap["recent_jobs"])
    assert stalled_series(dash) == {"aws": 0.0}
    assert raised(dash) == {"critical": 0.0, "warning": 1.0, "info": 1.0}


def test_the_gauge_is_right_on_a_scrape_without_ticks(make_dashboard: Any) -> None:
    dash = make_dashboard(stall_after=0.05)
    dash.add_job(JobInfo(id="e1", status="running", progress=10, provider="azure"))
    assert stalled_series(dash) == {"azure": 0.0}
    wait_until = datetime.now(timezone.utc) + timedelta(seconds=5)
    while stalled_series(dash) != {"azure": 1.0}:  # metrics_text() evaluates, as /metrics
        assert datetime.now(timezone.utc) < wait_until


def test_a_stall_alert_is_cut_to_max_text_length(make_dashboard: Any) -> None:
    dash = make_dashboard(stall_after=1, max_text_length=40)
    dash.add_job(JobInfo(id="e1", name="x" * 40, status="running", progress=10))
    snap = dash.snapshot(now=datetime.now(timezone.utc) + timedelta(seconds=2))
    assert len(snap["alerts"][0]["message"]) == 40


def test_a_full_store_lets_a_finished_job_go_before_a_running_one() -> None:
    store = JobStore(3)
    store.upsert(running("long", 10), at(0))  # the oldest, still running
    store.upsert(running("done", 100, status="completed"), at(1))
    store.upsert(running("b", 10), at(2))
    store.upsert(running("c", 10), at(3))  # full: "done" makes room, not "long"
    assert [r.id for r in store.records()] == ["c", "b", "long"]
    store.upsert(running("d", 10), at(4))  # none finished: the oldest goes
    assert [r.id for r in store.records()] == ["d", "c", "b"]
    assert store.history_points() == 3


def _reference_json(record: JobRecord, now: datetime) -> dict[str, Any]:
    """A job's JSON worked out from its fields here, without the store's cached parts."""
    duration = record.duration
    if duration is None:
        start = record.start_time
        duration = 0.0 if start is None else max(
            0.0, ((record.end_time or now) - start).total_seconds())
    return {
        "id": record.id, "name": record.name, "status": record.status,
        "progress": json_progress(record.progress),
        "start_time": None if record.start_time is None
        else record.start_time.isoformat(timespec="milliseconds")[:-6] + "Z",
        "end_time": None if record.end_time is None
        else record.end_time.isoformat(timespec="milliseconds")[:-6] + "Z",
        "duration": round(duration, 3), "provider": record.provider,
        "vm_name": record.vm_name, "error_msg": record.error_msg,
        "eta_seconds": None if record.eta_seconds is None else round(record.eta_seconds, 1),
        "stalled": record.stalled,
        "last_progress_at": None if record.progress_at is None
        else record.progress_at.isoformat(timespec="milliseconds")[:-6] + "Z",
    }


def test_render_is_the_json_of_each_live_record_over_a_job_lifecycle() -> None:
    # What every tick sends (render) against the records and their fields, as the jobs
    # move, stall, end, come back and leave, with the store's cached parts in play.
    store = JobStore(4, stall_after=100)
    steps: list[tuple[float, JobRecord]] = [
        (0, running("a", 0)), (0, running("b", 5, status="pending")),
        (10, running("a", 10)), (20, running("a", 20)), (30, running("a", 30)),
        (31, JobRecord(id="c", name="", status="completed", progress=100,
                       start_time=at(-5.25), end_time=at(31.5004), duration=None,
                       provider="gcp", vm_name="", error_msg="")),
        (32, JobRecord(id="d", name="given", status="running", progress=1, start_time=None,
                       end_time=None, duration=12.3456, provider="", vm_name="",
                       error_msg="")),
        (200, running("b", 50)), (250, running("a", 30)), (260, running("a", 40)),
        (270, running("a", 40, status="failed")), (280, running("a", 45)),
        (290, running("e", 1)),
    ]
    for t, record in steps:
        store.upsert(record, at(t))
        for now in (t, t + 0.0005, t + 99.9995, t + 150, t + 5000):
            rendered = store.render(at(now))
            records = store.records(at(now))
            assert rendered == [r.to_json(at(now)) for r in records]
            assert rendered == [_reference_json(r, at(now)) for r in records]
            assert [list(job) for job in rendered] == [list(_reference_json(r, at(now)))
                                                       for r in records]
    assert {job["id"] for job in store.render(at(300))} == {"a", "b", "d", "e"}  # c made room
