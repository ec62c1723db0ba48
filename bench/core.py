"""What the update calls and one tick's snapshot cost, against plain prometheus_client."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from hyperdash_otel import Config, Dashboard, JobInfo

from ._timing import compare, print_table


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
    print_table("System metrics, sampled each tick (per sample)", sampler_rows())
    print_table("One tick's snapshot (collect + build) vs one scrape", snapshot_rows())


if __name__ == "__main__":
    main()
