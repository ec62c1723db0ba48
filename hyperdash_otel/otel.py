"""OpenTelemetry beyond the dashboard's own provider: the resource, OTLP export from the
standard ``OTEL_*`` environment, and the process's global ``MeterProvider``.

The environment is read once, by :meth:`OtlpSettings.from_env` and ``Resource.create``, when a
:class:`~hyperdash_otel.Dashboard` is built; the OTLP exporter reads its own variables
(headers, timeout, compression, certificates) the way the SDK defines them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from ._otel_internal import exporter_preferences, set_collect_callback

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "FAILURE_LOG_INTERVAL",
    "OTLP_EXTRA_HINT",
    "OtlpSettings",
    "QuietExporter",
    "install_global",
    "make_resource",
    "otlp_reader",
]

log = logging.getLogger("hyperdash_otel")

DEFAULT_SERVICE_NAME = "hyperdash"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` sets one."""

OTLP_EXTRA_HINT = "pip install 'hyperdash-otel[otlp]'"

FAILURE_LOG_INTERVAL = 60.0
"""Seconds between two warnings about failing OTLP exports (the failures in between are
counted, not logged)."""

DEFAULT_EXPORT_INTERVAL_MS = 60_000.0
"""The SDK's default for ``OTEL_METRIC_EXPORT_INTERVAL``."""

# Loggers through which opentelemetry-exporter-otlp-proto-http reports each failed export
# (one error, plus a warning per retry). Records from our own exports are held back and
# summarised by QuietExporter instead.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)


@dataclass(frozen=True)
class OtlpSettings:
    """What the ``OTEL_*`` variables ask of the dashboard's OTLP export.

    >>> OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}).endpoint
    'http://127.0.0.1:4318/v1/metrics'
    """

    enabled: bool = False
    endpoint: str = ""
    """Where metrics go (for messages; the exporter resolves it the same way)."""
    interval_millis: float = DEFAULT_EXPORT_INTERVAL_MS
    shared: bool = True
    """The exporter wants what the Prometheus reader keeps (cumulative temporality, explicit
    bucket histograms), so both read one aggregation and a recording costs no more."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OtlpSettings:
        """Read the standard variables; a bad value raises ``ValueError`` naming it."""
        env = os.environ if environ is None else environ

        def var(name: str) -> str:
            return env.get(name, "").strip()

        metrics_endpoint = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        base_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT")
        exporters = {e.strip().lower() for e in var("OTEL_METRICS_EXPORTER").split(",")}
        exporters.discard("")
        wanted = "otlp" in exporters if exporters else True
        if not wanted or not (metrics_endpoint or base_endpoint):
            return cls()
        for name in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = var(name).lower()
            if protocol:
                if protocol != "http/protobuf":
                    raise ValueError(
                        f"{name}: hyperdash exports OTLP over http/protobuf only, got "
                        f"{protocol!r} (point the endpoint at the Collector's OTLP/HTTP "
                        "port, 4318 by default)"
                    )
                break
        interval = DEFAULT_EXPORT_INTERVAL_MS
        raw = var("OTEL_METRIC_EXPORT_INTERVAL")
        if raw:
            try:
                interval = float(raw)
            except ValueError:
                interval = float("nan")
            if not interval > 0 or interval == float("inf"):
                raise ValueError(
                    f"OTEL_METRIC_EXPORT_INTERVAL: expected milliseconds > 0, got {raw!r}"
                )
        endpoint = metrics_endpoint or base_endpoint.rstrip("/") + "/v1/metrics"
        temporality = var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE").lower()
        histogram = var("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION").lower()
        shared = temporality in ("", "cumulative") and histogram in (
            "", "explicit_bucket_histogram"
        )
        return cls(enabled=True, endpoint=endpoint, interval_millis=interval, shared=shared)


def make_resource(default_service_name: str = DEFAULT_SERVICE_NAME) -> Resource:
    """``Resource.create()`` (which reads ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME``), with ``service.name`` defaulting to ``default_service_name``
    instead of the SDK's ``unknown_service``."""
    resource = Resource.create()
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service_name}))
    return resource


# -- quiet failures ----------------------------------------------------------------------------

_muted = threading.local()
_filter_lock = threading.Lock()
_filter_installed = False


class _MuteFilter(logging.Filter):
    """Drops the exporter's records emitted inside :func:`_muting` on this thread, keeping
    their text as the reason for :class:`QuietExporter`'s own warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        reasons: list[str] | None = getattr(_muted, "reasons", None)
        if reasons is None:
            return True
        reasons.append(record.getMessage())
        return False


def _install_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if _filter_installed:
            return
        mute = _MuteFilter()
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(mute)
        _filter_installed = True


@contextmanager
def _muting() -> Iterator[list[str]]:
    reasons: list[str] = []
    _muted.reasons = reasons
    try:
        yield reasons
    finally:
        _muted.reasons = None


class QuietExporter(MetricExporter):
    """Wraps a ``MetricExporter`` so that a Collector that is down or slow is logged at most
    once per ``interval`` seconds (with the exporter's own reason), not once per export and
    retry. Failures are counted in :attr:`failures`; recovery is logged at INFO.
    """

    def __init__(
        self, inner: MetricExporter, endpoint: str, *,
        interval: float = FAILURE_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The periodic reader takes its temporality and aggregation from the exporter.
        super().__init__(**exporter_preferences(inner))
        _install_filter()
        self.inner = inner
        self.endpoint = endpoint
        self.failures = 0
        self.exports = 0
        self._interval = interval
        self._clock = clock
        self._last_warning: float | None = None
        self._failing = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with _muting() as reasons:
            try:
                result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            except Exception as exc:  # an exporter bug must not end the export thread
                reasons.append(repr(exc))
                result = MetricExportResult.FAILURE
        self.exports += 1
        if result is MetricExportResult.SUCCESS:
            if self._failing:
                self._failing = False
                log.info("OTLP metrics export to %s works again", self.endpoint)
            return result
        self.failures += 1
        self._failing = True
        now = self._clock()
        if self._last_warning is None or now - self._last_warning >= self._interval:
            self._last_warning = now
            reason = "; ".join(dict.fromkeys(reasons))[:500] or "no reason given"
            log.warning(
                "OTLP metrics export to %s failed (%s); the dashboard goes on and retries "
                "on each export, logging this at most once every %g s",
                self.endpoint, reason, self._interval,
            )
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with _muting():
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def otlp_reader(
    settings: OtlpSettings,
    collect: Callable[[float], MetricsData | None] | None = None,
) -> tuple[PeriodicExportingMetricReader, QuietExporter] | None:
    """The periodic OTLP/HTTP reader the settings ask for and its exporter, or None (with one
    warning naming the extra to install) when opentelemetry-exporter-otlp-proto-http is
    missing.

    With ``collect``, the reader exports what that function returns (one aggregation shared
    with the dashboard's Prometheus reader) and must not be registered on a provider;
    without it, register it like any reader.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed; "
            "no metrics go to %s: %s", settings.endpoint, OTLP_EXTRA_HINT,
        )
        return None
    exporter = QuietExporter(OTLPMetricExporter(), settings.endpoint)
    reader = PeriodicExportingMetricReader(
        exporter, export_interval_millis=settings.interval_millis
    )
    if collect is not None:
        # The SDK's own hook, which MeterProvider uses for registered readers: here it points
        # at the Prometheus reader's aggregation instead of a second copy of every series.
        def shared_collect(_reader: MetricReader, timeout_millis: float = 10_000) -> Any:
            return collect(timeout_millis)

        if not set_collect_callback(reader, shared_collect):
            raise RuntimeError("the OTLP reader cannot share the collection here "
                               "(_otel_internal.SHARES_COLLECTION is False): register it instead")
    return reader, exporter


# -- the global provider -----------------------------------------------------------------------


def install_global(provider: MeterProvider) -> None:
    """Make ``provider`` the process's global ``MeterProvider``.

    OpenTelemetry allows one per process. If another one is already set, raise
    ``RuntimeError`` naming the way out instead of letting instruments from
    ``opentelemetry.metrics.get_meter()`` silently miss the dashboard.
    """
    if metrics.get_meter_provider() is provider:
        return
    metrics.set_meter_provider(provider)
    current = metrics.get_meter_provider()
    if current is provider:
        return
    kind = f"{type(current).__module__}.{type(current).__qualname__}"
    if isinstance(current, MeterProvider):
        way_out = (
            "attach the dashboard to it instead: Dashboard(config, "
            "meter_provider=opentelemetry.metrics.get_meter_provider()), without set_global"
        )
    else:
        way_out = (
            "it is not an SDK MeterProvider, so the dashboard cannot read it: remove the "
            "other set_meter_provider() call (or OTEL_PYTHON_METER_PROVIDER)"
        )
    raise RuntimeError(
        f"set_global: this process already has a global MeterProvider ({kind}), set by your "
        f"code or by opentelemetry-instrument, and OpenTelemetry allows only one; {way_out}"
    )
