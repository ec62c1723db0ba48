"""build_snapshot is pure: hand-made families in, the Metrics dict out."""

import json
import math
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from hyperdash_otel import SNAPSHOT_FIELDS, build_snapshot
from hyperdash_otel.snapshot import snapshot_fields
from hyperdash_otel.stores import Alert, JobRecord
from hyperdash_otel.telemetry import METRICS, MetricSpec

NOW = datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)


def gauge(name, value, **labels):
    fam = GaugeMetricFamily(name, "", labels=list(labels))
    fam.add_metric(list(labels.values()), value)
    return fam


def counter(name, *values_and_labels):
    keys = list(values_and_labels[0][1]) if values_and_labels else []
    fam = CounterMetricFamily(name, "", labels=keys)
    for value, labels in values_and_labels:
        fam.add_metric(list(labels.values()), value)
    return fam


def test_the_originals_example_message():
    families = [
        gauge("hyperdash_jobs_active", 5),
        counter("hyperdash_jobs_completed", (123, {})),
        counter("hyperdash_jobs_failed", (2, {})),
        gauge("hyperdash_jobs_pending", 8),
        gauge("hyperdash_queue_length", 15),
        counter("hyperdash_http_requests", (45678, {})),
        counter("hyperdash_http_errors", (23, {})),
        gauge("hyperdash_http_response_time_seconds", 0.1255),
        gauge("hyperdash_process_memory_usage_bytes", 2048 * 1024 * 1024),
        gauge("hyperdash_process_cpu_utilization_percent", 45.2),
        gauge("hyperdash_process_threads", 1234),
        gauge("hyperdash_websocket_connections", 3),
        counter("hyperdash_provider_jobs", (50, {"provider": "aws"}),
                (30, {"provider": "azure"}), (43, {"provider": "gcp"})),
    ]
    snap = build_snapshot(families, [], [], "healthy", now=NOW)
    assert snap == {
        "timestamp": "2024-01-15T10:30:00.000Z",
        "jobs_active": 5, "jobs_completed": 123, "jobs_failed": 2, "jobs_pending": 8,
        "queue_length": 15, "http_requests": 45678, "http_errors": 23,
        "avg_response_time": 125.5, "memory_usage": 2048, "cpu_usage": 45.2,
        "goroutines": 1234, "active_connections": 3,
        "provider_stats": {"aws": 50, "azure": 30, "gcp": 43},
        "recent_jobs": [], "system_health": "healthy", "alerts": [], "custom": {},
    }
    assert {k: type(snap[k]) for k in SNAPSHOT_FIELDS} == SNAPSHOT_FIELDS


def test_empty_registry_gives_zeros_and_empty_lists_never_null():
    snap = build_snapshot([], [], [], "degraded", now=NOW)
    assert snap["recent_jobs"] == [] and snap["alerts"] == [] and snap["custom"] == {}
    assert all(snap[k] == 0 for k in ("jobs_active", "memory_usage", "http_requests"))
    assert "null" not in json.dumps({k: snap[k] for k in SNAPSHOT_FIELDS})


def test_series_of_a_family_are_summed_across_scopes():
    fam = CounterMetricFamily("hyperdash_jobs_completed", "", labels=["otel_scope_name"])
    fam.add_metric(["hyperdash"], 10)
    fam.add_metric(["my-app"], 5)
    assert build_snapshot([fam], [], [], "healthy", now=NOW)["jobs_completed"] == 15


def test_stores_are_rendered_in_order():
    job = JobRecord(id="j", name="n", status="running", progress=12.5, start_time=NOW,
                    end_time=None, duration=None, provider="gcp", vm_name="vm", error_msg="")
    alert = Alert("alert-1", "critical", "boom", NOW)
    snap = build_snapshot([], [job], [alert], "unhealthy", now=NOW)
    assert snap["recent_jobs"][0]["progress"] == 12  # floored: the original sends an int
    assert snap["alerts"] == [{"id": "alert-1", "severity": "critical", "message": "boom",
                               "time": "2024-01-15T10:30:00.000Z"}]


def test_custom_non_finite_values_become_null_so_the_json_stays_valid():
    snap = build_snapshot([gauge("weird", math.nan), gauge("inf", math.inf, k="v")], [], [],
                          "healthy", now=NOW)
    assert snap["custom"] == {"weird": None, "inf": [{"labels": {"k": "v"}, "value": None}]}
    json.dumps(snap, allow_nan=False)


@pytest.mark.parametrize("cap", [0, 1, 2, 3, 4, 5, 7, 8, 9, 100])
def test_custom_shows_the_first_series_up_to_the_cap_and_counts_the_rest(cap):
    # A counter's _created samples are never shown nor counted; a histogram's buckets,
    # count and sum are series of their own names.
    requests = CounterMetricFamily("requests", "", labels=["route"], created=1.0)
    requests.add_metric(["/a"], 1, created=1.0)
    requests.add_metric(["/b"], 2, created=1.0)
    latency = HistogramMetricFamily("latency", "", labels=["route"])
    latency.add_metric(["/a"], [("1.0", 3), ("+Inf", 4)], 2.5)
    families = [requests, gauge("temperature", 21.5), latency, gauge("depth", 3, q="x")]
    every = [("requests_total", {"route": "/a"}, 1), ("requests_total", {"route": "/b"}, 2),
             ("temperature", {}, 21.5),
             ("latency_bucket", {"route": "/a", "le": "1.0"}, 3),
             ("latency_bucket", {"route": "/a", "le": "+Inf"}, 4),
             ("latency_count", {"route": "/a"}, 4), ("latency_sum", {"route": "/a"}, 2.5),
             ("depth", {"q": "x"}, 3)]
    expected: dict = {}
    for name, labels, value in every[:cap]:
        expected.setdefault(name, []).append({"labels": labels, "value": value})
    if "temperature" in expected:
        expected["temperature"] = 21.5  # one unlabelled series: the bare number
    snap = build_snapshot(families, [], [], "healthy", now=NOW, max_custom_series=cap)
    assert snap["custom"] == expected
    assert snap.get("custom_dropped", 0) == max(0, len(every) - cap)


def test_target_info_is_not_custom():
    snap = build_snapshot([gauge("target_info", 1, service_name="x")], [], [], "healthy",
                          now=NOW)
    assert snap["custom"] == {}


def test_snapshot_fields_are_the_originals_keys_order_and_types():
    # Derived from METRICS; the original's message is the contract, so it is spelled out here.
    assert list(SNAPSHOT_FIELDS.items()) == [
        ("timestamp", str), ("jobs_active", int), ("jobs_completed", int),
        ("jobs_failed", int), ("jobs_pending", int), ("queue_length", int),
        ("http_requests", int), ("http_errors", int), ("avg_response_time", float),
        ("memory_usage", int), ("cpu_usage", float), ("goroutines", int),
        ("active_connections", int), ("provider_stats", dict), ("recent_jobs", list),
        ("system_health", str), ("alerts", list),
    ]


QUEUE_AGE = MetricSpec("queue_age", "hyperdash.queue.age", "gauge", "s",
                       "Age of the oldest queued job", "hyperdash_queue_age_seconds",
                       to_snapshot=1000.0, json=int, initial=0)
"""A field the original does not have: one row is all the Python side needs."""


def test_a_new_field_is_one_row_in_the_table():
    table = (*METRICS, QUEUE_AGE)
    families = [gauge("hyperdash_queue_age_seconds", 2.5), gauge("hyperdash_jobs_active", 4),
                gauge("my_app_gauge", 7)]
    snap = build_snapshot(families, [], [], "healthy", now=NOW, table=table)
    # Scaled (s -> ms) and typed as the row says, right after the last scalar field.
    assert snap["queue_age"] == 2500 and type(snap["queue_age"]) is int
    keys = list(snapshot_fields(table))
    assert keys.index("queue_age") == keys.index("active_connections") + 1
    assert list(snap)[: len(keys)] == keys
    assert {k: type(snap[k]) for k in keys} == snapshot_fields(table)
    # The table's family is the field, not a custom metric; the user's stays custom.
    assert snap["custom"] == {"my_app_gauge": 7}
    assert snap["jobs_active"] == 4
    # The default table knows nothing of it.
    default = build_snapshot(families, [], [], "healthy", now=NOW)
    assert "queue_age" not in default and default["custom"]["hyperdash_queue_age_seconds"] == 2.5
    # Recording goes the other way: 2500 ms is 2.5 s.
    assert QUEUE_AGE.recorded(2500) == 2.5


def test_a_float_field_keeps_the_rows_digits():
    row = replace(QUEUE_AGE, json=float, digits=1)
    snap = build_snapshot([gauge("hyperdash_queue_age_seconds", 0.01234)], [], [], "healthy",
                          now=NOW, table=(*METRICS, row))
    assert snap["queue_age"] == 12.3 and type(snap["queue_age"]) is float


@pytest.mark.parametrize(("changes", "reason"), [
    ({"json": None}, "JSON type exactly when it has a field"),
    ({"field": None}, "JSON type exactly when it has a field"),
    ({"attributes": ("queue",)}, "only an unlabelled series"),
    ({"kind": "counter", "initial": 5}, "can only start at 0"),
    ({"to_snapshot": 0.0}, "to_snapshot"),
])
def test_a_malformed_row_is_refused(changes, reason):
    with pytest.raises(ValueError, match=reason):
        replace(QUEUE_AGE, **changes)


def test_a_table_without_the_labelled_fields_is_refused():
    table = tuple(m for m in METRICS if m.field != "provider_stats")
    with pytest.raises(ValueError, match="provider_stats"):
        build_snapshot([], [], [], "healthy", now=NOW, table=table)
