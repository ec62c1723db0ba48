"""What a message changes on the page: only what differs (issue #14, the page's cost).

A tick that changes one job rewrites that row alone; a tick that changes nothing leaves the
table untouched (a selection in it survives); a new job moves no other row; the line
charts keep their points and change them in place, and still equal the history after a
replay. (The charts' point sync itself is driven directly in test_modules.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from hyperdash_otel import JobInfo

pytestmark = pytest.mark.browser

WATCH = """() => {
  window.__mutations = [];
  const body = document.getElementById("jobs-body");
  window.__observer = new MutationObserver((records) => {
    for (const r of records) {
      const row = (r.target.nodeType === 1 ? r.target : r.target.parentElement).closest("tr");
      window.__mutations.push({
        type: r.type,
        row: row && row !== body ? row.dataset.jobId : null,
        added: [...r.addedNodes].map((n) => n.dataset && n.dataset.jobId),
        removed: [...r.removedNodes].map((n) => n.dataset && n.dataset.jobId),
      });
    }
  });
  window.__observer.observe(body, { subtree: true, childList: true, attributes: true,
                                    characterData: true });
}"""
TAKEN = "() => { const m = window.__mutations; window.__mutations = []; return m; }"


def job(n: int, progress: float = 10) -> JobInfo:
    # Pending: a running job's duration would change every second, and with it its row.
    return JobInfo(id=f"job-{n:02d}", name=f"export-{n:02d}", status="pending",
                   progress=progress, provider="aws", vm_name=f"vm-{n:02d}")


def opened_with_jobs(ui: Any, count: int) -> Any:
    for n in range(count):
        ui.dash.add_job(job(n))
    ui.open()
    ui.page.wait_for_function("(n) => document.querySelectorAll('#jobs-body tr').length === n",
                              arg=count)
    ui.page.evaluate(WATCH)
    return ui.page


def test_ticks_that_change_nothing_leave_the_table_alone(ui):
    page = opened_with_jobs(ui, 12)
    page.evaluate("""() => {
      const cell = document.querySelector('#jobs-body tr[data-job-id="job-05"] .col-vm');
      getSelection().selectAllChildren(cell);
    }""")
    ui.wait_ticks(4)
    assert page.evaluate(TAKEN) == []
    assert page.evaluate("() => String(getSelection())") == "vm-05"


def test_a_changed_job_rewrites_its_row_only(ui):
    page = opened_with_jobs(ui, 12)
    ui.dash.add_job(job(7, progress=64))
    page.wait_for_function("""() => document.querySelector(
      '#jobs-body tr[data-job-id="job-07"] .progress-text').textContent === "64%" """)
    ui.wait_ticks(2)
    changes = page.evaluate(TAKEN)
    assert changes, "the progress change was not seen"
    assert {change["row"] for change in changes} == {"job-07"}
    row = page.locator('#jobs-body tr[data-job-id="job-07"]')
    assert row.locator(".progress").get_attribute("aria-valuenow") == "64"


def test_a_new_job_adds_one_row_and_moves_none(ui):
    page = opened_with_jobs(ui, 12)
    ui.dash.add_job(job(40))
    page.wait_for_function("() => document.querySelectorAll('#jobs-body tr').length === 13")
    ui.wait_ticks(2)
    changes = page.evaluate(TAKEN)
    added = [i for change in changes if change["row"] is None for i in change["added"]]
    removed = [i for change in changes if change["row"] is None for i in change["removed"]]
    assert added == ["job-40"]
    assert removed == []
    ids = ui.rows().evaluate_all("(rows) => rows.map((r) => r.dataset.jobId)")
    assert ids == ["job-40"] + [f"job-{n:02d}" for n in range(11, -1, -1)]


def test_a_full_table_drops_the_oldest_row_for_a_new_one(start_dashboard, new_page, make_ui):
    ui = make_ui(new_page(), start_dashboard(max_jobs=50))
    page = opened_with_jobs(ui, 50)
    ui.dash.add_job(job(50))
    page.wait_for_function("""() =>
      document.querySelector('#jobs-body tr').dataset.jobId === "job-50" """)
    ui.wait_ticks(2)
    changes = page.evaluate(TAKEN)
    added = [i for change in changes if change["row"] is None for i in change["added"]]
    removed = [i for change in changes if change["row"] is None for i in change["removed"]]
    assert (added, removed) == (["job-50"], ["job-00"])
    assert ui.rows().count() == 50


LINES = """() => {
  const points = window.hyperdash.history.points;
  const lines = {};
  for (const id of ["chart-jobs-over-time", "chart-resources"]) {
    for (const d of Chart.getChart(id).data.datasets) lines[d.label] = d.data;
  }
  return {
    history: points.map((p) => [p.t, p.active, p.completed, p.failed, p.memory, p.cpu]),
    lines: Object.fromEntries(Object.entries(lines).map(([k, v]) => [k, v.map((p) => [p.x, p.y])])),
  };
}"""


def test_line_charts_equal_the_history_through_ticks_and_a_replay(ui, dash):
    dash.update_job_metrics(3, 10, 1, 2, 0)
    dash.update_system_metrics(512, 30.0, 8)
    ui.open()
    ui.wait_ticks(3)
    # The same point objects stay on the chart while it moves on (changed in place).
    ui.page.evaluate("""() => { window.__first = Chart.getChart("chart-resources")
                                  .data.datasets[0].data.at(-1); }""")
    dash.update_job_metrics(4, 11, 1, 2, 0)
    dash.update_system_metrics(600, 45.5, 8)
    ui.wait_ticks(3)
    assert ui.page.evaluate("""() => Chart.getChart("chart-resources")
                                .data.datasets[0].data.includes(window.__first)""")
    ui.page.evaluate("() => window.hyperdash.connection.socket.close()")
    ui.wait_fresh()  # reconnected: the server's replay filled whatever was missed
    ui.wait_ticks(2)
    got = ui.page.evaluate(LINES)
    history = got["history"]
    assert 6 <= len(history) <= 50
    columns = {"Active": 1, "Completed": 2, "Failed": 3, "Memory (MB)": 4, "CPU (%)": 5}
    for label, column in columns.items():
        assert got["lines"][label] == [[p[0], p[column]] for p in history], label
    assert got["lines"]["CPU (%)"][-1][1] == 45.5


def test_a_chart_out_of_view_is_drawn_again_when_it_comes_back(dash, new_page, make_ui):
    ui = make_ui(new_page(390, 844), dash)  # a phone: one or two charts on screen at a time
    dash.update_job_metrics(3, 10, 1, 2, 0)
    ui.open()
    drawn_to = """() => { const c = Chart.getChart("chart-jobs-over-time");
                        return [c.scales.x.max, c.options.scales.x.max]; }"""
    same = f"() => {{ const [d, w] = ({drawn_to})(); return d === w; }}"
    ui.page.evaluate("() => document.getElementById('chart-jobs-over-time').scrollIntoView()")
    ui.page.wait_for_function(same)
    ui.page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
    ui.page.wait_for_function("""() => document.getElementById("chart-jobs-over-time")
                                   .getBoundingClientRect().bottom < 0""")
    ui.wait_ticks(3)
    drawn, wanted = ui.page.evaluate(drawn_to)
    assert drawn < wanted  # the points moved on; the chart out of view was not redrawn
    # ...and Chart.js has no record of changes piling up until it is (its own list, kept
    # until the next update, would grow with every message for as long as it is away).
    assert ui.page.evaluate("() => Chart.getChart('chart-jobs-over-time')._dataChanges.length") == 0
    assert ui.chart("chart-jobs-over-time")["datasets"][0]["data"][-1]["x"] == wanted
    ui.page.evaluate("() => document.getElementById('chart-jobs-over-time').scrollIntoView()")
    ui.page.wait_for_function(same)
