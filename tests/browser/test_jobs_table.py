"""The recent-jobs table: badges, progress, durations, local start times, the 50-row cap."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hyperdash_otel import JobInfo

pytestmark = pytest.mark.browser

STATUS_COLOURS = {
    "running": "rgb(59, 130, 246)",
    "completed": "rgb(16, 185, 129)",
    "failed": "rgb(239, 68, 68)",
    "pending": "rgb(245, 158, 11)",
}


def test_empty_state_before_any_job(ui):
    ui.open()
    assert ui.rows().count() == 0
    assert ui.page.locator("#jobs-empty").is_visible()
    assert ui.page.text_content("#jobs-count") == "0 jobs"


def test_rows_show_badge_progress_and_fields(ui, dash):
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    progress = {"running": 40, "completed": 100, "failed": 63, "pending": 0}
    for status, value in progress.items():
        dash.add_job(JobInfo(id=f"job-{status}", name=f"export-{status}", status=status,
                             progress=value, provider="aws", vm_name=f"vm-{status}",
                             start_time=start,
                             error_msg="disk quota exceeded" if status == "failed" else ""))
    ui.open()
    ui.wait_ticks(1)

    assert ui.rows().count() == 4
    assert not ui.page.locator("#jobs-empty").is_visible()
    for status, value in progress.items():
        row = ui.page.locator(f'#jobs-body tr[data-job-id="job-{status}"]')
        badge = row.locator(".badge")
        assert badge.text_content() == status
        assert badge.get_attribute("data-status") == status
        assert badge.evaluate("(el) => getComputedStyle(el).backgroundColor") == (
            STATUS_COLOURS[status]
        )
        assert row.locator(".progress-text").text_content() == f"{value}%"
        assert row.locator(".progress").get_attribute("aria-valuenow") == str(value)
        width = row.locator(".progress-fill").evaluate(
            "(el) => el.getBoundingClientRect().width"
            " / el.parentElement.getBoundingClientRect().width"
        )
        assert width == pytest.approx(value / 100, abs=0.02)
        assert row.locator(".col-name .job-name").text_content() == f"export-{status}"
        assert row.locator(".col-provider").text_content() == "aws"
        assert row.locator(".col-vm").text_content() == f"vm-{status}"
    failed = ui.page.locator('#jobs-body tr[data-job-id="job-failed"]')
    assert failed.locator(".job-error").text_content() == "disk quota exceeded"


def test_progress_updates_in_place(ui, dash):
    dash.add_job(JobInfo(id="j1", name="export-web-01", status="running", progress=40,
                         provider="aws", vm_name="web-01"))
    ui.open()
    row = ui.page.locator('#jobs-body tr[data-job-id="j1"]')
    assert row.locator(".progress-text").text_content() == "40%"
    row.evaluate("(el) => { el.dataset.marker = 'same-element'; }")

    dash.add_job(JobInfo(id="j1", name="export-web-01", status="completed", progress=100,
                         provider="aws", vm_name="web-01"))
    ui.wait_ticks(2)
    assert row.locator(".progress-text").text_content() == "100%"
    assert row.locator(".badge").get_attribute("data-status") == "completed"
    assert row.get_attribute("data-marker") == "same-element"  # updated, not rebuilt


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(9, "9s"), (192, "3m 12s"), (3900, "1h 5m"), (2 * 86400 + 3 * 3600, "2d 3h")],
)
def test_duration_format(ui, dash, seconds, shown):
    end = datetime.now(timezone.utc)
    dash.add_job(JobInfo(id="d", name="d", status="completed", progress=100, provider="gcp",
                         vm_name="d", start_time=end - timedelta(seconds=seconds),
                         end_time=end))
    ui.open()
    assert ui.page.text_content('#jobs-body tr[data-job-id="d"] .col-duration') == shown


def test_a_job_not_yet_started_has_no_duration_or_start(ui, dash):
    dash.add_job(JobInfo(id="p", name="queued", status="pending", provider="aws", vm_name="p"))
    ui.open()
    row = ui.page.locator('#jobs-body tr[data-job-id="p"]')
    assert row.locator(".col-duration").text_content() == "\u2014"
    assert row.locator(".col-start").text_content() == "\u2014"


def test_start_time_is_shown_in_the_viewers_time_zone(dash, new_page, make_ui):
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    dash.add_job(JobInfo(id="tz", name="tz", status="running", progress=5, provider="aws",
                         vm_name="tz", start_time=started))
    ui = make_ui(new_page(timezone_id="Asia/Tokyo", locale="en-US"), dash)
    ui.open()
    cell = ui.page.locator('#jobs-body tr[data-job-id="tz"] .col-start time')
    assert cell.get_attribute("datetime") == "2026-01-02T03:04:05.000Z"
    assert "12:04:05 PM" in cell.text_content()  # UTC+9
    assert "Jan 2, 2026" in cell.text_content()  # not today, so the date is shown


@pytest.mark.parametrize("max_jobs", [50, 100])
def test_sixty_jobs_give_fifty_rows_newest_first(start_dashboard, new_page, make_ui, max_jobs):
    dash = start_dashboard(max_jobs=max_jobs)
    for n in range(60):
        dash.add_job(JobInfo(id=f"job-{n:02d}", name=f"export-{n:02d}", status="running",
                             progress=n, provider="aws", vm_name=f"vm-{n:02d}"))
    ui = make_ui(new_page(), dash)
    ui.open()
    ids = ui.rows().evaluate_all("(rows) => rows.map((r) => r.dataset.jobId)")
    assert ids == [f"job-{n:02d}" for n in range(59, 9, -1)]
    assert ui.page.text_content("#jobs-count") == "50 jobs"


def test_table_scrolls_inside_its_box_on_a_phone(dash, new_page, make_ui):
    for n in range(30):
        dash.add_job(JobInfo(id=f"job-{n}", name=f"export-vm-production-{n}", status="running",
                             progress=50, provider="azure", vm_name=f"production-web-{n}"))
    ui = make_ui(new_page(390, 844), dash)
    ui.open()
    box = ui.page.locator(".table-wrap")
    sizes = box.evaluate(
        "(el) => [el.scrollWidth > el.clientWidth, el.scrollHeight > el.clientHeight]"
    )
    assert sizes == [True, True]
    assert ui.horizontal_overflow() == 0
