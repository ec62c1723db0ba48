"""What the server serves: a snapshot source, and the server's own instruments.

The server (``hyperdash_otel.server``: the runner, the handlers, the ticker) depends on
:class:`Source` only, never on :class:`~hyperdash_otel.Dashboard`, so any object with these
few methods can be served. The single-process :class:`~hyperdash_otel.Dashboard` is one
implementation; a fleet view reading Prometheus would be another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.metrics import Counter, Histogram, UpDownCounter

if TYPE_CHECKING:
    from .config import Config

__all__ = ["AmbiguousJobError", "ServerInstruments", "Source"]


class AmbiguousJobError(LookupError):
    """:meth:`Source.job` without an instance matched jobs on several instances (the
    server answers 409 with this message)."""


@dataclass(frozen=True)
class ServerInstruments:
    """The server's own OpenTelemetry instruments (exported beside the source's series)."""

    websocket_connections: UpDownCounter
    """``hyperdash.websocket.connections``: clients subscribed to the stream now."""
    websocket_disconnects: Counter
    """``hyperdash.websocket.disconnects``: clients the server closed, by ``reason``."""
    websocket_rejected: Counter
    """``hyperdash.websocket.rejected``: upgrades refused, by ``reason``."""
    tick_duration: Histogram
    """``hyperdash.tick.duration``: seconds one tick took (collect, build, encode, publish)."""
    tick_errors: Counter
    """``hyperdash.tick.errors``: ticks that failed."""
    tick_skipped: Counter
    """``hyperdash.tick.skipped``: ticks skipped because the previous one overran."""


class Source(Protocol):
    """A snapshot source: what the server reads on each tick and each API request.

    Every method is called from a worker thread or the event loop, possibly at once; an
    implementation is thread-safe.
    """

    @property
    def config(self) -> Config:
        """The server's settings (host, port, limits, tokens, ``update_interval``...)."""

    @property
    def server_instruments(self) -> ServerInstruments:
        """Where the server records its own connections and ticks."""

    def snapshot(self) -> dict[str, Any]:
        """The Metrics JSON of this moment, as a dict in the original's key order."""

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Recent jobs, newest first (``/api/jobs``); ValueError for a bad filter."""

    def job(self, job_id: str, instance: str | None = None) -> dict[str, Any] | None:
        """One job by id (``/api/jobs/{id}?instance=``), or None; a source over several
        instances raises :class:`AmbiguousJobError` when ``instance`` is None and several
        have that id (a single instance ignores ``instance``)."""

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The ``/metrics`` body for an ``Accept`` header, and its content type."""
