"""Real parts for the integration tests: Debian's prometheus/promtool and a served Dashboard.

A missing binary is handled here and only here: the test that needs it is skipped with the
reason, except on CI (``CI=true``), where it fails, so that an image without prometheus
cannot pass by skipping everything that proves the Grafana bundle.
"""

from __future__ import annotations

from support import require_binary
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperdash_otel import Config, Dashboard, JobInfo

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
PROVIDERS = ("aws", "azure", "gcp")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_binary("prometheus")


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    """Debian's Alertmanager (tests/integration/alertmanager.py runs it)."""
    return require_binary("prometheus-alertmanager", package="prometheus-alertmanager")


def feed_labelled_series(dash: Dashboard) -> None:
    """One job per provider, one alert and a health change: after this every series the
    package documents exists in /metrics, the labelled ones (provider, severity, status)
    included. WebSocket disconnects/rejections are labelled by reason and only appear once
    a client was refused; the dashboard and the rules do not query them."""
    for n, provider in enumerate(PROVIDERS):
        dash.add_job(JobInfo(id=f"job-{provider}", name=f"export-{provider}", status="running",
                             progress=10 * n, provider=provider, vm_name=f"vm-{n}"))
    dash.add_alert("warning", "integration test alert")
    dash.set_system_health("degraded")


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


@pytest.fixture(scope="module")
def fed_dashboard() -> Iterator[Dashboard]:
    """A fresh Dashboard, served on 127.0.0.1 (any free port), fed through the Python API."""
    dash = Dashboard(Config(port=0, update_interval=0.2, collect_system_metrics=False))
    try:
        feed_labelled_series(dash)
        dash.update_job_metrics(2, 5, 1, 3, 4)
        dash.update_system_metrics(128, 5.0, 6)
        dash.update_http_metrics(40, 1, 12.5)
        dash.start_in_thread()
        yield dash
    finally:
        dash.close()


@pytest.fixture(scope="module")
def live_metrics_text(fed_dashboard: Dashboard) -> str:
    """GET /metrics of the fed dashboard, over HTTP, as Prometheus would scrape it.

    The tick histogram has no buckets until the server's first tick; poll for it (with a
    deadline) rather than sleep. Past the deadline the text is returned as it is and the
    tests name what is missing."""
    url = f"http://127.0.0.1:{fed_dashboard.port}/metrics"
    deadline = time.monotonic() + 10.0
    while True:
        text = http_get(url).decode("utf-8")
        if "hyperdash_tick_duration_seconds_bucket{" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)
