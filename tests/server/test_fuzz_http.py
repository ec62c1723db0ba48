"""Hypothesis against a real served dashboard on 127.0.0.1 (issue #12 item 8).

Whatever arrives (well-formed requests with hostile paths, methods, headers, query strings
and bodies; raw bytes where a request line should be; WebSocket frames no client should
send), the server answers below 500, every error body it writes is JSON, the tick keeps
running, nothing is logged at ERROR, and the token never reaches the log.

Example counts are bounded so the file runs in well under a minute.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawhttp import RawResponse, exchange, request, upgrade, wait_until

from hyperdash_otel import Config, Dashboard, JobInfo
from hyperdash_otel.server.security import hash_password

TOKEN = "fuzz-token-0123456789"
METRICS_TOKEN = "fuzz-metrics-987654321"
PASSWORD = "fuzz password"


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


class Recorder(logging.Handler):
    """Every record the server's loggers emit, formatted as a handler would write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.lines.append(line)
        if record.levelno >= logging.ERROR:
            self.errors.append(line)


class Target:
    def __init__(self, dash: Dashboard, recorder: Recorder) -> None:
        self.dash = dash
        self.recorder = recorder
        assert dash.port is not None
        self.port: int = dash.port

    def ticks(self) -> int:
        resp = request(self.port, "/healthz")
        assert resp.status == 200
        return int(resp.json()["ticks"])

    def assert_healthy(self) -> None:
        """The tick goes on, nothing was an ERROR, and no secret was logged."""
        before = self.ticks()
        wait_until(lambda: self.ticks() > before, what="the next tick")
        assert self.recorder.errors == []
        text = "\n".join(self.recorder.lines)
        for secret in (TOKEN, METRICS_TOKEN, base64.b64encode(f"ops:{PASSWORD}".encode()
                                                               ).decode()):
            assert secret not in text


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    recorder = Recorder()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(recorder)
    dash = Dashboard(Config(
        port=0, update_interval=0.05, collect_system_metrics=False, history_size=2,
        max_clients=1000, auth_token=TOKEN, metrics_token=METRICS_TOKEN,
        # The fuzz sends hundreds of requests and wrong credentials from one address: with
        # the rate limits on, most answers would be 429s (tests/server/test_limits.py).
        rate_limit=0, auth_failures_per_minute=0,
        basic_auth=(f"ops:{hash_password(PASSWORD, n=2**10)}",),
    ))
    dash.add_job(JobInfo(id="j1", name="export web-01", status="running", provider="aws"))
    dash.start_in_thread()
    try:
        yield Target(dash, recorder)
    finally:
        dash.close()
        root.removeHandler(recorder)
        root.setLevel(level)


def assert_answer(resp: RawResponse, method: str = "GET") -> None:
    """Below 500; an error body is JSON naming its status. Tornado's parser answers what
    it cannot parse with a bare 400 and no body, before any handler could."""
    assert resp.status is not None, resp.raw[:200]
    assert resp.status < 500, (resp.status, resp.body[:200])
    if resp.status >= 400 and method != "HEAD":
        if resp.status == 400 and resp.body == b"" and resp.header("Content-Type") is None:
            return
        assert resp.header("Content-Type") == "application/json", (resp.status, resp.raw[:300])
        body = json.loads(resp.body)
        assert body["status"] == resp.status and isinstance(body["error"], str)


# -- well-formed requests with hostile parts ---------------------------------------------------

SAFE = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="%")
PERCENT = st.builds(lambda b: f"%{b:02x}", st.integers(0, 255))
URL_TEXT = st.lists(st.one_of(SAFE, PERCENT), max_size=24).map("".join)
PATHS = st.one_of(
    st.sampled_from(["/", "/api/metrics", "/api/jobs", "/api/jobs/j1", "/metrics",
                     "/healthz", "/ws", "/static/js/main.js", "/static/vendor/chart.umd.js",
                     "/static/", "/static/..%2f..%2fpyproject.toml", "/nope"]),
    st.builds(lambda base, tail: base + tail,
              st.sampled_from(["/", "/api/", "/api/jobs/", "/static/", "/static/js/", "/ws/"]),
              URL_TEXT),
)
QUERIES = st.lists(
    st.tuples(st.one_of(st.sampled_from(["token", "tok%65n", "status", "limit"]), URL_TEXT),
              st.one_of(st.sampled_from([TOKEN, "failed", "-1", "10", "%ff", ""]), URL_TEXT)),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTHORIZATION = st.one_of(
    st.none(),
    st.sampled_from([f"Bearer {TOKEN}", f"Bearer {METRICS_TOKEN}", "Bearer wrong-token",
                     _basic("ops", PASSWORD), _basic("ops", "wrong"), _basic("nobody", "x"),
                     "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
                     "Digest x", "Bearer", ""]),
    HEADER_TEXT,
)
HOSTS = st.one_of(st.sampled_from(["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                   "evil.test:{port}", "evil.test", "127.0.0.1"]),
                  st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True))
ORIGINS = st.one_of(st.none(), st.sampled_from(["http://127.0.0.1:{port}", "http://evil.test",
                                                "null", "http://evil.test:{port}"]),
                    HEADER_TEXT)
EXTRA = st.dictionaries(
    st.sampled_from(["Range", "Accept", "Accept-Encoding", "Upgrade", "Connection",
                     "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
                     "If-Modified-Since", "If-None-Match", "Cookie", "X-Forwarded-For",
                     "Sec-Fetch-Site", "Content-Type"]),
    st.one_of(st.sampled_from(["bytes=0-9", "bytes=99999999-", "bytes=-5", "bytes=5-1",
                               "websocket", "Upgrade", "13", "8", "dGhlIHNhbXBsZSBub25jZQ==",
                               "permessage-deflate; client_max_window_bits=99", "gzip",
                               "application/openmetrics-text; version=1.0.0", "cross-site",
                               "application/x-www-form-urlencoded", "multipart/form-data"]),
              HEADER_TEXT),
    max_size=5,
)


@fuzz(120)
@given(method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                               "PATCH", "BREW"]),
       path=PATHS, query=QUERIES, host=HOSTS, origin=ORIGINS, authorization=AUTHORIZATION,
       extra=EXTRA, body=st.binary(max_size=256))
def test_requests(target: Target, method: str, path: str, query: str, host: str,
                  origin: str | None, authorization: str | None, extra: dict[str, str],
                  body: bytes) -> None:
    port = target.port
    headers = dict(extra)
    if origin is not None:
        headers["Origin"] = origin.replace("{port}", str(port))
    if authorization is not None:
        headers["Authorization"] = authorization
    if headers.get("Upgrade") == "websocket":
        headers["Connection"] = "Upgrade, close"
    target_path = f"{path}?{query}" if query else path
    resp = request(port, target_path, method=method, host=host.replace("{port}", str(port)),
                   headers=headers, body=body)
    if resp.status == 101:
        return  # a valid handshake: the stream's own fuzz is below
    assert_answer(resp, method)


def test_requests_left_the_server_healthy(target: Target) -> None:
    target.assert_healthy()


# -- raw bytes where a request should be -------------------------------------------------------

LINE_BYTES = st.binary(max_size=60)
REQUEST_LINES = st.one_of(
    st.builds(lambda m, t, v: m + b" " + t + b" " + v,
              st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"", b"G\x00T", b"GET GET"]),
              st.one_of(st.sampled_from([b"/", b"/api/metrics", b"/ws", b"*", b"",
                                         b"http://127.0.0.1/", b"/\xff\xfe", b"/a b"]),
                        LINE_BYTES),
              st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b"HTTX/1.1",
                               b"", b"HTTP/1.1 extra"])),
    LINE_BYTES,
)
HEADER_LINES = st.lists(
    st.one_of(st.sampled_from([b"Host: 127.0.0.1", b"Host: evil.test", b"Host:", b"Host: a, b",
                               b"Content-Length: 5", b"Content-Length: -1",
                               b"Content-Length: 99999999999", b"Transfer-Encoding: chunked",
                               b"Transfer-Encoding: gzip, chunked", b" folded", b"NoColon",
                               b"X: \x00", b"Authorization: Bearer " + TOKEN.encode() + b"\x01",
                               b"Content-Encoding: gzip", b"Connection: close"]),
              LINE_BYTES),
    max_size=6,
)


@fuzz(120)
@given(line=REQUEST_LINES, headers=HEADER_LINES, body=st.binary(max_size=64),
       ending=st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]))
def test_raw_bytes(target: Target, line: bytes, headers: list[bytes], body: bytes,
                   ending: bytes) -> None:
    data = b"\r\n".join([line, *headers]) + ending + body
    resp = exchange(target.port, data, timeout=3.0, half_close=True)
    if resp.status is None or resp.status == 101:
        return  # closed without an answer (Tornado's way with some garbage), or a handshake
    assert_answer(resp, "HEAD" if line.startswith(b"HEAD ") else "GET")


def test_raw_bytes_left_the_server_healthy(target: Target) -> None:
    target.assert_healthy()


# -- WebSocket frames no client should send ----------------------------------------------------


def frame(*, fin: bool, rsv: int, opcode: int, masked: bool, key: bytes, payload: bytes,
          length: int | None) -> bytes:
    """One frame; ``length`` lies about the payload's size when not None."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + key + payload
    return head + payload


FRAMES = st.builds(
    frame,
    fin=st.booleans(), rsv=st.sampled_from([0, 0, 0, 1, 2, 4, 7]),
    opcode=st.sampled_from([0, 1, 2, 8, 9, 10, 3, 7, 11, 15]),
    masked=st.sampled_from([True, True, True, False]), key=st.binary(min_size=4, max_size=4),
    payload=st.one_of(st.binary(max_size=200), st.text(max_size=50).map(str.encode),
                      st.builds(lambda code, text: struct.pack("!H", code) + text,
                                st.integers(0, 65535), st.binary(max_size=130))),
    length=st.one_of(st.none(), st.none(), st.integers(0, 200),
                     st.sampled_from([126, 65535, 65536, 2**31, 2**63 - 1])),
)


@fuzz(80)
@given(frames=st.lists(FRAMES, min_size=1, max_size=4), junk=st.binary(max_size=16))
def test_websocket_frames(target: Target, frames: list[bytes], junk: bytes) -> None:
    sock, head = upgrade(target.port, {"Authorization": f"Bearer {TOKEN}"})
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        try:
            sock.sendall(b"".join(frames) + junk)
        except OSError:
            return  # the server already closed on an earlier frame
        sock.settimeout(0.1)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    break
            except (TimeoutError, ConnectionResetError):
                break
    finally:
        sock.close()
    assert target.recorder.errors == []


def test_frames_left_the_server_healthy(target: Target) -> None:
    target.assert_healthy()
    resp = request(target.port, "/api/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200 and json.loads(resp.body)["timestamp"]


def test_a_valid_client_still_streams(target: Target) -> None:
    sock, head = upgrade(target.port, {"Authorization": f"Bearer {TOKEN}"})
    try:
        assert head.startswith(b"HTTP/1.1 101")
        first = sock.recv(2)
        assert first[0] == 0x81  # a final text frame: the history replay
    finally:
        sock.close()
