"""OTLP/HTTP export configured by the standard OTEL_* variables alone, into a receiver that
decodes what a Collector would get."""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from otel_helpers import OtlpReceiver, Point, get_json, snapshot_time, wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.telemetry import BY_FIELD, METRICS, MetricSpec

RESOURCE = {"service.name": "vm-exporter", "deployment.environment": "test", "team": "ops"}
KIND = {"counter": ("sum", True), "up_down_counter": ("sum", False), "gauge": ("gauge", None),
        "histogram": ("histogram", None)}


def otel_env(receiver: OtlpReceiver, **more: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "100",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "1",
        "OTEL_SERVICE_NAME": "vm-exporter",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=ops",
        **more,
    }


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.hold.set()
    r.stop()


@pytest.fixture
def otlp_dash(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dashboard]:
    for key, value in otel_env(receiver).items():
        monkeypatch.setenv(key, value)
    dash = Dashboard(Config(port=0, update_interval=0.1, collect_system_metrics=False))
    yield dash
    dash.close()


# A plain connect() call warns from websockets 17.1 on unless it says legacy=True; the
# versions before (all that Python 3.10 gets) have no such argument.
PLAIN_CONNECT: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {})


def ws(port: int, **kwargs: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}/ws", proxy=None, compression=None, open_timeout=10,
                   close_timeout=2, **PLAIN_CONNECT, **kwargs)


def reject_one(port: int) -> None:
    """A WebSocket upgrade from a foreign origin: refused and counted."""
    with pytest.raises(InvalidStatus):
        ws(port, origin="http://evil.test")


def _kind_and_unit(points: list[Point], spec: MetricSpec) -> None:
    kind, monotonic = KIND[spec.kind]
    for p in points:
        assert (p.kind, p.unit) == (kind, spec.unit), (spec.name, p)
        if monotonic is not None:
            assert p.monotonic is monotonic, (spec.name, p)


def matches_snapshot(receiver: OtlpReceiver, snap: dict[str, Any]) -> list[str]:
    """What the receiver gets differently from the snapshot (empty: every field agrees)."""
    wrong = []
    for field, spec in BY_FIELD.items():
        points = receiver.metric(spec.name)
        if not points:
            wrong.append(f"{spec.name}: missing")
            continue
        _kind_and_unit(points, spec)
        if field == "provider_stats":
            got: Any = {p.attributes["provider"]: round(p.value) for p in points}
        elif field == "system_health":
            got = {p.attributes["status"]: p.value for p in points}
            want = {s: 1 if s == snap[field] else 0 for s in ("healthy", "degraded", "unhealthy")}
            if got != want:
                wrong.append(f"{field}: {got} != {want}")
            continue
        else:
            value = sum(p.value for p in points) * spec.to_snapshot
            got = round(value, 3) if isinstance(snap[field], float) else round(value)
        if got != snap[field]:
            wrong.append(f"{field}: {got} != {snap[field]}")
    return wrong


def every_metric_arrived(receiver: OtlpReceiver) -> list[str]:
    missing = []
    for spec in METRICS:
        points = receiver.metric(spec.name)
        if not points:
            missing.append(spec.name)
        else:
            _kind_and_unit(points, spec)
    return missing


def test_every_documented_metric_reaches_the_collector_with_values_and_resource(
    otlp_dash: Dashboard, receiver: OtlpReceiver
):
    dash = otlp_dash
    dash.start_in_thread()
    assert dash.port is not None
    dash.update_job_metrics(active=5, completed=123, failed=2, pending=8, queue_len=15)
    dash.update_system_metrics(memory_mb=2048, cpu_percent=45.25, goroutines=12)
    dash.update_http_metrics(requests=45678, errors=23, avg_response_time=125.5)
    for i, provider in enumerate(("aws", "aws", "gcp")):
        dash.add_job(JobInfo(id=f"job-{i}", status="running", provider=provider))
    dash.add_alert("critical", "disk almost full")
    dash.add_alert("warning", "slow export")
    dash.add_alert("warning", "slower export")
    dash.set_system_health("degraded")
    client = ws(dash.port)
    client.recv(timeout=5)
    reject_one(dash.port)

    snap = dash.snapshot()
    assert snap["active_connections"] == 1 and snap["provider_stats"] == {"aws": 2, "gcp": 1}
    wait_until(lambda: not matches_snapshot(receiver, snap), what="the snapshot's values")
    wait_until(lambda: receiver.value("hyperdash.websocket.rejected", reason="origin") == 1,
               what="the refused upgrade")
    assert {(p.attributes["severity"], p.value)
            for p in receiver.metric("hyperdash.alerts.raised")} == {
        ("critical", 1), ("warning", 2), ("info", 0)}
    wait_until(lambda: any(p.count for p in receiver.metric("hyperdash.tick.duration")),
               what="a tick's duration")

    # Stopping closes the client ("shutdown"), and the last export carries it.
    dash.close()
    client.close()
    assert every_metric_arrived(receiver) == []
    assert receiver.value("hyperdash.websocket.disconnects", reason="shutdown") == 1
    assert receiver.scopes == {"hyperdash"}
    assert {k: receiver.resource.get(k) for k in RESOURCE} == RESOURCE


def test_the_resource_shows_on_metrics_as_target_info(otlp_dash: Dashboard):
    target = [line for line in otlp_dash.metrics_text().splitlines()
              if line.startswith("target_info{")]
    assert len(target) == 1
    for label in ('service_name="vm-exporter"', 'deployment_environment="test"', 'team="ops"'):
        assert label in target[0]
    # ... and stays out of the snapshot's custom series.
    assert "target_info" not in otlp_dash.snapshot()["custom"]


def test_a_collector_that_is_down_is_logged_once_and_never_stops_the_ticks(
    otlp_dash: Dashboard, receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    dash = otlp_dash
    dash.start_in_thread()
    exporter = dash.telemetry.otlp_exporter
    assert exporter is not None
    wait_until(lambda: receiver.requests >= 1, what="a first export")
    receiver.stop()
    started = exporter.failures
    seen: set[str] = set()

    def ticking_while_failing() -> bool:
        seen.add(get_json(dash.url + "api/metrics")["timestamp"])
        return exporter.failures - started >= 4 and len(seen) >= 5

    wait_until(ticking_while_failing, timeout=30, what="failed exports while ticking")
    warnings = [r for r in caplog.records
                if r.levelno >= logging.WARNING and "OTLP" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert receiver.endpoint in warnings[0].getMessage()
    assert "at most once every 60 s" in warnings[0].getMessage()
    # None of the exporter's own per-failure records got through.
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


def test_a_slow_collector_never_delays_a_tick(otlp_dash: Dashboard, receiver: OtlpReceiver):
    dash = otlp_dash
    dash.start_in_thread()
    wait_until(lambda: receiver.requests >= 1, what="a first export")
    receiver.hold.clear()  # the receiver now keeps every export waiting
    wait_until(lambda: receiver.held >= 1, what="an export held by the receiver")
    held_since = time.time()
    seen: set[str] = set()

    def ticks() -> bool:
        snap = get_json(dash.url + "api/metrics")
        if snapshot_time(snap) > held_since:
            seen.add(snap["timestamp"])
        return len(seen) >= 5

    wait_until(ticks, what="five ticks while an export hangs")
    assert receiver.held == 1  # the one export, still waiting: none queued behind it
    receiver.hold.set()


def test_the_demo_feeds_a_collector_from_the_same_variables(spawn, receiver: OtlpReceiver):
    # An almost frozen simulation (0.001 simulated seconds per second after 15 minutes of
    # warm-up), so the page and the Collector can be compared value by value.
    env = otel_env(receiver, HYPERDASH_COLLECT_SYSTEM_METRICS="false")
    demo = spawn("demo", "--port", "0", "--interval", "0.1", "--seed", "7", "--speed", "0.001",
                 "--warmup", "900", env=env)
    port = int(demo.url.rstrip("/").rsplit(":", 1)[1])
    client = ws(port)
    client.recv(timeout=5)
    reject_one(port)

    def agrees() -> bool:
        return not matches_snapshot(receiver, demo.get("api/metrics"))

    wait_until(agrees, timeout=20, what="the Collector to match the demo's page")
    snap = demo.get("api/metrics")
    assert snap["jobs_completed"] > 0 and snap["provider_stats"]
    wait_until(lambda: receiver.value("hyperdash.websocket.rejected", reason="origin") == 1,
               what="the refused upgrade")
    code, _ = demo.stop(signal.SIGINT)
    client.close()
    assert code == 0
    assert every_metric_arrived(receiver) == []
    assert receiver.value("hyperdash.websocket.disconnects", reason="shutdown") == 1
    assert {k: receiver.resource.get(k) for k in RESOURCE} == RESOURCE
    assert "OTLP" not in demo.stderr()


def test_serve_rejects_a_protocol_it_cannot_speak(spawn, receiver: OtlpReceiver):
    proc = spawn("serve", "--port", "0",
                 env=otel_env(receiver, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"))
    assert proc.proc.wait(15) == 2
    err = proc.stderr()
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in err and "http/protobuf" in err
    assert len(err.strip().splitlines()) == 1


def test_without_the_otlp_extra_one_line_says_how_to_install_it(receiver: OtlpReceiver):
    # The exporter package is installed here; a module that cannot be imported stands for a
    # machine without the extra.
    script = ("import sys\n"
              "sys.modules['opentelemetry.exporter.otlp.proto.http.metric_exporter'] = None\n"
              "from hyperdash_otel.cli import main\n"
              "sys.exit(main(['serve', '--port', '0']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **otel_env(receiver)})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert get_json(url + "api/metrics")["system_health"] == "healthy"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    lines = [line for line in err.splitlines() if "hyperdash-otel[otlp]" in line]
    assert len(lines) == 1 and "pip install 'hyperdash-otel[otlp]'" in lines[0]
    assert receiver.requests == 0


def test_a_process_that_ends_without_close_still_sends_its_last_figures(receiver: OtlpReceiver):
    script = ("from hyperdash_otel import Config, Dashboard\n"
              "dash = Dashboard(Config(port=0, collect_system_metrics=False))\n"
              "dash.update_job_metrics(active=1, completed=42, failed=0, pending=0, "
              "queue_len=0)\n")
    # An hour between exports: only the one at exit can carry the figures.
    env = {**os.environ, **otel_env(receiver, OTEL_METRIC_EXPORT_INTERVAL="3600000")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert receiver.value("hyperdash.jobs.completed") == 42
