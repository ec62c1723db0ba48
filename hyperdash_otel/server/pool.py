"""Off-loop work: the tick's collect and build, /metrics encoding, run in worker threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Pool"]

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
