"""The page under `hyperdash demo`, the README's screenshot: a real demo process, a real
browser, and a workload that moves while the page is watched."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT_BYTES = 300_000


class Served:
    """What DashboardPage needs of a dashboard: its port."""

    def __init__(self, url: str) -> None:
        self.port = urlsplit(url).port


def test_page_under_the_demo(spawn, new_page, make_ui, artifacts: Path, browser_log):
    demo = spawn("demo", "--port", "0", "--seed", "1", "--interval", "0.25", "--speed", "10")
    ui = make_ui(new_page(1280, 800), Served(demo.url))
    ui.open()
    # The simulated daemon's jobs on all three providers, with progress bars.
    ui.page.wait_for_function(
        """() => document.querySelectorAll("#jobs-body tr").length >= 10
             && ["aws", "azure", "gcp"].every((p) =>
                  Chart.getChart("chart-providers").data.labels.includes(p))""",
    )
    completed = ui.card_number("jobs-completed")
    ui.page.wait_for_function(  # the workload moves while we watch
        "(n) => Number(document.getElementById('value-jobs-completed').dataset.value) > n",
        arg=completed,
    )
    assert ui.card_number("memory") > 0  # the demo process's own, sampled with psutil
    for canvas in ("chart-job-status", "chart-jobs-over-time", "chart-providers",
                   "chart-resources"):
        assert any(ds["data"] for ds in ui.chart(canvas)["datasets"]), canvas
    assert ui.horizontal_overflow() == 0
    ui.page.evaluate("() => document.activeElement && document.activeElement.blur()")
    path = artifacts / "demo-1280x800.png"
    ui.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a real picture, not a blank page
    if os.environ.get("HYPERDASH_UPDATE_SCREENSHOT") == "1":
        docs = artifacts.parent / "docs" / "screenshot.png"
        docs.write_bytes(path.read_bytes())
        assert docs.stat().st_size < DOCS_SCREENSHOT_BYTES
    code, _ = demo.stop()
    assert code == 0
    assert browser_log.unexpected_console_errors() == []
