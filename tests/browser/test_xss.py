"""Job fields and alert texts reach the page only as text."""

from __future__ import annotations

import pytest

from hyperdash_otel import JobInfo

pytestmark = pytest.mark.browser

PAYLOAD = "<img src=x onerror=window.__xss=1>"


def test_markup_in_job_fields_and_alerts_is_shown_as_text(ui, dash, browser_log):
    dash.add_job(JobInfo(id="xss-1", name=PAYLOAD, status="failed", progress=10,
                         provider=PAYLOAD, vm_name=PAYLOAD, error_msg=PAYLOAD))
    dash.add_alert("critical", PAYLOAD)
    ui.open()
    ui.wait_ticks(2)

    row = ui.page.locator('#jobs-body tr[data-job-id="xss-1"]')
    assert row.locator(".job-name").text_content() == PAYLOAD
    assert row.locator(".job-error").text_content() == PAYLOAD
    assert row.locator(".col-vm").text_content() == PAYLOAD
    assert row.locator(".col-provider").text_content() == PAYLOAD
    assert ui.page.locator(".alert .alert-message").text_content() == PAYLOAD
    assert ui.chart("chart-providers")["labels"] == [PAYLOAD]  # drawn on a canvas

    assert ui.page.evaluate("() => window.__xss") is None
    assert ui.page.locator("img").count() == 0
    assert not any(url.endswith("/x") for url in browser_log.requests)
    assert browser_log.unexpected_console_errors() == []


def test_unknown_status_and_severity_do_not_become_classes(ui):
    """Only known values pick a style; anything else falls back (and shows as text)."""
    ui.open()
    # Render and read in one synchronous evaluation, so no tick can come in between.
    seen = ui.page.evaluate(
        """(payload) => {
             window.updateDashboard({
               timestamp: new Date().toISOString(),
               recent_jobs: [{ id: "odd", name: "n", status: payload, progress: 500,
                               provider: "p", vm_name: "v", duration: -1, start_time: null }],
               alerts: [{ id: "a", severity: payload, message: "m",
                          time: new Date().toISOString() }],
             });
             const row = document.querySelector('#jobs-body tr[data-job-id="odd"]');
             return {
               badgeClass: row.querySelector(".badge").className,
               badgeText: row.querySelector(".badge").textContent,
               progress: row.querySelector(".progress-text").textContent,
               duration: row.querySelector(".col-duration").textContent,
               alertClass: document.querySelector('.alert[data-alert-id="a"]').className,
             };
           }""",
        '" onmouseover="x',
    )
    assert seen == {
        "badgeClass": "badge badge-unknown",
        "badgeText": '" onmouseover="x',
        "progress": "100%",
        "duration": "\u2014",
        "alertClass": "alert alert-info",
    }
