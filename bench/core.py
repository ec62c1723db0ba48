"""What the update calls and one tick's snapshot cost, against plain prometheus_client."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.stores import JobRecord, JobStore, _merge

from ._timing import compare, print_table


class _StoreWithoutHistory(JobStore):
    """The job store as it was before progress history, ETA and stalls (issue #15): the
    baseline that tells what that feature adds to each add_job."""

    def upsert(self, record: JobRecord, now: datetime) -> bool:
        with self._lock:
            old = self._jobs.get(record.id)
            self._jobs[record.id] = _merge(old, record, now)
            if old is None:
                while len(self._jobs) > self.max_jobs:
                    self._jobs.popitem(last=False)
            return old is None


def history_rows() -> list[tuple[str, str, float, float]]:
    """add_job with and without the progress history, in the same run."""
    rows = []
    before = Dashboard(Config(collect_system_metrics=False))
    before._jobs = _StoreWithoutHistory(before.config.max_jobs)
    after = Dashboard(Config(collect_system_metrics=False))
    for dash in (before, after):  # a full store of running jobs, as a busy daemon has
        for i in range(50):
            dash.add_job(JobInfo(id=f"j{i}", status="running", progress=1, provider="aws"))
    steady = JobInfo(id="j7", name="export-web-01", status="running", progress=40,
                     provider="aws", vm_name="web-01")
    base, cand = compare(lambda: before.add_job(steady), lambda: after.add_job(steady),
                         number=5_000)
    rows.append(("add_job, same progress (update in place)", "add_job without history",
                 base, cand))
    jobs = [JobInfo(id=f"j{i}", name="export-web-01", status="running", progress=0.0,
                    provider="aws", vm_name="web-01") for i in range(50)]
    state = {"n": 0}

    def moving(dash: Dashboard) -> None:
        # Every job of the store moves a little on each call, round robin.
        n = state["n"] = state["n"] + 1
        job = jobs[n % 50]
        job.progress = (n // 50) % 1000 / 10
        dash.add_job(job)

    base, cand = compare(lambda: moving(before), lambda: moving(after), number=5_000)
    rows.append(("add_job, progress moving (50 running jobs)", "add_job without history",
                 base, cand))
    for dash in (before, after):
        dash.close()
    return rows


def update_rows() -> list[tuple[str, str, float, float]]:
    dash = Dashboard(Config(collect_system_metrics=False))
    reg = CollectorRegistry()
    gauges = [Gauge(f"g{i}", "", registry=reg) for i in range(3)]
    counters = [Counter(f"c{i}", "", registry=reg) for i in range(2)]
    state = {"n": 0}

    def native() -> None:
        state["n"] += 1
        for g in gauges:
            g.set(5)
        for c in counters:
            c.inc(1)

    def ours() -> None:
        state["n"] += 1
        dash.update_job_metrics(5, state["n"], state["n"], 3, 3)

    base, cand = compare(native, ours, number=5_000)
    job = JobInfo(id="job-1", name="export-web-01", status="running", progress=40,
                  provider="aws", vm_name="web-01")
    jobs_dict: dict[str, dict[str, object]] = {}

    def dict_store() -> None:
        jobs_dict[job.id] = {"id": job.id, "status": job.status, "progress": job.progress}

    jb, jc = compare(dict_store, lambda: dash.add_job(job), number=5_000)
    dash.close()
    return [
        ("update_job_metrics (5 values)", "prometheus_client set/inc x5", base, cand),
        ("add_job (update in place)", "plain dict store", jb, jc),
    ]


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts everything (the exports at close)."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def otlp_rows() -> list[tuple[str, str, float, float]]:
    """update_job_metrics with OTLP export from the environment against none, same run."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    # The hour-long interval keeps exports out of the measurement (one goes out at close):
    # the rows show what a recording costs, not the export thread.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
           "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}
    plain = Dashboard(Config(collect_system_metrics=False))
    with _environ(env):
        shared = Dashboard(Config(collect_system_metrics=False))
    with _environ({**env, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}):
        separate = Dashboard(Config(collect_system_metrics=False))
    assert shared.telemetry.otlp_reader is not None and len(separate.metric_readers) == 2
    counts = {"plain": 0, "shared": 0, "separate": 0}

    def call(name: str, dash: Dashboard) -> None:
        counts[name] += 1
        dash.update_job_metrics(5, counts[name], counts[name], 3, 3)

    # Short, many rounds: a busy machine shifts long rounds apart more than the cases differ.
    base1, cand1 = compare(lambda: call("plain", plain), lambda: call("shared", shared),
                           number=1_000, rounds=21)
    base2, cand2 = compare(lambda: call("plain", plain), lambda: call("separate", separate),
                           number=1_000, rounds=21)
    for dash in (plain, shared, separate):
        dash.close()
    sink.shutdown()
    sink.server_close()
    return [
        ("update_job_metrics, OTLP export from OTEL_* (shared aggregation)",
         "same call, no OTLP", base1, cand1),
        ("update_job_metrics, OTLP with a reader of its own (delta temporality)",
         "same call, no OTLP", base2, cand2),
    ]


def sampler_rows() -> list[tuple[str, str, float, float]]:
    import psutil

    from hyperdash_otel.system import ProcessSampler

    process = psutil.Process()
    sampler = ProcessSampler()
    base, cand = compare(process.memory_info, sampler.sample, number=2_000)
    return [("ProcessSampler.sample (RSS, CPU, threads)", "psutil memory_info() alone",
             base, cand)]


def snapshot_rows() -> list[tuple[str, str, float, float]]:
    rows = []
    for n in (0, 1_000, 10_000):
        dash = Dashboard(Config(collect_system_metrics=False, max_custom_series=200))
        meter = dash.meter_provider.get_meter("bench")
        # 1,000 series per instrument, well under the per-instrument cardinality limit
        gauges = [meter.create_gauge(f"tenant.queue.{k}") for k in range((n + 999) // 1000)]
        for i in range(n):
            gauges[i // 1000].set(i, {"tenant": f"t{i}"})
        for i in range(50):
            dash.add_job(JobInfo(id=f"j{i}", status="running", provider="aws"))
        number = 50 if n < 10_000 else 10
        base, cand = compare(lambda d=dash: generate_latest(d.registry),
                             lambda d=dash: d.snapshot(), number=number, rounds=5)
        rows.append((f"snapshot, 50 jobs, {n:,} custom series",
                     "generate_latest (a /metrics scrape)", base, cand))
        dash.close()
    return rows


def main() -> None:
    print_table("Update calls (per call)", update_rows())
    print_table("OTLP export attached (per call)", otlp_rows())
    print_table("add_job with progress history (ETA, stalls) vs without", history_rows())
    print_table("System metrics, sampled each tick (per sample)", sampler_rows())
    print_table("One tick's snapshot (collect + build) vs one scrape", snapshot_rows())


if __name__ == "__main__":
    main()
