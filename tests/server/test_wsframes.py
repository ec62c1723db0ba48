"""The client's frames: the parser on bytes, then a hand-made client on loopback."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import over_tls

from hyperdash_otel.server import _tornado_fast
from hyperdash_otel.server.handlers import MAX_INCOMING_MESSAGE
from hyperdash_otel.server.runner import STOP_TIMEOUT
from hyperdash_otel.server.wsframes import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameParser,
    unmask,
)

MANUAL = 3600.0


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = b"k3y!",
                 rsv: int = 0, length: int | None = None) -> bytes:
    """A frame as a client sends it: masked unless ``mask`` is None; ``length`` lies."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + unmask(mask, payload)


# -- the parser, on bytes ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 4000, 65535, 65536])
@pytest.mark.parametrize("mask", [b"k3y!", None], ids=["masked", "unmasked"])
def test_every_length_form_reads_back(size: int, mask: bytes | None) -> None:
    payload = bytes(i % 251 for i in range(size))
    parser = FrameParser(max_message=1 << 20)
    assert parser.feed(client_frame(BINARY, payload, mask=mask)) == [(BINARY, payload)]


def test_frames_cut_at_every_byte_come_out_whole_and_in_order() -> None:
    data = (client_frame(TEXT, "héllo".encode()) + client_frame(PING, b"p")
            + client_frame(BINARY, b"x" * 300) + client_frame(PONG, b"")
            + client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    expected = [(TEXT, "héllo".encode()), (PING, b"p"), (BINARY, b"x" * 300), (PONG, b""),
                (CLOSE, b"\x03\xe8bye")]
    for cut in range(len(data) + 1):
        parser = FrameParser(max_message=4096)
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == expected, cut
    parser = FrameParser(max_message=4096)
    assert [m for i in range(len(data)) for m in parser.feed(data[i:i + 1])] == expected


def test_fragments_are_joined_and_control_frames_may_come_between() -> None:
    parser = FrameParser(max_message=4096)
    data = (client_frame(TEXT, b"one ", fin=False) + client_frame(PING, b"!")
            + client_frame(0, b"two ", fin=False) + client_frame(0, b"three"))
    assert parser.feed(data) == [(PING, b"!"), (TEXT, b"one two three")]
    assert parser.feed(client_frame(TEXT, b"next")) == [(TEXT, b"next")]


@pytest.mark.parametrize(("data", "code"), [
    (client_frame(TEXT, b"x" * 4097), 1009),
    (client_frame(TEXT, b"x" * 3000, fin=False) + client_frame(0, b"x" * 1100), 1009),
    # refused from its header alone: the 2**40 bytes it announces never have to come
    (client_frame(BINARY, b"", length=1 << 40)[:10], 1009),
    (client_frame(TEXT, b"hi", rsv=0x40), 1002),
    (client_frame(0x3, b"hi"), 1002),
    (client_frame(0, b"hi"), 1002),
    (client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"), 1002),
    (client_frame(PING, b"p", fin=False), 1002),
    (client_frame(PING, b"p" * 126), 1002),
    (client_frame(TEXT, b"\xff\xfe"), 1007),
    (b"\xff" * 16, 1002),
])
def test_what_breaks_the_protocol_says_how(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as err:
        FrameParser(max_message=4096).feed(data)
    assert err.value.code == code


def test_a_message_exactly_at_the_limit_passes() -> None:
    parser = FrameParser(max_message=4096)
    assert parser.feed(client_frame(TEXT, b"x" * 4096)) == [(TEXT, b"x" * 4096)]


# -- a hand-made client on loopback, against the server's path ------------------------------


def complete_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete server frame (unmasked) at the start of ``data``."""
    frames = []
    at = 0
    while at + 2 <= len(data):
        opcode, n, head = data[at] & 0x0F, data[at + 1] & 0x7F, 2
        if n == 126:
            if at + 4 > len(data):
                break
            (n,), head = struct.unpack_from("!H", data, at + 2), 4
        elif n == 127:
            if at + 10 > len(data):
                break
            (n,), head = struct.unpack_from("!Q", data, at + 2), 10
        if at + head + n > len(data):
            break
        frames.append((opcode, data[at + head:at + head + n]))
        at += head + n
    return frames


def read_frames(sock: socket.socket, until: Callable[[list[tuple[int, bytes]]], bool],
                ) -> tuple[list[tuple[int, bytes]], bool]:
    """Server frames read until ``until(frames)`` or EOF; and whether EOF came."""
    data = b""
    sock.settimeout(10)
    while True:
        frames = complete_frames(data)
        if until(frames):
            return frames, False
        chunk = sock.recv(1 << 16)
        if not chunk:
            return complete_frames(data), True
        data += chunk


def connected(serve: Callable[..., Any], raw_ws: Any, wait: Any, **config: Any
              ) -> tuple[Any, socket.socket]:
    s = serve(update_interval=MANUAL, history_size=1, **config)
    sock, head = raw_ws(s.port)
    assert head.startswith(b"HTTP/1.1 101")
    wait(lambda: s.ctx.fanout.clients == 1)
    read_frames(sock, lambda f: any(op == TEXT for op, _ in f))  # the replay
    return s, sock


def still_served(s: Any, sock: socket.socket) -> None:
    """The next tick reaches the client: it is still connected and subscribed."""
    seq = s.tick().seq
    frames, eof = read_frames(sock, lambda f: any(b'"seq":%d' % seq in p for _, p in f))
    assert not eof


def test_a_ping_is_answered_with_its_payload(serve: Callable[..., Any], raw_ws: Any,
                                              wait: Any) -> None:
    s, sock = connected(serve, raw_ws, wait)
    sock.sendall(client_frame(PING, b"are you there"))
    frames, eof = read_frames(sock, lambda f: any(op == PONG for op, _ in f))
    assert (PONG, b"are you there") in frames and not eof
    still_served(s, sock)


@pytest.mark.parametrize("mask", [b"\x00\x00\x00\x00", b"\xa5\x5a\x0f\xf0", None],
                         ids=["zero-mask", "mask", "unmasked"])
def test_text_in_fragments_and_pieces_is_ignored(serve: Callable[..., Any], raw_ws: Any,
                                                  wait: Any, mask: bytes | None) -> None:
    s, sock = connected(serve, raw_ws, wait)
    data = (client_frame(TEXT, b"hello ", fin=False, mask=mask)
            + client_frame(PING, b"between", mask=mask)
            + client_frame(0, b"world", mask=mask))
    for i in range(0, len(data), 3):  # a few bytes per TCP segment
        sock.sendall(data[i:i + 3])
    frames, eof = read_frames(sock, lambda f: any(op == PONG for op, _ in f))
    assert (PONG, b"between") in frames and not eof
    still_served(s, sock)
    assert s.ctx.fanout.clients == 1


def test_a_close_is_echoed_and_the_connection_ends(serve: Callable[..., Any], raw_ws: Any,
                                                    wait: Any) -> None:
    s, sock = connected(serve, raw_ws, wait)
    sock.sendall(client_frame(CLOSE, struct.pack("!H", 1001) + b"leaving"))
    frames, eof = read_frames(sock, lambda f: False)
    assert eof and frames[-1] == (CLOSE, struct.pack("!H", 1001))
    wait(lambda: s.ctx.fanout.clients == 0 and s.ctx.fanout.reserved == 0)


def test_an_oversized_message_closes_with_1009(serve: Callable[..., Any], raw_ws: Any,
                                               wait: Any) -> None:
    s, sock = connected(serve, raw_ws, wait)
    half = MAX_INCOMING_MESSAGE // 2 + 1
    sock.sendall(client_frame(TEXT, b"x" * half, fin=False) + client_frame(0, b"x" * half))
    frames, eof = read_frames(sock, lambda f: False)
    assert eof and frames[-1][0] == CLOSE
    assert struct.unpack("!H", frames[-1][1][:2])[0] == 1009
    wait(lambda: s.ctx.fanout.clients == 0 and s.ctx.fanout.reserved == 0)


@pytest.mark.parametrize("garbage", [
    client_frame(TEXT, b"hi", rsv=0x20),
    client_frame(0xB, b"?"),
    client_frame(0, b"continuing nothing"),
    b"GET / HTTP/1.1\r\n\r\n",
], ids=["reserved-bit", "unknown-opcode", "continuation", "http"])
def test_garbage_ends_the_connection(serve: Callable[..., Any], raw_ws: Any, wait: Any,
                                     garbage: bytes) -> None:
    s, sock = connected(serve, raw_ws, wait)
    sock.sendall(garbage)
    frames, eof = read_frames(sock, lambda f: False)
    assert eof
    if _tornado_fast.OWN_UPGRADE:  # Tornado's path cuts without a close frame
        assert frames[-1][0] == CLOSE
        assert struct.unpack("!H", frames[-1][1][:2])[0] == 1002
    wait(lambda: s.ctx.fanout.clients == 0 and s.ctx.fanout.reserved == 0)


def test_a_client_answering_pings_stays(serve: Callable[..., Any], raw_ws: Any,
                                        wait: Any) -> None:
    """Pongs reach the keep-alive rounds: a client that answers every ping is kept past
    many ping timeouts, one that stops answering is closed."""
    s, sock = connected(serve, raw_ws, wait,
                        runner={"ping_interval": 0.05, "ping_timeout": 0.05})
    for _ in range(10):
        frames, eof = read_frames(sock, lambda f: any(op == PING for op, _ in f))
        assert not eof
        sock.sendall(b"".join(client_frame(PONG, p) for op, p in frames if op == PING))
    assert s.ctx.fanout.clients == 1
    frames, eof = read_frames(sock, lambda f: any(op == CLOSE for op, _ in f))
    assert not eof and struct.unpack("!H", frames[-1][1][:2])[0] == 1000
    wait(lambda: s.ctx.fanout.clients == 0)


def test_the_path_this_run_takes() -> None:
    """``make test`` runs this file on both paths; say which one ran."""
    expected = (os.environ.get(_tornado_fast.ENV, "").strip() != "0"
                and os.environ.get(_tornado_fast.UPGRADE_ENV, "").strip() != "0")
    assert _tornado_fast.OWN_UPGRADE is (expected and _tornado_fast.ENABLED)


def test_both_upgrades_answer_with_the_same_head_and_log_line(
        serve: Callable[..., Any], raw_ws: Any, wait: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The server's own 101 is Tornado's: the same headers in the same order (the Date
    aside), the same access log line; then the replay."""
    s = serve(update_interval=MANUAL, history_size=1)
    heads = []
    with caplog.at_level(logging.INFO, logger="hyperdash_otel.access"):
        for own in (False, True):
            monkeypatch.setattr(_tornado_fast, "OWN_UPGRADE", own and _tornado_fast.ENABLED)
            sock, head = raw_ws(s.port, headers={"Origin": f"http://127.0.0.1:{s.port}"})
            frames, eof = read_frames(sock, lambda f: any(op == TEXT for op, _ in f))
            assert not eof and b'"replay":0' in frames[0][1]
            heads.append([line for line in head.split(b"\r\n") if not line.startswith(b"Date:")])
    assert heads[0] == heads[1]
    assert heads[0][0] == b"HTTP/1.1 101 Switching Protocols"
    assert b"Sec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in heads[0]  # RFC 6455's
    lines = [r.getMessage() for r in caplog.records if r.name == "hyperdash_otel.access"]
    assert [line.split(" (")[0] for line in lines] == ["101 GET /ws", "101 GET /ws"]
    wait(lambda: s.ctx.fanout.clients == 2)


def test_stop_cuts_a_client_that_never_answers_the_close(serve: Callable[..., Any],
                                                           raw_ws: Any, wait: Any) -> None:
    """Shutdown sends 1001 to every client, waits ``CLOSE_GRACE`` for the close
    handshake, then cuts whoever has not answered: the runner stops in bounded time and
    the client sees its socket end."""
    s, sock = connected(serve, raw_ws, wait)
    upgraded = s.ctx.upgraded
    assert len(upgraded.open) == (1 if _tornado_fast.OWN_UPGRADE else 0)
    started = time.monotonic()
    s.stop()
    assert time.monotonic() - started < STOP_TIMEOUT
    frames, eof = read_frames(sock, lambda f: False)
    assert eof and frames[-1][0] == CLOSE
    assert struct.unpack("!H", frames[-1][1][:2])[0] == 1001
    assert not upgraded.open


def test_under_tls_the_stream_is_upgraded_by_tornado(serve: Callable[..., Any],
                                                       certificate: tuple[str, str]) -> None:
    cert, key = certificate
    s = serve(update_interval=MANUAL, tls_certfile=cert, tls_keyfile=key)
    context = ssl.create_default_context(cafile=cert)
    seen: dict[str, Any] = {}

    def while_open(first: str) -> None:
        seen.update(first=first, clients=s.ctx.fanout.clients,
                    sink=s.ctx.fanout.sinks()[0], upgraded=s.ctx.upgraded.open)

    over_tls(f"wss://127.0.0.1:{s.port}/ws", context, while_open)
    assert '"replay":0' in seen["first"]
    assert seen["clients"] == 1
    assert not isinstance(seen["sink"], _tornado_fast.Connection)
    assert not seen["upgraded"]
