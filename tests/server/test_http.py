"""The HTTP endpoints over a real socket: payloads, errors, headers, negotiation, auth."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hyperdash_otel import JobInfo
from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.security import CONTENT_SECURITY_POLICY

TOKEN = "correct-horse-battery"

ENDPOINTS = ["/", "/api/metrics", "/api/jobs", "/metrics", "/healthz", "/static/js/main.js"]


def assert_json_error(resp: Any, status: int, fragment: str = "") -> None:
    assert resp.status == status
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["status"] == status and fragment in body["error"], body
    assert set(body) == {"error", "status"}


@pytest.mark.parametrize("path", ENDPOINTS + ["/nope", "/api/jobs/missing"])
def test_every_response_carries_the_security_headers(serve: Callable[..., Any], path: str
                                                     ) -> None:
    resp = serve().request(path)
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "Server" not in resp.headers


def test_api_metrics_is_the_last_tick_byte_for_byte(serve: Callable[..., Any], wait: Any
                                                    ) -> None:
    s = serve(update_interval=5.0)  # one tick, then quiet for the test's length
    wait(lambda: s.ctx.fanout.latest is not None)
    s.dash.update_job_metrics(active=7, completed=3, failed=1, pending=0, queue_len=0)
    resp = s.request("/api/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.body == s.ctx.fanout.latest.payload
    assert resp.json()["jobs_active"] == 0  # the update lands with the next tick, not now


def test_api_metrics_answers_before_the_first_tick(serve: Callable[..., Any]) -> None:
    s = serve()
    s.ctx.fanout.latest = None  # as if the first tick had not finished yet
    s.dash.update_job_metrics(active=2, completed=0, failed=0, pending=0, queue_len=0)
    body = s.request("/api/metrics").json()
    assert body["jobs_active"] in (0, 2)  # a tick may land in between; either is a snapshot
    assert "timestamp" in body


def add_jobs(dash: Any) -> None:
    dash.add_job(JobInfo(id="j1", name="export web-01", status="completed", provider="aws"))
    dash.add_job(JobInfo(id="j2", name="export db-01", status="failed", provider="gcp",
                         error_msg="disk full"))
    dash.add_job(JobInfo(id="j 3/x", name="export cache", status="running", progress=40,
                         provider="azure"))


def test_jobs_newest_first_with_filters(serve: Callable[..., Any]) -> None:
    s = serve()
    add_jobs(s.dash)
    assert [j["id"] for j in s.request("/api/jobs").json()] == ["j 3/x", "j2", "j1"]
    assert [j["id"] for j in s.request("/api/jobs?status=failed").json()] == ["j2"]
    assert [j["id"] for j in s.request("/api/jobs?limit=2").json()] == ["j 3/x", "j2"]
    assert s.request("/api/jobs?status=failed&limit=0").json() == []
    assert s.request("/api/jobs?status=").status == 200  # empty means no filter


def test_one_job_by_id(serve: Callable[..., Any]) -> None:
    s = serve()
    add_jobs(s.dash)
    job = s.request("/api/jobs/j2").json()
    assert (job["id"], job["status"], job["error_msg"]) == ("j2", "failed", "disk full")
    assert s.request("/api/jobs/j%203%2Fx").json()["id"] == "j 3/x"  # ids are URL-decoded
    assert s.request("/api/jobs/j2").json() == s.dash.job("j2")


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/jobs?limit=ten", 400, "limit must be an integer"),
        ("/api/jobs?limit=-1", 400, "limit"),
        ("/api/jobs?status=exploded", 400, "status"),
        ("/api/jobs/nobody", 404, "no job with id 'nobody'"),
        ("/api/nothing", 404, "no such endpoint"),
        ("/nothing", 404, "no such endpoint"),
        ("/static/", 404, ""),
        ("/static/js", 404, ""),
        ("/static/missing.js", 404, ""),
        ("/static/../pyproject.toml", 403, ""),
        ("/ws", 400, "WebSocket"),
    ],
)
def test_errors_are_json(serve: Callable[..., Any], path: str, status: int, fragment: str
                         ) -> None:
    assert_json_error(serve().request(path), status, fragment)


@pytest.mark.parametrize(
    ("path", "status", "fragment", "length"),
    [(f"/api/jobs/{'x' * 20_000}", 404, "no job with id 'xxxx", 20_000),
     (f"/api/jobs?limit={'9' * 20_000}x", 400, "limit must be an integer, got '9999", 20_001),
     (f"/api/jobs/j1?instance={'i' * 20_000}", 404, "on instance 'iiii", 20_000),
     (f"/api/{'n' * 20_000}", 404, "no such endpoint: /api/nnnn", 20_005)])
def test_errors_quote_a_long_value_cut_short(serve: Callable[..., Any], path: str, status: int,
                                             fragment: str, length: int) -> None:
    """A 20,000-character id, limit, instance or path is named in the error, cut short."""
    resp = serve().request(path)
    assert_json_error(resp, status, fragment)
    message = resp.json()["error"]
    assert f"...({length} characters)" in message and len(message) < 200, message


@pytest.mark.parametrize(
    ("headers", "status", "fragment"),
    [
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
         400, "Sec-WebSocket-Key"),
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "a2V5a2V5a2V5",
          "Sec-WebSocket-Version": "8"}, 426, "version 13"),
    ],
)
def test_bad_upgrades_are_json_errors(serve: Callable[..., Any], headers: dict[str, str],
                                      status: int, fragment: str) -> None:
    s = serve()
    resp = s.request("/ws", headers=headers)
    assert_json_error(resp, status, fragment)
    assert s.ctx.fanout.reserved == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/api/metrics", "/api/jobs", "/api/jobs/j1", "/metrics",
                                  "/healthz", "/static/js/main.js", "/ws"])
def test_only_get_and_head(serve: Callable[..., Any], method: str, path: str) -> None:
    resp = serve().request(path, method=method)
    assert_json_error(resp, 405)
    assert resp.headers["Allow"] in ("GET, HEAD", "GET")


def test_unknown_paths_are_404_whatever_the_method(serve: Callable[..., Any]) -> None:
    assert_json_error(serve().request("/nope", method="POST"), 404)


def test_an_unexpected_exception_is_a_json_500_without_traceback(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    s = serve()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(s.dash, "jobs", broken)
    with caplog.at_level(logging.ERROR):
        resp = s.request("/api/jobs")
    assert_json_error(resp, 500, "internal server error")
    assert b"secret internals" not in resp.body and b"Traceback" not in resp.body


@pytest.mark.parametrize("path", ENDPOINTS + ["/api/jobs/j1", "/static/vendor/chart.umd.js"])
def test_head_is_get_without_a_body(serve: Callable[..., Any], path: str) -> None:
    s = serve()
    s.dash.add_job(JobInfo(id="j1", name="n"))
    get, head = s.request(path), s.request(path, method="HEAD")
    assert (get.status, head.status, head.body) == (200, 200, b"")
    assert head.headers["Content-Type"] == get.headers["Content-Type"]


def test_prometheus_text_by_default(serve: Callable[..., Any]) -> None:
    s = serve()
    s.dash.update_job_metrics(active=5, completed=9, failed=2, pending=1, queue_len=1)
    resp = s.request("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.body.decode()
    assert "\nhyperdash_jobs_completed_total{" in text and "# EOF" not in text
    assert resp.headers["Vary"] == "Accept, Accept-Encoding"


def test_openmetrics_when_asked(serve: Callable[..., Any]) -> None:
    resp = serve().request(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert resp.body.decode().endswith("# EOF\n")


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [("application/openmetrics-text; version=1.0.0", True), ("text/plain", False)],
)
def test_metrics_gzip_when_accepted(serve: Callable[..., Any], accept: str, openmetrics: bool
                                   ) -> None:
    s = serve()
    plain = s.request("/metrics", headers={"Accept": accept})
    zipped = s.request("/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    unzipped = gzip.decompress(zipped.body).decode()
    assert unzipped.endswith("# EOF\n") is openmetrics
    assert unzipped.splitlines()[0] == plain.body.decode().splitlines()[0]
    assert zipped.headers["Vary"] == plain.headers["Vary"] == "Accept, Accept-Encoding"


def test_api_json_is_gzipped_too(serve: Callable[..., Any]) -> None:
    s = serve()
    for i in range(30):
        s.dash.add_job(JobInfo(id=f"job-{i}", name="export " * 20))
    resp = s.request("/api/jobs", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(resp.body))) == 30


def test_healthz(serve: Callable[..., Any], wait: Any) -> None:
    s = serve(max_clients=7)
    wait(lambda: s.ctx.ticker.ticks >= 1)
    body = s.request("/healthz").json()
    assert body["status"] == "ok"
    assert body["clients"] == 0 and body["max_clients"] == 7
    assert body["uptime_seconds"] >= 0 and body["ticks"] >= 1 and body["tick_errors"] == 0
    assert body["last_tick"].endswith("Z") and 0 <= body["last_tick_age_seconds"] < 5


def test_the_page_and_its_files(serve: Callable[..., Any]) -> None:
    s = serve()
    page = s.request("/")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.body.startswith(b"<!doctype html>")
    js = s.request("/static/js/main.js")
    assert js.status == 200 and "javascript" in js.headers["Content-Type"]
    chart = s.request("/static/vendor/chart.umd.js")
    assert chart.status == 200 and b"Chart" in chart.body[:2000]
    assert s.request("/static/vendor/chart.js").status == 404  # only the one file


def test_assets_prefer_the_package_copy(tmp_path: Path) -> None:
    package, checkout = tmp_path / "pkg" / "web", tmp_path / "repo" / "web"
    checkout.mkdir(parents=True)
    found = Assets.locate(package, checkout)
    assert found.chart_js == checkout / "node_modules" / "chart.js" / "dist" / "chart.umd.js"
    assert found.page == checkout / "templates" / "index.html"
    package.mkdir(parents=True)
    found = Assets.locate(package, checkout)
    assert (found.static, found.chart_js) == (package / "static",
                                              package / "static" / "vendor" / "chart.umd.js")


def test_a_placeholder_page_when_the_page_is_missing(serve: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    s = serve()
    s.ctx.page_path = tmp_path / "absent.html"
    resp = s.request("/")
    assert resp.status == 200 and b"api/metrics" in resp.body


class TestAuth:
    @pytest.mark.parametrize("path", ["/", "/api/metrics", "/api/jobs", "/api/jobs/x",
                                      "/metrics", "/nope"])
    def test_everything_needs_the_token(self, serve: Callable[..., Any], path: str) -> None:
        s = serve(auth_token=TOKEN)
        resp = s.request(path)
        assert_json_error(resp, 401, "token")
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="hyperdash"'
        assert_json_error(s.request(path, headers={"Authorization": "Bearer wrong-token"}), 401)
        assert_json_error(s.request(path + "?token=wrong-token"), 401)

    @pytest.mark.parametrize("path", ["/", "/api/metrics", "/api/jobs", "/metrics"])
    def test_bearer_or_query_token(self, serve: Callable[..., Any], path: str) -> None:
        s = serve(auth_token=TOKEN)
        assert s.request(path, headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert s.request(f"{path}?token={TOKEN}").status == 200

    def test_healthz_and_static_files_are_open(self, serve: Callable[..., Any]) -> None:
        s = serve(auth_token=TOKEN)
        assert s.request("/healthz").status == 200
        assert s.request("/static/js/main.js").status == 200

    def test_the_token_never_reaches_the_access_log(self, serve: Callable[..., Any],
                                                    caplog: pytest.LogCaptureFixture) -> None:
        s = serve(auth_token=TOKEN)
        with caplog.at_level(logging.INFO, logger="hyperdash_otel.access"):
            s.request(f"/api/jobs?token={TOKEN}")
            s.request("/api/jobs?token=guess-guess")
        assert "/api/jobs?token=<redacted>" in caplog.text
        assert TOKEN not in caplog.text and "guess-guess" not in caplog.text
