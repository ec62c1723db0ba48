"""Soak: a served dashboard under every kind of load at once, for a minute (or longer).

The server and its 8 writer threads run in a child process (``soak_server.py``), so its
memory and descriptors are its own and the clients here never share its GIL. Meanwhile:

* 200 WebSocket clients connect, read for a while, disconnect and come back, in cycles;
* one client watches the whole run and records each tick's timestamp;
* one client never reads (it is cut as too slow, and replaced);
* half-open connections arrive in batches of 100 from 10 addresses and are held past the
  header timeout.

At the end: resident memory grew by less than :data:`RSS_GROWTH_BOUND` after warm-up, the
server's descriptors are back at their count before the load, no tick came more than one
interval late, and the final snapshot holds the last values written.

``HYPERDASH_SOAK_SECONDS`` sets the duration (default 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.server.conftest import raw_upgrade, wait_until
from tests.server.flood import close_all, half_open

SECONDS = float(os.environ.get("HYPERDASH_SOAK_SECONDS", "60"))
WARMUP = min(15.0, SECONDS / 4)
INTERVAL = 1.0
CLIENTS = 200
CLIENT_ADDRESSES = 50
FLOOD_BATCH = 100
RSS_GROWTH_BOUND = 16 * 1024 * 1024
"""Bytes of resident memory the server may gain after warm-up (see the README's Bounds)."""
SERVER = Path(__file__).with_name("soak_server.py")


@dataclass
class Load:
    """What the clients did, for the assertions and for the failure message."""

    stopping: threading.Event = field(default_factory=threading.Event)
    cycles: int = 0
    failures: list[str] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    never_readers: int = 0
    flooded: int = 0


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(INTERVAL)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        url = self.proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop_writers(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        self.command("stop")
        value = json.loads(self.proc.stdout.readline())
        assert isinstance(value, dict)
        return value

    def get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.command("exit")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


# -- the load -----------------------------------------------------------------------------------


async def cycling_client(port: int, k: int, load: Load) -> None:
    rng = random.Random(k)
    source = (f"127.0.0.{10 + k % CLIENT_ADDRESSES}", 0)
    while not load.stopping.is_set():
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws", local_addr=source, proxy=None,
                               compression=None, open_timeout=20, close_timeout=5,
                               max_size=None) as ws:
                hold_until = time.monotonic() + rng.uniform(1.0, 4.0)
                while time.monotonic() < hold_until and not load.stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), timeout=0.5)
            load.cycles += 1
        except Exception as exc:  # counted: every failure is reported at the end
            load.failures.append(f"client {k}: {exc!r}")
        await asyncio.sleep(rng.uniform(0.2, 1.0))  # pacing between cycles


async def watcher(port: int, load: Load) -> None:
    """One client for the whole run: the snapshot timestamp of every live message."""
    async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, compression=None,
                       open_timeout=20, max_size=None) as ws:
        joined = time.time()
        while not load.stopping.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            stamp = datetime.fromisoformat(
                json.loads(message)["timestamp"].replace("Z", "+00:00")).timestamp()
            if stamp > joined:  # the history replayed on connect is older
                load.stamps.append(stamp)


def never_reader(port: int, load: Load) -> None:
    """A client that completes the handshake and never reads; replaced every 20 s."""
    sock: socket.socket | None = None
    try:
        while not load.stopping.is_set():
            if sock is not None:
                sock.close()
            sock, head = raw_upgrade(port, rcvbuf=4096)
            assert head.startswith(b"HTTP/1.1 101 "), head
            load.never_readers += 1
            load.stopping.wait(20)
    except Exception as exc:
        load.failures.append(f"never-reader: {exc!r}")
    finally:
        if sock is not None:
            sock.close()


def flood(port: int, load: Load) -> None:
    """Batches of half-open connections, each held 12 s (past the 10 s header timeout)."""
    batches: list[list[socket.socket]] = []
    try:
        while not load.stopping.is_set():
            batches.append(half_open(port, FLOOD_BATCH, addresses=10))
            load.flooded += FLOOD_BATCH
            if len(batches) > 2:
                close_all(batches.pop(0))
            load.stopping.wait(6)
    except Exception as exc:
        load.failures.append(f"flood: {exc!r}")
    finally:
        for batch in batches:
            close_all(batch)


def run_clients(port: int, load: Load) -> None:
    async def main() -> None:
        tasks = [asyncio.create_task(cycling_client(port, k, load)) for k in range(CLIENTS)]
        tasks.append(asyncio.create_task(watcher(port, load)))
        await asyncio.gather(*tasks)

    asyncio.run(main())


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.timeout(SECONDS + 180)
def test_soak() -> None:
    _raise_own_fd_limit(4096)  # 200 clients + 300 flood sockets on this side
    child = Child()
    load = Load()
    threads: list[threading.Thread] = []
    try:
        wait_until(lambda: child.get("/healthz")[1]["ticks"] >= 2, timeout=10)
        baseline_fds = child.fds()
        threads = [
            threading.Thread(target=run_clients, args=(child.port, load), name="soak-clients"),
            threading.Thread(target=never_reader, args=(child.port, load), name="soak-stuck"),
            threading.Thread(target=flood, args=(child.port, load), name="soak-flood"),
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        load.stopping.wait(WARMUP)
        warm_rss = child.rss()
        peak_rss = warm_rss
        while time.monotonic() - started < SECONDS:  # sample memory once a second
            load.stopping.wait(1.0)
            peak_rss = max(peak_rss, child.rss())
            assert child.proc.poll() is None, "the server exited"
        health = child.get("/healthz")
    finally:
        load.stopping.set()
        for thread in threads:
            thread.join(30)
    try:
        expected = child.stop_writers()
        # The final snapshot: the last value each writer wrote.
        def final() -> dict[str, Any] | None:
            snap = child.get("/api/metrics")[1]
            return snap if matches(snap, expected) else None

        snap = wait_until(final, timeout=5 * INTERVAL + 5, what="the last values written")
        assert snap is not None

        wait_until(lambda: child.fds() <= baseline_fds, timeout=30,
                   what=f"descriptors back at {baseline_fds} (now {child.fds()})")

        growth = peak_rss - warm_rss
        gaps = [b - a for a, b in zip(load.stamps, load.stamps[1:], strict=False)]
        summary = (
            f"{SECONDS:.0f}s: {expected['calls']} writer iterations, {load.cycles} client "
            f"cycles, {load.never_readers} never-reading clients, {load.flooded} half-open "
            f"connections; RSS {warm_rss / 2**20:.1f} MiB after warm-up, peak "
            f"{peak_rss / 2**20:.1f} MiB; ticks {health[1]['ticks']}, skipped "
            f"{health[1]['ticks_skipped']}, largest gap {max(gaps, default=0):.2f}s"
        )
        print(summary)
        assert health[0] == 200, health
        assert growth < RSS_GROWTH_BOUND, summary
        assert len(load.stamps) >= (SECONDS - 5) / INTERVAL, summary
        assert max(gaps) <= 2 * INTERVAL + 0.5, summary  # at most one tick missed in a row
        assert load.cycles >= CLIENTS, summary
        assert len(load.failures) <= load.cycles // 100, (summary, load.failures[:10])
    finally:
        child.close()
    assert child.proc.returncode == 0


def matches(snap: dict[str, Any], expected: dict[str, Any]) -> bool:
    for key, value in expected.items():
        if key in {"jobs", "gauge", "calls"}:
            continue
        if snap.get(key) != value:
            return False
    jobs = {job["id"]: job["progress"] for job in snap["recent_jobs"]}
    if any(jobs.get(job) != progress for job, progress in expected["jobs"].items()):
        return False
    gauge = {s["labels"]["writer"]: s["value"] for s in snap["custom"].get("soak_last", [])}
    return all(gauge.get(w) == n for w, n in expected["gauge"].items())
