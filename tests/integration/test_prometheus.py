"""A real Prometheus scrapes a real Dashboard; every dashboard query and the alert rules run.

Debian's ``prometheus`` starts on 127.0.0.1 (free port, its own temp data directory, 1 s
scrape and rule evaluation) with grafana/prometheus/prometheus.yml and alerts.yml. The
dashboard is fed through the Python API in two phases, so that counters have increased
between scrapes and rates are non-zero. Every wait polls Prometheus's HTTP API against a
deadline; nothing sleeps a fixed time and hopes.
"""

from __future__ import annotations

from support import free_port
import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hyperdash_otel import Config, Dashboard, JobInfo

pytestmark = pytest.mark.integration

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "hyperdash.json").read_text(encoding="utf-8"))
JOB = "hyperdash"  # the job name in grafana/prometheus/prometheus.yml
DEADLINE = 20.0  # seconds for any one wait; the whole module takes well under this
STALL_AFTER = 1.0  # the dashboard's stall_after: a job still for a second is stalled

# Grafana's built-in variables. The queries run once both phases are stored, a few seconds
# after the first scrape: a 1m window covers every sample, as $__rate_interval (4 x scrape
# interval) and the dashboard's time range ($__range) would in Grafana.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "1m"}


# -- what the test feeds, and what each dashboard query must then return ---------------------

# HTTP totals stay 0 in phase 1: counters that start from 0 are extrapolated alike by
# rate(), so the error ratio Prometheus computes is exactly errors / requests.
PHASE_1 = {"jobs": (3, 10, 1, 2, 4), "system": (256, 12.5, 8), "http": (0, 0, 40.0)}
PHASE_2 = {"jobs": (5, 20, 9, 1, 12), "system": (1536, 37.5, 12), "http": (250, 30, 125.5)}
JOBS = [("aws", 2), ("azure", 1), ("gcp", 1)]  # distinct jobs per provider


def feed_phase_1(dash: Dashboard) -> None:
    dash.update_job_metrics(*PHASE_1["jobs"])
    dash.update_system_metrics(*PHASE_1["system"])
    dash.update_http_metrics(*PHASE_1["http"])
    for provider, count in JOBS:
        for n in range(count):
            dash.add_job(JobInfo(id=f"{provider}-{n}", name=f"export-{provider}-{n}",
                                 status="running", progress=40, provider=provider,
                                 vm_name=f"vm-{n}"))
    dash.add_alert("warning", "first alert")
    dash.set_system_health("degraded")


def feed_phase_2(dash: Dashboard) -> None:
    # Enough change for the live alerts too: 8 of 18 finished jobs failed, the queue grew
    # past 10, 1.5 GiB of memory, 30 errors in 250 requests, and the service is unhealthy.
    dash.update_job_metrics(*PHASE_2["jobs"])
    dash.update_system_metrics(*PHASE_2["system"])
    dash.update_http_metrics(*PHASE_2["http"])
    dash.add_alert("warning", "second alert")
    dash.set_system_health("unhealthy")


def equals(expected: float) -> Callable[[float], bool]:
    return lambda value: value == pytest.approx(expected)


def positive(value: float) -> bool:
    return value > 0


def non_negative(value: float) -> bool:
    return value >= 0


active, completed, failed, pending, queue = PHASE_2["jobs"]
memory_mb, cpu, threads = PHASE_2["system"]
requests, errors, response_ms = PHASE_2["http"]
error_ratio = (errors - PHASE_1["http"][1]) / (requests - PHASE_1["http"][0])

# (panel title, refId) -> check of the instant value, or {label value: check} for queries
# that return one series per provider/severity. Every dashboard query must have an entry.
EXPECTED: dict[tuple[str, str], Any] = {
    ("Active jobs", "A"): equals(active),
    ("Completed jobs", "A"): equals(completed),
    ("Failed jobs", "A"): equals(failed),
    ("Queue length", "A"): equals(queue),
    ("HTTP requests", "A"): equals(requests),
    ("Avg response", "A"): equals(response_ms),
    ("Memory usage", "A"): equals(memory_mb),
    ("CPU usage", "A"): equals(cpu),
    ("System health", "A"): equals(2),  # unhealthy
    ("Job status distribution", "A"): equals(active),
    ("Job status distribution", "B"): equals(completed),
    ("Job status distribution", "C"): equals(failed),
    ("Job status distribution", "D"): equals(pending),
    ("Jobs by provider", "A"): {p: equals(n) for p, n in JOBS},
    ("Jobs over time", "A"): positive,
    ("Jobs over time", "B"): positive,
    ("Jobs over time", "C"): equals(active),
    ("System resources", "A"): equals(memory_mb),
    ("System resources", "B"): equals(cpu),
    ("HTTP request rate and error ratio", "A"): positive,
    # Both counters start at 0 and are sampled together, so the ratio of rates is exact.
    ("HTTP request rate and error ratio", "B"): equals(error_ratio),
    ("Health over time", "A"): equals(2),
    ("Tick duration", "A"): lambda v: 0 < v <= 2.5,
    ("Tick duration", "B"): lambda v: 0 < v <= 2.5,
    ("Tick duration", "C"): non_negative,
    ("Tick duration", "D"): equals(0),
    # Every severity starts at 0, so increase() sees the warnings raised between scrapes;
    # a short range may not cover both, and extrapolation may round up.
    ("Alerts raised", "A"): {"warning": lambda v: v >= 1},
    ("Live connections", "A"): equals(0),
    ("Live connections", "B"): equals(threads),
    ("Queue and pending jobs", "A"): equals(queue),
    ("Queue and pending jobs", "B"): equals(pending),
    # Phase 1's running jobs never move again: all of them stall after STALL_AFTER.
    ("Stalled jobs", "A"): {p: equals(n) for p, n in JOBS},
}

LIVE_ALERTS = {
    "HyperdashInstanceDown",  # a second target on a port nobody listens on
    "HyperdashJobFailureRatioHigh",
    "HyperdashQueueBacklogGrowing",
    "HyperdashMemoryHigh",
    "HyperdashSystemUnhealthy",
    "HyperdashHttpErrorRatioHigh",
    "HyperdashJobsStalled",
}


@dataclass(frozen=True)
class Query:
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.panel}/{self.ref_id}"


QUERIES = [Query(p["title"], t["refId"], t["expr"])
           for p in DASHBOARD["panels"] for t in p["targets"]]


# -- Prometheus -------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, what: str, check: Callable[[], Any]) -> Any:
        """Poll ``check`` until it returns something truthy; fail with the log at the
        deadline."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                value = check()
            except (OSError, ValueError):  # not listening yet, or answering 503
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {DEADLINE}s waiting for {what}\n"
                            f"prometheus log:\n{self.log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.1)


def ready(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
        return bool(response.status == 200)


def write_config(tmp: Path, targets: list[str]) -> Path:
    """The shipped prometheus.yml with a 1 s scrape, our targets, and alerts.yml by path."""
    config = yaml.safe_load((GRAFANA / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(GRAFANA / "prometheus" / "alerts.yml")]
    (scrape,) = config["scrape_configs"]
    assert scrape["job_name"] == JOB
    scrape["static_configs"] = [{"targets": targets}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Scraped:
    prometheus: Prometheus
    dashboard: Dashboard
    instance: str
    dead_instance: str


@pytest.fixture(scope="module")
def scraped(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("prometheus")
    dash = Dashboard(Config(port=0, update_interval=0.2, collect_system_metrics=False,
                            stall_after=STALL_AFTER))
    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp / "prometheus.log"
    log = log_path.open("wb")
    try:
        feed_phase_1(dash)
        dash.start_in_thread()
        instance = f"127.0.0.1:{dash.port}"
        dead_instance = f"127.0.0.1:{free_port()}"
        port = free_port()
        proc = subprocess.Popen(
            [prometheus_bin,
             f"--config.file={write_config(tmp, [instance, dead_instance])}",
             f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
        )
        prom = Prometheus(f"http://127.0.0.1:{port}", log_path)

        def alive_and_ready() -> bool:
            assert proc is not None
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n"
                            f"{log_path.read_text(errors='replace')}")
            return ready(prom.base)

        prom.wait_for("prometheus to be ready", alive_and_ready)
        live = f'{{job="{JOB}", instance="{instance}"}}'
        # Two scrapes of phase 1 and the tick histogram, so that rates have a before.
        prom.wait_for("two scrapes of phase 1", lambda: prom.scalar(
            f"count_over_time(hyperdash_jobs_completed_total{live}[1m]) >= 2"))
        prom.wait_for("the first ticks", lambda: prom.scalar(
            f"sum(hyperdash_tick_duration_seconds_count{live}) > 0"))
        fed_at = time.time()
        feed_phase_2(dash)
        # A scrape that started after phase 2 was fed has seen all of it.
        prom.wait_for("a scrape after phase 2", lambda: prom.scalar(
            f"timestamp(up{live}) > {fed_at:.3f}"))
        yield Scraped(prom, dash, instance, dead_instance)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        dash.close()


# -- substitution as Grafana does it ----------------------------------------------------------

def regex_value(value: str) -> str:
    """A single-value regex variable as Grafana's Prometheus data source interpolates it:
    regex metacharacters escaped, then backslashes doubled for the PromQL string."""
    escaped = re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\1", value)
    return escaped.replace("\\", "\\\\")


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in sorted({**BUILTINS, **variables}.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def selections(s: Scraped) -> dict[str, dict[str, str]]:
    """The instance variable as "All" (its allValue) and as the one live target."""
    all_value = next(v["allValue"] for v in DASHBOARD["templating"]["list"]
                     if v["name"] == "instance")
    return {
        "All": {"$job": regex_value(JOB), "$instance": all_value},
        "one": {"$job": regex_value(JOB), "$instance": regex_value(s.instance)},
    }


# -- tests ------------------------------------------------------------------------------------

def test_every_dashboard_query_has_an_expectation() -> None:
    assert {(q.panel, q.ref_id) for q in QUERIES} == set(EXPECTED)


def test_prometheus_scrapes_the_dashboard(scraped: Scraped) -> None:
    prom = scraped.prometheus

    def scraped_once() -> dict[str, str] | None:
        targets = prom.get("/api/v1/targets")["activeTargets"]
        health = {t["labels"]["instance"]: t["health"] for t in targets}
        return None if "unknown" in health.values() else health

    health = prom.wait_for("both targets to be scraped", scraped_once)
    assert health == {scraped.instance: "up", scraped.dead_instance: "down"}


def test_variable_queries_list_the_target(scraped: Scraped) -> None:
    prom = scraped.prometheus
    found = {}
    for v in DASHBOARD["templating"]["list"]:
        if v["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
        assert match, v["query"]
        selector = match.group(1).replace("$job", regex_value(JOB))
        found[v["name"]] = prom.get(f"/api/v1/label/{match.group(2)}/values",
                                    **{"match[]": selector})
    assert found == {"job": [JOB], "instance": [scraped.instance]}


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_dashboard_query(scraped: Scraped, query: Query) -> None:
    expected = EXPECTED[(query.panel, query.ref_id)]
    for selection, variables in selections(scraped).items():
        expr = substitute(query.expr, variables)
        result = scraped.prometheus.query(expr)
        assert result, f"no data for {expr} ({selection})"
        values = {}
        for series in result:
            value = float(series["value"][1])
            assert math.isfinite(value), (expr, series)
            label = next(iter(series["metric"].values()), "") if series["metric"] else ""
            values[label] = value
        if isinstance(expected, dict):
            assert set(values) >= set(expected), (expr, values)
            assert all(check(values[k]) for k, check in expected.items()), (expr, values)
        else:
            # One series per query, or per instance: there is a single live instance.
            (value,) = values.values()
            assert expected(value), (expr, selection, value)


def test_alert_rules_evaluate_without_errors(scraped: Scraped) -> None:
    prom = scraped.prometheus

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        done = all(not r["lastEvaluation"].startswith("0001-") for r in rules)
        return rules if rules and done else None

    rules = prom.wait_for("every rule to be evaluated", evaluated)
    assert {r["name"]: (r["health"], r.get("lastError", "")) for r in rules} == {
        r["name"]: ("ok", "") for r in rules}


def test_the_required_alerts_fire_on_live_data(scraped: Scraped) -> None:
    prom = scraped.prometheus

    def active() -> dict[str, dict[str, Any]] | None:
        alerts = {a["labels"]["alertname"]: a for a in prom.get("/api/v1/alerts")["alerts"]
                  if a["state"] in ("pending", "firing")}
        return alerts if set(alerts) >= LIVE_ALERTS else None

    alerts = prom.wait_for(f"alerts {sorted(LIVE_ALERTS)}", active)
    for name in LIVE_ALERTS:
        labels = alerts[name]["labels"]
        assert labels["job"] == JOB and labels["severity"] in {"critical", "warning", "info"}
        expected_instance = (scraped.dead_instance if name == "HyperdashInstanceDown"
                             else scraped.instance)
        assert labels["instance"] == expected_instance, (name, labels)


def test_a_stalled_job_raises_hyperdash_jobs_stalled(scraped: Scraped) -> None:
    """A job of its own provider moves until Prometheus has stored its gauge at 0, then
    stops: the gauge rises to 1 on the next scrapes, and the rule goes pending for it."""
    prom, dash = scraped.prometheus, scraped.dashboard
    probe = f'{{job="{JOB}", instance="{scraped.instance}", provider="probe"}}'
    steps = iter(range(1, 10_000))

    def moving_and_seen_at_zero() -> bool:
        dash.add_job(JobInfo(id="probe", status="running", progress=next(steps) / 100,
                             provider="probe"))
        return bool(prom.query(f"sum(hyperdash_jobs_stalled{probe}) == 0"))

    prom.wait_for("the probe's gauge stored at 0 while it moves", moving_and_seen_at_zero)
    stopped = time.time()
    prom.wait_for("the probe's gauge to rise to 1", lambda: prom.query(
        f"sum(hyperdash_jobs_stalled{probe}) == 1 and on() timestamp(up{{job=\"{JOB}\", "
        f"instance=\"{scraped.instance}\"}}) > {stopped + STALL_AFTER:.3f}"))
    # The dashboard's own view agrees, and the bundled rule sees it (pending: `for: 2m`).
    assert dash.job("probe")["stalled"] is True  # type: ignore[index]

    def rule_active() -> list[dict[str, Any]]:
        return [a for a in prom.get("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "HyperdashJobsStalled"
                and a["labels"].get("provider") == "probe"]

    (alert,) = prom.wait_for("HyperdashJobsStalled for the probe", rule_active)
    assert alert["state"] in ("pending", "firing") and alert["labels"]["severity"] == "warning"
