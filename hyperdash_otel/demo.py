"""A simulated VM-export daemon that drives a :class:`~hyperdash_otel.Dashboard`.

The simulation is a discrete-event model of a daemon exporting virtual machines from AWS,
Azure and GCP: export requests arrive (one by one, and now and then as a scheduled batch),
wait in a queue for one of a fixed number of workers, run for a time of their own and end
completed, failed (with a provider's error message) or cancelled. Now and then a provider has
an incident during which most of its exports fail. An API in front of the daemon serves
requests whose rate, errors and latency follow the load.

:class:`Simulation` is pure but for its random generators: ``advance(dt)`` moves simulated
time on and returns a :class:`Step` of plain values; no clock, no I/O, no dashboard. Two
simulations built with the same seed and advanced by the same ``dt`` sequence return equal
steps, and every job-level event is drawn at the simulated moment it happens, so the jobs
(ids, providers, timings, outcomes) do not depend on the step size at all.
:func:`apply_step` pushes a step through the public API, and :func:`run_demo` serves a
dashboard while stepping the simulation on a drift-free schedule.

>>> sim = Simulation(seed=1)
>>> step = sim.advance(120.0)
>>> step.completed + step.failed > 0 and {j.provider for j in step.jobs} <= set(PROVIDERS)
True
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from . import validation as v
from .config import Config
from .dashboard import Dashboard
from .stores import JobInfo

__all__ = [
    "PROVIDERS",
    "DEFAULT_HANG_EVERY",
    "DemoSettings",
    "JobState",
    "Simulation",
    "Step",
    "apply_step",
    "next_level",
    "run_demo",
]

log = logging.getLogger("hyperdash_otel.demo")

PROVIDERS = ("aws", "azure", "gcp")
PROVIDER_WEIGHTS = (0.45, 0.30, 0.25)

DEFAULT_RATE = 8.0
"""Export requests per simulated minute (scheduled batches come on top)."""
DEFAULT_WORKERS = 8
DEFAULT_SPEED = 1.0
DEFAULT_WARMUP = 120.0
MAX_RATE = 600.0
MAX_WORKERS = 256
MAX_SPEED = 100.0
MAX_WARMUP = 3600.0

DEFAULT_HANG_EVERY = 900.0
"""Mean simulated seconds between hung exports (0: none). One export hangs at a time."""
MAX_HANG_EVERY = 86400.0
DEFAULT_HANG_DURATION = (600.0, 1200.0)
"""How long a hang lasts (simulated seconds) when :func:`run_demo` has no stall_after to
scale it to."""
HANG_STALL_FACTOR = (2.0, 4.0)
"""A hang lasts this many times ``stall_after`` (in real time), so it shows as stalled for a
while and then moves again."""

MAX_QUEUE = 500
"""Past this many waiting jobs the simulated API refuses new exports (an HTTP error)."""
REPORT_LIMIT = 256
"""Most jobs a step reports besides the running ones (one long step can end many)."""
MAX_EVENTS_PER_STEP = 2_000_000
"""A guard, far above what the validated rate, speed and warm-up can produce."""

# Job durations (simulated seconds): log-normal around a median, clamped.
DURATION_MEDIAN = 30.0
DURATION_SIGMA = 0.6
DURATION_RANGE = (6.0, 240.0)

BASE_FAILURE = 0.05
CANCEL_PROBABILITY = 0.02
# Scheduled batches and provider incidents: when the first comes, mean gap after (seconds).
BATCH_FIRST = (30.0, 120.0)
BATCH_MEAN_GAP = 600.0
BATCH_SIZE = (8, 20)
INCIDENT_FIRST = (90.0, 240.0)
INCIDENT_MEAN_GAP = 300.0
INCIDENT_DURATION = (60.0, 180.0)
INCIDENT_FAILURE = (0.4, 0.9)

# Alert thresholds; CLEAR_FACTOR is the hysteresis that keeps a level from flapping.
FAILURE_WINDOW = 20
FAILURE_MIN_SAMPLES = 10
FAILURE_WARNING = 0.25
FAILURE_CRITICAL = 0.40
QUEUE_WARNING = 12
QUEUE_CRITICAL = 36
CLEAR_FACTOR = 0.75
"""A level clears once the value is down to this fraction of the threshold that raised it."""
QUEUE_CLEAR_FACTOR = 0.5
"""The queue swings more (a worker frees, the next job starts), so it must drain further."""

ENVIRONMENTS = ("prod", "staging", "dev", "qa", "dr")
ROLES = ("web", "api", "db", "cache", "worker", "batch", "ldap", "build", "etl", "search",
         "gateway", "analytics")
FORMATS = {"aws": ("ova", "vmdk"), "azure": ("vhd",), "gcp": ("vmdk", "qcow2")}

# Each provider's last message is the one its incidents produce (throttling, quota).
ERRORS: dict[str, tuple[str, ...]] = {
    "aws": (
        "CreateInstanceExportTask refused: the root volume is encrypted",
        "EBS snapshot did not complete within 15m",
        "S3 upload throttled (SlowDown) after 5 retries",
    ),
    "azure": (
        "cannot grant disk access: the managed disk is attached to a running VM",
        "disk export SAS URL expired during transfer",
        "Compute API throttled the request (429 TooManyRequests)",
    ),
    "gcp": (
        "export worker timed out converting the image",
        "permission denied writing to the destination bucket",
        "images.export: regional quota IMAGES_EXPORT exceeded",
    ),
}
COMMON_ERRORS = (
    "checksum mismatch after transfer (sha256)",
    "connection reset by peer during transfer",
    "destination storage full (ENOSPC)",
)
CANCELLED_MESSAGE = "cancelled by an operator"

Level = Literal[0, 1, 2]
HEALTH_BY_LEVEL = ("healthy", "degraded", "unhealthy")
SEVERITY_BY_LEVEL = ("info", "warning", "critical")


@dataclass(frozen=True)
class JobState:
    """One job as a step reports it; times are simulated seconds since the start."""

    seq: int
    id: str
    name: str
    provider: str
    vm_name: str
    status: str
    progress: float
    started_at: float | None
    ended_at: float | None
    error_msg: str

    def to_job_info(self, clock: Callable[[float], datetime]) -> JobInfo:
        """The public :class:`JobInfo`, with simulated times mapped to wall time by ``clock``."""
        return JobInfo(
            id=self.id,
            name=self.name,
            status=self.status,
            progress=self.progress,
            start_time=None if self.started_at is None else clock(self.started_at),
            end_time=None if self.ended_at is None else clock(self.ended_at),
            provider=self.provider,
            vm_name=self.vm_name,
            error_msg=self.error_msg,
        )


@dataclass(frozen=True)
class Step:
    """What one :meth:`Simulation.advance` changed, as plain values.

    ``jobs`` holds the jobs that arrived, ran or ended during the step, oldest first: every
    running job and at most :data:`REPORT_LIMIT` others (the newest). ``completed``,
    ``failed``, ``http_requests`` and ``http_errors`` are running totals.
    """

    now: float
    active: int
    completed: int
    failed: int
    pending: int
    queue_length: int
    http_requests: int
    http_errors: int
    avg_response_time_ms: float
    jobs: tuple[JobState, ...]
    alerts: tuple[tuple[str, str], ...]
    """(severity, message) raised during the step."""
    health: str
    incident: str | None = None
    """The provider having an incident at the end of the step, if any."""
    hung: str | None = None
    """The id of the export hung at the end of the step, if any."""


@dataclass
class _Job:
    seq: int
    provider: str
    vm_name: str
    name: str
    duration: float
    # Drawn on arrival so that the outcome, decided at start, costs no draw then.
    stop_fraction: float
    fail_draw: float
    cancel_draw: float
    error_draw: float
    status: str = "pending"
    outcome: str = "completed"
    started_at: float | None = None
    ends_at: float = math.inf
    ended_at: float | None = None
    error: str = ""
    hang: tuple[float, float] | None = None
    """(from, until) in simulated seconds: the export stood still then (at most one hang)."""

    @property
    def id(self) -> str:
        return f"job-{self.seq:05d}"

    def progress(self, now: float) -> float:
        if self.status == "completed":
            return 100.0
        if self.started_at is None:
            return 0.0
        until = now if self.ended_at is None else self.ended_at
        worked = until - self.started_at
        if self.hang is not None:
            worked -= max(0.0, min(until, self.hang[1]) - self.hang[0])
        raw = 100.0 * worked / self.duration
        return round(min(max(raw, 0.0), 99.9), 1)  # 100 means done

    def state(self, now: float) -> JobState:
        return JobState(
            seq=self.seq, id=self.id, name=self.name, provider=self.provider,
            vm_name=self.vm_name, status=self.status, progress=self.progress(now),
            started_at=self.started_at, ended_at=self.ended_at, error_msg=self.error,
        )


def next_level(
    current: int, value: float, warning: float, critical: float, clear: float = CLEAR_FACTOR
) -> Level:
    """The alert level (0 ok, 1 warning, 2 critical) for ``value``, with hysteresis.

    A level rises as soon as its threshold is reached and falls only once the value is down
    to ``clear`` times the threshold that raised it.

    >>> [next_level(level, ratio, 0.2, 0.35) for level, ratio in [(0, 0.25), (1, 0.18), (1, 0.1)]]
    [1, 1, 0]
    """
    raw: Level = 2 if value >= critical else 1 if value >= warning else 0
    if raw >= current:
        return raw
    held = critical if current >= 2 else warning
    if value <= held * clear:
        return raw
    return 2 if current >= 2 else 1


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(bounds[0], bounds[1])


class Simulation:
    """The VM-export daemon, advanced in simulated seconds.

    ``rate`` is export requests per simulated minute; ``workers`` how many exports run at once.
    """

    def __init__(
        self, seed: int, *, rate: float = DEFAULT_RATE, workers: int = DEFAULT_WORKERS,
        hang_every: float = DEFAULT_HANG_EVERY,
        hang_duration: tuple[float, float] = DEFAULT_HANG_DURATION,
    ) -> None:
        v.integer(seed, "seed")
        rate = v.number(rate, "rate", 0, MAX_RATE, low_open=True, note=" jobs per minute")
        v.integer(workers, "workers", 1, MAX_WORKERS)
        hang_every = v.duration(hang_every, "hang_every", 0, MAX_HANG_EVERY, note=" (0: never)")
        low, high = hang_duration
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"hang_duration must be (low, high) with 0 < low <= high, "
                             f"got {hang_duration!r}")
        self.seed = seed
        self.rate = float(rate)
        self.workers = workers
        # Jobs, batches and incidents draw from one generator in simulated-time order, so
        # they do not depend on the step size; the API's per-step noise has its own.
        self._rng = random.Random(seed)
        self._api_rng = random.Random(f"hyperdash-demo-api:{seed}")
        self.now = 0.0
        self._seq = 0
        self._pending: deque[_Job] = deque()
        self._running: dict[int, _Job] = {}
        self._ends: list[tuple[float, int, _Job]] = []  # heap of the running jobs' ends
        self._completed = 0
        self._failed = 0
        self._http_requests = 0
        self._http_errors = 0
        self._outcomes: deque[tuple[str, bool]] = deque(maxlen=FAILURE_WINDOW)
        self._failure_level: Level = 0
        self._queue_level: Level = 0
        self._changed: dict[int, _Job] = {}
        self._alerts: list[tuple[str, str]] = []
        self._step_requests = 0
        self._step_errors = 0
        self._next_arrival = self._rng.expovariate(self.rate / 60.0)
        self._next_batch = _uniform(self._rng, BATCH_FIRST)
        self._next_incident = _uniform(self._rng, INCIDENT_FIRST)
        self._incident: tuple[str, float, float] | None = None  # provider, p(fail), until
        # Hangs draw from a generator of their own, so that turning them on or off does not
        # change which jobs arrive, when, or for how long they would run.
        self._hang_rng = random.Random(f"hyperdash-demo-hang:{seed}")
        self.hang_every = float(hang_every)
        self.hang_duration = (float(low), float(high))
        self._next_hang = (self._hang_rng.expovariate(1.0 / hang_every) if hang_every
                           else math.inf)
        self._hung: _Job | None = None

    # -- events ----------------------------------------------------------------------------

    def _new_job(self, provider: str, environment: str | None = None) -> _Job:
        rng = self._rng
        self._seq += 1
        env = environment or rng.choice(ENVIRONMENTS)
        vm_name = f"{env}-{rng.choice(ROLES)}-{rng.randint(1, 24):02d}"
        fmt = rng.choice(FORMATS[provider])
        duration = math.exp(rng.gauss(math.log(DURATION_MEDIAN), DURATION_SIGMA))
        return _Job(
            seq=self._seq,
            provider=provider,
            vm_name=vm_name,
            name=f"export-{vm_name}-{fmt}",
            duration=min(max(duration, DURATION_RANGE[0]), DURATION_RANGE[1]),
            stop_fraction=rng.uniform(0.05, 0.95),
            fail_draw=rng.random(),
            cancel_draw=rng.random(),
            error_draw=rng.random(),
        )

    def _submit(self, job: _Job) -> None:
        self._step_requests += 1  # the API call that asked for the export
        if len(self._pending) >= MAX_QUEUE:
            self._step_errors += 1  # refused: the queue is full
            return
        self._pending.append(job)
        self._changed[job.seq] = job
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self._pending and len(self._running) < self.workers:
            self._start(self._pending.popleft())

    def _start(self, job: _Job) -> None:
        now = self.now
        job.status = "running"
        job.started_at = now
        incident = self._incident
        in_incident = incident is not None and incident[0] == job.provider
        p_fail = BASE_FAILURE + (incident[1] if incident is not None and in_incident else 0.0)
        if job.cancel_draw < CANCEL_PROBABILITY:
            job.outcome = "cancelled"
            job.ends_at = now + job.duration * job.stop_fraction
            job.error = CANCELLED_MESSAGE
        elif job.fail_draw < p_fail:
            job.outcome = "failed"
            job.ends_at = now + job.duration * job.stop_fraction
            if in_incident:
                job.error = ERRORS[job.provider][-1]
            else:
                choices = ERRORS[job.provider] + COMMON_ERRORS
                job.error = choices[min(int(job.error_draw * len(choices)), len(choices) - 1)]
        else:
            job.outcome = "completed"
            job.ends_at = now + job.duration
        self._running[job.seq] = job
        heapq.heappush(self._ends, (job.ends_at, job.seq, job))
        self._changed[job.seq] = job

    def _finish(self) -> None:
        at, _, job = heapq.heappop(self._ends)
        if at != job.ends_at:
            return  # a hang moved this job's end later; its new entry is in the heap
        del self._running[job.seq]
        job.ended_at = job.ends_at
        job.status = job.outcome
        if job.outcome == "failed":
            self._failed += 1
            self._outcomes.append((job.provider, True))
        elif job.outcome == "completed":
            self._completed += 1
            self._outcomes.append((job.provider, False))
        self._changed[job.seq] = job
        self._start_waiting()

    def _arrival(self) -> None:
        provider = self._rng.choices(PROVIDERS, PROVIDER_WEIGHTS)[0]
        self._submit(self._new_job(provider))
        self._next_arrival = self.now + self._rng.expovariate(self.rate / 60.0)

    def _batch(self) -> None:
        rng = self._rng
        provider = rng.choice(PROVIDERS)
        size = rng.randint(*BATCH_SIZE)
        environment = rng.choice(ENVIRONMENTS)
        for _ in range(size):
            self._submit(self._new_job(provider, environment))
        self._alerts.append(
            ("info", f"Scheduled batch: {size} {provider} exports queued ({environment} backup)")
        )
        self._next_batch = self.now + rng.expovariate(1.0 / BATCH_MEAN_GAP)

    def _incident_change(self) -> None:
        rng = self._rng
        if self._incident is None:
            provider = rng.choice(PROVIDERS)
            p_fail = _uniform(rng, INCIDENT_FAILURE)
            self._incident = (provider, p_fail, self.now + _uniform(rng, INCIDENT_DURATION))
        else:
            self._incident = None
            self._next_incident = self.now + rng.expovariate(1.0 / INCIDENT_MEAN_GAP)

    def _hang_change(self) -> None:
        """One running export stops moving for a while; its end moves as much later."""
        rng = self._hang_rng
        self._next_hang = self.now + rng.expovariate(1.0 / self.hang_every)
        duration = _uniform(rng, self.hang_duration)
        pick = rng.random()
        hung = self._hung
        if hung is not None and hung.status == "running" and hung.hang is not None \
                and hung.hang[1] > self.now:
            return  # one hang at a time
        candidates = [j for _, j in sorted(self._running.items()) if j.hang is None]
        if not candidates:
            return
        job = candidates[min(int(pick * len(candidates)), len(candidates) - 1)]
        job.hang = (self.now, self.now + duration)
        job.ends_at += duration
        heapq.heappush(self._ends, (job.ends_at, job.seq, job))
        self._hung = job

    def _next_event(self) -> tuple[float, int]:
        """(time, kind) of the earliest event; at a tie, job ends (kind 0) go first."""
        candidates = [
            (self._next_arrival, 1),
            (self._next_batch, 2),
            (self._incident[2] if self._incident else self._next_incident, 3),
            (self._next_hang, 4),
        ]
        if self._ends:
            candidates.append((self._ends[0][0], 0))
        return min(candidates)

    # -- stepping --------------------------------------------------------------------------

    def advance(self, dt: float) -> Step:
        """Run every event up to ``now + dt`` (simulated seconds) and report the state there."""
        dt = v.duration(dt, "dt")
        target = self.now + dt
        self._changed = {}
        self._alerts = []
        self._step_requests = 0
        self._step_errors = 0
        for _ in range(MAX_EVENTS_PER_STEP):
            at, kind = self._next_event()
            if at > target:
                break
            self.now = at
            if kind == 0:
                self._finish()
            elif kind == 1:
                self._arrival()
            elif kind == 2:
                self._batch()
            elif kind == 3:
                self._incident_change()
            else:
                self._hang_change()
        else:  # pragma: no cover - validated inputs stay far below the guard
            raise RuntimeError(f"more than {MAX_EVENTS_PER_STEP} events in one step")
        self.now = target
        avg_ms = self._api(dt)
        self._assess()
        self._changed.update(self._running)
        running = [j for j in self._changed.values() if j.status == "running"]
        others = sorted((j for j in self._changed.values() if j.status != "running"),
                        key=lambda j: j.seq)[-REPORT_LIMIT:]
        reported = sorted(running + others, key=lambda j: j.seq)
        hung = self._hung
        return Step(
            now=self.now,
            active=len(self._running),
            completed=self._completed,
            failed=self._failed,
            pending=len(self._pending),
            queue_length=len(self._pending),
            http_requests=self._http_requests,
            http_errors=self._http_errors,
            avg_response_time_ms=avg_ms,
            jobs=tuple(j.state(self.now) for j in reported),
            alerts=tuple(self._alerts),
            health=HEALTH_BY_LEVEL[max(self._failure_level, self._queue_level)],
            incident=self._incident[0] if self._incident else None,
            hung=(hung.id if hung is not None and hung.status == "running"
                  and hung.hang is not None and hung.hang[0] <= self.now < hung.hang[1]
                  else None),
        )

    def _api(self, dt: float) -> float:
        """Requests, errors and average latency (ms) of the simulated API over the step."""
        rng = self._api_rng
        active, queued = len(self._running), len(self._pending)
        incident = self._incident is not None
        # Clients poll their jobs' status, so the load follows the work in flight.
        per_second = 3.0 + 0.8 * active + 0.2 * queued
        polls = max(0, round(per_second * dt * rng.gauss(1.0, 0.1)))
        error_ratio = 0.004 + (0.04 if incident else 0.0)
        errors = min(polls, math.floor(polls * error_ratio + rng.random()))
        self._http_requests += polls + self._step_requests
        self._http_errors += errors + self._step_errors
        latency = 35.0 + 6.0 * active + 0.5 * queued + (120.0 if incident else 0.0)
        return round(max(5.0, latency + rng.gauss(0.0, 4.0)), 1)

    def _assess(self) -> None:
        """Alerts where the failure ratio or the queue crossed a threshold, either way."""
        n = len(self._outcomes)
        if n >= FAILURE_MIN_SAMPLES:
            failures = [provider for provider, failed in self._outcomes if failed]
            ratio = len(failures) / n
            level = next_level(self._failure_level, ratio, FAILURE_WARNING, FAILURE_CRITICAL)
            if level > self._failure_level:
                message = f"Export failure ratio {ratio:.0%} over the last {n} jobs"
                if level == 2:
                    worst = max(PROVIDERS, key=failures.count)
                    message += f"; {failures.count(worst)} of the failures on {worst}"
                else:
                    message += f" (warning at {FAILURE_WARNING:.0%})"
                self._alerts.append((SEVERITY_BY_LEVEL[level], message))
            elif level < self._failure_level:
                self._alerts.append(("info", f"Export failure ratio down to {ratio:.0%}"))
            self._failure_level = level
        queued = len(self._pending)
        level = next_level(self._queue_level, queued, QUEUE_WARNING, QUEUE_CRITICAL,
                           QUEUE_CLEAR_FACTOR)
        if level > self._queue_level:
            threshold = QUEUE_CRITICAL if level == 2 else QUEUE_WARNING
            severity = SEVERITY_BY_LEVEL[level]
            self._alerts.append(
                (severity, f"Export queue at {queued} jobs ({severity} at {threshold})")
            )
        elif level < self._queue_level:
            self._alerts.append(("info", f"Export queue down to {queued} jobs"))
        self._queue_level = level


# -- driving a dashboard -----------------------------------------------------------------------


def apply_step(dashboard: Dashboard, step: Step, clock: Callable[[float], datetime]) -> None:
    """Push one step through the public API; never system metrics, which stay live."""
    for job in step.jobs:
        dashboard.add_job(job.to_job_info(clock))
    dashboard.update_job_metrics(
        active=step.active, completed=step.completed, failed=step.failed,
        pending=step.pending, queue_len=step.queue_length,
    )
    dashboard.update_http_metrics(
        step.http_requests, step.http_errors, step.avg_response_time_ms
    )
    for severity, message in step.alerts:
        dashboard.add_alert(severity, message)
    if step.health != dashboard.system_health:
        dashboard.set_system_health(step.health)


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    """What ``hyperdash demo`` simulates; ``speed`` is simulated seconds per real second."""

    seed: int
    rate: float = DEFAULT_RATE
    workers: int = DEFAULT_WORKERS
    speed: float = DEFAULT_SPEED
    warmup: float = DEFAULT_WARMUP
    """Simulated seconds run before serving, so that the first page already has history."""
    hang_every: float = DEFAULT_HANG_EVERY
    """Mean simulated seconds between hung exports; 0 turns hangs off."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "speed", v.number(self.speed, "speed", 0, MAX_SPEED,
                                                   low_open=True))
        object.__setattr__(self, "warmup", v.duration(self.warmup, "warmup", 0, MAX_WARMUP))
        # validates the rest
        Simulation(self.seed, rate=self.rate, workers=self.workers, hang_every=self.hang_every)

    def hang_duration(self, stall_after: float) -> tuple[float, float]:
        """Simulated seconds a hang lasts: :data:`HANG_STALL_FACTOR` times ``stall_after``
        in real time, so that it shows as stalled and then moves again."""
        if stall_after <= 0:
            return DEFAULT_HANG_DURATION
        low, high = HANG_STALL_FACTOR
        return (low * stall_after * self.speed, high * stall_after * self.speed)


def sim_clock(anchor: datetime, at: float, speed: float) -> Callable[[float], datetime]:
    """Maps simulated seconds to wall time: simulated ``at`` falls on ``anchor``."""

    def clock(t: float) -> datetime:
        return anchor + timedelta(seconds=(t - at) / speed)

    return clock


MAX_CATCH_UP = 5
"""Steps behind schedule after which the schedule restarts instead of catching up."""


async def drive(
    dashboard: Dashboard,
    sim: Simulation,
    speed: float,
    clock: Callable[[float], datetime],
    stop: asyncio.Event,
) -> int:
    """Step ``sim`` every ``update_interval`` until ``stop`` is set; returns the steps run.

    Steps are due at fixed multiples of the interval from the start (no drift), each one
    ``interval * speed`` simulated seconds long.
    """
    interval = dashboard.config.update_interval
    loop = asyncio.get_running_loop()
    origin = loop.time()
    steps = 0
    while not stop.is_set():
        delay = origin + (steps + 1) * interval - loop.time()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
        elif -delay > MAX_CATCH_UP * interval:
            # Stalled (a suspended laptop, a debugger): restart the schedule, no burst.
            log.warning("demo fell %.1f s behind its schedule; skipping ahead", -delay)
            origin = loop.time() - (steps + 1) * interval
        apply_step(dashboard, sim.advance(interval * speed), clock)
        steps += 1
    return steps


async def run_demo(
    config: Config,
    settings: DemoSettings,
    stop: asyncio.Event,
    on_ready: Callable[[Dashboard], None] | None = None,
) -> int:
    """Serve a dashboard fed by the simulation until ``stop`` is set; returns the steps run.

    ``on_ready`` is called once the socket listens, when ``dashboard.url`` is known.
    """
    sim = Simulation(settings.seed, rate=settings.rate, workers=settings.workers,
                     hang_every=settings.hang_every,
                     hang_duration=settings.hang_duration(config.stall_after))
    dashboard = Dashboard(config)
    try:
        clock = sim_clock(datetime.now(timezone.utc), settings.warmup, settings.speed)
        if settings.warmup > 0:
            apply_step(dashboard, sim.advance(settings.warmup), clock)
        async with dashboard:
            if on_ready is not None:
                on_ready(dashboard)
            return await drive(dashboard, sim, settings.speed, clock, stop)
    finally:
        dashboard.close()
