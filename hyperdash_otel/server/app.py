"""The composition root: where the page's files are, the routing table, the Application."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import tornado.web
from tornado import httputil
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.routing import Rule
from tornado.web import GZipContentEncoding

from . import _tornado_fast, logs
from .handlers import (
    MAX_INCOMING_MESSAGE,
    HealthHandler,
    JobHandler,
    JobsHandler,
    MetricsApiHandler,
    MisdirectedHandler,
    NotFoundHandler,
    PageHandler,
    PrometheusHandler,
    ServerContext,
    StaticFast,
    StaticHandler,
    StreamHandler,
)
from .security import is_loopback_host
from .static import HeadBlocks, StaticFiles

if TYPE_CHECKING:
    from tornado.web import _HandlerDelegate

__all__ = ["HOSTS_REMEMBERED", "PING_INTERVAL", "PING_TIMEOUT", "Assets", "CompressDynamic",
           "DashboardApp", "make_app", "routes", "static_first", "warn_if_exposed"]

log = logging.getLogger("hyperdash_otel.server")

PING_INTERVAL = 20.0
"""Seconds between WebSocket pings; a peer that misses the pong for as long is closed."""
PING_TIMEOUT = 20.0

_PACKAGE_WEB = Path(__file__).resolve().parent.parent / "web"
_CHECKOUT_WEB = Path(__file__).resolve().parent.parent.parent / "web"


@dataclass(frozen=True)
class Assets:
    """Where the page, its static files and Chart.js are.

    An installed wheel carries them inside the package (``hyperdash_otel/web``, Chart.js
    in ``static/vendor``); a checkout has them in ``web/`` at the repository root, with
    Chart.js where ``npm ci`` put it. The package directory wins when both exist.
    """

    templates: Path
    static: Path
    chart_js: Path

    @classmethod
    def locate(cls, package_web: Path = _PACKAGE_WEB, checkout_web: Path = _CHECKOUT_WEB
               ) -> Assets:
        if package_web.is_dir():
            static = package_web / "static"
            return cls(package_web / "templates", static, static / "vendor" / "chart.umd.js")
        return cls(
            checkout_web / "templates",
            checkout_web / "static",
            checkout_web / "node_modules" / "chart.js" / "dist" / "chart.umd.js",
        )

    @property
    def page(self) -> Path:
        return self.templates / "index.html"


def routes(ctx: ServerContext, assets: Assets) -> list[tuple[str, type, dict[str, Any]]]:
    """The routing table: every endpoint the server answers."""
    c = {"ctx": ctx}
    return [
        (r"/", PageHandler, c),
        (r"/api/metrics", MetricsApiHandler, c),
        (r"/api/jobs", JobsHandler, c),
        (r"/api/jobs/([^/]+)", JobHandler, c),
        (r"/metrics", PrometheusHandler, c),
        (r"/healthz", HealthHandler, c),
        (r"/ws", StreamHandler, c),
        (r"/static/vendor/(chart\.umd\.js)", StaticHandler,
         {"ctx": ctx, "files": StaticFiles(str(assets.chart_js.parent))}),
        (r"/static/(.*)", StaticHandler, {"ctx": ctx, "files": StaticFiles(str(assets.static))}),
    ]


class CompressDynamic(GZipContentEncoding):
    """Tornado's ``compress_response`` (gzip when the client accepts it), except for the
    static files: they carry a gzip made once (:mod:`.static`), and a byte range or an
    identity body of theirs must not be gzipped on the way out."""

    def __init__(self, request: HTTPServerRequest) -> None:
        super().__init__(request)
        self._own = request.path.startswith("/static/")

    def transform_first_chunk(self, status_code: int, headers: HTTPHeaders, chunk: bytes,
                              finishing: bool) -> tuple[int, HTTPHeaders, bytes]:
        if self._own:
            return status_code, headers, chunk
        return super().transform_first_chunk(status_code, headers, chunk, finishing)

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        if self._own:
            return chunk
        return super().transform_chunk(chunk, finishing)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log line (see :func:`.logs.log_request`: no token, one line, refusals at
    INFO and rate-limited)."""
    logs.log_request(handler)


HOSTS_REMEMBERED = 256
"""``Host`` values whose allowlist answer :class:`DashboardApp` keeps (a bound, since
any client can send any value)."""


class DashboardApp(tornado.web.Application):
    """Tornado's Application with the Host allowlist in front of the routing table.

    The check runs when the request's headers arrive, before any handler: every path and
    method, ``/ws`` before its upgrade, credentials or not.
    """

    def __init__(self, ctx: ServerContext, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ctx = ctx
        self.logs = logs.ServerLogs()
        self._hosts_seen: dict[str | None, bool] = {}
        """The allowlist's answer per ``Host`` value (the policy never changes while the
        server runs); at most :data:`HOSTS_REMEMBERED`, forgotten all at once when full."""
        # Host-specific routes (add_handlers) would come before the table: no shortcut.
        self._static_rules = (static_first(self.wildcard_router.rules)
                              if len(self.default_router.rules) == 1 else None)
        """The static files' routes when they may be tried first (see
        :func:`static_first`), else None."""
        self._static_heads = HeadBlocks() if _tornado_fast.ENABLED else None
        """The static files' pre-built response heads (``HYPERDASH_FAST_PATH=0``: none,
        every head formatted by Tornado's ``write_headers``)."""

    def host_allowed(self, host: str | None) -> bool:
        """The Host allowlist's answer for this ``Host`` value (None: no header)."""
        allowed = self._hosts_seen.get(host)
        if allowed is None:
            # Parsing the value costs more than the rest of this check, on every request
            # and every WebSocket upgrade: a connect storm sends the same few values.
            allowed = self.ctx.origins.hosts.allows(host)
            if len(self._hosts_seen) >= HOSTS_REMEMBERED:
                self._hosts_seen.clear()
            self._hosts_seen[host] = allowed
        return allowed

    # Tornado's router takes any message delegate (Application types it narrower).
    def find_handler(self, request: HTTPServerRequest, **kwargs: Any  # type: ignore[override]
                     ) -> httputil.HTTPMessageDelegate:
        if not self.host_allowed(request.headers.get("Host")):
            return self.get_handler_delegate(request, MisdirectedHandler, {"ctx": self.ctx})
        found: _HandlerDelegate | None = None
        rules = self._static_rules
        if rules is not None and request.path.startswith("/static/"):
            # What RuleRouter.find_handler does, from the static rules on: every route
            # before them was ruled out for this prefix once, when the server started.
            for rule in rules:
                params = rule.matcher.match(request)
                if params is None:
                    continue
                if rule.target_kwargs:
                    params["target_kwargs"] = rule.target_kwargs
                delegate = self.wildcard_router.get_target_delegate(
                    rule.target, request, **params)
                if delegate is not None:
                    found = cast("_HandlerDelegate", delegate)
                    break
        if found is None:
            found = super().find_handler(request, **kwargs)
        if found.handler_class is StaticHandler:
            # A cached file's 200/206/304 without a RequestHandler; the rest goes on to it.
            return StaticFast(found, found.handler_kwargs["files"], self._static_heads)
        return found


_LITERAL_FIRST_SEGMENT = re.compile(r"/([A-Za-z0-9_-]*)(?:/|\$)")


def static_first(rules: list[Rule]) -> list[Rule] | None:
    """The routes of the static files, when a path under ``/static/`` may go to them
    without trying the routes before them; None otherwise.

    Each request tried the seven routes before them first (a regex each: the page, the
    API, ``/metrics``, ``/healthz``, ``/ws``). They may be skipped when every one of them
    begins with a literal first path segment other than ``static`` (``/api/...``,
    ``/ws$``) and has no alternative (``|``): none of them can match a path under
    ``/static/``. A route added later that
    is not of that form turns the shortcut off, never the other way round.
    """
    first = next((i for i, rule in enumerate(rules) if rule.target is StaticHandler), None)
    if first is None:
        return None
    for rule in rules[:first]:
        pattern = getattr(getattr(rule.matcher, "regex", None), "pattern", None)
        if not isinstance(pattern, str) or "|" in pattern:
            return None
        head = _LITERAL_FIRST_SEGMENT.match(pattern)
        if head is None or head.group(1) == "static":
            return None
    return rules[first:]


def warn_if_exposed(ctx: ServerContext, port: int) -> bool:
    """A WARNING when the server listens beyond loopback with no credential required."""
    config = ctx.source.config
    if config.auth_token is not None or ctx.basic or is_loopback_host(config.host):
        return False
    log.warning(
        "hyperdash: listening on %s without authentication: anyone who can reach port %d "
        "reads every metric, job and alert. Set auth_token (HYPERDASH_AUTH_TOKEN) or "
        "basic_auth users, or bind 127.0.0.1.", config.host, port,
    )
    return True


def make_app(
    ctx: ServerContext,
    assets: Assets | None = None,
    *,
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
) -> tornado.web.Application:
    assets = assets or Assets.locate()
    return DashboardApp(
        ctx,
        routes(ctx, assets),
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        transforms=[CompressDynamic],
        websocket_ping_interval=ping_interval,
        websocket_ping_timeout=min(ping_timeout, ping_interval),
        websocket_max_message_size=MAX_INCOMING_MESSAGE,
        log_function=_log_request,
        serve_traceback=False,
    )
