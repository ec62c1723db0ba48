"""``/ws``'s quick upgrade: the simple handshake answered below Tornado's HTTP layer, every
other request served exactly as before.

Each handshake below is sent twice to one server, once with the quick upgrade on and once
with it off (the handler's own upgrade): the answers must be the same, status, headers
and body, and only the simple, allowed handshakes may be taken by the quick path.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from rawhttp import MANUAL, RawResponse, exchange

from hyperdash_otel.server import _tornado_fast
from hyperdash_otel.server.quick import QuickUpgrade, parse_head
from hyperdash_otel.server.security import hash_password

TAKES = int(_tornado_fast.ENABLED)
"""1 where the quick path can take a handshake; 0 on the public path
(``HYPERDASH_FAST_PATH=0``), where the same requests must get the same answers."""

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TOKEN = "quick-t0ken"
PLAIN = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
         "Sec-WebSocket-Version: 13"]


def head(port: int, lines: list[str], *, request_line: str = "GET /ws HTTP/1.1",
         host: str | None = None, end: str = "\r\n") -> bytes:
    host_line = [] if host == "" else [f"Host: {host or f'127.0.0.1:{port}'}"]
    return (end.join([request_line, *host_line, *lines]) + end + end).encode("latin-1")


def quick(served: Any) -> QuickUpgrade:
    server = served.runner.http_server
    assert server is not None and isinstance(server.quick, QuickUpgrade)
    return server.quick


def both(served: Any, data: bytes, monkeypatch: pytest.MonkeyPatch
         ) -> tuple[RawResponse, RawResponse, int]:
    """The answer with the quick upgrade on, then off, and how many the quick path took."""
    answers = []
    before = quick(served).taken
    for on in (True, False):
        monkeypatch.setattr(_tornado_fast, "QUICK_UPGRADE", on)
        answers.append(exchange(served.port, data))
    monkeypatch.setattr(_tornado_fast, "QUICK_UPGRADE", True)
    return answers[0], answers[1], quick(served).taken - before


def same(a: RawResponse, b: RawResponse) -> None:
    assert a.status == b.status
    assert {k: v for k, v in a.headers.items() if k != "date"} == \
        {k: v for k, v in b.headers.items() if k != "date"}
    if a.status != 101:  # after a 101: however much of the replay came with it
        assert a.body == b.body


def test_the_path_this_run_takes() -> None:
    """On by default with the own upgrade; off with it (``HYPERDASH_FAST_PATH=0``)."""
    assert _tornado_fast.QUICK_UPGRADE is _tornado_fast.OWN_UPGRADE


# (what the handshake changes, the status both paths answer, whether the quick path takes it)
CASES: list[tuple[str, dict[str, Any], int, bool]] = [
    ("plain", {}, 101, True),
    ("the page's own origin", {"extra": ["Origin: http://127.0.0.1:{port}"]}, 101, True),
    ("names in any case, padded values",
     {"lines": ["upgrade:   WebSocket  ", "CONNECTION: keep-alive, Upgrade",
                f"sec-websocket-key: {KEY}", "Sec-WebSocket-Version:13"]}, 101, True),
    ("extensions and subprotocols offered (none chosen)",
     {"extra": ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "Sec-WebSocket-Protocol: chat", "User-Agent: test/1.0"]}, 101, True),
    ("a foreign origin", {"extra": ["Origin: http://evil.test"]}, 403, False),
    ("a Host outside the allowlist", {"host": "evil.test"}, 421, False),
    ("no Host", {"host": ""}, 400, False),
    ("no Upgrade", {"lines": PLAIN[1:]}, 400, False),
    ("Connection without upgrade",
     {"lines": [PLAIN[0], "Connection: keep-alive", *PLAIN[2:]]}, 400, False),
    ("no key", {"lines": [*PLAIN[:2], PLAIN[3]]}, 400, False),
    ("version 8", {"lines": [*PLAIN[:3], "Sec-WebSocket-Version: 8"]}, 426, False),
    ("a query", {"request_line": "GET /ws?view=1 HTTP/1.1"}, 101, False),
    ("another path", {"request_line": "GET /ws/ HTTP/1.1"}, 404, False),
    ("another method", {"request_line": "POST /ws HTTP/1.1"}, 405, False),
    ("HTTP/1.0", {"request_line": "GET /ws HTTP/1.0"}, 101, False),
    ("a Host twice", {"extra": ["Host: 127.0.0.1"]}, 400, False),  # Tornado's bare 400
    ("a body announced", {"extra": ["Content-Length: 0"]}, 101, False),
    ("bare LF line ends", {"end": "\n"}, 101, False),
    ("a header value that is not ASCII", {"extra": ["X-Name: caf\xe9"]}, 101, False),
]


@pytest.mark.parametrize(("change", "status", "taken"),
                         [pytest.param(c, s, t, id=i) for i, c, s, t in CASES])
def test_every_handshake_gets_the_answer_it_got_before(
        serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
        change: dict[str, Any], status: int, taken: bool) -> None:
    s = serve(update_interval=MANUAL, history_size=1)
    port = s.port
    lines = [line.format(port=port) for line in
             change.get("lines", PLAIN) + change.get("extra", [])]
    data = head(port, lines, request_line=change.get("request_line", "GET /ws HTTP/1.1"),
                host=change.get("host"), end=change.get("end", "\r\n"))
    on, off, took = both(s, data, monkeypatch)
    same(on, off)
    assert on.status == status
    assert took == (TAKES if taken else 0)
    if status == 101:
        assert on.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert on.header("sec-websocket-extensions") is None
        assert on.header("sec-websocket-protocol") is None


def test_credentials_a_plain_token_is_quick_the_rest_goes_to_the_handler(
        serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A token in the header or as ``?token=`` (a browser's form) with a value that needs
    no decoding is checked quickly; anything Tornado must decode or refuse is its own."""
    s = serve(update_interval=MANUAL, history_size=1, auth_token=TOKEN)
    port = s.port
    encoded = TOKEN.replace("-", "%2D")  # the same token, once decoded
    for lines, request_line, status, taken in [
        ([*PLAIN, f"Authorization: Bearer {TOKEN}"], "GET /ws HTTP/1.1", 101, TAKES),
        (PLAIN, f"GET /ws?token={TOKEN} HTTP/1.1", 101, TAKES),
        (PLAIN, f"GET /ws?token={encoded} HTTP/1.1", 101, 0),
        (PLAIN, f"GET /ws?token={TOKEN}&view=1 HTTP/1.1", 101, 0),
        (PLAIN, "GET /ws?token=wrong HTTP/1.1", 401, 0),
        (PLAIN, "GET /ws?token= HTTP/1.1", 401, 0),
        (PLAIN, "GET /ws HTTP/1.1", 401, 0),
        ([*PLAIN, "Authorization: Bearer wrong"], "GET /ws HTTP/1.1", 401, 0),
        ([*PLAIN, "Authorization: Bearer wrong"], f"GET /ws?token={TOKEN} HTTP/1.1", 401, 0),
    ]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hyperdash_otel.access"):
            on, off, took = both(s, head(port, lines, request_line=request_line),
                                 monkeypatch)
        same(on, off)
        assert (on.status, took) == (status, taken), (request_line, lines)
        logged = [r.getMessage().split(" (")[0] for r in caplog.records
                  if r.name == "hyperdash_otel.access"]
        # Refusals' lines are rate-limited per status; Tornado's own upgrade (the public
        # path) logs its 101 when the connection ends.
        if status == 101 and TAKES:
            assert len(logged) == 2 and logged[0] == logged[1], logged
        assert all(TOKEN not in line and encoded not in line for line in logged)


def test_a_password_is_checked_once_by_the_handler_then_taken_quickly(
        serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL, history_size=1,
              basic_auth=(f"ops:{hash_password('pw-quick', n=2**10)}",))
    basic = base64.b64encode(b"ops:pw-quick").decode()
    data = head(s.port, [*PLAIN, f"Authorization: Basic {basic}"])
    assert [exchange(s.port, data).status for _ in range(2)] == [101, 101]
    assert quick(s).taken == TAKES  # the second: the password had passed before
    wrong = base64.b64encode(b"ops:nope").decode()
    assert exchange(s.port, head(s.port, [*PLAIN, f"Authorization: Basic {wrong}"])
                    ).status == 401
    assert quick(s).taken == TAKES


def test_a_full_server_refuses_once_with_the_handlers_answer(
        serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, wait: Any) -> None:
    s = serve(update_interval=MANUAL, history_size=1, max_clients=1)
    keep = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    try:
        keep.sendall(head(s.port, PLAIN))
        assert keep.recv(12) == b"HTTP/1.1 101"
        wait(lambda: s.ctx.fanout.clients == 1)
        on, off, took = both(s, head(s.port, PLAIN), monkeypatch)
        same(on, off)
        assert on.status == 503 and took == 0
        assert s.ctx.fanout.reserved == 1  # the refused never held a place
    finally:
        keep.close()


def test_the_rate_limit_is_taken_once_and_a_refusal_counted_once(
        serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL, history_size=1, rate_limit=0.01, rate_limit_burst=2)
    limits = s.ctx.limits
    assert limits is not None
    statuses = [exchange(s.port, head(s.port, PLAIN)).status for _ in range(3)]
    assert statuses == [101, 101, 429]
    assert quick(s).taken == 2 * TAKES
    assert limits.refused == 1


def test_a_silent_connection_is_closed_at_the_header_timeout(
        serve: Callable[..., Any], wait: Any) -> None:
    s = serve(update_interval=MANUAL, header_timeout=0.3)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert sock.recv(100) == b""  # closed by the server, well before the recv timeout
    wait(lambda: s.ctx.http_connections is not None and s.ctx.http_connections() == 0)


def test_stopping_closes_connections_still_sending_their_head(
        serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL, header_timeout=60)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\n")
        assert exchange(s.port, head(s.port, PLAIN)).status == 101  # the server is serving
        s.stop()
        assert sock.recv(100) == b""  # not left to the 60 s header timeout


def test_a_head_over_the_size_limit_is_closed_as_tornado_closes_it(
        serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL)
    data = head(s.port, [*PLAIN, "X-Padding: " + "a" * 70_000])
    assert exchange(s.port, data).status is None  # closed without an answer
    assert quick(s).taken == 0
    assert exchange(s.port, head(s.port, PLAIN)).status == 101


def test_what_the_quick_path_leaves_is_read_again_whole(serve: Callable[..., Any]) -> None:
    """A kept-alive request that is not an upgrade, followed at once by a second one in
    the same packet: both answered (the first head was put back for Tornado)."""
    s = serve(update_interval=MANUAL)
    port = s.port
    one = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    two = f"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    raw = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(one + two.encode())
        while chunk := sock.recv(65536):  # until the server closes, after the second
            raw += chunk
    assert raw.count(b"HTTP/1.1 200 OK") == 2


def test_parse_head_takes_only_the_plain_form() -> None:
    plain = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"
    assert parse_head(plain) == {b"host": "h", b"upgrade": "websocket"}
    for bad in [
        plain.replace(b"GET /ws ", b"GET /ws2 "),
        plain.replace(b"Host: h", b"Host: h\r\n folded"),
        plain.replace(b"Host: h", b"Host : h"),
        plain.replace(b"Host: h", b"Host: h\x01"),
        plain.replace(b"Host: h", b"Transfer-Encoding: chunked"),
        plain.replace(b"\r\n\r\n", b"\r\n"),
    ]:
        assert parse_head(bad) is None, bad


def test_a_fault_while_upgrading_ends_that_connection_only(
        serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, wait: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """An exception in the middle of an upgrade (here the fan-out's keep-alive start):
    that client's socket is closed, its place under ``max_clients`` and in the
    connection table given back, the error logged; the next client is served."""
    s = serve(update_interval=MANUAL, history_size=1, max_clients=1)
    fanout = s.ctx.fanout

    def broken(*args: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(fanout, "keep_alive", broken)
    with caplog.at_level(logging.ERROR, logger="hyperdash_otel"):
        answer = exchange(s.port, head(s.port, PLAIN))
    # The quick path fails before its 101 goes out; Tornado's (HYPERDASH_FAST_PATH=0) has
    # sent its 101 when open() fails, and then closes.
    assert answer.status == (None if TAKES else 101)
    wait(lambda: fanout.reserved == 0 and fanout.clients == 0 and not s.ctx.upgraded.open)
    wait(lambda: s.ctx.http_connections is not None and s.ctx.http_connections() == 0)
    assert any("injected fault" in (r.exc_text or "") or "injected fault" in str(r.exc_info)
               for r in caplog.records)
    monkeypatch.undo()
    assert exchange(s.port, head(s.port, PLAIN)).status == 101  # the one place is free
