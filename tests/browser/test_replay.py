"""A new viewer's history replay: light older messages, the newest in full.

The server replays its retained ticks on connect with the job, alert and custom lists only
in the newest message; the older ones carry every key and every number the charts use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from hyperdash_otel import Dashboard, JobInfo

pytestmark = pytest.mark.browser


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a condition with a deadline


def replay_stamps(dash: Dashboard) -> list[float]:
    ctx = dash.server.context  # type: ignore[union-attr]
    assert ctx is not None
    return [frame.at for frame in ctx.fanout.history]


def test_a_new_viewer_gets_chart_points_from_every_replayed_tick_and_the_newest_lists(
        start_dashboard: Callable[..., Dashboard], new_page: Callable[..., Any],
        make_ui: Callable[..., Any]) -> None:
    dash = start_dashboard(history_size=12)
    dash.add_job(JobInfo(id="job-1", name="export web-01", status="running", provider="aws",
                         vm_name="web-01", progress=40))
    dash.add_alert("warning", "uploads to gcp are slow")
    wait_for(lambda: len(replay_stamps(dash)) == 12, "a full history on the server")
    page = new_page()
    ui = make_ui(page, dash)
    ui.open()
    points = page.evaluate("() => window.hyperdash.history.length")
    assert points >= 12  # every replayed tick is on the charts (plus the live ones)
    assert ui.rows().count() == 1
    assert "export web-01" in ui.rows().first.inner_text()
    assert ui.alerts().count() == 1
    assert "uploads to gcp are slow" in ui.alerts().first.inner_text()
    # The charts hold distinct, ordered timestamps (the replay and the live ticks meet).
    xs = ui.timeline_x()
    assert xs == sorted(set(xs))
