"""``hyperdash watch``: URL handling, the line format, backoff, and the client against real
dashboards (served in-process) and as a process against closed ports."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from support import get_json

from hyperdash_otel import SNAPSHOT_FIELDS, Dashboard
from hyperdash_otel.watch import (
    WatchOptions,
    backoff_delay,
    format_line,
    replayed_after,
    watch,
    ws_url,
)

HYPERDASH = [sys.executable, "-m", "hyperdash_otel"]
FAST_RETRY = {"backoff_base": 0.02, "backoff_cap": 0.1}


# -- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
        ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/ws"),
        ("https://ops.example.com/dash/", "wss://ops.example.com/dash/ws"),
        ("http://h:1/ws", "ws://h:1/ws"),
        ("ws://h:1", "ws://h:1/ws"),
        ("ws://h:1/ws", "ws://h:1/ws"),
        ("WSS://h/stream", "wss://h/stream"),
        ("localhost:8080", "ws://localhost:8080/ws"),
        ("http://[::1]:8080", "ws://[::1]:8080/ws"),
        ("http://h:1/?token=abc", "ws://h:1/ws?token=abc"),
        ("  http://h:1  ", "ws://h:1/ws"),
    ],
)
def test_ws_url_accepts_page_and_stream_urls(given: str, expected: str) -> None:
    assert ws_url(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "empty URL"),
        ("ftp://h:1", "unsupported scheme 'ftp'"),
        ("http://", "no host"),
        ("http://h:99999", "invalid port"),
        ("http://h:port", "invalid port"),
    ],
)
def test_ws_url_says_what_is_wrong(given: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ws_url(given)


SNAPSHOT = {
    "timestamp": "2026-11-25T18:30:00.000Z", "jobs_active": 5, "jobs_completed": 123,
    "jobs_failed": 2, "queue_length": 15, "cpu_usage": 45.25, "memory_usage": 2048,
    "system_health": "degraded", "alerts": [{"id": "alert-1"}, {"id": "alert-2"}],
}


def test_format_line_has_the_figures_of_a_tick() -> None:
    local = datetime.fromisoformat("2026-11-25T18:30:00+00:00").astimezone().strftime("%H:%M:%S")
    assert format_line(SNAPSHOT) == (
        f"{local}  active   5  completed    123  failed    2  queue   15  cpu  45.2%"
        "  mem   2048 MB  degraded  alerts 2"
    )


def test_format_line_survives_missing_and_odd_fields() -> None:
    assert format_line({}) == (
        "--:--:--  active   -  completed      -  failed    -  queue    -  cpu     -%"
        "  mem      - MB  -"
    )
    odd = format_line({"timestamp": "garbage!", "jobs_active": "7", "cpu_usage": True})
    assert odd.startswith("garbage!  active   -") and "cpu     -%" in odd


def test_format_line_counts_stalled_jobs_when_there_are_any() -> None:
    jobs = [{"id": "a", "stalled": True}, {"id": "b", "stalled": False}, {"id": "c"},
            {"id": "d", "stalled": True}, "odd", {"id": "e", "stalled": "true"}]
    line = format_line({**SNAPSHOT, "recent_jobs": jobs})
    assert line.endswith("  degraded  stalled 2  alerts 2")
    assert "\x1b[33mstalled 2\x1b[0m" in format_line({**SNAPSHOT, "recent_jobs": jobs},
                                                       color=True)
    assert "stalled" not in format_line({**SNAPSHOT, "recent_jobs": jobs[1:3]})


def test_format_line_colors_health_only_when_asked() -> None:
    assert "\x1b[33mdegraded\x1b[0m" in format_line(SNAPSHOT, color=True)
    assert "\x1b" not in format_line(SNAPSHOT)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_delay(n, 0.5, 8.0) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_the_replay_mark_tells_replay_from_live() -> None:
    assert replayed_after({"seq": 1, "replay": 3}) == 3
    assert replayed_after({"seq": 1, "replay": 0}) == 0
    assert replayed_after({"seq": 1}) is None  # live
    assert replayed_after({"replay": True}) is None and replayed_after(None) is None


@pytest.mark.parametrize(
    "bad",
    [{"count": 0}, {"backlog": -1}, {"max_retries": -1}, {"connect_timeout": 0.0},
     {"connect_timeout": float("nan")}],
)
def test_watch_options_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WatchOptions(**bad)


# -- against real dashboards -------------------------------------------------------------------


class Lines(io.StringIO):
    """A thread-safe sink that tests can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            return super().write(s)

    def lines(self) -> list[str]:
        with self._lock:
            return self.getvalue().splitlines()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.lines()):
            assert time.monotonic() < deadline, f"not within {timeout}s: {self.lines()}"
            time.sleep(0.02)


def run_watch(url: str, **options: Any) -> tuple[int, list[str], list[str]]:
    out, err = Lines(), Lines()
    code = asyncio.run(
        asyncio.wait_for(watch(url, WatchOptions(**options), out=out, err=err), 20)
    )
    return code, out.lines(), err.lines()


class Background:
    """``watch`` on a loop of its own thread, so a test can restart servers meanwhile."""

    def __init__(self, url: str, **options: Any) -> None:
        self.out, self.err = Lines(), Lines()
        self.code: int | None = None
        coro = watch(url, WatchOptions(**options), out=self.out, err=self.err)
        self.thread = threading.Thread(target=self._run, args=(coro,), daemon=True)
        self.thread.start()

    def _run(self, coro: Any) -> None:
        self.code = asyncio.run(coro)

    def join(self, timeout: float = 10) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "watch did not end"
        return self.code


@pytest.fixture
def served(make_dashboard: Callable[..., Dashboard]) -> Callable[..., Dashboard]:
    def serve(**config: Any) -> Dashboard:
        config.setdefault("update_interval", 0.05)
        dash = make_dashboard(**config)
        dash.update_job_metrics(active=5, completed=40, failed=3, pending=2, queue_len=9)
        return dash.start_in_thread()

    return serve


def test_watch_prints_one_line_per_tick(served: Callable[..., Dashboard]) -> None:
    dash = served()
    code, out, err = run_watch(str(dash.url), count=3)
    assert (code, err) == (0, [])
    assert len(out) == 3
    assert all("active   5  completed     40  failed    3  queue    9" in line for line in out)


def test_watch_json_prints_the_raw_messages(served: Callable[..., Dashboard]) -> None:
    dash = served()
    code, out, _ = run_watch(f"ws://127.0.0.1:{dash.port}/ws", count=3, raw_json=True)
    assert code == 0
    messages = [json.loads(line) for line in out]
    assert all(set(SNAPSHOT_FIELDS) <= set(m) for m in messages)
    stamps = [m["timestamp"] for m in messages]
    assert stamps == sorted(set(stamps))  # in order, no duplicates
    assert {m["jobs_active"] for m in messages} == {5}


def wait_for_ticks(dash: Dashboard, ticks: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while get_json(f"{dash.url}healthz")["ticks"] < ticks:
        assert time.monotonic() < deadline, f"fewer than {ticks} ticks in {timeout}s"
        time.sleep(0.02)


class FakeStream:
    """Stands in for a WebSocket connection: messages are read from a queue the test feeds."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.reads = 0

    def read_message(self) -> Any:
        self.reads += 1
        return self.queue.get()


def tick(second: int, active: int, replay: int | None = None) -> str:
    message = {"timestamp": f"2026-11-25T18:30:{second:02d}.000Z", "jobs_active": active,
               "seq": second}
    return json.dumps(message if replay is None else {**message, "replay": replay})


@pytest.mark.parametrize(("first", "backlog", "printed"), [
    (True, 3, [7, 8, 9, 10]),   # the newest three of the replay, then the live one
    (True, 0, [10]),
    (True, 20, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    (False, 3, [6, 7, 8, 9, 10]),  # after a reconnect: whatever was not printed yet
])
def test_the_replay_is_trimmed_to_the_backlog_then_live_ticks_follow(
    first: bool, backlog: int, printed: list[int]
) -> None:
    from hyperdash_otel.watch import _Printer, _stream  # the replay logic, without a network

    async def main() -> list[int]:
        conn = FakeStream()
        out, err = Lines(), Lines()
        printer = _Printer(out, WatchOptions(raw_json=True, backlog=backlog), err)
        if not first:
            printer.last_seq = 5
        for second in range(1, 10):  # nine replayed ticks, each saying how many follow
            conn.queue.put_nowait(tick(second, second, replay=9 - second))
        task = asyncio.ensure_future(_stream(conn, printer, first))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        # Nine reads of the replay, then one waiting for more: the replay is over and
        # printed without waiting for a live tick.
        while conn.reads < 10 or len(out.lines()) < len(printed) - 1:
            assert loop.time() < deadline, conn.reads
            await asyncio.sleep(0.01)
        conn.queue.put_nowait(tick(10, 10))  # the first live tick
        conn.queue.put_nowait(None)  # and the stream ends
        await asyncio.wait_for(task, 10)
        return [json.loads(line)["jobs_active"] for line in out.lines()]

    assert asyncio.run(main()) == printed


def test_a_restarted_server_is_new_from_its_first_seq() -> None:
    from hyperdash_otel.watch import _Printer

    printer = _Printer(Lines(), WatchOptions(raw_json=True), Lines())
    printer.emit(tick(40, 1), json.loads(tick(40, 1)))
    assert not printer.is_new(json.loads(tick(40, 1)))  # printed already
    printer.reconnected(json.loads(tick(41, 1)))  # the same server, further on
    assert not printer.is_new(json.loads(tick(40, 1))) and printer.is_new(json.loads(tick(41, 1)))
    printer.reconnected(json.loads(tick(3, 1)))  # seq went back: a new server run
    assert printer.is_new(json.loads(tick(1, 1)))


def test_backlog_prints_the_newest_replayed_snapshots(served: Callable[..., Dashboard]) -> None:
    dash = served(update_interval=0.2)
    wait_for_ticks(dash, 12)
    connected = time.time()
    code, out, _ = run_watch(str(dash.url), count=4, backlog=3, raw_json=True)
    assert code == 0
    stamps = [datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
              .timestamp() for line in out]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    # The newest of the history, not its oldest (those are over 2 s old by now).
    assert stamps[0] > connected - 1.2


def test_backlog_zero_prints_live_ticks_only(served: Callable[..., Dashboard]) -> None:
    dash = served(update_interval=0.3)
    wait_for_ticks(dash, 3)
    connected = time.time()
    code, out, _ = run_watch(str(dash.url), count=1, backlog=0, raw_json=True)
    assert code == 0
    stamp = json.loads(out[0])["timestamp"].replace("Z", "+00:00")
    assert datetime.fromisoformat(stamp).timestamp() >= connected - 0.05


def test_watch_reconnects_after_a_restart_without_duplicates(
    served: Callable[..., Dashboard],
) -> None:
    first = served()
    port = first.port
    bg = Background(str(first.url), raw_json=True, max_retries=3, **FAST_RETRY)
    bg.out.wait_for(lambda lines: len(lines) >= 3)
    first.stop()
    bg.err.wait_for(lambda lines: any("1001 going away" in line for line in lines))
    second = served(port=port)
    second.update_job_metrics(active=7, completed=41, failed=3, pending=0, queue_len=0)
    bg.out.wait_for(lambda lines: any('"jobs_active":7' in line for line in lines))
    second.stop()
    assert bg.join() == 1  # gave up once the second server was gone for good
    stamps = [json.loads(line)["timestamp"] for line in bg.out.lines()]
    assert stamps == sorted(set(stamps))
    err = bg.err.lines()
    assert any(line.startswith("hyperdash watch: reconnected to ws://") for line in err)
    assert err[-1].endswith("giving up after 4 attempts")


def test_a_dropped_stream_ends_the_watch_with_max_retries_zero(
    served: Callable[..., Dashboard],
) -> None:
    dash = served()
    bg = Background(str(dash.url), max_retries=0)
    bg.out.wait_for(lambda lines: len(lines) >= 1)
    dash.stop()
    assert bg.join() == 1
    assert bg.err.lines() == [
        "hyperdash watch: server closed the stream (1001 going away: server shutting down)"
    ]


def test_a_wrong_path_fails_at_once_even_with_wait(served: Callable[..., Dashboard]) -> None:
    dash = served()
    started = time.monotonic()
    code, out, err = run_watch(f"ws://127.0.0.1:{dash.port}/nope", wait=True, **FAST_RETRY)
    assert (code, out, len(err)) == (1, [], 1)
    assert "HTTP 404" in err[0] and "no WebSocket at this path" in err[0]
    assert time.monotonic() - started < 5


def test_the_token_is_sent_and_a_missing_one_is_explained(
    served: Callable[..., Dashboard],
) -> None:
    dash = served(auth_token="s3cret-token")
    code, out, err = run_watch(str(dash.url), count=1)
    assert (code, out, len(err)) == (1, [], 1)
    assert "HTTP 401" in err[0] and "HYPERDASH_AUTH_TOKEN" in err[0]
    code, out, err = run_watch(str(dash.url), count=1, token="s3cret-token")
    assert (code, len(out), err) == (0, 1, [])


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections and that nobody else can take meanwhile: bound,
    never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_wait_retries_a_refused_first_connection_then_gives_up(closed_port: int) -> None:
    code, out, err = run_watch(f"http://127.0.0.1:{closed_port}", wait=True, max_retries=2,
                               **FAST_RETRY)
    assert (code, out, len(err)) == (1, [], 3)
    assert all("connection refused" in line for line in err)
    assert err[-1].endswith("giving up after 3 attempts")


# -- as a process ------------------------------------------------------------------------------


def hyperdash(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HYPERDASH, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_closed_port_fails_fast_with_one_line(closed_port: int) -> None:
    started = time.monotonic()
    result = hyperdash("watch", f"http://127.0.0.1:{closed_port}")
    took = time.monotonic() - started
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"hyperdash watch: cannot connect to ws://127.0.0.1:{closed_port}/ws: "
        "connection refused (is the dashboard running?)\n"
    )
    assert took < 5, took


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "http://127.0.0.1:99999", "http://"])
def test_a_bad_url_is_one_line_and_exit_2(url: str) -> None:
    result = hyperdash("watch", url)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("hyperdash watch: bad URL: ")
    assert result.stderr.count("\n") == 1


def test_an_unknown_host_is_one_line_without_traceback() -> None:
    result = hyperdash("watch", "http://no-such-host.invalid:8080")
    assert result.returncode == 1
    assert result.stderr.startswith("hyperdash watch: cannot connect to ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_closed_pipe_ends_the_watch_quietly(served: Callable[..., Dashboard]) -> None:
    dash = served()
    proc = subprocess.Popen([*HYPERDASH, "watch", str(dash.url), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["jobs_active"] == 5
        proc.stdout.close()  # `| head -1`
        assert proc.wait(10) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
