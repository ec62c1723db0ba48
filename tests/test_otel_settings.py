"""The OTEL_* variables, the resource, extra readers, a MeterProvider passed in, and the
OTLP exporter's quiet failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
)
from otel_helpers import OtlpReceiver, wait_until

from hyperdash_otel import Config, Dashboard
from hyperdash_otel._otel_internal import SHARES_COLLECTION
from hyperdash_otel.otel import OtlpSettings, QuietExporter, make_resource

BASE = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}
CONFIG = Config(port=0, collect_system_metrics=False)


# -- OtlpSettings.from_env ---------------------------------------------------------------------


@pytest.mark.parametrize("env, enabled, endpoint", [
    ({}, False, ""),
    ({"OTEL_SERVICE_NAME": "x"}, False, ""),
    (BASE, True, "http://127.0.0.1:4318/v1/metrics"),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:9/in"}, True, "http://c:9/in"),
    ({**BASE, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:9/in"}, True, "http://c:9/in"),
    ({**BASE, "OTEL_METRICS_EXPORTER": "none"}, False, ""),
    ({**BASE, "OTEL_METRICS_EXPORTER": "prometheus"}, False, ""),
    ({**BASE, "OTEL_METRICS_EXPORTER": "console, OTLP"}, True,
     "http://127.0.0.1:4318/v1/metrics"),
    ({**BASE, "OTEL_METRICS_EXPORTER": " "}, True, "http://127.0.0.1:4318/v1/metrics"),
])
def test_otlp_is_on_when_an_endpoint_is_set_and_otlp_is_not_left_out(env, enabled, endpoint):
    settings = OtlpSettings.from_env(env)
    assert (settings.enabled, settings.endpoint) == (enabled, endpoint)


def test_interval_and_sharing_follow_the_standard_variables():
    assert OtlpSettings.from_env(BASE).interval_millis == 60_000
    assert OtlpSettings.from_env({**BASE, "OTEL_METRIC_EXPORT_INTERVAL": "250"}) == (
        OtlpSettings(enabled=True, endpoint="http://127.0.0.1:4318/v1/metrics",
                     interval_millis=250.0, shared=True))
    for name, value in (("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
                        ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                         "base2_exponential_bucket_histogram")):
        assert OtlpSettings.from_env({**BASE, name: value}).shared is False
    assert OtlpSettings.from_env(
        {**BASE, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "CUMULATIVE"}).shared


@pytest.mark.parametrize("name, value", [
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "-5"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "inf"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
])
def test_a_bad_variable_is_an_error_naming_it(name, value):
    with pytest.raises(ValueError, match=name):
        OtlpSettings.from_env({**BASE, name: value})


def test_the_metrics_protocol_wins_over_the_general_one():
    env = {**BASE, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}
    assert OtlpSettings.from_env(env).enabled


def test_bad_variables_do_not_matter_while_otlp_is_off():
    assert not OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).enabled


def test_a_dashboard_with_a_bad_variable_is_not_built(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    with pytest.raises(ValueError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        Dashboard(CONFIG)
    monkeypatch.delenv("OTEL_METRIC_EXPORT_INTERVAL")
    Dashboard(CONFIG).close()  # nothing was left registered


def test_serve_says_which_variable_is_wrong(spawn):
    proc = spawn("serve", "--port", "0", env={**BASE, "OTEL_METRIC_EXPORT_INTERVAL": "soon"})
    assert proc.proc.wait(15) == 2
    assert proc.stderr().strip() == (
        "hyperdash serve: error: OTEL_METRIC_EXPORT_INTERVAL: expected milliseconds > 0, "
        "got 'soon'")


# -- the resource ------------------------------------------------------------------------------


def test_service_name_defaults_to_hyperdash(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert make_resource().attributes["service.name"] == "hyperdash"


def test_service_name_and_attributes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=ops")
    assert make_resource().attributes["service.name"] == "from-attrs"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "vm-exporter")
    attributes = make_resource().attributes
    assert (attributes["service.name"], attributes["team"]) == ("vm-exporter", "ops")


# -- more readers, and a MeterProvider passed in -----------------------------------------------


def _values(reader: InMemoryMetricReader, name: str) -> list[float]:
    data = reader.get_metrics_data()
    assert data is not None
    return [dp.value for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == name for dp in m.data.data_points]


def test_extra_readers_see_the_same_metrics():
    extra = InMemoryMetricReader()
    dash = Dashboard(CONFIG, metric_readers=[extra])
    try:
        dash.update_job_metrics(active=2, completed=9, failed=1, pending=0, queue_len=0)
        dash.meter_provider.get_meter("app").create_counter("app.events").add(4)
        assert _values(extra, "hyperdash.jobs.completed") == [9]
        assert _values(extra, "app.events") == [4]
        assert dash.snapshot()["custom"] == {"app_events_total": 4.0}
        assert dash.metric_readers == (dash.telemetry.reader,)
    finally:
        dash.close()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"metric_readers": ["reader"]}, TypeError, "metric_readers entries must be MetricReaders"),
    ({"meter_provider": "provider"}, TypeError, "meter_provider must be"),
    ({"meter_provider": MeterProvider(), "metric_readers": [InMemoryMetricReader()]},
     ValueError, "metric_readers"),
    ({"set_global": 1}, TypeError, "set_global must be a bool"),
])
def test_bad_otel_arguments_are_errors_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        Dashboard(CONFIG, **kwargs)
    Dashboard(CONFIG).close()


def test_a_reader_of_another_provider_is_refused_and_nothing_stays_registered():
    taken = InMemoryMetricReader()
    other = MeterProvider(metric_readers=[taken])
    try:
        with pytest.raises(ValueError, match="metric_readers: .*registered already"):
            Dashboard(CONFIG, metric_readers=[taken])
        Dashboard(CONFIG).close()
    finally:
        other.shutdown()


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    theirs = InMemoryMetricReader()
    p = MeterProvider(metric_readers=[theirs])
    yield p, theirs
    p.shutdown()


def test_a_provider_passed_in_feeds_the_dashboard_and_goes_on_after_close(provider):
    p, theirs = provider
    counter = p.get_meter("app").create_counter("app.logins")
    dash = Dashboard(CONFIG, meter_provider=p)
    assert dash.meter_provider is p
    counter.add(3)
    dash.update_job_metrics(active=1, completed=2, failed=0, pending=0, queue_len=0)
    assert dash.snapshot()["custom"] == {"app_logins_total": 3.0}
    assert dash.snapshot()["jobs_completed"] == 2
    with pytest.raises(ValueError, match="another Dashboard already reads this MeterProvider"):
        Dashboard(CONFIG, meter_provider=p)
    dash.close()
    counter.add(1)
    assert _values(theirs, "app.logins") == [4]
    Dashboard(CONFIG, meter_provider=p).close()  # free again


def test_a_provider_passed_in_gets_no_second_otlp_export(provider, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    dash = Dashboard(CONFIG, meter_provider=provider[0])
    assert dash.telemetry.otlp_reader is None
    dash.close()


def test_otlp_with_delta_temporality_gets_a_reader_of_its_own(monkeypatch):
    receiver = OtlpReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
        dash = Dashboard(CONFIG)
        try:
            dash.update_job_metrics(active=1, completed=5, failed=0, pending=0, queue_len=0)
            wait_until(lambda: receiver.value("hyperdash.jobs.completed") == 5)
            dash.update_job_metrics(active=1, completed=7, failed=0, pending=0, queue_len=0)
            # Delta: the next export carries the increase only; the page keeps the total.
            wait_until(lambda: receiver.value("hyperdash.jobs.completed") == 2)
            assert dash.snapshot()["jobs_completed"] == 7
            assert len(dash.metric_readers) == 2 and _aggregations(dash) == 2
        finally:
            dash.close()
    finally:
        receiver.stop()


def _aggregations(dash: Dashboard) -> int:
    # The SDK keeps one aggregation per registered reader and feeds each on every
    # recording: that count is what a recording costs (bench/core.py measures it).
    return len(dash.meter_provider._measurement_consumer._reader_storages)


def test_the_otlp_export_reads_the_pages_aggregation_instead_of_a_copy(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0.1")
    exporting = Dashboard(CONFIG)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    plain = Dashboard(CONFIG)
    try:
        assert exporting.telemetry.otlp_reader is not None
        assert plain.telemetry.otlp_reader is None
        # One shared aggregation; two on the fallback (HYPERDASH_OTEL_INTERNALS=0)
        assert _aggregations(plain) == 1
        assert _aggregations(exporting) == (1 if SHARES_COLLECTION else 2)
    finally:
        exporting.close()
        plain.close()


def test_otel_metrics_exporter_none_switches_the_export_off(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    dash = Dashboard(CONFIG)
    assert dash.telemetry.otlp_reader is None and len(dash.metric_readers) == 1
    dash.close()


# -- QuietExporter -----------------------------------------------------------------------------


def _some_data() -> MetricsData:
    reader = InMemoryMetricReader()
    p = MeterProvider(metric_readers=[reader])
    p.get_meter("t").create_counter("c").add(1)
    data = reader.get_metrics_data()
    p.shutdown()
    assert data is not None
    return data


def test_failures_are_logged_once_a_minute_and_recovery_once(caplog):
    caplog.set_level(logging.INFO)
    receiver = OtlpReceiver()
    port = receiver.port
    receiver.stop()
    now = [0.0]
    exporter = QuietExporter(
        OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics", timeout=0.5),
        f"http://127.0.0.1:{port}/v1/metrics", clock=lambda: now[0])
    data = _some_data()
    for t in (0.0, 10.0, 59.0, 60.0, 61.0):
        now[0] = t
        assert exporter.export(data) is MetricExportResult.FAILURE
    ours = [r for r in caplog.records if r.name == "hyperdash_otel"]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.WARNING]
    # The exporter's own words, held back from its logger, give the reason.
    assert "(Failed to export metrics batch" in ours[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert (exporter.exports, exporter.failures) == (5, 5)

    back = OtlpReceiver(port=port)
    try:
        assert exporter.export(data) is MetricExportResult.SUCCESS
        assert exporter.export(data) is MetricExportResult.SUCCESS
        assert back.requests == 2
    finally:
        back.stop()
    recovered = [r.getMessage() for r in caplog.records if r.name == "hyperdash_otel"][2:]
    assert recovered == [f"OTLP metrics export to http://127.0.0.1:{port}/v1/metrics works again"]
    exporter.shutdown()
