"""The lean parts of every request and upgrade still give the answers the rules ask for."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from rawhttp import request

from hyperdash_otel.server.app import HOSTS_REMEMBERED, DashboardApp


def test_remembered_host_answers_stay_right_and_bounded(serve: Callable[..., Any]) -> None:
    s = serve()
    for i in range(HOSTS_REMEMBERED + 40):
        assert request(s.port, "/healthz", host=f"evil{i}.test").status == 421
        if i % 50 == 0:  # an allowed name, asked again between the refused ones
            assert request(s.port, "/healthz", host=f"127.0.0.1:{s.port}").status == 200
            assert request(s.port, "/healthz", host="localhost").status == 200
    assert request(s.port, "/healthz", host="evil0.test").status == 421
    # The Runner does not expose its Application: found among the live objects. By type,
    # not isinstance: isinstance reads __class__, which on a dead weakref.proxy among them
    # raises ReferenceError.
    apps = [o for o in gc.get_objects() if issubclass(type(o), DashboardApp)]
    assert apps and all(len(a._hosts_seen) <= HOSTS_REMEMBERED for a in apps)


def test_a_configured_token_still_guards_the_upgrade(serve: Callable[..., Any]) -> None:
    # prepare() takes no coroutine when nothing is configured; with a token it must check.
    s = serve(auth_token="a-token-of-twenty-chars")
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    refused = request(s.port, "/ws", headers=headers)
    assert refused.status == 401 and refused.json()["status"] == 401
    assert request(s.port, "/api/metrics").status == 401
    assert request(s.port, "/nope").status == 401  # NotFoundHandler awaits the check too
    assert request(s.port, "/static/js/main.js").status == 200  # never behind the token
    assert s.ctx.fanout.reserved == 0
