"""HTTP cards from the standard OpenTelemetry HTTP server metrics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from otel_helpers import get_json, get_text, snapshot_time, wait_until
from prometheus_client.core import HistogramMetricFamily

from hyperdash_otel.snapshot import http_from_semconv

WEB_APP = Path(__file__).resolve().parent / "otel_web_app.py"


# -- the derivation, over hand-made families ----------------------------------------------------


def _histogram(name: str, label: str, series: dict[str, tuple[int, float]]) -> Any:
    fam = HistogramMetricFamily(name, "", labels=[label, "http_request_method"])
    for status, (count, total) in series.items():
        fam.add_metric([status, "GET"], buckets=[("+Inf", count)], sum_value=total)
    return fam


def test_requests_errors_and_mean_from_the_stable_histogram_in_seconds():
    fam = _histogram("http_server_request_duration_seconds", "http_response_status_code",
                     {"200": (7, 0.7), "404": (2, 0.1), "500": (1, 0.2), "503": (2, 0.2)})
    assert http_from_semconv([fam]) == (12, 3, pytest.approx(1200 / 12))


def test_the_older_histogram_in_milliseconds_counts_too():
    fam = _histogram("http_server_duration_milliseconds", "http_status_code",
                     {"200": (3, 30.0), "502": (1, 50.0)})
    assert http_from_semconv([fam]) == (4, 1, pytest.approx(20.0))


def test_both_recorded_for_the_same_requests_count_once_from_the_stable_one():
    new = _histogram("http_server_request_duration_seconds", "http_response_status_code",
                     {"200": (4, 0.4)})
    old = _histogram("http_server_duration_milliseconds", "http_status_code",
                     {"200": (4, 400.0)})
    assert http_from_semconv([old, new]) == (4, 0, pytest.approx(100.0))


def test_a_request_that_failed_before_a_status_is_an_error():
    fam = HistogramMetricFamily("http_server_request_duration_seconds", "",
                                labels=["error_type"])
    fam.add_metric(["TimeoutError"], buckets=[("+Inf", 2)], sum_value=1.0)
    assert http_from_semconv([fam]) == (2, 2, pytest.approx(500.0))


def test_no_http_metrics_means_no_derivation():
    assert http_from_semconv([]) is None
    empty = HistogramMetricFamily("http_server_request_duration_seconds", "", labels=["x"])
    assert http_from_semconv([empty]) is None


def test_the_cards_follow_a_histogram_on_the_dashboards_provider(dash):
    duration = dash.meter_provider.get_meter("web").create_histogram(
        "http.server.request.duration", unit="s")
    for status, seconds in ((200, 0.010), (200, 0.030), (500, 0.050)):
        duration.record(seconds, {"http.response.status_code": status,
                                  "http.request.method": "GET"})
    snap = dash.snapshot()
    assert (snap["http_requests"], snap["http_errors"], snap["avg_response_time"]) == (
        3, 1, 30.0)


def test_pushed_values_win_from_the_first_push_on(dash):
    duration = dash.meter_provider.get_meter("web").create_histogram(
        "http.server.request.duration", unit="s")
    duration.record(0.5, {"http.response.status_code": 200})
    assert dash.snapshot()["http_requests"] == 1
    dash.update_http_metrics(requests=0, errors=0, avg_response_time=0.0)
    duration.record(0.5, {"http.response.status_code": 500})
    snap = dash.snapshot()
    assert (snap["http_requests"], snap["http_errors"], snap["avg_response_time"]) == (0, 0, 0.0)
    dash.update_http_metrics(requests=40, errors=2, avg_response_time=12.5)
    snap = dash.snapshot()
    assert (snap["http_requests"], snap["http_errors"], snap["avg_response_time"]) == (
        40, 2, 12.5)


def test_a_rejected_push_leaves_the_cards_to_the_standard_metrics(dash):
    dash.meter_provider.get_meter("web").create_histogram(
        "http.server.request.duration", unit="s").record(0.25, {"http.response.status_code": 200})
    with pytest.raises(ValueError, match="requests"):
        dash.update_http_metrics(requests=-1, errors=0, avg_response_time=1.0)
    snap = dash.snapshot()
    assert (snap["http_requests"], snap["http_errors"], snap["avg_response_time"]) == (
        1, 0, 250.0)


# -- a real web app, instrumented with opentelemetry-instrumentation-asgi -----------------------


class WebApp:
    def __init__(self, semconv: str) -> None:
        env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": semconv}
        self.proc = subprocess.Popen(
            [sys.executable, str(WEB_APP)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"web app did not start: {self.stderr()}")
        urls = json.loads(line)
        self.dashboard: str = urls["dashboard"]
        self.app: str = urls["app"]

    def request(self, path: str) -> tuple[int, float]:
        """Status and round-trip milliseconds of one GET."""
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(self.app.rstrip("/") + path, timeout=10) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            exc.read()
            status = exc.code
        return status, (time.perf_counter() - started) * 1000

    def stderr(self) -> str:
        self.close()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def web_app(request: pytest.FixtureRequest):
    app = WebApp(request.param)
    yield app
    app.close()
    for stream in (app.proc.stdout, app.proc.stderr):
        if stream is not None:
            stream.close()


def _snapshots_after(app: WebApp, moment: float, count: int) -> list[dict[str, Any]]:
    """The first ``count`` distinct snapshots built after ``moment``."""
    seen: dict[str, dict[str, Any]] = {}

    def enough() -> bool:
        snap = get_json(app.dashboard + "api/metrics")
        if snapshot_time(snap) > moment:
            seen.setdefault(snap["timestamp"], snap)
        return len(seen) >= count

    wait_until(enough, timeout=10, what=f"{count} ticks after the last request")
    return [seen[t] for t in sorted(seen)][:count]


# "": the instrumentation's default, the older http.server.duration (ms); "http": the stable
# http.server.request.duration (s); "http/dup": both, for the same requests.
@pytest.mark.parametrize("web_app", ["", "http", "http/dup"], indirect=True)
def test_an_instrumented_web_app_fills_the_http_cards_within_two_ticks(web_app):
    plan = ["/ok"] * 12 + ["/fail"] * 3 + ["/gone"] * 2 + ["/fail"] * 1
    results = [web_app.request(path) for path in plan]
    done = time.time()
    n, k = len(plan), sum(1 for status, _ in results if status >= 500)
    assert k == 4 and sorted({status for status, _ in results}) == [200, 404, 503]

    # The first tick after the last response may have collected just before it; the
    # second one cannot have.
    second = _snapshots_after(web_app, done, 2)[1]
    assert (second["http_requests"], second["http_errors"]) == (n, k)
    # Each request slept 20 ms in the app; the client's round trip includes the server's time.
    client_mean = statistics.fmean(ms for _, ms in results)
    assert 20.0 <= second["avg_response_time"] <= client_mean + 1.0

    # The dashboard's own requests (these /api/metrics polls, /metrics, the page) never count.
    get_text(web_app.dashboard + "metrics")
    get_text(web_app.dashboard)
    later = _snapshots_after(web_app, time.time(), 2)[1]
    assert (later["http_requests"], later["http_errors"]) == (n, k)
    assert later["avg_response_time"] == second["avg_response_time"]
