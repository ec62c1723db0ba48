"""Text that cannot be encoded as UTF-8 never reaches the JSON, the exposition or the tick.

A lone surrogate is what Python makes of undecodable bytes (``os.fsdecode(b"vm-\\xff")``)
and what JSON's ``"\\udcff"`` decodes to. The rule (validation.py): free text gets U+FFFD,
a job id is refused, and whatever a user's own instrument carries is cleaned on collect.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Gauge
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from hyperdash_otel import Dashboard, JobInfo
from hyperdash_otel.server.stream import encode_snapshot
from hyperdash_otel import validation

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SURROGATE = os.fsdecode(b"vm-\xff")  # 'vm-\udcff', as a file name with a Latin-1 byte gives
REPLACED = "vm-\ufffd"
# The error text's field (``error``, or ``error_msg`` once it follows the original's name).
ERROR_FIELD = next(f.name for f in dataclasses.fields(JobInfo) if f.name.startswith("error"))


def assert_everything_encodes(dash: Dashboard) -> dict[str, Any]:
    """What the tick, /api/jobs and both /metrics formats send, each strictly valid."""
    payload = encode_snapshot(dash.snapshot(now=NOW))
    snap: dict[str, Any] = json.loads(payload.decode("utf-8"))
    json.dumps(dash.jobs(), ensure_ascii=False).encode("utf-8")  # /api/jobs
    list(parse_text(dash.exposition()[0].decode("utf-8")))
    list(parse_openmetrics(dash.exposition(OPENMETRICS)[0].decode("utf-8")))
    return snap


def test_the_rule_for_free_text() -> None:
    clean_text, has_surrogates = validation.clean_text, validation.has_surrogates
    assert SURROGATE == "vm-\udcff" and has_surrogates(SURROGATE)
    assert clean_text(SURROGATE) == REPLACED
    assert clean_text("\ud83d\ude00 export") == "\U0001f600 export"  # a split pair is joined
    assert clean_text("a\ud83db\udc80") == "a\ufffdb\ufffd"
    plain = "export-é"
    assert clean_text(plain) is plain and not has_surrogates(plain)


@settings(max_examples=200, deadline=None)
@given(st.text(st.one_of(st.characters(codec="utf-8"), st.characters(categories=["Cs"]),
                         st.sampled_from(["\ud83d", "\ude00", "\udcff"]))))
def test_clean_text_is_decoding_utf16_with_replacement(value: str) -> None:
    cleaned = validation.clean_text(value)
    assert cleaned == value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    cleaned.encode("utf-8")


@pytest.mark.parametrize("field", ["name", "vm_name", "provider", ERROR_FIELD])
def test_a_surrogate_in_a_job_text_field_becomes_ufffd(dash: Dashboard, field: str) -> None:
    dash.add_job(JobInfo(id="job-1", status="failed", **{field: SURROGATE}))
    job = dash.job("job-1")
    assert job is not None and REPLACED in job.values()
    snap = assert_everything_encodes(dash)
    assert REPLACED in snap["recent_jobs"][0].values()


def test_a_surrogate_provider_is_a_clean_label_for_good(dash: Dashboard) -> None:
    dash.add_job(JobInfo(id="job-1", status="running", provider=SURROGATE))
    dash.add_job(JobInfo(id="job-2", status="running", provider=os.fsdecode(b"vm-\xfe")))
    snap = assert_everything_encodes(dash)
    assert snap["provider_stats"] == {REPLACED: 2}
    assert (f'hyperdash_provider_jobs_total{{otel_scope_name="hyperdash",otel_scope_schema_url="",'
            f'otel_scope_version="",provider="{REPLACED}"}} 2.0') in dash.metrics_text()


def test_a_surrogate_in_an_alert_message_becomes_ufffd(dash: Dashboard) -> None:
    alert_id = dash.add_alert("warning", f"export of {SURROGATE} failed")
    snap = assert_everything_encodes(dash)
    assert [(a["id"], a["message"]) for a in snap["alerts"]] == [
        (alert_id, f"export of {REPLACED} failed")
    ]


def test_a_split_surrogate_pair_is_joined_into_its_character(dash: Dashboard) -> None:
    dash.add_job(JobInfo(id="job-1", name="\ud83d\ude00 export"))
    assert dash.job("job-1")["name"] == "\U0001f600 export"  # type: ignore[index]


def test_a_replaced_text_is_measured_after_replacement(make_dashboard: Callable[..., Dashboard]
                                                       ) -> None:
    dash = make_dashboard(max_text_length=3)
    dash.add_alert("info", "\ud83d\ude00ab")  # 4 code points in, 3 characters stored
    assert dash.snapshot(now=NOW)["alerts"][0]["message"] == "\U0001f600ab"


@pytest.mark.parametrize("job_id", [SURROGATE, "\udcff", "job-\ud83d\ude00"])
def test_a_surrogate_in_a_job_id_is_refused_and_changes_nothing(dash: Dashboard, job_id: str
                                                                ) -> None:
    dash.add_job(JobInfo(id="keep", status="running", provider="aws"))
    before = dash.snapshot(now=NOW), dash.metrics_text()
    with pytest.raises(ValueError, match=r"job\.id .*surrogate"):
        dash.add_job(JobInfo(id=job_id, provider="gcp"))
    assert (dash.snapshot(now=NOW), dash.metrics_text()) == before


def user_counter(dash: Dashboard, *, meter: str = "user", description: str = "exports",
                 label: str = "x") -> None:
    counter = dash.meter_provider.get_meter(meter).create_counter(
        "user.exports", description=description
    )
    counter.add(3, {"file": label})


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"label": "x\udcff"}, 'file="x\ufffd"'),
        ({"description": "exports of \udcff"}, "# HELP user_exports_total exports of \ufffd"),
        ({"meter": "lib-\udcff"}, 'otel_scope_name="lib-\ufffd"'),
    ],
    ids=["label value", "description", "meter name"],
)
def test_a_surrogate_in_a_custom_instrument_is_exported_as_ufffd(
    dash: Dashboard, kwargs: dict[str, str], where: str
) -> None:
    user_counter(dash, **kwargs)
    snap = assert_everything_encodes(dash)
    assert where in dash.metrics_text()
    [series] = snap["custom"]["user_exports_total"]
    assert series["value"] == 3
    assert series["labels"]["file"] == kwargs.get("label", "x").replace("\udcff", "\ufffd")


def test_a_native_metric_with_a_surrogate_label_is_exported_as_ufffd(dash: Dashboard) -> None:
    Gauge("queue_depth", "Depth", ["queue"], registry=dash.registry).labels(SURROGATE).set(4)
    snap = assert_everything_encodes(dash)
    assert f'queue_depth{{queue="{REPLACED}"}} 4.0' in dash.metrics_text()
    assert snap["custom"]["queue_depth"] == [{"labels": {"queue": REPLACED}, "value": 4.0}]


def test_a_surrogate_in_a_resource_attribute_is_exported_as_ufffd(
    make_dashboard: Callable[..., Dashboard], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Environment variables hold undecodable bytes as surrogates, as file names do.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"host.name={SURROGATE}")
    dash = make_dashboard()
    assert_everything_encodes(dash)
    assert f'host_name="{REPLACED}"' in dash.metrics_text()


def test_series_that_become_equal_are_exported_once(dash: Dashboard,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    counter = dash.meter_provider.get_meter("user").create_counter("user.exports")
    counter.add(3, {"file": "x\udcff"})
    counter.add(5, {"file": "x\udcfe"})
    for _ in range(2):
        snap = assert_everything_encodes(dash)
    series = [line for line in dash.metrics_text().splitlines()
              if line.startswith("user_exports_total{")]
    assert len(series) == 1 and 'file="x\ufffd"' in series[0]
    assert len(snap["custom"]["user_exports_total"]) == 1
    warnings = [r.getMessage() for r in caplog.records if "user_exports" in r.getMessage()]
    assert len(warnings) == 1 and "left out" in warnings[0]  # once, not every tick


def test_encode_snapshot_never_raises_on_a_surrogate() -> None:
    payload = encode_snapshot({"name": SURROGATE, "k\udcff": ["\ud83d\ude00"]})
    assert payload == '{"name":"vm-\ufffd","k\ufffd":["\U0001f600"]}'.encode()
    with pytest.raises(ValueError):
        encode_snapshot({"a": float("nan")})  # still an error: NaN is not JSON
