"""The charts' legends: HTML under each chart, built once, toggling lines and slices.

Chart.js's own legend is off (it was rebuilt, measured and drawn on every update, issue
#14); the page's legend must do what it did for a viewer: name every line or slice in its
colour, hide one on click and show it on the next, and keep the chart updating meanwhile.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

LEGENDS = """() => Object.fromEntries([...document.querySelectorAll('.chart-legend')].map((list) =>
  [list.id, [...list.querySelectorAll('button')].map((b) =>
    [b.textContent, b.getAttribute('aria-pressed')])]))"""
SHOWN = """() => {
  const lines = (id) => Chart.getChart(id).data.datasets.map((_, i) =>
    Chart.getChart(id).isDatasetVisible(i));
  const status = Chart.getChart("chart-job-status");
  return {
    status: status.data.labels.map((_, i) => status.getDataVisibility(i)),
    timeline: lines("chart-jobs-over-time"),
    resources: lines("chart-resources"),
  };
}"""


def test_every_line_and_slice_is_named_once_and_chartjs_draws_no_legend(ui, dash):
    dash.update_job_metrics(3, 10, 1, 2, 0)
    ui.open()
    ui.wait_ticks(2)
    assert ui.page.evaluate(LEGENDS) == {
        "legend-job-status": [["Active", "true"], ["Completed", "true"], ["Failed", "true"],
                              ["Pending", "true"]],
        "legend-jobs-over-time": [["Active", "true"], ["Completed", "true"],
                                  ["Failed", "true"]],
        "legend-resources": [["Memory (MB)", "true"], ["CPU (%)", "true"]],
    }
    # No legend box inside a canvas: the chart area starts at the top and fills the width.
    assert ui.page.evaluate("""() => ["chart-job-status", "chart-jobs-over-time",
        "chart-resources"].map((id) => Chart.getChart(id).legend === undefined
          || Chart.getChart(id).legend.options.display === false)""") == [True, True, True]


def test_a_click_hides_a_line_or_slice_and_the_next_shows_it(ui, dash):
    dash.update_job_metrics(3, 10, 1, 2, 0)
    ui.open()
    ui.wait_ticks(2)
    ui.page.get_by_test_id("legend-jobs-over-time").get_by_role("button", name="Completed").click()
    ui.page.get_by_test_id("legend-job-status").get_by_role("button", name="Failed").click()
    ui.page.get_by_test_id("legend-resources").get_by_role("button", name="CPU (%)").click()
    assert ui.page.evaluate(SHOWN) == {"status": [True, True, False, True],
                                       "timeline": [True, False, True],
                                       "resources": [True, False]}
    pressed = ui.page.evaluate(LEGENDS)
    assert pressed["legend-jobs-over-time"][1] == ["Completed", "false"]
    assert pressed["legend-job-status"][2] == ["Failed", "false"]
    assert pressed["legend-resources"][1] == ["CPU (%)", "false"]
    # A hidden line stays hidden while the chart moves on with new ticks.
    dash.update_job_metrics(5, 12, 1, 2, 0)
    ui.wait_ticks(2)
    assert ui.page.evaluate(SHOWN)["timeline"] == [True, False, True]
    assert ui.page.evaluate(
        "() => Chart.getChart('chart-jobs-over-time').data.datasets[0].data.at(-1).y") == 5
    # The keyboard works as the mouse: a focused entry toggles with Enter.
    ui.page.get_by_test_id("legend-jobs-over-time").get_by_role("button", name="Completed").press(
        "Enter")
    ui.page.get_by_test_id("legend-job-status").get_by_role("button", name="Failed").click()
    ui.page.get_by_test_id("legend-resources").get_by_role("button", name="CPU (%)").click()
    assert ui.page.evaluate(SHOWN) == {"status": [True, True, True, True],
                                       "timeline": [True, True, True],
                                       "resources": [True, True]}
    assert all(state == "true" for entries in ui.page.evaluate(LEGENDS).values()
               for _, state in entries)


def test_the_legends_are_not_rewritten_by_messages(ui, dash):
    ui.open()
    ui.page.evaluate("""() => {
      window.__legendChanges = 0;
      const observer = new MutationObserver((records) => {
        window.__legendChanges += records.length;
      });
      for (const list of document.querySelectorAll('.chart-legend')) {
        observer.observe(list, { subtree: true, childList: true, attributes: true,
                                 characterData: true });
      }
    }""")
    for n in range(3):
        dash.update_job_metrics(3 + n, 10 + n, n, 2, 0)
        ui.wait_ticks(1)
    assert ui.page.evaluate("() => window.__legendChanges") == 0
