"""The page at three sizes: screenshots to artifacts/, and no sideways page scroll.

``HYPERDASH_UPDATE_SCREENSHOT=1`` also writes the busy 1280x800 page to docs/screenshot.png
(the README's picture); otherwise the repository is left untouched.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hyperdash_otel import Dashboard, JobInfo

pytestmark = pytest.mark.browser

SIZES = [(1280, 800), (768, 1024), (390, 844)]
PROVIDERS = ("aws", "azure", "gcp")
STATUSES = ("running", "running", "completed", "failed", "pending", "completed")
DOCS_SCREENSHOT_BYTES = 300_000


def fill(dash: Dashboard) -> None:
    """A busy service: jobs of every status on three providers, alerts, degraded health."""
    now = datetime.now(timezone.utc)
    for n in range(24):
        status = STATUSES[n % len(STATUSES)]
        start = now - timedelta(seconds=37 * n + 9 + (3600 if n % 7 == 3 else 0))
        ended = status in ("completed", "failed")
        dash.add_job(JobInfo(
            id=f"job-{4812 - n}", name=f"export-vm-prod-{n:02d}", status=status,
            progress={"running": 15 + 3 * n, "completed": 100, "failed": 40 + n,
                      "pending": 0}[status],
            provider=PROVIDERS[n % 3], vm_name=f"prod-{['web', 'db', 'cache'][n % 3]}-{n:02d}",
            start_time=start, end_time=now if ended else None,
            error_msg="snapshot quota exceeded in region" if status == "failed" else "",
        ))
    dash.add_alert("info", "Backup of the export catalogue completed")
    dash.add_alert("warning", "Queue length above 20 for 5 minutes")
    dash.set_system_health("degraded")


def feed(dash: Dashboard, ui, ticks: int) -> None:
    """Changing numbers over `ticks` ticks, so the time series have some shape."""
    completed = failed = requests = errors = 0
    for n in range(ticks):
        completed += 2 + n % 3
        failed += 1 if n % 9 == 4 else 0
        requests += 900 + 37 * n
        errors += n % 4
        dash.update_job_metrics(6 + (n * 7) % 5, completed, failed, 4 + n % 6, 12 + n % 9)
        dash.update_system_metrics(1400 + 9 * n + (n * 53) % 120, 22 + (n * 17) % 41, 48)
        dash.update_http_metrics(requests, errors, 80 + (n * 29) % 70)
        ui.wait_ticks(1)


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_screenshot_and_no_horizontal_scroll(dash, new_page, make_ui, artifacts, width, height):
    fill(dash)
    ui = make_ui(new_page(width, height), dash)
    ui.open()
    feed(dash, ui, 6)

    assert ui.horizontal_overflow() == 0
    # Every part stays inside the viewport's width, not just the document.
    widest = ui.page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'.topbar, .alert, .card, .chart-panel, .jobs, .footer')]"
        ".map((el) => el.getBoundingClientRect().right))"
    )
    assert widest <= width
    ui.page.screenshot(path=str(artifacts / f"page-{width}x{height}.png"), full_page=True)


def test_busy_page_screenshot(start_dashboard, new_page, make_ui, artifacts):
    dash = start_dashboard(update_interval=0.1)
    fill(dash)
    ui = make_ui(new_page(1280, 800), dash)
    ui.open()
    feed(dash, ui, 40)
    ui.page.evaluate("() => document.activeElement && document.activeElement.blur()")
    path = artifacts / "screenshot-busy-1280x800.png"
    ui.page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000  # a real picture, not a blank page
