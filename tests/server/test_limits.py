"""Connection caps, the header timeout, the accept loop's back-off, rate limits, /metrics on
its own thread, and /healthz telling the truth."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.server.flood import ServerProcess, close_all, half_open

TICK = 0.2
NOFILE = 256


def poll_until(predicate: Callable[[], Any], *, timeout: float, every: float = 0.2,
               what: str = "") -> Any:
    """``wait_until`` with a slower poll, for conditions checked over HTTP."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(every)


def healthy(server: ServerProcess, *, timeout: float = 5.0) -> dict[str, Any]:
    status, body = server.get("/healthz", timeout=timeout)
    assert (status, body["status"]) == (200, "ok"), body
    assert isinstance(body, dict)
    return body


def watch_ticks(server: ServerProcess, ticks: int) -> tuple[float, int]:
    """Probe /healthz (within its timeout, answering 200) until ``ticks`` more ticks have
    run; the share of a core the server used meanwhile, and how many probes answered."""
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    target = healthy(server)["ticks"] + ticks
    probes = 0

    def progressed() -> bool:
        nonlocal probes
        probes += 1
        return bool(healthy(server)["ticks"] >= target)

    poll_until(progressed, timeout=ticks * TICK + 20, what=f"{ticks} ticks")
    return (server.cpu_seconds() - cpu0) / (time.monotonic() - t0), probes


# -- descriptor exhaustion (issue #12, item 2) --------------------------------------------------


def test_a_half_open_flood_past_the_descriptor_limit_never_spins(tmp_path: Path) -> None:
    """400 connections that never finish a request, from 40 addresses, against a server
    allowed 256 descriptors. Before the caps, the accept loop hit EMFILE and spun at a
    full core, /healthz timed out and the log grew by megabytes."""
    server = ServerProcess(tmp_path / "server.log", "--interval", str(TICK), nofile=NOFILE)
    try:
        healthy(server)
        baseline = server.fds()
        lines = server.log_lines()
        flood = half_open(server.port, 400, addresses=40)
        try:
            cpu, probes = watch_ticks(server, 15)
            assert cpu < 0.5, f"the server used {cpu:.0%} of a core while flooded"
            assert probes >= 3
            # Default caps for 256 descriptors and 100 WebSocket clients: 46 connections.
            assert server.fds() <= baseline + 46 + 4
            assert server.log_lines() - lines <= 5, server.log()[-2000:]
        finally:
            close_all(flood)
        poll_until(lambda: server.fds() <= baseline, timeout=10, what="descriptors released")
        assert server.get("/api/metrics")[0] == 200
        assert server.get("/")[0] == 200
    finally:
        server.close()


def test_the_accept_loop_backs_off_when_descriptors_run_out(tmp_path: Path) -> None:
    """Caps set above what the descriptor limit allows: accept() itself fails with EMFILE.
    The listener pauses instead of spinning, says so once, and the header timeout frees the
    flood's descriptors, so the server recovers while the flood's sockets are still open."""
    server = ServerProcess(
        tmp_path / "server.log", "--interval", str(TICK), "--max-connections", "2000",
        "--max-connections-per-ip", "2000", "--header-timeout", "2", nofile=NOFILE,
    )
    try:
        healthy(server)
        baseline = server.fds()
        flood = half_open(server.port, 400, addresses=40)
        try:
            poll_until(lambda: "cannot accept connections" in server.log(), timeout=10,
                       what="the listener to run out of descriptors")
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            poll_until(lambda: time.monotonic() - t0 > 3, timeout=10, every=0.5)
            cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            assert cpu < 0.5, f"the server used {cpu:.0%} of a core out of descriptors"
            # The header timeout closes the flood's connections: healthy again, flood open.
            poll_until(lambda: server.get("/healthz", timeout=10)[0] == 200, timeout=30,
                       what="/healthz to answer 200 with the flood still connected")
            assert server.log().count("cannot accept connections") <= 2, server.log()[-3000:]
            assert server.log().count("Traceback") <= 5, server.log()[-3000:]
        finally:
            close_all(flood)
        poll_until(lambda: server.fds() <= baseline, timeout=10, what="descriptors released")
        healthy(server)
    finally:
        server.close()


@pytest.mark.parametrize("partial_every", [0, 1], ids=["silent", "half-a-head"])
def test_the_header_timeout_closes_a_connection_in_seconds(tmp_path: Path, partial_every: int
                                                           ) -> None:
    server = ServerProcess(tmp_path / "server.log", "--header-timeout", "1")
    try:
        (sock,) = half_open(server.port, 1, partial_every=partial_every)
        try:
            started = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(1) == b""  # closed by the server
            assert time.monotonic() - started < 5
        finally:
            close_all([sock])
    finally:
        server.close()
