"""The Grafana dashboard file: our JSON Schema, structural checks, and its metric names.

Grafana itself is not run here; what a Grafana would reject or render wrong (duplicate ids,
overlapping panels, a panel bound to a fixed data source, a query for a metric the package
never exports) is checked against the file, and tests/integration/test_prometheus.py runs
every query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hyperdash_otel import METRICS

pytestmark = pytest.mark.integration

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "hyperdash.json"
SCHEMA_FILE = GRAFANA / "dashboard.schema.json"
DS_VARIABLE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables that a query may use besides the dashboard's.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}
STAT_TITLES = ["Active jobs", "Completed jobs", "Failed jobs", "Queue length", "HTTP requests",
               "Avg response", "Memory usage", "CPU usage"]


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def model() -> Any:
    return load_json(DASHBOARD_FILE)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_json(SCHEMA_FILE)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def panels(model: Any) -> list[dict[str, Any]]:
    return list(model["panels"])


def panel(model: Any, title: str) -> dict[str, Any]:
    (found,) = [p for p in model["panels"] if p["title"] == title]
    return found


def variables(model: Any) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in model["templating"]["list"]}


def all_queries(model: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and query variables."""
    for p in model["panels"]:
        for t in p["targets"]:
            yield t["expr"]
    for v in model["templating"]["list"]:
        if v["type"] == "query":
            yield v["query"]["query"] if isinstance(v["query"], dict) else v["query"]


def rule_exprs() -> list[str]:
    rules = load_yaml(GRAFANA / "prometheus" / "alerts.yml")
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for our files):
    strings, label matchers, ranges and grouping label lists are dropped, then an identifier
    not followed by '(' and not a keyword is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    # label_values(selector, label): the second argument is a label, not a metric.
    text = re.sub(r"label_values\(([^,]*),[^)]*\)", r"(\1)", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_name_lexer() -> None:
    assert metric_names(
        'sum by (instance) (rate(a_total{job=~"$job", x="y{z}"}[$__rate_interval])) '
        "/ on(job) group_left(instance) b > 0.5 and c offset 5m"
    ) == {"a_total", "b", "c"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[1m])))") == {
        "h_bucket"}
    assert metric_names('label_values(m{job=~"$job"}, instance)') == {"m"}


# -- schema -----------------------------------------------------------------------------------

def test_dashboard_matches_the_schema(model: Any, validator: Any) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(model)]
    assert errors == []


def _break_first_panel(change: str) -> Any:
    broken = load_json(DASHBOARD_FILE)
    first = broken["panels"][0]
    if change == "no targets":
        first["targets"] = []
    elif change == "no gridPos":
        del first["gridPos"]
    elif change == "grid wider than 24":
        first["gridPos"]["w"] = 25
    elif change == "string datasource":
        first["datasource"] = "Prometheus"
    elif change == "empty expr":
        first["targets"][0]["expr"] = ""
    elif change == "uid with a slash":
        broken["uid"] = "hyper/dash"
    elif change == "query variable without datasource":
        del broken["templating"]["list"][1]["datasource"]
    return broken


@pytest.mark.parametrize("change", ["no targets", "no gridPos", "grid wider than 24",
                                    "string datasource", "empty expr", "uid with a slash",
                                    "query variable without datasource"])
def test_schema_rejects_a_broken_dashboard(change: str, validator: Any) -> None:
    assert not validator.is_valid(_break_first_panel(change))


# -- structure --------------------------------------------------------------------------------

def test_panel_ids_are_unique(model: Any) -> None:
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_and_do_not_overlap(model: Any) -> None:
    occupied: dict[tuple[int, int], str] = {}
    for p in panels(model):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in occupied, f"{p['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = p["title"]


def test_every_panel_and_query_uses_the_datasource_variable(model: Any) -> None:
    for p in panels(model):
        assert p["datasource"] == DS_VARIABLE, p["title"]
        for t in p["targets"]:
            assert t.get("datasource", DS_VARIABLE) == DS_VARIABLE, (p["title"], t["refId"])
    for v in model["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DS_VARIABLE, v["name"]


def test_every_panel_has_queries_with_unique_ref_ids(model: Any) -> None:
    for p in panels(model):
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_queries_use_only_defined_variables(model: Any) -> None:
    defined = set(variables(model)) | GRAFANA_VARIABLES
    for expr in all_queries(model):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined, expr


def test_variables(model: Any) -> None:
    v = variables(model)
    assert set(v) == {"datasource", "instance", "job"}
    assert v["datasource"]["type"] == "datasource"
    assert v["datasource"]["query"] == "prometheus"
    assert v["instance"]["type"] == "query"
    assert v["instance"]["multi"] is True and v["instance"]["includeAll"] is True
    assert v["job"]["type"] == "query"
    # Every panel query filters on both, so the selectors actually narrow the view.
    for p in panels(model):
        for t in p["targets"]:
            assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], \
                (p["title"], t["refId"])


def test_import_and_provisioning_settings(model: Any) -> None:
    assert model["uid"] == "hyperdash-otel"
    assert model["schemaVersion"] >= 39
    assert model["refresh"] == "5s"
    assert model["id"] is None  # an id would clash with the importing Grafana's own
    (ds_input,) = model["__inputs"]
    assert ds_input == {**ds_input, "name": "DS_PROMETHEUS", "type": "datasource",
                        "pluginId": "prometheus"}
    text = DASHBOARD_FILE.read_text(encoding="utf-8")
    # The import dialog's choice lands in the data source variable's default only; panels
    # never name an input directly, so a provisioned copy needs no substitution.
    assert re.findall(r"\$\{DS_\w+\}", text) == ["${DS_PROMETHEUS}", "${DS_PROMETHEUS}"]
    current = variables(model)["datasource"]["current"]
    assert current["value"] == "${DS_PROMETHEUS}"


def test_the_page_view_is_all_there(model: Any) -> None:
    stats = sorted((p for p in panels(model) if p["gridPos"]["y"] == 0),
                   key=lambda p: p["gridPos"]["x"])
    assert [p["title"] for p in stats] == STAT_TITLES
    assert {p["type"] for p in stats} == {"stat"}
    assert panel(model, "Avg response")["fieldConfig"]["defaults"]["unit"] == "ms"
    assert panel(model, "Memory usage")["fieldConfig"]["defaults"]["unit"] == "mbytes"
    assert panel(model, "CPU usage")["fieldConfig"]["defaults"]["unit"] == "percent"
    assert panel(model, "Job status distribution")["type"] == "piechart"
    assert {t["legendFormat"] for t in panel(model, "Job status distribution")["targets"]} == {
        "active", "completed", "failed", "pending"}
    assert panel(model, "Jobs by provider")["targets"][0]["legendFormat"] == "{{provider}}"
    assert panel(model, "System health")["type"] == "stat"
    assert panel(model, "Health over time")["type"] == "state-timeline"


def _right_axis_series(p: dict[str, Any]) -> set[str]:
    out = set()
    for override in p["fieldConfig"]["overrides"]:
        props = {prop["id"]: prop["value"] for prop in override["properties"]}
        if props.get("custom.axisPlacement") == "right":
            out.add(override["matcher"]["options"])
    return out


def test_two_axis_charts(model: Any) -> None:
    jobs = panel(model, "Jobs over time")
    assert "rate(hyperdash_jobs_completed_total" in jobs["targets"][0]["expr"]
    assert "rate(hyperdash_jobs_failed_total" in jobs["targets"][1]["expr"]
    assert "rate(" not in jobs["targets"][2]["expr"]  # active is a gauge, drawn as it is
    assert _right_axis_series(jobs) == {"active"}

    resources = panel(model, "System resources")
    assert resources["fieldConfig"]["defaults"]["unit"] == "mbytes"  # memory: left axis
    assert _right_axis_series(resources) == {".*CPU %$"}
    assert all(re.fullmatch(".*CPU %$", t["legendFormat"]) for t in resources["targets"]
               if "cpu" in t["expr"])

    http = panel(model, "HTTP request rate and error ratio")
    assert _right_axis_series(http) == {"error ratio"}
    assert {t["legendFormat"] for t in http["targets"]} == {"requests/s", "error ratio"}


# -- metric names -----------------------------------------------------------------------------

def _queried_names(model: Any) -> set[str]:
    names: set[str] = set()
    for expr in [*all_queries(model), *rule_exprs()]:
        names |= metric_names(expr)
    return names


def _exported_series_names() -> set[str]:
    out = set()
    for spec in METRICS:
        if spec.kind == "histogram":
            out |= {spec.prometheus + s for s in ("_bucket", "_count", "_sum")}
        else:
            out.add(spec.prometheus)
    return out


def test_every_queried_metric_is_in_the_metric_table(model: Any) -> None:
    # `up` is Prometheus's own per-target series.
    assert _queried_names(model) - {"up"} <= _exported_series_names()


def test_every_page_figure_is_on_the_dashboard(model: Any) -> None:
    """Parity with the native page: each snapshot field's metric is charted somewhere."""
    names = set()
    for expr in all_queries(model):
        names |= metric_names(expr)
    page = {spec.prometheus for spec in METRICS if spec.field is not None}
    assert page - names == set()


def test_every_queried_metric_exists_in_live_metrics(model: Any, live_metrics_text: str) -> None:
    """Against GET /metrics of a fresh dashboard fed one job per provider, one alert and a
    health change (see conftest.feed_labelled_series): labelled series only exist once
    something was recorded under that label."""
    exposed = {sample.name for family in text_string_to_metric_families(live_metrics_text)
               for sample in family.samples}
    assert _queried_names(model) - {"up"} - exposed == set()


# -- provisioning -----------------------------------------------------------------------------

def test_provisioning_files() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert datasources["apiVersion"] == 1
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    prometheus = load_yaml(GRAFANA / "prometheus" / "prometheus.yml")
    assert ds["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]

    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "hyperdash.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
