"""The records: JobInfo's names, the JSON of a job and an alert, progress history and ETA."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hyperdash_otel import Dashboard, JobInfo
from hyperdash_otel.stores import json_progress

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
