"""The fleet page's alerts: Alertmanager's firing alerts merged with each instance's own.

Two kinds of alert reach the fleet page, and both end up as the original's Alert dicts
(``id``, ``severity``, ``message``, ``time``; see :data:`hyperdash_otel.snapshot.ALERT_FIELDS`)
with two keys of the fleet after them:

* ``source``: ``"alertmanager"`` for an alert of the bundled rules
  (``grafana/prometheus/alerts.yml``) that Alertmanager holds, ``"instance"`` for one an
  instance raised itself with ``Dashboard.add_alert`` (or its stall detection);
* ``instance``: the instance it concerns (the target's ``instance`` label, such as
  ``"127.0.0.1:8081"``), or ``None`` for a rule that does not keep that label.

Everything here is pure: it takes decoded JSON and returns lists, touches no socket and
reads no clock, so the fleet's tick and the tests call it alike.

Both payloads come from other processes, so they are checked, never trusted: a malformed one
raises ``ValueError`` naming the field (``alerts[3].startsAt``), and free text (a summary, an
instance's message) is made safe the way the dashboard's own text is
(:func:`hyperdash_otel.validation.clean_text`: no lone surrogates, no control characters
but tabs and newlines, at most :data:`MAX_TEXT_LENGTH` characters).

>>> am = from_alertmanager([{
...     "labels": {"alertname": "HyperdashSystemUnhealthy", "severity": "critical",
...                "instance": "127.0.0.1:8081", "job": "hyperdash"},
...     "annotations": {"summary": "127.0.0.1:8081 reports itself unhealthy"},
...     "startsAt": "2026-11-30T19:00:00.123456789Z", "fingerprint": "5f1c2e9a0b3d4c67"}])
>>> am[0]["id"], am[0]["severity"], am[0]["time"], am[0]["source"], am[0]["instance"]
('am-5f1c2e9a0b3d4c67', 'critical', '2026-11-30T19:00:00.123Z', 'alertmanager', '127.0.0.1:8081')
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .. import validation as v

__all__ = [
    "ALERTMANAGER_ALERTS_PATH",
    "MAX_ALERTMANAGER_ALERTS",
    "MAX_INSTANCE_LENGTH",
    "MAX_TEXT_LENGTH",
    "SEVERITIES",
    "alertmanager_alerts_path",
    "from_alertmanager",
    "from_instance",
    "merge_alerts",
]

SEVERITIES = ("critical", "warning", "info")
"""The page's levels. An Alertmanager alert whose ``severity`` label is none of them (or
that has none) shows as a warning: an alert someone routed to this Alertmanager is worth
a look, but it did not say it pages."""

ALERTMANAGER_ALERTS_PATH = "/api/v2/alerts?active=true&silenced=false&inhibited=false"
"""What the fleet asks Alertmanager for: alerts that fire and that nobody has silenced or
inhibited (a silence set in Alertmanager hides the alert on the page too)."""

MAX_ALERTMANAGER_ALERTS = 1000
"""Most alerts :func:`from_alertmanager` returns (the newest): an Alertmanager shared by many
services may hold thousands, and the page shows three."""

MAX_TEXT_LENGTH = 1024
"""Longest message kept (characters), as the dashboard's default ``max_text_length``; a
longer one is cut and ends with an ellipsis."""

MAX_INSTANCE_LENGTH = 256
"""Longest ``instance`` label kept; a ``host:port`` is far shorter."""

_MAX_TIME_LENGTH = 64  # RFC 3339 with nanoseconds and an offset is 35 characters
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?", re.ASCII)
"""Alertmanager's times (Go's RFC 3339 with nanoseconds): seconds, fraction, offset."""
_MAX_ID_LENGTH = 128
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{1,64}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ELLIPSIS = "\u2026"


def alertmanager_alerts_path(matchers: Iterable[str] = ()) -> str:
    """:data:`ALERTMANAGER_ALERTS_PATH` with Alertmanager ``filter`` matchers added, so a
    shared Alertmanager answers only with this fleet's alerts.

    >>> alertmanager_alerts_path(['job="hyperdash"'])
    '/api/v2/alerts?active=true&silenced=false&inhibited=false&filter=job%3D%22hyperdash%22'
    """
    query = "".join(f"&{urllib.parse.urlencode({'filter': m})}" for m in matchers)
    return ALERTMANAGER_ALERTS_PATH + query


def from_alertmanager(
    payload: object, *, limit: int = MAX_ALERTMANAGER_ALERTS
) -> list[dict[str, Any]]:
    """Alertmanager's ``GET /api/v2/alerts`` answer as the page's Alert dicts, newest first.

    - ``severity`` is the ``severity`` label (critical, warning, info; anything else is
      ``"warning"``);
    - ``message`` is the ``summary`` annotation, or the ``alertname`` label without one;
    - ``time`` is ``startsAt`` (RFC 3339 UTC, milliseconds): when the alert started firing,
      so it stays the same on every tick while the alert fires;
    - ``id`` is ``"am-"`` + the alert's fingerprint (a hash of its labels): the same on every
      tick too, so a dismissal on the page holds; the page keys dismissals by id and time,
      so an alert that resolves and fires again later shows again;
    - ``source`` is ``"alertmanager"``, ``instance`` the ``instance`` label or ``None``.

    Alerts whose ``status.state`` is ``"suppressed"`` (silenced or inhibited) are left out,
    in case the query did not filter them. At most ``limit`` alerts are returned.

    Raises ``ValueError`` naming the field when the payload is not what Alertmanager's v2 API
    answers: not a list, an alert without ``labels``, ``startsAt`` or ``fingerprint``, a value
    of the wrong type, a ``startsAt`` that is not an RFC 3339 time with its offset.
    """
    v.integer(limit, "limit", 0)
    if not isinstance(payload, list):
        raise ValueError(f"alerts: Alertmanager's answer must be a JSON list, got "
                         f"{_kind(payload)}")
    alerts = []
    for index, item in enumerate(payload):
        where = f"alerts[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object, got {_kind(item)}")
        alert = _one_alertmanager_alert(item, where)
        if alert is not None:
            alerts.append(alert)
    return _newest_first(alerts, limit)


def _one_alertmanager_alert(item: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    labels = _string_map(item, "labels", where, required=True)
    annotations = _string_map(item, "annotations", where, required=False)
    status = item.get("status")
    if status is not None:
        if not isinstance(status, dict):
            raise ValueError(f"{where}.status must be an object, got {_kind(status)}")
        state = status.get("state")
        if state is not None and not isinstance(state, str):
            raise ValueError(f"{where}.status.state must be a string, got {_kind(state)}")
        if state == "suppressed":
            return None
    fingerprint = item.get("fingerprint")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        shown = "missing" if fingerprint is None else v.quoted(fingerprint)
        raise ValueError(f"{where}.fingerprint must be a hex string of 1 to 64 digits, "
                         f"got {shown}")
    message = annotations.get("summary", "").strip() or labels.get("alertname", "").strip()
    if not message:
        raise ValueError(f"{where}: an alert needs a summary annotation or an alertname "
                         f"label for its message; labels.alertname is missing")
    severity = labels.get("severity", "").strip().lower()
    return {
        "id": f"am-{fingerprint.lower()}",
        "severity": severity if severity in SEVERITIES else "warning",
        "message": _safe_text(message, MAX_TEXT_LENGTH),
        "time": _time(item.get("startsAt"), f"{where}.startsAt"),
        "source": "alertmanager",
        "instance": _instance(labels.get("instance")),
    }


def from_instance(instance: str, alerts: object) -> list[dict[str, Any]]:
    """One instance's own alerts (the ``alerts`` list of its ``/api/metrics``), checked and
    tagged with ``source: "instance"`` and ``instance``.

    Ids are unique within one instance only ("alert-1" exists on every instance), so each id
    is prefixed with the instance: ``"127.0.0.1:8081/alert-1"``, the same on every tick.

    Raises ``ValueError`` naming the field (``alerts[0].time``) when the list is not the
    original's Alert dicts; a fleet that fetches instances one by one can call this per
    instance to keep one broken instance from hiding every other instance's alerts.
    """
    if not isinstance(instance, str) or not instance.strip():
        shown = "empty" if isinstance(instance, str) else f"a {_kind(instance)}"
        raise ValueError(f"instance must be a non-empty string, got {shown}")
    name = _safe_text(instance, MAX_INSTANCE_LENGTH)
    if not isinstance(alerts, list):
        raise ValueError(f"{name} alerts must be a JSON list, got {_kind(alerts)}")
    tagged = []
    for index, item in enumerate(alerts):
        where = f"{name} alerts[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object, got {_kind(item)}")
        fields = {}
        for key in ("id", "severity", "message", "time"):
            value = item.get(key)
            if not isinstance(value, str):
                shown = "missing" if value is None else f"a {_kind(value)}"
                raise ValueError(f"{where}.{key} must be a string, {shown}")
            fields[key] = value
        if not fields["message"].strip():
            raise ValueError(f"{where}.message must not be empty")
        if not fields["id"].strip() or len(fields["id"]) > _MAX_ID_LENGTH:
            raise ValueError(f"{where}.id must be 1 to {_MAX_ID_LENGTH} characters, got "
                             f"{len(fields['id'])}")
        severity = fields["severity"].strip().lower()
        if severity not in SEVERITIES:
            raise ValueError(f"{where}.severity must be one of {', '.join(SEVERITIES)}, got "
                             f"{v.quoted(fields['severity'])}")
        tagged.append({
            "id": f"{name}/{_safe_text(fields['id'], _MAX_ID_LENGTH)}",
            "severity": severity,
            "message": _safe_text(fields["message"], MAX_TEXT_LENGTH),
            "time": _time(fields["time"], f"{where}.time"),
            "source": "instance",
            "instance": name,
        })
    return tagged


def merge_alerts(
    am: Sequence[Mapping[str, Any]],
    per_instance: Mapping[str, object],
    limit: int,
) -> list[dict[str, Any]]:
    """The fleet page's ``alerts``: Alertmanager's and every instance's own, newest first, at
    most ``limit``.

    ``am`` is what :func:`from_alertmanager` returned (``[]`` without ``--alertmanager``);
    ``per_instance`` maps each instance to the ``alerts`` list of its ``/api/metrics``, which
    :func:`from_instance` checks and tags. An instance alert that says what an Alertmanager
    alert about the same instance already says (same severity, same message, ignoring case
    and spacing) is dropped: a service that raises the alert text of a bundled rule would
    otherwise show it twice. An alert listed twice (two Alertmanagers of an HA pair) is kept
    once. Equal times keep a fixed order (Alertmanager's first, then by instance and id), so
    the list does not shuffle from tick to tick.

    Raises ``ValueError`` naming the field when an instance's list is malformed (see
    :func:`from_instance`) and for a ``limit`` below 0.
    """
    v.integer(limit, "limit", 0)
    merged: dict[str, dict[str, Any]] = {}
    said: set[tuple[str | None, str, str]] = set()
    for alert in am:
        merged.setdefault(str(alert["id"]), dict(alert))
        said.add(_what_it_says(alert))
    for instance in sorted(per_instance):
        for alert in from_instance(instance, per_instance[instance]):
            if _what_it_says(alert) not in said:
                merged.setdefault(alert["id"], alert)
    return _newest_first(list(merged.values()), limit)


def _what_it_says(alert: Mapping[str, Any]) -> tuple[str | None, str, str]:
    instance = alert.get("instance")
    message = " ".join(str(alert["message"]).split()).casefold()
    return (instance if isinstance(instance, str) else None, str(alert["severity"]), message)


def _newest_first(alerts: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    # RFC 3339 UTC with milliseconds (what _time writes) sorts as text. Sort by the tie
    # breakers first, then (stably) by time, newest first.
    alerts.sort(key=lambda a: (a["source"] != "alertmanager", a["instance"] or "", a["id"]))
    alerts.sort(key=lambda a: str(a["time"]), reverse=True)
    return alerts[:limit]


def _string_map(item: Mapping[str, Any], key: str, where: str, *,
                required: bool) -> dict[str, str]:
    value = item.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        shown = "missing" if value is None else f"a {_kind(value)}"
        raise ValueError(f"{where}.{key} must be an object of strings, {shown}")
    for name, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"{where}.{key}.{v.quoted(name)} must be a string, got "
                             f"{_kind(text)}")
    return value


def _time(value: object, where: str) -> str:
    """An RFC 3339 time with its offset, as the page's UTC milliseconds."""
    if not isinstance(value, str):
        shown = "missing" if value is None else f"a {_kind(value)}"
        raise ValueError(f"{where} must be an RFC 3339 time string, {shown}")
    if len(value) > _MAX_TIME_LENGTH:
        raise ValueError(f"{where} must be an RFC 3339 time, got {len(value)} characters")
    match = _RFC3339.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        # datetime.fromisoformat reads "Z" and more than 6 fraction digits only from 3.11:
        # give it the seconds, the microseconds and the offset in the form 3.10 reads too.
        base, fraction, offset = match.group(1, 2, 3)
        micro = (fraction or "")[1:7].ljust(6, "0")
        zone = "" if offset is None else ("+00:00" if offset in "Zz" else offset)
        when = datetime.fromisoformat(f"{base.replace('t', 'T')}.{micro}{zone}")
    except ValueError:
        raise ValueError(f"{where} must be an RFC 3339 time, got {v.quoted(value)}") from None
    if when.tzinfo is None:
        raise ValueError(f"{where} must carry its UTC offset (such as Z), got {v.quoted(value)}")
    try:
        return v.rfc3339(when)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{where} is out of range in UTC, got {v.quoted(value)}") from None


def _instance(value: str | None) -> str | None:
    return None if value is None or not value.strip() else _safe_text(value, MAX_INSTANCE_LENGTH)


def _safe_text(value: str, limit: int) -> str:
    """Free text from another process, made safe to show: surrogates as the dashboard's own
    text (joined or U+FFFD), control characters but tab and newline as U+FFFD (one would
    otherwise reach a terminal through ``hyperdash watch``), cut to ``limit`` characters."""
    value = _CONTROL.sub("\ufffd", v.clean_text(value))
    return value if len(value) <= limit else value[: limit - 1] + _ELLIPSIS


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


