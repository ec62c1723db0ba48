"""Each live instance's records: its ``/api/jobs`` and the alerts of its ``/api/metrics``.

Numbers come from Prometheus; jobs and alerts are records only the instances hold. They are
fetched concurrently, at most ``max_concurrency`` at once, each request bounded by a timeout
and a body cap, so one slow or dead instance costs at most one timeout and never holds up
the others or the tick (the tick reads the last completed fetch, see
:class:`~hyperdash_otel.fleet.source.FleetSource`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .http import Credentials, FetchError, JsonClient
from .prometheus import Target

__all__ = ["InstanceRecords", "fetch_all", "merge_jobs"]

log = logging.getLogger("hyperdash_otel.fleet")

MAX_BODY = 4 * 1024 * 1024
"""Largest ``/api/jobs`` or ``/api/metrics`` body read from one instance (bytes)."""


@dataclass
class InstanceRecords:
    """One instance's jobs and alerts from one fetch, or the error that fetch met."""

    instance: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _dicts(value: Any, limit: int) -> list[dict[str, Any]]:
    """The entries of a JSON list that are objects with a string id, at most ``limit``."""
    if not isinstance(value, list):
        raise ValueError("expected a JSON list")
    out = [item for item in value if isinstance(item, dict) and isinstance(item.get("id"), str)]
    return out[:limit]


def fetch_one(
    target: Target, credentials: Credentials, *, timeout: float, max_jobs: int,
    max_alerts: int,
) -> InstanceRecords:
    """One instance's ``/api/jobs?limit=`` and ``/api/metrics`` alerts; never raises."""
    client = JsonClient(target.base_url, credentials, timeout=timeout, max_body=MAX_BODY)
    records = InstanceRecords(target.instance)
    try:
        records.jobs = _dicts(client.get_json("/api/jobs", {"limit": str(max_jobs)}), max_jobs)
        snapshot = client.get_json("/api/metrics")
        if not isinstance(snapshot, dict):
            raise ValueError("/api/metrics: expected a JSON object")
        records.alerts = _dicts(snapshot.get("alerts", []), max_alerts)
    except (FetchError, ValueError) as exc:
        records.error = str(exc)
    return records


def fetch_all(
    targets: Sequence[Target], credentials: Credentials, *, pool: ThreadPoolExecutor,
    timeout: float, max_jobs: int, max_alerts: int,
) -> dict[str, InstanceRecords]:
    """Every target's records, fetched on ``pool`` (whose size bounds the concurrency)."""
    futures = [
        pool.submit(fetch_one, t, credentials, timeout=timeout, max_jobs=max_jobs,
                    max_alerts=max_alerts)
        for t in targets
    ]
    out: dict[str, InstanceRecords] = {}
    for future in futures:
        records = future.result()
        out[records.instance] = records
    return out


NOT_STARTED = "\uffff"
"""Sorts above every RFC 3339 time: a job not started yet (pending) is the newest."""


def merge_jobs(by_instance: Iterable[InstanceRecords], limit: int) -> list[dict[str, Any]]:
    """Every instance's jobs, each tagged with ``instance``, newest first, at most ``limit``.

    Newest is the latest ``start_time``; jobs not started yet come first. Jobs with the
    same start (all pending ones) interleave by their rank in their instance's own
    newest-first list, so no instance crowds the others out of a short list.
    """
    keyed: list[tuple[tuple[str, int], dict[str, Any]]] = []
    for records in sorted(by_instance, key=lambda r: r.instance):
        for rank, job in enumerate(records.jobs):
            start = job.get("start_time")
            key = (start if isinstance(start, str) else NOT_STARTED, -rank)
            keyed.append((key, {**job, "instance": records.instance}))
    keyed.sort(key=lambda kv: kv[0], reverse=True)  # stable: ties keep instance order
    return [job for _, job in keyed[:limit]]
