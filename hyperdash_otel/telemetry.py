"""OpenTelemetry wiring: the metric table, the MeterProvider and the Prometheus reader.

:data:`METRICS` is the one table that names, for every snapshot field, the OpenTelemetry
instrument that records it and the Prometheus series it becomes. The README's metric table is
generated from it (:func:`metric_table_markdown`) and a test holds the two together.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import operator
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    MetricReader,
    PeriodicExportingMetricReader,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from ._otel_internal import (
    SHARES_COLLECTION,
    DashboardReader,
    known_ascii,
    sdk_gauge_class,
)
from .otel import (
    DEFAULT_SERVICE_NAME,
    OtlpSettings,
    QuietExporter,
    make_resource,
    otlp_reader,
)
from .validation import clean_text, has_surrogates

__all__ = [
    "METRICS",
    "METER_NAME",
    "CARDINALITY_LIMIT",
    "COLLECT_SWITCH_INTERVAL",
    "MetricSpec",
    "Telemetry",
    "gil_shared",
    "metric_table_markdown",
]

log = logging.getLogger("hyperdash_otel")

METER_NAME = "hyperdash"
"""Scope name of the dashboard's own meter; use ``dashboard.meter_provider`` for yours."""

CARDINALITY_LIMIT = 2000
"""Most attribute sets one instrument may hold; past it the SDK folds the rest into one
``otel_metric_overflow="true"`` series instead of growing without bound."""

TICK_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Kind = Literal["counter", "gauge", "up_down_counter", "histogram"]


JsonType = type[int] | type[float] | type[str] | type[dict[str, Any]]
"""What a snapshot field is in JSON: an integer, any number, a string or an object."""


@dataclass(frozen=True)
class MetricSpec:
    """One row of the metric table: everything the code needs to know about one metric.

    A row with a ``field`` and no ``attributes`` is a *scalar* field: the snapshot carries
    the sum of its series, times ``to_snapshot``, rounded to ``digits``, as ``json``; the
    update calls record their argument divided by ``to_snapshot``. Adding such a row is all
    the Python side needs for a new snapshot field (the page needs its markup).
    """

    field: str | None
    """The snapshot key this metric feeds (None: server-internal, Prometheus only)."""
    name: str
    kind: Kind
    unit: str
    description: str
    prometheus: str
    """The series name in the exposition (what PromQL queries)."""
    attributes: tuple[str, ...] = ()
    to_snapshot: float = 1.0
    """Factor from the recorded (Prometheus) value to the snapshot's unit (bytes -> MB,
    s -> ms). Recording divides by it, so a power of two or ten converts both ways exactly."""
    json: JsonType | None = None
    """The field's JSON type in the snapshot (None for a row without a field)."""
    digits: int | None = None
    """Decimals kept for a ``float`` field (None: not rounded)."""
    initial: float | None = None
    """The value an unlabelled series starts at, so that Prometheus sees it from the start
    (None: the series appears with its first recording)."""

    def __post_init__(self) -> None:
        if (self.field is None) != (self.json is None):
            raise ValueError(f"{self.name}: a row has a JSON type exactly when it has a field")
        if self.attributes and self.initial is not None:
            raise ValueError(f"{self.name}: only an unlabelled series has an initial value")
        if self.initial is not None and self.kind == "histogram":
            raise ValueError(f"{self.name}: a histogram has no initial value")
        if self.kind != "gauge" and self.initial not in (None, 0):
            raise ValueError(f"{self.name}: a {self.kind} can only start at 0")
        if not (math.isfinite(self.to_snapshot) and self.to_snapshot > 0):
            raise ValueError(f"{self.name}: to_snapshot must be a finite number > 0")

    @property
    def scalar(self) -> bool:
        """True for a snapshot field that is one number (its series summed)."""
        return self.field is not None and not self.attributes

    def recorded(self, value: float) -> float:
        """``value`` in the snapshot's unit, converted to the unit the instrument records."""
        return value if self.to_snapshot == 1.0 else value / self.to_snapshot

    def snapshot_value(self, total: float) -> Any:
        """The summed series ``total`` as the snapshot carries it: scaled, rounded, typed."""
        return self.rounded(total * self.to_snapshot)

    def rounded(self, value: float) -> Any:
        """``value``, already in the snapshot's unit, rounded and typed as the field is."""
        if self.json is int:
            return round(value)
        return value if self.digits is None else round(value, self.digits)


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("jobs_active", "hyperdash.jobs.active", "gauge", "{job}",
               "Jobs running now", "hyperdash_jobs_active", json=int, initial=0),
    MetricSpec("jobs_completed", "hyperdash.jobs.completed", "counter", "{job}",
               "Jobs finished successfully", "hyperdash_jobs_completed_total",
               json=int, initial=0),
    MetricSpec("jobs_failed", "hyperdash.jobs.failed", "counter", "{job}",
               "Jobs that ended with an error", "hyperdash_jobs_failed_total",
               json=int, initial=0),
    MetricSpec("jobs_pending", "hyperdash.jobs.pending", "gauge", "{job}",
               "Jobs accepted but not started", "hyperdash_jobs_pending",
               json=int, initial=0),
    MetricSpec("queue_length", "hyperdash.queue.length", "gauge", "{job}",
               "Jobs waiting in the work queue", "hyperdash_queue_length",
               json=int, initial=0),
    MetricSpec("http_requests", "hyperdash.http.requests", "counter", "{request}",
               "API requests served", "hyperdash_http_requests_total",
               json=int, initial=0),
    MetricSpec("http_errors", "hyperdash.http.errors", "counter", "{request}",
               "API requests that failed", "hyperdash_http_errors_total",
               json=int, initial=0),
    MetricSpec("avg_response_time", "hyperdash.http.response.time", "gauge", "s",
               "Average API response time", "hyperdash_http_response_time_seconds",
               to_snapshot=1000.0, json=float, digits=3, initial=0),
    MetricSpec("memory_usage", "hyperdash.process.memory.usage", "gauge", "By",
               "Resident memory of the process", "hyperdash_process_memory_usage_bytes",
               to_snapshot=1.0 / (1024 * 1024), json=int, initial=0),
    MetricSpec("cpu_usage", "hyperdash.process.cpu.utilization", "gauge", "%",
               "CPU used by the process over the last interval",
               "hyperdash_process_cpu_utilization_percent", json=float, digits=2,
               initial=0),
    MetricSpec("goroutines", "hyperdash.process.threads", "gauge", "{thread}",
               "Live threads of the process", "hyperdash_process_threads",
               json=int, initial=0),
    MetricSpec("active_connections", "hyperdash.websocket.connections", "up_down_counter",
               "{connection}", "WebSocket clients connected",
               "hyperdash_websocket_connections", json=int, initial=0),
    MetricSpec("provider_stats", "hyperdash.provider.jobs", "counter", "{job}",
               "Distinct jobs seen, by cloud provider", "hyperdash_provider_jobs_total",
               attributes=("provider",), json=dict),
    MetricSpec("system_health", "hyperdash.system.health", "gauge", "1",
               "1 for the current health status, 0 for the others",
               "hyperdash_system_health", attributes=("status",), json=str),
    MetricSpec(None, "hyperdash.jobs.stalled", "gauge", "{job}",
               "Running jobs whose progress has not moved for stall_after seconds, by provider",
               "hyperdash_jobs_stalled", attributes=("provider",)),
    MetricSpec(None, "hyperdash.alerts.raised", "counter", "{alert}",
               "Alerts raised, by severity", "hyperdash_alerts_raised_total",
               attributes=("severity",)),
    MetricSpec(None, "hyperdash.tick.duration", "histogram", "s",
               "Time of one tick: collect, build, encode and hand to every client",
               "hyperdash_tick_duration_seconds"),
    MetricSpec(None, "hyperdash.tick.errors", "counter", "{error}",
               "Ticks that raised an exception (logged; the next tick runs)",
               "hyperdash_tick_errors_total", initial=0),
    MetricSpec(None, "hyperdash.tick.skipped", "counter", "{tick}",
               "Ticks skipped because the previous one overran", "hyperdash_tick_skipped_total",
               initial=0),
    MetricSpec(None, "hyperdash.websocket.disconnects", "counter", "{connection}",
               "WebSocket clients closed by the server, by reason",
               "hyperdash_websocket_disconnects_total", attributes=("reason",)),
    MetricSpec(None, "hyperdash.websocket.rejected", "counter", "{connection}",
               "WebSocket upgrades refused, by reason", "hyperdash_websocket_rejected_total",
               attributes=("reason",)),
)

BY_FIELD: dict[str, MetricSpec] = {m.field: m for m in METRICS if m.field is not None}
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def family_name(spec: MetricSpec) -> str:
    """The name ``registry.collect()`` gives the family (no ``_total`` suffix)."""
    if spec.kind == "counter" and spec.prometheus.endswith("_total"):
        return spec.prometheus[: -len("_total")]
    return spec.prometheus


# One hyperdash reader per registry: a second reader (or a second Dashboard on the same
# registry) would emit every family twice, which is invalid exposition.
_REGISTRIES_IN_USE: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
_REGISTRIES_LOCK = threading.Lock()


class _NameReservation:
    """Claims the table's names in the registry so that a native prometheus_client metric of
    the same name fails loudly at registration instead of emitting a duplicate family."""

    def describe(self) -> Iterator[Metric]:
        for m in METRICS:
            if m.kind == "counter":
                yield CounterMetricFamily(family_name(m), m.description)
            elif m.kind == "histogram":
                yield HistogramMetricFamily(family_name(m), m.description)
            else:
                yield GaugeMetricFamily(family_name(m), m.description)

    def collect(self) -> Iterable[Metric]:
        return ()


_NAME = operator.attrgetter("name")
_LABELS = operator.attrgetter("labels")
_EXEMPLAR = operator.attrgetter("exemplar")


def _family_text(fam: Metric) -> str | None:
    """Every string of a family joined into one, to look for surrogates in a single pass
    (a tick collects thousands of series); None when a part is not a ``str``.

    Iterated in C (``map``, ``chain``): at 10,000 series a Python loop over the samples
    was most of what a tick adds to the collect.
    """
    samples = fam.samples
    try:
        labels = list(map(_LABELS, samples))
        # filter(None): an Exemplar is a non-empty tuple, so only the None ones go.
        exemplars = [e.labels for e in filter(None, map(_EXEMPLAR, samples))]
        return "".join(chain(
            (fam.name, fam.documentation, fam.unit), map(_NAME, samples),
            chain.from_iterable(labels), chain.from_iterable(map(dict.values, labels)),
            chain.from_iterable(exemplars), chain.from_iterable(map(dict.values, exemplars)),
        ))
    except TypeError:  # a hand-made collector's non-str label (or labels not a dict)
        return None


def _clean(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


def _clean_labels(labels: dict[str, str]) -> dict[str, str]:
    try:  # isascii() inline: this runs for every series of a family that needs cleaning
        return {(k if k.isascii() else clean_text(k)): (val if val.isascii() else clean_text(val))
                for k, val in labels.items()}
    except AttributeError:  # a hand-made collector's non-str label
        return {_clean(k): _clean(val) for k, val in labels.items()}


def clean_families(families: Iterable[Metric], warned: set[str]) -> list[Metric]:
    """The families with every lone surrogate replaced by U+FFFD (in place).

    A user's instrument may carry any ``str``: a label value from ``os.fsdecode``, a
    description, an ``OTEL_RESOURCE_ATTRIBUTES`` value, a meter's name. One lone surrogate
    cannot be encoded as UTF-8, so it would fail every ``/metrics`` scrape and every tick
    for as long as the series lives. Two series that become equal by the replacement would
    be a duplicate sample, which Prometheus rejects: the first stays, the rest are left out
    (logged once per family).
    """
    out = list(families)
    for fam in out:
        if known_ascii(fam):  # looked at on its way through the exporter
            continue
        joined = _family_text(fam)
        if joined is not None and not has_surrogates(joined):
            continue
        fam.name = _clean(fam.name)
        fam.documentation = _clean(fam.documentation)
        fam.unit = _clean(fam.unit)
        samples = []
        seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for s in fam.samples:
            name, labels = _clean(s.name), _clean_labels(s.labels)
            try:
                key = (name, frozenset(labels.items()))
            except TypeError:  # an unhashable label value: nothing to compare it with
                pass
            else:
                if key in seen:
                    continue
                seen.add(key)
            exemplar = s.exemplar
            if exemplar is not None:
                exemplar = exemplar._replace(labels=_clean_labels(exemplar.labels))
            samples.append(s._replace(name=name, labels=labels, exemplar=exemplar))
        if joined is not None and "surrogates:" + fam.name not in warned:
            warned.add("surrogates:" + fam.name)
            log.warning(
                "metric %r has lone surrogates (undecodable text) in its labels or help; "
                "they are exported as U+FFFD%s", fam.name,
                "" if len(samples) == len(fam.samples)
                else f", and {len(fam.samples) - len(samples)} series that became "
                     "duplicates by it are left out",
            )
        fam.samples = samples
    return out


def merge_families(families: Iterable[Metric], warned: set[str]) -> list[Metric]:
    """One family per name, as exposition formats require.

    The exporter emits a separate family for each (name, description, unit) it sees, so a
    user's instrument named like one of ours but described differently would be a duplicate
    family: its series join ours instead. A same-named family of another type cannot be
    merged: it is left out and logged once.
    """
    merged: dict[str, Metric] = {}
    for fam in families:
        first = merged.get(fam.name)
        if first is None:
            merged[fam.name] = fam
        elif first.type == fam.type:
            if first.samples is fam.samples:
                continue
            # A series already present (a second reader on this registry exports ours
            # again) would be a duplicate sample: the first one stays.
            seen = {(s.name, tuple(sorted(s.labels.items()))) for s in first.samples}
            extra = [s for s in fam.samples
                     if (s.name, tuple(sorted(s.labels.items()))) not in seen]
            if len(extra) < len(fam.samples) and fam.name not in warned:
                warned.add(fam.name)
                log.warning("metric %r is exported twice (a second reader on the dashboard's "
                            "registry?); the duplicate series are left out", fam.name)
            first.samples = [*first.samples, *extra]
        elif fam.name not in warned:
            warned.add(fam.name)
            log.warning(
                "metric %r is defined as both %s and %s; the %s series are left out",
                fam.name, first.type, fam.type, fam.type,
            )
    return list(merged.values())


COLLECT_SWITCH_INTERVAL = 0.0005
"""Seconds: the interpreter's thread switch interval while a collect runs (see
:func:`gil_shared`); Python's default is 0.005."""

_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved: float | None = None  # the interval to put back, None when left as it was
_switch_ours = 0.0  # the interval as set here (as sys.getswitchinterval reports it)


@contextlib.contextmanager
def gil_shared() -> Iterator[None]:
    """Run the block with the thread switch interval at :data:`COLLECT_SWITCH_INTERVAL`.

    A collect is Python code for every series (about 100 ms at 10,000 series), run in a
    worker thread while the server's event loop serves the connections. A thread that
    wants the GIL gets it only after the switch interval has passed, so with the default
    5 ms the loop waits up to 5 ms each time it wakes during a collect, and a tick stalls
    every connection that long, many times over. At 0.5 ms the loop runs within half a
    millisecond; the collect costs the same CPU (a switch happens only when another
    thread is waiting). Nested and concurrent uses are counted; the interval is put back
    once the last one ends, unless something else changed it meanwhile, and an interval
    already shorter is left alone.
    """
    global _switch_users, _switch_saved, _switch_ours
    with _switch_lock:
        if _switch_users == 0:
            current = sys.getswitchinterval()
            if current > COLLECT_SWITCH_INTERVAL:
                sys.setswitchinterval(COLLECT_SWITCH_INTERVAL)
                _switch_saved, _switch_ours = current, sys.getswitchinterval()
            else:
                _switch_saved = None
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if (_switch_users == 0 and _switch_saved is not None
                    and sys.getswitchinterval() == _switch_ours):
                sys.setswitchinterval(_switch_saved)
            if _switch_users == 0:
                _switch_saved = None


class _DashboardReader(DashboardReader):
    """The Prometheus reader (see :class:`~hyperdash_otel._otel_internal.DashboardReader`)."""

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        # Idempotent: a MeterProvider whose construction failed still shuts its readers
        # down at exit, after the dashboard has already let go of the registry.
        with contextlib.suppress(KeyError):
            super().shutdown(timeout_millis, **kwargs)


# One dashboard per foreign MeterProvider: a second one would count every series twice.
_PROVIDERS_IN_USE: weakref.WeakSet[MeterProvider] = weakref.WeakSet()

OTLP_SHUTDOWN_TIMEOUT_MS = 5_000.0
"""Longest :meth:`Telemetry.shutdown` waits for the last OTLP export (a Collector that is down
must not hold a closing service)."""


class Telemetry:
    """A MeterProvider whose readers export into ``registry`` and, optionally, elsewhere.

    - ``meter_provider``: attach to this SDK provider (yours, or the global one) instead of
      creating one; the dashboard adds its reader and removes it again on :meth:`shutdown`.
    - ``metric_readers``: more readers on the dashboard's own provider.
    - ``otlp``: OTLP export from the ``OTEL_*`` environment (see :mod:`hyperdash_otel.otel`);
      it reads the Prometheus reader's aggregation when it can, so a recording costs the same
      with it as without.

    Reads go through :meth:`collect` only: the reader keeps per-collection state, so two
    concurrent ``registry.collect()`` calls would steal each other's data points.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        service_name: str = DEFAULT_SERVICE_NAME,
        meter_provider: MeterProvider | None = None,
        metric_readers: Sequence[MetricReader] = (),
        otlp: OtlpSettings | None = None,
    ) -> None:
        if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
            raise TypeError(
                "meter_provider must be an opentelemetry.sdk.metrics.MeterProvider, got "
                f"{type(meter_provider).__name__}"
            )
        readers = list(metric_readers)
        for r in readers:
            if not isinstance(r, MetricReader):
                raise TypeError(
                    f"metric_readers entries must be MetricReaders, got {type(r).__name__}"
                )
        if meter_provider is not None and readers:
            raise ValueError(
                "metric_readers: add readers to the MeterProvider you pass as meter_provider "
                "(the dashboard only adds its own)"
            )
        with _REGISTRIES_LOCK:
            if registry in _REGISTRIES_IN_USE:
                raise ValueError(
                    "registry: this CollectorRegistry already has a hyperdash reader "
                    "(one Dashboard per registry)"
                )
            if meter_provider is not None and meter_provider in _PROVIDERS_IN_USE:
                raise ValueError(
                    "meter_provider: another Dashboard already reads this MeterProvider"
                )
            self._reservation = _NameReservation()
            # Raises ValueError("Duplicated timeseries ...") if a native metric took a name.
            registry.register(self._reservation)
            _REGISTRIES_IN_USE.add(registry)
            if meter_provider is not None:
                _PROVIDERS_IN_USE.add(meter_provider)
        self.registry = registry
        self.otlp_reader: PeriodicExportingMetricReader | None = None
        """The OTLP export from the environment, if any."""
        self.otlp_exporter: QuietExporter | None = None
        self._otlp_shared = False
        self._owns_provider = meter_provider is None
        self._at_exit: Callable[[], None] | None = None
        limits: dict[type, int] = {
            cls: CARDINALITY_LIMIT
            for cls in (Counter, UpDownCounter, Histogram, ObservableCounter,
                        ObservableUpDownCounter, ObservableGauge, sdk_gauge_class())
            if cls is not None
        }
        self.reader = _DashboardReader(registry=registry, cardinality_limits=limits)
        try:
            self.meter_provider = self._provider(meter_provider, readers, otlp, service_name)
        except BaseException:
            # A rejected construction leaves nothing registered or running.
            if self.otlp_reader is not None:
                self.otlp_reader.shutdown(timeout_millis=0)
            self.reader.shutdown()
            self._release(meter_provider)
            raise
        self.meter: Meter = self.meter_provider.get_meter(METER_NAME)
        self.instruments: dict[str, Any] = {}
        for spec in METRICS:
            self.instruments[spec.name] = self._create(spec)
        self._collect_lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()

    def _provider(
        self, given: MeterProvider | None, readers: list[MetricReader],
        otlp: OtlpSettings | None, service_name: str,
    ) -> MeterProvider:
        if given is not None:
            if not hasattr(given, "add_metric_reader"):
                raise RuntimeError(
                    "meter_provider: this opentelemetry-sdk cannot add a reader to an existing "
                    "MeterProvider (MeterProvider.add_metric_reader); upgrade opentelemetry-sdk"
                )
            given.add_metric_reader(self.reader)
            return given
        if otlp is not None and otlp.enabled:
            # One aggregation for both, when the SDK's private hooks allow it (the fallback
            # registers the OTLP reader like any other: its own aggregation, same numbers).
            self._otlp_shared = otlp.shared and SHARES_COLLECTION
            made = otlp_reader(otlp, self.reader.collect_data if self._otlp_shared else None)
            if made is not None:
                self.otlp_reader, self.otlp_exporter = made
                if not self._otlp_shared:
                    readers.append(self.otlp_reader)
        try:
            provider = MeterProvider(
                metric_readers=[self.reader, *readers], resource=make_resource(service_name)
            )
        except Exception as exc:  # the SDK raises a bare Exception for a reader in use
            raise ValueError(f"metric_readers: {exc}") from None
        if self.otlp_reader is not None and otlp is not None:
            log.info("exporting metrics over OTLP/HTTP to %s every %g s", otlp.endpoint,
                     otlp.interval_millis / 1000)
            if self._otlp_shared:
                # MeterProvider flushes its registered readers at exit; this one is not
                # registered, so it gets its own hook (holding no reference to us).
                ref = weakref.ref(self)

                def at_exit() -> None:
                    telemetry = ref()
                    if telemetry is not None:
                        telemetry.shutdown()

                self._at_exit = at_exit
                atexit.register(at_exit)
        return provider

    def _create(self, spec: MetricSpec) -> Any:
        m = self.meter
        if spec.kind == "counter":
            return m.create_counter(spec.name, unit=spec.unit, description=spec.description)
        if spec.kind == "gauge":
            return m.create_gauge(spec.name, unit=spec.unit, description=spec.description)
        if spec.kind == "up_down_counter":
            return m.create_up_down_counter(
                spec.name, unit=spec.unit, description=spec.description
            )
        return m.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(TICK_DURATION_BUCKETS),
        )

    def instrument(self, name: str) -> Any:
        return self.instruments[name]

    def collect(self) -> list[Metric]:
        """One ``registry.collect()``, serialised, with same-named families merged and every
        string made encodable (:func:`clean_families`); the GIL changes hands often
        meanwhile (:func:`gil_shared`)."""
        with self._collect_lock, gil_shared():
            return merge_families(clean_families(self.registry.collect(), self._warned),
                                  self._warned)

    def shutdown(self) -> None:
        """Detach from the registry (and from a provider passed in); safe to call twice.

        The OTLP export, if any, sends what it has one last time first, waiting at most
        :data:`OTLP_SHUTDOWN_TIMEOUT_MS`.
        """
        with self._collect_lock:
            if self._closed:
                return
            self._closed = True
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
        if self.otlp_reader is not None and self._otlp_shared:
            # Not registered on the provider: it is ours to stop, before the Prometheus
            # reader it collects through goes away.
            self.otlp_reader.shutdown(timeout_millis=OTLP_SHUTDOWN_TIMEOUT_MS)
        if self._owns_provider:
            self.meter_provider.shutdown(timeout_millis=OTLP_SHUTDOWN_TIMEOUT_MS)
        else:
            self.meter_provider.remove_metric_reader(self.reader)
        self._release(self.meter_provider)

    def _release(self, provider: MeterProvider | None) -> None:
        with _REGISTRIES_LOCK:
            with contextlib.suppress(KeyError):
                self.registry.unregister(self._reservation)
            _REGISTRIES_IN_USE.discard(self.registry)
            if provider is not None:
                _PROVIDERS_IN_USE.discard(provider)


def metric_table_markdown() -> str:
    """The README's metric table, generated from :data:`METRICS`."""
    rows = [
        "| snapshot field | OpenTelemetry instrument | kind | unit | Prometheus series "
        "| description |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        series = m.prometheus + ("{" + ",".join(m.attributes) + "}" if m.attributes else "")
        rows.append(
            f"| {('`' + m.field + '`') if m.field else '—'} | `{m.name}` | {m.kind} | "
            f"`{m.unit}` | `{series}` | {m.description} |"
        )
    return "\n".join(rows)
