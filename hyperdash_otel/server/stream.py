"""The live stream: one snapshot per tick, encoded once, the same bytes to every client.

:class:`FanOut` owns the subscribers, the history ring and the slow-client rule; it is plain
synchronous code over the :class:`Sink` protocol, so tests drive it with fake clients.
:class:`Ticker` owns the schedule: it builds each frame in a worker thread and hands it to
the fan-out on the loop.

Per client and tick the fan-out does one thing: hand the shared, already framed bytes to the
client's socket buffer. No task, future or copy is made per client (see
:meth:`StreamHandler.offer <hyperdash_otel.server.handlers.StreamHandler.offer>`): at thousands
of connections the garbage collector, not the sockets, is what a per-client allocation costs.
For the same reason one timer keeps every client alive (:meth:`FanOut.keep_alive`), instead
of a task, two timers and a pong to read per connection, and a new client gets its history
as one prepared write in which only the newest message carries the job and alert lists.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..validation import clean_text
from .pool import Pool

if TYPE_CHECKING:
    from ..source import ServerInstruments, Source

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_TOO_SLOW",
    "FanOut",
    "Frame",
    "PING_FRAME",
    "REPLAY_KEY",
    "SEQ_KEY",
    "Sink",
    "Ticker",
    "encode_snapshot",
    "gc_paused",
    "gc_resume_stuck",
    "light_snapshot",
    "next_tick",
    "replay_payload",
    "text_frame",
]

log = logging.getLogger("hyperdash_otel.server")

CLOSE_NORMAL = 1000
"""Close code for a client that did not answer a ping in time (as Tornado closes it)."""
CLOSE_GOING_AWAY = 1001
"""Close code sent to every client when the server stops."""
CLOSE_TOO_SLOW = 1008
"""Close code (policy violation, reason "too slow") for a client that fell too far behind."""


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    """The wire form of a snapshot: compact UTF-8 JSON; NaN or infinity is an error.

    A lone surrogate that got past validation (validation replaces them; a hand-built dict
    may not) is sent as U+FFFD instead of failing the tick.
    """
    text = json.dumps(snapshot, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Surrogates can only sit inside JSON strings, so replacing them keeps the JSON valid.
        return clean_text(text).encode("utf-8")


LIGHT_EMPTY: dict[str, Any] = {"recent_jobs": [], "alerts": [], "custom": {}}
"""What an older replayed message leaves out: the lists only the newest message is shown
with. The charts need the numbers of every message, never these."""

PING_FRAME = b"\x89\x00"
"""An empty WebSocket ping, the same two bytes for every client."""


def light_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    """``snapshot`` with every key kept and the job, alert and custom lists emptied.

    >>> light_snapshot({"timestamp": "t", "jobs_active": 2, "recent_jobs": [{"id": "a"}],
    ...                 "alerts": [{"title": "x"}], "custom": {"queue": 3}})
    {'timestamp': 't', 'jobs_active': 2, 'recent_jobs': [], 'alerts': [], 'custom': {}}
    """
    return {key: LIGHT_EMPTY.get(key, value)
            for key, value in snapshot.items()}


REPLAY_KEY = "replay"
"""The key a replayed message gains after every other key: how many replayed messages
follow it (0 on the last one). Live messages never carry it, so a client knows without
any timing which messages are history and when the history is complete."""


def replay_payload(payload: bytes, remaining: int) -> bytes:
    """``payload`` (a JSON object, as :func:`encode_snapshot` makes it) with
    ``"replay": remaining`` appended as its last key.

    >>> replay_payload(b'{"seq":4}', 0)
    b'{"seq":4,"replay":0}'
    """
    if not payload.endswith(b"}") or len(payload) < 2:
        raise ValueError("a replayed message must be a JSON object")
    separator = b"" if payload == b"{}" else b","
    return b"%s%s\"%s\":%d}" % (payload[:-1], separator, REPLAY_KEY.encode(), remaining)


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked WebSocket text frame (RFC 6455 section 5.2).

    Servers never mask, and the stream negotiates no extension, so the frame depends on the
    payload alone: it is built once per tick and written as-is to every client.
    """
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


@dataclass(frozen=True)
class Frame:
    """One tick's output: the JSON (for /api/metrics) and the same bytes framed (for /ws)."""

    seq: int
    payload: bytes
    frame: bytes
    at: float
    """Wall-clock time of the snapshot (``time.time()``)."""
    light: bytes = b""
    """The same JSON with empty job, alert and custom lists (:func:`light_snapshot`), for
    replays; empty to replay the full message."""


class Sink(Protocol):
    """What the fan-out needs of a connected client."""

    def unsent(self) -> int:
        """Bytes handed to this client's connection and not yet taken by the kernel."""

    def unacked(self) -> int:
        """Bytes in the kernel's send queue: sent and not yet acknowledged by the peer, or
        not yet sent (0 means the peer's TCP has taken everything it was sent)."""

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` without waiting; may raise when the connection is gone or full."""

    def offer(self, frame: bytes) -> bool:
        """``send(frame)`` unless ``unsent()``: then nothing, and False (a skipped tick)."""

    def drop(self, code: int, reason: str) -> None:
        """Start closing the connection with this close code and reason."""


class _Seat:
    __slots__ = ("awaiting_pong", "since", "sink", "skips")

    def __init__(self, sink: Sink, since: int) -> None:
        self.sink = sink
        self.since = since
        self.skips = 0
        self.awaiting_pong = False


class FanOut:
    """Subscribers, the history ring and the rules for slow clients.

    * ``reserve()`` claims one of ``max_clients`` places before a WebSocket handshake (so the
      bound holds however many upgrades race), ``release()`` gives it back when the
      connection has gone.
    * ``subscribe()`` counts the client in ``hyperdash.websocket.connections`` and replays the
      history (oldest first) in one write: every message with all its keys, the older
      ones light (:func:`light_snapshot`), the newest in full. It then receives every
      tick that *starts* after it joined, so each live message's ``active_connections``
      already includes it.
    * ``publish()`` writes a tick's frame to each client whose previous frame has left the
      process; a client still holding unsent bytes is skipped (it gets a newer frame
      later), and after ``max_skips`` consecutive skips it is closed with
      :data:`CLOSE_TOO_SLOW`.
    * ``keep_alive()`` runs the keep-alive rounds from one timer: a client whose TCP peer
      acknowledged every tick is alive; the others are pinged, and closed when they do
      not answer within the timeout.
    """

    def __init__(
        self,
        *,
        max_clients: int,
        history_size: int,
        max_skips: int,
        instruments: ServerInstruments | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.max_skips = max_skips
        self._reserved = 0
        self._seats: dict[Sink, _Seat] = {}
        self._history: deque[Frame] = deque(maxlen=history_size)
        self._replay: bytes | None = b""
        """What a new client is sent: built on the first subscribe after a tick."""
        self._pinger: asyncio.Task[None] | None = None
        self._fresh = False
        """A tick was published since the last keep-alive round."""
        self._next_seq = 0
        self.latest: Frame | None = None
        self.closed = False
        self._connections = None if instruments is None else instruments.websocket_connections
        self._disconnects = None if instruments is None else instruments.websocket_disconnects
        self._uncounted = 0
        """Joins minus leaves not yet added to ``hyperdash.websocket.connections``."""
        self._counting = False
        """A :meth:`count_now` is scheduled on the loop."""

    # -- places -----------------------------------------------------------------------------

    def reserve(self) -> bool:
        """Claim a place for a new client; False when all ``max_clients`` are taken or the
        server is shutting down."""
        if self.closed or self._reserved >= self.max_clients:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        if self._reserved > 0:
            self._reserved -= 1

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def clients(self) -> int:
        """Clients subscribed to the stream now."""
        return len(self._seats)

    def sinks(self) -> list[Sink]:
        return list(self._seats)

    # -- history ----------------------------------------------------------------------------

    @property
    def history(self) -> list[Frame]:
        return list(self._history)

    @property
    def history_bytes(self) -> int:
        """Size of the framed history a new client is sent on connect."""
        return len(self.replay())

    def replay(self) -> bytes:
        """The history as a new client receives it: one buffer of frames, oldest first,
        the newest in full and the others light, each marked with :data:`REPLAY_KEY`."""
        replay = self._replay
        if replay is None:
            frames = self._history
            last = len(frames) - 1
            replay = self._replay = b"".join(
                text_frame(replay_payload(
                    frame.payload if i == last or not frame.light else frame.light, last - i))
                for i, frame in enumerate(frames)
            )
        return replay

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, sink: Sink) -> None:
        if self.closed:  # finished its handshake while the server was stopping
            sink.drop(CLOSE_GOING_AWAY, "server shutting down")
            return
        if sink in self._seats:
            return
        self._count(1)
        self._seats[sink] = _Seat(sink, self._next_seq)
        replay = self.replay()
        if not replay:
            return
        try:
            sink.send(replay)
        except Exception:  # a broken connection must not break the others
            log.debug("hyperdash: sending history failed", exc_info=True)
            self._evict(sink, CLOSE_GOING_AWAY, "write failed", "write_error")

    def unsubscribe(self, sink: Sink) -> bool:
        """Forget ``sink`` (it closed); True if it was subscribed."""
        if self._seats.pop(sink, None) is None:
            return False
        self._count(-1)
        return True

    def _count(self, delta: int) -> None:
        """Count a join or a leave: added to the instrument at the end of this pass of the
        event loop, so a connect storm makes one OpenTelemetry ``add`` per pass (about
        7 µs each) rather than one per client. Nothing on the loop can read the count
        before it is added (the tick's collect starts after :meth:`begin_tick` adds it)."""
        if self._connections is None:
            return
        self._uncounted += delta
        if self._counting:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test driving the fan-out by hand): at once
            self.count_now()
            return
        self._counting = True
        loop.call_soon(self.count_now)

    def count_now(self) -> None:
        """Add the joins and leaves not yet counted to ``hyperdash.websocket.connections``."""
        self._counting = False
        delta, self._uncounted = self._uncounted, 0
        if delta and self._connections is not None:
            self._connections.add(delta)

    def _evict(self, sink: Sink, code: int, reason: str, label: str) -> None:
        """Unsubscribe, count under ``label`` and start closing with ``code``/``reason``."""
        if self.unsubscribe(sink) and self._disconnects is not None:
            self._disconnects.add(1, {"reason": label})
        try:
            sink.drop(code, reason)
        except Exception:
            log.debug("hyperdash: closing a client failed", exc_info=True)

    # -- ticks ------------------------------------------------------------------------------

    def begin_tick(self) -> int:
        """The sequence number of a tick about to collect; clients joining from now on
        wait for the next one (this one will not count them)."""
        self.count_now()  # so the collect that follows counts every client joined so far
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def publish(self, frame: Frame) -> None:
        """Keep ``frame`` in the history and write it to every client able to take it."""
        self._history.append(frame)
        self._replay = None
        self._fresh = True
        self.latest = frame
        data = frame.frame
        seq = frame.seq
        max_skips = self.max_skips
        slow: list[Sink] = []
        failed: list[Sink] = []
        for seat in self._seats.values():
            if seat.since > seq:
                continue
            try:
                written = seat.sink.offer(data)  # one call per client: this loop is the tick
            except Exception:
                log.debug("hyperdash: write to a client failed", exc_info=True)
                failed.append(seat.sink)
                continue
            if written:
                if seat.skips:
                    seat.skips = 0
            else:
                seat.skips += 1
                if seat.skips >= max_skips:
                    slow.append(seat.sink)
        for sink in slow:
            self._evict(sink, CLOSE_TOO_SLOW, "too slow", "too_slow")
        for sink in failed:
            self._evict(sink, CLOSE_GOING_AWAY, "write failed", "write_error")

    # -- keep-alive -------------------------------------------------------------------------

    def keep_alive(self, interval: float | None, timeout: float | None) -> None:
        """Every ``interval`` seconds, one keep-alive round (:meth:`ping_round`) from one
        task on the running loop; ``timeout`` seconds later, each client pinged and still
        silent is closed with 1000 "ping timed out" (``timeout`` 0 or None: never).
        Idempotent; ``close_all()`` stops it.

        Tornado would run a task with two timers per connection, and read a pong from
        every client every round: at 10,000 clients and a 20 s interval that is about
        60 µs of Python per client and round, a quarter of what the ticks cost.
        """
        if self._pinger is not None or self.closed or not interval or interval <= 0:
            return
        wait = min(timeout or 0.0, interval)
        self._pinger = asyncio.get_running_loop().create_task(
            self._keep_alive(interval, wait), name="hyperdash-keepalive")

    async def _keep_alive(self, interval: float, timeout: float) -> None:
        await asyncio.sleep(interval)
        while True:
            self.ping_round()
            if timeout > 0:
                await asyncio.sleep(timeout)
                self.drop_unanswered()
            await asyncio.sleep(interval - timeout)

    def ping_round(self) -> int:
        """Ping each client that TCP cannot vouch for; each pinged now owes a pong.
        Returns how many were pinged.

        A client whose peer has acknowledged every byte of the ticks written since the
        last round (nothing left in Tornado's buffer or the kernel's send queue) has
        answered already, at the TCP level: it is not pinged. A peer that has gone away
        leaves the next tick unacknowledged, so it is pinged at the next round and
        closed unless it answers within the timeout: at most one interval later than
        with pings to all (a peer gone right after acknowledging a round's evidence).
        With no tick since the last round there is no such evidence: everyone is pinged.
        A peer whose kernel still acknowledges but whose process stopped reading is the
        slow-client rule's: its window fills, its ticks are skipped, it is closed with
        1008 after ``max_skips``.
        """
        fresh = self._fresh
        self._fresh = False
        pinged = 0
        failed: list[Sink] = []
        for seat in self._seats.values():
            sink = seat.sink
            try:
                if fresh and not sink.unsent() and not sink.unacked():
                    seat.awaiting_pong = False
                    continue
                seat.awaiting_pong = True
                pinged += 1
                sink.send(PING_FRAME)
            except Exception:
                log.debug("hyperdash: ping to a client failed", exc_info=True)
                failed.append(sink)
        for sink in failed:
            self._evict(sink, CLOSE_GOING_AWAY, "write failed", "write_error")
        return pinged

    def pong(self, sink: Sink) -> None:
        """``sink`` answered a ping."""
        seat = self._seats.get(sink)
        if seat is not None:
            seat.awaiting_pong = False

    def drop_unanswered(self) -> int:
        """Close every client that has not answered the last ping; returns how many."""
        silent = [seat.sink for seat in self._seats.values() if seat.awaiting_pong]
        for sink in silent:
            self._evict(sink, CLOSE_NORMAL, "ping timed out", "ping_timeout")
        return len(silent)

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down"
                  ) -> int:
        """Close every client and admit no more (server shutdown); returns how many."""
        self.closed = True
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        sinks = list(self._seats)
        for sink in sinks:
            self._evict(sink, code, reason, "shutdown")
        self.count_now()
        return len(sinks)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block with Python's cyclic garbage collector paused (process-wide).

    A tick allocates a few objects per series of the registry, all of them freed by
    reference counting when the tick ends. With the collector on, at 10,000 series those
    short-lived objects push it into full collections, and a full collection stops every
    thread, the event loop with its thousands of connections included, for 100 ms and
    more. Paused for the tick, the collector runs later, on its usual schedule. Nested
    and concurrent uses are counted; a collector the application had switched off stays
    off.
    """
    global _gc_pausers, _gc_resume
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        # (after gc_resume_stuck the collector stays on until every block has ended)
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_resume:
                gc.enable()


GC_PAUSE_LIMIT = 5.0
"""Seconds a tick may keep the garbage collector paused; a tick still running then (a
collector blocked on I/O, say) gets it back on, see :func:`gc_resume_stuck`."""


def gc_resume_stuck() -> bool:
    """Switch the collector back on while a :func:`gc_paused` block is still running
    (it stays on until every such block has ended). True if it was paused."""
    with _gc_lock:
        if _gc_pausers and _gc_resume and not gc.isenabled():
            gc.enable()
            log.warning("hyperdash: a tick has run for over %gs; garbage collection resumed "
                        "while it finishes", GC_PAUSE_LIMIT)
            return True
    return False


def next_tick(*, scheduled: float, interval: float, now: float) -> tuple[float, int]:
    """When the tick after the one ``scheduled`` runs, and how many slots are skipped.

    Ticks keep a fixed rate; a tick that overran the following slot does not make the
    missed ones run back to back: they are skipped and the schedule resumes on the grid.

    >>> next_tick(scheduled=10.0, interval=1.0, now=10.2)
    (11.0, 0)
    >>> next_tick(scheduled=10.0, interval=1.0, now=12.5)
    (13.0, 2)
    """
    following = scheduled + interval
    if now <= following:
        return following, 0
    missed = int((now - following) // interval) + 1
    return following + missed * interval, missed


SEQ_KEY = "seq"
"""The key each streamed message gains after the original's keys: the tick's sequence
number, rising by one per tick of one server (a failed tick leaves a gap). A replayed
message carries the seq it had live, so a client tells a replay from a live tick, and a
message it already has, by comparing seqs, never by timing."""


class Ticker:
    """Every ``interval``: one snapshot and one encode in a worker thread, then a publish."""

    def __init__(
        self,
        source: Source,
        fanout: FanOut,
        pool: Pool,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._fanout = fanout
        self._pool = pool
        self._interval = interval
        self._clock = clock
        instruments = source.server_instruments
        self._duration = instruments.tick_duration
        self._errors = instruments.tick_errors
        self._skipped = instruments.tick_skipped
        self.ticks = 0
        self.errors = 0
        self.skipped = 0
        self._next_skip_log = 0.0
        # For /healthz: failing (errors in a row) or stalled (no success for a while).
        self.consecutive_errors = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        """``time.monotonic()`` of the last tick that published."""

    def _build(self, seq: int) -> Frame:
        with gc_paused():
            at = self._clock()
            snapshot = self._source.snapshot()
            snapshot[SEQ_KEY] = seq
            payload = encode_snapshot(snapshot)
            light = encode_snapshot(light_snapshot(snapshot))
            return Frame(seq, payload, text_frame(payload), at, light)

    async def tick(self) -> Frame | None:
        """Run one tick now; a failure is logged and counted, never raised."""
        seq = self._fanout.begin_tick()
        started = time.perf_counter()
        # A tick stuck in a user's collector must not keep the GC paused for good.
        guard = asyncio.get_running_loop().call_later(GC_PAUSE_LIMIT, gc_resume_stuck)
        try:
            frame = await self._pool.run(self._build, seq)
        except Exception as exc:
            self.errors += 1
            self.consecutive_errors += 1
            self.last_error = type(exc).__name__
            self._errors.add(1)
            log.exception("hyperdash: tick %d failed; the next one runs as scheduled", seq)
            return None
        finally:
            guard.cancel()
        self._fanout.publish(frame)
        self.ticks += 1
        self.consecutive_errors = 0
        self.last_success = time.monotonic()
        self._duration.record(time.perf_counter() - started)
        return frame

    async def run(self) -> None:
        """Tick until cancelled."""
        loop = asyncio.get_running_loop()
        scheduled = loop.time()
        while True:
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.tick()
            scheduled, missed = next_tick(
                scheduled=scheduled, interval=self._interval, now=loop.time()
            )
            if missed:
                self._count_skipped(missed, loop.time())

    def _count_skipped(self, missed: int, now: float) -> None:
        self.skipped += missed
        self._skipped.add(missed)
        # A registry too slow for the interval overruns every tick: say so once a minute.
        if now >= self._next_skip_log:
            self._next_skip_log = now + 60.0
            log.warning(
                "hyperdash: a tick overran update_interval=%gs; %d tick(s) skipped so far "
                "(see hyperdash_tick_duration_seconds)", self._interval, self.skipped,
            )

    async def current_payload(self) -> bytes:
        """The last tick's JSON; before the first tick, a snapshot made now (not published)."""
        latest = self._fanout.latest
        if latest is not None:
            return latest.payload
        return await self._pool.run(self._encode_now)

    def _encode_now(self) -> bytes:
        return encode_snapshot(self._source.snapshot())
