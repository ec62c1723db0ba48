"""Alerts: newest three, coloured by severity, dismissals that stick."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

SEVERITY_COLOURS = {
    "critical": "rgb(239, 68, 68)",
    "warning": "rgb(245, 158, 11)",
    "info": "rgb(59, 130, 246)",
}


def shown(ui) -> list[str]:
    return ui.alerts().evaluate_all(
        "(els) => els.map((el) => el.querySelector('.alert-message').textContent)"
    )


def test_no_alerts_no_alert_area(ui):
    ui.open()
    assert ui.alerts().count() == 0
    assert not ui.page.locator("#alerts").is_visible()


def test_at_most_three_newest_alerts_coloured_by_severity(ui, dash):
    for n, severity in enumerate(["info", "warning", "critical", "warning", "info"]):
        dash.add_alert(severity, f"alert {n}")
    ui.open()

    assert shown(ui) == ["alert 4", "alert 3", "alert 2"]
    assert ui.page.text_content("#alerts-more") == "2 more alerts"
    for element in ui.alerts().all():
        severity = element.get_attribute("data-severity")
        assert element.evaluate("(el) => getComputedStyle(el).backgroundColor") == (
            SEVERITY_COLOURS[severity]
        )
    assert ui.alerts().evaluate_all("(els) => els.map((el) => el.dataset.severity)") == [
        "info", "warning", "critical",
    ]


def test_dismissal_sticks_across_ticks_and_a_reload(ui, dash):
    for n in range(4):
        dash.add_alert("warning", f"alert {n}")
    ui.open()
    assert shown(ui) == ["alert 3", "alert 2", "alert 1"]

    ui.page.locator('.alert:has-text("alert 2") .alert-dismiss').click()
    # The next newest takes the free place at once.
    assert shown(ui) == ["alert 3", "alert 1", "alert 0"]

    ui.wait_ticks(3)
    assert shown(ui) == ["alert 3", "alert 1", "alert 0"]

    ui.reload()
    ui.wait_ticks(2)
    assert shown(ui) == ["alert 3", "alert 1", "alert 0"]

    # A new alert still shows; the dismissed one stays away.
    dash.add_alert("critical", "alert 4")
    ui.wait_ticks(2)
    assert shown(ui) == ["alert 4", "alert 3", "alert 1"]


def test_dismissing_every_alert_hides_the_area(ui, dash):
    dash.add_alert("info", "only one")
    ui.open()
    ui.page.locator(".alert-dismiss").click()
    ui.wait_ticks(2)
    assert ui.alerts().count() == 0
    assert not ui.page.locator("#alerts").is_visible()
