"""Paths under /static/ go straight to the static routes, and only where that is safe.

``DashboardApp`` skips the routes before the static ones for such a path when none of
them can match it (:func:`~hyperdash_otel.server.app.static_first`); it must route every
path exactly as Tornado's table would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.routing import PathMatches, Rule

from hyperdash_otel.server.app import Assets, DashboardApp, make_app, routes, static_first
from hyperdash_otel.server.handlers import NotFoundHandler, PageHandler, StaticHandler


@pytest.fixture
def ctx(serve: Callable[..., Any]) -> Any:
    return serve().ctx


def routed(app: DashboardApp, path: str) -> tuple[type, list[Any]]:
    """The handler class and path arguments the app picks for a GET of ``path``."""
    request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"),
                                headers=HTTPHeaders({"Host": "127.0.0.1"}))
    found = app.find_handler(request)
    handler = getattr(found, "_fallback", found)  # StaticFast wraps the handler's delegate
    return handler.handler_class, list(handler.path_args)


def test_the_servers_table_takes_the_shortcut(ctx: Any) -> None:
    app = make_app(ctx, Assets.locate())
    rules = static_first(app.wildcard_router.rules)
    assert rules is not None
    assert [r.target for r in rules] == [StaticHandler, StaticHandler]


@pytest.mark.parametrize(("path", "expected"), [
    ("/static/vendor/chart.umd.js", (StaticHandler, [b"chart.umd.js"])),
    ("/static/js/main.js", (StaticHandler, [b"js/main.js"])),
    ("/static/", (StaticHandler, [b""])),
    ("/static/a%20b.js", (StaticHandler, [b"a b.js"])),
    ("/staticx", (NotFoundHandler, [])),
    ("/", (PageHandler, [])),
])
def test_paths_route_as_the_table_says(ctx: Any, path: str, expected: tuple[type, list[Any]]
                                       ) -> None:
    assert routed(make_app(ctx, Assets.locate()), path) == expected


@pytest.mark.parametrize("pattern", [r"/(static)/special", r"/(.*)", r"/ws|/static/special",
                                     r"/static/special"])
def test_a_route_that_may_match_static_paths_turns_the_shortcut_off(ctx: Any,
                                                                    pattern: str) -> None:
    table = [(pattern, PageHandler, {"ctx": ctx}), *routes(ctx, Assets.locate())]
    app = DashboardApp(ctx, table, default_handler_class=NotFoundHandler,
                       default_handler_args={"ctx": ctx})
    assert static_first(app.wildcard_router.rules) is None
    assert routed(app, "/static/special")[0] is PageHandler  # the earlier route still wins


def test_routes_with_a_literal_first_segment_keep_it() -> None:
    rules = [Rule(PathMatches(p), PageHandler) for p in ("/", "/api/x/([^/]+)", "/ws",
                                                         "/static-old/x")]
    statics = [Rule(PathMatches(r"/static/(.*)"), StaticHandler)]
    assert static_first(rules + statics) == statics
    assert static_first(rules) is None  # no static route at all
