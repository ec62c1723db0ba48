"""FleetSource over a real Prometheus scraping two real Dashboards and one dead port."""

from __future__ import annotations

from support import require_binary, free_port
import json
import http.server
import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fleet_parts import Process, start_prometheus, wait_for

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.fleet.config import FleetConfig
from hyperdash_otel.fleet.instances import InstanceRecords, merge_jobs
from hyperdash_otel.fleet.prometheus import InstanceFigures
from hyperdash_otel.fleet.source import FleetSource, _fleet_health
from hyperdash_otel.snapshot import SNAPSHOT_FIELDS
from hyperdash_otel.source import AmbiguousJobError


@dataclass
class Setup:
    source: FleetSource
    one: str
    two: str
    dead: str
    prometheus: Process


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    binary = require_binary("prometheus")
    dashes = [Dashboard(Config(port=0, collect_system_metrics=False)) for _ in range(2)]
    prom: Process | None = None
    source: FleetSource | None = None
    try:
        for n, dash in enumerate(dashes):
            dash.update_job_metrics(n + 1, 10, 2, 0, n)
            for k in range(3):
                dash.add_job(JobInfo(id=f"job-{k}", name=f"n{n}-{k}",
                                     status="failed" if k == 2 else "running",
                                     provider="aws" if n else "gcp"))
            dash.start_in_thread()
        one, two = (f"127.0.0.1:{d.port}" for d in dashes)
        dead = f"127.0.0.1:{free_port()}"
        prom = start_prometheus(binary, tmp_path_factory.mktemp("prom"), [one, two, dead])
        source = FleetSource(
            FleetConfig(prometheus=prom.base, refresh_interval=0.3),
            Config(port=0, max_jobs=4))
        wait_for("three targets, two up", lambda: (
            s["fleet"]["instances_total"] == 3 and s["fleet"]["instances_up"] == 2
        ) if (s := source.snapshot()) else None)
        wait_for("the records of both live instances", lambda: len(source.jobs()) == 6)
        yield Setup(source, one, two, dead, prom)
    finally:
        if source is not None:
            source.close()
        if prom is not None:
            prom.stop()
        for dash in dashes:
            dash.close()


def test_the_message_has_the_originals_keys_then_the_fleets(setup: Setup) -> None:
    snap = setup.source.snapshot()
    assert list(snap) == [*SNAPSHOT_FIELDS, "custom", "instances", "fleet"]
    assert (snap["jobs_active"], snap["jobs_completed"], snap["jobs_failed"]) == (3, 20, 4)
    assert snap["provider_stats"] == {"aws": 3, "gcp": 3}
    assert [(r["instance"], r["up"], r["health"]) for r in snap["instances"]] == sorted([
        (setup.one, True, "healthy"), (setup.two, True, "healthy"),
        (setup.dead, False, "unknown")])
    # Both live instances are healthy, one is down: the fleet is degraded.
    assert snap["system_health"] == "degraded"
    assert snap["fleet"] == {"prometheus": "ok", "error": None, "alertmanager": "off",
                             "instances_up": 2, "instances_total": 3}
    assert len(snap["recent_jobs"]) == 4  # Config.max_jobs bounds the page's list


def test_jobs_filter_and_limit(setup: Setup) -> None:
    failed = setup.source.jobs(status="failed")
    assert sorted(j["instance"] for j in failed) == sorted([setup.one, setup.two])
    assert all(j["id"] == "job-2" for j in failed)
    assert len(setup.source.jobs(limit=1)) == 1
    with pytest.raises(ValueError, match="status"):
        setup.source.jobs(status="exploded")
    with pytest.raises(ValueError, match="limit"):
        setup.source.jobs(limit=-1)


def test_one_job_by_id_and_instance(setup: Setup) -> None:
    with pytest.raises(AmbiguousJobError, match="exists on 2 instances"):
        setup.source.job("job-1")
    got = setup.source.job("job-1", instance=setup.two)
    assert got is not None and (got["instance"], got["provider"]) == (setup.two, "aws")
    assert setup.source.job("job-1", instance=setup.dead) is None
    assert setup.source.job("nope") is None
    with pytest.raises(TypeError, match="job_id"):
        setup.source.job(7)  # type: ignore[arg-type]


def test_its_own_metrics_say_how_the_queries_go(setup: Setup) -> None:
    setup.source.snapshot()
    text = setup.source.exposition()[0].decode()
    assert 'hyperdash_fleet_instances{otel_scope_name="hyperdash.fleet"' in text
    lines = {line.split("{")[0] + "{" + line.split('state="')[1].split('"')[0] + "}":
             line.rsplit(" ", 1)[1] for line in text.splitlines()
             if line.startswith("hyperdash_fleet_instances{")}
    assert lines == {"hyperdash_fleet_instances{up}": "2.0",
                     "hyperdash_fleet_instances{down}": "1.0"}
    assert "hyperdash_fleet_query_duration_seconds_count" in text
    assert "hyperdash_websocket_connections" in text
    # Never the instances' series: the fleet is not one more instance to sum.
    assert "hyperdash_jobs_active" not in text


def test_an_unreachable_prometheus_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    source = FleetSource(FleetConfig(prometheus=f"http://127.0.0.1:{free_port()}",
                                     refresh_interval=60), Config(port=0))
    try:
        with caplog.at_level(logging.WARNING, logger="hyperdash_otel.fleet"):
            snaps = [source.snapshot() for _ in range(5)]
        assert {s["fleet"]["prometheus"] for s in snaps} == {"unreachable"}
        assert all(s["system_health"] == "unknown" and s["instances"] == [] for s in snaps)
        assert "is unreachable" in snaps[0]["fleet"]["error"]
        warnings = [r for r in caplog.records if "Prometheus unreachable" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        source.close()
    source.close()  # idempotent


def test_an_unreachable_alertmanager_leaves_the_instances_alerts(
    setup: Setup, caplog: pytest.LogCaptureFixture,
) -> None:
    source = FleetSource(FleetConfig(prometheus=setup.prometheus.base,
                                     alertmanager=f"http://127.0.0.1:{free_port()}",
                                     refresh_interval=60), Config(port=0))
    try:
        with caplog.at_level(logging.WARNING, logger="hyperdash_otel.fleet"):
            source.snapshot()
            source.refresh()
            source.refresh()
            snap = source.snapshot()
        assert snap["fleet"]["alertmanager"] == "unreachable"
        assert snap["fleet"]["prometheus"] == "ok"
        assert len(source.jobs()) == 6  # the instances' records still arrive
        warnings = [r for r in caplog.records if "Alertmanager unreachable" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        source.close()


class _GatedFailingAlertmanager(http.server.BaseHTTPRequestHandler):
    """Answers every request 503, but only once ``GATHER`` requests are in flight at once
    (at most ``DEADLINE`` s): the refreshes' fetches are then sure to overlap."""

    GATHER = 4
    DEADLINE = 10.0
    arrived = 0
    lock = threading.Lock()
    gathered = threading.Event()

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.arrived += 1
            if cls.arrived >= cls.GATHER:
                cls.gathered.set()
        cls.gathered.wait(cls.DEADLINE)
        self.send_error(503)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_refreshes_at_once_log_one_alertmanager_outage(
    setup: Setup, caplog: pytest.LogCaptureFixture,
) -> None:
    # The background refresh and a caller's may overlap: the outage is still one line.
    alertmanager = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedFailingAlertmanager)
    serving = threading.Thread(target=alertmanager.serve_forever, daemon=True)
    serving.start()
    source = FleetSource(FleetConfig(prometheus=setup.prometheus.base,
                                     alertmanager=f"http://127.0.0.1:{alertmanager.server_port}",
                                     refresh_interval=60), Config(port=0))
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            start.wait(timeout=10)
            source.refresh()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    try:
        with caplog.at_level(logging.WARNING, logger="hyperdash_otel.fleet"):
            threads = [threading.Thread(target=refresh) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
        assert not errors and not any(t.is_alive() for t in threads)
        assert source.snapshot()["fleet"]["alertmanager"] == "unreachable"
        warnings = [r for r in caplog.records if "Alertmanager unreachable" in r.getMessage()]
        assert _GatedFailingAlertmanager.gathered.is_set()  # the fetches did overlap
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        source.close()
        alertmanager.shutdown()
        alertmanager.server_close()


def test_max_instances_bounds_the_record_fetches_not_the_sums(setup: Setup) -> None:
    source = FleetSource(FleetConfig(prometheus=setup.prometheus.base, max_instances=1,
                                     refresh_interval=60), Config(port=0))
    try:
        source.refresh()
        snap = source.snapshot()
        assert {j["instance"] for j in source.jobs()} == {min(setup.one, setup.two)}
        assert (snap["jobs_active"], snap["fleet"]["instances_up"]) == (3, 2)
    finally:
        source.close()


def test_a_single_dashboard_ignores_the_instance_parameter() -> None:
    dash = Dashboard(Config(port=0, collect_system_metrics=False))
    dash.add_job(JobInfo(id="j1", name="n", status="running", provider="aws"))
    try:
        dash.start_in_thread()
        base = f"http://127.0.0.1:{dash.port}/api/jobs/j1"
        for url in (base, base + "?instance=anything:1"):
            with urllib.request.urlopen(url, timeout=5) as response:
                assert json.load(response)["id"] == "j1"
    finally:
        dash.close()


def fig(instance: str, up: bool, health: str = "healthy") -> InstanceFigures:
    return InstanceFigures(instance, up=up, health=health if up else "unknown")


@pytest.mark.parametrize(("figures", "ok", "health"), [
    ([fig("a", True), fig("b", True)], True, "healthy"),
    ([fig("a", True), fig("b", True, "unhealthy")], True, "unhealthy"),
    ([fig("a", True), fig("b", False)], True, "degraded"),
    ([fig("a", True, "unhealthy"), fig("b", False)], True, "unhealthy"),
    ([fig("a", False)], True, "unknown"),
    ([fig("a", True), fig("b", True, "unknown")], True, "healthy"),  # b exports no health
    ([], True, "unknown"),
    ([fig("a", True)], False, "unknown"),
])
def test_fleet_health_is_the_worst_instance(
    figures: list[InstanceFigures], ok: bool, health: str
) -> None:
    assert _fleet_health(figures, ok) == health


def job(job_id: str, start: str | None) -> dict[str, Any]:
    return {"id": job_id, "start_time": start}


def test_merged_jobs_are_newest_first_pending_first_and_interleaved() -> None:
    a = InstanceRecords("a", jobs=[job("p1", None), job("p2", None),
                                   job("r1", "2026-01-01T10:00:02.000Z")])
    b = InstanceRecords("b", jobs=[job("q1", None), job("r2", "2026-01-01T10:00:03.000Z"),
                                   job("r3", "2026-01-01T10:00:01.000Z")])
    merged = merge_jobs([b, a], limit=10)
    assert [(j["id"], j["instance"]) for j in merged] == [
        ("p1", "a"), ("q1", "b"), ("p2", "a"), ("r2", "b"), ("r1", "a"), ("r3", "b")]
    assert [j["id"] for j in merge_jobs([a, b], limit=2)] == ["p1", "q1"]


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"prometheus": "http://u:p@h:9090"}, "prometheus must not carry credentials"),
    ({"prometheus": "http://h:9090", "alertmanager": "nope"}, "alertmanager must be an http"),
    ({"prometheus": "http://h:9090", "selector": "up"}, "selector must be a label selector"),
    ({"prometheus": "http://h:9090", "max_concurrency": 0}, "max_concurrency must be between"),
    ({"prometheus": "http://h:9090", "instance_timeout": 0}, "instance_timeout must be > 0"),
    ({"prometheus": "http://h:9090", "query_timeout": float("nan")}, "query_timeout"),
    ({"prometheus": "http://h:9090", "refresh_interval": -1}, "refresh_interval"),
])
def test_bad_fleet_settings_name_the_field(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        FleetConfig(**kwargs)


def test_a_fleet_config_is_typed() -> None:
    with pytest.raises(TypeError, match="max_concurrency must be an int"):
        FleetConfig(prometheus="http://h:9090", max_concurrency=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fleet must be a FleetConfig"):
        FleetSource("http://h:9090")  # type: ignore[arg-type]
