"""The page's cost per message in Chromium, and its JS heap over 1,000 messages.

A dashboard with 50 jobs in the table, three alerts and a full 50-point history ticks 20
times a second while its numbers change; Debian's chromium (headless, through Playwright)
shows the page. Chrome's own counters (CDP ``Performance.getMetrics``) give the main
thread's busy time (TaskDuration: script, style, layout, paint) and its script time over
1,000 messages; the JS heap is read after a forced garbage collection before and after.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from hyperdash_otel import Config, Dashboard, JobInfo

CHROMIUM = "/usr/bin/chromium"
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
            heap0 = heap(cdp)
            m0 = metrics(cdp)
            page.wait_for_function(f"() => Number(document.body.dataset.messages || 0) >= "
                                   f"{first + args.messages}",
                                   timeout=int(args.messages * 0.05 * 1000 * 4 + 30_000))
            m1 = metrics(cdp)
            done = int(page.evaluate(count)) - first
            heap1 = heap(cdp)
            points = int(page.evaluate("() => window.hyperdash.history.length"))
            rows = int(page.evaluate("() => document.querySelectorAll('#jobs-body tr, "
                                     "#jobs tbody tr').length"))
            browser.close()
    finally:
        stop.set()
        worker.join(5)
        dash.close()
    task = (m1["TaskDuration"] - m0["TaskDuration"]) / done * 1e3
    script = (m1["ScriptDuration"] - m0["ScriptDuration"]) / done * 1e3
    layout = (m1["LayoutDuration"] + m1["RecalcStyleDuration"]
              - m0["LayoutDuration"] - m0["RecalcStyleDuration"]) / done * 1e3
    print(f"\n## The page in Chromium: {done:,} messages at 50 jobs, {points} chart points, "
          f"{rows} table rows\n")
    print("| main thread per message | of which script | of which style + layout "
          "| JS heap before | JS heap after | growth |")
    print("|---|---|---|---|---|---|")
    print(f"| {task:.2f} ms | {script:.2f} ms | {layout:.2f} ms | {heap0 / 2**20:.2f} MiB "
          f"| {heap1 / 2**20:.2f} MiB | {(heap1 - heap0) / 1024:+.0f} KiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
