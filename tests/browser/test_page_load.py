"""The page loads offline, under the CSP, and shows what the Python API set."""

from __future__ import annotations

import pytest

from hyperdash_otel import JobInfo

pytestmark = pytest.mark.browser


def test_page_loads_with_no_console_errors_and_only_local_requests(ui, browser_log):
    response = ui.open()

    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    ui.wait_ticks(2)

    assert browser_log.unexpected_console_errors() == []
    assert browser_log.foreign_requests == []
    paths = {r.split(str(ui.dash.port), 1)[1] for r in browser_log.requests}
    assert {"/", "/static/vendor/chart.umd.js", "/static/js/main.js",
            "/static/css/dashboard.css"} <= paths
    assert ui.page.evaluate("() => typeof window.Chart") == "function"
    assert [ws.url for ws in browser_log.websockets] == [f"ws://127.0.0.1:{ui.dash.port}/ws"]
    # The original's entry points stay callable for users' own scripts.
    assert ui.page.evaluate(
        "() => ['updateDashboard', 'updateCharts', 'updateJobsTable', 'updateAlerts']"
        ".map((name) => typeof window[name])"
    ) == ["function"] * 4


def test_cards_show_api_values_within_two_ticks(ui, dash):
    ui.open()
    ui.wait_ticks(1)
    dash.update_job_metrics(4, 1234, 7, 9, 15)
    dash.update_system_metrics(2048, 45.2, 37)
    dash.update_http_metrics(45678, 23, 125.5)
    ui.wait_ticks(2)

    assert {name: ui.card(name) for name in (
        "jobs-active", "jobs-completed", "jobs-failed", "queue-length",
        "http-requests", "avg-response", "memory", "cpu",
    )} == {
        "jobs-active": "4",
        "jobs-completed": "1234",
        "jobs-failed": "7",
        "queue-length": "15",
        "http-requests": "45.7K",
        "avg-response": "126 ms",
        "memory": "2048 MB",
        "cpu": "45.2%",
    }
    assert ui.page.text_content("#note-queue-length") == "9 pending"
    assert ui.page.text_content("#note-http-requests") == "23 errors"
    assert ui.page.text_content("#note-cpu") == "37 threads"

    dash.update_http_metrics(2_500_000, 40, 8.25)
    ui.wait_ticks(2)
    assert (ui.card("http-requests"), ui.card("avg-response")) == ("2.5M", "8.3 ms")


def test_a_card_is_markup_only_and_the_failed_card_alarms(ui, dash):
    ui.open()
    ui.wait_ticks(1)
    assert ui.page.get_attribute("#card-jobs-failed", "class") == "card card-danger"
    # A card for a key no card shows yet: the markup alone, no script change.
    ui.page.evaluate("""() => {
        const card = document.createElement("article");
        card.className = "card";
        card.innerHTML = '<p id="value-extra" class="card-value" data-field="active_connections"'
            + ' data-format="count" data-suffix=" open" data-value="0">0</p>';
        card.dataset.alarmField = "jobs_pending";
        card.id = "card-extra";
        document.querySelector(".cards").append(card);
    }""")
    dash.update_job_metrics(1, 2, 3, 4500, 5)
    ui.wait_ticks(2)
    assert ui.page.text_content("#value-extra") == "1 open"
    assert ui.page.get_attribute("#value-extra", "data-value") == "1"
    assert ui.page.get_attribute("#card-extra", "class") == "card card-alarm"
    assert ui.page.get_attribute("#card-jobs-failed", "class") == "card card-danger card-alarm"


def test_status_header_shows_health_viewers_and_clock(ui, dash):
    ui.open()
    assert ui.page.get_attribute("#health-badge", "data-health") == "healthy"
    assert ui.page.text_content("#viewer-count") == "1 viewer"
    assert ui.page.text_content("#clock") != ""

    dash.set_system_health("unhealthy")
    ui.wait_ticks(2)
    badge = ui.page.locator("#health-badge")
    assert badge.get_attribute("data-health") == "unhealthy"
    assert badge.text_content() == "Unhealthy"
    assert badge.evaluate("(el) => getComputedStyle(el).backgroundColor") == "rgb(239, 68, 68)"

    dash.set_system_health("degraded")
    ui.wait_ticks(2)
    assert badge.evaluate("(el) => getComputedStyle(el).backgroundColor") == "rgb(245, 158, 11)"


def test_each_chart_has_data(ui, dash):
    dash.update_job_metrics(3, 10, 2, 5, 5)
    dash.update_system_metrics(512, 30.0, 12)
    for n, provider in enumerate(["aws", "azure", "aws", "gcp"]):
        dash.add_job(JobInfo(id=f"j{n}", name=f"export-{n}", status="running", progress=10,
                             provider=provider, vm_name=f"vm-{n}"))
    ui.open()
    ui.wait_ticks(3)

    status = ui.chart("chart-job-status")
    assert status["labels"] == ["Active", "Completed", "Failed", "Pending"]
    assert status["datasets"][0]["data"] == [3, 10, 2, 5]

    timeline = ui.chart("chart-jobs-over-time")
    assert [d["label"] for d in timeline["datasets"]] == ["Active", "Completed", "Failed"]
    assert len(timeline["datasets"][0]["data"]) >= 3
    assert timeline["datasets"][1]["data"][-1]["y"] == 10

    providers = ui.chart("chart-providers")
    assert dict(zip(providers["labels"], providers["datasets"][0]["data"], strict=True)) == {
        "aws": 2, "azure": 1, "gcp": 1,
    }

    resources = ui.chart("chart-resources")
    assert [d["label"] for d in resources["datasets"]] == ["Memory (MB)", "CPU (%)"]
    assert resources["datasets"][0]["data"][-1]["y"] == 512
    assert resources["datasets"][1]["data"][-1]["y"] == 30.0
    # Memory on the left axis, CPU on the right.
    assert ui.page.evaluate(
        "() => { const s = Chart.getChart('chart-resources').scales;"
        " return [s.memory.position, s.cpu.position]; }"
    ) == ["left", "right"]


def test_a_provider_appears_when_first_used(ui, dash):
    dash.add_job(JobInfo(id="a", name="a", status="running", provider="aws", vm_name="a"))
    ui.open()
    assert ui.chart("chart-providers")["labels"] == ["aws"]
    dash.add_job(JobInfo(id="b", name="b", status="running", provider="gcp", vm_name="b"))
    ui.wait_ticks(2)
    assert ui.chart("chart-providers")["labels"] == ["aws", "gcp"]


def test_history_chart_holds_at_most_50_points(start_dashboard, new_page):
    dash = start_dashboard(update_interval=0.05)
    page = new_page()
    page.goto(f"http://127.0.0.1:{dash.port}/")
    # The replayed history plus live ticks: well past 50 messages.
    page.wait_for_function(
        "() => Number(document.body.dataset.messages || 0) >= 70", timeout=20_000
    )
    points = page.evaluate(
        "() => Chart.getChart('chart-jobs-over-time').data.datasets.map((d) => d.data.length)"
    )
    assert points == [50, 50, 50]
    xs = page.evaluate(
        "() => Chart.getChart('chart-resources').data.datasets[0].data.map((p) => p.x)"
    )
    assert len(xs) == 50 and xs == sorted(set(xs))


def test_page_still_works_when_chartjs_fails_to_load(ui, dash, browser_log):
    # The original loaded Chart.js from a CDN and showed nothing when that failed.
    browser_log.allow_console_error(r"Failed to load resource")
    ui.page.route("**/static/vendor/chart.umd.js", lambda route: route.abort())
    dash.update_job_metrics(6, 1, 0, 0, 0)
    ui.open()
    ui.wait_ticks(1)
    assert ui.card("jobs-active") == "6"
    notes = ui.page.locator(".chart-unavailable")
    assert notes.count() == 4
    assert "did not load" in notes.first.text_content()
