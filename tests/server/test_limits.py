"""Connection caps, the header timeout, the accept loop's back-off, rate limits, /metrics on
its own thread, and /healthz telling the truth."""

from __future__ import annotations

import functools

import asyncio
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from websockets.exceptions import InvalidStatus

from hyperdash_otel import Config
from hyperdash_otel.cli import _config as cli_config
from hyperdash_otel.cli import build_parser
from hyperdash_otel.server.handlers import health
from hyperdash_otel.server.limits import (
    MAX_CONNECTIONS_CEILING,
    ConnectionTable,
    LogThrottle,
    RateLimiter,
    RequestLimits,
    connection_caps,
)
from hyperdash_otel.server.pool import Busy, Coalescing, Pool
from hyperdash_otel.server.runner import connection_table
from tests.server.flood import ServerProcess, close_all, half_open, scrape_from_another_process

TICK = 0.2
NOFILE = 256


poll_until = functools.partial(wait_until, every=0.2)
"""``wait_until`` with a slower poll, for conditions checked over HTTP."""


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


# -- the rules, without a server -----------------------------------------------------------------


@pytest.mark.parametrize(("nofile", "max_clients", "caps"), [
    (1024, 100, (430, 107)),
    (256, 100, (46, 11)),
    (65536, 100, (MAX_CONNECTIONS_CEILING, MAX_CONNECTIONS_CEILING // 4)),
    (128, 100, (16, 4)),  # less than the reserve: the floor, and a warning at start
])
def test_default_caps_derive_from_the_descriptor_limit(nofile: int, max_clients: int,
                                                       caps: tuple[int, int]) -> None:
    assert connection_caps(nofile=nofile, max_clients=max_clients) == caps


def test_configured_caps_win_over_derived_ones() -> None:
    table = connection_table(Config(max_connections=40), nofile=1024)
    assert (table.max_total, table.max_per_address) == (40, 10)
    table = connection_table(Config(max_connections_per_ip=3), nofile=1024)
    assert (table.max_total, table.max_per_address) == (430, 3)
    table = connection_table(Config(max_connections=5, max_connections_per_ip=9), nofile=1024)
    assert (table.max_total, table.max_per_address) == (5, 5)


class TestConnectionTable:
    def test_per_address_cap_refuses_and_release_frees_a_place(self) -> None:
        table: ConnectionTable[str] = ConnectionTable(max_total=10, max_per_address=2)
        assert table.admit("a1", "A") == (True, None)
        assert table.admit("a2", "A") == (True, None)
        assert table.admit("a3", "A") == (False, None)
        assert table.admit("b1", "B") == (True, None)
        table.release("a1")
        table.release("a1")  # twice: no effect
        assert table.admit("a3", "A") == (True, None)
        assert (len(table), table.count("A"), table.refused) == (3, 2, 1)

    def test_when_full_the_longest_idle_is_evicted_never_a_busy_one(self) -> None:
        table: ConnectionTable[str] = ConnectionTable(max_total=3, max_per_address=3)
        for conn in ("c1", "c2", "c3"):
            assert table.admit(conn, conn) == (True, None)
        table.busy("c1")  # its request is in hand
        table.busy("c2")
        table.idle("c2")  # answered; idle again, more recently than c3
        assert table.admit("c4", "c4") == (True, "c3")
        assert "c3" not in table and len(table) == 3
        assert table.admit("c5", "c5") == (True, "c2")
        table.busy("c4")
        table.busy("c5")
        assert table.admit("c6", "c6") == (False, None)  # every place is busy
        assert (table.evicted, table.refused) == (2, 1)

    def test_lowering_the_cap_closes_idle_connections_until_restored(self) -> None:
        table: ConnectionTable[int] = ConnectionTable(max_total=100, max_per_address=100)
        for conn in range(40):
            table.admit(conn, "A")
        for conn in range(10):
            table.busy(conn)
        victims = table.lower(20)
        assert victims == list(range(10, 30)) and len(table) == 20
        assert table.max_total == 20
        assert table.admit(99, "B") == (True, 30)
        table.restore()
        assert table.max_total == 100 and table.admit(100, "B") == (True, None)
        assert table.lower(3) == list(range(31, 36))  # down to the floor, 16
        assert table.max_total == 16 and len(table) == 16


class TestRateLimiter:
    def test_burst_then_the_rate(self) -> None:
        limiter = RateLimiter(rate=2.0, burst=3, max_keys=10)
        assert [limiter.take("a", now=0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
        assert limiter.take("b", now=0.0) == 0.0  # per key
        assert limiter.take("a", now=0.25) == 0.25
        assert limiter.take("a", now=0.5) == 0.0
        assert limiter.take("a", now=100.0) == 0.0  # refilled, but never past the burst
        assert [limiter.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.5]

    def test_the_address_table_is_bounded_least_recently_seen_first(self) -> None:
        limiter = RateLimiter(rate=1.0, burst=1, max_keys=3)
        for key in ("a", "b", "c"):
            limiter.take(key, now=0.0)
        limiter.take("a", now=0.0)  # a is seen again: b is now the oldest
        limiter.take("d", now=0.0)
        assert len(limiter) == 3
        assert limiter.take("b", now=0.0) == 0.0  # forgotten: a fresh bucket
        assert limiter.take("a", now=0.0) == 1.0  # remembered: still empty

    def test_wait_takes_nothing_and_forgets_full_buckets(self) -> None:
        limiter = RateLimiter(rate=1.0, burst=2, max_keys=10)
        assert limiter.wait("a", now=0.0) == 0.0 and len(limiter) == 0
        limiter.take("a", now=0.0)
        limiter.take("a", now=0.0)
        assert limiter.wait("a", now=0.5) == 0.5
        assert limiter.wait("a", now=0.5) == 0.5
        assert limiter.wait("a", now=2.0) == 0.0 and len(limiter) == 0

    def test_bad_bounds_are_refused(self) -> None:
        with pytest.raises(ValueError, match="rate"):
            RateLimiter(rate=0.0, burst=1, max_keys=1)


def test_failed_authentication_blocks_an_address_whatever_it_presents() -> None:
    now = [0.0]
    limits = RequestLimits(rate=100.0, burst=100, auth_failures_per_minute=6.0,
                           auth_failure_burst=2, max_addresses=10, clock=lambda: now[0])
    for _ in range(2):
        assert limits.check("A") is None
        limits.failed_auth("A")
    refusal = limits.check("A")  # even with the right token: checked before auth
    assert refusal is not None and refusal.reason == "too many failed authentications"
    assert (refusal.retry_after, refusal.retry_after_header) == (10.0, "10")
    assert limits.check("B") is None  # another address is not affected
    now[0] = 10.0
    assert limits.check("A") is None


def test_the_request_bucket_refuses_with_when_to_come_back() -> None:
    now = [0.0]
    limits = RequestLimits(rate=4.0, burst=2, auth_failures_per_minute=0.0,
                           auth_failure_burst=1, max_addresses=10, clock=lambda: now[0])
    assert [limits.check("A") for _ in range(2)] == [None, None]
    refusal = limits.check("A")
    assert refusal is not None and refusal.reason == "too many requests"
    assert (refusal.retry_after, refusal.retry_after_header) == (0.25, "1")
    for _ in range(50):
        limits.failed_auth("A")  # failures unlimited when their rate is 0
    now[0] = 0.25
    assert limits.check("A") is None and limits.refused == 1


def test_off_means_off() -> None:
    limits = RequestLimits(rate=0.0, burst=1, auth_failures_per_minute=0.0,
                           auth_failure_burst=1, max_addresses=1)
    for _ in range(1000):
        limits.failed_auth("A")
        assert limits.check("A") is None


def test_log_throttle_counts_what_it_holds_back() -> None:
    throttle = LogThrottle(10.0)
    assert [throttle.due("x", now=t) for t in (0.0, 1.0, 2.0, 3.0)] == [0, None, None, None]
    assert throttle.due("y", now=3.0) == 0  # per key
    assert throttle.due("x", now=10.0) == 3
    assert throttle.due("x", now=19.0) is None


@pytest.mark.parametrize(("errors", "last", "since", "interval", "expected"), [
    (0, None, 0.5, 1.0, ("ok", None)),
    (2, "KeyError", 2.5, 1.0, ("ok", None)),
    (3, "KeyError", 0.0, 1.0, ("failing", "the last 3 ticks failed (KeyError)")),
    (0, None, 3.5, 1.0, ("stale", "no tick has completed for 3.5 s (update_interval=1 s)")),
    (0, None, 1.9, 0.05, ("ok", None)),  # never stale before HEALTH_STALE_MIN
    (0, None, 2.1, 0.05, ("stale", "no tick has completed for 2.1 s (update_interval=0.05 s)")),
])
def test_health_from_the_tickers_record(errors: int, last: str | None, since: float,
                                        interval: float, expected: tuple[str, str | None]
                                        ) -> None:
    assert health(consecutive_errors=errors, last_error=last, since_success=since,
                  interval=interval) == expected


# -- a served dashboard --------------------------------------------------------------------------

TOKEN = "correct-horse-battery"


def assert_429(resp: Any, fragment: str) -> int:
    assert resp.status == 429
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["status"] == 429 and fragment in body["error"], body
    retry_after = int(resp.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def http_connections(s: Any) -> int:
    counter = s.ctx.http_connections
    assert counter is not None
    return int(counter())


def test_past_its_burst_an_address_gets_429_but_healthz_and_static_files_answer(
        serve: Callable[..., Any]) -> None:
    s = serve(rate_limit=0.5, rate_limit_burst=3)
    assert [s.request("/api/jobs").status for _ in range(3)] == [200, 200, 200]
    assert assert_429(s.request("/api/metrics"), "too many requests") == 2
    assert_429(s.request("/metrics"), "too many requests")
    assert_429(s.request("/nope"), "too many requests")
    for _ in range(20):  # a load balancer's probe, the page's files: never limited
        assert s.request("/healthz").status == 200
        assert s.request("/static/js/main.js").status == 200
    with pytest.raises(InvalidStatus) as refused:
        s.ws()
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body or b"")["status"] == 429


def test_failed_authentication_is_throttled_harder(serve: Callable[..., Any]) -> None:
    s = serve(auth_token=TOKEN, auth_failure_burst=3, auth_failures_per_minute=2)
    for _ in range(3):
        assert s.request("/api/jobs", headers={"Authorization": "Bearer guess-guess"}
                         ).status == 401
    # The allowance is spent: the right token waits too, so guessing cannot go on.
    resp = s.request("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert assert_429(resp, "too many failed authentications") == 30
    with pytest.raises(InvalidStatus) as refused:
        s.ws(f"/ws?token={TOKEN}")
    assert refused.value.response.status_code == 429
    assert s.request("/healthz").status == 200
    # Successes cost nothing from the failure allowance.
    t = serve(auth_token=TOKEN, auth_failure_burst=1, auth_failures_per_minute=1)
    for _ in range(20):
        assert t.request(f"/api/jobs?token={TOKEN}").status == 200


def test_a_websocket_handshake_with_a_wrong_token_is_charged(serve: Callable[..., Any]) -> None:
    s = serve(auth_token=TOKEN, auth_failure_burst=2, auth_failures_per_minute=1)
    statuses = []
    for _ in range(3):
        with pytest.raises(InvalidStatus) as refused:
            s.ws("/ws?token=guess-guess")
        statuses.append(refused.value.response.status_code)
    assert statuses == [401, 401, 429]


def test_connections_over_the_per_address_cap_get_a_json_429(serve: Callable[..., Any],
                                                             wait: Any) -> None:
    s = serve(max_connections_per_ip=2)
    held = half_open(s.port, 2, partial_every=0)  # from 127.0.0.2
    try:
        wait(lambda: http_connections(s) == 2)
        (third,) = half_open(s.port, 1, partial_every=0)
        held.append(third)
        third.settimeout(10)
        answer = b""
        while chunk := third.recv(4096):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 ")
        assert json.loads(body) == {"error": "too many connections from this address",
                                    "status": 429}
        assert s.request("/api/jobs").status == 200  # from 127.0.0.1: another address
    finally:
        close_all(held)


def test_when_every_place_is_taken_the_longest_idle_connection_makes_room(
        serve: Callable[..., Any], wait: Any) -> None:
    s = serve(max_connections=4, max_connections_per_ip=4)
    held = half_open(s.port, 4, partial_every=0)  # from 127.0.0.2, never a request
    try:
        wait(lambda: http_connections(s) == 4)
        for _ in range(3):
            assert s.request("/api/jobs").status == 200
        held[0].settimeout(10)
        assert held[0].recv(1) == b""  # the oldest was closed to make room
    finally:
        close_all(held)


def test_the_header_timeout_applies_in_process(serve: Callable[..., Any]) -> None:
    s = serve(header_timeout=0.5)
    (sock,) = half_open(s.port, 1, partial_every=1)
    try:
        sock.settimeout(10)
        assert sock.recv(1) == b""
    finally:
        close_all([sock])


def busy_registry(dash: Any, series: int = 400) -> None:
    """User instruments with ``series`` series in all, so one /metrics encoding is slow."""
    meter = dash.meter_provider.get_meter("load")
    for i in range(4):
        counter = meter.create_counter(f"load.series{i}", unit="1")
        for j in range(series // 4):
            counter.add(1, {"vm": f"vm-{j:05d}", "zone": "us-east-1"})


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text; version=1.0.0"])
def test_300_concurrent_scrapes_do_not_make_ticks_skip(serve: Callable[..., Any], wait: Any,
                                                        accept: str) -> None:
    s = serve(update_interval=0.5, max_connections=400, max_connections_per_ip=400,
              rate_limit=0)
    busy_registry(s.dash)
    ticker = s.ctx.ticker
    s.request("/metrics")  # warm: the first encoding of each series is the slowest
    before = (ticker.ticks, ticker.skipped, ticker.errors)
    answers = scrape_from_another_process(s.port, 300, accept)
    assert answers == ["200 series"] * 300
    # Sharing the tick's two threads, these scrapes queued ahead of the tick: 3 s and more
    # of encoding, 6 to 10 ticks skipped. The loop itself still answers 300 requests at once,
    # which may hold a tick back on a busy machine, never that long.
    assert ticker.skipped - before[1] <= 2 and ticker.errors == before[2]
    # The ticker still runs (the scrapes may all have fitted between two ticks).
    wait(lambda: ticker.ticks > before[0])
    # Shared encodings: far fewer than one per request.
    assert s.ctx.expositions is not None and s.ctx.expositions.calls < 100


def test_healthz_answers_503_while_ticks_fail_and_200_once_they_succeed(
        serve: Callable[..., Any], wait: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    s = serve()
    assert s.request("/healthz").json()["status"] == "ok"

    def broken(now: Any = None) -> dict[str, Any]:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(s.dash, "snapshot", broken)
    resp = wait(lambda: (r := s.request("/healthz")).status == 503 and r)
    body = resp.json()
    assert body["status"] == "failing"
    assert body["reason"].startswith("the last ") and "(UnicodeEncodeError)" in body["reason"]
    assert resp.headers["Content-Type"] == "application/json"
    monkeypatch.undo()
    wait(lambda: s.request("/healthz").status == 200)
    assert s.request("/healthz").json()["reason"] is None


def test_healthz_answers_503_when_the_ticker_stalls(serve: Callable[..., Any], wait: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    s = serve()
    release = threading.Event()
    snapshot = s.dash.snapshot

    def stuck(now: Any = None) -> dict[str, Any]:
        release.wait(30)
        return snapshot()

    monkeypatch.setattr(s.dash, "snapshot", stuck)
    try:
        resp = wait(lambda: (r := s.request("/healthz")).status == 503 and r, timeout=10)
        assert resp.json()["status"] == "stale"
        assert resp.json()["reason"].startswith("no tick has completed for ")
    finally:
        release.set()
    monkeypatch.undo()
    wait(lambda: s.request("/healthz").status == 200, timeout=10)


def test_websockets_leave_the_connection_count_once_upgraded(serve: Callable[..., Any],
                                                             wait: Any) -> None:
    s = serve(max_connections=2, max_connections_per_ip=2)
    clients = [s.ws() for _ in range(5)]  # more than max_connections, all served
    for client in clients:
        assert client.recv(timeout=5)
    wait(lambda: http_connections(s) == 0)
    assert s.request("/healthz").json()["clients"] == 5


# -- configuration ---------------------------------------------------------------------------------


def test_limit_settings_from_the_environment() -> None:
    config = Config.from_env({
        "HYPERDASH_MAX_CONNECTIONS": "300", "HYPERDASH_MAX_CONNECTIONS_PER_IP": "auto",
        "HYPERDASH_HEADER_TIMEOUT": "2.5", "HYPERDASH_RATE_LIMIT": "0",
        "HYPERDASH_RATE_LIMIT_BURST": "20", "HYPERDASH_AUTH_FAILURES_PER_MINUTE": "1.5",
        "HYPERDASH_AUTH_FAILURE_BURST": "3", "HYPERDASH_RATE_LIMIT_MAX_ADDRESSES": "50",
    })
    assert (config.max_connections, config.max_connections_per_ip) == (300, None)
    assert (config.header_timeout, config.rate_limit, config.rate_limit_burst) == (2.5, 0.0, 20)
    assert (config.auth_failures_per_minute, config.auth_failure_burst) == (1.5, 3)
    assert config.rate_limit_max_addresses == 50
    with pytest.raises(ValueError, match="HYPERDASH_MAX_CONNECTIONS: expected an integer"):
        Config.from_env({"HYPERDASH_MAX_CONNECTIONS": "many"})
    with pytest.raises(ValueError, match="HYPERDASH_RATE_LIMIT: expected a number"):
        Config.from_env({"HYPERDASH_RATE_LIMIT": "fast"})


@pytest.mark.parametrize(("field", "value", "error"), [
    ("max_connections", 0, ValueError),
    ("max_connections", 1.5, TypeError),
    ("max_connections_per_ip", -1, ValueError),
    ("header_timeout", 0, ValueError),
    ("header_timeout", float("inf"), ValueError),
    ("header_timeout", "10", TypeError),
    ("rate_limit", -1, ValueError),
    ("rate_limit", float("nan"), ValueError),
    ("rate_limit", True, TypeError),
    ("rate_limit_burst", 0, ValueError),
    ("auth_failures_per_minute", -0.5, ValueError),
    ("auth_failure_burst", 0, ValueError),
    ("rate_limit_max_addresses", 0, ValueError),
])
def test_bad_limit_settings_name_the_field(field: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=field):
        Config(**{field: value})


def test_limit_flags_reach_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args([
        "serve", "--max-connections", "64", "--max-connections-per-ip", "8",
        "--header-timeout", "3", "--rate-limit", "0", "--rate-limit-burst", "5",
        "--auth-failures-per-minute", "2", "--auth-failure-burst", "4",
    ])
    config = cli_config(args, "serve", sys.stderr)
    assert config is not None
    assert (config.max_connections, config.max_connections_per_ip, config.header_timeout) == (
        64, 8, 3.0)
    assert (config.rate_limit, config.rate_limit_burst) == (0.0, 5)
    assert (config.auth_failures_per_minute, config.auth_failure_burst) == (2.0, 4)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--header-timeout", "0"])
    assert exited.value.code == 2
    assert "--header-timeout: must be > 0 s, got 0" in capsys.readouterr().err



def test_under_tls_a_connection_that_never_starts_the_handshake_is_closed(
        serve: Callable[..., Any], certificate: tuple[str, str], wait: Any) -> None:
    cert, key = certificate
    s = serve(tls_certfile=cert, tls_keyfile=key, header_timeout=0.5,
              max_connections=3, max_connections_per_ip=3)
    held = half_open(s.port, 4, partial_every=0)  # silent: no ClientHello
    try:
        for sock in held:
            sock.settimeout(10)
            assert sock.recv(1) == b""  # the 4th refused at once, the others timed out
        wait(lambda: http_connections(s) == 0)
    finally:
        close_all(held)
    context = ssl.create_default_context(cafile=cert)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert tls.recv(12) == b"HTTP/1.1 200"


def test_coalescing_shares_only_calls_that_have_not_started() -> None:
    async def scenario() -> None:
        pool = Pool(workers=1, name="test-coalescing")
        coalescing: Coalescing[str, int] = Coalescing(pool, max_keys=2)
        gate = threading.Event()
        started = threading.Event()
        runs: list[str] = []

        def blocking() -> int:
            started.set()
            gate.wait(10)
            runs.append("first")
            return 1

        def count(name: str) -> Callable[[], int]:
            def call() -> int:
                runs.append(name)
                return len(runs)
            return call

        try:
            first = asyncio.ensure_future(coalescing.run("a", blocking))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            # "a" has started: these queue a new call, shared by all three.
            joined = [asyncio.ensure_future(coalescing.run("a", count(f"a{i}")))
                      for i in range(3)]
            other = asyncio.ensure_future(coalescing.run("b", count("b")))
            await asyncio.sleep(0)
            with pytest.raises(Busy):
                await coalescing.run("c", count("c"))  # two keys already wait
            gate.set()
            assert await first == 1
            assert [await j for j in joined] == [2, 2, 2]
            assert await other == 3
            assert runs == ["first", "a0", "b"] and coalescing.calls == 3
        finally:
            gate.set()
            await pool.aclose()

    asyncio.run(scenario())
