"""The Metrics message, built from one ``registry.collect()`` and the two stores.

:func:`build_snapshot` is pure: time comes in as an argument, nothing here touches a socket,
a clock or a lock, so tests call it directly with hand-made families.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from .config import DEFAULT_MAX_CUSTOM_SERIES
from .stores import Alert, JobRecord
from .telemetry import METRICS, MetricSpec, family_name
from .validation import rfc3339

__all__ = [
    "ALERT_FIELDS",
    "HTTP_SERVER_HISTOGRAMS",
    "JOB_FIELDS",
    "SNAPSHOT_FIELDS",
    "build_snapshot",
    "http_from_semconv",
    "snapshot_fields",
]


def snapshot_fields(table: Sequence[MetricSpec] = METRICS) -> dict[str, type]:
    """The message's keys in their order, with each key's JSON type, for ``table``.

    ``timestamp``, then the table's scalar fields in the table's order, then the labelled
    and stored parts (``provider_stats``, ``recent_jobs``, ``system_health``, ``alerts``).
    """
    by_field = {m.field: m for m in table if m.field is not None}
    fields: dict[str, type] = {"timestamp": str}
    fields.update({m.field: m.json for m in table if m.scalar and m.field and m.json})
    fields["provider_stats"] = dict
    fields["recent_jobs"] = list
    fields["system_health"] = str
    fields["alerts"] = list
    for key in ("provider_stats", "system_health"):
        spec = by_field.get(key)
        if spec is None or spec.json is not fields[key]:
            raise ValueError(f"the metric table must have a {key!r} row of JSON type "
                             f"{fields[key].__name__}")
    return fields


SNAPSHOT_FIELDS: dict[str, type] = snapshot_fields()
"""The original's WebSocket message, in its order, with each key's JSON type (derived from
:data:`~hyperdash_otel.telemetry.METRICS`)."""

_TIME = (str, type(None))
"""An RFC 3339 string, or null (Go's ``time.Time`` decodes null as the zero time)."""

# The original's job entry (its ``JobInfo``), in its order, with each key's JSON type; then
# our additions, after it. ``int`` means a JSON integer (no fraction, no exponent: Go's
# decoder refuses 7.0 for an int); ``float`` any JSON number.
JOB_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "status": str,
    "progress": int,
    "start_time": _TIME,
    "end_time": _TIME,
    "duration": float,
    "provider": str,
    "vm_name": str,
    "error_msg": str,
}

# The original's alert entry (its ``Alert``), in its order, with each key's JSON type.
ALERT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "severity": str,
    "message": str,
    "time": str,
}

_SCOPE_LABEL_PREFIX = "otel_scope_"
_SKIP_FAMILIES = frozenset({"target", "target_info", "otel_scope"})


def _labels(sample_labels: dict[str, str]) -> dict[str, str]:
    return {k: val for k, val in sample_labels.items() if not k.startswith(_SCOPE_LABEL_PREFIX)}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _sum(family: Metric | None, sample_name: str) -> float:
    if family is None:
        return 0.0
    total = 0.0
    for s in family.samples:
        if s.name == sample_name and math.isfinite(s.value):
            total += s.value
    return total


def _uncapped_count(samples: Sequence[Sample]) -> int:
    """How many of ``samples`` :func:`_custom` would show, counted without a Python loop
    (the series past the cap: thousands on every tick)."""
    created: int = sum(map(_IS_CREATED, map(_NAME, samples)))
    return len(samples) - created


_NAME = operator.attrgetter("name")
_IS_CREATED = operator.methodcaller("endswith", "_created")


def _by_name(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """The samples by name, in order, without the ``_created`` ones."""
    if samples:
        # A gauge's or a counter's samples all have one name: found without a Python loop.
        first = samples[0].name
        names = list(map(_NAME, samples))
        if names.count(first) == len(names):
            return {} if first.endswith("_created") else {first: list(samples)}
    by_name: dict[str, list[Sample]] = {}
    for s in samples:
        if s.name.endswith("_created"):
            continue
        by_name.setdefault(s.name, []).append(s)
    return by_name


def _custom(
    families: Iterable[Metric], cap: int
) -> tuple[dict[str, Any], int]:
    """User families: ``name -> value`` for one unlabelled series, else a list of
    ``{labels, value}``; at most ``cap`` series in all, the rest counted as dropped.

    Only the series shown are looked at one by one: a registry of 10,000 series with the
    default cap of 200 must not cost a dict of labels per series per tick.
    """
    custom: dict[str, Any] = {}
    used = 0
    dropped = 0
    for fam in families:
        if used >= cap:
            dropped += _uncapped_count(fam.samples)
            continue
        by_name = _by_name(fam.samples)
        for name, series in by_name.items():
            room = cap - used
            if len(series) > room:
                dropped += len(series) - room
                series = series[:room]
                if not series:
                    continue
            used += len(series)
            if len(series) == 1 and not _labels(series[0].labels):
                custom[name] = _finite(series[0].value)
            else:
                custom[name] = [{"labels": _labels(s.labels), "value": _finite(s.value)}
                                for s in series]
    return custom, dropped


HTTP_SERVER_HISTOGRAMS: tuple[tuple[str, str, float], ...] = (
    # (family name, status code label, factor to milliseconds)
    ("http_server_request_duration_seconds", "http_response_status_code", 1000.0),
    ("http_server_duration_milliseconds", "http_status_code", 1.0),
)
"""The OpenTelemetry HTTP server duration histograms as the Prometheus exporter names them:
the stable ``http.server.request.duration`` (s) first, then the older ``http.server.duration``
(ms)."""


def http_from_semconv(families: Iterable[Metric]) -> tuple[int, int, float] | None:
    """``(requests, errors, mean duration in ms)`` from the standard HTTP server metrics,
    or None when the service records neither.

    That is what OpenTelemetry's instrumentation for WSGI, Flask, ASGI, FastAPI, Tornado...
    records. Every series counts (all routes, methods and instrumentation scopes); an error
    is a 5xx status, or an ``error.type`` with no status (the request failed before one was
    sent). Only the first histogram of :data:`HTTP_SERVER_HISTOGRAMS` that has series is
    read, so an instrumentation that records both (``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup``)
    counts each request once.
    """
    by_name = {fam.name: fam for fam in families}
    for name, status_label, to_ms in HTTP_SERVER_HISTOGRAMS:
        fam = by_name.get(name)
        if fam is None or fam.type != "histogram":
            continue
        count_name, sum_name = name + "_count", name + "_sum"
        requests = errors = 0.0
        total = 0.0
        for s in fam.samples:
            if not math.isfinite(s.value):
                continue
            if s.name == sum_name:
                total += s.value
            elif s.name == count_name:
                requests += s.value
                status = s.labels.get(status_label, "")
                if (status.isdigit() and int(status) >= 500) or (
                    not status and s.labels.get("error_type")
                ):
                    errors += s.value
        if requests <= 0:
            continue
        return round(requests), round(errors), total * to_ms / requests
    return None


class _Layout:
    """What :func:`build_snapshot` needs from a metric table, worked out once per table."""

    def __init__(self, table: Sequence[MetricSpec]) -> None:
        self.table = tuple(table)
        self.fields = snapshot_fields(self.table)  # checks the table's shape
        self.scalars = [(m.field, family_name(m), m) for m in self.table
                        if m.scalar and m.field is not None]
        self.providers = next(m for m in self.table if m.field == "provider_stats")
        self.reserved = frozenset(family_name(m) for m in self.table)
        # The HTTP cards derived from the standard HTTP server metrics replace these three.
        by_field = {m.field: m for m in self.table}
        self.avg_response_time = (by_field["avg_response_time"]
                                  if {"http_requests", "http_errors", "avg_response_time"}
                                  <= by_field.keys() else None)


_DEFAULT_LAYOUT = _Layout(METRICS)


def build_snapshot(
    families: Sequence[Metric],
    jobs: Sequence[JobRecord | dict[str, Any]],
    alerts: Sequence[Alert],
    health: str,
    *,
    now: datetime,
    max_custom_series: int = DEFAULT_MAX_CUSTOM_SERIES,
    derive_http: bool = True,
    table: Sequence[MetricSpec] = METRICS,
) -> dict[str, Any]:
    """The Metrics dict: every key of the original's message, plus ``custom``.

    Numbers are read back from ``families`` (one ``registry.collect()``), summed over every
    series of a family, so a user's own instrument under a documented name counts too.
    With ``derive_http`` (until values are pushed with ``update_http_metrics``), the
    HTTP cards come from the standard HTTP server metrics when there are any
    (:func:`http_from_semconv`).

    ``jobs`` are records, or jobs already in their JSON form (``JobStore.render``, or
    an instance's ``/api/jobs``), which are taken as they are.

    ``table`` is the metric table the scalar fields come from (:func:`snapshot_fields`
    gives their order); its families are kept out of ``custom``.
    """
    layout = _DEFAULT_LAYOUT if table is METRICS else _Layout(table)
    by_name = {fam.name: fam for fam in families}

    snapshot: dict[str, Any] = {"timestamp": rfc3339(now)}
    for field, family, spec in layout.scalars:
        snapshot[field] = spec.snapshot_value(_sum(by_name.get(family), spec.prometheus))

    providers: dict[str, int] = {}
    spec = layout.providers
    fam = by_name.get(family_name(spec))
    if fam is not None:
        for s in fam.samples:
            provider = s.labels.get("provider")
            if s.name == spec.prometheus and provider is not None and math.isfinite(s.value):
                providers[provider] = providers.get(provider, 0) + int(s.value)

    custom, dropped = _custom(
        (f for f in families if f.name not in layout.reserved and f.name not in _SKIP_FAMILIES),
        max_custom_series,
    )
    snapshot["provider_stats"] = providers
    snapshot["recent_jobs"] = [job if isinstance(job, dict) else job.to_json(now) for job in jobs]
    snapshot["system_health"] = health
    snapshot["alerts"] = [alert.to_json() for alert in alerts]
    snapshot["custom"] = custom
    avg = layout.avg_response_time
    http = http_from_semconv(families) if derive_http and avg is not None else None
    if http is not None and avg is not None:
        snapshot["http_requests"], snapshot["http_errors"] = http[0], http[1]
        snapshot["avg_response_time"] = avg.rounded(http[2])
    if dropped:
        snapshot["custom_dropped"] = dropped
    return snapshot
