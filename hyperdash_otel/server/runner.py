"""Lifecycle: bind, tick, serve, and take everything down again.

:class:`Runner` serves any :class:`~hyperdash_otel.source.Source`; it is what
:class:`~hyperdash_otel.Dashboard` delegates ``start``, ``start_in_thread``, ``stop`` and
``aclose`` to. One serving session owns a listening
socket, an HTTP server (with its connection caps), a fan-out, a ticker task, a two-thread
pool for the tick and a one-thread pool for ``/metrics``; stopping closes the clients with
1001, the listener, the pools' threads and every connection, so a new server can bind the
same port at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado.iostream import IOStream

from . import logs
from .app import PING_INTERVAL, PING_TIMEOUT, Assets, DashboardApp, make_app, warn_if_exposed
from .handlers import ServerContext
from .limits import (
    FD_RESERVE,
    ConnectionTable,
    RequestLimits,
    connection_caps,
    nofile_limit,
)
from .listener import GuardedHTTPServer
from .pool import Coalescing, Pool
from .quick import QuickUpgrade
from .security import BasicAuth, HostPolicy, OriginPolicy
from .stream import CLOSE_GOING_AWAY, FanOut, Ticker

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import Config
    from ..source import Source

__all__ = ["CLOSE_GRACE", "Runner"]

log = logging.getLogger("hyperdash_otel.server")

CLOSE_GRACE = 1.0
"""Seconds clients get to answer the close handshake at shutdown before being cut off."""
STOP_TIMEOUT = 10.0
"""Longest ``stop()`` from another thread waits for the server to finish shutting down."""
MAX_BODY_SIZE = 64 * 1024
"""Largest request body accepted (the API takes none)."""


def connection_table(config: Config, *, nofile: int | None = None) -> ConnectionTable[IOStream]:
    """The configured caps, or those derived from ``RLIMIT_NOFILE`` (see
    :func:`~hyperdash_otel.server.limits.connection_caps`)."""
    limit = nofile_limit() if nofile is None else nofile
    total, per_ip = connection_caps(nofile=limit, max_clients=config.max_clients)
    if config.max_connections is not None:
        total = config.max_connections
        per_ip = max(1, total // 4)
    if config.max_connections_per_ip is not None:
        per_ip = config.max_connections_per_ip
    needed = total + config.max_clients + FD_RESERVE
    if needed > limit:
        log.warning(
            "hyperdash: max_connections=%d + max_clients=%d need about %d descriptors, "
            "RLIMIT_NOFILE is %d: raise it (ulimit -n) or lower them", total,
            config.max_clients, needed, limit,
        )
    return ConnectionTable(max_total=total, max_per_address=min(per_ip, total))


def request_limits(config: Config) -> RequestLimits:
    return RequestLimits(
        rate=config.rate_limit, burst=config.rate_limit_burst,
        auth_failures_per_minute=config.auth_failures_per_minute,
        auth_failure_burst=config.auth_failure_burst,
        max_addresses=config.rate_limit_max_addresses,
    )


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_certfile is None or config.tls_keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_certfile, config.tls_keyfile)
    return context


def bind_listeners(host: str, port: int, *, backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, sharing one port.

    Like Tornado's ``bind_sockets`` (SO_REUSEADDR, IPv6 sockets IPv6-only, port 0 chosen
    once for all families), except that a failure closes what was already opened instead
    of leaving the sockets to the garbage collector.
    """
    infos = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    bound_port: int | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if address[1] == 0 and bound_port is not None:
                address = (address[0], bound_port, *address[2:])
            sock.setblocking(False)
            try:
                sock.bind(address)
            except OSError as exc:
                # "localhost" may resolve to ::1 on a host with IPv6 switched off.
                if exc.errno == errno.EADDRNOTAVAIL and host == "localhost" and len(infos) > 1:
                    sockets.pop().close()
                    continue
                raise
            bound_port = sock.getsockname()[1]
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(config: Config) -> list[socket.socket]:
    """The configured listeners, or an OSError naming host and port."""
    try:
        sockets = bind_listeners(config.host, config.port)
    except OSError as exc:
        raise OSError(
            exc.errno, f"hyperdash: cannot listen on {config.host}:{config.port}: "
            f"{exc.strerror or exc}"
        ) from exc
    if not sockets:
        raise OSError(f"hyperdash: cannot listen on {config.host}:{config.port}: no address")
    return sockets


@dataclass
class _Session:
    """Everything one start() created, taken down by one shutdown."""

    loop: asyncio.AbstractEventLoop
    thread_id: int
    server: GuardedHTTPServer
    ctx: ServerContext
    ticker_task: asyncio.Task[None]
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    done: threading.Event = field(default_factory=threading.Event)
    closing: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None


class Runner:
    """Serves one :class:`~hyperdash_otel.source.Source`; see
    :class:`~hyperdash_otel.Dashboard` for the public face.

    ``ping_interval`` and ``ping_timeout`` (seconds) time the keep-alive rounds
    (:meth:`FanOut.keep_alive <hyperdash_otel.server.stream.FanOut.keep_alive>`);
    ``assets`` is where the page and its scripts are (default: found next to the package).
    """

    def __init__(
        self,
        source: Source,
        *,
        assets: Assets | None = None,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
    ) -> None:
        self.source = source
        self._assets = assets
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._starting = False
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- state, for tests and /healthz ------------------------------------------------------

    @property
    def serving(self) -> bool:
        return self._session is not None

    @property
    def context(self) -> ServerContext | None:
        """What the handlers share (fan-out, ticker, pools) while serving, else None."""
        session = self._session
        return None if session is None else session.ctx

    @property
    def http_server(self) -> GuardedHTTPServer | None:
        """The HTTP server while serving (its connection table, acceptors and quick
        upgrade), else None."""
        session = self._session
        return None if session is None else session.server

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop serving now, else None (to run a coroutine on it from a test or
        a tool: ``asyncio.run_coroutine_threadsafe(coro, runner.loop)``)."""
        session = self._session
        return None if session is None else session.loop

    # -- starting ---------------------------------------------------------------------------

    async def _open(self) -> _Session:
        with self._lock:
            if self._session is not None or self._starting:
                raise RuntimeError("this dashboard is already serving")
            self._starting = True
        try:
            return self._open_now()
        finally:
            with self._lock:
                self._starting = False

    def _open_now(self) -> _Session:
        source = self.source
        config = source.config
        instruments = source.server_instruments
        origins = OriginPolicy(config.allowed_origins,
                               hosts=HostPolicy(config.allowed_hosts, bind=config.host))
        ssl_context = _ssl_context(config)
        sockets = _bind(config)
        try:
            assets = self._assets or Assets.locate()
            fanout = FanOut(
                max_clients=config.max_clients,
                history_size=config.history_size,
                max_skips=config.slow_client_max_skips,
                instruments=instruments,
            )
            port = sockets[0].getsockname()[1]
            pool = Pool(workers=2, name=f"hyperdash-{port}")
            metrics_pool = Pool(workers=1, name=f"hyperdash-metrics-{port}")
            ticker = Ticker(source, fanout, pool, interval=config.update_interval)
            connections = connection_table(config)
            ctx = ServerContext(
                source=source, fanout=fanout, ticker=ticker, pool=pool,
                origins=origins, page_path=assets.page, limits=request_limits(config),
                expositions=Coalescing(metrics_pool), http_connections=connections.__len__,
                basic=BasicAuth.from_entries(config.basic_auth),
            )
            app = make_app(ctx, assets, ping_interval=self.ping_interval,
                           ping_timeout=self.ping_timeout)
            server = GuardedHTTPServer(
                app, connections=connections, header_timeout=config.header_timeout,
                ssl_options=ssl_context, max_body_size=MAX_BODY_SIZE,
                quick=QuickUpgrade(app) if isinstance(app, DashboardApp) else None,
            )
            server.add_sockets(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        logs.install(ctx, (config.auth_token, config.metrics_token))
        session = _Session(
            loop=asyncio.get_running_loop(),
            thread_id=threading.get_ident(),
            server=server,
            ctx=ctx,
            ticker_task=asyncio.create_task(ticker.run(), name="hyperdash-ticker"),
        )
        self._session = session
        self.port = port
        scheme = "https" if ssl_context else "http"
        log.info("hyperdash dashboard on %s://%s:%d/", scheme, config.host, port)
        warn_if_exposed(ctx, port)
        return session

    async def start(self) -> None:
        """Listen and tick in the background of the running loop; return once listening."""
        session = await self._open()
        session.watcher = asyncio.create_task(self._watch(session), name="hyperdash-watch")

    async def _watch(self, session: _Session) -> None:
        """Lets a bare ``stop()`` take down a server started with :meth:`start`."""
        await session.stop_requested.wait()
        await self._shutdown_once(session)

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Listen, then serve until :meth:`stop` or cancellation; always clean up."""
        session = await self._open()
        try:
            if ready is not None:
                ready()
            await session.stop_requested.wait()
        finally:
            await self._shutdown_once(session)

    def start_in_thread(self) -> None:
        """Serve from a new thread with its own loop; return once listening (or raise)."""
        listening = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await self.serve(ready=listening.set)
            except BaseException as exc:
                if not listening.is_set():
                    failure.append(exc)
                    listening.set()
                    return
                raise

        thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="hyperdash-server", daemon=True
        )
        thread.start()
        listening.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving; idempotent and callable from any thread.

        From another thread it returns once the server is down. On the serving loop's own
        thread it only signals (it cannot wait for the loop it is blocking): ``serve()``
        then returns, or ``await aclose()`` waits.
        """
        session = self._session
        if session is not None:
            if threading.get_ident() == session.thread_id:
                session.stop_requested.set()
            elif session.loop.is_closed():
                # Its loop ended without letting the server shut down: nothing can run the
                # cleanup any more; forget the session so the dashboard can start again.
                self._session = None
                self.port = None
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    session.loop.call_soon_threadsafe(session.stop_requested.set)
                if not session.done.wait(STOP_TIMEOUT):
                    log.warning("hyperdash: server did not stop within %.0fs", STOP_TIMEOUT)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
            if not thread.is_alive():
                self._thread = None

    async def aclose(self) -> None:
        """Stop serving and wait until everything is closed (call on the serving loop)."""
        session = self._session
        if session is not None:
            await self._shutdown_once(session)

    async def _shutdown_once(self, session: _Session) -> None:
        if session.closing is None:
            session.closing = asyncio.ensure_future(self._shutdown(session))
        # Shielded: a caller cancelled while waiting must not leave the shutdown half done.
        await asyncio.shield(session.closing)

    async def _shutdown(self, session: _Session) -> None:
        session.stop_requested.set()
        ctx = session.ctx
        try:
            session.server.stop()  # the listener closes: no new connections
            session.ticker_task.cancel()
            await asyncio.gather(session.ticker_task, return_exceptions=True)
            ctx.fanout.close_all(CLOSE_GOING_AWAY, "server shutting down")
            await self._wait_for_streams(ctx)
            await ctx.pool.aclose()
            if ctx.expositions is not None:
                await ctx.expositions.pool.aclose()
            await session.server.close_all_connections()
            watcher = session.watcher
            if watcher is not None and watcher is not asyncio.current_task():
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        finally:
            self._session = None
            self.port = None
            session.done.set()
            log.info("hyperdash dashboard stopped")
            logs.uninstall(ctx)

    async def _wait_for_streams(self, ctx: ServerContext) -> None:
        """Give clients :data:`CLOSE_GRACE` to complete the close handshake, then cut the
        rest and wait for their tasks, so no socket outlives the server."""
        upgraded = ctx.upgraded  # the connections /ws upgraded itself: no task each
        if not await upgraded.wait_closed(CLOSE_GRACE):
            upgraded.abort_all()
        tasks: set[asyncio.Task[Any]] = set(ctx.tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        if pending:
            # Tornado aborts the socket of a WebSocket whose task is cancelled.
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CLOSE_GRACE)
