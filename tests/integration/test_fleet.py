"""``hyperdash fleet`` over three real Dashboards, a real Prometheus and a real Alertmanager.

Three Dashboards with different workloads serve on three free loopback ports, each behind
a token (``auth_token`` for people and the fleet, ``metrics_token`` for the scraper).
Debian's ``prometheus`` scrapes them every second and evaluates a temp copy of the bundled
``grafana/prometheus/alerts.yml`` in which only every ``for:`` is rewritten to ``0s`` (the
shipped rules wait 1 to 15 minutes before firing), sending to Debian's
``prometheus-alertmanager``. ``hyperdash fleet`` runs as a subprocess against both, with the
instances' token in a file. Every wait polls against a deadline. Alertmanager is started by
``tests/integration/alertmanager.py`` (shared with test_alertmanager.py), Prometheus by
``tests/fleet_parts.py`` (which can also put it behind TLS and basic auth).
"""

from __future__ import annotations

from support import require_binary, free_port
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alertmanager import Alertmanager, immediate_rules, run_alertmanager
from fleet_parts import Process, start_prometheus, wait_for
from hyperdash_process import HyperdashProcess
from websockets.sync.client import connect

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.snapshot import SNAPSHOT_FIELDS

pytestmark = pytest.mark.integration

TOKEN = "instances-token-5f3a9c"  # people's (and the fleet's) token on every instance
SCRAPE_TOKEN = "scraper-token-77e1b2"
SUMMED = ("jobs_active", "jobs_completed", "jobs_failed", "jobs_pending", "queue_length",
          "http_requests", "http_errors", "memory_usage", "goroutines")
WORST = ("cpu_usage", "avg_response_time")

# name -> (update_job_metrics, update_system_metrics, update_http_metrics, health, jobs)
WORKLOADS: dict[str, tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], str,
                           list[tuple[str, str]]]] = {
    "a": ((3, 10, 1, 2, 4), (256, 12.5, 8), (100, 2, 40.0), "healthy",
          [("a-1", "aws"), ("a-2", "aws"), ("shared-1", "aws")]),
    "b": ((1, 5, 0, 0, 1), (512, 30.0, 4), (50, 0, 10.0), "degraded",
          [("b-1", "gcp"), ("shared-1", "gcp")]),
    "c": ((7, 20, 4, 5, 9), (1024, 5.0, 12), (300, 30, 125.5), "unhealthy",
          [("c-1", "azure")]),
}


def fetch(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode("utf-8")


def status_of(url: str) -> tuple[int, Any]:
    try:
        return 200, fetch(url)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@dataclass
class Fleet:
    dashboards: dict[str, Dashboard]
    instances: dict[str, str]  # name -> "127.0.0.1:port"
    prometheus: Process
    alertmanager: Alertmanager
    process: HyperdashProcess

    @property
    def url(self) -> str:
        return self.process.url.rstrip("/")

    def metrics(self) -> dict[str, Any]:
        value: dict[str, Any] = fetch(self.url + "/api/metrics")
        return value

    def instance_metrics(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] = fetch(f"http://{self.instances[name]}/api/metrics", TOKEN)
        return value


def feed(dash: Dashboard, name: str) -> None:
    jobs, system, http, health, records = WORKLOADS[name]
    dash.update_job_metrics(*jobs)
    dash.update_system_metrics(*system)
    dash.update_http_metrics(*http)  # type: ignore[arg-type]
    dash.set_system_health(health)
    for job_id, provider in records:
        dash.add_job(JobInfo(id=job_id, name=f"export-{job_id}", status="running",
                             progress=30, provider=provider, vm_name=f"vm-{job_id}"))
    dash.add_alert("info", f"instance {name} says hello")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("fleet")
    dashboards: dict[str, Dashboard] = {}
    started: list[Any] = []
    parts = ExitStack()  # the Alertmanager, stopped last
    try:
        for name in WORKLOADS:
            dash = Dashboard(Config(port=0, update_interval=0.2, collect_system_metrics=False,
                                    auth_token=TOKEN, metrics_token=SCRAPE_TOKEN))
            dashboards[name] = dash
            feed(dash, name)
            dash.start_in_thread()
        instances = {name: f"127.0.0.1:{d.port}" for name, d in dashboards.items()}
        (tmp / "scrape.token").write_text(SCRAPE_TOKEN + "\n")
        (tmp / "instances.token").write_text(TOKEN + "\n")
        am = parts.enter_context(run_alertmanager(alertmanager_bin, tmp / "am"))
        prom = start_prometheus(
            prometheus_bin, tmp / "prom", list(instances.values()),
            rules=immediate_rules(tmp), alertmanager=am.base,
            scrape_auth_file=tmp / "scrape.token")
        started.append(prom)
        process = HyperdashProcess(
            "fleet", "--prometheus", prom.base, "--alertmanager", am.base, "--port", "0",
            "--interval", "0.25", "--refresh-interval", "0.5",
            "--instances-token-file", str(tmp / "instances.token"), "--log-level", "debug")
        started.append(process)
        yield Fleet(dashboards, instances, prom, am, process)
    finally:
        for part in reversed(started):
            part.close() if isinstance(part, HyperdashProcess) else part.stop()
        for dash in dashboards.values():
            dash.close()
        parts.close()


def all_up(fleet: Fleet) -> dict[str, Any] | None:
    snap = fleet.metrics()
    return snap if snap["fleet"]["instances_up"] == 3 else None


def test_the_fleet_sums_the_three_instances(fleet: Fleet) -> None:
    snap = wait_for("three instances up", lambda: all_up(fleet))
    assert list(snap)[: len(SNAPSHOT_FIELDS)] == list(SNAPSHOT_FIELDS)
    assert list(snap)[-3:] == ["instances", "fleet", "seq"]  # seq: the server's, last
    each = [fleet.instance_metrics(name) for name in WORKLOADS]
    # The workloads are fed before the first scrape and never change: once every instance
    # has been scraped, the sums are exact (the skew is at most one scrape).
    expected = {f: sum(s[f] for s in each) for f in SUMMED}
    expected.update({f: max(s[f] for s in each) for f in WORST})
    providers: dict[str, int] = {}
    for s in each:
        for provider, count in s["provider_stats"].items():
            providers[provider] = providers.get(provider, 0) + count
    got = wait_for("the fleet's figures to match the instances'", lambda: (
        m if {f: m[f] for f in expected} == expected and m["provider_stats"] == providers
        else None) if (m := fleet.metrics()) else None, timeout=10)
    assert {f: got[f] for f in expected} == expected
    assert got["provider_stats"] == {"aws": 3, "azure": 1, "gcp": 2}
    assert got["system_health"] == "unhealthy"  # the worst instance
    assert got["fleet"] == {"prometheus": "ok", "error": None, "alertmanager": "ok",
                            "instances_up": 3, "instances_total": 3}


def test_the_instances_table_lists_the_three(fleet: Fleet) -> None:
    snap = wait_for("three instances up", lambda: all_up(fleet))
    rows = snap["instances"]
    assert [r["instance"] for r in rows] == sorted(fleet.instances.values())
    by_instance = {r["instance"]: r for r in rows}
    for name, (jobs, _, _, health, _) in WORKLOADS.items():
        row = by_instance[fleet.instances[name]]
        assert (row["up"], row["health"], row["active_jobs"], row["queue_length"]) == (
            True, health, jobs[0], jobs[4])
        assert row["failed_5m"] == 0  # the failures were fed before the first scrape
        assert isinstance(row["scrape_age_seconds"], float)
        assert 0 <= row["scrape_age_seconds"] < 3


def test_the_fleet_counts_its_own_viewers(fleet: Fleet) -> None:
    ws_url = fleet.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, open_timeout=5) as ws:
        ws.recv(timeout=5)
        snap = wait_for("the fleet to count one viewer",
                        lambda: (m := fleet.metrics())["active_connections"] == 1 and m)
        assert snap["active_connections"] == 1  # not the instances' viewers (0 each)
    wait_for("the viewer to leave", lambda: fleet.metrics()["active_connections"] == 0)


def test_merged_jobs_come_from_all_three_tagged(fleet: Fleet) -> None:
    def merged() -> list[dict[str, Any]] | None:
        jobs: list[dict[str, Any]] = fetch(fleet.url + "/api/jobs")
        return jobs if len(jobs) == 6 else None

    jobs = wait_for("the jobs of all three instances", merged)
    assert {(j["id"], j["instance"]) for j in jobs} == {
        (job_id, fleet.instances[name])
        for name, w in WORKLOADS.items() for job_id, _ in w[4]}
    starts = [j["start_time"] for j in jobs]
    assert starts == sorted(starts, reverse=True)  # newest first
    recent = fleet.metrics()["recent_jobs"]
    assert {j["instance"] for j in recent} == set(fleet.instances.values())

    a, b = fleet.instances["a"], fleet.instances["b"]
    assert status_of(f"{fleet.url}/api/jobs/c-1")[1]["instance"] == fleet.instances["c"]
    code, body = status_of(f"{fleet.url}/api/jobs/shared-1")
    assert code == 409 and body["status"] == 409 and a in body["error"] and b in body["error"]
    code, body = status_of(f"{fleet.url}/api/jobs/shared-1?instance={b}")
    assert (code, body["instance"], body["provider"]) == (200, b, "gcp")
    assert status_of(f"{fleet.url}/api/jobs/c-1?instance={a}")[0] == 404
    assert status_of(f"{fleet.url}/api/jobs/nope")[0] == 404


def test_an_alert_fired_by_one_instance_is_tagged_with_it(fleet: Fleet) -> None:
    unhealthy = fleet.instances["c"]

    def fired() -> dict[str, Any] | None:
        for alert in fleet.metrics()["alerts"]:
            if alert["source"] == "alertmanager" and "unhealthy" in alert["message"]:
                return alert
        return None

    alert = wait_for("HyperdashSystemUnhealthy from Alertmanager on the fleet", fired)
    assert alert["instance"] == unhealthy
    assert alert["severity"] == "critical"
    assert unhealthy in alert["message"]  # the rule's summary names it
    # The instances' own alerts are there too, each tagged with its instance.
    own = {a["instance"] for a in fleet.metrics()["alerts"] if a["source"] == "instance"}
    assert own == set(fleet.instances.values())


def test_only_the_fleets_alertmanager_alerts_are_shown(fleet: Fleet) -> None:
    """Alertmanager may route other systems' alerts too: the fleet shows those about one of
    its instances, and instance-less ones whose labels match the selector."""
    alerts = [
        {"labels": {"alertname": "OtherSystemDown", "job": "other", "instance": "10.9.9.9:1",
                    "severity": "critical"}, "annotations": {"summary": "another system"}},
        {"labels": {"alertname": "FleetWide", "job": "hyperdash", "severity": "warning"},
         "annotations": {"summary": "a fleet-wide alert"}},
    ]
    request = urllib.request.Request(
        fleet.alertmanager.base + "/api/v2/alerts", data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200

    def shown() -> list[dict[str, Any]] | None:
        got = [a for a in fleet.metrics()["alerts"] if a["source"] == "alertmanager"]
        return got if any(a["message"] == "a fleet-wide alert" for a in got) else None

    got = wait_for("the fleet-wide alert on the fleet page", shown)
    wide = next(a for a in got if a["message"] == "a fleet-wide alert")
    assert (wide["instance"], wide["severity"]) == (None, "warning")
    assert not any(a["message"] == "another system" for a in got)


def test_no_credential_reaches_the_page_the_api_or_the_log(fleet: Fleet) -> None:
    wait_for("three instances up", lambda: all_up(fleet))
    for path in ("/", "/api/metrics", "/api/jobs", "/metrics", "/healthz"):
        text = json.dumps(fetch(fleet.url + path))
        assert TOKEN not in text and SCRAPE_TOKEN not in text, path


def test_a_stopped_instance_shows_down_within_five_seconds(fleet: Fleet) -> None:
    wait_for("three instances up", lambda: all_up(fleet))
    gone = fleet.instances["b"]
    stopped_at = time.monotonic()
    fleet.dashboards["b"].stop()

    def down() -> dict[str, Any] | None:
        snap = fleet.metrics()
        row = next(r for r in snap["instances"] if r["instance"] == gone)
        return snap if not row["up"] else None

    snap = wait_for(f"{gone} to show as down", down, timeout=10)
    elapsed = time.monotonic() - stopped_at
    assert elapsed <= 5.0, f"{gone} showed as down after {elapsed:.1f} s"
    row = next(r for r in snap["instances"] if r["instance"] == gone)
    assert (row["health"], snap["fleet"]["instances_up"], snap["fleet"]["instances_total"]) == (
        "unknown", 2, 3)
    # The page never broke, and its sums now cover the two live instances.
    live = [fleet.instance_metrics(n) for n in ("a", "c")]
    snap = wait_for("the sums of the two live instances", lambda: (
        m if m["jobs_completed"] == sum(s["jobs_completed"] for s in live) else None)
        if (m := fleet.metrics()) else None)
    assert snap["jobs_active"] == sum(s["jobs_active"] for s in live)
    wait_for("b's jobs to leave the merged list", lambda: gone not in {
        j["instance"] for j in fetch(fleet.url + "/api/jobs")})
    assert fleet.process.proc.poll() is None  # the fleet keeps serving


def test_prometheus_down_then_up_then_down(tmp_path: Path) -> None:
    """The fleet starts before Prometheus: the page serves with "unreachable", recovers
    on its own once Prometheus answers, and says so again when it stops; one warning per
    outage, however many ticks it lasts."""
    prometheus_bin = require_binary("prometheus")
    dash = Dashboard(Config(port=0, update_interval=0.2, collect_system_metrics=False))
    dash.update_job_metrics(2, 3, 0, 0, 1)
    dash.start_in_thread()
    port = free_port()
    process = HyperdashProcess(
        "fleet", "--prometheus", f"http://127.0.0.1:{port}", "--port", "0",
        "--interval", "0.2", "--query-timeout", "1")
    prom: Process | None = None
    try:
        url = process.url.rstrip("/")
        snap = fetch(url + "/api/metrics")
        assert snap["fleet"]["prometheus"] == "unreachable"
        assert snap["fleet"]["error"] and "unreachable" in snap["fleet"]["error"]
        assert snap["system_health"] == "unknown" and snap["instances"] == []
        assert "<html" in fetch(url + "/").lower()
        # Several ticks into the outage, still one warning (checked at the end).
        wait_for("a few ticks", lambda: fetch(url + "/healthz")["ticks"] >= 5)

        prom = start_prometheus(prometheus_bin, tmp_path / "prom",
                                [f"127.0.0.1:{dash.port}"], port=port)
        snap = wait_for("the fleet to recover", lambda: (
            m if m["fleet"]["prometheus"] == "ok" and m["fleet"]["instances_up"] == 1
            else None) if (m := fetch(url + "/api/metrics")) else None)
        assert (snap["jobs_active"], snap["system_health"], snap["fleet"]["error"]) == (
            2, "healthy", None)

        prom.stop()
        snap = wait_for("the fleet to see Prometheus gone", lambda: (
            m if m["fleet"]["prometheus"] == "unreachable" else None)
            if (m := fetch(url + "/api/metrics")) else None)
        assert snap["system_health"] == "unknown"
        assert [(r["up"], r["health"]) for r in snap["instances"]] == [(False, "unknown")]
        assert snap["jobs_active"] == 2  # the last good figures
        ticks = fetch(url + "/healthz")["ticks"]
        wait_for("a few ticks into the second outage",
                 lambda: fetch(url + "/healthz")["ticks"] >= ticks + 5)
        code, _ = process.stop()
        assert code == 0
        log = process.stderr()
        assert log.count("Prometheus unreachable") == 2, log
        assert log.count("Prometheus answers again") == 1, log
    finally:
        if prom is not None:
            prom.stop()
        process.close()
        dash.close()
