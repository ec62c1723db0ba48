"""Off-loop work in worker threads: the tick's collect and build on one pool, ``/metrics``
encoding on another, so a crowd of scrapers never delays a tick."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Busy", "Coalescing", "Pool"]

T = TypeVar("T")


class Pool:
    """A small thread pool owned by one server, drained and joined when it stops.

    The loop's default executor would outlive a server started on someone else's loop (its
    threads stay until that loop closes); this one leaves no thread behind after
    :meth:`aclose`.
    """

    def __init__(self, *, workers: int = 2, name: str = "hyperdash") -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name
        )
        self._pending: set[concurrent.futures.Future[Any]] = set()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        future = self._executor.submit(fn, *args)
        self._pending.add(future)
        # set.discard from the worker thread is atomic under the GIL.
        future.add_done_callback(self._pending.discard)
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        """Let work already submitted finish (without blocking the loop), then join."""
        self._executor.shutdown(wait=False)
        pending = [asyncio.wrap_future(f) for f in list(self._pending) if not f.done()]
        if pending:
            await asyncio.wait(pending)
            for f in pending:
                if not f.cancelled():
                    f.exception()  # retrieved: a failed tick was already logged by its caller
        # Every worker is idle now, so this join returns at once.
        self._executor.shutdown(wait=True)


K = TypeVar("K")


class _Queued(Generic[T]):
    __slots__ = ("future", "started")

    def __init__(self) -> None:
        self.future: asyncio.Future[T] | None = None
        self.started = False


class Coalescing(Generic[K, T]):
    """Runs calls on its own :class:`Pool`, sharing one queued call among same-key callers.

    A caller whose key already has a call *waiting for a thread* joins it: its result is
    computed after the caller arrived, so it is as fresh as a call of its own. A call that
    has started may predate the caller, so a caller arriving then queues a new one. Per key
    at most one call runs and one waits, however many callers there are; at most
    ``max_keys`` keys may wait at once (:meth:`run` raises :class:`Busy` past that).
    """

    def __init__(self, pool: Pool, *, max_keys: int = 8) -> None:
        self.pool = pool
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._waiting: dict[K, _Queued[T]] = {}
        self.calls = 0

    async def run(self, key: K, fn: Callable[[], T]) -> T:
        with self._lock:
            queued = self._waiting.get(key)
            if queued is None or queued.started:
                if len(self._waiting) >= self.max_keys:
                    raise Busy(f"{len(self._waiting)} different calls already queued")
                queued = _Queued()
                self._waiting[key] = queued
                queued.future = asyncio.ensure_future(self.pool.run(self._call, key, queued, fn))
        assert queued.future is not None
        # Shielded: one caller giving up must not cancel the call the others wait for.
        return await asyncio.shield(queued.future)

    def _call(self, key: K, queued: _Queued[T], fn: Callable[[], T]) -> T:
        with self._lock:
            queued.started = True
            if self._waiting.get(key) is queued:
                del self._waiting[key]
        self.calls += 1
        return fn()


class Busy(RuntimeError):
    """Too many different calls are queued; try again shortly."""
