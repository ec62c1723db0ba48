"""Every use of OpenTelemetry's private names, in one module, with a fallback for each.

Four things the public API does not offer:

* the SDK's synchronous gauge class (``opentelemetry.sdk.metrics._Gauge``), to give gauges
  the same cardinality limit as every other instrument;
* ``PrometheusMetricReader._receive_metrics``, where :class:`DashboardReader` takes one
  collection for the caller instead of the registry;
* ``MetricReader._set_collect_callback``, which points the OTLP reader at that collection
  (one aggregation for ``/metrics`` and OTLP, not two copies of every series);
* the exporter's ``_CustomCollector``, whose translation to Prometheus families
  :class:`TranslatingCollector` does with the per-name work cached (the same families,
  a third of the time).

They are used only with the opentelemetry-sdk and opentelemetry-exporter-prometheus
releases in :data:`SDK_WRITTEN_FOR` / :data:`EXPORTER_WRITTEN_FOR` (pyproject.toml's bounds
match), and unless ``HYPERDASH_OTEL_INTERNALS=0`` is in the environment (read once, at
import). Otherwise, logged once: gauges take the SDK's default cardinality limit, and the
OTLP reader is registered on the provider like any other reader (its own aggregation;
the same numbers), and the exporter translates every collection as it ships.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry.exporter import prometheus as exporter_module
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute
from opentelemetry.sdk import metrics as sdk_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricReader,
    MetricsData,
    Sum,
)

__all__ = ["ASCII_MARK", "ENABLED", "ENV", "EXPORTER_WRITTEN_FOR", "NAME_CACHE_SIZE",
           "SDK_WRITTEN_FOR", "SHARES_COLLECTION", "TRANSLATES", "DashboardReader",
           "TranslatingCollector", "decide", "exporter_preferences", "known_ascii",
           "sdk_gauge_class", "set_collect_callback", "translating"]

log = logging.getLogger("hyperdash_otel")

ENV = "HYPERDASH_OTEL_INTERNALS"
"""Environment variable: ``0`` keeps the dashboard off OpenTelemetry's private names."""
SDK_WRITTEN_FOR = ((1, 30), (1, 45))
"""Oldest and newest opentelemetry-sdk minor releases the private names were checked on."""
EXPORTER_WRITTEN_FOR = ((0, 51), (0, 66))
"""Oldest and newest opentelemetry-exporter-prometheus minor releases (``0.X b*``)."""


def _minor(package: str) -> tuple[int, int] | None:
    try:
        match = re.match(r"(\d+)\.(\d+)", version(package))  # "0.66b2" is 0.66
    except PackageNotFoundError:
        return None
    return None if match is None else (int(match[1]), int(match[2]))


def decide(sdk: tuple[int, int] | None = None,
           exporter: tuple[int, int] | None = None) -> bool:
    """Whether the private names may be used here (the environment and the installed
    releases, or those given)."""
    if os.environ.get(ENV, "").strip() == "0":
        log.info("hyperdash: %s=0: OpenTelemetry's private hooks are not used", ENV)
        return False
    sdk = sdk or _minor("opentelemetry-sdk")
    exporter = exporter or _minor("opentelemetry-exporter-prometheus")
    for name, have, (low, high) in (("opentelemetry-sdk", sdk, SDK_WRITTEN_FOR),
                                    ("opentelemetry-exporter-prometheus", exporter,
                                     EXPORTER_WRITTEN_FOR)):
        if have is None or not low <= have <= high:
            log.warning(
                "hyperdash: %s %s is outside the releases its private hooks were written for "
                "(%d.%d to %d.%d): gauges take the SDK's default cardinality limit and the "
                "OTLP export keeps its own aggregation", name,
                "?" if have is None else f"{have[0]}.{have[1]}", *low, *high,
            )
            return False
    return True


ENABLED = decide()
"""Whether the private names are used (decided once, at import)."""


def sdk_gauge_class() -> type | None:
    """The SDK's synchronous gauge class, or None on the fallback."""
    cls = getattr(sdk_metrics, "_Gauge", None) if ENABLED else None
    return cls if isinstance(cls, type) else None


def set_collect_callback(reader: MetricReader,
                         collect: Callable[[MetricReader, float], Any]) -> bool:
    """Make ``reader`` export what ``collect`` returns instead of collecting through a
    provider; False on the fallback (then register ``reader`` on the provider)."""
    hook = getattr(reader, "_set_collect_callback", None) if SHARES_COLLECTION else None
    if hook is None:
        return False
    hook(collect)
    return True


def exporter_preferences(exporter: Any) -> dict[str, Any]:
    """The temporality and aggregation ``exporter`` asked for, as keyword arguments of
    ``MetricExporter.__init__``: read the same way on every release (an attribute a release
    lacks gives the SDK's default), since a wrapper must never change what is exported."""
    return {"preferred_temporality": getattr(exporter, "_preferred_temporality", None),
            "preferred_aggregation": getattr(exporter, "_preferred_aggregation", None)}


SHARES_COLLECTION = (ENABLED and hasattr(PrometheusMetricReader, "_receive_metrics")
                     and hasattr(MetricReader, "_set_collect_callback"))
"""Whether the OTLP export may read the Prometheus reader's collection
(:meth:`DashboardReader.collect_data` and :func:`set_collect_callback` both work here)."""


NAME_CACHE_SIZE = 4096
"""Most names (metric names, units, attribute keys) :class:`TranslatingCollector` keeps
translated; past it the cache starts again empty. Names come from instruments and attribute
keys, a few dozen in a service, so it is not filled in practice; attribute *values* (the
unbounded part) are never cached."""

_Collector: Any = getattr(exporter_module, "_CustomCollector", None)


def _translates() -> bool:
    """Whether the exporter translates as :class:`TranslatingCollector` expects: the
    methods it replaces exist, with the parameters it was written for."""
    if not ENABLED or _Collector is None:
        return False
    expected = {
        "_translate_metric": ["self", "metric", "scope_attrs", "resource_attrs",
                              "metric_family_id_metric_family"],
        "_collect_data_points": ["self", "metric_data", "scope_attrs", "resource_attrs"],
        "_resolve_metric_name": ["self", "name"],
        "_check_value": ["self", "value"],
    }
    for method, parameters in expected.items():
        found = getattr(_Collector, method, None)
        if found is None or list(inspect.signature(found).parameters) != parameters:
            return False
    return all(hasattr(exporter_module, name) for name in (
        "_populate_counter_family", "_populate_gauge_family", "_populate_histogram_family",
        "_should_convert_sum_to_gauge"))


TRANSLATES = _translates()
"""Whether :class:`DashboardReader` translates with :class:`TranslatingCollector`."""


ASCII_MARK = "_hyperdash_ascii"
"""Attribute a family made by :class:`TranslatingCollector` carries: True when every one of
its strings is ASCII (then it has no surrogate to clean: see :func:`known_ascii`)."""


def known_ascii(family: Any) -> bool:
    """True for a family :class:`TranslatingCollector` made whose strings are all ASCII."""
    return getattr(family, "__dict__", {}).get(ASCII_MARK) is True


class TranslatingCollector(_Collector or object):  # type: ignore[misc]
    """The exporter's collector, with the translation of each name done once.

    The exporter runs a regular expression for every metric name, every unit and every
    label key of every data point, on every collection: at 27 series that is most of the
    translation, at 10,000 series four substitutions per series. The names do not change
    between collections, so their translations are kept (at most :data:`NAME_CACHE_SIZE`);
    the families are the same, sample for sample, label order included. Each family is
    marked with whether its strings are all ASCII (:data:`ASCII_MARK`), seen on the way,
    so that the dashboard need not look at every label again for surrogates.
    """

    _names: dict[str, str]
    _units: dict[str, str]
    _keys: dict[str, str]

    def _cached(self, table: dict[str, str], key: str, translate: Callable[[str], str]) -> str:
        found = table.get(key)
        if found is None:
            if len(table) >= NAME_CACHE_SIZE:
                table.clear()
            found = table[key] = translate(key)
        return found

    def _resolve_metric_name(self, name: str) -> str:
        return self._cached(self._names, name, super()._resolve_metric_name)

    def _translate_metric(
        self, metric: Any, scope_attrs: dict[str, Any], resource_attrs: dict[str, Any],
        metric_family_id_metric_family: dict[str, Any],
    ) -> None:
        # As the exporter's, with the unit's translation cached.
        metric_name = self._resolve_metric_name(metric.name)
        description = metric.description or ""
        unit = self._cached(self._units, metric.unit or "", map_unit)
        label_keys, label_rows, values, ascii_only = self._points(
            metric.data, scope_attrs, resource_attrs)
        per_metric_family_id = "|".join((metric_name, description, unit))
        convert_sum_to_gauge = exporter_module._should_convert_sum_to_gauge(metric)
        data = metric.data
        populate: Callable[..., None]
        factory: type
        if isinstance(data, Sum) and not convert_sum_to_gauge:
            populate, factory = exporter_module._populate_counter_family, CounterMetricFamily
        elif isinstance(data, Gauge) or convert_sum_to_gauge:
            populate, factory = exporter_module._populate_gauge_family, GaugeMetricFamily
        elif isinstance(data, Histogram):
            populate, factory = (exporter_module._populate_histogram_family,
                                 HistogramMetricFamily)
        else:
            exporter_module._logger.warning("Unsupported metric data. %s", type(data))
            return
        populate(registry=metric_family_id_metric_family,
                 per_metric_family_id=per_metric_family_id, metric_name=metric_name,
                 description=description, unit=unit, label_keys=label_keys,
                 label_rows=label_rows, values=values)
        # The name, the label keys and the unit are sanitised to ASCII by the exporter, so
        # only the description and the label values can hold a surrogate; a family fed by
        # two metrics is ASCII when both are.
        # (The family's key as the exporter makes it; a release that made it otherwise
        # leaves the family unmarked, and it is looked at as before.)
        family = metric_family_id_metric_family.get(
            "|".join((per_metric_family_id, factory.__name__)))
        if family is not None:
            family.__dict__[ASCII_MARK] = (
                family.__dict__.get(ASCII_MARK, True) and ascii_only
                and description.isascii() and metric_name.isascii() and unit.isascii())

    def _collect_data_points(
        self, metric_data: Any, scope_attrs: dict[str, Any], resource_attrs: dict[str, Any],
    ) -> tuple[list[str], list[list[str]], list[Any]]:
        return self._points(metric_data, scope_attrs, resource_attrs)[:3]

    def _points(
        self, metric_data: Any, scope_attrs: dict[str, Any], resource_attrs: dict[str, Any],
    ) -> tuple[list[str], list[list[str]], list[Any], bool]:
        """:meth:`_collect_data_points`, and whether every label value is ASCII."""
        # As the exporter's: a label per attribute (resource, then scope, then the point's:
        # a later one of the same label wins), every family's label set the union of its
        # points', missing ones "". The resource and scope labels are worked out once per
        # metric instead of once per point, and each key's translation is cached.
        keys_cache = self._keys
        check = self._check_value
        common: dict[str, str] = {}
        for key, value in (*resource_attrs.items(), *scope_attrs.items()):
            label = keys_cache.get(key) or self._cached(keys_cache, key, sanitize_attribute)
            common[label] = value if value.__class__ is str else check(value)
        ascii_only = all(value.isascii() for value in common.values())
        keys = set(common)
        rows: list[dict[str, str]] = []
        values: list[Any] = []
        for point in metric_data.data_points:
            labels = common.copy()
            for key, value in point.attributes.items():
                label = keys_cache.get(key) or self._cached(keys_cache, key, sanitize_attribute)
                text = labels[label] = value if value.__class__ is str else check(value)
                if ascii_only and not text.isascii():
                    ascii_only = False
            keys.update(labels)
            rows.append(labels)
            if isinstance(point, HistogramDataPoint):
                values.append({"bucket_counts": point.bucket_counts,
                               "explicit_bounds": point.explicit_bounds, "sum": point.sum})
            else:
                values.append(point.value)
        label_keys = sorted(keys)
        label_rows = [[labels.get(k, "") for k in label_keys] for labels in rows]
        return label_keys, label_rows, values, ascii_only


def translating(collector: Any) -> bool:
    """Make the exporter's ``collector`` a :class:`TranslatingCollector` (the same object:
    it stays registered as it is); False on the fallback."""
    if not TRANSLATES or type(collector) is not _Collector:
        return False
    collector._names, collector._units, collector._keys = {}, {}, {}
    collector.__class__ = TranslatingCollector
    return True


class DashboardReader(PrometheusMetricReader):
    """The Prometheus reader, which can also hand one collection to the caller instead of
    the registry (the shared OTLP export reads the same aggregation this way), and
    translates it with :class:`TranslatingCollector` where it may."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._diverted = threading.local()
        translating(getattr(self, "_collector", None))

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        box: list[MetricsData] | None = getattr(self._diverted, "box", None)
        if box is not None:
            box.append(metrics_data)
            return
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    def collect_data(self, timeout_millis: float = 10_000) -> MetricsData | None:
        """One collection returned as ``MetricsData``; the registry's next collect is not
        affected (the SDK serialises collections of one provider under its own lock)."""
        box: list[MetricsData] = []
        self._diverted.box = box
        try:
            self.collect(timeout_millis=timeout_millis)
        finally:
            self._diverted.box = None
        return box[0] if box else None
