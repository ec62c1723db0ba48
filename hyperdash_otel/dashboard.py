"""The public face: the original's update calls, recorded through OpenTelemetry."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from prometheus_client import REGISTRY
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from . import validation as v
from .config import Config
from .otel import OtlpSettings, install_global
from .snapshot import build_snapshot
from .source import ServerInstruments
from .stores import (
    HEALTH_STATUSES,
    JOB_STATUSES,
    SEVERITIES,
    AlertStore,
    JobInfo,
    JobRecord,
    JobStore,
    stall_alerts,
)
from .system import ProcessSampler
from .telemetry import BY_FIELD, METRICS, Telemetry

if TYPE_CHECKING:
    from .server.runner import Runner

__all__ = ["Dashboard"]

log = logging.getLogger("hyperdash_otel")


class _Families:
    """Hands prometheus_client's encoders families already collected (under our lock)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class Dashboard:
    """A live dashboard for a job-running service.

    >>> from hyperdash_otel import Dashboard, Config, JobInfo
    >>> dash = Dashboard(Config(port=0, collect_system_metrics=False))
    >>> dash.update_job_metrics(active=2, completed=10, failed=1, pending=3, queue_len=3)
    >>> dash.add_job(JobInfo(id="job-1", name="export-web-01", status="running",
    ...                      progress=40, provider="aws", vm_name="web-01"))
    >>> dash.snapshot()["jobs_completed"], dash.snapshot()["provider_stats"]
    (10, {'aws': 1})

    Every method is thread-safe and may be called before, while and after a server runs.
    Numbers go through OpenTelemetry instruments of the dashboard's own
    :attr:`meter_provider` into its own :attr:`registry`; the page, ``/api/metrics`` and
    ``/metrics`` all read them back from there.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        registry: CollectorRegistry | None = None,
        meter_provider: MeterProvider | None = None,
        metric_readers: Sequence[MetricReader] = (),
        set_global: bool = False,
    ) -> None:
        """``meter_provider``: read this SDK provider (for instance the global one that
        ``opentelemetry-instrument`` set) instead of creating one. ``metric_readers``: more
        readers on the dashboard's own provider. ``set_global``: make the dashboard's provider
        the process's global one, so ``opentelemetry.metrics.get_meter()`` anywhere reaches
        the page (``RuntimeError`` if another global provider is already set).

        When ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._METRICS_ENDPOINT``) is set, the
        dashboard's own provider also exports over OTLP/HTTP (see the README).
        """
        if config is not None and not isinstance(config, Config):
            raise TypeError(f"config must be a Config, got {type(config).__name__}")
        if not isinstance(set_global, bool):
            raise TypeError(f"set_global must be a bool, got {type(set_global).__name__}")
        self.config = config or Config()
        otlp = OtlpSettings.from_env() if meter_provider is None else None
        if registry is None:
            registry = REGISTRY if self.config.use_global_registry else CollectorRegistry()
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(f"registry must be a CollectorRegistry, got {type(registry).__name__}")
        self.registry = registry
        self.telemetry = Telemetry(registry, meter_provider=meter_provider,
                                   metric_readers=metric_readers, otlp=otlp)
        if set_global:
            try:
                install_global(self.telemetry.meter_provider)
            except BaseException:
                self.telemetry.shutdown()
                raise
        self._lock = threading.RLock()
        self._jobs = JobStore(self.config.max_jobs, stall_after=self.config.stall_after)
        self._alerts = AlertStore(self.config.max_alerts)
        self._health = "healthy"
        # Running totals last pushed by update_*; counters record the difference.
        self._totals = {"jobs_completed": 0, "jobs_failed": 0, "http_requests": 0,
                        "http_errors": 0}
        self._system_pushed = False
        # Until update_http_metrics is called, the HTTP cards follow the standard HTTP server
        # metrics (http.server.request.duration) when the service records them.
        self._http_pushed = False
        # Last value set on each of our gauges: an unchanged value skips the OTel call
        # (each costs several microseconds, and daemons mostly report steady figures).
        self._gauges: dict[str, float] = {}
        self._stalled_series: dict[str, int] = {}  # provider -> stalled jobs last exported
        self._sampler = ProcessSampler() if self.config.collect_system_metrics else None
        self._runner: Runner | None = None
        self._initialise_series()

    # -- recording -------------------------------------------------------------------------

    def _instrument(self, field: str) -> Any:
        return self.telemetry.instrument(BY_FIELD[field].name)

    def _initialise_series(self) -> None:
        """Every unlabelled series with an initial value in the table exists from the start
        (Prometheus sees 0, not an absent series, and alert rules on them can be evaluated)."""
        for spec in METRICS:
            if spec.initial is None:
                continue
            instrument = self.telemetry.instrument(spec.name)
            if spec.kind == "gauge":
                instrument.set(spec.initial)
            else:
                instrument.add(spec.initial)
        # Start each severity at 0 so that increase() counts the first alert of each.
        for severity in SEVERITIES:
            self.telemetry.instrument("hyperdash.alerts.raised").add(0, {"severity": severity})
        self._record_health("healthy")
        if self._sampler is not None:
            self._sample_system()

    def _set(self, field: str, value: float) -> None:
        """Set a gauge from a value in the snapshot's unit (MB, ms: the update calls')."""
        self._set_recorded(field, BY_FIELD[field].recorded(value))

    def _set_recorded(self, field: str, value: float) -> None:
        if self._gauges.get(field) != value:
            self._instrument(field).set(value)
            self._gauges[field] = value

    def _record_health(self, status: str) -> None:
        gauge = self._instrument("system_health")
        for s in HEALTH_STATUSES:
            gauge.set(1 if s == status else 0, {"status": s})

    def _advance(self, field: str, total: int) -> int:
        """The counter increment for a new running total; a decrease is an error."""
        previous = self._totals[field]
        if total < previous:
            arg = {"jobs_completed": "completed", "jobs_failed": "failed",
                   "http_requests": "requests", "http_errors": "errors"}[field]
            raise ValueError(
                f"{arg} is a running total and must not decrease (was {previous}, got {total})"
            )
        return total - previous

    def _commit_totals(self, totals: dict[str, int]) -> None:
        for field, total in totals.items():
            delta = total - self._totals[field]
            if delta:
                self._instrument(field).add(delta)
            self._totals[field] = total

    def update_job_metrics(
        self, active: int, completed: int, failed: int, pending: int, queue_len: int
    ) -> None:
        """Set the job figures; ``completed`` and ``failed`` are running totals."""
        values = {
            "jobs_active": v.count(active, "active"),
            "jobs_completed": v.count(completed, "completed"),
            "jobs_failed": v.count(failed, "failed"),
            "jobs_pending": v.count(pending, "pending"),
            "queue_length": v.count(queue_len, "queue_len"),
        }
        with self._lock:
            self._advance("jobs_completed", values["jobs_completed"])
            self._advance("jobs_failed", values["jobs_failed"])
            for field in ("jobs_active", "jobs_pending", "queue_length"):
                self._set(field, values[field])
            self._commit_totals({k: values[k] for k in ("jobs_completed", "jobs_failed")})

    def update_system_metrics(self, memory_mb: float, cpu_percent: float, goroutines: int) -> None:
        """Push the process figures yourself; from then on they win over psutil sampling."""
        memory = v.real(memory_mb, "memory_mb")
        cpu = v.real(cpu_percent, "cpu_percent")
        threads = v.count(goroutines, "goroutines")
        with self._lock:
            self._system_pushed = True
            self._set("memory_usage", memory)
            self._set("cpu_usage", cpu)
            self._set("goroutines", threads)

    def _sample_system(self) -> None:
        if self._sampler is None or self._system_pushed:
            return
        sample = self._sampler.sample()
        with self._lock:
            if not self._system_pushed:
                # The sampler measures in the recorded units already (bytes).
                self._set_recorded("memory_usage", sample.memory_bytes)
                self._set("cpu_usage", sample.cpu_percent)
                self._set("goroutines", sample.threads)

    def update_http_metrics(self, requests: int, errors: int, avg_response_time: float) -> None:
        """Set the API figures: running totals of requests and errors, average in ms."""
        totals = {
            "http_requests": v.count(requests, "requests"),
            "http_errors": v.count(errors, "errors"),
        }
        avg_ms = v.real(avg_response_time, "avg_response_time")
        with self._lock:
            self._advance("http_requests", totals["http_requests"])
            self._advance("http_errors", totals["http_errors"])
            self._http_pushed = True
            self._commit_totals(totals)
            self._set("avg_response_time", avg_ms)

    def add_job(self, job: JobInfo) -> None:
        """Add a job, or update the one with the same id in place."""
        record = JobRecord.from_info(job, max_text=self.config.max_text_length)
        with self._lock:
            if self._jobs.upsert(record, datetime.now(timezone.utc)) and record.provider:
                self._instrument("provider_stats").add(1, {"provider": record.provider})

    def add_alert(self, severity: str, message: str) -> str:
        """Raise an alert (critical, warning or info); returns its id for :meth:`dismiss_alert`."""
        level = v.choice(severity, "severity", SEVERITIES)
        text = v.text(message, "message", self.config.max_text_length, allow_empty=False)
        alert = self._alerts.add(level, text, datetime.now(timezone.utc))
        self.telemetry.instrument("hyperdash.alerts.raised").add(1, {"severity": level})
        return alert.id

    def dismiss_alert(self, alert_id: str) -> bool:
        """Remove an alert for good; False when no alert has that id."""
        if not isinstance(alert_id, str):
            raise TypeError(f"alert_id must be a str, got {type(alert_id).__name__}")
        return self._alerts.dismiss(alert_id)

    def clear_alerts(self) -> int:
        """Remove every alert; returns how many there were."""
        return self._alerts.clear()

    def set_system_health(self, status: str) -> None:
        """healthy, degraded or unhealthy (case-insensitive)."""
        level = v.choice(status, "status", HEALTH_STATUSES)
        with self._lock:
            self._health = level
            self._record_health(level)

    @property
    def meter_provider(self) -> MeterProvider:
        """Create your own instruments here to have them on the page and in ``/metrics``
        (or pass ``set_global=True`` and use ``opentelemetry.metrics.get_meter()``)."""
        return self.telemetry.meter_provider

    @property
    def meter(self) -> Meter:
        """The dashboard's own meter (scope ``hyperdash``)."""
        return self.telemetry.meter

    @property
    def metric_readers(self) -> tuple[MetricReader, ...]:
        """The readers the dashboard added: its Prometheus reader, then the OTLP one from
        the environment if any (yours, passed as ``metric_readers``, are not repeated)."""
        otlp = self.telemetry.otlp_reader
        return (self.telemetry.reader,) if otlp is None else (self.telemetry.reader, otlp)

    @property
    def system_health(self) -> str:
        return self._health

    # -- reading ---------------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        """One serialised ``registry.collect()``."""
        return self.telemetry.collect()

    def _check_stalls(self, now: datetime) -> None:
        """Stall changes since the last check: the gauge by provider and the page's alerts.

        Runs on every tick and scrape, so a job that simply stops being updated still
        becomes stalled; it costs a comparison unless a job can have changed state.
        """
        report = self._jobs.evaluate(now)
        if report is None:
            return
        gauge = self.telemetry.instrument("hyperdash.jobs.stalled")
        with self._lock:
            shown = self._stalled_series
            for provider, count in report.stalled_by_provider.items():
                if shown.get(provider) != count:
                    gauge.set(count, {"provider": provider})
                    shown[provider] = count
            # A provider with no running job left reads 0 once, then is forgotten, so the
            # map stays bounded by the providers of the jobs in the store.
            for provider in [p for p in shown if p not in report.stalled_by_provider]:
                if shown.pop(provider):
                    gauge.set(0, {"provider": provider})
        limit = self.config.max_text_length
        raised = self.telemetry.instrument("hyperdash.alerts.raised")
        for severity, message in stall_alerts(report.changes):
            self._alerts.add(severity, message[:limit], now)
            raised.add(1, {"severity": severity})

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        """The Metrics dict as of now (what the WebSocket sends)."""
        now = v.moment(now, "now") or datetime.now(timezone.utc)
        self._sample_system()
        self._check_stalls(now)
        families = self.telemetry.collect()
        return build_snapshot(
            families,
            self._jobs.records(now),
            self._alerts.alerts(),
            self._health,
            now=now,
            max_custom_series=self.config.max_custom_series,
            derive_http=not self._http_pushed,
        )

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Recent jobs, newest first, optionally of one status and at most ``limit``."""
        if status is not None:
            status = v.choice(status, "status", JOB_STATUSES)
        if limit is not None:
            limit = v.count(limit, "limit")
        now = datetime.now(timezone.utc)
        out = [r.to_json(now) for r in self._jobs.records(now) if status in (None, r.status)]
        return out if limit is None else out[:limit]

    def job(self, job_id: str, instance: str | None = None) -> dict[str, Any] | None:
        """One job as ``/api/jobs/{id}`` shows it; None when no job has that id.

        ``instance`` is for fleet sources (:class:`~hyperdash_otel.source.Source`); one
        dashboard is one instance, so it is ignored here.
        """
        if not isinstance(job_id, str):
            raise TypeError(f"job_id must be a str, got {type(job_id).__name__}")
        now = datetime.now(timezone.utc)
        record = self._jobs.get(job_id, now)
        return None if record is None else record.to_json(now)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry encoded for ``Accept`` (OpenMetrics when asked); (body, content type)."""
        if accept is not None and not isinstance(accept, str):
            raise TypeError(f"accept must be a str or None, got {type(accept).__name__}")
        self._sample_system()
        self._check_stalls(datetime.now(timezone.utc))
        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Families(self.telemetry.collect())), content_type

    def metrics_text(self) -> str:
        """The Prometheus text exposition of the dashboard's registry."""
        return self.exposition()[0].decode("utf-8")

    # -- serving ---------------------------------------------------------------------------

    @functools.cached_property
    def server_instruments(self) -> ServerInstruments:
        """The server's own instruments, in this dashboard's meter (the
        :class:`~hyperdash_otel.source.Source` protocol)."""
        tel = self.telemetry
        return ServerInstruments(
            websocket_connections=tel.instrument("hyperdash.websocket.connections"),
            websocket_disconnects=tel.instrument("hyperdash.websocket.disconnects"),
            websocket_rejected=tel.instrument("hyperdash.websocket.rejected"),
            tick_duration=tel.instrument("hyperdash.tick.duration"),
            tick_errors=tel.instrument("hyperdash.tick.errors"),
            tick_skipped=tel.instrument("hyperdash.tick.skipped"),
        )

    @property
    def server(self) -> Runner | None:
        """The :class:`~hyperdash_otel.server.runner.Runner` that served or serves this
        dashboard (its fan-out and ticker are ``server.context``), or None before the
        first start."""
        return self._runner

    def _get_runner(self) -> Runner:
        if self._runner is None:
            from .server.runner import Runner

            self._runner = Runner(self)
        return self._runner

    @property
    def port(self) -> int | None:
        """The bound port once listening (the chosen one when ``port=0``), else None."""
        return None if self._runner is None else self._runner.port

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        scheme = "https" if self.config.tls_certfile else "http"
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}/"

    async def start(self) -> None:
        """Serve on the running event loop until :meth:`stop` or cancellation."""
        if not self.config.enabled:
            log.info("hyperdash dashboard disabled (enabled=False): not serving")
            return
        await self._get_runner().serve()

    def start_in_thread(self) -> Dashboard:
        """Serve from a background thread; returns once the socket is listening."""
        if not self.config.enabled:
            log.info("hyperdash dashboard disabled (enabled=False): not serving")
            return self
        self._get_runner().start_in_thread()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent): clients get close code 1001, the listener closes."""
        if self._runner is not None:
            self._runner.stop()

    async def aclose(self) -> None:
        """Stop serving from a coroutine on the serving loop and wait until it has."""
        if self._runner is not None:
            await self._runner.aclose()

    def close(self) -> None:
        """Stop serving and detach from the registry (the dashboard is done for)."""
        self.stop()
        self.telemetry.shutdown()

    def __enter__(self) -> Dashboard:
        return self.start_in_thread()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Dashboard:
        if self.config.enabled:
            await self._get_runner().start()
        else:
            log.info("hyperdash dashboard disabled (enabled=False): not serving")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
