"""The page's checks in Firefox and WebKit: each test runs once per engine (see conftest).

Load with no console error, values that follow the server, a reconnect after a restart on
the same port, markup shown as text, and no sideways scroll at phone width; and the demo's
page with its four charts, as a user first sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine_pages import RECONNECT_WAIT, EnginePage

from hyperdash_otel import Dashboard, JobInfo

CHARTS = ("chart-job-status", "chart-jobs-over-time", "chart-providers", "chart-resources")
PAYLOAD = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
# What each engine's console says of a reconnect attempt refused while the server is down.
REFUSED = (
    r"^Error: Firefox can.t establish a connection to the server at ws://127\.0\.0\.1:\d+/ws\.$",
    r"^network: WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws' failed",  # WebKit
)

Start = Callable[..., Dashboard]
MakePage = Callable[[int | None], EnginePage]


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1"


def test_page_loads_without_console_errors(start_dashboard: Start, make_page: MakePage) -> None:
    dash = start_dashboard()
    dash.update_job_metrics(3, 10, 2, 5, 5)
    page = make_page(dash.port)
    page.open()
    page.wait_ticks(2)

    assert page.text("#connection-status .connection-label") == "Live"
    charts = page.evaluate(
        f"{list(CHARTS)}.map((id) => !!(window.Chart && Chart.getChart(id)))"
    )
    assert charts == [True, True, True, True]
    assert page.card("jobs-active") == "3"
    requests = page.engine.requests()
    assert any(url.endswith("/static/vendor/chart.umd.js") for url in requests)
    assert [url for url in requests if not is_local(url)] == []
    assert page.errors() == []


def test_a_csp_violation_would_be_caught(start_dashboard: Start, make_page: MakePage) -> None:
    """The "no console error" checks can fail: an inline script is refused, and both the
    browser's own console and the in-page collector report it."""
    page = make_page(start_dashboard().port)
    page.open()
    page.evaluate(
        """(() => { const s = document.createElement("script");
                    s.textContent = "window.__inline = 1"; document.body.append(s); })()"""
    )
    page.wait_for("window.__engineLog.errors.some((e) => e.startsWith('CSP violation'))",
                  what="the CSP violation to be reported")
    assert page.evaluate("window.__inline === undefined")
    browser_console = (
        r"^Error: Content-Security-Policy: .* blocked an inline script",  # Firefox
        r"^security: Refused to execute a script .* Content Security Policy",  # WebKit
    )
    collector = (r"^CSP violation: script-src-elem blocked inline$",)
    errors = page.errors()
    assert any(re.search(p, e) for p in browser_console for e in errors), errors
    assert any(re.search(p, e) for p in collector for e in errors), errors
    assert page.errors(allow=browser_console + collector) == []


def test_cards_follow_the_server_within_ticks(start_dashboard: Start,
                                              make_page: MakePage) -> None:
    dash = start_dashboard()
    page = make_page(dash.port)
    page.open()
    assert page.card("jobs-active") == "0"

    dash.update_job_metrics(4, 1234, 7, 9, 15)
    dash.update_http_metrics(45678, 23, 125.5)
    page.wait_for("document.getElementById('value-jobs-completed').dataset.value === '1234'",
                  what="the completed card to show 1234")
    page.wait_ticks(1)
    assert {name: page.card(name) for name in (
        "jobs-active", "jobs-completed", "jobs-failed", "queue-length", "http-requests",
        "avg-response",
    )} == {
        "jobs-active": "4",
        "jobs-completed": "1234",
        "jobs-failed": "7",
        "queue-length": "15",
        "http-requests": "45.7K",
        "avg-response": "126 ms",
    }

    dash.update_job_metrics(6, 1300, 7, 9, 15)
    page.wait_for("document.getElementById('value-jobs-active').dataset.value === '6'",
                  what="the active card to follow a second update")
    assert page.card("jobs-completed") == "1300"
    assert page.errors() == []


def test_reconnects_after_a_server_restart_on_the_same_port(start_dashboard: Start,
                                                            make_page: MakePage) -> None:
    first = start_dashboard()
    first.update_job_metrics(2, 3, 0, 0, 0)
    port = first.port
    page = make_page(port)
    page.open()
    page.wait_ticks(2)
    assert page.card("jobs-active") == "2"

    first.stop()
    page.wait_state("reconnecting")
    label = page.text("#connection-status .connection-label") or ""
    assert label.startswith("Reconnecting")
    assert page.card("jobs-active") == "2"  # the last values stay on screen
    # At least one attempt made while nothing listens, so the page really retries.
    page.wait_for("window.hyperdash.connection.stats().socketsOpened >= 2",
                  what="a reconnect attempt while the server is down")

    second = start_dashboard(port=port)
    second.update_job_metrics(9, 8, 1, 0, 0)
    page.wait_fresh(timeout=RECONNECT_WAIT)
    page.wait_for("document.getElementById('value-jobs-active').dataset.value === '9'",
                  what="values from the new server")
    assert page.text("#connection-status .connection-label") == "Live"
    stats = page.evaluate("window.hyperdash.connection.stats()")
    assert stats["hasSocket"] and not stats["retryPending"] and stats["attempt"] == 0
    assert page.text("#viewer-count") == "1 viewer"
    assert page.errors(allow=REFUSED) == []


def test_markup_in_job_names_and_alerts_is_shown_as_text(start_dashboard: Start,
                                                         make_page: MakePage) -> None:
    dash = start_dashboard()
    dash.add_job(JobInfo(id="xss-1", name=PAYLOAD, status="running", progress=10,
                         provider="aws", vm_name=PAYLOAD))
    dash.add_alert("critical", PAYLOAD)
    page = make_page(dash.port)
    page.open()
    page.wait_for("!!document.querySelector('#jobs-body tr[data-job-id=\"xss-1\"]')",
                  what="the job's row")
    page.wait_for("!!document.querySelector('#alerts-list .alert')", what="the alert")

    assert page.text('#jobs-body tr[data-job-id="xss-1"] .job-name') == PAYLOAD
    assert page.text('#jobs-body tr[data-job-id="xss-1"] .col-vm') == PAYLOAD
    assert page.text("#alerts-list .alert .alert-message") == PAYLOAD
    injected = page.evaluate(
        """({ img: document.querySelectorAll("img").length,
              scripts: [...document.scripts].filter((s) => !s.src).length,
              xss: window.__xss === undefined ? null : window.__xss })"""
    )
    assert injected == {"img": 0, "scripts": 0, "xss": None}
    assert not any(url.endswith("/x") for url in page.engine.requests())
    assert page.errors() == []


def test_no_horizontal_scroll_at_phone_width(start_dashboard: Start,
                                             make_page: MakePage) -> None:
    dash = start_dashboard()
    dash.update_job_metrics(6, 123456, 789, 12, 30)
    dash.update_http_metrics(2_500_000, 40, 8.25)
    for n, provider in enumerate(("aws", "azure", "gcp")):
        dash.add_job(JobInfo(id=f"j{n}", name=f"export-vm-prod-{n:02d}-with-a-long-name",
                             status="running", progress=40, provider=provider,
                             vm_name=f"prod-database-{n:02d}"))
    dash.add_alert("warning", "Queue length above 20 for 5 minutes on every worker pool")
    page = make_page(dash.port)
    page.open(width=375, height=812)
    page.wait_ticks(2)

    assert page.evaluate("window.innerWidth") == 375
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll("
        "'.topbar, .alert, .card, .chart-panel, .jobs, .footer')]"
        ".map((el) => el.getBoundingClientRect().right))"
    )
    assert widest <= 375
    assert page.errors() == []


def test_demo_page_draws_its_four_charts(engine: Any, spawn: Any) -> None:
    demo = spawn("demo", "--port", "0", "--seed", "1", "--interval", "0.25", "--speed", "10")
    page = EnginePage(engine, urlsplit(demo.url).port or 0)
    page.open()
    page.wait_for(
        """["aws", "azure", "gcp"].every((p) =>
             Chart.getChart("chart-providers").data.labels.includes(p))
           && document.querySelectorAll("#jobs-body tr").length >= 5""",
        what="the demo's jobs on three providers",
    )
    drawn = page.evaluate(
        f"""{list(CHARTS)}.map((id) => {{
              const chart = Chart.getChart(id);
              return chart.data.datasets.some((d) => d.data.length > 0)
                && chart.canvas.width > 0 && chart.canvas.height > 0;
            }})"""
    )
    assert drawn == [True, True, True, True]
    assert page.text("#connection-status .connection-label") == "Live"
    assert page.errors() == []
    code, _ = demo.stop()
    assert code == 0
