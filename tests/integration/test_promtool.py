"""promtool holds the Prometheus files and the live exposition to Prometheus's own rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

PROM_DIR = Path(__file__).resolve().parents[2] / "grafana" / "prometheus"
SEVERITIES = {"critical", "warning", "info"}


def promtool(promtool_bin: str, *args: str, stdin: str | None = None,
             cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_bin, *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROM_DIR / "alerts.yml")["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_check_config(promtool_bin: str) -> None:
    # Also checks the rule files the config names (alerts.yml).
    assert_ok(promtool(promtool_bin, "check", "config", "prometheus.yml"))


def test_check_rules(promtool_bin: str) -> None:
    assert_ok(promtool(promtool_bin, "check", "rules", "alerts.yml"))


def test_rule_unit_tests_pass(promtool_bin: str) -> None:
    assert_ok(promtool(promtool_bin, "test", "rules", "alerts_test.yml"))


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    tests = load_yaml(PROM_DIR / "alerts_test.yml")["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in tests:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "rules without a case where they fire"
    assert names - quiet == set(), "rules without a case where they stay quiet"
    assert (fires | quiet) - names == set(), "cases for rules that do not exist"


def test_the_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "HyperdashInstanceDown",
        "HyperdashJobFailureRatioHigh",
        "HyperdashQueueBacklogGrowing",
        "HyperdashMemoryHigh",
        "HyperdashSystemUnhealthy",
        "HyperdashSystemDegraded",
        "HyperdashHttpErrorRatioHigh",
    } <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_rule_has_a_page_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) >= {"summary", "description"}
    assert all(rule["annotations"][key].strip() for key in ("summary", "description"))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_rule_summary_reads_on_the_fleet_page(rule: dict[str, Any]) -> None:
    """The fleet page shows a firing rule's summary as the alert's message, beside alerts of
    other instances: it must say which instance, and read as a sentence of its own."""
    summary = rule["annotations"]["summary"]
    assert "{{ $labels.instance }}" in summary
    assert summary[0].isupper() or summary.startswith("{{"), summary
    assert "\n" not in summary.strip(), summary


def test_every_firing_case_keeps_the_instance_label() -> None:
    """The fleet tags an Alertmanager alert with its `instance` label: a rule that
    aggregates the label away would reach the page as nobody's."""
    cases = [(case["alertname"], alert)
             for group in load_yaml(PROM_DIR / "alerts_test.yml")["tests"]
             for case in group.get("alert_rule_test", [])
             for alert in case.get("exp_alerts") or []]
    assert cases
    assert [name for name, alert in cases if "instance" not in alert["exp_labels"]] == []


def test_the_readme_alert_table_is_the_rules() -> None:
    readme = (PROM_DIR.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Alert rules\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| .+ \| (\w+) \|$", section, re.MULTILINE)
    assert rows == [(rule["alert"], rule["labels"]["severity"], rule["for"])
                    for rule in alert_rules()]


def test_check_metrics_on_live_exposition(promtool_bin: str, live_metrics_text: str) -> None:
    # The fed dashboard's GET /metrics, labelled series included: promtool lints names,
    # types, HELP and suffixes the way Prometheus's own tooling does.
    assert "hyperdash_provider_jobs_total{" in live_metrics_text
    result = promtool(promtool_bin, "check", "metrics", stdin=live_metrics_text)
    assert_ok(result)
    assert result.stdout.strip() == "" and result.stderr.strip() == ""
