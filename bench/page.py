"""The page's cost per message in Chromium, and its JS heap over 1,000 messages.

A dashboard with 50 jobs in the table, three alerts and a full 50-point history ticks 20
times a second while its numbers change and one job moves to the top every tick; Debian's
chromium (headless, through Playwright) shows the page in a visible 1280x1200 tab, tall
enough for all four charts to be in view (a chart out of view is not redrawn).

What a user pays per message is everything the page's main thread does for it: the
WebSocket event, script, style, layout, paint and the compositor commit. Three phases of
``--messages`` messages each measure it:

1. **Cost.** The CPU time of the page's renderer main thread (``/proc/PID/task/PID/schedstat``
   of the renderer process that did the work, found through CDP ``SystemInfo``) per
   message: unlike wall time it does not count time the thread sat descheduled on a busy
   machine. Chrome's own wall-clock counters (``Performance.getMetrics`` TaskDuration,
   ScriptDuration, LayoutDuration, RecalcStyleDuration) are printed beside it, with the CPU
   of the whole renderer process (its compositor and raster threads too) and of every
   Chromium process (GPU and browser processes too) per message.
   With ``--baseline-web DIR`` (a web/ directory of another commit) the same dashboard is
   served twice more, by two runners alike but for their page, and phase 1 alternates
   baseline, page, page, baseline (``--rounds`` times), each on a fresh tab, so a change is
   a same-run comparison. The dashboard's own runner serves neither: against it an
   identical page measured 1.9 ms per message slower on the side runner.
   The bench waits on the page with a 0.5 s timer poll, not per animation frame, so its
   own probe costs next to nothing. Messages that arrive within one frame are drawn once
   (main.js); renders are counted and printed, so that coalescing is visible, never hidden.
2. **Where the time goes.** A Chrome trace (CDP ``Tracing``, categories ``toplevel`` and
   ``devtools.timeline``) over the next messages: the main thread's self time per event
   (script, paint, layout, ...). Then V8's sampling profiler (CDP ``Profiler``, a sample
   every 100 µs) over as many messages: the script's self time per file and per
   function (Chart.js's against the page's own). Both cost time of their own, so this
   phase only splits the time; phase 1 gives the figure.
3. **Heap.** After a forced garbage collection (CDP ``HeapProfiler.collectGarbage``) every
   1/8 of the phase: the JS heap in use, the DOM node count and the JS event listener
   count. A least-squares line through the heap readings tells growth from the
   collector's ups and downs. The forced collections are in neither figure above.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.runner import Runner

CHROMIUM = "/usr/bin/chromium"
SAMPLES = 8
"""Heap readings over the heap phase (each after a forced garbage collection)."""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRACE_CATEGORIES = ["toplevel", "devtools.timeline"]
TRACED = 200
"""Messages in the traced phase (at most ``--messages``)."""
BREAKDOWN = 8
"""Trace events shown in the breakdown (largest self time first)."""
COUNT = "() => Number(document.body.dataset.messages || 0)"


def metrics(cdp: Any) -> dict[str, float]:
    got = cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in got["metrics"]}


def heap(cdp: Any, tries: int = 3) -> float:
    """The JS heap in use after a forced GC: the least of ``tries`` readings, since a message
    handled between the collection and the reading adds its garbage to that one."""
    least = float("inf")
    for _ in range(tries):
        cdp.send("HeapProfiler.collectGarbage")
        least = min(least, float(cdp.send("Runtime.getHeapUsage")["usedSize"]))
    return least


def snapshot(cdp: Any) -> Counter[tuple[str, str]]:
    """Bytes in a heap snapshot (taken after a GC) by node type (object, native, code, ...)
    and, for objects and native (Blink) nodes, constructor name."""
    chunks: list[str] = []

    def take(params: dict[str, Any]) -> None:
        chunks.append(params["chunk"])

    cdp.on("HeapProfiler.addHeapSnapshotChunk", take)
    try:
        cdp.send("HeapProfiler.takeHeapSnapshot", {"reportProgress": False})
    finally:
        cdp.remove_listener("HeapProfiler.addHeapSnapshotChunk", take)
    snap = json.loads("".join(chunks))
    fields = snap["snapshot"]["meta"]["node_fields"]
    kinds, strings = snap["snapshot"]["meta"]["node_types"][0], snap["strings"]
    kind_at, name_at = fields.index("type"), fields.index("name")
    size_at, nodes = fields.index("self_size"), snap["nodes"]
    sizes: Counter[tuple[str, str]] = Counter()
    for i in range(0, len(nodes), len(fields)):
        kind = kinds[nodes[i + kind_at]]
        name = strings[nodes[i + name_at]] if kind in ("object", "native") else kind
        sizes[(kind, name[:60])] += nodes[i + size_at]
    return sizes


def cpu_times(browser_cdp: Any) -> dict[tuple[str, int], float]:
    """CPU seconds of every Chromium process, and of each renderer's main thread."""
    got: dict[tuple[str, int], float] = {}
    for proc in browser_cdp.send("SystemInfo.getProcessInfo")["processInfo"]:
        got[(proc["type"], int(proc["id"]))] = float(proc["cpuTime"])
        if proc["type"] == "renderer":
            pid = int(proc["id"])
            try:  # the main thread's id is the process id; schedstat's first field is ns
                with open(f"/proc/{pid}/task/{pid}/schedstat") as stat:
                    got[("main", pid)] = int(stat.read().split()[0]) / 1e9
            except OSError:
                pass
    return got


def wait_messages(page: Any, at_least: int) -> None:
    # A 0.5 s timer poll: polling per animation frame would run script in every frame and
    # count against the page.
    page.wait_for_function(f"() => Number(document.body.dataset.messages || 0) >= {at_least}",
                           polling=500, timeout=max(60_000, (at_least + 100) * 200))


def start_dashboard(jobs: int) -> tuple[Dashboard, threading.Event, threading.Thread]:
    dash = Dashboard(Config(port=0, update_interval=0.05, collect_system_metrics=False,
                            rate_limit=0))
    for i in range(jobs):
        dash.add_job(JobInfo(id=f"job-{i:03d}", name=f"export-vm-{i}", status="running",
                             progress=i * 2 % 100, provider=("aws", "azure", "gcp")[i % 3],
                             vm_name=f"vm-{i}"))
    for severity, text in (("critical", "disk full on exporter-2"),
                           ("warning", "slow uploads to gcp"), ("info", "new version")):
        dash.add_alert(severity, text)
    stop = threading.Event()

    def churn() -> None:  # numbers and one job change every tick, as a busy daemon's would
        n = 0
        while not stop.wait(0.05):
            n += 1
            dash.update_job_metrics(5 + n % 7, 100 + n, n // 10, 3, 3 + n % 5)
            dash.add_job(JobInfo(id=f"job-{n % jobs:03d}", name=f"export-vm-{n % jobs}",
                                 status="running", progress=n % 100, provider="aws",
                                 vm_name=f"vm-{n % jobs}"))

    dash.start_in_thread()
    worker = threading.Thread(target=churn, name="churn", daemon=True)
    worker.start()
    return dash, stop, worker


def stop_dashboard(dash: Dashboard, stop: threading.Event, worker: threading.Thread,
                   runners: list[Runner]) -> None:
    """Undoes ``start_dashboard``, with the side runners serving other pages of it."""
    stop.set()
    worker.join(5)
    for runner in runners:
        runner.stop()
    dash.close()


def load_line(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    return (f"Load average {' '.join(f'{x:.2f}' for x in before)} before, "
            f"{' '.join(f'{x:.2f}' for x in after)} after.\n")


RENDERS = "() => Number(document.body.dataset.updates || 0)"


@dataclass
class Cost:
    """Phase 1 on one tab: what its ``messages`` messages cost."""

    messages: int
    renders: int
    main_cpu: float
    """CPU seconds of the renderer's main thread."""
    renderer_cpu: float
    """CPU seconds of the whole renderer process (main, compositor and raster threads)."""
    all_cpu: float
    """CPU seconds of every Chromium process."""
    wall: dict[str, float]
    """Chrome's wall-clock counters (``Performance.getMetrics``), seconds."""

    def per(self, key: str) -> float:
        """Milliseconds per message of ``main``, ``renderer``, ``all`` or a wall counter."""
        spent = {"main": self.main_cpu, "renderer": self.renderer_cpu, "all": self.all_cpu}
        return spent.get(key, self.wall.get(key, 0.0)) / max(self.messages, 1) * 1e3


def open_page(browser: Any, url: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """A visible tab showing ``url`` with every chart in view, warmed up."""
    page = browser.new_page(viewport={"width": args.width, "height": args.height})
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(url)
    if page.evaluate("() => document.visibilityState") != "visible":
        raise RuntimeError("the page is not visible: its frames would not be drawn")
    wait_messages(page, 160)  # the replay, then 100 live messages to warm up
    # A chart out of view is not redrawn (charts.js): every one must be in view, or
    # the figure would leave out work a user looking at the charts pays for.
    hidden = page.evaluate("() => [...document.querySelectorAll('.chart-box canvas')]"
                           ".filter((c) => { const r = c.getBoundingClientRect();"
                           " return r.bottom <= 0 || r.top >= innerHeight; })"
                           ".map((c) => c.id)")
    if hidden:
        raise RuntimeError(f"charts out of view at {args.width}x{args.height}: {hidden}")
    return page, cdp


def measure_cost(page: Any, cdp: Any, browser_cdp: Any, messages: int) -> Cost:
    """Phase 1 over the next ``messages`` messages of ``page``."""
    first, first_render = int(page.evaluate(COUNT)), int(page.evaluate(RENDERS))
    c0, m0 = cpu_times(browser_cdp), metrics(cdp)
    wait_messages(page, first + messages)
    c1, m1 = cpu_times(browser_cdp), metrics(cdp)
    done = int(page.evaluate(COUNT)) - first
    drawn = int(page.evaluate(RENDERS)) - first_render
    spent = {key: c1[key] - c0[key] for key in c1.keys() & c0.keys()}
    # The busiest renderer main thread is this tab's (the others are idle or closed).
    main_cpu, pid = max(((v, p) for (kind, p), v in spent.items() if kind == "main"),
                        default=(0.0, 0))
    return Cost(
        messages=done, renders=drawn, main_cpu=main_cpu,
        renderer_cpu=spent.get(("renderer", pid), 0.0),
        all_cpu=sum(v for (kind, _), v in spent.items() if kind != "main"),
        wall={key: m1[key] - m0[key] for key in m1.keys() & m0.keys()},
    )


def trace_window(page: Any, cdp: Any, messages: int) -> tuple[list[dict[str, Any]], int]:
    """Traces the page over ``messages`` messages; returns the events and the messages."""
    events: list[dict[str, Any]] = []
    complete = threading.Event()
    cdp.on("Tracing.dataCollected", lambda params: events.extend(params["value"]))
    cdp.on("Tracing.tracingComplete", lambda params: complete.set())
    first = int(page.evaluate(COUNT))
    cdp.send("Tracing.start", {"traceConfig": {"includedCategories": TRACE_CATEGORIES},
                               "transferMode": "ReportEvents"})
    wait_messages(page, first + messages)
    done = int(page.evaluate(COUNT)) - first
    cdp.send("Tracing.end")
    deadline = time.monotonic() + 120
    while not complete.is_set() and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # the events arrive through Playwright's own loop
    if not complete.is_set():
        raise RuntimeError("the trace did not complete within 120 s")
    return events, done


def main_thread_tasks(events: list[dict[str, Any]]) -> Counter[str]:
    """The self wall time (µs) of each event name on the busiest renderer main thread."""
    mains = {(e["pid"], e["tid"]) for e in events
             if e.get("name") == "thread_name"
             and e.get("args", {}).get("name") == "CrRendererMain"}
    per_thread: dict[tuple[int, int], list[dict[str, Any]]] = {key: [] for key in mains}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if e.get("ph") == "X" and key in per_thread:
            per_thread[key].append(e)
    best: tuple[float, Counter[str]] = (0.0, Counter())
    for slices in per_thread.values():
        slices.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
        wall = 0.0
        own: Counter[str] = Counter()
        stack: list[dict[str, Any]] = []
        for e in slices:
            while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) <= e["ts"]:
                stack.pop()
            if stack:
                own[stack[-1]["name"]] -= e.get("dur", 0)
            else:
                wall += e.get("dur", 0)
            own[e["name"]] += e.get("dur", 0)
            stack.append(e)
        if wall > best[0]:
            best = (wall, own)
    return best[1]


def js_profile(page: Any, cdp: Any, messages: int
               ) -> tuple[Counter[str], Counter[str], int]:
    """V8's sampling profile over ``messages`` messages: self time (µs) by script file and
    by function, and the messages it covered. Idle and "(program)" (the browser's own
    work between scripts) are left out: the trace splits those."""
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 100})
    first = int(page.evaluate(COUNT))
    cdp.send("Profiler.start")
    wait_messages(page, first + messages)
    profile = cdp.send("Profiler.stop")["profile"]
    done = int(page.evaluate(COUNT)) - first
    cdp.send("Profiler.disable")
    frames = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    by_file: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    # timeDeltas[i] is the time before sample i: sample i ran until sample i + 1.
    for sample, micros in zip(profile["samples"], profile["timeDeltas"][1:], strict=False):
        frame = frames[sample]
        name = frame["functionName"] or "(anonymous)"
        if name in ("(idle)", "(program)", "(root)"):
            continue
        where = frame["url"].rsplit("/", 1)[-1] or "(native)"
        by_file[where] += micros
        by_function[f"{name} ({where})"] += micros
    return by_file, by_function, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench page")
    parser.add_argument("--messages", type=int, default=1000,
                        help="messages in each phase (cost, then heap)")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--width", type=int, default=1280, help="viewport width in px")
    parser.add_argument("--height", type=int, default=1200,
                        help="viewport height in px: all four charts must be in view")
    parser.add_argument("--baseline-web", type=Path, default=None,
                        help="a baseline page's web/ directory (templates/ and static/, e.g. "
                             "`git archive main web | tar -x -C DIR`), served beside this "
                             "page and measured alternately with it in the same run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --baseline-web: rounds of baseline, page, page, baseline")
    args = parser.parse_args(argv)
    baseline: Path | None = args.baseline_web
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    dash, stop, worker = start_dashboard(args.jobs)
    sides: list[Runner] = []
    try:
        url = baseline_url = f"http://127.0.0.1:{dash.port}/"
        if baseline is not None:
            # The same dashboard served twice more, with this page and with the baseline's
            # page and scripts, by two runners alike in every other way.
            assets = Assets.locate()
            for web in (assets, Assets(baseline / "templates", baseline / "static",
                                       assets.chart_js)):
                sides.append(Runner(dash, assets=web))
                sides[-1].start_in_thread()
            url, baseline_url = (f"http://127.0.0.1:{side.port}/" for side in sides)
        time.sleep(3.0)  # a full 50-message history before the page connects
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            browser_cdp = browser.new_browser_cdp_session()
            runs: list[tuple[str, Cost]] = []
            if baseline is not None:
                # Alternate baseline and this page (ABBA...), each on a fresh tab, so both
                # meet the same load; the last run keeps its tab for the trace and the heap.
                order = ["baseline", "page", "page", "baseline"] * args.rounds
                for name in order[:-1]:
                    page, cdp = open_page(browser, baseline_url if name == "baseline" else url,
                                          args)
                    runs.append((name, measure_cost(page, cdp, browser_cdp, args.messages)))
                    page.close()
                last = order[-1]
                page, cdp = open_page(browser, baseline_url if last == "baseline" else url, args)
                runs.append((last, measure_cost(page, cdp, browser_cdp, args.messages)))
                if last == "baseline":
                    page.close()
                    page, cdp = open_page(browser, url, args)
            else:
                page, cdp = open_page(browser, url, args)
                runs.append(("page", measure_cost(page, cdp, browser_cdp, args.messages)))

            events, traced = trace_window(page, cdp, min(TRACED, args.messages))
            own = main_thread_tasks(events)
            by_file, by_function, profiled = js_profile(page, cdp, min(TRACED, args.messages))

            heaps, nodes, listeners = [], [], []
            cdp.send("HeapProfiler.enable")
            before = snapshot(cdp)
            first = int(page.evaluate(COUNT))
            for k in range(SAMPLES + 1):
                if k:
                    wait_messages(page, first + args.messages * k // SAMPLES)
                heaps.append(heap(cdp))
                after_gc = metrics(cdp)
                nodes.append(int(after_gc["Nodes"]))
                listeners.append(int(after_gc["JSEventListeners"]))
            heap_done = int(page.evaluate(COUNT)) - first
            grown = snapshot(cdp)
            grown.subtract(before)
            points = int(page.evaluate("() => window.hyperdash.history.length"))
            rows = int(page.evaluate("() => document.querySelectorAll('#jobs-body tr').length"))
            browser.close()
    finally:
        stop_dashboard(dash, stop, worker, sides)
    load_after = os.getloadavg()

    print(f"\n## The page in Chromium: {args.jobs} jobs, {rows} table rows, {points} chart "
          f"points, {args.width}x{args.height}, visible, every chart in view\n")
    print(load_line(load_before, load_after))
    if baseline is not None:
        print(f"Baseline page: `{baseline}`, alternated with this page in the same run.\n")
    print("| page | messages | renders | main thread CPU per message | per render "
          "| main thread wall (TaskDuration) | of it script / layout / style "
          "| renderer process CPU | all Chromium processes' CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cost in runs:
        print(f"| {name} | {cost.messages:,} | {cost.renders:,} "
              f"| **{cost.per('main'):.2f} ms** "
              f"| {cost.main_cpu / max(cost.renders, 1) * 1e3:.2f} ms "
              f"| {cost.per('TaskDuration'):.2f} ms | {cost.per('ScriptDuration'):.2f} / "
              f"{cost.per('LayoutDuration'):.2f} / {cost.per('RecalcStyleDuration'):.2f} ms "
              f"| {cost.per('renderer'):.2f} ms | {cost.per('all'):.2f} ms |")
    if baseline is not None:
        for name in ("baseline", "page"):
            mains = [cost.per("main") for n, cost in runs if n == name]
            print(f"\n{name}: main thread CPU per message, mean of {len(mains)} runs: "
                  f"{sum(mains) / len(mains):.2f} ms")
    print(f"\nWhere the main thread's time goes ({traced:,} traced messages, self wall time):\n")
    print("| event | ms per message |")
    print("|---|---|")
    for name, micros in own.most_common(BREAKDOWN):
        print(f"| {name} | {micros / traced / 1e3:.2f} |")
    print(f"\nWhere the script's time goes ({profiled:,} profiled messages, V8 samples every "
          "100 µs, self time):\n")
    print("| script file | ms per message |")
    print("|---|---|")
    for name, micros in by_file.most_common(BREAKDOWN):
        print(f"| {name} | {micros / max(profiled, 1) / 1e3:.2f} |")
    print("\n| function | ms per message |")
    print("|---|---|")
    for name, micros in by_function.most_common(BREAKDOWN):
        print(f"| {name} | {micros / max(profiled, 1) / 1e3:.2f} |")
    slope = _slope(heaps) * SAMPLES / heap_done * 1000  # bytes per 1,000 messages
    print(f"\nAfter a forced GC every {args.messages // SAMPLES} messages "
          f"({heap_done:,} messages):\n")
    print("| JS heap | trend (least squares) | DOM nodes | JS event listeners |")
    print("|---|---|---|---|")
    print(f"| {' / '.join(f'{h / 2**20:.2f}' for h in heaps)} MiB "
          f"| {slope / 1024:+.0f} KiB per 1,000 messages "
          f"| {nodes[0]} to {nodes[-1]} (max {max(nodes)}) "
          f"| {listeners[0]} to {listeners[-1]} (max {max(listeners)}) |")
    group = Counter({"code": 0, "native": 0, "js": 0})
    for (kind, _), size in grown.items():
        group["code" if kind == "code" else "native" if kind == "native" else "js"] += size
    top = ", ".join(f"{name} {size / 1024:+.0f}" for (_, name), size in grown.most_common(3)
                    if size > 0)
    print(f"\nHeap snapshots at the start and end of those messages: "
          f"{group['js'] / 1024:+.0f} KiB of JS objects, strings and arrays; "
          f"{group['native'] / 1024:+.0f} KiB of Blink's own (DOM, performance entries); "
          f"{group['code'] / 1024:+.0f} KiB of compiled code (V8 optimising hot functions). "
          f"Most grown: {top or 'nothing'} (KiB).")
    return 0


def _slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    den = sum((i - mean_x) ** 2 for i in range(n))
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / den


if __name__ == "__main__":
    sys.exit(main())
