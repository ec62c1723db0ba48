"""The page's cost per message in Chromium, and its JS heap over 1,000 messages.

A dashboard with 50 jobs in the table, three alerts and a full 50-point history ticks 20
times a second while its numbers change; Debian's chromium (headless, through Playwright)
shows the page. Chrome's own counters (CDP ``Performance.getMetrics``) give the main
thread's busy time per message (TaskDuration: script, style, layout, paint) over 1,000
messages; the JS heap is read after a forced garbage collection every 125 messages, and a
least-squares line through the readings tells growth from the collector's ups and downs.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from hyperdash_otel import Config, Dashboard, JobInfo

CHROMIUM = "/usr/bin/chromium"
SAMPLES = 8
"""Heap readings over the run (each after a forced garbage collection)."""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def metrics(cdp: object) -> dict[str, float]:
    got = cdp.send("Performance.getMetrics")  # type: ignore[attr-defined]
    return {m["name"]: float(m["value"]) for m in got["metrics"]}


def heap(cdp: object) -> float:
    cdp.send("HeapProfiler.collectGarbage")  # type: ignore[attr-defined]
    return float(cdp.send("Runtime.getHeapUsage")["usedSize"])  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench page")
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    dash = Dashboard(Config(port=0, update_interval=0.05, collect_system_metrics=False))
    for i in range(50):
        dash.add_job(JobInfo(id=f"job-{i:03d}", name=f"export-vm-{i}", status="running",
                             progress=i * 2, provider=("aws", "azure", "gcp")[i % 3],
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
            dash.add_job(JobInfo(id=f"job-{n % 50:03d}", name=f"export-vm-{n % 50}",
                                 status="running", progress=n % 100, provider="aws",
                                 vm_name=f"vm-{n % 50}"))

    dash.start_in_thread()
    worker = threading.Thread(target=churn, name="churn", daemon=True)
    worker.start()
    try:
        time.sleep(3.0)  # a full 50-message history before the page connects
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(f"http://127.0.0.1:{dash.port}/")
            page.wait_for_function("() => Number(document.body.dataset.messages || 0) >= 60",
                                   timeout=30_000)
            count = "() => Number(document.body.dataset.messages || 0)"
            first = int(page.evaluate(count))
            heaps = [heap(cdp)]
            m0 = metrics(cdp)
            busy = 0.0
            for k in range(1, SAMPLES + 1):
                page.wait_for_function(f"() => Number(document.body.dataset.messages || 0) "
                                       f">= {first + args.messages * k // SAMPLES}",
                                       timeout=int(args.messages * 50 + 30_000))
                m1 = metrics(cdp)
                busy += m1["TaskDuration"] - m0["TaskDuration"]
                heaps.append(heap(cdp))  # its forced GC is not the page's own work:
                m0 = metrics(cdp)        # the counters restart after it
            done = int(page.evaluate(count)) - first
            points = int(page.evaluate("() => window.hyperdash.history.length"))
            rows = int(page.evaluate("() => document.querySelectorAll('#jobs-body tr, "
                                     "#jobs tbody tr').length"))
            browser.close()
    finally:
        stop.set()
        worker.join(5)
        dash.close()
    task = busy / done * 1e3
    slope = _slope(heaps) * SAMPLES / done * 1000  # bytes per 1,000 messages
    print(f"\n## The page in Chromium: {done:,} messages at 50 jobs, {points} chart points, "
          f"{rows} table rows\n")
    print("| main thread per message | JS heap after a forced GC, every "
          f"{args.messages // SAMPLES} messages | trend (least squares) |")
    print("|---|---|---|")
    print(f"| {task:.2f} ms | {' / '.join(f'{h / 2**20:.2f}' for h in heaps)} MiB "
          f"| {slope / 1024:+.0f} KiB per 1,000 messages |")
    return 0


def _slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    den = sum((i - mean_x) ** 2 for i in range(n))
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / den


if __name__ == "__main__":
    sys.exit(main())
