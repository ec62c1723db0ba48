"""A minimal stand-in for h11-alerts' ``fleet/alerts.py`` until the branches merge.

Same two functions, same signatures (FLEET.md). At the merge: point
``fleet/source.py``'s import at ``.alerts`` and delete this file.
"""

from __future__ import annotations

from typing import Any

__all__ = ["from_alertmanager", "merge_alerts"]

_SEVERITIES = ("critical", "warning", "info")


def from_alertmanager(payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alertmanager v2 ``/api/v2/alerts`` JSON -> the page's alert dicts."""
    if not isinstance(payload, list):
        raise ValueError("alerts: expected a JSON list")
    out: list[dict[str, Any]] = []
    for n, alert in enumerate(payload):
        if not isinstance(alert, dict):
            raise ValueError(f"alerts[{n}]: expected an object")
        labels = alert.get("labels")
        annotations = alert.get("annotations") or {}
        fingerprint = alert.get("fingerprint")
        if not isinstance(labels, dict) or not isinstance(annotations, dict):
            raise ValueError(f"alerts[{n}].labels: expected an object")
        if not isinstance(fingerprint, str):
            raise ValueError(f"alerts[{n}].fingerprint: expected a string")
        severity = labels.get("severity")
        message = annotations.get("summary") or labels.get("alertname") or "alert"
        instance = labels.get("instance")
        out.append({
            "id": f"am-{fingerprint}",
            "severity": severity if severity in _SEVERITIES else "warning",
            "message": str(message),
            "time": str(alert.get("startsAt", "")),
            "source": "alertmanager",
            "instance": instance if isinstance(instance, str) else None,
        })
    return out


def merge_alerts(
    am: list[dict[str, Any]], per_instance: dict[str, list[dict[str, Any]]], limit: int
) -> list[dict[str, Any]]:
    """Alertmanager's alerts and each instance's own (tagged), newest first, at most limit."""
    seen = {(a.get("instance"), a.get("message")) for a in am}
    merged = list(am)
    for instance, alerts in per_instance.items():
        for alert in alerts:
            if (instance, alert.get("message")) in seen:
                continue
            merged.append({**alert, "id": f"{instance}/{alert.get('id')}",
                           "source": "instance", "instance": instance})
    merged.sort(key=lambda a: str(a.get("time", "")), reverse=True)
    return merged[:limit]
