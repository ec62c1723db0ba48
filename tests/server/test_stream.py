"""The fan-out and the ticker without a server: fake clients, a real dashboard."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import sample
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from hyperdash_otel import Dashboard
from hyperdash_otel.server._tornado_fast import split_frames
from hyperdash_otel.server.pool import Pool
from hyperdash_otel.server.stream import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_SLOW,
    PING_FRAME,
    FanOut,
    Frame,
    Ticker,
    encode_snapshot,
    gc_paused,
    gc_resume_stuck,
    light_snapshot,
    replay_payload,
    next_tick,
    text_frame,
)


class FakeSink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.backlog = 0
        self.in_flight = 0
        self.closed: tuple[int, str] | None = None
        self.fail: Exception | None = None

    def unsent(self) -> int:
        return self.backlog

    def unacked(self) -> int:
        return self.in_flight

    def offer(self, frame: bytes) -> bool:
        if self.backlog:
            return False
        self.send(frame)
        return True

    def send(self, frame: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.frames.append(frame)

    def drop(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def frame(seq: int, *, light: bool = False) -> Frame:
    payload = json.dumps({"seq": seq, "recent_jobs": [{"id": "a"}]}).encode()
    light_payload = json.dumps({"seq": seq, "recent_jobs": []}).encode()
    return Frame(seq, payload, text_frame(payload), 1000.0 + seq,
                 light_payload if light else b"")


def replayed(*payloads: bytes) -> bytes:
    """What a new client is sent for these payloads: each marked with how many follow."""
    return b"".join(text_frame(replay_payload(p, len(payloads) - 1 - i))
                    for i, p in enumerate(payloads))


def tick(fanout: FanOut, *, light: bool = False) -> Frame:
    f = frame(fanout.begin_tick(), light=light)
    fanout.publish(f)
    return f


def fanout(**kwargs: Any) -> FanOut:
    kwargs.setdefault("max_clients", 10)
    kwargs.setdefault("history_size", 3)
    kwargs.setdefault("max_skips", 2)
    return FanOut(**kwargs)


class _CaptureStream:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frame_is_what_tornado_would_write(size: int) -> None:
    payload = b"x" * size
    protocol = WebSocketProtocol13(
        None, False, _WebSocketParams()  # type: ignore[arg-type]
    )
    capture = _CaptureStream()
    protocol.stream = capture  # type: ignore[assignment]
    protocol._write_frame(True, 0x1, payload)
    assert text_frame(payload) == capture.data


def test_encode_snapshot_is_compact_utf8_and_refuses_nan() -> None:
    assert encode_snapshot({"a": 1, "b": [1.5, "é"]}) == '{"a":1,"b":[1.5,"é"]}'.encode()
    with pytest.raises(ValueError):
        encode_snapshot({"a": float("nan")})


@pytest.mark.parametrize(
    ("scheduled", "now", "expected"),
    [
        (10.0, 10.01, (11.0, 0)),  # a quick tick
        (10.0, 11.0, (11.0, 0)),  # finished right on the next slot: run it
        (10.0, 11.2, (12.0, 1)),  # overran one slot: skip it, keep the grid
        (10.0, 13.5, (14.0, 3)),
        (10.0, 9.0, (11.0, 0)),  # a clock that went backwards changes nothing
    ],
)
def test_next_tick(scheduled: float, now: float, expected: tuple[float, int]) -> None:
    assert next_tick(scheduled=scheduled, interval=1.0, now=now) == expected


def test_history_is_replayed_oldest_first_in_one_write_and_bounded() -> None:
    fan = fanout(history_size=3)
    frames = [tick(fan) for _ in range(5)]
    sink = FakeSink()
    fan.subscribe(sink)
    assert sink.frames == [replayed(*(f.payload for f in frames[2:]))]
    assert fan.history_bytes == len(sink.frames[0])
    messages = [json.loads(p) for _, p in split_frames(sink.frames[0])]
    assert [(m["seq"], m["replay"]) for m in messages] == [(2, 2), (3, 1), (4, 0)]


def test_the_replay_is_light_but_for_its_newest_message() -> None:
    fan = fanout(history_size=3)
    frames = [tick(fan, light=True) for _ in range(5)]
    sink = FakeSink()
    fan.subscribe(sink)
    assert sink.frames == [replayed(frames[2].light, frames[3].light, frames[4].payload)]
    assert fan.history_bytes == len(sink.frames[0])
    newest = tick(fan, light=True)  # live ticks are always in full
    assert sink.frames[-1] is newest.frame
    assert "replay" not in json.loads(newest.payload)
    late = FakeSink()
    fan.subscribe(late)
    assert late.frames == [replayed(frames[3].light, frames[4].light, newest.payload)]


def test_a_client_joining_before_the_first_tick_gets_no_replay() -> None:
    fan = fanout()
    sink = FakeSink()
    fan.subscribe(sink)
    assert sink.frames == [] and fan.history_bytes == 0
    f = tick(fan)
    assert sink.frames == [f.frame]


def test_with_no_tick_since_the_last_round_every_client_is_pinged() -> None:
    fan = fanout()
    answering, silent, failing = FakeSink(), FakeSink(), FakeSink()
    for s in (answering, silent, failing):
        fan.subscribe(s)
    failing.fail = OSError("connection reset")
    assert fan.ping_round() == 3
    assert answering.frames == silent.frames == [PING_FRAME]
    assert failing.closed is not None and failing.closed[0] == CLOSE_GOING_AWAY
    fan.pong(answering)
    joined = FakeSink()  # joined after the ping: owes nothing yet
    fan.subscribe(joined)
    assert fan.drop_unanswered() == 1
    assert silent.closed == (CLOSE_NORMAL, "ping timed out")
    assert answering.closed is None and joined.closed is None
    assert fan.clients == 2
    fan.pong(silent)  # a late pong from a client already gone changes nothing
    assert fan.clients == 2


def test_a_client_that_acknowledged_every_tick_is_not_pinged() -> None:
    fan = fanout()
    acked, in_flight, backlogged = FakeSink(), FakeSink(), FakeSink()
    for s in (acked, in_flight, backlogged):
        fan.subscribe(s)
    f = tick(fan)
    in_flight.in_flight = 1200  # the peer has not acknowledged it (gone, or just slow)
    backlogged.backlog = 500  # still in Tornado's buffer
    assert fan.ping_round() == 2
    assert acked.frames == [f.frame]
    assert in_flight.frames[-1] == backlogged.frames[-1] == PING_FRAME
    assert fan.drop_unanswered() == 2
    assert acked.closed is None and fan.clients == 1
    # No tick since that round: no fresh evidence, so the next round pings it too.
    assert fan.ping_round() == 1
    assert acked.frames[-1] == PING_FRAME


def test_keep_alive_runs_one_task_for_all_clients_until_close_all() -> None:
    async def main() -> tuple[list[bytes], tuple[int, str] | None, int]:
        fan = fanout()
        answering, silent = FakeSink(), FakeSink()
        fan.subscribe(answering)
        fan.subscribe(silent)
        real_round = fan.ping_round

        def ping_round() -> int:
            pinged = real_round()
            fan.pong(answering)  # answers every ping at once
            return pinged

        fan.ping_round = ping_round  # type: ignore[method-assign]
        before = len(asyncio.all_tasks())
        fan.keep_alive(0.02, 0.01)
        fan.keep_alive(0.02, 0.01)  # idempotent: still one task
        assert len(asyncio.all_tasks()) == before + 1
        deadline = time.monotonic() + 5
        while silent.closed is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        while len(answering.frames) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        fan.close_all()
        await asyncio.sleep(0)
        return answering.frames, silent.closed, len(asyncio.all_tasks()) - before

    frames, closed, extra_tasks = asyncio.run(main())
    assert frames[:4] == [PING_FRAME] * 4
    assert closed == (CLOSE_NORMAL, "ping timed out")
    assert extra_tasks == 0


def test_keep_alive_with_no_interval_does_nothing() -> None:
    async def main() -> int:
        fan = fanout()
        before = len(asyncio.all_tasks())
        fan.keep_alive(None, None)
        fan.keep_alive(0, 5)
        return len(asyncio.all_tasks()) - before

    assert asyncio.run(main()) == 0


def test_every_client_gets_the_same_bytes_object() -> None:
    fan = fanout()
    sinks = [FakeSink() for _ in range(3)]
    for s in sinks:
        fan.subscribe(s)
    f = tick(fan)
    assert all(len(s.frames) == 1 and s.frames[0] is f.frame for s in sinks)
    assert fan.latest is f


def test_a_client_joining_during_a_tick_waits_for_the_next_one() -> None:
    """The tick that collected before the client was counted is not sent to it, so every
    live message it gets counts it in active_connections."""
    fan = fanout()
    seq = fan.begin_tick()  # collect running...
    sink = FakeSink()
    fan.subscribe(sink)  # ...when the client joins
    fan.publish(frame(seq))
    assert sink.frames == []
    later = tick(fan)
    assert sink.frames == [later.frame]


def test_a_client_with_unsent_bytes_is_skipped_then_closed() -> None:
    fan = fanout(max_skips=3)
    slow, fast = FakeSink(), FakeSink()
    fan.subscribe(slow)
    fan.subscribe(fast)
    tick(fan)
    slow.backlog = 100
    tick(fan)
    tick(fan)
    assert (len(slow.frames), slow.closed) == (1, None)
    slow.backlog = 0  # caught up: the skip count starts again
    newest = tick(fan)
    assert slow.frames[-1] is newest.frame
    slow.backlog = 100
    for _ in range(3):
        tick(fan)
    assert slow.closed == (CLOSE_TOO_SLOW, "too slow")
    assert fan.clients == 1
    assert len(fast.frames) == 7


def test_a_failing_client_is_dropped_and_the_others_still_served() -> None:
    fan = fanout()
    bad, good = FakeSink(), FakeSink()
    fan.subscribe(bad)
    fan.subscribe(good)
    bad.fail = OSError("connection reset")
    f = tick(fan)
    assert good.frames == [f.frame]
    assert bad.closed is not None and bad.closed[0] == CLOSE_GOING_AWAY
    assert fan.clients == 1


def test_reservations_are_a_hard_bound() -> None:
    fan = fanout(max_clients=3)
    assert [fan.reserve() for _ in range(4)] == [True, True, True, False]
    fan.release()
    assert fan.reserve()
    assert not fan.reserve()
    for _ in range(5):
        fan.release()
    assert fan.reserved == 0


def test_close_all_says_going_away() -> None:
    fan = fanout()
    sinks = [FakeSink() for _ in range(3)]
    for s in sinks:
        fan.subscribe(s)
    assert fan.close_all() == 3
    assert [s.closed for s in sinks] == [(CLOSE_GOING_AWAY, "server shutting down")] * 3
    assert fan.clients == 0
    late = FakeSink()  # a handshake that completes during shutdown
    assert not fan.reserve()
    fan.subscribe(late)
    assert late.closed == (CLOSE_GOING_AWAY, "server shutting down") and fan.clients == 0


def test_connections_and_disconnects_are_counted(dash: Dashboard) -> None:
    fan = fanout(max_skips=1, instruments=dash.server_instruments)
    a, b = FakeSink(), FakeSink()
    fan.subscribe(a)
    fan.subscribe(b)
    fan.subscribe(b)  # twice is once
    assert dash.snapshot()["active_connections"] == 2
    a.backlog = 1
    tick(fan)
    assert dash.snapshot()["active_connections"] == 1
    fan.unsubscribe(b)
    fan.unsubscribe(b)
    assert dash.snapshot()["active_connections"] == 0
    text = dash.metrics_text()
    assert sample(text, "hyperdash_websocket_disconnects_total", reason="too_slow") == 1, text


def run_ticker(dash: Dashboard, until: Callable[[Ticker], bool], interval: float = 0.05
               ) -> tuple[Ticker, FanOut]:
    fan = fanout(history_size=50)

    async def main() -> Ticker:
        pool = Pool(name="test-ticker")
        ticker = Ticker(dash, fan, pool, interval=interval)
        task = asyncio.create_task(ticker.run())
        deadline = time.monotonic() + 10
        while not until(ticker) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.aclose()
        return ticker

    return asyncio.run(main()), fan


def test_ticks_publish_the_snapshot_and_time_themselves(dash: Dashboard) -> None:
    dash.update_job_metrics(active=3, completed=5, failed=1, pending=2, queue_len=2)
    ticker, fan = run_ticker(dash, lambda t: t.ticks >= 3)
    assert fan.latest is not None
    assert json.loads(fan.latest.payload)["jobs_active"] == 3
    assert fan.latest.frame == text_frame(fan.latest.payload)
    # The replay's lighter copy: every key, the same numbers, no job, alert or custom list.
    full = json.loads(fan.latest.payload)
    light = json.loads(fan.latest.light)
    assert list(light) == list(full)
    assert list(full)[-1] == "seq" and full["seq"] == fan.latest.seq
    assert light == light_snapshot(full)
    assert (light["recent_jobs"], light["alerts"], light["custom"]) == ([], [], {})
    assert light["jobs_active"] == full["jobs_active"] == 3
    assert (sample(dash.metrics_text(), "hyperdash_tick_duration_seconds_count") or 0) >= 3


def test_a_failing_tick_is_counted_and_the_next_one_runs(dash: Dashboard,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    real = dash.snapshot
    calls = {"n": 0}

    def flaky(now: Any = None) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a user's callback broke")
        return real()

    monkeypatch.setattr(dash, "snapshot", flaky)
    ticker, fan = run_ticker(dash, lambda t: t.ticks >= 3)
    assert ticker.errors == 1
    assert "a user's callback broke" in caplog.text
    assert sample(real_text(dash), "hyperdash_tick_errors_total") == 1


def real_text(dash: Dashboard) -> str:
    return dash.exposition()[0].decode()


def test_an_overrunning_tick_skips_instead_of_piling_up(dash: Dashboard,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real = dash.snapshot
    starts: list[float] = []
    running = threading.Lock()

    def slow(now: Any = None) -> dict[str, Any]:
        assert running.acquire(blocking=False), "two ticks ran at once"
        try:
            starts.append(time.monotonic())
            time.sleep(0.12)
            return real()
        finally:
            running.release()

    monkeypatch.setattr(dash, "snapshot", slow)
    ticker, _ = run_ticker(dash, lambda t: t.ticks >= 3, interval=0.05)
    assert ticker.skipped >= 4
    # Each tick starts on the 50 ms grid after the previous one ended, never right away.
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(g >= 0.12 for g in gaps), gaps
    assert (sample(real_text(dash), "hyperdash_tick_skipped_total") or 0) >= 1


def test_current_payload_before_the_first_tick_builds_one(dash: Dashboard) -> None:
    dash.update_job_metrics(active=4, completed=0, failed=0, pending=0, queue_len=0)
    fan = fanout()

    async def main() -> bytes:
        pool = Pool(name="test-payload")
        try:
            return await Ticker(dash, fan, pool, interval=1.0).current_payload()
        finally:
            await pool.aclose()

    assert json.loads(asyncio.run(main()))["jobs_active"] == 4
    assert fan.latest is None  # built for the caller, not published


def test_gc_paused_pauses_the_collector_and_restores_it() -> None:
    import gc

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested (two dashboards ticking at once)
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a tick failed")
    assert gc.isenabled()
    gc.disable()  # an application that runs without the collector keeps it off
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_tick_builds_with_the_collector_paused(dash: Dashboard,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    seen: list[bool] = []
    real = dash.snapshot

    def watched(now: Any = None) -> dict[str, Any]:
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(dash, "snapshot", watched)
    run_ticker(dash, lambda t: t.ticks >= 2)
    assert seen and not any(seen)
    assert gc.isenabled()


def test_a_stuck_tick_gives_the_collector_back(dash: Dashboard,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import gc

    from hyperdash_otel.server import stream

    monkeypatch.setattr(stream, "GC_PAUSE_LIMIT", 0.05)
    release = threading.Event()
    during: list[bool] = []
    real = dash.snapshot

    def stuck(now: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)  # a collector blocked on I/O, until the guard fires
        during.append(gc.isenabled())
        release.wait(10)
        return real()

    monkeypatch.setattr(dash, "snapshot", stuck)

    async def main() -> None:
        pool = Pool(name="test-stuck")
        ticker = Ticker(dash, fanout(), pool, interval=1.0)
        task = asyncio.ensure_future(ticker.tick())
        deadline = time.monotonic() + 10
        while not during and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        release.set()
        assert await task is not None
        await pool.aclose()

    asyncio.run(main())
    assert during == [True]  # back on while the tick was still running
    assert gc.isenabled()
    assert "garbage collection resumed" in caplog.text
    assert not gc_resume_stuck()  # nothing paused now
