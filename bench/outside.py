"""The live stream measured from outside: real server processes, real client processes.

For each number of clients N, three servers run one after the other in the same invocation,
each streaming the same payload (the demo's ~12 KB snapshot) once a second:

* **floor**: a minimal asyncio server, one pre-built frame per tick handed to each
  client's ``transport.write`` (busy ones skipped): the least Python can do;
* **hyperdash**: the real ``hyperdash demo`` process;
* **naive**: Tornado ``write_message`` per client.

The clients are raw sockets in separate processes (``bench/_outside_clients.py``), pinned
to other cores than the server where there are cores to pin. Per variant and N it reports:

* server CPU per client-message over a steady window, user and system, from
  ``/proc/PID/stat`` (split) and ``/proc/PID/task/*/schedstat`` (nanosecond total), plus
  the busiest thread's (the event loop's) user time;
* delivery latency p50/p99: kernel receive time (SO_TIMESTAMPNS) minus the message's own
  ``"timestamp"``;
* frames missed: ticks stamped in the window that a connected client never received;
* memory per client: (RSS once connected - RSS before) / N;
* connect cost: server CPU from the first connection until every client has its
  handshake and replay; net of the server's idle CPU over the same time and of the ticks
  sent meanwhile to the clients already connected (their count times the window's CPU
  per client-message).

Run ``python -m bench outside`` (all sizes) or
``python -m bench outside --sizes 100,1000 --duration 10``. Loopback only; every phase has
a deadline; every process started is stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

VARIANTS = ("floor", "hyperdash", "naive")
"""The default variants; ``hyperdash-tornado-ws`` (the demo with Tornado's
``WebSocketHandler`` upgrading ``/ws``, ``HYPERDASH_OWN_UPGRADE=0``) and
``hyperdash-handler-upgrade`` (the own upgrade from the handler, without the quick one:
``HYPERDASH_QUICK_UPGRADE=0``) may be asked for too."""
SIZES = (100, 1_000, 5_000, 10_000)
CLIENTS_PER_PROCESS = 2_500
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DEMO_ARGS = ("--seed", "1", "--warmup", "1800")
"""A demo that has run for half an hour of simulated time: 50 jobs in the table (~12 KB)."""
START_TIMEOUT = 60.0
READY_TIMEOUT = 120.0
GRACE = 3.0
"""Seconds after the window for the last of its ticks to reach every client."""


# -- /proc ----------------------------------------------------------------------------------

@dataclass
class Cpu:
    user: float
    system: float
    total: float
    """Nanosecond-precise on-CPU time (schedstat), seconds."""
    threads: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    """Per thread: (user seconds, on-CPU seconds, seconds runnable but waiting for a core)."""


def _stat_times(path: str) -> tuple[float, float]:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _schedstat(path: str) -> tuple[float, float]:
    """(on-CPU seconds, seconds spent runnable on a run queue, waiting for a core)."""
    with open(path) as f:
        fields = f.read().split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def cpu_of(pid: int) -> Cpu:
    user, system = _stat_times(f"/proc/{pid}/stat")
    threads: dict[int, tuple[float, float, float]] = {}
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            t_user, _ = _stat_times(f"/proc/{pid}/task/{tid}/stat")
            on_cpu, waited = _schedstat(f"/proc/{pid}/task/{tid}/schedstat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        threads[int(tid)] = (t_user, on_cpu, waited)
        total += on_cpu
    return Cpu(user, system, max(total, user + system), threads)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


@dataclass
class Window:
    seconds: float
    user: float
    system: float
    total: float
    loop_user: float
    loop_total: float
    loop_waited: float
    """Seconds the busiest thread was runnable but waiting for a core (other processes)."""


def window(a: Cpu, b: Cpu) -> Window:
    """CPU between two readings; user/system split in the proportion /proc/PID/stat shows."""
    user, system = b.user - a.user, b.system - a.system
    total = b.total - a.total
    share = user / (user + system) if user + system > 0 else 1.0
    busiest = max(
        b.threads, default=0,
        key=lambda t: b.threads[t][1] - a.threads.get(t, (0.0, 0.0, 0.0))[1],
    )
    bt = b.threads.get(busiest, (0.0, 0.0, 0.0))
    at = a.threads.get(busiest, (0.0, 0.0, 0.0))
    return Window(0.0, total * share, total * (1 - share), total, bt[0] - at[0], bt[1] - at[1],
                  bt[2] - at[2])


# -- processes ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpus() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores): apart when there are at least two."""
    have = sorted(os.sched_getaffinity(0))
    if len(have) < 2:
        return None, None
    return {have[0]}, set(have[1:])


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(argv: list[str], cores: set[int] | None, *, env: dict[str, str] | None = None,
          stdin: int | None = None, stdout: int | IO[Any] | None = None
          ) -> subprocess.Popen[str]:
    def pin() -> None:
        _raise_nofile()
        if cores:
            os.sched_setaffinity(0, cores)

    return subprocess.Popen(argv, preexec_fn=pin, env=env, stdin=stdin, stdout=stdout,
                            stderr=subprocess.DEVNULL if stdin is None else None,
                            text=True, cwd=Path(__file__).resolve().parent.parent)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # bench set-up: polling a port that is not open yet
    raise RuntimeError(f"server not listening on {port} after {timeout:.0f}s")


def hyperdash_bin() -> str:
    return str(Path(sys.executable).with_name("hyperdash"))


def start_server(variant: str, payload_file: str, interval: float, max_clients: int,
                 cores: set[int] | None) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    if variant.startswith("hyperdash"):
        # Every client comes from 127.0.0.1: the per-address rate limit and connection cap,
        # meant for many addresses, are lifted (neither is on the per-tick path).
        env = dict(os.environ, HYPERDASH_MAX_CLIENTS=str(max_clients + 100),
                   HYPERDASH_RATE_LIMIT="0", HYPERDASH_MAX_CONNECTIONS_PER_IP="4096")
        if variant == "hyperdash-tornado-ws":
            env["HYPERDASH_OWN_UPGRADE"] = "0"
        elif variant == "hyperdash-handler-upgrade":
            env["HYPERDASH_QUICK_UPGRADE"] = "0"
        argv = [hyperdash_bin(), "demo", "--port", str(port), "--interval", str(interval),
                *DEMO_ARGS]
        proc = spawn(argv, cores, env=env, stdout=subprocess.DEVNULL)
    else:
        argv = [sys.executable, "-m", "bench._outside_servers", variant, str(port),
                payload_file, str(interval)]
        proc = spawn(argv, cores)
    try:
        wait_for_port(port, proc, START_TIMEOUT)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def full_history(port: int, interval: float, size: int = 50) -> None:
    """Wait until the demo has ticked ``size`` times: new clients get a full replay."""
    deadline = time.monotonic() + size * interval * 2 + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            if json.loads(r.read())["ticks"] >= size:
                return
        time.sleep(interval)  # bench set-up: polling the server's tick count
    raise RuntimeError(f"the demo did not tick {size} times in time")


def demo_payload(interval: float) -> bytes:
    """The real demo's snapshot, taken from a running ``hyperdash demo``."""
    proc, port = start_server("hyperdash", "", interval, 10, None)
    try:
        time.sleep(2 * interval)  # let a tick or two pass: the payload of a running demo
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/metrics", timeout=10) as r:
            return bytes(r.read())
    finally:
        stop(proc)


# -- one run --------------------------------------------------------------------------------

@dataclass
class Result:
    variant: str
    clients: int
    connected: int
    refused: dict[str, int]
    connect_errors: dict[str, int]
    dropped: dict[str, int]
    ticks: int
    messages: int
    missed: int
    missed_all_clients: int
    backlog_messages: int
    cpu_us_per_msg: float
    user_us_per_msg: float
    system_us_per_msg: float
    net_us_per_msg: float
    loop_user_us_per_msg: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    tick_spread_ms: list[float]
    """Per tick of the window, in order: its latest delivery to any client (the time the
    fan-out took to reach the last one, plus the build)."""
    tick_first_ms: list[float]
    """Per tick: its earliest delivery to any client (what passed before the fan-out began:
    the build, the hand-over to the loop thread, the wait for a core)."""
    loop_waited_ms_per_s: float
    """Milliseconds per second of the window the loop thread was runnable and waiting for
    a core: time other processes on the server's core took from it."""
    rss_before_mb: float
    rss_after_mb: float
    kb_per_client: float
    connect_cpu_s: float
    connect_cpu_net_s: float
    """Net of the idle CPU and of the ticks sent meanwhile (at the window's cost each)."""
    live_during_connect: int
    connect_wall_s: float
    idle_cpu_pct: float
    client_cpu_pct: float
    load: str


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_one(variant: str, n: int, *, payload_file: str, interval: float, duration: float,
            idle: float) -> Result:
    server_cores, client_cores = cpus()
    proc, port = start_server(variant, payload_file, interval, n, server_cores)
    clients: list[subprocess.Popen[str]] = []
    try:
        time.sleep(2 * interval)  # a couple of ticks before anything is measured
        if variant.startswith("hyperdash"):
            full_history(port, interval)
        pid = proc.pid
        a = cpu_of(pid)
        time.sleep(idle)
        b = cpu_of(pid)
        idle_rate = (b.total - a.total) / idle
        rss_before = rss_of(pid)

        ramp = min(10.0, max(1.0, n / 1000))
        procs = max(1, math.ceil(n / CLIENTS_PER_PROCESS))
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        connect_start = cpu_of(pid)
        started = time.monotonic()
        for share in shares:
            clients.append(spawn(
                [sys.executable, "-m", "bench._outside_clients", str(port), str(share),
                 str(ramp)], client_cores, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        readies = [_read_json(c, READY_TIMEOUT) for c in clients]
        time.sleep(1.0)  # the replay written at the last handshake reaches its client
        connect_end = cpu_of(pid)
        connect_wall = time.monotonic() - started
        # Ticks ran to the clients already connected meanwhile: counted, to subtract them.
        for c in clients:
            assert c.stdin is not None
            c.stdin.write("count\n")
            c.stdin.flush()
        live_during_connect = sum(_read_json(c, 60)["live"] for c in clients)
        rss_after = rss_of(pid)
        connected = sum(r["ready"] for r in readies)

        t0 = time.time() + 0.2
        time.sleep(max(0.0, t0 - time.time()))
        w0 = cpu_of(pid)
        time.sleep(duration)
        w1 = cpu_of(pid)
        t1 = time.time()
        time.sleep(GRACE)
        for c in clients:
            assert c.stdin is not None
            c.stdin.write(f"report {t0} {t1}\n")
            c.stdin.flush()
        reports = [_read_json(c, 120) for c in clients]
    finally:
        for c in clients:
            if c.stdin is not None:
                c.stdin.close()
        for c in clients:
            try:
                c.wait(30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(5)
            if c.stdout is not None:
                c.stdout.close()
        stop(proc)

    cw = window(connect_start, connect_end)
    ww = window(w0, w1)
    stamps = sorted({at for r in reports for at in r["window"]})
    expected = _expected_ticks(stamps, interval)
    messages = missed = 0
    latencies: list[float] = []
    spread: dict[float, float] = {}
    first: dict[float, float] = {}
    for r in reports:
        for at, late in zip(r["window"], r["slowest"], strict=True):
            spread[at] = max(spread.get(at, 0.0), late)
        for at, early in zip(r["window"], r["fastest"], strict=True):
            if early is not None:
                first[at] = min(first.get(at, math.inf), early)
    for r in reports:
        for got in r["seen"]:
            messages += len(got)
            missed += expected - len(got)
        latencies.extend(r["latencies"])
    msgs = max(1, messages)
    refused: dict[str, int] = {}
    errors: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for r in readies:
        _merge(refused, r["refused"])
        _merge(errors, r["errors"])
    for r in reports:
        _merge(dropped, r["dropped"])
    client_cpu = sum(r["cpu"] for r in reports)
    span = duration + GRACE
    return Result(
        variant=variant, clients=n, connected=connected, refused=refused,
        connect_errors=errors, dropped=dropped, ticks=expected, messages=messages,
        missed=missed, missed_all_clients=expected - len(stamps),
        backlog_messages=sum(r["backlog"] for r in reports),
        cpu_us_per_msg=ww.total / msgs * 1e6,
        user_us_per_msg=ww.user / msgs * 1e6,
        system_us_per_msg=ww.system / msgs * 1e6,
        net_us_per_msg=max(0.0, ww.total - idle_rate * duration) / msgs * 1e6,
        loop_user_us_per_msg=ww.loop_user / msgs * 1e6,
        p50_ms=_pct(latencies, 0.50), p99_ms=_pct(latencies, 0.99),
        max_ms=_pct(latencies, 1.0),
        tick_spread_ms=[round(spread[at] * 1e3, 1) for at in sorted(spread)],
        tick_first_ms=[round(first[at] * 1e3, 1) for at in sorted(first)],
        loop_waited_ms_per_s=ww.loop_waited / duration * 1e3,
        rss_before_mb=rss_before / 2**20, rss_after_mb=rss_after / 2**20,
        kb_per_client=(rss_after - rss_before) / max(1, connected) / 1024,
        connect_cpu_s=cw.total,
        connect_cpu_net_s=max(0.0, cw.total - idle_rate * connect_wall
                              - live_during_connect * ww.total / msgs),
        live_during_connect=live_during_connect,
        connect_wall_s=connect_wall,
        idle_cpu_pct=idle_rate * 100,
        client_cpu_pct=client_cpu / span / max(1, len(reports)) * 100,
        load=loadavg(),
    )


def _expected_ticks(stamps: list[float], interval: float) -> int:
    """Ticks in the window: those any client received, plus gaps on the tick grid."""
    if len(stamps) < 2:
        return len(stamps)
    return max(len(stamps), round((stamps[-1] - stamps[0]) / interval) + 1)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def _merge(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _read_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError(f"client process silent for {timeout:.0f}s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"client process exited ({proc.poll()})")
    return dict(json.loads(line))


# -- tables ---------------------------------------------------------------------------------

def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def table(results: list[Result]) -> str:
    n = results[0].clients
    floor = next((r for r in results if r.variant == "floor"), None)
    lines = [
        f"\n### {n:,} clients\n",
        "| server | connected | CPU µs per client-message (user + sys) | vs floor "
        "| net of idle | loop thread user µs | p50 ms | p99 ms | p99 vs floor "
        "| frames missed | dropped | KB per client | connect CPU s (net of idle and ticks) "
        "| vs floor "
        "| connect wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.variant} | {r.connected:,}/{r.clients:,} "
            f"| {r.cpu_us_per_msg:.1f} ({r.user_us_per_msg:.1f} + "
            f"{r.system_us_per_msg:.1f}) "
            f"| {_ratio(r.cpu_us_per_msg, floor and floor.cpu_us_per_msg)} "
            f"| {r.net_us_per_msg:.1f} | {r.loop_user_us_per_msg:.1f} "
            f"| {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {_ratio(r.p99_ms, floor and floor.p99_ms)} "
            f"| {r.missed:,} of {r.messages + r.missed:,} | {sum(r.dropped.values()):,} "
            f"| {r.kb_per_client:.1f} "
            f"| {r.connect_cpu_s:.2f} ({r.connect_cpu_net_s:.2f}) "
            f"| {_ratio(r.connect_cpu_net_s, floor and floor.connect_cpu_net_s)} "
            f"| {r.connect_wall_s:.1f} |"
        )
    notes = []
    for r in results:
        extra = []
        if r.refused or r.connect_errors:
            extra.append(f"refused {r.refused} errors {r.connect_errors}")
        if r.dropped:
            extra.append(f"dropped by close code {r.dropped}")
        extra.append(f"{r.ticks} ticks in the window ({r.missed_all_clients} reached no "
                     f"client), {r.backlog_messages:,} replayed "
                     f"messages, {r.live_during_connect:,} ticks to clients while connecting, "
                     f"idle server CPU {r.idle_cpu_pct:.1f}%, client processes "
                     f"{r.client_cpu_pct:.0f}% CPU each, load {r.load}")
        if r.tick_spread_ms:
            spread = sorted(r.tick_spread_ms)
            extra.append(f"each tick's last delivery: median {spread[len(spread) // 2]:.0f} "
                         f"ms, slowest {spread[-1]:.0f} ms "
                         f"({', '.join(f'{x:.0f}' for x in r.tick_spread_ms)}); the loop "
                         f"thread waited for its core {r.loop_waited_ms_per_s:.0f} ms per s")
        if r.tick_first_ms:
            first = sorted(r.tick_first_ms)
            extra.append(f"each tick's first delivery: median {first[len(first) // 2]:.1f} "
                         f"ms, slowest {first[-1]:.1f} ms")
        notes.append(f"- {r.variant}: " + "; ".join(extra))
    return "\n".join(lines + [""] + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench outside", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="numbers of clients, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds of the measured window per run")
    parser.add_argument("--idle", type=float, default=3.0,
                        help="seconds of idle server CPU measured before connecting")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    server_cores, client_cores = cpus()
    payload = demo_payload(args.interval)
    print(f"\n## The live stream from outside ({platform.python_version()}, "
          f"{os.cpu_count()} cores; server on {server_cores}, clients on {client_cores}; "
          f"payload {len(payload) / 1024:.1f} KiB, tick {args.interval:g} s, "
          f"window {args.duration:g} s)")
    everything: list[Result] = []
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(payload)
        f.flush()
        for n in sizes:
            results = []
            for variant in variants:
                print(f"# {variant} x {n} ...", file=sys.stderr, flush=True)
                results.append(run_one(variant, n, payload_file=f.name,
                                       interval=args.interval, duration=args.duration,
                                       idle=args.idle))
            print(table(results), flush=True)
            everything.extend(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in everything], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
