"""Every use of OpenTelemetry's private names, in one module, with a fallback for each.

Three things the public API does not offer:

* the SDK's synchronous gauge class (``opentelemetry.sdk.metrics._Gauge``), to give gauges
  the same cardinality limit as every other instrument;
* ``PrometheusMetricReader._receive_metrics``, where :class:`DashboardReader` takes one
  collection for the caller instead of the registry;
* ``MetricReader._set_collect_callback``, which points the OTLP reader at that collection
  (one aggregation for ``/metrics`` and OTLP, not two copies of every series).

They are used only with the opentelemetry-sdk and opentelemetry-exporter-prometheus
releases in :data:`SDK_WRITTEN_FOR` / :data:`EXPORTER_WRITTEN_FOR` (pyproject.toml's bounds
match), and unless ``HYPERDASH_OTEL_INTERNALS=0`` is in the environment (read once, at
import). Otherwise, logged once: gauges take the SDK's default cardinality limit, and the
OTLP reader is registered on the provider like any other reader (its own aggregation;
the same numbers).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk.metrics.export import MetricReader, MetricsData

__all__ = ["ENABLED", "ENV", "EXPORTER_WRITTEN_FOR", "SDK_WRITTEN_FOR", "SHARES_COLLECTION",
           "DashboardReader",
           "decide", "exporter_preferences", "sdk_gauge_class", "set_collect_callback"]

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


class DashboardReader(PrometheusMetricReader):
    """The Prometheus reader, which can also hand one collection to the caller instead of
    the registry (the shared OTLP export reads the same aggregation this way)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._diverted = threading.local()

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
