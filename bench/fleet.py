"""The fleet's tick cost at 3, 30 and 300 instances, behind one real Prometheus.

For each size N: one process of simulated instances (``bench/_fleet_targets.py``: a real
Dashboard's ``/metrics``, varied per instance and over time, plus ``/api/jobs`` and
``/api/metrics``), one real ``prometheus`` (Debian's) scraping all of them every
``--scrape`` seconds with the bundled alert rules, and then, once every target is up, three
phases of ``--window`` seconds each, one after the other:

1. **the fleet's parts, one a second**: its two instant queries
   (``PrometheusClient.figures()``), the targets API call that finds the instances, and the
   concurrent fetch of every instance's ``/api/jobs`` and ``/api/metrics``
   (``fetch_all``, with ``hyperdash fleet``'s default concurrency and timeout); meanwhile
   Prometheus's and the targets process's CPU, and the scrape durations;
2. **``FleetSource.snapshot()``** once a second, as the ticker calls it: wall time and the
   calling thread's CPU (the record fetches run on the source's own thread, see 3);
3. **a real ``hyperdash fleet``** process serving the same fleet, ticking once a second,
   alone: its mean tick (its own ``hyperdash_tick_duration_seconds``), its CPU per tick
   from ``/proc`` (background record fetches included) and the size of its message.

Run ``python -m bench fleet`` (sizes 3, 30, 300) or
``python -m bench fleet --sizes 3,30,1000 --window 10 --scrape 1``. Loopback only; every
wait has a deadline; every process started is stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "grafana" / "prometheus" / "alerts.yml"
JOB = "hyperdash"
SIZES = (3, 30, 300)
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 90.0
"""Seconds for the targets to listen and for Prometheus to be ready."""
UP_TIMEOUT = 60.0
"""Seconds for every target to be scraped up once Prometheus is ready."""
SELECTOR = f'job="{JOB}"'

# -- processes ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate (then kill) ``proc`` and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@dataclass
class Targets:
    proc: subprocess.Popen[str]
    ports: list[int]
    exposition_bytes: int

    @property
    def instances(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]


def start_targets(count: int) -> Targets:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._fleet_targets", str(count)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    # The first line says the endpoints listen; a deadline in case it never comes.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            line = pool.submit(proc.stdout.readline).result(timeout=START_TIMEOUT)
        except concurrent.futures.TimeoutError as exc:
            stop(proc)
            raise RuntimeError(
                f"{count} targets did not start within {START_TIMEOUT:g} s") from exc
    if not line:
        stop(proc)
        raise RuntimeError(f"the targets process exited with {proc.wait()}")
    ready = json.loads(line)
    return Targets(proc, ready["ports"], ready["exposition_bytes"])


class Prometheus:
    """A real prometheus on 127.0.0.1 scraping ``targets``, with the bundled rules."""

    def __init__(self, binary: str, targets: list[str], scrape: float, tmp: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        interval = f"{scrape:g}s"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        path = tmp / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = tmp / "prometheus.log"
        self.log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
        )

    def get(self, path: str, **params: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["data"]

    def ready(self) -> bool:
        with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait(self, what: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                if check():
                    return
            except (OSError, RuntimeError, ValueError):
                pass  # not ready yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not within {timeout:g} s")
            time.sleep(0.2)  # polling Prometheus against the deadline above

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


# -- the fleet's side -----------------------------------------------------------------------

def fleet_parts(prometheus: str) -> tuple[Any, Any, Any]:
    """(FleetConfig, PrometheusClient, instances' Credentials) as ``hyperdash fleet`` makes
    them with its defaults."""
    from hyperdash_otel.fleet.config import FleetConfig
    from hyperdash_otel.fleet.http import JsonClient
    from hyperdash_otel.fleet.prometheus import PrometheusClient

    config = FleetConfig(prometheus=prometheus)
    client = PrometheusClient(
        JsonClient(config.prometheus, config.prometheus_credentials,
                   timeout=config.query_timeout),
        config.matchers)
    return config, client, config.instances_credentials


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def parts_window(result: Result, prom: Prometheus, window: float) -> None:
    """Phase 1: the fleet's queries, targets call and record fetch, once a second."""
    from hyperdash_otel import Config
    from hyperdash_otel.fleet.http import FetchError
    from hyperdash_otel.fleet.instances import fetch_all

    config, client, credentials = fleet_parts(prom.base)
    defaults = Config()
    with concurrent.futures.ThreadPoolExecutor(config.max_concurrency) as pool:
        began = due = time.monotonic()
        while time.monotonic() - began < window:
            due += 1.0
            try:
                seconds, (figures, _) = timed(client.figures)
                result.queries.append(seconds)
                result.series = len(figures)
                seconds, targets = timed(client.targets)
                result.targets_api.append(seconds)
            except FetchError:
                # Past --query-timeout the fleet would show "Prometheus unreachable".
                result.query_failures += 1
                time.sleep(max(0.0, due - time.monotonic()))  # the one-second grid
                continue
            seconds, records = timed(lambda t=targets: fetch_all(
                t[:config.max_instances], credentials, pool=pool,
                timeout=config.instance_timeout, max_jobs=defaults.max_jobs,
                max_alerts=defaults.max_alerts))
            result.fetches.append(seconds)
            result.fetch_failures += sum(1 for r in records.values() if r.error)
            time.sleep(max(0.0, due - time.monotonic()))  # the one-second grid


def source_window(result: Result, prom: Prometheus, window: float) -> None:
    """Phase 2: FleetSource.snapshot() once a second, in this process."""
    from hyperdash_otel import Config
    from hyperdash_otel.fleet.config import FleetConfig
    from hyperdash_otel.fleet.source import FleetSource

    with FleetSource(FleetConfig(prometheus=prom.base), Config(port=0)) as source:
        source.snapshot()  # starts its record fetches
        began = due = time.monotonic()
        while time.monotonic() - began < window:
            due += 1.0
            cpu, start = time.thread_time(), time.perf_counter()
            snap = source.snapshot()
            result.ticks.append(time.perf_counter() - start)
            result.tick_cpus.append(time.thread_time() - cpu)
            result.snapshot_instances = len(snap["instances"])
            result.snapshot_jobs = len(snap["recent_jobs"])
            time.sleep(max(0.0, due - time.monotonic()))  # the one-second grid


def fleet_cli() -> bool:
    """Whether this tree has the ``hyperdash fleet`` command."""
    probe = subprocess.run([sys.executable, "-m", "hyperdash_otel", "fleet", "--help"],
                           capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


class FleetProcess:
    """A real ``hyperdash fleet`` against ``prometheus``, ticking once a second."""

    def __init__(self, prometheus: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperdash_otel", "fleet", "--prometheus", prometheus,
             "--host", "127.0.0.1", "--port", str(self.port), "--interval", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hyperdash fleet exited with {self.proc.returncode}")
            try:
                self.get("/healthz")
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("hyperdash fleet did not answer /healthz")
            time.sleep(0.2)  # polling against the deadline above

    def get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            body: bytes = response.read()
            return body

    def ticks(self) -> tuple[float, float]:
        """(count, sum in seconds) of its tick-duration histogram, from its /metrics."""
        count = total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith("hyperdash_tick_duration_seconds_count"):
                count += float(line.rsplit(" ", 1)[1])
            elif line.startswith("hyperdash_tick_duration_seconds_sum"):
                total += float(line.rsplit(" ", 1)[1])
        return count, total

    def close(self) -> None:
        stop(self.proc)


# -- one size -------------------------------------------------------------------------------

@dataclass
class Result:
    size: int
    up: int = 0
    scrape_mean: float = 0.0
    scrape_max: float = 0.0
    prometheus_cpu: float = 0.0
    """Cores (CPU seconds per second) over the window."""
    targets_cpu: float = 0.0
    queries: list[float] = field(default_factory=list)
    targets_api: list[float] = field(default_factory=list)
    fetches: list[float] = field(default_factory=list)
    fetch_failures: int = 0
    query_failures: int = 0
    """Rounds whose queries took longer than the fleet's --query-timeout (2 s)."""
    process_cpu: float | None = None
    """CPU seconds per tick of a real ``hyperdash fleet`` process."""
    process_tick: float | None = None
    """Mean seconds per tick in that process (its own tick-duration histogram)."""
    message_bytes: int = 0
    process_cores: float | None = None
    process_ticks_per_second: float | None = None
    ticks: list[float] = field(default_factory=list)
    tick_cpus: list[float] = field(default_factory=list)
    """CPU seconds of the thread calling snapshot(), per call."""
    series: int = 0
    """Instances the fleet's queries found (a query that finds none measures nothing)."""
    snapshot_instances: int = 0
    snapshot_jobs: int = 0
    note: str = ""


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f}" if values else "-"


def p95_ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1e3:.1f}"


def process_window(result: Result, prom: Prometheus, window: float) -> None:
    """A real ``hyperdash fleet`` ticking once a second for ``window`` seconds, alone."""
    fleet = FleetProcess(prom.base)
    try:
        fleet.wait_ready()
        time.sleep(3.0)  # its first ticks (and first instance fetches) before the window
        count, total = fleet.ticks()
        cpu, began = cpu_seconds(fleet.proc.pid), time.monotonic()
        time.sleep(window)  # the window itself: the process ticks on its own meanwhile
        ticks, tick_sum = fleet.ticks()
        used = cpu_seconds(fleet.proc.pid) - cpu
        elapsed = time.monotonic() - began
        result.process_cores = used / elapsed
        result.process_ticks_per_second = (ticks - count) / elapsed
        if ticks > count:
            result.process_cpu = used / (ticks - count)
            result.process_tick = (tick_sum - total) / (ticks - count)
        result.message_bytes = len(fleet.get("/api/metrics"))
    finally:
        fleet.close()


def measure(size: int, binary: str, scrape: float, window: float,
            with_process: bool = False) -> Result:
    result = Result(size)
    targets = start_targets(size)
    tmp = Path(tempfile.mkdtemp(prefix="hyperdash-bench-fleet-"))
    prom: Prometheus | None = None
    try:
        prom = Prometheus(binary, targets.instances, scrape, tmp)
        prom.wait("prometheus ready", prom.ready, START_TIMEOUT)
        try:
            prom.wait(f"all {size} targets up", lambda: prom.scalar(
                f"count(up{{{SELECTOR}}} == 1)") == size, UP_TIMEOUT)
        except TimeoutError as exc:
            result.note = str(exc)
        # A few scrapes in, so that increase() over 5m has more than one sample.
        time.sleep(3 * scrape)  # settling time before the window, not synchronisation
        prom_cpu, targets_cpu = cpu_seconds(prom.proc.pid), cpu_seconds(targets.proc.pid)
        began = time.monotonic()
        parts_window(result, prom, window)
        elapsed = time.monotonic() - began
        result.prometheus_cpu = (cpu_seconds(prom.proc.pid) - prom_cpu) / elapsed
        result.targets_cpu = (cpu_seconds(targets.proc.pid) - targets_cpu) / elapsed
        result.scrape_mean = prom.scalar(f"avg(scrape_duration_seconds{{{SELECTOR}}})") or 0.0
        result.scrape_max = prom.scalar(
            f"max(max_over_time(scrape_duration_seconds{{{SELECTOR}}}[{int(window)}s]))") or 0.0
        source_window(result, prom, window)
        if with_process:
            process_window(result, prom, window)
        result.up = int(prom.scalar(f"count(up{{{SELECTOR}}} == 1)") or 0)
    finally:
        if prom is not None:
            prom.close()
        stop(targets.proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def report(results: list[Result], scrape: float, window: float) -> None:
    print(f"\n## Fleet: N simulated instances behind one Prometheus "
          f"(scrape {scrape:g} s, {window:g} s per phase, one tick a second)\n")
    print("| instances | up | scrape mean / max | Prometheus CPU | targets CPU "
          "| fleet queries (median / p95) | targets API | records fetch (median / p95) "
          "| snapshot() (median / p95) | snapshot() CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.size} | {r.up} | {r.scrape_mean * 1e3:.1f} / {r.scrape_max * 1e3:.1f} ms "
              f"| {r.prometheus_cpu:.2f} cores | {r.targets_cpu:.2f} cores "
              f"| {median_ms(r.queries)} / {p95_ms(r.queries)} ms "
              f"({r.query_failures} over the timeout) "
              f"| {median_ms(r.targets_api)} ms "
              f"| {median_ms(r.fetches)} / {p95_ms(r.fetches)} ms "
              f"({r.fetch_failures} failed) "
              f"| {median_ms(r.ticks)} / {p95_ms(r.ticks)} ms "
              f"| {median_ms(r.tick_cpus)} ms |")
    print("\nInstances the queries found / in the snapshot, jobs in the snapshot: " + ", ".join(
        f"{r.size}: {r.series} / {r.snapshot_instances}, {r.snapshot_jobs}" for r in results))
    if any(r.process_tick is not None for r in results):
        print("\nA real `hyperdash fleet` process, alone, one tick a second "
              "(its own tick histogram; CPU from /proc, record fetches included):\n")
        print("| instances | tick (mean) | ticks per second | CPU per tick | CPU (cores) "
              "| message |")
        print("|---|---|---|---|---|---|")
        for r in results:
            if r.process_tick is None or r.process_cpu is None:
                print(f"| {r.size} | - | - | - | - | - |")
                continue
            print(f"| {r.size} | {r.process_tick * 1e3:.1f} ms "
                  f"| {r.process_ticks_per_second or 0:.2f} "
                  f"| {r.process_cpu * 1e3:.1f} ms "
                  f"| {r.process_cores or 0:.2f} | {r.message_bytes / 1024:.1f} KiB |")
    notes = [f"- {r.size}: {r.note}" for r in results if r.note]
    if notes:
        print("\n" + "\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fleet")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="instance counts, comma-separated (default 3,30,300)")
    parser.add_argument("--scrape", type=float, default=1.0, help="scrape interval, seconds")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per size")
    args = parser.parse_args(argv)
    binary = shutil.which("prometheus")
    if binary is None:
        print("fleet: `prometheus` is not on PATH (make system-deps)", file=sys.stderr)
        return 1
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with_process = fleet_cli()
    results = []
    for size in sizes:
        print(f"fleet: {size} instances ...", file=sys.stderr, flush=True)
        results.append(measure(size, binary, args.scrape, args.window, with_process))
    report(results, args.scrape, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
