"""Reconnecting: one socket at a time, backoff, charts kept and refilled without duplicates."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

REFUSED = r"WebSocket connection to .* failed"


def assert_unique_and_sorted(xs: list[float]) -> None:
    assert xs == sorted(set(xs)), "duplicate or out-of-order chart points"


def test_server_restart_on_same_port(start_dashboard, new_page, make_ui, browser_log):
    browser_log.allow_console_error(REFUSED)
    first = start_dashboard()
    first.update_job_metrics(2, 3, 0, 0, 0)
    ui = make_ui(new_page(), first)
    ui.open()
    ui.wait_ticks(4)
    before = ui.timeline_x()
    assert len(before) >= 4

    port = first.port  # None once stopped
    first.stop()
    ui.wait_state("reconnecting")
    assert ui.page.text_content("#connection-status .connection-label").startswith(
        "Reconnecting"
    )

    second = start_dashboard(port=port)
    second.update_job_metrics(9, 8, 1, 0, 0)
    ui.dash = second
    ui.wait_fresh(timeout=20_000)
    ui.wait_ticks(2)

    assert ui.card("jobs-active") == "9"  # updates resumed, from the new server
    assert len(browser_log.open_sockets()) == 1
    assert browser_log.max_open_sockets == 1
    assert ui.page.text_content("#viewer-count") == "1 viewer"
    stats = ui.page.evaluate("() => window.hyperdash.connection.stats()")
    assert stats["hasSocket"] and not stats["retryPending"] and stats["attempt"] == 0

    after = ui.timeline_x()
    assert_unique_and_sorted(after)
    assert before[0] in after  # the chart kept its points across the outage
    assert len(after) > len(before)


def test_dropped_socket_refills_from_history_without_duplicates(ui, browser_log):
    ui.open()
    ui.wait_ticks(5)
    before = ui.timeline_x()

    # Drop the connection from the page side; the server keeps running and replays its
    # retained history (mostly points the chart already has) on the next connect.
    ui.page.evaluate("() => window.hyperdash.connection.socket.close()")
    ui.wait_state("reconnecting")
    ui.wait_fresh()
    ui.wait_ticks(2)

    after = ui.timeline_x()
    assert_unique_and_sorted(after)
    assert set(before) <= set(after)
    assert len(browser_log.websockets) == 2
    assert len(browser_log.open_sockets()) == 1
    assert browser_log.max_open_sockets == 1


def test_offline_server_keeps_one_pending_retry(start_dashboard, new_page, make_ui, browser_log):
    browser_log.allow_console_error(REFUSED)
    dash = start_dashboard()
    ui = make_ui(new_page(), dash)
    ui.open()
    dash.stop()
    ui.wait_state("reconnecting")
    # Several failed attempts later there is still at most one socket and one timer.
    ui.page.wait_for_function(
        "() => window.hyperdash.connection.stats().socketsOpened >= 3", timeout=20_000
    )
    stats = ui.page.evaluate("() => window.hyperdash.connection.stats()")
    assert stats["state"] in ("reconnecting", "offline")
    assert stats["retryPending"] != stats["hasSocket"]  # waiting, or trying: never both
    assert browser_log.max_open_sockets == 1
    assert ui.card("jobs-active") == "0"  # the last values stay on screen


def test_token_in_page_url_is_passed_to_the_websocket(start_dashboard, new_page, make_ui,
                                                     browser_log):
    token = "s3cret-token-value"
    dash = start_dashboard(auth_token=token)
    ui = make_ui(new_page(), dash)
    ui.open(f"?token={token}")
    assert [ws.url for ws in browser_log.websockets] == [
        f"ws://127.0.0.1:{dash.port}/ws?token={token}"
    ]
    assert ui.page.get_attribute("#connection-status", "data-state") == "live"
    # The footer's links to protected endpoints carry the token as well.
    href = ui.page.locator("#link-snapshot").evaluate("(a) => a.href")
    assert href == f"http://127.0.0.1:{dash.port}/api/metrics?token={token}"
    assert ui.page.request.get(href).status == 200
