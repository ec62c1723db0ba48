"""Query -> figures on Prometheus JSON captured from the real binary (2.42, scraping two
``hyperdash demo`` instances and one port nobody listened on), and the selector rules.

The behaviour over a live Prometheus is in tests/integration/test_fleet.py and
tests/fleet/test_source.py; these only pin the parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hyperdash_otel.fleet.prometheus import (
    InstanceFigures,
    extras_query,
    parse_duration,
    parse_extras,
    parse_selector,
    parse_series,
    parse_targets,
    series_query,
)

DATA = Path(__file__).parent / "data"
UP_1, UP_2, DOWN = "127.0.0.1:18181", "127.0.0.1:18182", "127.0.0.1:18183"


def load(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text())


JOB = parse_selector('{job="hyperdash"}')


def test_one_query_asks_for_every_series_by_name_and_instance() -> None:
    assert series_query(JOB) == (
        'sum by (__name__, instance, provider, status) ({__name__=~"up|hyperdash_jobs_active|'
        "hyperdash_jobs_completed_total|hyperdash_jobs_failed_total|hyperdash_jobs_pending|"
        "hyperdash_queue_length|hyperdash_http_requests_total|hyperdash_http_errors_total|"
        "hyperdash_http_response_time_seconds|hyperdash_process_memory_usage_bytes|"
        "hyperdash_process_cpu_utilization_percent|hyperdash_process_threads|"
        'hyperdash_provider_jobs_total|hyperdash_system_health", job="hyperdash"})'
    )
    assert extras_query(JOB) == (
        'label_replace(max by (instance) (timestamp(up{job="hyperdash"})), "hyperdash_fleet", '
        '"scraped_at", "", "") or label_replace(sum by (instance) '
        '(increase(hyperdash_jobs_failed_total{job="hyperdash"}[5m])), "hyperdash_fleet", '
        '"failed", "", "")'
    )


def test_series_become_figures_per_instance() -> None:
    figures = parse_series(load("series"))
    assert sorted(figures) == [UP_1, UP_2, DOWN]
    one = figures[UP_1]
    assert (one.up, one.health) == (True, "healthy")
    assert one.providers == {"aws": 40.0, "azure": 24.0, "gcp": 31.0}
    assert one.values == {
        "hyperdash_http_errors_total": 81.0,
        "hyperdash_http_requests_total": 4534.0,
        "hyperdash_http_response_time_seconds": 0.1752,
        "hyperdash_jobs_active": 4.0,
        "hyperdash_jobs_completed_total": 66.0,
        "hyperdash_jobs_failed_total": 23.0,
        "hyperdash_jobs_pending": 0.0,
        "hyperdash_process_cpu_utilization_percent": 1.4,
        "hyperdash_process_memory_usage_bytes": 41725952.0,
        "hyperdash_process_threads": 3.0,
        "hyperdash_queue_length": 0.0,
    }
    # A target that does not answer has only up=0: no figures, health unknown.
    assert figures[DOWN] == InstanceFigures(DOWN, up=False, health="unknown")


def test_extras_add_scrape_times_and_recent_failures() -> None:
    figures = parse_series(load("series"))
    at = parse_extras(load("extras"), figures)
    assert at == pytest.approx(1796065710.0, abs=1.0)
    assert figures[UP_1].failed_5m == pytest.approx(19.063, abs=0.001)
    assert figures[UP_2].failed_5m == pytest.approx(8.027, abs=0.001)
    assert figures[DOWN].failed_5m == 0.0
    assert {k: f.scraped_at for k, f in figures.items()} == {
        UP_1: 1796065709.357, UP_2: 1796065709.365, DOWN: 1796065709.391}


def test_the_worst_health_series_wins_and_non_finite_values_are_skipped() -> None:
    def sample(name: str, value: str, **labels: str) -> dict[str, Any]:
        return {"metric": {"__name__": name, "instance": "i", **labels},
                "value": [1.0, value]}

    figures = parse_series({"resultType": "vector", "result": [
        sample("up", "1"),
        sample("hyperdash_system_health", "1", status="degraded"),
        sample("hyperdash_system_health", "1", status="unhealthy"),
        sample("hyperdash_system_health", "0", status="healthy"),
        sample("hyperdash_jobs_active", "NaN"),
        sample("hyperdash_queue_length", "+Inf"),
    ]})
    assert figures["i"] == InstanceFigures("i", up=True, health="unhealthy")


@pytest.mark.parametrize(("data", "says"), [
    ({"resultType": "matrix", "result": []}, "instant vector"),
    ({"resultType": "vector", "result": {}}, "data.result: expected a list"),
    ({"resultType": "vector", "result": [{"value": [1, "2"]}]}, "metric object"),
    ({"resultType": "vector", "result": [{"metric": {}, "value": "x"}]}, "value [time, v]"),
])
def test_a_malformed_answer_is_a_clear_error(data: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("[", r"\[")):
        parse_series(data)


def test_targets_are_filtered_by_the_selector_and_carry_their_base_url() -> None:
    targets = parse_targets(load("targets"), JOB)
    assert [(t.instance, t.base_url, t.health, t.scrape_interval) for t in targets] == [
        (UP_1, "http://127.0.0.1:18181", "up", 1.0),
        (UP_2, "http://127.0.0.1:18182", "up", 1.0),
        (DOWN, "http://127.0.0.1:18183", "down", 1.0),
    ]
    only_one = parse_selector(
        '{job="hyperdash", instance=~".*:1818[12]", instance!="' + UP_2 + '"}')
    assert [t.instance for t in parse_targets(load("targets"), only_one)] == [UP_1]
    assert parse_targets(load("targets"), parse_selector('{job="other"}')) == []


@pytest.mark.parametrize(("selector", "matchers"), [
    ('{job="hyperdash"}', ['job="hyperdash"']),
    ('{ job = "a" , env=~"prod|stage", x!="y", z!~"q.*" }',
     ['job="a"', 'env=~"prod|stage"', 'x!="y"', 'z!~"q.*"']),
    (r'{job="say \"hi\""}', [r'job="say \"hi\""']),
])
def test_selectors_are_read(selector: str, matchers: list[str]) -> None:
    assert [str(m) for m in parse_selector(selector)] == matchers


@pytest.mark.parametrize(("selector", "says"), [
    ('job="hyperdash"', "must be a label selector in braces"),
    ("{}", "at least one positive matcher"),
    ('{job!="x"}', "at least one positive matcher"),
    ('{job=~".*"}', "at least one positive matcher"),
    ("{job=hyperdash}", "cannot read a matcher"),
    ('{__name__="up"}', "must not match __name__"),
    ('{job="a"} or vector(1)', "must be a label selector in braces"),
])
def test_bad_selectors_are_refused_naming_the_flag(selector: str, says: str) -> None:
    with pytest.raises(ValueError, match="^--selector") as info:
        parse_selector(selector, "--selector")
    assert says in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("15s", 15.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0),
    ("", None), ("x", None), ("0s", None), ("1s2", None),
])
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
