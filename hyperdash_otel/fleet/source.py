"""``FleetSource``: the page over a whole fleet, read from Prometheus, Alertmanager and the
instances themselves.

Each tick (:meth:`FleetSource.snapshot`) asks Prometheus two instant queries, whatever the
number of instances (see :mod:`~hyperdash_otel.fleet.prometheus`), and assembles the
original's message from them:

========================================================  ======================================
field                                                     across the fleet
========================================================  ======================================
``jobs_*``, ``queue_length``, ``http_requests``,          sum over the instances that are up
``http_errors``, ``provider_stats``
``memory_usage``, ``goroutines``                          sum (the fleet's memory and threads)
``cpu_usage``, ``avg_response_time``                      worst instance (the highest)
``system_health``                                         worst instance; ``degraded`` at least
                                                          while an instance is down; ``unknown``
                                                          with no live instance or no Prometheus
``active_connections``                                    this fleet page's own viewers
``recent_jobs``, ``alerts``                               merged records (below)
========================================================  ======================================

then two keys of its own, ``instances`` and ``fleet`` (FLEET.md). An instance is down as soon
as Prometheus's ``up`` says so, one failed scrape after it stopped: the fleet never waits
for Prometheus's five-minute staleness.

Jobs and alerts are records only the instances (and Alertmanager) hold. A background thread
fetches them at most once per refresh interval (the targets' scrape interval by default),
with at most ``max_concurrency`` requests at once, each under ``instance_timeout``; the tick
reads the last completed fetch, so records are at most one refresh interval plus one fetch
old, and a slow instance never slows the tick.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from .. import validation as v
from .._otel_internal import DashboardReader
from ..config import Config
from ..otel import make_resource
from ..server import logs
from ..source import AmbiguousJobError, ServerInstruments
from ..stores import JOB_STATUSES
from ..telemetry import BY_FIELD, BY_NAME, METRICS, TICK_DURATION_BUCKETS
from ..validation import rfc3339
from .alerts import from_alertmanager, from_instance, merge_alerts
from .config import DEFAULT_MIN_REFRESH, FleetConfig
from .http import FetchError, JsonClient
from .instances import InstanceRecords, fetch_all, merge_jobs
from .prometheus import (
    HEALTH_ORDER,
    InstanceFigures,
    Matcher,
    PrometheusClient,
    Target,
    _matches,
)

__all__ = ["MAX_API_JOBS", "SYSTEM_WORST", "FleetSource"]

log = logging.getLogger("hyperdash_otel.fleet")

SYSTEM_WORST = frozenset({"cpu_usage", "avg_response_time"})
"""Scalar fields the fleet shows as its worst (highest) instance; every other one is summed."""
MAX_API_JOBS = 1000
"""Most merged jobs the fleet holds for ``/api/jobs`` (``recent_jobs`` shows ``max_jobs``)."""
MAX_REFRESH = 60.0
"""Longest wait between two record fetches when the targets' scrape interval is longer."""

_SCALARS = [m for m in METRICS if m.scalar and m.field is not None]


class _State:
    """What the last Prometheus answer and the last record fetch said (under one lock)."""

    def __init__(self) -> None:
        self.figures: dict[str, InstanceFigures] = {}
        self.evaluated_at: float | None = None
        self.prometheus_error: str | None = None
        self.prometheus_ok: bool | None = None  # None: not asked yet
        self.targets: list[Target] = []
        self.records: dict[str, InstanceRecords] = {}
        self.jobs: list[dict[str, Any]] = []
        self.am_alerts: list[dict[str, Any]] = []
        self.alertmanager_ok: bool | None = None
        self.refresh_interval: float = DEFAULT_MIN_REFRESH


class FleetSource:
    """A :class:`~hyperdash_otel.source.Source` over every instance Prometheus scrapes.

    >>> from hyperdash_otel import Config
    >>> from hyperdash_otel.fleet.config import FleetConfig
    >>> fleet = FleetSource(FleetConfig(prometheus="http://127.0.0.1:9"), Config(port=0))
    >>> fleet.snapshot()["fleet"]["prometheus"]
    'unreachable'
    >>> fleet.close()

    Serve it with :class:`~hyperdash_otel.server.runner.Runner` (``hyperdash fleet`` does).
    Thread-safe; :meth:`close` stops the background fetches.
    """

    def __init__(
        self, fleet: FleetConfig, config: Config | None = None, *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(fleet, FleetConfig):
            raise TypeError(f"fleet must be a FleetConfig, got {type(fleet).__name__}")
        if config is not None and not isinstance(config, Config):
            raise TypeError(f"config must be a Config, got {type(config).__name__}")
        self.fleet = fleet
        self._config = config or Config()
        self._clock = clock
        self._matchers: tuple[Matcher, ...] = fleet.matchers
        self._prometheus = PrometheusClient(
            JsonClient(fleet.prometheus, fleet.prometheus_credentials,
                       timeout=fleet.query_timeout),
            self._matchers,
        )
        self._alertmanager = (
            None if fleet.alertmanager is None
            else JsonClient(fleet.alertmanager, fleet.alertmanager_credentials,
                            timeout=fleet.query_timeout)
        )
        self._lock = threading.Lock()
        self._state = _State()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        # The fleet process's own health: its own registry, never the instances' names.
        self.registry = CollectorRegistry()
        self._collect_lock = threading.Lock()
        self._reader = DashboardReader(registry=self.registry)
        self.meter_provider = MeterProvider(
            metric_readers=[self._reader], resource=make_resource("hyperdash-fleet"))
        meter = self.meter_provider.get_meter("hyperdash.fleet")
        self._instruments = {spec.name: self._create(meter, spec.name) for spec in METRICS
                             if spec.name.startswith(("hyperdash.websocket", "hyperdash.tick"))}
        self._query_duration = meter.create_histogram(
            "hyperdash.fleet.query.duration", unit="s",
            description="Time of one tick's Prometheus queries",
            explicit_bucket_boundaries_advisory=list(TICK_DURATION_BUCKETS))
        self._query_errors = meter.create_counter(
            "hyperdash.fleet.query.errors", unit="{error}",
            description="Ticks whose Prometheus queries failed")
        self._fetch_errors = meter.create_counter(
            "hyperdash.fleet.fetch.errors", unit="{error}",
            description="Failed record fetches, by peer (instance or alertmanager)")
        self._instances_gauge = meter.create_gauge(
            "hyperdash.fleet.instances", unit="{instance}",
            description="Instances Prometheus reports, by state (up or down)")
        self._instruments["hyperdash.websocket.connections"].add(0)
        self._query_errors.add(0)
        logs.install(self, fleet.secrets)

    @staticmethod
    def _create(meter: Any, name: str) -> Any:
        spec = BY_NAME[name]
        if spec.kind == "counter":
            return meter.create_counter(name, unit=spec.unit, description=spec.description)
        if spec.kind == "up_down_counter":
            return meter.create_up_down_counter(name, unit=spec.unit,
                                                description=spec.description)
        return meter.create_histogram(
            name, unit=spec.unit, description=spec.description,
            explicit_bucket_boundaries_advisory=list(TICK_DURATION_BUCKETS))

    # -- the Source protocol -----------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @functools.cached_property
    def server_instruments(self) -> ServerInstruments:
        i = self._instruments
        return ServerInstruments(
            websocket_connections=i["hyperdash.websocket.connections"],
            websocket_disconnects=i["hyperdash.websocket.disconnects"],
            websocket_rejected=i["hyperdash.websocket.rejected"],
            tick_duration=i["hyperdash.tick.duration"],
            tick_errors=i["hyperdash.tick.errors"],
            tick_skipped=i["hyperdash.tick.skipped"],
        )

    def snapshot(self) -> dict[str, Any]:
        """The fleet's Metrics message: two Prometheus queries, the last fetched records."""
        self._ensure_refresher()
        started = time.perf_counter()
        try:
            figures, at = self._prometheus.figures()
        except FetchError as exc:
            self._query_errors.add(1)
            self._prometheus_down(str(exc))
        else:
            self._query_duration.record(time.perf_counter() - started)
            self._prometheus_up(figures, at)
        return self._build(datetime.now(timezone.utc))

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The merged jobs, newest first, each with its ``instance`` (at most
        :data:`MAX_API_JOBS`)."""
        if status is not None:
            status = v.choice(status, "status", JOB_STATUSES)
        if limit is not None:
            limit = v.count(limit, "limit")
        with self._lock:
            merged = self._state.jobs
        out = [j for j in merged if status in (None, j.get("status"))]
        return out if limit is None else out[:limit]

    def job(self, job_id: str, instance: str | None = None) -> dict[str, Any] | None:
        """One job by id (among the jobs last fetched from each instance), from ``instance``
        when given; :class:`~hyperdash_otel.source.AmbiguousJobError` when several
        instances have that id and none was named."""
        if not isinstance(job_id, str):
            raise TypeError(f"job_id must be a str, got {type(job_id).__name__}")
        if instance is not None and not isinstance(instance, str):
            raise TypeError(f"instance must be a str, got {type(instance).__name__}")
        with self._lock:
            records = dict(self._state.records)
        found = [
            {**job, "instance": name}
            for name, rec in sorted(records.items())
            if instance in (None, name)
            for job in rec.jobs if job.get("id") == job_id
        ]
        if len(found) > 1:
            raise AmbiguousJobError(
                f"job {v.quoted(job_id)} exists on {len(found)} instances; add ?instance= "
                f"(one of {', '.join(j['instance'] for j in found[:5])})")
        return found[0] if found else None

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The fleet process's own ``/metrics``: its viewers, ticks and queries."""
        if accept is not None and not isinstance(accept, str):
            raise TypeError(f"accept must be a str or None, got {type(accept).__name__}")
        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Families(self._collect())), content_type

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background fetches and the meter provider (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(self.fleet.instance_timeout + self.fleet.query_timeout + 5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.meter_provider.shutdown(timeout_millis=1000)
        logs.uninstall(self)

    def __enter__(self) -> FleetSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Prometheus --------------------------------------------------------------------------

    def _prometheus_down(self, error: str) -> None:
        with self._lock:
            state = self._state
            was_ok = state.prometheus_ok
            state.prometheus_ok = False
            state.prometheus_error = error
            for fig in state.figures.values():
                fig.up = False
                fig.health = "unknown"
        if was_ok is not False:  # once per outage (and once if it was never reached)
            log.warning("hyperdash fleet: Prometheus unreachable (%s); the page shows the "
                        "last known figures until it answers again", error)

    def _prometheus_up(self, figures: dict[str, InstanceFigures], at: float | None) -> None:
        with self._lock:
            state = self._state
            was_ok = state.prometheus_ok
            state.prometheus_ok = True
            state.prometheus_error = None
            state.figures = figures
            state.evaluated_at = at
        if was_ok is False:
            log.warning("hyperdash fleet: Prometheus answers again")
        up = sum(1 for f in figures.values() if f.up)
        self._instances_gauge.set(up, {"state": "up"})
        self._instances_gauge.set(len(figures) - up, {"state": "down"})

    # -- the message -------------------------------------------------------------------------

    def _build(self, now: datetime) -> dict[str, Any]:
        with self._lock:
            state = self._state
            figures = sorted(state.figures.values(), key=lambda f: f.instance)
            at = state.evaluated_at
            prometheus_ok = bool(state.prometheus_ok)
            error = state.prometheus_error
            records = dict(state.records)
            jobs = state.jobs[: self._config.max_jobs]
            am_alerts = list(state.am_alerts)
            am_ok = state.alertmanager_ok
        live = [f for f in figures if f.up]
        message: dict[str, Any] = {"timestamp": rfc3339(now)}
        for spec in _SCALARS:
            field = spec.field
            assert field is not None
            if field == "active_connections":
                message[field] = spec.snapshot_value(self._viewers())
                continue
            values = [f.values.get(spec.prometheus, 0.0) for f in figures]
            total = (max(values, default=0.0) if field in SYSTEM_WORST else sum(values))
            message[field] = spec.snapshot_value(total)
        providers: dict[str, int] = {}
        for f in figures:
            for provider, count in f.providers.items():
                providers[provider] = providers.get(provider, 0) + round(count)
        message["provider_stats"] = dict(sorted(providers.items()))
        message["recent_jobs"] = jobs
        message["system_health"] = _fleet_health(figures, prometheus_ok)
        per_instance = _checked_alerts({f.instance: records[f.instance].alerts
                                        for f in live if f.instance in records})
        message["alerts"] = merge_alerts(am_alerts, per_instance, self._config.max_alerts)
        message["custom"] = {}
        message["instances"] = [
            {
                "instance": f.instance,
                "up": f.up,
                "health": f.health if f.up else "unknown",
                "active_jobs": round(f.values.get(BY_FIELD["jobs_active"].prometheus, 0.0)),
                "queue_length": round(f.values.get(BY_FIELD["queue_length"].prometheus, 0.0)),
                "failed_5m": round(f.failed_5m),
                "scrape_age_seconds": (
                    None if f.scraped_at is None or at is None
                    else round(max(0.0, at - f.scraped_at), 3)),
            }
            for f in figures
        ]
        message["fleet"] = {
            "prometheus": "ok" if prometheus_ok else "unreachable",
            "error": None if prometheus_ok else (error or "not answered yet"),
            "alertmanager": ("off" if self._alertmanager is None
                             else "ok" if am_ok else "unreachable"),
            "instances_up": len(live),
            "instances_total": len(figures),
        }
        return message

    def _collect(self) -> list[Metric]:
        with self._collect_lock:
            return list(self.registry.collect())

    def _viewers(self) -> float:
        name = BY_NAME["hyperdash.websocket.connections"].prometheus
        total = 0.0
        for fam in self._collect():
            if fam.name == name:
                total += sum(s.value for s in fam.samples if s.name == name)
        return total

    # -- records, in the background ----------------------------------------------------------

    def _ensure_refresher(self) -> None:
        with self._lock:
            if self._refresher is not None or self._closed:
                return
            self._pool = ThreadPoolExecutor(max_workers=self.fleet.max_concurrency,
                                            thread_name_prefix="hyperdash-fleet-fetch")
            self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                               name="hyperdash-fleet-refresh")
            self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # never let the loop die; the next round runs as scheduled
                if self._stop.is_set():
                    return  # closing: the pool refused or cancelled the fetches
                log.exception("hyperdash fleet: fetching the instances' records failed")
            with self._lock:
                interval = self._state.refresh_interval
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def refresh(self) -> None:
        """Fetch the targets, every live instance's records and Alertmanager's alerts once
        (the background thread calls this; tests may call it to skip the wait)."""
        pool = self._pool
        if pool is None:
            self._ensure_refresher()
            pool = self._pool
        assert pool is not None
        try:
            targets: list[Target] | None = self._prometheus.targets()
        except FetchError:
            targets = None  # the tick reports Prometheus's state; keep the last targets
        with self._lock:
            state = self._state
            if targets is not None:
                state.targets = targets
                state.refresh_interval = self._interval_for(targets)
            targets = list(state.targets)
            # Skip the instances Prometheus saw down; with Prometheus itself unreachable,
            # try every last known target (the instances may well be answering).
            down = ({f.instance for f in state.figures.values() if not f.up}
                    if state.prometheus_ok else set())
        live = [t for t in targets if t.health != "down" and t.instance not in down]
        live = live[: self.fleet.max_instances]
        records = fetch_all(
            live, self.fleet.instances_credentials, pool=pool,
            timeout=self.fleet.instance_timeout, max_jobs=self._config.max_jobs,
            max_alerts=self._config.max_alerts,
        )
        failed = sum(1 for r in records.values() if r.error is not None)
        if failed:
            self._fetch_errors.add(failed, {"peer": "instance"})
            for r in records.values():
                if r.error is not None:
                    log.debug("hyperdash fleet: %s", r.error)
        am_alerts, am_ok = self._fetch_alertmanager({t.instance for t in targets})
        ok_records = {name: r for name, r in records.items() if r.error is None}
        merged = merge_jobs(ok_records.values(), MAX_API_JOBS)
        with self._lock:
            state = self._state
            state.records = ok_records
            state.jobs = merged
            if am_ok is not None:
                if am_ok:
                    state.am_alerts = am_alerts
                state.alertmanager_ok = am_ok

    def _interval_for(self, targets: list[Target]) -> float:
        if self.fleet.refresh_interval is not None:
            return self.fleet.refresh_interval
        intervals = [t.scrape_interval for t in targets if t.scrape_interval]
        interval = min(intervals) if intervals else DEFAULT_MIN_REFRESH
        return min(MAX_REFRESH, max(DEFAULT_MIN_REFRESH, interval))

    def _fetch_alertmanager(
        self, instances: set[str]
    ) -> tuple[list[dict[str, Any]], bool | None]:
        """The fleet's firing alerts from Alertmanager, and whether it answered (None: off).

        Alertmanager may route alerts of other systems too: the fleet keeps those about one
        of its instances, and instance-less ones whose labels match the selector.
        """
        client = self._alertmanager
        if client is None:
            return [], None
        try:
            payload = client.get_json("/api/v2/alerts", {
                "active": "true", "silenced": "false", "inhibited": "false"})
            if not isinstance(payload, list):
                raise FetchError(f"{client.where}/api/v2/alerts did not answer a list")
            ours = [a for a in payload if isinstance(a, dict) and _concerns(a, instances,
                                                                            self._matchers)]
            alerts = from_alertmanager(ours)
        except (FetchError, ValueError) as exc:
            self._fetch_errors.add(1, {"peer": "alertmanager"})
            if self._alertmanager_answered(False):
                log.warning("hyperdash fleet: Alertmanager unreachable (%s)", exc)
            return [], False
        if self._alertmanager_answered(True):
            log.warning("hyperdash fleet: Alertmanager answers again")
        return alerts, True

    def _alertmanager_answered(self, ok: bool) -> bool:
        """Record whether Alertmanager answered, in one step under the lock; True when that
        is worth a log line: a new outage (or never reached), or the end of one. Refreshes
        may run at once (the background one and a caller's): each outage is logged once."""
        with self._lock:
            was_ok = self._state.alertmanager_ok
            self._state.alertmanager_ok = ok
        if ok:
            return was_ok is False
        return was_ok is not False


def _concerns(alert: dict[str, Any], instances: set[str], matchers: tuple[Matcher, ...]) -> bool:
    labels = alert.get("labels")
    if not isinstance(labels, dict):
        return True  # malformed: let the conversion name the field
    instance = labels.get("instance")
    if isinstance(instance, str):
        return instance in instances
    return _matches({str(k): str(val) for k, val in labels.items()}, matchers)


def _fleet_health(figures: list[InstanceFigures], prometheus_ok: bool) -> str:
    if not prometheus_ok or not figures:
        return "unknown"
    live = [f.health for f in figures if f.up and f.health in HEALTH_ORDER]
    if not live:
        return "unknown"
    worst = max((HEALTH_ORDER.index(h) for h in live), default=0)
    if any(not f.up for f in figures):  # an instance down
        worst = max(worst, HEALTH_ORDER.index("degraded"))
    return HEALTH_ORDER[worst]


class _Families:
    """Hands prometheus_client's encoders families already collected (under our lock)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _checked_alerts(per_instance: dict[str, list[dict[str, Any]]]) -> dict[str, object]:
    """Each instance's alert list, or nothing for an instance whose list is malformed.

    :func:`merge_alerts` refuses a malformed list with a ValueError; one broken instance must
    not take every other instance's alerts (and Alertmanager's) off the page, so its list is
    left out here and the refusal logged once per tick at debug level.
    """
    kept: dict[str, object] = {}
    for instance, alerts in per_instance.items():
        try:
            from_instance(instance, alerts)
        except ValueError as exc:
            log.debug("hyperdash fleet: %s's alerts left out: %s", instance, exc)
            continue
        kept[instance] = alerts
    return kept
