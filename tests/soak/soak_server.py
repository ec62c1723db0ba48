"""The server side of the soak test, run in its own process: a dashboard and 8 writers.

Prints the URL once serving. On the line ``stop`` from stdin it stops the writers and prints
one JSON line: the last value each writer wrote, as the snapshot should show it. On ``exit``
(or end of input) it stops the server and exits 0.

Each writer owns what it writes, so "the last value written" is well defined: writer 0 the
job figures, 1 the system figures, 2 the HTTP figures, 3 the health and the alerts; every
writer its own job (``writer-<i>``) and its own series of a user gauge.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from hyperdash_otel import HEALTH_STATUSES, Config, Dashboard, JobInfo

PACE = 0.005
"""Seconds between a writer's iterations (about 200 a second each)."""


class Writer(threading.Thread):
    def __init__(self, index: int, dash: Dashboard, gauge: Any, stop: threading.Event) -> None:
        super().__init__(name=f"soak-writer-{index}", daemon=True)
        self.index = index
        self.dash = dash
        self.gauge = gauge
        self.stop_event = stop
        self.last: dict[str, Any] = {}
        self.calls = 0

    def run(self) -> None:
        n = 0
        while not self.stop_event.wait(PACE):
            n += 1
            self.write(n)

    def write(self, n: int) -> None:
        i, dash = self.index, self.dash
        if i == 0:
            figures = {"active": n % 17, "completed": n, "failed": n // 10, "pending": n % 5,
                       "queue_len": n % 9}
            dash.update_job_metrics(**figures)
            self.last.update(jobs_active=n % 17, jobs_completed=n, jobs_failed=n // 10,
                             jobs_pending=n % 5, queue_length=n % 9)
        elif i == 1:
            dash.update_system_metrics(memory_mb=1000 + n % 100, cpu_percent=float(n % 100),
                                       goroutines=n % 50)
            self.last.update(memory_usage=1000 + n % 100, cpu_usage=float(n % 100),
                             goroutines=n % 50)
        elif i == 2:
            dash.update_http_metrics(requests=3 * n, errors=n // 7,
                                     avg_response_time=float(n % 250))
            self.last.update(http_requests=3 * n, http_errors=n // 7,
                             avg_response_time=float(n % 250))
        elif i == 3:
            health = HEALTH_STATUSES[n % len(HEALTH_STATUSES)]
            dash.set_system_health(health)
            self.last["system_health"] = health
            if n % 25 == 0:  # churn the bounded alert store
                dash.add_alert("warning", f"soak alert {n}")
        dash.add_job(JobInfo(id=f"writer-{i}", name=f"soak-{i}", status="running",
                             progress=n % 101, provider=("aws", "azure", "gcp")[i % 3],
                             vm_name=f"vm-{i}"))
        self.gauge.set(n, {"writer": str(i)})
        self.last.setdefault("jobs", {})[f"writer-{i}"] = n % 101
        self.last.setdefault("gauge", {})[str(i)] = n
        self.calls += 1


def main() -> int:
    interval = float(sys.argv[1])
    dash = Dashboard(Config(port=0, update_interval=interval, max_clients=256))
    gauge = dash.meter_provider.get_meter("soak").create_gauge("soak.last", unit="1")
    stop = threading.Event()
    writers = [Writer(i, dash, gauge, stop) for i in range(8)]
    dash.start_in_thread()
    print(dash.url, flush=True)
    for writer in writers:
        writer.start()
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()
            for writer in writers:
                writer.join(10)
            expected: dict[str, Any] = {"jobs": {}, "gauge": {}}
            for writer in writers:
                for key, value in writer.last.items():
                    if isinstance(value, dict):
                        expected[key].update(value)
                    else:
                        expected[key] = value
            expected["calls"] = sum(w.calls for w in writers)
            print(json.dumps(expected), flush=True)
        elif line.strip() == "exit":
            break
    stop.set()
    dash.stop()
    dash.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
