"""The live stream: one snapshot per tick, encoded once, the same bytes to every client.

:class:`FanOut` owns the subscribers, the history ring and the slow-client rule; it is plain
synchronous code over the :class:`Sink` protocol, so tests drive it with fake clients.
:class:`Ticker` owns the schedule: it builds each frame in a worker thread and hands it to
the fan-out on the loop.

Per client and tick the fan-out does one thing: hand the shared, already framed bytes to the
client's socket buffer. No task, future or copy is made per client (see
:meth:`StreamHandler.send <hyperdash_otel.server.handlers.StreamHandler.send>`): at thousands
of connections the garbage collector, not the sockets, is what a per-client allocation costs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..validation import clean_text
from .pool import Pool

if TYPE_CHECKING:
    from ..dashboard import Dashboard
    from ..telemetry import Telemetry

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_SLOW",
    "FanOut",
    "Frame",
    "Sink",
    "Ticker",
    "encode_snapshot",
    "next_tick",
    "text_frame",
]

log = logging.getLogger("hyperdash_otel.server")

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


class Sink(Protocol):
    """What the fan-out needs of a connected client."""

    def unsent(self) -> int:
        """Bytes handed to this client's connection and not yet taken by the kernel."""

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` without waiting; may raise when the connection is gone or full."""

    def drop(self, code: int, reason: str) -> None:
        """Start closing the connection with this close code and reason."""


class _Seat:
    __slots__ = ("sink", "since", "skips")

    def __init__(self, sink: Sink, since: int) -> None:
        self.sink = sink
        self.since = since
        self.skips = 0


class FanOut:
    """Subscribers, the history ring and the rules for slow clients.

    * ``reserve()`` claims one of ``max_clients`` places before a WebSocket handshake (so the
      bound holds however many upgrades race), ``release()`` gives it back when the
      connection has gone.
    * ``subscribe()`` counts the client in ``hyperdash.websocket.connections`` and replays the
      history (oldest first). It then receives every tick that *starts* after it joined,
      so each live message's ``active_connections`` already includes it.
    * ``publish()`` writes a tick's frame to each client whose previous frame has left the
      process; a client still holding unsent bytes is skipped (it gets a newer frame
      later), and after ``max_skips`` consecutive skips it is closed with
      :data:`CLOSE_TOO_SLOW`.
    """

    def __init__(
        self,
        *,
        max_clients: int,
        history_size: int,
        max_skips: int,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.max_skips = max_skips
        self._reserved = 0
        self._seats: dict[Sink, _Seat] = {}
        self._history: deque[Frame] = deque(maxlen=history_size)
        self._history_bytes = 0
        self._next_seq = 0
        self.latest: Frame | None = None
        self.closed = False
        self._connections: Any = None
        self._disconnects: Any = None
        if telemetry is not None:
            self._connections = telemetry.instrument("hyperdash.websocket.connections")
            self._disconnects = telemetry.instrument("hyperdash.websocket.disconnects")

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
        return self._history_bytes

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, sink: Sink) -> None:
        if self.closed:  # finished its handshake while the server was stopping
            sink.drop(CLOSE_GOING_AWAY, "server shutting down")
            return
        if sink in self._seats:
            return
        if self._connections is not None:
            self._connections.add(1)
        self._seats[sink] = _Seat(sink, self._next_seq)
        try:
            for frame in self._history:
                sink.send(frame.frame)
        except Exception:  # a broken connection must not break the others
            log.debug("hyperdash: sending history failed", exc_info=True)
            self._evict(sink, CLOSE_GOING_AWAY, "write failed", "write_error")

    def unsubscribe(self, sink: Sink) -> bool:
        """Forget ``sink`` (it closed); True if it was subscribed."""
        if self._seats.pop(sink, None) is None:
            return False
        if self._connections is not None:
            self._connections.add(-1)
        return True

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
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def publish(self, frame: Frame) -> None:
        """Keep ``frame`` in the history and write it to every client able to take it."""
        if len(self._history) == self._history.maxlen:
            self._history_bytes -= len(self._history[0].frame)
        self._history.append(frame)
        self._history_bytes += len(frame.frame)
        self.latest = frame
        data = frame.frame
        seq = frame.seq
        max_skips = self.max_skips
        slow: list[Sink] = []
        failed: list[Sink] = []
        for seat in self._seats.values():
            if seat.since > seq:
                continue
            sink = seat.sink
            if sink.unsent():
                seat.skips += 1
                if seat.skips >= max_skips:
                    slow.append(sink)
                continue
            seat.skips = 0
            try:
                sink.send(data)
            except Exception:
                log.debug("hyperdash: write to a client failed", exc_info=True)
                failed.append(sink)
        for sink in slow:
            self._evict(sink, CLOSE_TOO_SLOW, "too slow", "too_slow")
        for sink in failed:
            self._evict(sink, CLOSE_GOING_AWAY, "write failed", "write_error")

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down"
                  ) -> int:
        """Close every client and admit no more (server shutdown); returns how many."""
        self.closed = True
        sinks = list(self._seats)
        for sink in sinks:
            self._evict(sink, code, reason, "shutdown")
        return len(sinks)


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


class Ticker:
    """Every ``interval``: one snapshot and one encode in a worker thread, then a publish."""

    def __init__(
        self,
        dashboard: Dashboard,
        fanout: FanOut,
        pool: Pool,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dashboard = dashboard
        self._fanout = fanout
        self._pool = pool
        self._interval = interval
        self._clock = clock
        tel = dashboard.telemetry
        self._duration = tel.instrument("hyperdash.tick.duration")
        self._errors = tel.instrument("hyperdash.tick.errors")
        self._skipped = tel.instrument("hyperdash.tick.skipped")
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
        at = self._clock()
        payload = encode_snapshot(self._dashboard.snapshot())
        return Frame(seq, payload, text_frame(payload), at)

    async def tick(self) -> Frame | None:
        """Run one tick now; a failure is logged and counted, never raised."""
        seq = self._fanout.begin_tick()
        started = time.perf_counter()
        try:
            frame = await self._pool.run(self._build, seq)
        except Exception as exc:
            self.errors += 1
            self.consecutive_errors += 1
            self.last_error = type(exc).__name__
            self._errors.add(1)
            log.exception("hyperdash: tick %d failed; the next one runs as scheduled", seq)
            return None
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
        return encode_snapshot(self._dashboard.snapshot())
