"""Basic auth is for people in browsers: the login prompt's credentials open the page, and
the browser sends them on the WebSocket handshake too, so the page goes live."""

from __future__ import annotations

import pytest

from hyperdash_otel.server.security import hash_password

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


def test_a_user_logs_in_and_the_page_goes_live(start_dashboard, new_page, make_ui, browser_log):
    dash = start_dashboard(basic_auth=(f"alice:{hash_password(PASSWORD, n=2**12)}",))
    ui = make_ui(new_page(http_credentials={"username": "alice", "password": PASSWORD}), dash)
    ui.open()
    assert ui.state() == "live"
    assert [ws.url for ws in browser_log.websockets] == [f"ws://127.0.0.1:{dash.port}/ws"]
    ui.wait_ticks(2)


def test_a_wrong_password_gets_no_page(start_dashboard, new_page):
    dash = start_dashboard(basic_auth=(f"alice:{hash_password(PASSWORD, n=2**12)}",))
    page = new_page(http_credentials={"username": "alice", "password": "wrong"})
    response = page.goto(f"http://127.0.0.1:{dash.port}/")
    assert response.status == 401
    assert response.json() == {
        "error": "missing or wrong user and password (Authorization: Basic)",
        "status": 401,
    }
