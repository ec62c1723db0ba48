"""Where the page's cost per message goes, part by part, in Chromium.

``python -m bench page`` gives what the whole page costs per message; this bench says what
each part of it costs, by measuring the page with parts left out. The same dashboard as
``bench page`` (50 jobs, one moving to the top every tick, three alerts, 20 messages a
second, a full history) is served by one runner per variant. Each variant is the shipped
``web/`` with some of its modules swapped for the stubs in ``bench/page_stubs/``, which
export the same names and draw nothing (the charts' stub still records the history):

- **page**: as shipped;
- **no charts**: ``charts.js`` stubbed;
- **no table**: ``jobs.js`` stubbed;
- **no charts, no table**: both;
- **charts only**: every module that draws stubbed but ``charts.js``: the four Chart.js
  charts alone, the least a page with them can cost per message;
- **receiving only**: every module that draws stubbed (charts, table, cards, status,
  alerts, fleet), so what is left is the WebSocket message, its parse and ``main.js``'s
  frame scheduling: the cost of a message before the page shows anything.

Each variant is measured ``--rounds`` times, in an order reversed every round (ABC..., ...CBA),
each time on a fresh tab, with ``bench page``'s measure: the CPU time of the renderer's main
thread per message. A part costs roughly the difference between the page with it and
without it; the differences need not add up exactly (a frame that draws nothing is cheaper
than one that draws a little).

Last, on one more tab of the shipped page, each chart's Chart.js ``update('none')`` (the call
the page makes when a chart's numbers change) is timed back to back in the page: the script
one chart costs per message, before the frame draws it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.runner import Runner

from .page import (ARGS, CHROMIUM, Cost, load_line, measure_cost, open_page, start_dashboard,
                   stop_dashboard)

STUBS = Path(__file__).parent / "page_stubs"
UPDATES = 200
"""Chart.js ``update()`` calls timed per chart, back to back, on the shipped page."""
CHART_UPDATES = """(n) => [...document.querySelectorAll('.chart-box canvas')].map((canvas) => {
  const chart = Chart.getChart(canvas);
  const start = performance.now();
  for (let i = 0; i < n; i += 1) chart.update('none');
  return [canvas.id, chart.config.type, (performance.now() - start) / n];
})"""
DISPLAY = ("charts", "jobs", "cards", "status", "alerts", "instances")
VARIANTS: dict[str, tuple[str, ...]] = {
    "page": (),
    "no charts": ("charts",),
    "no table": ("jobs",),
    "no charts, no table": ("charts", "jobs"),
    "charts only": tuple(module for module in DISPLAY if module != "charts"),
    "receiving only": DISPLAY,
}
"""Variant name -> the modules of ``web/static/js`` replaced by their stubs."""


def make_web(root: Path, assets: Assets, stubbed: tuple[str, ...]) -> Assets:
    """A copy of the shipped page under ``root`` with the modules ``stubbed`` replaced."""
    templates, static = root / "templates", root / "static"
    shutil.copytree(assets.templates, templates)
    shutil.copytree(assets.static, static)
    for module in stubbed:
        shutil.copyfile(STUBS / f"{module}.js", static / "js" / f"{module}.js")
    return Assets(templates, static, assets.chart_js)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench page-budget")
    parser.add_argument("--messages", type=int, default=300,
                        help="messages measured per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1200)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    dash, stop, worker = start_dashboard(args.jobs)
    runners: list[Runner] = []
    runs: dict[str, list[Cost]] = {name: [] for name in VARIANTS}
    try:
        with tempfile.TemporaryDirectory(prefix="hyperdash-page-budget-") as tmp:
            shipped = Assets.locate()
            urls = {}
            for i, (name, stubbed) in enumerate(VARIANTS.items()):
                runner = Runner(dash, assets=make_web(Path(tmp) / str(i), shipped, stubbed))
                runner.start_in_thread()
                runners.append(runner)
                urls[name] = f"http://127.0.0.1:{runner.port}/"
            time.sleep(3.0)  # a full 50-message history before the pages connect
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                browser_cdp = browser.new_browser_cdp_session()
                names = list(VARIANTS)
                for round_ in range(args.rounds):
                    for name in names if round_ % 2 == 0 else names[::-1]:
                        page, cdp = open_page(browser, urls[name], args)
                        runs[name].append(measure_cost(page, cdp, browser_cdp, args.messages))
                        page.close()
                page, _ = open_page(browser, urls["page"], args)
                updates = page.evaluate(CHART_UPDATES, UPDATES)
                page.close()
                browser.close()
    finally:
        stop_dashboard(dash, stop, worker, runners)
    load_after = os.getloadavg()

    print(f"\n## The page's cost per message, part by part: {args.jobs} jobs, "
          f"{args.width}x{args.height}, {args.rounds} rounds of {args.messages} messages\n")
    print(load_line(load_before, load_after))
    print("| variant | main thread CPU per message (each run) | mean | of it script / layout "
          "| renders per message |")
    print("|---|---|---|---|---|")
    means = {}
    for name, costs in runs.items():
        means[name] = statistics.mean(cost.per("main") for cost in costs)
        each = ", ".join(f"{cost.per('main'):.2f}" for cost in costs)
        script = statistics.mean(cost.per("ScriptDuration") for cost in costs)
        layout = statistics.mean(cost.per("LayoutDuration") for cost in costs)
        renders = sum(c.renders for c in costs) / max(sum(c.messages for c in costs), 1)
        print(f"| {name} | {each} ms | **{means[name]:.2f} ms** | {script:.2f} / {layout:.2f} ms "
              f"| {renders:.2f} |")
    full = means["page"]
    print("\nWhat each part costs (the page with it, less the page without it):\n")
    print("| part | ms per message | of the page |")
    print("|---|---|---|")
    parts = (("the four charts", full - means["no charts"]),
             ("the jobs table", full - means["no table"]),
             ("cards, status, alerts and their frame",
              means["no charts, no table"] - means["receiving only"]),
             ("receiving a message (WebSocket, parse, scheduling)", means["receiving only"]),
             ("the four charts on a page of nothing else (charts only, less receiving only)",
              means["charts only"] - means["receiving only"]))
    for part, cost in parts:
        print(f"| {part} | {cost:.2f} | {cost / full:.0%} |")
    print(f"\nOne Chart.js `update('none')` per chart, timed in the shipped page ({UPDATES} "
          "back to back, wall time; no frame, so no compositing):\n")
    print("| chart | type | ms per update |")
    print("|---|---|---|")
    for canvas, kind, millis in updates:
        print(f"| {canvas} | {kind} | {millis:.2f} |")
    return 0
