"""Every bad argument raises naming it, and a rejected call changes nothing."""

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperdash_otel import Config, Dashboard, JobInfo

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)
LONG = "x" * 1025
NAN, INF = math.nan, math.inf


def state(dash: Dashboard) -> tuple[dict, str]:
    return dash.snapshot(now=NOW), dash.metrics_text()


BAD_CALLS = [
    ("update_job_metrics", (True, 0, 0, 0, 0), TypeError, "active"),
    ("update_job_metrics", (1.5, 0, 0, 0, 0), TypeError, "active"),
    ("update_job_metrics", (0, -1, 0, 0, 0), ValueError, "completed"),
    ("update_job_metrics", (0, 0, "1", 0, 0), TypeError, "failed"),
    ("update_job_metrics", (0, 0, 0, None, 0), TypeError, "pending"),
    ("update_job_metrics", (0, 0, 0, 0, -5), ValueError, "queue_len"),
    ("update_system_metrics", (NAN, 1.0, 1), ValueError, "memory_mb"),
    ("update_system_metrics", (1, INF, 1), ValueError, "cpu_percent"),
    ("update_system_metrics", (1, -0.1, 1), ValueError, "cpu_percent"),
    ("update_system_metrics", (1, 1.0, -1), ValueError, "goroutines"),
    ("update_system_metrics", ("1", 1.0, 1), TypeError, "memory_mb"),
    ("update_http_metrics", (-1, 0, 1.0), ValueError, "requests"),
    ("update_http_metrics", (1, False, 1.0), TypeError, "errors"),
    ("update_http_metrics", (1, 0, NAN), ValueError, "avg_response_time"),
    ("update_http_metrics", (1, 0, -3.0), ValueError, "avg_response_time"),
    ("add_alert", ("panic", "x"), ValueError, "severity"),
    ("add_alert", (None, "x"), TypeError, "severity"),
    ("add_alert", ("info", ""), ValueError, "message"),
    ("add_alert", ("info", LONG), ValueError, "message"),
    ("add_alert", ("info", 42), TypeError, "message"),
    ("add_alert", ("info", "bell\x07"), ValueError, "message"),
    ("set_system_health", ("fine",), ValueError, "status"),
    ("set_system_health", (1,), TypeError, "status"),
    ("dismiss_alert", (7,), TypeError, "alert_id"),
    ("add_job", ({"id": "x"},), TypeError, "job"),
    ("add_job", (JobInfo(id=""),), ValueError, "job.id"),
    ("add_job", (JobInfo(id="a\nb"),), ValueError, "job.id"),
    ("add_job", (JobInfo(id="a\x00"),), ValueError, "job.id"),
    ("add_job", (JobInfo(id=3),), TypeError, "job.id"),  # type: ignore[arg-type]
    ("add_job", (JobInfo(id="a", status="done"),), ValueError, "job.status"),
    ("add_job", (JobInfo(id="a", progress=101),), ValueError, "job.progress"),
    ("add_job", (JobInfo(id="a", progress=-1),), ValueError, "job.progress"),
    ("add_job", (JobInfo(id="a", progress=NAN),), ValueError, "job.progress"),
    ("add_job", (JobInfo(id="a", progress=True),), TypeError, "job.progress"),
    ("add_job", (JobInfo(id="a", name=LONG),), ValueError, "job.name"),
    ("add_job", (JobInfo(id="a", vm_name=LONG),), ValueError, "job.vm_name"),
    ("add_job", (JobInfo(id="a", provider=LONG),), ValueError, "job.provider"),
    ("add_job", (JobInfo(id="a", error_msg=LONG),), ValueError, "job.error_msg"),
    ("add_job", (JobInfo(id="a", start_time="yesterday"),), TypeError, "job.start_time"),
    ("add_job", (JobInfo(id="a", duration=-1.0),), ValueError, "job.duration"),
]


@pytest.mark.parametrize(("method", "args", "exc", "name"), BAD_CALLS,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_call_names_the_argument_and_changes_nothing(dash, method, args, exc, name):
    dash.update_job_metrics(1, 5, 1, 2, 2)
    dash.update_http_metrics(10, 1, 12.5)
    dash.add_job(JobInfo(id="keep", status="running", start_time=NOW, provider="aws"))
    before = state(dash)
    with pytest.raises(exc, match=name):
        getattr(dash, method)(*args)
    assert state(dash) == before


def test_text_limit_is_configurable(make_dashboard):
    dash = make_dashboard(max_text_length=8)
    dash.add_alert("info", "12345678")
    with pytest.raises(ValueError, match="message"):
        dash.add_alert("info", "123456789")


# -- random calls never corrupt state ------------------------------------------------------

counts = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True), st.booleans(),
                   st.none(), st.text(max_size=3))
reals = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6),
                  st.booleans(), st.none())
texts = st.one_of(st.text(max_size=40), st.integers(), st.none(),
                  st.sampled_from(["info", "WARNING", "critical", "healthy", "degraded"]))
jobs = st.builds(
    JobInfo, id=texts,
    status=st.sampled_from(["pending", "running", "completed", "failed", "cancelled", "bad"]),
    progress=reals, provider=st.sampled_from(["aws", "azure", "gcp", ""]), name=texts,
)
calls = st.one_of(
    st.tuples(st.just("update_job_metrics"), st.tuples(counts, counts, counts, counts, counts)),
    st.tuples(st.just("update_system_metrics"), st.tuples(reals, reals, counts)),
    st.tuples(st.just("update_http_metrics"), st.tuples(counts, counts, reals)),
    st.tuples(st.just("add_alert"), st.tuples(texts, texts)),
    st.tuples(st.just("set_system_health"), st.tuples(texts)),
    st.tuples(st.just("add_job"), st.tuples(jobs)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(calls, max_size=25))
def test_random_calls_never_corrupt_state(sequence):
    dash = Dashboard(Config(collect_system_metrics=False, max_jobs=5, max_alerts=3))
    try:
        for method, args in sequence:
            before = state(dash)
            try:
                getattr(dash, method)(*args)
            except (TypeError, ValueError):
                assert state(dash) == before
        snap = dash.snapshot(now=NOW)
        assert len(snap["recent_jobs"]) <= 5 and len(snap["alerts"]) <= 3
        assert snap["system_health"] in {"healthy", "degraded", "unhealthy"}
        for key in ("jobs_active", "jobs_completed", "jobs_failed", "http_requests"):
            assert isinstance(snap[key], int) and snap[key] >= 0
        assert all(0 <= j["progress"] <= 100 for j in snap["recent_jobs"])
        assert sum(snap["provider_stats"].values()) >= len(
            [j for j in snap["recent_jobs"] if j["provider"]])
    finally:
        dash.close()


# -- numbers a counter or gauge cannot hold, and wrong types, raise ValueError/TypeError ----
# These raised OverflowError or AttributeError (some after changing state) before.

HUGE = 10**400
FAR_EAST = timezone(timedelta(hours=5))
FAR_WEST = timezone(timedelta(hours=-5))

HOSTILE_CALLS = [
    ("update_job_metrics", (5, 1, HUGE, 7, 9), ValueError, "failed"),
    ("update_job_metrics", (HUGE, 1, 1, 7, 9), ValueError, "active"),
    ("update_job_metrics", (2**63, 1, 1, 7, 9), ValueError, "active"),
    ("update_system_metrics", (100, 50, HUGE), ValueError, "goroutines"),
    ("update_system_metrics", (HUGE, 50, 1), ValueError, "memory_mb"),
    ("update_system_metrics", (Fraction(HUGE), 50, 1), ValueError, "memory_mb"),
    ("update_system_metrics", (1e308, 50, 1), ValueError, "memory_mb"),
    ("update_system_metrics", (Decimal("sNaN"), 50, 1), ValueError, "memory_mb"),
    ("update_http_metrics", (HUGE, 0, 1), ValueError, "requests"),
    ("update_http_metrics", (1, 0, HUGE), ValueError, "avg_response_time"),
    ("update_http_metrics", (1, 0, Fraction(HUGE)), ValueError, "avg_response_time"),
    ("add_job", (JobInfo(id="a", progress=HUGE),), ValueError, "job.progress"),
    ("add_job", (JobInfo(id="a", progress=Fraction(HUGE)),), ValueError, "job.progress"),
    ("add_job", (JobInfo(id="a", duration=HUGE),), ValueError, "job.duration"),
    ("add_job", (JobInfo(id="a", start_time=datetime.max.replace(tzinfo=FAR_WEST)),),
     ValueError, "job.start_time"),
    ("add_job", (JobInfo(id="a", end_time=datetime.min.replace(tzinfo=FAR_EAST)),),
     ValueError, "job.end_time"),
    ("add_job", (JobInfo(id="a", start_time=datetime.min),), ValueError, "job.start_time"),
    ("jobs", (None, HUGE), ValueError, "limit"),
    ("job", (None,), TypeError, "job_id"),
    ("exposition", (5,), TypeError, "accept"),
    ("snapshot", ("now",), TypeError, "now"),
    ("snapshot", (5,), TypeError, "now"),
]


@pytest.mark.parametrize(("method", "args", "exc", "name"), HOSTILE_CALLS,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(HOSTILE_CALLS)])
def test_hostile_call_raises_value_or_type_error_and_changes_nothing(
    dash, method, args, exc, name
):
    dash.update_job_metrics(1, 5, 1, 2, 2)
    dash.update_system_metrics(64, 12.5, 9)
    dash.add_job(JobInfo(id="keep", status="running", start_time=NOW, provider="aws"))
    before = state(dash)
    with pytest.raises(exc, match=name):
        getattr(dash, method)(*args)
    assert state(dash) == before


def test_a_rejected_system_call_leaves_sampling_on(make_dashboard):
    dash = make_dashboard(collect_system_metrics=True)
    with pytest.raises(ValueError, match="goroutines"):
        dash.update_system_metrics(1, 50, HUGE)
    snap = dash.snapshot()
    assert snap["memory_usage"] > 1 and snap["goroutines"] >= 1  # psutil's, not the call's


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((Decimal("512.5"), Fraction(25, 2), 8), (512, 12.5, 8)),
        ((np.float32(256), np.float64(3.25), np.int64(4)), (256, 3.25, 4)),
        ((2.0**43, 0, 2**63 - 1), (2**43, 0.0, 2**63)),
    ],
    ids=["decimal-fraction", "numpy", "largest"],
)
def test_numbers_of_other_types_are_accepted(dash, args, expected):
    dash.update_system_metrics(*args)
    snap = dash.snapshot(now=NOW)
    assert (snap["memory_usage"], snap["cpu_usage"], snap["goroutines"]) == expected


def test_a_job_from_year_one_to_9999_is_shown(dash):
    start = datetime.min.replace(tzinfo=timezone.utc)
    end = datetime.max.replace(tzinfo=timezone.utc)
    dash.add_job(JobInfo(id="a", status="completed", start_time=start, end_time=end))
    job = dash.job("a")
    assert job["start_time"] == "0001-01-01T00:00:00.000Z"
    assert job["end_time"] == "9999-12-31T23:59:59.999Z"


BAD_CONFIGS = [
    ({"update_interval": HUGE}, ValueError, "update_interval"),
    ({"host": None}, TypeError, "host"),
    ({"host": 5}, TypeError, "host"),
    ({"host": "local\udcff"}, ValueError, "host"),
    ({"allowed_origins": 5}, TypeError, "allowed_origins"),
    ({"allowed_origins": None}, TypeError, "allowed_origins"),
    ({"allowed_origins": ("https://a.test", 5)}, TypeError, "allowed_origins"),
    ({"allowed_origins": ("https://\udcff.test",)}, ValueError, "allowed_origins"),
    ({"tls_certfile": 5, "tls_keyfile": 5}, TypeError, "tls_certfile"),
]


@pytest.mark.parametrize(("kwargs", "exc", "name"), BAD_CONFIGS,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_config_raises_naming_the_field(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        Config(**kwargs)


def test_a_wrong_registry_is_a_type_error():
    with pytest.raises(TypeError, match="registry"):
        Dashboard(Config(collect_system_metrics=False), registry=5)
