import json
import math
import re
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily as Gauge

from hyperdash_otel import SNAPSHOT_FIELDS, Config, Dashboard, JobInfo
from hyperdash_otel import validation as v
from hyperdash_otel.telemetry import BY_FIELD, COLLECT_SWITCH_INTERVAL, gil_shared

NOW = datetime(2026, 11, 25, 10, 30, 0, tzinfo=timezone.utc)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def series(dash: Dashboard, name: str) -> list[str]:
    """The exposition lines of one series name, labels and value as written."""
    return [ln for ln in dash.metrics_text().splitlines()
            if ln.startswith(name + "{") or ln.startswith(name + " ")]


def test_fresh_snapshot_has_every_contract_key_with_its_json_type(dash):
    snap = json.loads(json.dumps(dash.snapshot(now=NOW)))
    assert list(snap)[: len(SNAPSHOT_FIELDS)] == list(SNAPSHOT_FIELDS)
    for key, typ in SNAPSHOT_FIELDS.items():
        assert isinstance(snap[key], typ), key
    assert snap["timestamp"] == "2026-11-25T10:30:00.000Z"
    assert snap["recent_jobs"] == [] and snap["alerts"] == [] and snap["provider_stats"] == {}
    assert snap["system_health"] == "healthy"
    assert snap["custom"] == {}


def test_update_calls_move_the_snapshot(dash):
    dash.update_job_metrics(active=5, completed=123, failed=2, pending=8, queue_len=15)
    dash.update_system_metrics(memory_mb=2048, cpu_percent=45.2, goroutines=1234)
    dash.update_http_metrics(requests=45678, errors=23, avg_response_time=125.5)
    dash.set_system_health("Degraded")
    snap = dash.snapshot(now=NOW)
    assert {k: snap[k] for k in list(SNAPSHOT_FIELDS)[1:13]} == {
        "jobs_active": 5, "jobs_completed": 123, "jobs_failed": 2, "jobs_pending": 8,
        "queue_length": 15, "http_requests": 45678, "http_errors": 23,
        "avg_response_time": 125.5, "memory_usage": 2048, "cpu_usage": 45.2,
        "goroutines": 1234, "active_connections": 0,
    }
    assert snap["system_health"] == "degraded"


def test_totals_only_grow(dash):
    dash.update_job_metrics(1, 10, 1, 0, 0)
    dash.update_job_metrics(1, 12, 1, 0, 0)
    assert dash.snapshot()["jobs_completed"] == 12
    with pytest.raises(ValueError, match="completed .*must not decrease"):
        dash.update_job_metrics(1, 11, 1, 0, 0)
    with pytest.raises(ValueError, match="errors"):
        dash.update_http_metrics(10, 5, 1.0)
        dash.update_http_metrics(11, 4, 1.0)
    assert dash.snapshot()["jobs_completed"] == 12


def test_exact_exposition_lines_for_each_documented_metric(dash):
    scope = 'otel_scope_name="hyperdash",otel_scope_schema_url="",otel_scope_version=""'
    dash.update_job_metrics(active=5, completed=123, failed=2, pending=8, queue_len=15)
    dash.update_system_metrics(memory_mb=2, cpu_percent=45.5, goroutines=12)
    dash.update_http_metrics(requests=45678, errors=23, avg_response_time=125.0)
    dash.add_job(JobInfo(id="j1", status="running", provider="aws"))
    dash.add_alert("critical", "disk full")
    dash.set_system_health("unhealthy")
    expected = {
        "hyperdash_jobs_active": "5.0",
        "hyperdash_jobs_completed_total": "123.0",
        "hyperdash_jobs_failed_total": "2.0",
        "hyperdash_jobs_pending": "8.0",
        "hyperdash_queue_length": "15.0",
        "hyperdash_http_requests_total": "45678.0",
        "hyperdash_http_errors_total": "23.0",
        "hyperdash_http_response_time_seconds": "0.125",
        "hyperdash_process_memory_usage_bytes": "2.097152e+06",
        "hyperdash_process_cpu_utilization_percent": "45.5",
        "hyperdash_process_threads": "12.0",
        "hyperdash_websocket_connections": "0.0",
        "hyperdash_tick_errors_total": "0.0",
        "hyperdash_tick_skipped_total": "0.0",
    }
    for name, value in expected.items():
        assert series(dash, name) == [f"{name}{{{scope}}} {value}"]
    assert series(dash, "hyperdash_provider_jobs_total") == [
        f'hyperdash_provider_jobs_total{{{scope},provider="aws"}} 1.0']
    assert series(dash, "hyperdash_alerts_raised_total") == [
        f'hyperdash_alerts_raised_total{{{scope},severity="critical"}} 1.0',
        f'hyperdash_alerts_raised_total{{{scope},severity="warning"}} 0.0',
        f'hyperdash_alerts_raised_total{{{scope},severity="info"}} 0.0',
    ]
    assert series(dash, "hyperdash_system_health") == [
        f'hyperdash_system_health{{{scope},status="healthy"}} 0.0',
        f'hyperdash_system_health{{{scope},status="degraded"}} 0.0',
        f'hyperdash_system_health{{{scope},status="unhealthy"}} 1.0',
    ]


def test_openmetrics_when_asked(dash):
    body, ctype = dash.exposition("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")
    assert "# UNIT hyperdash_process_memory_usage_bytes bytes" in body.decode()
    body, ctype = dash.exposition(None)
    assert ctype.startswith("text/plain")


def test_job_added_then_updated_in_place(dash):
    start = NOW - timedelta(minutes=5)
    dash.add_job(JobInfo(id="job-1", name="export-vm-prod-01", status="running", progress=75,
                         start_time=start, provider="aws", vm_name="prod-web-01"))
    dash.add_job(JobInfo(id="job-2", name="export-b", status="pending", provider="gcp"))
    dash.add_job(JobInfo(id="job-1", name="export-vm-prod-01", status="completed",
                         progress=100, start_time=start, end_time=NOW, provider="aws",
                         vm_name="prod-web-01"))
    snap = dash.snapshot(now=NOW)
    assert [j["id"] for j in snap["recent_jobs"]] == ["job-2", "job-1"]
    assert snap["recent_jobs"][1] == {
        "id": "job-1", "name": "export-vm-prod-01", "status": "completed", "progress": 100,
        "start_time": "2026-11-25T10:25:00.000Z", "end_time": "2026-11-25T10:30:00.000Z",
        "duration": 300.0, "provider": "aws", "vm_name": "prod-web-01", "error_msg": "",
        "eta_seconds": None, "stalled": False, "last_progress_at": None,
    }
    pending = snap["recent_jobs"][0]
    assert (pending["start_time"], pending["end_time"], pending["duration"]) == (None, None, 0.0)
    assert snap["provider_stats"] == {"aws": 1, "gcp": 1}


def test_running_job_has_no_end_time_and_a_growing_duration(dash):
    dash.add_job(JobInfo(id="r", status="running", start_time=NOW))
    job = dash.snapshot(now=NOW + timedelta(seconds=42))["recent_jobs"][0]
    assert job["end_time"] is None
    assert job["duration"] == 42.0
    assert RFC3339.match(job["start_time"])


def test_job_start_and_end_filled_when_not_given(dash):
    dash.add_job(JobInfo(id="a", status="running"))
    running = dash.job("a")
    assert running is not None and running["start_time"] and running["end_time"] is None
    dash.add_job(JobInfo(id="a", status="failed", error_msg="disk quota exceeded"))
    failed = dash.job("a")
    assert failed is not None
    assert failed["start_time"] == running["start_time"]
    assert RFC3339.match(failed["end_time"]) and failed["error_msg"] == "disk quota exceeded"


def test_given_duration_wins(dash):
    dash.add_job(JobInfo(id="a", status="completed", duration=timedelta(minutes=1, seconds=5)))
    assert dash.job("a")["duration"] == 65.0


def test_job_store_keeps_newest_max_jobs_newest_first(dash):
    for i in range(60):
        dash.add_job(JobInfo(id=f"job-{i}", status="running", provider="aws"))
    jobs = dash.snapshot()["recent_jobs"]
    assert len(jobs) == 50
    assert [j["id"] for j in jobs[:2]] == ["job-59", "job-58"]
    assert jobs[-1]["id"] == "job-10"
    assert dash.snapshot()["provider_stats"] == {"aws": 60}
    assert dash.job("job-0") is None


def test_jobs_filter_by_status_and_limit(dash):
    for i, status in enumerate(["running", "failed", "running", "completed"]):
        dash.add_job(JobInfo(id=f"j{i}", status=status))
    assert [j["id"] for j in dash.jobs(status="running")] == ["j2", "j0"]
    assert [j["id"] for j in dash.jobs(limit=1)] == ["j3"]
    with pytest.raises(ValueError, match="status"):
        dash.jobs(status="exploded")
    with pytest.raises(ValueError, match="limit"):
        dash.jobs(limit=-1)


def test_alerts_newest_first_bounded_and_dismissable(dash):
    ids = [dash.add_alert("warning" if i % 2 else "INFO", f"alert {i}") for i in range(25)]
    alerts = dash.snapshot()["alerts"]
    assert len(alerts) == 20
    assert [a["message"] for a in alerts[:2]] == ["alert 24", "alert 23"]
    assert {a["severity"] for a in alerts} == {"warning", "info"}
    assert set(alerts[0]) == {"id", "severity", "message", "time"}
    assert dash.dismiss_alert(ids[24]) is True
    assert dash.dismiss_alert(ids[24]) is False
    for _ in range(3):
        assert ids[24] not in [a["id"] for a in dash.snapshot()["alerts"]]
    assert dash.clear_alerts() == 19
    assert dash.snapshot()["alerts"] == []


def test_bounds_follow_the_config(make_dashboard):
    small = make_dashboard(max_jobs=3, max_alerts=2)
    for i in range(5):
        small.add_job(JobInfo(id=str(i)))
        small.add_alert("info", str(i))
    snap = small.snapshot()
    assert [j["id"] for j in snap["recent_jobs"]] == ["4", "3", "2"]
    assert [a["message"] for a in snap["alerts"]] == ["4", "3"]


def test_users_own_instrument_moves_the_snapshot_field(dash):
    mine = dash.meter_provider.get_meter("vm-exporter")
    completed = mine.create_counter("hyperdash.jobs.completed", unit="{job}")
    dash.update_job_metrics(0, 10, 0, 0, 0)
    completed.add(5)
    assert dash.snapshot()["jobs_completed"] == 15
    # described differently, yet one family in the exposition (two would be invalid)
    text = dash.metrics_text()
    assert text.count("# TYPE hyperdash_jobs_completed_total counter") == 1
    assert 'otel_scope_name="vm-exporter"' in text
    active = mine.create_up_down_counter("hyperdash.jobs.active")
    active.add(3)
    assert dash.snapshot()["jobs_active"] == 3


def test_other_families_appear_under_custom(dash):
    mine = dash.meter_provider.get_meter("vm-exporter")
    mine.create_counter("exports.bytes", unit="By").add(2048)
    lag = mine.create_gauge("replication.lag", unit="s")
    lag.set(1.5, {"region": "eu"})
    lag.set(0.5, {"region": "us"})
    custom = dash.snapshot()["custom"]
    assert custom == {
        "exports_bytes_total": 2048.0,
        "replication_lag_seconds": [
            {"labels": {"region": "eu"}, "value": 1.5},
            {"labels": {"region": "us"}, "value": 0.5},
        ],
    }


def test_custom_is_capped(make_dashboard):
    dash = make_dashboard(max_custom_series=10)
    gauge = dash.meter_provider.get_meter("x").create_gauge("tenant.queue")
    for i in range(500):
        gauge.set(i, {"tenant": f"t{i}"})
    snap = dash.snapshot()
    assert len(snap["custom"]["tenant_queue"]) == 10
    assert snap["custom_dropped"] == 490


def test_two_dashboards_in_one_process_are_independent(make_dashboard):
    a, b = make_dashboard(), make_dashboard()
    a.update_job_metrics(1, 2, 3, 4, 5)
    b.add_job(JobInfo(id="only-b", provider="azure"))
    assert a.snapshot()["jobs_active"] == 1 and b.snapshot()["jobs_active"] == 0
    assert a.snapshot()["provider_stats"] == {} and b.snapshot()["provider_stats"] == {
        "azure": 1}
    assert a.registry is not b.registry


def test_second_dashboard_on_the_same_registry_is_refused(make_dashboard):
    registry = CollectorRegistry()
    first = Dashboard(Config(collect_system_metrics=False), registry=registry)
    try:
        with pytest.raises(ValueError, match="registry"):
            Dashboard(Config(collect_system_metrics=False), registry=registry)
    finally:
        first.close()
    # Once closed, the registry is free again.
    again = Dashboard(Config(collect_system_metrics=False), registry=registry)
    again.close()
    again.close()  # idempotent


def test_native_metric_with_a_dashboard_name_is_refused(dash):
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("hyperdash_jobs_completed", "clash", registry=dash.registry)
    # the exposition keeps one family per name
    names = [ln.split()[2] for ln in dash.metrics_text().splitlines() if ln.startswith("# TYPE")]
    assert len(names) == len(set(names))


def test_native_metrics_beside_the_dashboards_are_fine(dash):
    Counter("legacy_exports", "native client metric", registry=dash.registry).inc(3)
    assert "legacy_exports_total 3.0" in dash.metrics_text()
    assert dash.snapshot()["custom"]["legacy_exports_total"] == 3.0


def test_global_registry_only_when_asked(make_dashboard):
    from prometheus_client import REGISTRY
    assert make_dashboard().registry is not REGISTRY
    dash = make_dashboard(use_global_registry=True)
    assert dash.registry is REGISTRY


def test_calls_work_while_collects_run_concurrently(dash):
    stop = threading.Event()
    seen: list[list[int]] = [[], []]

    def reader(mine: list[int]) -> None:
        while not stop.is_set():
            mine.append(dash.snapshot()["jobs_completed"])
            dash.metrics_text()

    threads = [threading.Thread(target=reader, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    for i in range(1, 2001):
        dash.update_job_metrics(0, i, 0, 0, 0)
    stop.set()
    for t in threads:
        t.join(10)
    assert dash.snapshot()["jobs_completed"] == 2000
    for mine in seen:  # each reader sees the total only grow: no collect lost points
        assert mine and mine == sorted(mine)


def test_system_metrics_sampled_unless_pushed(make_dashboard):
    dash = make_dashboard(collect_system_metrics=True)
    snap = dash.snapshot()
    assert snap["memory_usage"] > 0 and snap["goroutines"] >= 1
    dash.update_system_metrics(memory_mb=1, cpu_percent=2.5, goroutines=3)
    snap = dash.snapshot()
    assert (snap["memory_usage"], snap["cpu_usage"], snap["goroutines"]) == (1, 2.5, 3)


def test_an_instrument_holds_at_most_cardinality_limit_attribute_sets(dash):
    from hyperdash_otel.telemetry import CARDINALITY_LIMIT

    counter = dash.meter_provider.get_meter("x").create_counter("per.request")
    for i in range(CARDINALITY_LIMIT + 100):
        counter.add(1, {"request_id": str(i)})
    (family,) = [f for f in dash.collect() if f.name == "per_request"]
    series = [s for s in family.samples if s.name == "per_request_total"]
    assert len(series) == CARDINALITY_LIMIT + 1  # the sets, then one overflow series
    overflow = [s for s in series if s.labels.get("otel_metric_overflow") == "true"]
    assert len(overflow) == 1 and overflow[0].value >= 100
    assert sum(s.value for s in series) == CARDINALITY_LIMIT + 100  # nothing lost


def test_a_second_reader_on_the_registry_does_not_duplicate_series(dash, caplog):
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    dash.update_job_metrics(1, 10, 0, 0, 0)
    other = MeterProvider(metric_readers=[PrometheusMetricReader(registry=dash.registry)])
    try:
        other.get_meter("hyperdash").create_counter(
            "hyperdash.jobs.completed", unit="{job}", description="Jobs finished successfully"
        ).add(99)
        text = dash.metrics_text()
        assert text.count("# TYPE hyperdash_jobs_completed_total counter") == 1
        assert len(series(dash, "hyperdash_jobs_completed_total")) == 1
        assert dash.snapshot()["jobs_completed"] == 10
        assert "exported twice" in caplog.text
    finally:
        other.shutdown()


# -- the update calls check plain ints and floats inline: the same answers as validation ----

EDGE_COUNTS = [0, 1, 2**63 - 1, 2**63, -1, -(2**63), True, False, 1.0, 2**64 + 1, -0.0]
EDGE_REALS = [0, 0.0, -0.0, 1, 2.5, -1e-300, 2.0**63, 2**63, 2**63 + 1, 2.0**64, math.inf,
              -math.inf, math.nan, True, 1e308, 5e-324]


def _expect(check, value):
    """What the validation function gives for ``value``: ("ok", result) or the error."""
    try:
        return ("ok", check(value))
    except (TypeError, ValueError) as exc:
        return (type(exc), str(exc))


def _got(call):
    try:
        call()
    except (TypeError, ValueError) as exc:
        return (type(exc), str(exc))
    return None


@pytest.mark.parametrize("value", EDGE_COUNTS, ids=repr)
@pytest.mark.parametrize("position", range(5))
def test_update_job_metrics_takes_and_refuses_what_validation_count_does(
    make_dashboard, value, position
):
    names = ["active", "completed", "failed", "pending", "queue_len"]
    fields = ["jobs_active", "jobs_completed", "jobs_failed", "jobs_pending", "queue_length"]
    dash = make_dashboard()
    args = [3, 4, 5, 6, 7]
    args[position] = value
    expected = _expect(lambda x: v.count(x, names[position]), value)
    error = _got(lambda: dash.update_job_metrics(*args))
    snap = dash.snapshot(now=NOW)
    if expected[0] == "ok":
        assert error is None
        assert snap[fields[position]] == round(float(expected[1]))  # as a float64 holds it
    else:
        assert error == expected
        assert [snap[f] for f in fields] == [0, 0, 0, 0, 0]  # a rejected call changes nothing


@pytest.mark.parametrize("value", EDGE_REALS, ids=repr)
@pytest.mark.parametrize("call", ["memory_mb", "cpu_percent", "avg_response_time"])
def test_real_arguments_are_taken_and_refused_as_validation_real_does(
    make_dashboard, value, call
):
    dash = make_dashboard()
    expected = _expect(lambda x: v.real(x, call), value)
    if call == "avg_response_time":
        error = _got(lambda: dash.update_http_metrics(1, 0, value))
        field, recorded = "hyperdash_http_response_time_seconds", "avg_response_time"
    elif call == "memory_mb":
        error = _got(lambda: dash.update_system_metrics(value, 1.0, 1))
        field, recorded = "hyperdash_process_memory_usage_bytes", "memory_usage"
    else:
        error = _got(lambda: dash.update_system_metrics(1.0, value, 1))
        field, recorded = "hyperdash_process_cpu_utilization_percent", "cpu_usage"
    if expected[0] != "ok":
        assert error == expected
        assert series(dash, field)[0].endswith(" 0.0")  # nothing recorded
        return
    assert error is None
    spec = BY_FIELD[recorded]
    value_text = series(dash, field)[0].rsplit(" ", 1)[1]
    assert float(value_text) == spec.recorded(expected[1])
    assert not value_text.startswith("-")  # -0.0 is recorded as 0


def test_health_moves_between_every_pair_of_statuses(dash):
    scope = 'otel_scope_name="hyperdash",otel_scope_schema_url="",otel_scope_version=""'
    statuses = ["healthy", "degraded", "unhealthy"]
    for status in ["degraded", "degraded", "healthy", "unhealthy", "Degraded ", "healthy",
                   "healthy", "unhealthy", "degraded"]:
        dash.set_system_health(status)
        shown = status.strip().lower()
        assert dash.system_health == shown
        assert dash.snapshot(now=NOW)["system_health"] == shown
        assert series(dash, "hyperdash_system_health") == [
            f'hyperdash_system_health{{{scope},status="{s}"}} {1.0 if s == shown else 0.0}'
            for s in statuses
        ]


# -- a collect lets other threads have the GIL often (the event loop during a tick) --------


class _Probe:
    """A collector that notes the switch interval it is collected under."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[float] = []
        self.fail = fail

    def collect(self):
        self.seen.append(sys.getswitchinterval())
        if self.fail:
            raise RuntimeError("collector broke")
        return []


@pytest.fixture
def switch_interval():
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(saved)


def test_snapshot_and_scrape_collect_with_a_short_switch_interval_and_put_it_back(
    dash, switch_interval
):
    probe = _Probe()
    dash.registry.register(probe)
    dash.snapshot()
    dash.metrics_text()
    assert probe.seen == [COLLECT_SWITCH_INTERVAL, COLLECT_SWITCH_INTERVAL]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_scrape_encodes_with_the_short_switch_interval_too(dash, switch_interval):
    seen = []

    class Noting(Gauge):  # the text encoder reads each family's samples while it encodes
        @property
        def samples(self):
            seen.append(sys.getswitchinterval())
            return self._samples

        @samples.setter
        def samples(self, value):
            self._samples = value

    class Collector:
        def collect(self):
            fam = Noting("noted", "a family that notes when it is read")
            fam.add_metric([], 1.0)
            return [fam]

    dash.registry.register(Collector())
    assert "noted 1.0" in dash.metrics_text()
    assert seen and set(seen) == {COLLECT_SWITCH_INTERVAL}
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_failing_collect_puts_the_interval_back(dash, switch_interval):
    dash.registry.register(_Probe(fail=True))
    with pytest.raises(RuntimeError, match="collector broke"):
        dash.snapshot()
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_overlapping_collects_keep_the_interval_short_until_the_last_ends(switch_interval):
    first, second = gil_shared(), gil_shared()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == COLLECT_SWITCH_INTERVAL
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_an_interval_set_by_the_application_stands(switch_interval):
    with gil_shared():
        sys.setswitchinterval(0.002)  # the application's own choice, made meanwhile
    assert sys.getswitchinterval() == pytest.approx(0.002)
    sys.setswitchinterval(0.0001)
    with gil_shared():
        assert sys.getswitchinterval() == pytest.approx(0.0001)  # already shorter: kept
    assert sys.getswitchinterval() == pytest.approx(0.0001)


def test_collects_from_many_threads_leave_the_interval_as_it_was(dash, switch_interval):
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                dash.snapshot()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sys.getswitchinterval() == pytest.approx(0.005)
