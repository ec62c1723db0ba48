"""Jobs and alerts: records, not numbers, kept in bounded thread-safe stores."""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

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
    "ProgressTrack",
    "StallChange",
    "StallReport",
    "stall_alerts",
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


def _utc_text(value: datetime) -> str:
    """What :func:`validation.rfc3339` gives, for a time on every running job on every tick:
    isoformat() is several times cheaper than strftime()."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


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
    # Ours, after the original's: set on the copies JobStore.records(now) hands out for
    # running jobs. Class attributes, not fields: every add_job builds two records, and a
    # frozen dataclass pays for each field it sets.
    eta_seconds: ClassVar[float | None] = None
    stalled: ClassVar[bool] = False
    progress_at: ClassVar[datetime | None] = None
    """When the progress last changed (for a running job; None otherwise)."""
    _progress_text: ClassVar[str | None] = None  # the same, as the JSON has it

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

    def _fixed_json(self) -> dict[str, Any]:
        """The JSON with what only a new record can change, in the message's order (the
        live keys hold placeholders): made once per record, copied on every tick.

        Kept in the instance's ``__dict__`` (a frozen dataclass takes no attribute
        otherwise), so that the live copies :meth:`JobStore.records` makes share it.
        """
        fixed: dict[str, Any] | None = self.__dict__.get("_fixed")
        if fixed is None:
            start, end, duration = self.start_time, self.end_time, self.duration
            if duration is None:
                # Not running from a known start: the duration no longer moves.
                if start is None:
                    duration = 0.0
                elif end is not None:
                    duration = max(0.0, (end - start).total_seconds())
            fixed = {
                "id": self.id,
                "name": self.name,
                "status": self.status,
                "progress": json_progress(self.progress),
                "start_time": v.rfc3339(start) if start else None,
                "end_time": v.rfc3339(end) if end else None,
                "duration": None if duration is None else round(duration, 3),
                "provider": self.provider,
                "vm_name": self.vm_name,
                "error_msg": self.error_msg,
                "eta_seconds": None,
                "stalled": False,
                "last_progress_at": None,
            }
            object.__setattr__(self, "_fixed", fixed)
        return fixed

    def _running_for(self, now: datetime) -> float:
        """The JSON duration of a job running since its known start."""
        assert self.start_time is not None
        return round(max(0.0, (now - self.start_time).total_seconds()), 3)

    def to_json(self, now: datetime) -> dict[str, Any]:
        out = self._fixed_json().copy()
        if out["duration"] is None:  # running since a known start: up to now
            out["duration"] = self._running_for(now)
        eta = self.eta_seconds  # these three are set on live copies (JobStore.records)
        out["eta_seconds"] = None if eta is None else round(eta, 1)
        out["stalled"] = self.stalled
        out["last_progress_at"] = self._progress_text
        return out


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


# -- progress history, ETA and stalls ----------------------------------------------------------

HISTORY_POINTS = 32
"""Progress changes kept per running job: the evidence for its ETA. Older ones drop off."""
MIN_SEGMENT = 2.0
"""Seconds: a change sooner than this after the previous kept point moves that point instead
of adding one, so a job updated many times a second still keeps about a minute of history."""
MIN_ETA_POINTS = 3
"""Kept points (two measured rates) before a job gets an ETA."""
OUTLIER_FACTOR = 4.0
"""A segment this many times faster than the median one is a jump, this many times slower a
pause that ended: neither is the job's pace."""
MAX_ETA_SECONDS = 30 * 86400.0
"""An estimate further out than this says nothing useful: it is reported as null."""
MAX_STALL_ALERTS = 3
"""Per kind and evaluation: past this many jobs, one alert names them all (a network
outage stalls every export at once; 50 alerts would push every other alert out)."""


class ProgressTrack:
    """One running job's recent progress: ``(time, progress)`` where it changed.

    Times are seconds (``datetime.timestamp()``). Only changes are kept, so a job reporting
    the same value every tick adds nothing, and a job whose progress is coarse (whole
    percents) is measured between its steps rather than as a row of zero-rate pauses.
    """

    __slots__ = ("points", "progress", "moved_on", "stalled", "_pool", "_moved_text")

    def __init__(self, t: float, progress: float, when: datetime) -> None:
        self.points: deque[tuple[float, float]] = deque([(t, progress)], maxlen=HISTORY_POINTS)
        self.progress = progress
        """The last progress seen (the newest point's)."""
        self.moved_on = when
        """The last change as a datetime (``moved_at`` is the same moment in seconds)."""
        self.stalled = False
        """As last reported by :meth:`JobStore.evaluate` (the page's alert follows it)."""
        self._moved_text: str | None = None
        self._pool: tuple[float, float, float] | None = None

    @property
    def moved_at(self) -> float:
        return self.points[-1][0]

    def observe(self, t: float, progress: float, when: datetime) -> bool:
        """Record an update at ``t`` (seconds; ``when`` as a datetime); True when the
        progress changed."""
        last_p = self.progress
        if progress == last_p:
            return False
        self.progress = progress
        if progress < last_p:
            # Backwards: the job restarted a phase. The old rate describes another attempt.
            self.points.clear()
        elif len(self.points) >= 2 and t - self.points[-2][0] < MIN_SEGMENT:
            self.points.pop()
        self.points.append((t, progress))
        self.moved_on = when
        self._moved_text = None
        self._pool = None
        return True

    def moved_text(self) -> str:
        """:attr:`moved_on` in RFC 3339, formatted once per change (not on every tick)."""
        if self._moved_text is None:
            self._moved_text = _utc_text(self.moved_on)
        return self._moved_text

    def _pooled(self) -> tuple[float, float, float] | None:
        """(progress, seconds, longest gap) over the kept segments, outliers left out."""
        if self._pool is None:
            segments = []
            previous = self.points[0]
            for t, p in itertools.islice(self.points, 1, None):
                if t > previous[0]:
                    segments.append((p - previous[1], t - previous[0]))
                previous = (t, p)
            if len(segments) < MIN_ETA_POINTS - 1:
                return None
            rates = sorted(dp / dt for dp, dt in segments)
            median = rates[(len(rates) - 1) // 2]
            low, high = median / OUTLIER_FACTOR, median * OUTLIER_FACTOR
            kept = [(dp, dt) for dp, dt in segments if low <= dp / dt <= high]
            self._pool = (sum(dp for dp, _ in kept), sum(dt for _, dt in kept),
                            max(dt for _, dt in kept))
        return self._pool

    def eta(self, now: float) -> float | None:
        """Seconds to 100% at the recent rate, or None without enough evidence.

        The rate is the progress made over the time taken between the kept points, pooled
        (so coarse or irregular updates average out), leaving out outliers: segments more
        than :data:`OUTLIER_FACTOR` times faster (a jump) or slower (a pause that ended)
        than the median segment. The time since the last change joins the pool once it is
        longer than every gap seen, so an ongoing pause slows the rate down, a brief one
        barely. The estimate runs from the last change, so it counts down between changes;
        it is never negative, and null past :data:`MAX_ETA_SECONDS`.
        """
        if len(self.points) < MIN_ETA_POINTS:
            return None
        last_t, last_p = self.points[-1]
        remaining = 100.0 - last_p
        if remaining <= 0:
            return 0.0
        pooled = self._pooled()
        if pooled is None:
            return None
        progress, seconds, longest = pooled
        idle = max(0.0, now - last_t)
        rate = progress / (seconds + max(0.0, idle - longest))
        if rate <= 0:
            return None
        eta = max(0.0, last_t + remaining / rate - now)
        return None if eta > MAX_ETA_SECONDS else eta


@dataclass(frozen=True)
class StallChange:
    """A running job that became stalled, moved again, or ended while stalled."""

    job: JobRecord
    stalled: bool
    since: float
    """When its progress last changed (seconds), before the change."""
    at: float


@dataclass(frozen=True)
class StallReport:
    """What :meth:`JobStore.evaluate` found: changes, and stalled jobs by provider (0 for a
    provider with running jobs that all move)."""

    changes: tuple[StallChange, ...]
    stalled_by_provider: dict[str, int]


class JobStore:
    """At most ``max_jobs`` jobs, newest first by first appearance; an update keeps the
    job's place. When full, the oldest finished job makes room (the oldest job, when none
    has finished).

    Each running job also has a :class:`ProgressTrack` (at most :data:`HISTORY_POINTS`
    points), dropped when it stops running or leaves the store.
    """

    def __init__(self, max_jobs: int, *, stall_after: float = 300.0) -> None:
        self.max_jobs = max_jobs
        self.stall_after = stall_after
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()  # oldest first
        self._tracks: dict[str, ProgressTrack] = {}
        self._ended: list[tuple[JobRecord, float]] = []  # stalled jobs that then stopped running
        self._dirty = False
        self._next_check = math.inf
        self._lock = threading.Lock()

    def upsert(self, record: JobRecord, now: datetime) -> bool:
        """Insert or update in place; True when the id was not in the store."""
        with self._lock:
            job_id = record.id
            old = self._jobs.get(job_id)
            merged = self._jobs[job_id] = _merge(old, record, now)
            track = self._tracks.get(job_id)
            if merged.status == "running":
                if track is None:
                    t = now.timestamp()
                    self._tracks[job_id] = ProgressTrack(t, merged.progress, now)
                    self._dirty = True
                    self._next_check = min(self._next_check, t + self.stall_after)
                elif merged.progress != track.progress:  # the common update: nothing to do
                    track.observe(now.timestamp(), merged.progress, now)
                    if track.stalled:
                        self._dirty = True
            elif track is not None:
                self._drop(job_id, merged)
            if old is None:
                while len(self._jobs) > self.max_jobs:
                    self._evict()
            return old is None

    def _drop(self, job_id: str, record: JobRecord) -> None:
        track = self._tracks.pop(job_id)
        if track.stalled:
            self._ended.append((record, track.moved_at))
        self._dirty = True

    def _evict(self) -> None:
        """The oldest finished job goes first; a running job only when every job is one.

        A long export (a hung one above all) would otherwise fall out behind a burst of new
        jobs, and come back as new, its history and stall lost.
        """
        victim = next((job_id for job_id, r in self._jobs.items()
                       if r.status in TERMINAL_STATUSES), None)
        if victim is None:
            victim = next(iter(self._jobs))
        del self._jobs[victim]
        if self._tracks.pop(victim, None) is not None:
            self._dirty = True

    def _live(self, record: JobRecord, now: float) -> JobRecord:
        track = self._tracks.get(record.id)
        if track is None:
            return record
        stalled = self.stall_after > 0 and now - track.moved_at >= self.stall_after
        # A copy with the three live fields, made without the frozen dataclass's __init__
        # (thirteen object.__setattr__ calls).
        record._fixed_json()  # made once on the stored record, shared by its live copies
        live: JobRecord = object.__new__(JobRecord)
        live.__dict__.update(record.__dict__)
        live.__dict__.update(eta_seconds=None if stalled else track.eta(now), stalled=stalled,
                             progress_at=track.moved_on, _progress_text=track.moved_text())
        return live

    def records(self, now: datetime | None = None) -> list[JobRecord]:
        """Newest first; with ``now``, running jobs carry their ETA and stall flag."""
        with self._lock:
            if now is None:
                return list(reversed(self._jobs.values()))
            t = now.timestamp()
            return [self._live(r, t) for r in reversed(self._jobs.values())]

    def render(self, now: datetime) -> list[dict[str, Any]]:
        """Newest first, each job as :meth:`JobRecord.to_json` gives it for
        ``records(now)``: what every tick sends, made without the live copies.

        Per job and tick this is a copy of the record's fixed JSON (made once per
        ``add_job``) and the keys that move: the duration, ETA and stall flag.
        """
        t = now.timestamp()
        stall_after = self.stall_after
        out = []
        with self._lock:
            tracks = self._tracks
            for record in reversed(self._jobs.values()):
                job = (record.__dict__.get("_fixed") or record._fixed_json()).copy()
                if job["duration"] is None:  # running since a known start
                    ran = (now - record.start_time).total_seconds()  # type: ignore[operator]
                    job["duration"] = round(ran, 3) if ran > 0.0 else 0.0
                track = tracks.get(record.id)
                if track is not None:
                    stalled = stall_after > 0 and t - track.points[-1][0] >= stall_after
                    eta = (None if stalled or len(track.points) < MIN_ETA_POINTS
                           else track.eta(t))
                    job["eta_seconds"] = None if eta is None else round(eta, 1)
                    job["stalled"] = stalled
                    job["last_progress_at"] = track._moved_text or track.moved_text()
                out.append(job)
        return out

    def get(self, job_id: str, now: datetime | None = None) -> JobRecord | None:
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None or now is None:
                return record
            return self._live(record, now.timestamp())

    def evaluate(self, now: datetime) -> StallReport | None:
        """Stall changes since the last call, or None when none can have happened.

        Cheap on every tick: without an update that could matter (a job started, stopped,
        or moved while stalled) it compares ``now`` with the earliest moment a job could
        stall, and only then looks at each running job.
        """
        t = now.timestamp()
        with self._lock:
            if not self._dirty and t < self._next_check:
                return None
            changes = [StallChange(record, False, since, t) for record, since in self._ended]
            self._ended.clear()
            counts: dict[str, int] = {}
            next_check = math.inf
            for job_id, track in self._tracks.items():
                record = self._jobs[job_id]
                stalled = self.stall_after > 0 and t - track.moved_at >= self.stall_after
                if stalled != track.stalled:
                    changes.append(StallChange(record, stalled, track.moved_at, t))
                    track.stalled = stalled
                counts[record.provider] = counts.get(record.provider, 0) + stalled
                if not stalled and self.stall_after > 0:
                    next_check = min(next_check, track.moved_at + self.stall_after)
            self._dirty = False
            self._next_check = next_check
            return StallReport(tuple(changes), counts)

    def history_points(self) -> int:
        """Progress points held over every job (for the memory bound's test)."""
        with self._lock:
            return sum(len(track.points) for track in self._tracks.values())

    def __len__(self) -> int:
        return len(self._jobs)


def _age(seconds: float) -> str:
    """``42s``, ``5m``, ``1h 5m``: how long a job stood still."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, _ = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _label(job: JobRecord) -> str:
    return f"{job.id} ({job.name})" if job.name else job.id


def stall_alerts(changes: tuple[StallChange, ...] | list[StallChange]) -> list[tuple[str, str]]:
    """(severity, message) for the page: a warning when jobs stall, info when they move again
    or end; past :data:`MAX_STALL_ALERTS` jobs of a kind, one message names them all."""
    out: list[tuple[str, str]] = []
    stalled = [c for c in changes if c.stalled]
    moving = [c for c in changes if not c.stalled]
    if len(stalled) > MAX_STALL_ALERTS:
        names = ", ".join(c.job.id for c in stalled[:MAX_STALL_ALERTS])
        more = len(stalled) - MAX_STALL_ALERTS
        out.append(("warning", f"{len(stalled)} jobs stalled (no progress): {names} "
                               f"and {more} more"))
    else:
        for c in stalled:
            out.append(("warning", f"Job {_label(c.job)} stalled at "
                                   f"{json_progress(c.job.progress)}%: no progress for "
                                   f"{_age(c.at - c.since)}"))
    if len(moving) > MAX_STALL_ALERTS:
        names = ", ".join(c.job.id for c in moving[:MAX_STALL_ALERTS])
        more = len(moving) - MAX_STALL_ALERTS
        out.append(("info", f"{len(moving)} stalled jobs are moving again: {names} "
                            f"and {more} more"))
    else:
        for c in moving:
            if c.job.status == "running":
                out.append(("info", f"Job {_label(c.job)} is moving again "
                                    f"({json_progress(c.job.progress)}%) after "
                                    f"{_age(c.at - c.since)} without progress"))
            else:
                out.append(("info", f"Job {_label(c.job)} {c.job.status} after a stall"))
    return out


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
