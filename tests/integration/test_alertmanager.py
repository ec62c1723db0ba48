"""One rules file drives the page's alerts and Prometheus's: a bundled rule fires through a
real Prometheus into a real Alertmanager, and comes out as the fleet page's alert.

Two Dashboards are served on 127.0.0.1 (one whose figures the tests change, one that stays
healthy) and, with a third target nobody listens on, scraped every second by Debian's
``prometheus`` with grafana/prometheus/alerts.yml, in a temporary copy where only every
``for:`` is 0s (so that HyperdashSystemUnhealthy fires on its first evaluation instead of a
minute later); Prometheus sends to Debian's ``prometheus-alertmanager``, and the test reads
Alertmanager's ``/api/v2/alerts`` as the fleet does, through ``from_alertmanager``. Every
wait polls with a deadline; the module takes about 15 s.
"""

from __future__ import annotations

from support import free_port
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from alertmanager import (
    ALERTS_YML,
    Alertmanager,
    immediate_rules,
    run_alertmanager,
    run_prometheus,
)
from test_prometheus import JOB, Prometheus

from hyperdash_otel import Config, Dashboard
from hyperdash_otel.fleet.alerts import from_alertmanager, merge_alerts

pytestmark = pytest.mark.integration

RULE = "HyperdashSystemUnhealthy"


@dataclass
class Stack:
    dashboard: Dashboard  # the one whose figures the tests change
    instance: str
    quiet_instance: str  # a second dashboard, healthy throughout
    dead_instance: str  # a target nobody listens on
    prometheus: Prometheus
    alertmanager: Alertmanager

    def page_alerts(self, instance: str | None = None) -> list[dict[str, Any]]:
        """What the fleet would show from Alertmanager, about one instance (the changed
        dashboard's unless said)."""
        return [a for a in from_alertmanager(self.alertmanager.alerts())
                if a["instance"] == (instance or self.instance)]

    def wait_for(self, what: str, check: Any) -> Any:
        return self.alertmanager.wait_for(what, check, also=(self.prometheus.log,))


@pytest.fixture(scope="module")
def stack(prometheus_bin: str, alertmanager_bin: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alertmanager")
    dash, quiet = (Dashboard(Config(port=0, update_interval=0.2, collect_system_metrics=False))
                   for _ in range(2))
    try:
        dash.start_in_thread()
        quiet.start_in_thread()
        instance, quiet_instance = f"127.0.0.1:{dash.port}", f"127.0.0.1:{quiet.port}"
        dead_instance = f"127.0.0.1:{free_port()}"
        with run_alertmanager(alertmanager_bin, tmp / "am") as am, \
                run_prometheus(prometheus_bin, tmp / "prom",
                               targets=[instance, quiet_instance, dead_instance],
                               rules=immediate_rules(tmp), alertmanager=am) as prom:
            yield Stack(dash, instance, quiet_instance, dead_instance, prom, am)
    finally:
        dash.close()
        quiet.close()


def test_the_copy_of_the_rules_changes_only_for(tmp_path: Path) -> None:
    shipped = yaml.safe_load(ALERTS_YML.read_text(encoding="utf-8"))
    copied = yaml.safe_load(immediate_rules(tmp_path).read_text(encoding="utf-8"))
    for group in shipped["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    assert copied == shipped


def test_prometheus_runs_every_bundled_rule_and_sends_to_alertmanager(stack: Stack) -> None:
    prom = stack.prometheus
    shipped = {rule["alert"] for group in yaml.safe_load(ALERTS_YML.read_text())["groups"]
               for rule in group["rules"]}

    def evaluated() -> dict[str, str] | None:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        done = rules and all(not r["lastEvaluation"].startswith("0001-") for r in rules)
        return {r["name"]: r["health"] for r in rules} if done else None

    assert prom.wait_for("every rule to be evaluated", evaluated) == dict.fromkeys(shipped, "ok")
    # Prometheus discovers the Alertmanager (from static_configs) shortly after it starts.
    active = prom.wait_for("Prometheus to find the Alertmanager", lambda: prom.get(
        "/api/v1/alertmanagers")["activeAlertmanagers"])
    assert [a["url"] for a in active] == [f"{stack.alertmanager.base}/api/v2/alerts"]


def test_a_firing_rule_reaches_the_page_through_alertmanager(stack: Stack) -> None:
    dash, prom = stack.dashboard, stack.prometheus
    live = f'{{job="{JOB}", instance="{stack.instance}"}}'
    # Healthy first, as Prometheus has stored it: nothing about this instance fires yet.
    prom.wait_for("a scrape of the healthy dashboard", lambda: prom.query(
        f'sum(hyperdash_system_health{{status="unhealthy"}}) by (instance) == 0 and on(instance)'
        f" up{live} == 1"))
    assert [a for a in stack.page_alerts() if RULE in a["message"]] == []

    set_at = datetime.now(timezone.utc).replace(microsecond=0)
    dash.set_system_health("unhealthy")
    (alert,) = stack.wait_for(f"{RULE} in Alertmanager", lambda: [
        a for a in stack.page_alerts() if a["message"].endswith("reports itself unhealthy")])

    raw = next(a for a in stack.alertmanager.alerts()
               if a["labels"]["alertname"] == RULE and a["labels"]["instance"] == stack.instance)
    assert alert == {
        "id": f"am-{raw['fingerprint']}",
        "severity": "critical",
        "message": f"{stack.instance} reports itself unhealthy",
        "time": alert["time"],
        "source": "alertmanager",
        "instance": stack.instance,
    }
    started = datetime.fromisoformat(alert["time"].replace("Z", "+00:00"))
    assert set_at <= started <= datetime.now(timezone.utc), (set_at, alert["time"])

    # Ticks later the same alert has the same id and time: a dismissal on the page holds.
    seen = time.time()
    prom.wait_for("a later scrape, the rule still firing", lambda: prom.query(
        f'ALERTS{{alertname="{RULE}", alertstate="firing"}} and on() '
        f"timestamp(up{live}) > {seen + 1:.3f}"))
    assert [(a["id"], a["time"]) for a in stack.page_alerts() if a["id"] == alert["id"]] == [
        (alert["id"], alert["time"])]


def test_only_the_instance_whose_figures_fire_is_tagged(stack: Stack) -> None:
    stack.dashboard.set_system_health("unhealthy")
    stack.wait_for(f"{RULE} in Alertmanager", lambda: [
        a for a in stack.page_alerts() if a["message"].endswith("reports itself unhealthy")])
    assert stack.page_alerts(stack.quiet_instance) == []


def test_a_target_that_is_down_is_a_critical_alert_for_it(stack: Stack) -> None:
    (alert,) = stack.wait_for("HyperdashInstanceDown in Alertmanager", lambda: stack.page_alerts(
        stack.dead_instance))
    assert (alert["severity"], alert["message"], alert["source"], alert["instance"]) == (
        "critical", f"Instance {stack.dead_instance} is down: Prometheus cannot scrape it",
        "alertmanager", stack.dead_instance)


def test_the_instances_own_alerts_merge_with_alertmanagers(stack: Stack) -> None:
    """The fleet's merge over what both really serve: the instance's /api/metrics alerts and
    Alertmanager's."""
    dash = stack.dashboard
    dash.set_system_health("unhealthy")
    own = dash.add_alert("warning", "disk almost full")
    am = stack.wait_for(f"{RULE} in Alertmanager", lambda: [
        a for a in stack.page_alerts() if a["message"].endswith("reports itself unhealthy")])

    def served_alerts() -> list[dict[str, Any]]:
        # /api/metrics serves the last tick's message: poll until a tick has the new alert.
        url = f"http://{stack.instance}/api/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            alerts: list[dict[str, Any]] = json.load(response)["alerts"]
        return alerts if any(a["id"] == own for a in alerts) else []

    instance_alerts = stack.wait_for("the instance to serve its alert", served_alerts)
    merged = merge_alerts(am, {stack.instance: instance_alerts}, limit=20)
    assert {(a["source"], a["instance"], a["severity"], a["message"]) for a in merged} >= {
        ("alertmanager", stack.instance, "critical",
         f"{stack.instance} reports itself unhealthy"),
        ("instance", stack.instance, "warning", "disk almost full"),
    }
    assert f"{stack.instance}/{own}" in {a["id"] for a in merged}


def test_a_silence_in_alertmanager_hides_the_alert_from_the_page(stack: Stack) -> None:
    stack.dashboard.set_system_health("unhealthy")
    stack.wait_for(f"{RULE} in Alertmanager", lambda: stack.page_alerts())
    now = datetime.now(timezone.utc)
    silence = {
        "matchers": [{"name": "alertname", "value": RULE, "isRegex": False, "isEqual": True},
                     {"name": "instance", "value": stack.instance, "isRegex": False,
                      "isEqual": True}],
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test_alertmanager", "comment": "maintenance",
    }
    silence_id = stack.alertmanager.send("POST", "/api/v2/silences", silence)["silenceID"]
    try:
        stack.wait_for("the silenced alert to leave the page", lambda: not [
            a for a in stack.page_alerts() if a["message"].endswith("reports itself unhealthy")])
        # Still firing in Alertmanager, just silenced: the fleet's query leaves it out.
        silenced = stack.alertmanager.alerts("/api/v2/alerts?silenced=true&active=true")
        assert [a["status"]["silencedBy"] for a in silenced
                if a["labels"].get("instance") == stack.instance] == [[silence_id]]
    finally:
        stack.alertmanager.send("DELETE", f"/api/v2/silence/{silence_id}")
    stack.wait_for(f"{RULE} back once the silence ends", lambda: stack.page_alerts())


def test_clearing_the_condition_resolves_the_alert(stack: Stack) -> None:
    dash = stack.dashboard
    dash.set_system_health("unhealthy")
    stack.wait_for(f"{RULE} in Alertmanager", lambda: [
        a for a in stack.page_alerts() if a["message"].endswith("reports itself unhealthy")])
    dash.set_system_health("healthy")
    stack.wait_for(f"{RULE} to resolve", lambda: not [
        a for a in stack.page_alerts() if a["message"].endswith("reports itself unhealthy")])
