"""hyperdash_otel.fleet.alerts: Alertmanager's alerts and the instances' own, as the page's.

(Not ``test_alerts.py``: tests/browser has one, and test modules share one namespace.)
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdash_otel import Dashboard
from hyperdash_otel.fleet.alerts import (
    ALERTMANAGER_ALERTS_PATH,
    MAX_INSTANCE_LENGTH,
    MAX_TEXT_LENGTH,
    alertmanager_alerts_path,
    from_alertmanager,
    from_instance,
    merge_alerts,
)
from hyperdash_otel.snapshot import ALERT_FIELDS

FLEET_KEYS = [*ALERT_FIELDS, "source", "instance"]


def am_alert(**overrides: Any) -> dict[str, Any]:
    """One alert as Alertmanager 0.25's GET /api/v2/alerts answers it."""
    alert: dict[str, Any] = {
        "annotations": {
            "summary": "127.0.0.1:8081 reports itself unhealthy",
            "description": "The service on 127.0.0.1:8081 set its system health ...",
        },
        "endsAt": "2026-11-30T19:04:00.000Z",
        "fingerprint": "5f1c2e9a0b3d4c67",
        "receivers": [{"name": "fleet"}],
        "startsAt": "2026-11-30T19:00:00.123456789Z",
        "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
        "updatedAt": "2026-11-30T19:01:00.000Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=...",
        "labels": {
            "alertname": "HyperdashSystemUnhealthy",
            "instance": "127.0.0.1:8081",
            "job": "hyperdash",
            "severity": "critical",
        },
    }
    alert.update(overrides)
    return alert


def with_labels(**labels: str) -> dict[str, Any]:
    alert = am_alert()
    alert["labels"] = {**alert["labels"], **labels}
    return alert


def instance_alert(n: int = 1, severity: str = "warning", message: str = "High memory usage",
                   time: str = "2026-11-30T18:59:00.000Z") -> dict[str, Any]:
    return {"id": f"alert-{n}", "severity": severity, "message": message, "time": time}


# -- from_alertmanager ------------------------------------------------------------------------

def test_an_alertmanager_alert_becomes_the_pages_alert() -> None:
    assert from_alertmanager([am_alert()]) == [{
        "id": "am-5f1c2e9a0b3d4c67",
        "severity": "critical",
        "message": "127.0.0.1:8081 reports itself unhealthy",
        "time": "2026-11-30T19:00:00.123Z",
        "source": "alertmanager",
        "instance": "127.0.0.1:8081",
    }]


def test_keys_are_the_originals_then_the_fleets() -> None:
    (alert,) = from_alertmanager([am_alert()])
    assert list(alert) == FLEET_KEYS
    assert all(isinstance(alert[k], t) for k, t in ALERT_FIELDS.items())


@pytest.mark.parametrize(("label", "severity"), [
    ("critical", "critical"), ("warning", "warning"), ("info", "info"),
    ("CRITICAL", "critical"), (" Info ", "info"),
    ("page", "warning"), ("", "warning"), ("error", "warning"),
])
def test_severity_comes_from_the_severity_label(label: str, severity: str) -> None:
    (alert,) = from_alertmanager([with_labels(severity=label)])
    assert alert["severity"] == severity


def test_without_a_severity_label_an_alert_is_a_warning() -> None:
    alert = am_alert()
    del alert["labels"]["severity"]
    assert from_alertmanager([alert])[0]["severity"] == "warning"


@pytest.mark.parametrize("annotations", [{}, {"summary": "  "}, {"description": "d"}, None])
def test_without_a_summary_the_message_is_the_alertname(annotations: Any) -> None:
    alert = am_alert(annotations=annotations)
    if annotations is None:
        del alert["annotations"]
    assert from_alertmanager([alert])[0]["message"] == "HyperdashSystemUnhealthy"


@pytest.mark.parametrize("labels", [
    {"alertname": "HyperdashTickErrors", "job": "hyperdash"},
    {"alertname": "HyperdashTickErrors", "instance": ""},
])
def test_an_alert_without_an_instance_has_instance_none(labels: dict[str, str]) -> None:
    assert from_alertmanager([am_alert(labels=labels)])[0]["instance"] is None


def test_the_id_and_time_are_the_same_on_every_tick() -> None:
    """Alertmanager re-sends a firing alert with new updatedAt/endsAt; what the page keys
    dismissals by (id, time) must not move."""
    first = from_alertmanager([am_alert()])
    later = from_alertmanager([am_alert(updatedAt="2026-11-30T19:09:00Z",
                                        endsAt="2026-11-30T19:13:00Z")])
    assert [(a["id"], a["time"]) for a in first] == [(a["id"], a["time"]) for a in later]


def test_a_refiring_alert_keeps_its_id_and_gets_a_new_time() -> None:
    (before,) = from_alertmanager([am_alert()])
    (again,) = from_alertmanager([am_alert(startsAt="2026-11-30T20:00:00Z")])
    assert again["id"] == before["id"] and again["time"] == "2026-11-30T20:00:00.000Z"


def test_the_fingerprint_is_lower_cased_in_the_id() -> None:
    assert from_alertmanager([am_alert(fingerprint="ABCDEF0123")])[0]["id"] == "am-abcdef0123"


@pytest.mark.parametrize(("starts", "time"), [
    ("2026-11-30T19:00:00Z", "2026-11-30T19:00:00.000Z"),
    ("2026-11-30T19:00:00.987654321Z", "2026-11-30T19:00:00.987Z"),
    ("2026-11-30T21:00:00.5+02:00", "2026-11-30T19:00:00.500Z"),
    ("2026-11-30T18:00:00-01:00", "2026-11-30T19:00:00.000Z"),
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),  # Go's zero time
])
def test_starts_at_becomes_utc_milliseconds(starts: str, time: str) -> None:
    assert from_alertmanager([am_alert(startsAt=starts)])[0]["time"] == time


def test_silenced_or_inhibited_alerts_are_left_out() -> None:
    suppressed = am_alert(fingerprint="01", status={"inhibitedBy": [], "silencedBy": ["s1"],
                                                    "state": "suppressed"})
    unprocessed = am_alert(fingerprint="02", status={"state": "unprocessed"})
    no_status = am_alert(fingerprint="03")
    del no_status["status"]
    ids = [a["id"] for a in from_alertmanager([suppressed, unprocessed, no_status])]
    assert sorted(ids) == ["am-02", "am-03"]


def test_alerts_come_newest_first() -> None:
    payload = [am_alert(fingerprint=f"{n:02x}", startsAt=f"2026-11-30T19:0{n}:00Z")
               for n in (3, 1, 4, 2)]
    assert [a["time"][11:16] for a in from_alertmanager(payload)] == [
        "19:04", "19:03", "19:02", "19:01"]


def test_at_most_limit_alerts_the_newest() -> None:
    payload = [am_alert(fingerprint=f"{n:04x}", startsAt=f"2026-11-30T19:{n % 60:02d}:00Z")
               for n in range(60)]
    kept = from_alertmanager(payload, limit=3)
    assert [a["time"][11:16] for a in kept] == ["19:59", "19:58", "19:57"]
    assert from_alertmanager(payload, limit=0) == []
    assert len(from_alertmanager(payload * 30)) == 1000  # MAX_ALERTMANAGER_ALERTS


def test_an_empty_answer_is_no_alerts() -> None:
    assert from_alertmanager([]) == []


def test_the_payload_is_not_changed() -> None:
    payload = [am_alert(), with_labels(instance="127.0.0.1:8082")]
    before = copy.deepcopy(payload)
    from_alertmanager(payload)
    assert payload == before


def test_a_real_json_answer_decodes() -> None:
    """The fleet hands over json.loads of the HTTP body as it is."""
    body = json.dumps([am_alert()]).encode()
    assert from_alertmanager(json.loads(body))[0]["id"] == "am-5f1c2e9a0b3d4c67"


def _without(key: str) -> dict[str, Any]:
    alert = am_alert()
    del alert[key]
    return alert


@pytest.mark.parametrize(("payload", "field"), [
    ({"alerts": []}, "alerts: Alertmanager's answer must be a JSON list, got dict"),
    (None, "got null"),
    ("[]", "got str"),
    ([[]], r"alerts\[0\] must be an object, got list"),
    ([am_alert(), None], r"alerts\[1\] must be an object, got null"),
    ([_without("labels")], r"alerts\[0\]\.labels must be an object of strings, missing"),
    ([am_alert(labels=["a"])], r"alerts\[0\]\.labels must be an object of strings, a list"),
    ([am_alert(labels={"alertname": "A", "instance": 8081})],
     r"alerts\[0\]\.labels\.'instance' must be a string, got int"),
    ([am_alert(annotations="x")], r"alerts\[0\]\.annotations must be an object"),
    ([am_alert(annotations={"summary": None})],
     r"alerts\[0\]\.annotations\.'summary' must be a string, got null"),
    ([_without("startsAt")], r"alerts\[0\]\.startsAt must be an RFC 3339 time string, missing"),
    ([am_alert(startsAt=1764529200)], r"alerts\[0\]\.startsAt must be an RFC 3339 time "
                                      r"string, a int"),
    ([am_alert(startsAt="yesterday")], r"alerts\[0\]\.startsAt must be an RFC 3339 time, "
                                       r"got 'yesterday'"),
    ([am_alert(startsAt="2026-11-30T19:00:00")],
     r"alerts\[0\]\.startsAt must carry its UTC offset"),
    ([am_alert(startsAt="2026-02-30T19:00:00Z")], r"alerts\[0\]\.startsAt must be an RFC"),
    ([am_alert(startsAt="0001-01-01T00:00:00+01:00")],
     r"alerts\[0\]\.startsAt is out of range in UTC"),
    ([am_alert(startsAt="2026-11-30T19:00:00Z" + "0" * 10_000)],
     r"alerts\[0\]\.startsAt must be an RFC 3339 time, got 10020 characters"),
    ([_without("fingerprint")], r"alerts\[0\]\.fingerprint must be a hex string .* missing"),
    ([am_alert(fingerprint="")], r"alerts\[0\]\.fingerprint must be a hex string"),
    ([am_alert(fingerprint="../etc")], r"alerts\[0\]\.fingerprint must be a hex string"),
    ([am_alert(fingerprint=12)], r"alerts\[0\]\.fingerprint must be a hex string"),
    ([am_alert(annotations={}, labels={"instance": "127.0.0.1:8081"})],
     r"alerts\[0\]: an alert needs a summary annotation or an alertname label"),
    ([am_alert(status="active")], r"alerts\[0\]\.status must be an object, got str"),
    ([am_alert(status={"state": 1})], r"alerts\[0\]\.status\.state must be a string"),
])
def test_a_malformed_answer_raises_naming_the_field(payload: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        from_alertmanager(payload)


@pytest.mark.parametrize("limit", [-1, True, 1.5])
def test_a_bad_limit_is_refused(limit: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="limit"):
        from_alertmanager([], limit=limit)


def test_hostile_text_is_made_safe() -> None:
    alert = am_alert(annotations={"summary": "disk \udcff full\x1b[2J\x00 on\tvm\n\ud83d\ude00"},
                     labels={"alertname": "X", "instance": "h\x07st:80\udc80"})
    (out,) = from_alertmanager([alert])
    assert out["message"] == "disk \ufffd full\ufffd[2J\ufffd on\tvm\n😀"
    assert out["instance"] == "h\ufffdst:80\ufffd"
    json.dumps(out).encode("utf-8")  # encodable: no lone surrogate left


def test_oversized_text_is_cut_with_an_ellipsis() -> None:
    alert = am_alert(annotations={"summary": "s" * 100_000},
                     labels={"alertname": "X", "instance": "i" * 100_000})
    (out,) = from_alertmanager([alert])
    assert len(out["message"]) == MAX_TEXT_LENGTH and out["message"].endswith("\u2026")
    assert len(out["instance"]) == MAX_INSTANCE_LENGTH


def test_html_in_a_summary_stays_text() -> None:
    """The page writes messages with textContent; here they pass unchanged, not escaped
    twice."""
    summary = "<img src=x onerror=alert(1)> on 127.0.0.1:8081"
    alert = am_alert(annotations={"summary": summary})
    assert from_alertmanager([alert])[0]["message"] == summary


def test_the_query_path_filters_to_this_fleet() -> None:
    assert alertmanager_alerts_path() == ALERTMANAGER_ALERTS_PATH
    path = alertmanager_alerts_path(['job="hyperdash"', 'env=~"prod|stage"'])
    assert path.startswith(ALERTMANAGER_ALERTS_PATH + "&")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(path).query) == {
        "active": ["true"], "silenced": ["false"], "inhibited": ["false"],
        "filter": ['job="hyperdash"', 'env=~"prod|stage"']}


# -- from_instance ----------------------------------------------------------------------------

def test_an_instances_alerts_are_tagged_with_it() -> None:
    assert from_instance("127.0.0.1:8082", [instance_alert(3, "info", "Backup done")]) == [{
        "id": "127.0.0.1:8082/alert-3",
        "severity": "info",
        "message": "Backup done",
        "time": "2026-11-30T18:59:00.000Z",
        "source": "instance",
        "instance": "127.0.0.1:8082",
    }]


def test_a_real_dashboards_alerts_pass(dash: Dashboard) -> None:
    """What an instance's /api/metrics carries: the dashboard's own snapshot."""
    dash.add_alert("critical", "Service degraded")
    dash.add_alert("info", "Backup completed successfully")
    alerts = dash.snapshot()["alerts"]
    tagged = from_instance("127.0.0.1:8081", alerts)
    assert [(a["id"], a["severity"], a["message"], a["time"]) for a in tagged] == [
        (f"127.0.0.1:8081/{a['id']}", a["severity"], a["message"], a["time"]) for a in alerts]
    assert [list(a) for a in tagged] == [FLEET_KEYS] * 2


@pytest.mark.parametrize(("instance", "alerts", "field"), [
    ("", [], "instance must be a non-empty string, got empty"),
    (None, [], "instance must be a non-empty string, got a null"),
    ("h:1", {"alerts": []}, "h:1 alerts must be a JSON list, got dict"),
    ("h:1", ["x"], r"h:1 alerts\[0\] must be an object, got str"),
    ("h:1", [{**instance_alert(), "time": None}], r"h:1 alerts\[0\]\.time must be a string"),
    ("h:1", [{k: w for k, w in instance_alert().items() if k != "id"}],
     r"h:1 alerts\[0\]\.id must be a string, missing"),
    ("h:1", [{**instance_alert(), "message": 5}], r"h:1 alerts\[0\]\.message must be a string"),
    ("h:1", [instance_alert(message=" \n")], r"h:1 alerts\[0\]\.message must not be empty"),
    ("h:1", [{**instance_alert(), "id": " "}], r"h:1 alerts\[0\]\.id must be 1 to 128"),
    ("h:1", [{**instance_alert(), "id": "a" * 129}], r"h:1 alerts\[0\]\.id must be 1 to 128"),
    ("h:1", [instance_alert(severity="fatal")], r"h:1 alerts\[0\]\.severity must be one of"),
    ("h:1", [instance_alert(time="noon")], r"h:1 alerts\[0\]\.time must be an RFC 3339 time"),
])
def test_a_malformed_instance_list_raises_naming_the_field(
        instance: Any, alerts: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        from_instance(instance, alerts)


# -- merge_alerts -----------------------------------------------------------------------------

def test_merge_tags_sorts_and_keeps_both_sources() -> None:
    am = from_alertmanager([am_alert()])  # 19:00:00.123
    merged = merge_alerts(am, {
        "127.0.0.1:8082": [instance_alert(1, time="2026-11-30T19:05:00.000Z")],
        "127.0.0.1:8081": [instance_alert(1, "info", "Backup done", "2026-11-30T18:00:00.000Z")],
    }, limit=20)
    assert [(a["source"], a["instance"], a["id"]) for a in merged] == [
        ("instance", "127.0.0.1:8082", "127.0.0.1:8082/alert-1"),
        ("alertmanager", "127.0.0.1:8081", "am-5f1c2e9a0b3d4c67"),
        ("instance", "127.0.0.1:8081", "127.0.0.1:8081/alert-1"),
    ]
    assert all(list(a) == FLEET_KEYS for a in merged)
    assert len({a["id"] for a in merged}) == len(merged)  # "alert-1" twice, distinct here


def test_without_alertmanager_only_the_instances_alerts() -> None:
    merged = merge_alerts([], {"h:1": [instance_alert(1)], "h:2": []}, limit=20)
    assert [(a["id"], a["source"]) for a in merged] == [("h:1/alert-1", "instance")]


@pytest.mark.parametrize(("instance", "severity", "message", "dropped"), [
    ("127.0.0.1:8081", "critical", "127.0.0.1:8081 reports itself unhealthy", True),
    ("127.0.0.1:8081", "critical", "  127.0.0.1:8081   REPORTS itself unhealthy ", True),
    ("127.0.0.1:8082", "critical", "127.0.0.1:8081 reports itself unhealthy", False),
    ("127.0.0.1:8081", "warning", "127.0.0.1:8081 reports itself unhealthy", False),
    ("127.0.0.1:8081", "critical", "Service degraded", False),
])
def test_an_instance_alert_that_repeats_alertmanagers_is_dropped(
        instance: str, severity: str, message: str, dropped: bool) -> None:
    am = from_alertmanager([am_alert()])
    merged = merge_alerts(am, {instance: [instance_alert(7, severity, message)]}, limit=20)
    assert [a["source"] for a in merged] == (
        ["alertmanager"] if dropped else ["alertmanager", "instance"])


def test_an_alert_listed_by_two_alertmanagers_shows_once() -> None:
    """An HA pair answers with the same alert (same fingerprint) each."""
    am = from_alertmanager([am_alert()]) + from_alertmanager([am_alert()])
    assert len(merge_alerts(am, {}, limit=20)) == 1


def test_merge_keeps_at_most_limit_the_newest() -> None:
    per_instance = {f"h:{n}": [instance_alert(1, time=f"2026-11-30T19:{n:02d}:00.000Z")]
                    for n in range(50)}
    merged = merge_alerts([], per_instance, limit=5)
    assert [a["instance"] for a in merged] == ["h:49", "h:48", "h:47", "h:46", "h:45"]
    assert merge_alerts([], per_instance, limit=0) == []
    with pytest.raises(ValueError, match="limit must be >= 0"):
        merge_alerts([], per_instance, limit=-1)


def test_equal_times_keep_one_order_on_every_tick() -> None:
    when = "2026-11-30T19:00:00.000Z"
    am = from_alertmanager([am_alert(fingerprint="0b", startsAt=when),
                            am_alert(fingerprint="0a", startsAt=when)])
    per_instance = {"h:2": [instance_alert(2, time=when), instance_alert(1, time=when)],
                    "h:1": [instance_alert(9, time=when)]}
    expected = ["am-0a", "am-0b", "h:1/alert-9", "h:2/alert-1", "h:2/alert-2"]
    assert [a["id"] for a in merge_alerts(am, per_instance, limit=20)] == expected
    reordered = dict(reversed(per_instance.items()))
    assert [a["id"] for a in merge_alerts(am[::-1], reordered, limit=20)] == expected


def test_one_malformed_instance_fails_the_merge_naming_it() -> None:
    with pytest.raises(ValueError, match=r"h:2 alerts\[0\]\.time"):
        merge_alerts([], {"h:1": [instance_alert()], "h:2": [instance_alert(time="")]}, 20)


def test_merge_changes_neither_input() -> None:
    am = from_alertmanager([am_alert()])
    per_instance = {"h:1": [instance_alert()]}
    before = copy.deepcopy((am, per_instance))
    merged = merge_alerts(am, per_instance, limit=20)
    merged[0]["message"] = "changed"
    assert (am, per_instance) == before


# -- any JSON at all: a clean answer or a ValueError, never anything else -----------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["labels", "annotations", "startsAt", "fingerprint", "status"])
_label_keys = st.sampled_from(["alertname", "severity", "instance", "summary", "state"])


@st.composite
def _mangled_alert(draw: st.DrawFn) -> Any:
    """A real alert with a few fields (or fields of its maps) replaced by any JSON value."""
    alert = am_alert()
    for _ in range(draw(st.integers(0, 3))):
        key = draw(_keys)
        if isinstance(alert.get(key), dict) and draw(st.booleans()):
            alert[key] = {**alert[key], draw(_label_keys): draw(_json | st.text())}
        elif draw(st.booleans()):
            alert[key] = draw(_json)
        else:
            alert.pop(key, None)
    return alert


def _assert_clean(alerts: list[dict[str, Any]]) -> None:
    for alert in alerts:
        assert list(alert) == FLEET_KEYS
        assert alert["severity"] in ("critical", "warning", "info")
        assert isinstance(alert["message"], str) and 0 < len(alert["message"]) <= MAX_TEXT_LENGTH
        assert alert["instance"] is None or len(alert["instance"]) <= MAX_INSTANCE_LENGTH
        assert datetime.fromisoformat(alert["time"].replace("Z", "+00:00")).tzinfo is not None
    json.dumps(alerts).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(payload=_json | st.lists(_mangled_alert(), max_size=4))
def test_any_payload_gives_clean_alerts_or_a_value_error(payload: Any) -> None:
    try:
        alerts = from_alertmanager(payload)
    except ValueError as error:
        assert str(error).startswith("alerts")  # names the field
        return
    _assert_clean(alerts)


@settings(max_examples=200, deadline=None)
@given(alerts=_json | st.lists(st.fixed_dictionaries(
    {"id": st.text(), "severity": st.sampled_from(["critical", "info", "x"]),
     "message": st.text(), "time": st.sampled_from(["2026-11-30T19:00:00Z", "", "noon"])}),
    max_size=4))
def test_any_instance_list_gives_clean_alerts_or_a_value_error(alerts: Any) -> None:
    try:
        merged = merge_alerts(from_alertmanager([am_alert()]), {"h:1": alerts}, limit=20)
    except ValueError as error:
        assert str(error).startswith("h:1 alerts")
        return
    _assert_clean(merged)
