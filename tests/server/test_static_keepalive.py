"""/static/* on kept-alive connections, as a browser fetches the page's files.

A cached file's answer on an HTTP/1.1 connection that stays open is written from a
pre-built head (:class:`~hyperdash_otel.server.static.HeadBlocks`); any other is formatted
by Tornado. The two must be the same bytes, and the connection must go on serving.
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable
from typing import Any

import pytest
from rawhttp import RawResponse, parse_response, request

from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.static import MAX_HEADS, HeadBlocks

MAIN = "/static/js/main.js"
CHART = "/static/vendor/chart.umd.js"
GZ = {"Accept-Encoding": "gzip, deflate, br"}


@pytest.fixture
def port(serve: Callable[..., Any]) -> int:
    return int(serve().port)


def chart() -> bytes:
    return Assets.locate().chart_js.read_bytes()


class KeptAlive:
    """One client connection: requests written, responses read by their framing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
             version: str = "HTTP/1.1") -> None:
        lines = [f"{method} {path} {version}", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def read(self, *, head_only: bool = False) -> RawResponse:
        """The next response (``head_only``: a HEAD's, whose Content-Length has no body)."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        resp = parse_response(head + b"\r\n\r\n")
        length = resp.header("Content-Length")
        size = 0 if head_only or resp.status == 304 or length is None else int(length)
        while len(rest) < size:
            rest += self._recv()
        self.buf = rest[size:]
        resp.body, resp.raw = rest[:size], head + b"\r\n\r\n" + rest[:size]
        return resp

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def head_lines(resp: RawResponse) -> list[bytes]:
    """The response's status and header lines as sent, minus Date and Connection."""
    head = resp.raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
    return [line for line in head
            if not line.lower().startswith((b"date:", b"connection:"))]


# (method, path, headers): the answers a browser and a cache get from memory.
CASES = [
    ("GET", MAIN, {}), ("GET", MAIN, GZ), ("HEAD", MAIN, {}), ("HEAD", CHART, GZ),
    ("GET", CHART, GZ), ("GET", MAIN, {"Range": "bytes=10-19"}),
    ("GET", MAIN, {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}),
]


def test_kept_alive_answers_are_the_bytes_tornado_formats(port: int) -> None:
    conn = KeptAlive(port)
    try:
        cases = list(CASES)
        for etag_of in ({}, GZ):  # the 304s, with the tag of each representation
            tag = request(port, MAIN, headers=etag_of).header("ETag")
            cases.append(("GET", MAIN, {**etag_of, "If-None-Match": str(tag)}))
        for method, path, headers in cases:
            conn.send(path, method=method, headers=headers)
            fast = conn.read(head_only=method == "HEAD")
            # Connection: close takes Tornado's own write_headers.
            formatted = request(port, path, method=method, headers=headers)
            assert fast.header("Connection") is None
            assert formatted.header("Connection") == "close"
            assert head_lines(fast) == head_lines(formatted), (method, path, headers)
            assert fast.body == formatted.body
            assert fast.header("Date")
            if fast.status == 304:
                assert fast.header("ETag") == headers["If-None-Match"]
    finally:
        conn.close()


def test_one_connection_serves_requests_in_a_row_and_pipelined(port: int) -> None:
    conn = KeptAlive(port)
    try:
        conn.send(CHART, headers=GZ)
        first = conn.read()
        assert first.status == 200 and gzip.decompress(first.body) == chart()
        tag = str(first.header("ETag"))
        # Pipelined: all written before any is read; answered in order, each whole.
        wanted: list[tuple[str, str, dict[str, str]]] = [
            ("HEAD", CHART, GZ), ("GET", CHART, {**GZ, "If-None-Match": tag}),
            ("GET", "/static/nope.js", {}), ("GET", CHART, {}),
            ("GET", CHART, {"Range": "bytes=0-99"}), ("GET", CHART, GZ),
        ]
        for method, path, headers in wanted:
            conn.send(path, method=method, headers=headers)
        got = [conn.read(head_only=method == "HEAD") for method, _, _ in wanted]
        assert [r.status for r in got] == [200, 304, 404, 200, 206, 200]
        assert got[0].body == b"" and got[0].header("Content-Length") == str(len(first.body))
        assert got[1].body == b"" and got[1].header("ETag") == tag
        assert got[2].json()["status"] == 404
        assert got[3].body == chart() and got[3].header("Content-Encoding") is None
        assert got[4].body == chart()[:100]
        assert got[5].body == first.body
    finally:
        conn.close()


def test_http_1_0_keep_alive_is_answered_with_its_header(port: int) -> None:
    conn = KeptAlive(port)
    try:
        for _ in range(2):  # still open after the first
            conn.send(MAIN, headers={"Connection": "keep-alive"}, version="HTTP/1.0")
            resp = conn.read()
            assert resp.status == 200 and resp.header("Connection") == "Keep-Alive"
            assert resp.body == (Assets.locate().static / "js/main.js").read_bytes()
    finally:
        conn.close()


def test_a_kept_alive_connection_asked_to_close_is_closed(port: int) -> None:
    conn = KeptAlive(port)
    try:
        conn.send(MAIN)
        assert conn.read().status == 200
        conn.send(MAIN, headers={"Connection": "close"})
        last = conn.read()
        assert last.status == 200 and last.header("Connection") == "close"
        with pytest.raises(ConnectionError):
            conn.read()
    finally:
        conn.close()


# -- HeadBlocks, without a server --------------------------------------------------------------


def test_a_head_is_tornados_formatting_with_the_date_of_its_second() -> None:
    heads = HeadBlocks()
    got = heads.head(200, "OK", 1_000_000_000.9,
                     (("x-frame-options", "DENY"), ("ETag", '"a"'), ("X-Frame-Options", "SAME")))
    assert got == (b"HTTP/1.1 200 OK\r\nDate: Sun, 09 Sep 2001 01:46:40 GMT\r\n"
                   b"X-Frame-Options: SAME\r\nEtag: \"a\"\r\n\r\n")
    later = heads.head(200, "OK", 1_000_000_001.0, (("Etag", '"a"'),))
    assert later.startswith(b"HTTP/1.1 200 OK\r\nDate: Sun, 09 Sep 2001 01:46:41 GMT\r\n")


def test_heads_are_kept_up_to_the_bound_then_forgotten() -> None:
    heads = HeadBlocks(max_heads=3)
    for i in range(3):
        heads.head(200, "OK", 0.0, (("Etag", f'"{i}"'),))
    assert len(heads) == 3
    heads.head(200, "OK", 0.0, (("Etag", '"0"'),))  # kept: no growth
    assert len(heads) == 3
    heads.head(304, "Not Modified", 0.0, (("Etag", '"0"'),))
    assert len(heads) == 1
    assert HeadBlocks().max_heads == MAX_HEADS


def test_a_header_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        HeadBlocks().head(200, "OK", 0.0, (("Etag", '"a"\r\nSet-Cookie: x'),))
