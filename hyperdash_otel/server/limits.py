"""What one client may take: connections, requests, failed logins; and how often we complain.

Plain synchronous bookkeeping with time passed in (``now=``), so tests drive it without a
server. :mod:`~hyperdash_otel.server.listener` applies the connection rules at accept time,
``_Common.prepare`` in :mod:`~hyperdash_otel.server.handlers` the request rules.

* :func:`connection_caps` derives the default connection caps from ``RLIMIT_NOFILE``.
* :class:`ConnectionTable` admits, tracks and (when full) evicts HTTP connections.
* :class:`RateLimiter` is a token bucket per client address, with a bounded address table.
* :class:`RequestLimits` puts two of them together: every request drains one bucket, a
  failed authentication drains a second, stricter one that blocks the address when empty.
* :class:`LogThrottle` lets a recurring condition reach the log once per interval.
"""

from __future__ import annotations

import math
import resource
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "FD_RESERVE",
    "MAX_CONNECTIONS_CEILING",
    "ConnectionTable",
    "LogThrottle",
    "RateLimiter",
    "RequestLimits",
    "connection_caps",
    "nofile_limit",
]

C = TypeVar("C", bound=Hashable)

FD_RESERVE = 64
"""Descriptors set aside for everything that is not a client: listeners, the event loop's
own, the worker threads, log files, psutil's reads of /proc, the embedding service."""
MAX_CONNECTIONS_CEILING = 4096
"""The derived ``max_connections`` never exceeds this, however high the descriptor limit:
a dashboard has no use for more, and each connection costs memory."""
MIN_CONNECTIONS = 16
UNLIMITED_NOFILE = 1 << 20
"""What ``RLIM_INFINITY`` counts as."""


def nofile_limit() -> int:
    """The process's soft ``RLIMIT_NOFILE``: how many descriptors it may have open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_NOFILE if soft == resource.RLIM_INFINITY else int(soft)


def connection_caps(*, nofile: int, max_clients: int) -> tuple[int, int]:
    """Default ``(max_connections, max_connections_per_ip)`` for a descriptor limit.

    Of the descriptors left after :data:`FD_RESERVE` and one per WebSocket client
    (``max_clients``, counted separately once upgraded), HTTP connections get half: the rest
    stays with the service the dashboard is embedded in. One address gets a quarter of that.

    >>> connection_caps(nofile=1024, max_clients=100)
    (430, 107)
    >>> connection_caps(nofile=256, max_clients=100)
    (46, 11)
    """
    spare = nofile - FD_RESERVE - max_clients
    total = max(MIN_CONNECTIONS, min(MAX_CONNECTIONS_CEILING, spare // 2))
    return total, max(4, total // 4)


class ConnectionTable(Generic[C]):
    """The HTTP connections a server holds, by client address, with two caps.

    A connection is *idle* from the moment it is accepted (or has finished a response)
    until its next request's headers are complete, and *busy* while a request is in hand.
    :meth:`admit` refuses a connection whose address already holds ``max_per_address``.
    When all ``max_total`` places are taken, it evicts the connection that has been idle
    longest (its owner closes it) rather than refuse the newcomer: a flood of connections
    that never send a request cannot lock out a health probe, it only keeps replacing its
    own idle connections. A request in progress is never evicted.
    """

    def __init__(self, *, max_total: int, max_per_address: int) -> None:
        if max_total < 1 or max_per_address < 1:
            raise ValueError("connection caps must be >= 1")
        self.max_total = max_total
        self.configured_total = max_total
        """``max_total`` as configured; :meth:`lower` may hold it lower for a while."""
        self.max_per_address = max_per_address
        self._address: dict[C, str] = {}
        self._per_address: dict[str, int] = {}
        self._idle: OrderedDict[C, None] = OrderedDict()
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._address)

    def __contains__(self, conn: object) -> bool:
        return conn in self._address

    def count(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def admit(self, conn: C, address: str) -> tuple[bool, C | None]:
        """Whether ``conn`` from ``address`` may stay, and a connection to close for it.

        On ``(True, victim)`` the victim has already been forgotten here; the caller closes
        it. On ``(False, None)`` the caller closes ``conn``.
        """
        if self._per_address.get(address, 0) >= self.max_per_address:
            self.refused += 1
            return False, None
        victim: C | None = None
        if len(self._address) >= self.max_total:
            if not self._idle:
                self.refused += 1
                return False, None
            victim = next(iter(self._idle))
            self.release(victim)
            self.evicted += 1
        self._address[conn] = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._idle[conn] = None
        return True, victim

    def lower(self, to: int) -> list[C]:
        """Hold ``max_total`` at ``to`` (at least :data:`MIN_CONNECTIONS`, at most as
        configured) and return the longest-idle connections to close to get there; busy
        ones are never taken. :meth:`restore` undoes it."""
        self.max_total = max(min(MIN_CONNECTIONS, self.configured_total),
                             min(to, self.configured_total))
        victims: list[C] = []
        while len(self._address) > self.max_total and self._idle:
            victim = next(iter(self._idle))
            self.release(victim)
            self.evicted += 1
            victims.append(victim)
        return victims

    def restore(self) -> None:
        self.max_total = self.configured_total

    def idle(self, conn: C) -> None:
        """``conn`` waits for its next request (newest idle: evicted last)."""
        if conn in self._address:
            self._idle[conn] = None
            self._idle.move_to_end(conn)

    def busy(self, conn: C) -> None:
        """``conn`` has a request in hand: not evictable until it is idle again."""
        self._idle.pop(conn, None)

    def release(self, conn: C) -> None:
        """Forget ``conn`` (closed); a second call does nothing."""
        address = self._address.pop(conn, None)
        if address is None:
            return
        self._idle.pop(conn, None)
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate`` per second.

    At most ``max_keys`` keys are tracked; past that the least recently seen is forgotten
    (it starts again with a full bucket, the same as a key never seen). :meth:`wait` also
    drops a key whose bucket has refilled, so a table only ever charged on failures holds
    only recent offenders.

    >>> bucket = RateLimiter(rate=1.0, burst=2, max_keys=10)
    >>> [bucket.take("a", now=0.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> bucket.take("a", now=1.0)
    0.0
    """

    def __init__(self, *, rate: float, burst: int, max_keys: int) -> None:
        if not rate > 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        return bucket

    def wait(self, key: str, *, now: float) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now); takes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.updated) * self.rate)
        if tokens >= 1.0:
            if tokens >= self.burst:  # full again: nothing to remember
                del self._buckets[key]
            return 0.0
        return (1.0 - tokens) / self.rate

    def take(self, key: str, *, now: float) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there is
        (and nothing is taken)."""
        bucket = self._bucket(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why a request was refused, and when to come back."""

    reason: str
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (``Retry-After`` takes no fractions)."""
        return str(max(1, math.ceil(self.retry_after)))


class RequestLimits:
    """Per-address request rate and failed-authentication rate, for the handlers.

    ``rate`` 0 switches the request bucket off, ``auth_failures_per_minute`` 0 the
    failure bucket. :meth:`check` runs before anything else in a request;
    :meth:`failed_auth` after a request was refused for its credentials.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        auth_failures_per_minute: float,
        auth_failure_burst: int,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.requests = (
            RateLimiter(rate=rate, burst=burst, max_keys=max_addresses) if rate > 0 else None
        )
        self.failures = (
            RateLimiter(rate=auth_failures_per_minute / 60.0, burst=auth_failure_burst,
                        max_keys=max_addresses)
            if auth_failures_per_minute > 0 else None
        )
        self.refused = 0

    def check(self, address: str) -> Refusal | None:
        """None if a request from ``address`` may proceed (and count it), else why not.

        An address that has used up its failed authentications is refused whatever it
        presents, the right token included, until the failure bucket refills: otherwise
        guessing would go on at the request rate.
        """
        now = self._clock()
        if self.failures is not None:
            wait = self.failures.wait(address, now=now)
            if wait > 0:
                self.refused += 1
                return Refusal(reason="too many failed authentications", retry_after=wait)
        if self.requests is not None:
            wait = self.requests.take(address, now=now)
            if wait > 0:
                self.refused += 1
                return Refusal(reason="too many requests", retry_after=wait)
        return None

    def allows(self, address: str) -> bool:
        """Whether :meth:`check` would let a request from ``address`` through now. Counts
        and takes nothing: for a caller that may still hand the request to :meth:`check`
        elsewhere (``/ws``'s quick upgrade)."""
        now = self._clock()
        return not (
            (self.failures is not None and self.failures.wait(address, now=now) > 0)
            or (self.requests is not None and self.requests.wait(address, now=now) > 0)
        )

    def failed_auth(self, address: str) -> None:
        if self.failures is not None:
            self.failures.take(address, now=self._clock())


class LogThrottle:
    """Lets a recurring condition through to the log at most once per ``interval`` seconds.

    >>> throttle = LogThrottle(10.0)
    >>> [throttle.due("emfile", now=t) for t in (0.0, 1.0, 2.0, 10.5)]
    [0, None, None, 2]

    :meth:`due` returns None while quiet, else how many occurrences were held back since
    the last line (for a "(and N more)").
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def due(self, key: str, *, now: float) -> int | None:
        if now < self._next.get(key, -math.inf):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)
