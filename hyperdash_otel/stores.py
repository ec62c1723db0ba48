"""Jobs and alerts: records, not numbers, kept in bounded thread-safe stores."""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import validation as v

__all__ = [
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "SEVERITIES",
    "HEALTH_STATUSES",
    "JobInfo",
    "JobRecord",
    "json_progress",
    "JobStore",
    "Alert",
    "AlertStore",
]

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
SEVERITIES = ("critical", "warning", "info")
HEALTH_STATUSES = ("healthy", "degraded", "unhealthy")


@dataclass(init=False)
class JobInfo:
    """A job as the caller describes it: the original's ``JobInfo`` fields, in snake_case.

    >>> JobInfo(id="job-12345", name="export-vm-prod-01", status="running", progress=75,
    ...         provider="aws", vm_name="prod-web-01")  # doctest: +ELLIPSIS
    JobInfo(id='job-12345', ...)

    ``start_time`` defaults to when the store first sees the job running; ``end_time`` to when
    it first sees it completed, failed or cancelled; ``duration`` (seconds or ``timedelta``)
    is computed from the two (or from now, while running) unless given.

    ``error=`` (and the attribute ``error``) is a deprecated alias of ``error_msg``, the name
    this package used before it followed the original's ``ErrorMsg``: it still works, with a
    ``DeprecationWarning``, and goes away in 0.2.
    """

    id: str
    name: str = ""
    status: str = "pending"
    progress: float = 0.0
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: float | timedelta | None = None
    provider: str = ""
    vm_name: str = ""
    error_msg: str = ""

    def __init__(
        self,
        id: str,
        name: str = "",
        status: str = "pending",
        progress: float = 0.0,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        duration: float | timedelta | None = None,
        provider: str = "",
        vm_name: str = "",
        error_msg: str = "",
        *,
        error: str | None = None,
    ) -> None:
        if error is not None:
            _warn_error_alias()
            if error_msg:
                raise TypeError("give error_msg= or its deprecated alias error=, not both")
            error_msg = error
        self.id = id
        self.name = name
        self.status = status
        self.progress = progress
        self.start_time = start_time
        self.end_time = end_time
        self.duration = duration
        self.provider = provider
        self.vm_name = vm_name
        self.error_msg = error_msg

    @property
    def error(self) -> str:
        """Deprecated: read :attr:`error_msg`."""
        _warn_error_alias()
        return self.error_msg

    @error.setter
    def error(self, value: str) -> None:
        _warn_error_alias()
        self.error_msg = value


def _warn_error_alias() -> None:
    warnings.warn(
        "JobInfo.error is deprecated; use error_msg (the original's name), "
        "it goes away in 0.2",
        DeprecationWarning,
        stacklevel=3,
    )


def json_progress(progress: float) -> int:
    """The progress as the original's JSON has it, an int: floored, so a job shows 100 only
    once it reports 100 (99.9 while running is 99, never a rounded-up 100)."""
    return math.floor(progress)


@dataclass(frozen=True)
class JobRecord:
    """A validated job as the store keeps it (UTC times, lower-case status)."""

    id: str
    name: str
    status: str
    progress: float
    start_time: datetime | None
    end_time: datetime | None
    duration: float | None
    provider: str
    vm_name: str
    error_msg: str

    @classmethod
    def from_info(cls, job: object, *, max_text: int) -> JobRecord:
        if not isinstance(job, JobInfo):
            raise TypeError(f"job must be a JobInfo, got {type(job).__name__}")
        return cls(
            id=v.identifier(job.id, "job.id", max_text),
            name=v.text(job.name, "job.name", max_text),
            status=v.choice(job.status, "job.status", JOB_STATUSES),
            progress=v.real(job.progress, "job.progress", high=100.0),
            start_time=v.moment(job.start_time, "job.start_time"),
            end_time=v.moment(job.end_time, "job.end_time"),
            duration=v.seconds(job.duration, "job.duration"),
            provider=v.text(job.provider, "job.provider", max_text),
            vm_name=v.text(job.vm_name, "job.vm_name", max_text),
            error_msg=v.text(job.error_msg, "job.error_msg", max_text),
        )

    def to_json(self, now: datetime) -> dict[str, Any]:
        duration = self.duration
        if duration is None:
            if self.start_time is None:
                duration = 0.0
            else:
                end = self.end_time or now
                duration = max(0.0, (end - self.start_time).total_seconds())
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "progress": json_progress(self.progress),
            "start_time": v.rfc3339(self.start_time) if self.start_time else None,
            "end_time": v.rfc3339(self.end_time) if self.end_time else None,
            "duration": round(duration, 3),
            "provider": self.provider,
            "vm_name": self.vm_name,
            "error_msg": self.error_msg,
        }


def _merge(old: JobRecord | None, new: JobRecord, now: datetime) -> JobRecord:
    """Fill the times a caller left out: first seen running, first seen ended."""
    start = new.start_time or (old.start_time if old else None)
    if start is None and new.status != "pending":
        start = now
    end = new.end_time or (old.end_time if old else None)
    if new.status in TERMINAL_STATUSES:
        end = end or now
    else:
        end = new.end_time  # a job put back to running has not ended
    return JobRecord(
        id=new.id, name=new.name or (old.name if old else ""), status=new.status,
        progress=new.progress, start_time=start, end_time=end, duration=new.duration,
        provider=new.provider or (old.provider if old else ""),
        vm_name=new.vm_name or (old.vm_name if old else ""), error_msg=new.error_msg,
    )


class JobStore:
    """The newest ``max_jobs`` jobs by first appearance; an update keeps the job's place."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def upsert(self, record: JobRecord, now: datetime) -> bool:
        """Insert or update in place; True when the id was not in the store."""
        with self._lock:
            old = self._jobs.get(record.id)
            self._jobs[record.id] = _merge(old, record, now)
            if old is None:
                while len(self._jobs) > self.max_jobs:
                    self._jobs.popitem(last=False)
            return old is None

    def records(self) -> list[JobRecord]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)


@dataclass(frozen=True)
class Alert:
    """One alert as the store keeps it: the original's ``Alert`` fields."""

    id: str
    severity: str
    message: str
    time: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "time": v.rfc3339(self.time),
        }


@dataclass
class AlertStore:
    """The newest ``max_alerts`` alerts; a dismissed alert is gone for good."""

    max_alerts: int
    _alerts: deque[Alert] = field(init=False)
    _ids: itertools.count[int] = field(init=False, default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._alerts = deque(maxlen=self.max_alerts)  # newest at the left

    def add(self, severity: str, message: str, now: datetime) -> Alert:
        with self._lock:
            alert = Alert(f"alert-{next(self._ids)}", severity, message, now)
            self._alerts.appendleft(alert)
            return alert

    def dismiss(self, alert_id: str) -> bool:
        with self._lock:
            for alert in self._alerts:
                if alert.id == alert_id:
                    self._alerts.remove(alert)
                    return True
            return False

    def clear(self) -> int:
        with self._lock:
            n = len(self._alerts)
            self._alerts.clear()
            return n

    def alerts(self) -> list[Alert]:
        """Newest first."""
        with self._lock:
            return list(self._alerts)

    def __len__(self) -> int:
        return len(self._alerts)
