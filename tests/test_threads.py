"""8 threads x 10,000 calls leave the same state as the same calls made serially."""

import threading
from datetime import datetime, timezone

from hyperdash_otel import Config, Dashboard, JobInfo

THREADS, CALLS = 8, 10_000
PROVIDERS = ("aws", "azure", "gcp")
NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


def work(dash: Dashboard, t: int) -> None:
    completed = dash.meter_provider.get_meter("worker").create_counter("hyperdash.jobs.completed")
    for i in range(CALLS):
        op = i % 4
        if op == 0:
            status = "completed" if i + 4 >= CALLS else "running"
            dash.add_job(JobInfo(id=f"t{t}-{i % 25}", status=status, progress=(i // 4) % 101,
                                 provider=PROVIDERS[t % 3], start_time=NOW, end_time=None))
        elif op == 1:
            dash.add_alert(("info", "warning", "critical")[i % 3], f"t{t} alert {i}")
        elif op == 2:
            completed.add(1)
        else:
            dash.update_system_metrics(memory_mb=64, cpu_percent=1.5, goroutines=8)


def final_state(dash: Dashboard) -> dict:
    snap = dash.snapshot(now=NOW)
    return {
        "jobs": sorted((j["id"], j["status"], j["progress"], j["provider"])
                       for j in snap["recent_jobs"]),
        "provider_stats": snap["provider_stats"],
        "jobs_completed": snap["jobs_completed"],
        "alerts": len(snap["alerts"]),
        "alerts_raised": [ln for ln in dash.metrics_text().splitlines()
                          if ln.startswith("hyperdash_alerts_raised_total")],
        "system": (snap["memory_usage"], snap["cpu_usage"], snap["goroutines"]),
    }


def run(parallel: bool) -> dict:
    dash = Dashboard(Config(collect_system_metrics=False, max_jobs=THREADS * 25, max_alerts=20))
    try:
        if parallel:
            threads = [threading.Thread(target=work, args=(dash, t)) for t in range(THREADS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(120)
                assert not th.is_alive()
        else:
            for t in range(THREADS):
                work(dash, t)
        return final_state(dash)
    finally:
        dash.close()


def test_parallel_calls_end_in_the_serial_state():
    serial = run(parallel=False)
    assert serial["jobs_completed"] == THREADS * CALLS // 4
    assert len(serial["jobs"]) == THREADS * 25
    assert serial["provider_stats"] == {"aws": 75, "azure": 75, "gcp": 50}
    assert run(parallel=True) == serial
