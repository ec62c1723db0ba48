"""Helper process for bench/endpoints.py: keep-alive GETs on raw sockets, as ``wrk`` makes them.

Usage: ``python -m bench._http_client PORT PATH CONNECTIONS MAX_REQUESTS SECONDS [gzip]``.

``CONNECTIONS`` keep-alive connections each keep one GET in flight (no pipelining): when a
response is complete its connection sends the next request. The client stops after
``MAX_REQUESTS`` measured responses or ``SECONDS``, whichever comes first (each connection's
first response is a warm-up, not measured). It is cheap enough not to be the limit: no
``http.client``, one ``recv_into`` loop, responses read by ``Content-Length``.

Every response is checked, so a fast wrong answer cannot count: status 200, exactly
``Content-Length`` bytes of body, and for a gzip answer its trailer (CRC-32 and size of the
decoded bytes, RFC 1952) equal to the first response's; the first and last gzip bodies of
each connection are decompressed in full. Prints, as JSON: responses, seconds, the body
size of the first response, the decoded size and CRC-32 of the gzip ones (the caller checks
them against the file), and a count of errors (any error also exits non-zero).
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
import zlib

HEAD_END = b"\r\n\r\n"


class Failed(Exception):
    """A response that is not what the bench asked for."""


class Conn:
    """One keep-alive connection with one request in flight."""

    def __init__(self, port: int, request: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.request = request
        self.buf = bytearray()
        self.need = -1  # bytes of the whole response, once its head is parsed
        self.done = 0
        self.first: bytes | None = None
        self.last = b""

    def send(self) -> None:
        self.sock.send(self.request)  # ~100 bytes: the kernel always takes it at once

    def feed(self, data: bytes) -> bytes | None:
        """Add received bytes; the response body once complete, else None."""
        self.buf += data
        if self.need < 0:
            end = self.buf.find(HEAD_END)
            if end < 0:
                return None
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            if head[0].split(" ", 2)[1] != "200":
                raise Failed(f"status line {head[0]!r}")
            length = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length is None:
                raise Failed("no Content-Length")
            self.head_len = end + 4
            self.need = self.head_len + length
        if len(self.buf) < self.need:
            return None
        if len(self.buf) > self.need:
            raise Failed("bytes past Content-Length")
        body = bytes(self.buf[self.head_len:])
        self.buf.clear()
        self.need = -1
        return body


def main() -> int:
    port, path = int(sys.argv[1]), sys.argv[2]
    connections, limit, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    gzipped = sys.argv[6:] == ["gzip"]
    extra = "Accept-Encoding: gzip\r\n" if gzipped else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
    conns = [Conn(port, request) for _ in range(connections)]
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
        c.send()
    chunk = bytearray(1 << 20)
    view = memoryview(chunk)
    trailer: bytes | None = None
    size = 0
    measured = 0
    warm = 0
    start = 0.0
    deadline = time.monotonic() + seconds + 30  # the warm-up's own bound
    stop_at = limit
    while True:
        now = time.monotonic()
        if now > deadline or (warm == connections and measured >= stop_at):
            break
        events = sel.select(timeout=max(0.0, deadline - now))
        for key, _ in events:
            c = key.data
            got = c.sock.recv_into(chunk)
            if got == 0:
                raise Failed("the server closed a keep-alive connection")
            body = c.feed(view[:got])
            if body is None:
                continue
            if gzipped:
                if trailer is None:
                    trailer = body[-8:]
                    size = len(body)
                elif body[-8:] != trailer:
                    raise Failed("a gzip body whose CRC or size differs")
                if c.first is None:
                    c.first = body
                c.last = body
            elif not size:
                size = len(body)
            if c.done == 0:
                warm += 1
                if warm == connections:  # every connection warm: the clock starts
                    start = time.perf_counter()
                    deadline = time.monotonic() + seconds
            elif warm == connections:
                measured += 1
            c.done += 1
            c.send()
    if warm < connections:
        raise Failed("a connection had no response within 30 s")
    took = time.perf_counter() - start
    decoded: set[tuple[int, int]] = set()
    if gzipped:
        for c in conns:
            for body in (c.first, c.last):
                plain = zlib.decompress(body or b"", wbits=31)
                decoded.add((zlib.crc32(plain), len(plain)))
        if len(decoded) != 1:
            raise Failed(f"gzip bodies decode to different contents: {decoded}")
    decoded_crc, decoded_size = decoded.pop() if decoded else (0, 0)
    for c in conns:
        c.sock.close()
    print(json.dumps({"responses": measured, "seconds": took, "bytes": size,
                      "decoded_crc32": decoded_crc, "decoded_bytes": decoded_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
