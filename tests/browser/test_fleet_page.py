"""The fleet's page in Chromium: the instances table, the Prometheus/Alertmanager status, the
instance column of the jobs table and the alerts' source tags (FLEET.md's message keys).

A :class:`FleetShaped` source, served by a real :class:`Runner`, sends a real Dashboard's
snapshot with the fleet's extra keys, which the test sets; it stands for the page's side of
the contract. At the end of this file, the same page end to end: three served Dashboards,
a real Prometheus scraping them every second and ``hyperdash fleet`` over it, checked as the
single-instance page is (no console errors or CSP violations, cards, charts, markup as
text, 375 px, reconnect) plus the instances table.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from fleet_parts import start_prometheus, wait_for
from hyperdash_process import HyperdashProcess
from support import free_port

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.config import Config as ConfigType
from hyperdash_otel.server.runner import Runner
from hyperdash_otel.source import ServerInstruments

pytestmark = pytest.mark.browser

PAYLOAD = "<img src=x onerror=window.__xss=1>"
TICK = 0.2  # as the conftest dashboards tick
A, B, C = "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"


def instance(name: str, *, up: bool = True, health: str = "healthy", active: int = 1,
             queue: int = 0, failed: int = 0, age: float | None = 0.4) -> dict[str, Any]:
    return {"instance": name, "up": up, "health": health if up else "unknown",
            "active_jobs": active, "queue_length": queue, "failed_5m": failed,
            "scrape_age_seconds": age}


def fleet_status(prometheus: str = "ok", alertmanager: str = "ok", error: str | None = None,
                 up: int = 3, total: int = 3) -> dict[str, Any]:
    return {"prometheus": prometheus, "error": error, "alertmanager": alertmanager,
            "instances_up": up, "instances_total": total}


class FleetShaped:
    """A :class:`~hyperdash_otel.source.Source`: ``dash``'s snapshot plus the fleet's keys.

    Jobs are tagged with ``job_instances[id]`` (default ``A``) and ``extra_jobs`` (already
    tagged, as other instances' jobs) follow them; alerts get ``source``/``instance`` from
    ``alert_tags[message]`` (default: from Alertmanager, no instance). ``instances`` and
    ``fleet`` are sent as set; None leaves the key out.
    """

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self.lock = threading.Lock()
        self.instances: list[dict[str, Any]] | None = []
        self.fleet: dict[str, Any] | None = fleet_status()
        self.job_instances: dict[str, str] = {}
        self.extra_jobs: list[dict[str, Any]] = []
        self.alert_tags: dict[str, tuple[str, str | None]] = {}

    @property
    def config(self) -> ConfigType:
        return self.dash.config

    @property
    def server_instruments(self) -> ServerInstruments:
        return self.dash.server_instruments

    def set(self, **values: Any) -> None:
        with self.lock:
            for key, value in values.items():
                setattr(self, key, copy.deepcopy(value))

    def snapshot(self) -> dict[str, Any]:
        snap = self.dash.snapshot()
        with self.lock:
            snap["recent_jobs"] = [
                {**job, "instance": self.job_instances.get(job["id"], A)}
                for job in snap["recent_jobs"]
            ] + copy.deepcopy(self.extra_jobs)
            alerts = []
            for alert in snap["alerts"]:
                source, where = self.alert_tags.get(alert["message"], ("alertmanager", None))
                alerts.append({**alert, "source": source, "instance": where})
            snap["alerts"] = alerts
            if self.instances is not None:
                snap["instances"] = copy.deepcopy(self.instances)
            if self.fleet is not None:
                snap["fleet"] = copy.deepcopy(self.fleet)
        return snap

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.dash.jobs(status, limit)

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.dash.job(job_id)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        return self.dash.exposition(accept)


@pytest.fixture
def shaped() -> Iterator[tuple[FleetShaped, Runner]]:
    """A FleetShaped source over a fresh Dashboard, served on any free port."""
    dash = Dashboard(Config(port=0, update_interval=TICK, collect_system_metrics=False))
    source = FleetShaped(dash)
    runner = Runner(source)
    runner.start_in_thread()
    try:
        yield source, runner
    finally:
        runner.stop()
        dash.close()


@pytest.fixture
def fleet_ui(shaped, page, make_ui):
    """The page of the FleetShaped source (DashboardPage needs only a ``port``)."""
    return make_ui(page, shaped[1])


def row_texts(ui: Any) -> list[list[str]]:
    return ui.page.evaluate(
        """() => [...document.querySelectorAll("#instances-body tr")].map(
             (tr) => [...tr.cells].map((td) => td.textContent))"""
    )


def wait_page(ui: Any, predicate: str, arg: Any = None) -> None:
    ui.page.wait_for_function(predicate, arg=arg)  # the context's deadline (conftest)


# -- the single-instance page is unchanged ----------------------------------------------------


def test_single_instance_page_shows_no_fleet_parts(ui, dash, browser_log):
    dash.add_job(JobInfo(id="job-1", name="export-1", status="running", progress=10,
                         provider="aws", vm_name="vm-1"))
    dash.add_alert("warning", "queue growing")
    ui.open()
    ui.wait_ticks(2)
    assert ui.page.is_hidden("#instances")
    assert ui.page.is_hidden("#fleet-status")
    assert ui.page.get_attribute("#jobs-table", "data-instances") == "false"
    assert ui.page.is_hidden("#jobs-table thead .col-instance")
    assert ui.page.is_hidden("#jobs-body .col-instance")
    assert ui.page.is_hidden(".alert .alert-source")
    assert ui.page.text_content(".alert .alert-message") == "queue growing"
    assert browser_log.unexpected_console_errors() == []


# -- the instances table ----------------------------------------------------------------------


def test_instances_table_lists_each_instance_and_follows_changes(shaped, fleet_ui, browser_log):
    source, _ = shaped
    source.set(instances=[
        instance(A, active=3, queue=1, failed=0, age=0.7),
        instance(B, health="degraded", active=12, queue=40, failed=2, age=1.25),
        instance(C, health="unhealthy", active=0, queue=0, failed=9, age=42),
    ])
    fleet_ui.open()
    wait_page(fleet_ui, "() => document.querySelectorAll('#instances-body tr').length === 3")
    assert fleet_ui.page.is_visible("#instances")
    assert row_texts(fleet_ui) == [
        [A, "up", "healthy", "3", "1", "0", "0.7 s ago"],
        [B, "up", "degraded", "12", "40", "2", "1.3 s ago"],
        [C, "up", "unhealthy", "0", "0", "9", "42 s ago"],
    ]
    assert fleet_ui.page.text_content("#instances-count") == "3 of 3 up"

    # One stops answering: its row says down (health unknown, no scrape age), in place.
    first_row = fleet_ui.page.locator('#instances-body tr[data-instance="127.0.0.1:8082"]')
    first_row.evaluate("(tr) => { tr.dataset.marker = 'same-element'; }")
    source.set(instances=[instance(A), instance(B, up=False, age=None), instance(C)],
               fleet=fleet_status(up=2))
    wait_page(fleet_ui, "() => document.getElementById('instances-count').dataset.up === '2'")
    assert fleet_ui.page.text_content("#instances-count") == "2 of 3 up"
    down = row_texts(fleet_ui)[1]
    assert down == [B, "down", "unknown", "1", "0", "0", "\u2014"]
    assert first_row.get_attribute("data-up") == "false"
    assert first_row.get_attribute("data-marker") == "same-element"  # updated, not rebuilt

    # An instance that leaves the fleet leaves the table.
    source.set(instances=[instance(A), instance(C)])
    wait_page(fleet_ui, "() => document.querySelectorAll('#instances-body tr').length === 2")
    assert [r[0] for r in row_texts(fleet_ui)] == [A, C]
    assert browser_log.unexpected_console_errors() == []


def test_empty_instance_list_shows_a_note(shaped, fleet_ui):
    source, _ = shaped
    source.set(instances=[])
    fleet_ui.open()
    fleet_ui.wait_ticks(1)
    assert fleet_ui.page.is_visible("#instances")
    assert fleet_ui.page.is_visible("#instances-empty")
    assert fleet_ui.page.text_content("#instances-count") == "0 of 0 up"


def test_bad_instance_entries_do_not_break_the_page(shaped, fleet_ui, browser_log):
    """Odd values fall back to safe ones (the server is trusted, but a proxy may not be)."""
    source, _ = shaped
    source.set(instances=[
        None, "junk", {"up": True},
        {"instance": A, "up": "yes", "health": "on fire", "active_jobs": "many",
         "queue_length": -4, "failed_5m": None, "scrape_age_seconds": "soon"},
        instance(A),  # a duplicate is shown once
    ])
    fleet_ui.open()
    fleet_ui.wait_ticks(1)
    assert row_texts(fleet_ui) == [[A, "down", "unknown", "0", "0", "0", "\u2014"]]
    assert fleet_ui.card("jobs-active") == "0"  # the rest of the page still renders
    assert browser_log.unexpected_console_errors() == []


def test_instances_table_is_bounded(shaped, fleet_ui):
    source, _ = shaped
    source.set(instances=[instance(f"10.0.{n // 256}.{n % 256}:8080", up=n % 2 == 0)
                          for n in range(600)])
    fleet_ui.open()
    wait_page(fleet_ui, "() => document.querySelectorAll('#instances-body tr').length === 500")
    assert fleet_ui.page.text_content("#instances-count") == "300 of 600 up, 100 not shown"


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.04, "0.0 s ago"), (0.7, "0.7 s ago"), (12.4, "12 s ago"), (75, "1m 15s ago"),
    (7300, "2h 1m ago"), (None, "\u2014"), (-1, "\u2014"), ("junk", "\u2014"),
])
def test_scrape_age_format(fleet_ui, seconds, shown):
    fleet_ui.open()
    got = fleet_ui.page.evaluate(
        "async (s) => (await import('/static/js/instances.js')).formatScrapeAge(s)", seconds)
    assert got == shown


# -- Prometheus and Alertmanager status -------------------------------------------------------


def test_prometheus_unreachable_is_shown_and_clears_on_recovery(shaped, fleet_ui, browser_log):
    source, _ = shaped
    source.set(instances=[instance(A), instance(B), instance(C)])
    fleet_ui.open()
    fleet_ui.wait_ticks(1)
    assert fleet_ui.page.is_hidden("#fleet-status")

    source.set(fleet=fleet_status(prometheus="unreachable", error="connection refused"),
               instances=[instance(A, up=False), instance(B, up=False), instance(C, up=False)])
    fleet_ui.page.wait_for_selector("#fleet-prometheus", state="visible")
    assert fleet_ui.page.text_content("#fleet-prometheus").startswith(
        "Prometheus unreachable: connection refused.")
    assert fleet_ui.page.get_attribute("#fleet-status", "role") == "alert"
    assert fleet_ui.page.is_hidden("#fleet-alertmanager")
    assert fleet_ui.page.text_content("#instances-count") == "0 of 3 up"
    # The stream itself is fine: the connection indicator stays live.
    assert fleet_ui.state() == "live"

    source.set(fleet=fleet_status(), instances=[instance(A), instance(B), instance(C)])
    fleet_ui.page.wait_for_selector("#fleet-status", state="hidden")
    assert fleet_ui.page.text_content("#instances-count") == "3 of 3 up"
    assert browser_log.unexpected_console_errors() == []


@pytest.mark.parametrize(("alertmanager", "shown"), [("unreachable", True), ("off", False)])
def test_alertmanager_status(shaped, fleet_ui, alertmanager, shown):
    source, _ = shaped
    source.set(fleet=fleet_status(alertmanager=alertmanager,
                                  error="Alertmanager: timed out" if shown else None))
    fleet_ui.open()
    fleet_ui.wait_ticks(1)
    assert fleet_ui.page.get_attribute("#fleet-status", "data-alertmanager") == alertmanager
    assert fleet_ui.page.is_visible("#fleet-alertmanager") is shown
    assert fleet_ui.page.is_hidden("#fleet-prometheus")
    if shown:
        assert fleet_ui.page.text_content("#fleet-alertmanager").startswith(
            "Alertmanager unreachable: Alertmanager: timed out.")
        source.set(fleet=fleet_status())
        fleet_ui.page.wait_for_selector("#fleet-status", state="hidden")


# -- jobs and alerts tagged with their instance -----------------------------------------------


def test_jobs_show_their_instance_and_equal_ids_on_two_instances_are_two_rows(shaped, fleet_ui):
    source, _ = shaped
    now = datetime.now(timezone.utc)
    source.dash.add_job(JobInfo(id="job-1", name="export-a", status="running", progress=30,
                                provider="aws", vm_name="vm-a", start_time=now))
    other = {**source.dash.snapshot()["recent_jobs"][0], "name": "export-b",
             "instance": B}
    source.set(extra_jobs=[other])
    fleet_ui.open()
    wait_page(fleet_ui, "() => document.querySelectorAll('#jobs-body tr').length === 2")
    assert fleet_ui.page.get_attribute("#jobs-table", "data-instances") == "true"
    assert fleet_ui.page.is_visible("#jobs-table thead .col-instance")
    rows = fleet_ui.page.evaluate(
        """() => [...document.querySelectorAll("#jobs-body tr")].map((tr) => [
             tr.querySelector(".col-id").textContent,
             tr.querySelector(".col-instance").textContent,
             tr.querySelector(".job-name").textContent])"""
    )
    assert rows == [["job-1", A, "export-a"], ["job-1", B, "export-b"]]
    assert fleet_ui.page.text_content("#jobs-count") == "2 jobs"


def test_alerts_carry_their_source_and_instance(shaped, fleet_ui, browser_log):
    source, _ = shaped
    source.dash.add_alert("critical", "instance down")
    source.dash.add_alert("warning", "queue growing")
    source.dash.add_alert("info", "fleet-wide note")
    source.set(alert_tags={"instance down": ("alertmanager", C),
                           "queue growing": ("instance", B)})
    fleet_ui.open()
    wait_page(fleet_ui, "() => document.querySelectorAll('#alerts-list .alert').length === 3")
    tags = fleet_ui.page.evaluate(
        """() => [...document.querySelectorAll("#alerts-list .alert")].map((box) => {
             const tag = box.querySelector(".alert-source");
             return [box.querySelector(".alert-message").textContent, tag.textContent,
                     tag.dataset.source, tag.hidden];
           })"""
    )
    assert tags == [
        ["fleet-wide note", "Alertmanager", "alertmanager", False],
        ["queue growing", B, "instance", False],
        ["instance down", f"Alertmanager \u00b7 {C}", "alertmanager", False],
    ]
    assert browser_log.unexpected_console_errors() == []


def test_fleet_values_are_shown_as_text(shaped, fleet_ui, browser_log):
    source, _ = shaped
    source.dash.add_job(JobInfo(id="job-x", name="n", status="running", progress=5,
                                provider="aws", vm_name="v"))
    source.dash.add_alert("critical", "tagged")
    source.set(instances=[instance(PAYLOAD)], job_instances={"job-x": PAYLOAD},
               alert_tags={"tagged": (PAYLOAD, PAYLOAD)},
               fleet=fleet_status(prometheus="unreachable", alertmanager="unreachable",
                                  error=PAYLOAD))
    fleet_ui.open()
    fleet_ui.wait_ticks(2)
    assert fleet_ui.page.text_content("#instances-body .inst-instance") == PAYLOAD
    assert fleet_ui.page.text_content("#jobs-body .col-instance") == PAYLOAD
    assert fleet_ui.page.text_content(".alert .alert-source") == PAYLOAD
    assert PAYLOAD in fleet_ui.page.text_content("#fleet-prometheus")
    assert fleet_ui.page.evaluate("() => window.__xss") is None
    assert fleet_ui.page.locator("img").count() == 0
    assert not any(url.endswith("/x") for url in browser_log.requests)
    assert browser_log.unexpected_console_errors() == []


# -- small screens ----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [375, 1280])
def test_fleet_page_has_no_horizontal_scroll(shaped, new_page, make_ui, width, browser_log):
    source, runner = shaped
    for n in range(8):
        source.dash.add_job(JobInfo(id=f"job-{n}", name=f"export-vm-prod-{n:02d}",
                                    status="running", progress=10 * n, provider="aws",
                                    vm_name=f"prod-web-{n:02d}"))
    source.dash.add_alert("critical", "Instance 127.0.0.1:8083 is down for 2 minutes")
    names = [f"hyperdash-exporter-{n:02d}.eu-west-1.internal.example.com:8080"
             for n in range(12)]
    source.set(instances=[instance(n, up=i % 5 != 3) for i, n in enumerate(names)],
               job_instances={f"job-{n}": names[n] for n in range(8)},
               alert_tags={"Instance 127.0.0.1:8083 is down for 2 minutes":
                           ("alertmanager", names[3])},
               fleet=fleet_status(prometheus="unreachable", alertmanager="unreachable",
                                  error="GET /api/v1/query: connection refused"))
    ui = make_ui(new_page(width, 812), runner)
    ui.open()
    ui.wait_ticks(2)
    assert ui.page.locator("#instances-body tr").count() == 12
    assert ui.horizontal_overflow() == 0
    widest = ui.page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'.fleet-status, .instances, .alert, .jobs')]"
        ".map((el) => el.getBoundingClientRect().right))"
    )
    assert widest <= width
    assert browser_log.unexpected_console_errors() == []


# -- end to end: three Dashboards, a real Prometheus and `hyperdash fleet` --------------------


@dataclass
class RealFleet:
    dashes: list[Dashboard]
    prometheus: Any
    process: Any
    port: int

    def start_fleet(self) -> None:
        """``hyperdash fleet`` against the Prometheus, on :attr:`port` (again, after a stop)."""
        self.process = HyperdashProcess(
            "fleet", "--prometheus", self.prometheus.base, "--host", "127.0.0.1",
            "--port", str(self.port), "--interval", str(TICK))
        assert self.process.url.startswith(f"http://127.0.0.1:{self.port}")


WORKLOADS = [(2, 10, 1, 0, 3), (5, 20, 0, 2, 7), (1, 5, 4, 1, 0)]
"""(active, completed, failed, pending, queue) per instance: different, so sums show."""


def feed(dash: Dashboard, n: int) -> None:
    dash.update_job_metrics(*WORKLOADS[n])
    dash.update_http_metrics(100 * (n + 1), n, 20.0 + n)
    for k in range(2):
        dash.add_job(JobInfo(id=f"job-{k}", name=f"export-{n}-{k}", status="running",
                             progress=10 * (k + 1), provider=("aws", "azure", "gcp")[n],
                             vm_name=f"vm-{n}-{k}"))
    dash.set_system_health(("healthy", "degraded", "healthy")[n])


def prometheus_scalar(base: str, expr: str) -> float | None:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{base}/api/v1/query?{query}", timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def real_fleet(start_dashboard, prometheus_bin, tmp_path) -> Iterator[RealFleet]:
    """Three served Dashboards with different workloads, a real Prometheus scraping them
    every second, and `hyperdash fleet` over it."""
    dashes = [start_dashboard() for _ in range(3)]
    for n, dash in enumerate(dashes):
        feed(dash, n)
    prometheus = start_prometheus(prometheus_bin, tmp_path / "prometheus",
                                  [f"127.0.0.1:{d.port}" for d in dashes])
    real = RealFleet(dashes, prometheus, None, free_port())
    try:
        wait_for("three targets up", lambda: prometheus_scalar(
            prometheus.base, 'count(up{job="hyperdash"} == 1)') == 3, log=prometheus.log)
        real.start_fleet()
        yield real
    finally:
        if real.process is not None:
            real.process.close()
        prometheus.stop()


def card_is(ui: Any, name: str, value: float) -> None:
    ui.page.wait_for_function(
        "([id, v]) => Number(document.getElementById(id).dataset.value) === v",
        arg=[f"value-{name}", value], timeout=FLEET_WAIT_MS)


FLEET_WAIT_MS = 15_000
"""A change reaches the fleet page within a scrape (1 s), a query and a tick; with margin."""


def test_fleet_page_end_to_end(real_fleet, new_page, make_ui, browser_log):
    ui = make_ui(new_page(), SimpleNamespace(port=real_fleet.port))
    ui.open()
    ui.page.wait_for_function(
        "() => document.querySelectorAll('#instances-body tr[data-up=\"true\"]').length === 3",
        timeout=FLEET_WAIT_MS)
    names = [f"127.0.0.1:{d.port}" for d in real_fleet.dashes]
    assert [r[0] for r in row_texts(ui)] == sorted(names)
    assert ui.page.is_hidden("#fleet-status")

    # Cards: the sums of the three, and they follow a change on one instance.
    card_is(ui, "jobs-active", sum(w[0] for w in WORKLOADS))
    card_is(ui, "queue-length", sum(w[4] for w in WORKLOADS))
    real_fleet.dashes[1].update_job_metrics(9, 25, 0, 2, 7)
    card_is(ui, "jobs-active", 2 + 9 + 1)

    # Jobs from all three, tagged; the same id on three instances is three rows.
    ui.page.wait_for_function(
        "() => document.querySelectorAll('#jobs-body tr').length === 6", timeout=FLEET_WAIT_MS)
    assert ui.page.get_attribute("#jobs-table", "data-instances") == "true"
    instances = ui.page.evaluate(
        "() => [...document.querySelectorAll('#jobs-body .col-instance')]"
        ".map((td) => td.textContent)")
    assert sorted(set(instances)) == sorted(names)

    # Markup in a job's name reaches the fleet's page as text.
    real_fleet.dashes[0].add_job(JobInfo(id="xss", name=PAYLOAD, status="failed", progress=1,
                                         provider="aws", vm_name=PAYLOAD, error_msg=PAYLOAD))
    row = ui.page.locator('#jobs-body tr[data-job-id="xss"]')
    row.wait_for(timeout=FLEET_WAIT_MS)
    assert row.locator(".job-name").text_content() == PAYLOAD
    assert ui.page.evaluate("() => window.__xss") is None
    assert ui.page.locator("img").count() == 0

    # Charts are drawn from the fleet's messages.
    ui.wait_ticks(3)
    timeline = ui.chart("chart-jobs-over-time")
    assert len(timeline["datasets"][0]["data"]) >= 3
    assert sorted(ui.chart("chart-providers")["labels"]) == ["aws", "azure", "gcp"]

    # One instance stops: its row says down, the others stay up, the page keeps going.
    stopped = f"127.0.0.1:{real_fleet.dashes[2].port}"
    real_fleet.dashes[2].close()
    ui.page.wait_for_function(
        "(name) => document.querySelector(`#instances-body tr[data-instance=\"${name}\"]`)"
        "?.dataset.up === 'false'", arg=stopped, timeout=FLEET_WAIT_MS)
    assert ui.page.text_content("#instances-count") == "2 of 3 up"
    assert ui.state() == "live"
    assert browser_log.unexpected_console_errors() == []


def test_fleet_page_at_375_px_and_after_the_fleet_restarts(real_fleet, new_page, make_ui,
                                                            browser_log):
    browser_log.allow_console_error(r"WebSocket connection to .* failed")
    ui = make_ui(new_page(375, 812), SimpleNamespace(port=real_fleet.port))
    ui.open()
    ui.page.wait_for_function(
        "() => document.querySelectorAll('#instances-body tr').length === 3",
        timeout=FLEET_WAIT_MS)
    assert ui.horizontal_overflow() == 0

    real_fleet.process.stop()
    real_fleet.process.close()
    ui.wait_state("reconnecting")
    real_fleet.start_fleet()
    ui.wait_fresh(timeout=20_000)
    ui.wait_ticks(2)
    assert len(browser_log.open_sockets()) == 1
    assert ui.page.locator("#instances-body tr").count() == 3
    card_is(ui, "jobs-active", sum(w[0] for w in WORKLOADS))
    assert browser_log.unexpected_console_errors() == []
