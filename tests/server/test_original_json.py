"""Live messages decode into the original's structs: every key, with its JSON type.

A Go client of the original decodes ``/api/metrics``, ``/ws`` and ``/api/jobs`` into its
``Metrics``, ``JobInfo`` and ``Alert`` structs. Go's decoder refuses a number with a fraction
(or written ``7.0``) for an ``int`` field, anything but a string or null for a ``time.Time``,
and a string where a number belongs; a missing key silently stays zero, which is as bad for
the original page (it reads ``alert.time``). Here each live entry is checked against
:data:`JOB_FIELDS`, :data:`ALERT_FIELDS` and :data:`SNAPSHOT_FIELDS`, after ``json.loads`` of
the bytes on the wire (so ``7.0`` is a float, as Go would see it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hyperdash_otel import SNAPSHOT_FIELDS, JobInfo
from hyperdash_otel.snapshot import ALERT_FIELDS, JOB_FIELDS

# time.Time's UnmarshalJSON takes RFC 3339 with an optional fraction and a zone.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
ORIGINAL_JOB_KEYS = ["id", "name", "status", "progress", "start_time", "end_time", "duration",
                     "provider", "vm_name", "error_msg"]
ORIGINAL_ALERT_KEYS = ["id", "severity", "message", "time"]


def go_type_errors(value: Any, expected: type | tuple[type, ...], where: str) -> list[str]:
    """Why a Go decoder would refuse ``value`` for a field of ``expected`` type (or [])."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    for kind in kinds:
        if kind is type(None) and value is None:
            return []
        if kind is bool and isinstance(value, bool):
            return []
        if isinstance(value, bool):
            continue
        if kind is int and isinstance(value, int):
            return []
        if kind is float and isinstance(value, (int, float)):
            return []
        if kind is str and isinstance(value, str):
            if where.endswith(("time", "timestamp")) and not RFC3339.fullmatch(value):
                return [f"{where}: {value!r} is not RFC 3339"]
            return []
        if kind in (dict, list) and isinstance(value, kind):
            return []
    return [f"{where}: {value!r} ({type(value).__name__}) does not decode as {kinds}"]


def entry_errors(entry: Any, fields: dict[str, Any], where: str) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: not an object: {entry!r}"]
    errors = [f"{where}: missing {key!r}" for key in fields if key not in entry]
    for key, kind in fields.items():
        if key in entry:
            errors += go_type_errors(entry[key], kind, f"{where}.{key}")
    # The original's keys first, in its order; ours (if any) only after them.
    if not errors and list(entry)[: len(fields)] != list(fields):
        errors.append(f"{where}: keys out of the original's order: {list(entry)}")
    return errors


def message_errors(message: Any) -> list[str]:
    errors = entry_errors(message, SNAPSHOT_FIELDS, "metrics")
    for provider, count in message.get("provider_stats", {}).items():
        errors += go_type_errors(count, int, f"provider_stats[{provider!r}]")
    for n, job in enumerate(message.get("recent_jobs", [])):
        errors += entry_errors(job, JOB_FIELDS, f"recent_jobs[{n}]")
    for n, alert in enumerate(message.get("alerts", [])):
        errors += entry_errors(alert, ALERT_FIELDS, f"alerts[{n}]")
    return errors


def test_the_field_tables_are_the_originals() -> None:
    assert list(JOB_FIELDS) == ORIGINAL_JOB_KEYS
    assert JOB_FIELDS["progress"] is int
    assert list(ALERT_FIELDS) == ORIGINAL_ALERT_KEYS


@pytest.mark.parametrize("bad", [
    {"progress": 7.8}, {"progress": 7.0}, {"progress": True}, {"start_time": 0},
    {"start_time": "yesterday"}, {"duration": "3s"}, {"error_msg": None},
])
def test_the_check_refuses_what_go_refuses(bad: dict[str, Any]) -> None:
    good = {"id": "j", "name": "n", "status": "running", "progress": 7,
            "start_time": "2026-11-25T10:30:00.000Z", "end_time": None, "duration": 1.5,
            "provider": "aws", "vm_name": "vm", "error_msg": ""}
    assert entry_errors(good, JOB_FIELDS, "job") == []
    assert entry_errors({**good, **bad}, JOB_FIELDS, "job") != []
    missing = dict(good)
    del missing["error_msg"]
    assert entry_errors(missing, JOB_FIELDS, "job") == ["job: missing 'error_msg'"]


def feed(dash: Any) -> None:
    """Every shape a job entry takes: pending (no times), running at a fraction just under
    100, completed with a given duration, failed with an error; and one alert of each level."""
    now = datetime.now(timezone.utc)
    dash.add_job(JobInfo(id="pending", name="queued", provider="gcp"))
    dash.add_job(JobInfo(id="running", name="almost", status="running", progress=99.9,
                         start_time=now - timedelta(minutes=3), provider="aws", vm_name="vm-1"))
    dash.add_job(JobInfo(id="done", status="completed", progress=100,
                         duration=timedelta(seconds=61.25), provider="azure"))
    dash.add_job(JobInfo(id="broke", status="failed", progress=7.8, provider="aws",
                         error_msg="checksum mismatch after transfer"))
    for severity in ("critical", "warning", "info"):
        dash.add_alert(severity, f"{severity} alert")


def fed(message: Any) -> bool:
    """Whether ``message`` was built after :func:`feed` returned (its last call adds the
    third alert): a tick may fall between two of its calls."""
    return len(message["alerts"]) == 3


def check_jobs(jobs: Any) -> None:
    assert isinstance(jobs, list) and {j["id"] for j in jobs} == {
        "pending", "running", "done", "broke"}
    errors = [e for n, job in enumerate(jobs) for e in entry_errors(job, JOB_FIELDS, f"[{n}]")]
    assert errors == []
    by_id = {j["id"]: j for j in jobs}
    # 99.9 while running is floored: 100 only once the job says it is done.
    assert (by_id["running"]["progress"], by_id["broke"]["progress"]) == (99, 7)
    assert by_id["broke"]["error_msg"] == "checksum mismatch after transfer"
    assert by_id["pending"]["start_time"] is None


def check_message(message: Any) -> None:
    assert message_errors(message) == []
    check_jobs(message["recent_jobs"])
    assert [a["severity"] for a in message["alerts"]] == ["info", "warning", "critical"]
    assert all(RFC3339.fullmatch(a["time"]) for a in message["alerts"])


def test_api_metrics_decodes_into_the_originals_structs(
    serve: Callable[..., Any], wait: Callable[..., Any]
) -> None:
    s = serve()
    feed(s.dash)
    message = wait(lambda: fed(m := s.request("/api/metrics").json()) and m,
                   what="a tick with everything fed")
    check_message(message)


def test_ws_messages_decode_into_the_originals_structs(
    serve: Callable[..., Any], wait: Callable[..., Any]
) -> None:
    s = serve()
    feed(s.dash)
    wait(lambda: fed(s.request("/api/metrics").json()), what="a tick with everything fed")
    client = s.ws()
    checked = 0
    for _ in range(200):  # the replayed history, then live ticks, until three fully fed
        message = json.loads(client.recv(timeout=5))
        if not message["recent_jobs"] or not fed(message):
            assert message_errors(message) == []
            continue
        check_message(message)
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_api_jobs_decodes_into_the_originals_struct(serve: Callable[..., Any]) -> None:
    s = serve()
    feed(s.dash)
    check_jobs(s.request("/api/jobs").json())
    for job_id in ("pending", "running", "done", "broke"):
        job = s.request(f"/api/jobs/{job_id}").json()
        assert entry_errors(job, JOB_FIELDS, job_id) == []
