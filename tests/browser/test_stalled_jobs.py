"""ETA and stalled jobs on the page: the ETA column, the stalled badge, stalled jobs first,
and a real `hyperdash demo` whose hung export shows as stalled, with an alert, in time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

STALL_AFTER = 1.0
DEMO_TICK = 0.25


def render(ui: Any, jobs: list[dict[str, Any]]) -> Any:
    """Render `jobs` and read the table back in one synchronous evaluation (no tick can
    come in between)."""
    return ui.page.evaluate(
        """(jobs) => {
             window.updateDashboard({ timestamp: new Date().toISOString(), recent_jobs: jobs,
                                      alerts: [] });
             return {
               order: [...document.querySelectorAll("#jobs-body tr")].map((tr) => tr.dataset.jobId),
               count: document.getElementById("jobs-count").textContent,
               rows: Object.fromEntries([...document.querySelectorAll("#jobs-body tr")].map(
                 (tr) => {
                   const stall = tr.querySelector(".stall-badge");
                   const eta = tr.querySelector(".col-eta time");
                   return [tr.dataset.jobId, {
                     stalled: tr.dataset.stalled,
                     badge: stall.hidden ? null : stall.textContent,
                     badgeTitle: stall.getAttribute("title"),
                     badgeVisible: stall.getBoundingClientRect().width > 0,
                     eta: eta.textContent,
                     etaTitle: eta.getAttribute("title"),
                     etaDatetime: eta.getAttribute("datetime"),
                   }];
                 })),
             };
           }""",
        jobs,
    )


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": job_id, "name": f"export {job_id}", "status": "running", "progress": 40,
            "start_time": None, "end_time": None, "duration": 10, "provider": "aws",
            "vm_name": "vm", "error_msg": "", "eta_seconds": None, "stalled": False,
            "last_progress_at": None}
    return {**base, **fields}


def test_eta_column_badge_and_stalled_first(ui: Any) -> None:
    ui.open()
    moved = (datetime.now(timezone.utc) - timedelta(minutes=6)).isoformat()
    seen = render(ui, [
        job("new", eta_seconds=240),
        job("hung", stalled=True, last_progress_at=moved),
        job("early", eta_seconds=None),
        job("done", status="completed", progress=100, eta_seconds=None),
        job("soon", eta_seconds=0.2),
    ])
    assert seen["order"] == ["hung", "new", "early", "done", "soon"]
    assert seen["count"] == "5 jobs, 1 stalled"
    rows = seen["rows"]
    hung = rows["hung"]
    assert (hung["stalled"], hung["badge"], hung["badgeVisible"], hung["eta"]) == (
        "true", "stalled", True, "\u2014")
    assert hung["badgeTitle"].startswith("No progress since ")
    new = rows["new"]
    assert (new["eta"], new["badge"], new["badgeVisible"]) == ("in 4 min", None, False)
    assert new["etaTitle"].startswith("Expected to finish at ")
    finish = datetime.fromisoformat(new["etaDatetime"].replace("Z", "+00:00"))
    assert abs((finish - datetime.now(timezone.utc)).total_seconds() - 240) < 90
    assert (rows["early"]["eta"], rows["done"]["eta"], rows["soon"]["eta"]) == (
        "\u2014", "\u2014", "any moment")
    # Moving again: the badge goes, the server's order (newest first) is back.
    seen = render(ui, [job("new", eta_seconds=230), job("hung", eta_seconds=900),
                       job("early")])
    assert seen["order"] == ["new", "hung", "early"]
    assert seen["count"] == "3 jobs"
    assert (seen["rows"]["hung"]["badge"], seen["rows"]["hung"]["eta"]) == (None, "in 15 min")


def test_job_text_in_the_badge_title_and_eta_stays_text(ui: Any) -> None:
    ui.open()
    payload = '<img src=x onerror="window.__xss=1">'
    seen = render(ui, [job(payload, name=payload, stalled=True, last_progress_at=payload,
                           eta_seconds=payload)])
    assert seen["rows"][payload]["badgeTitle"].startswith("No progress")
    assert "<" not in seen["rows"][payload]["badgeTitle"]
    assert seen["rows"][payload]["eta"] == "\u2014"
    assert ui.page.evaluate("() => window.__xss === undefined")
    assert ui.page.locator("#jobs-body img").count() == 0


class Served:
    """What DashboardPage needs of a dashboard: its port."""

    def __init__(self, url: str) -> None:
        self.port = urlsplit(url).port


# Records, in the page, when each row first shows as stalled (with its place in the table
# and the server's last_progress_at) and when a stall alert first shows.
WATCH = """() => {
  window.__stalls = {};
  window.__stallAlerts = [];
  const body = document.getElementById("jobs-body");
  const list = document.getElementById("alerts-list");
  const look = () => {
    const rows = [...body.children];
    rows.forEach((tr, index) => {
      const id = tr.dataset.jobId;
      if (tr.dataset.stalled === "true" && !(id in window.__stalls)) {
        window.__stalls[id] = {
          at: Date.now(), index, progressAt: tr.dataset.lastProgressAt,
          badge: tr.querySelector(".stall-badge").getBoundingClientRect().width > 0,
          firstMoving: rows.findIndex((r) => r.dataset.stalled !== "true"),
        };
      }
    });
    for (const box of list.querySelectorAll(".alert")) {
      const text = box.querySelector(".alert-message").textContent;
      if (/ stalled at \\d+%/.test(text) && !window.__stallAlerts.some((a) => a.text === text)) {
        window.__stallAlerts.push({ text, at: Date.now(), severity: box.dataset.severity });
      }
    }
  };
  new MutationObserver(look).observe(document.querySelector("main"),
    { subtree: true, childList: true, attributes: true });
  look();
}"""


def test_a_hung_export_in_the_demo_shows_stalled_with_an_alert_in_time(
    spawn: Any, new_page: Any, make_ui: Any, browser_log: Any
) -> None:
    demo = spawn("demo", "--port", "0", "--seed", "3", "--interval", str(DEMO_TICK),
                 "--speed", "1", "--warmup", "0", "--rate", "60",
                 "--stall-after", str(STALL_AFTER), "--hang-every", "3")
    ui = make_ui(new_page(1280, 800), Served(demo.url))
    ui.open()
    ui.page.evaluate(WATCH)
    # Running jobs show an ETA once they have a few progress points.
    ui.page.wait_for_function(
        """() => [...document.querySelectorAll('#jobs-body tr[data-status="running"]')]
                   .filter((tr) => tr.querySelector(".col-eta time").dataset.eta !== "")
                   .length >= 3""",
        timeout=30_000,
    )
    etas = ui.page.evaluate(
        """() => [...document.querySelectorAll('#jobs-body tr[data-status="running"]')]
                   .map((tr) => tr.querySelector(".col-eta time").textContent)""")
    assert any(e.startswith("in ") or e == "any moment" for e in etas), etas
    # A hung export: the badge, first in the table, and a warning alert.
    ui.page.wait_for_function(
        "() => Object.keys(window.__stalls).length >= 1 && window.__stallAlerts.length >= 1",
        timeout=30_000,
    )
    stalls = ui.page.evaluate("() => window.__stalls")
    alerts = ui.page.evaluate("() => window.__stallAlerts")
    job_id, first = next(iter(stalls.items()))
    assert first["badge"] is True
    assert first["index"] < first["firstMoving"] or first["firstMoving"] == -1
    moved_at = datetime.fromisoformat(first["progressAt"].replace("Z", "+00:00"))
    shown_after = first["at"] / 1000 - moved_at.timestamp()
    assert STALL_AFTER <= shown_after + 0.05 <= STALL_AFTER + 2 * DEMO_TICK + 0.05, shown_after
    alert = next(a for a in alerts if f"Job {job_id} " in a["text"])
    assert alert["severity"] == "warning"
    assert alert["at"] / 1000 - moved_at.timestamp() <= STALL_AFTER + 2 * DEMO_TICK + 0.05
    # The hang ends: the badge goes and an info alert says the job moves again.
    ui.page.wait_for_function(
        "(id) => document.querySelector(`#jobs-body tr[data-job-id='${id}']`)?.dataset"
        ".stalled !== 'true'", arg=job_id, timeout=15_000)
    ui.page.wait_for_function(
        """() => [...document.querySelectorAll("#alerts-list .alert-message")]
                   .some((m) => / is moving again | after a stall$/.test(m.textContent))""",
        timeout=15_000)
    code, _ = demo.stop()
    assert code == 0
    assert browser_log.unexpected_console_errors() == []
