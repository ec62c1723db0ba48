"""HTTP by hand over a plain socket, for requests no client library would send."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

from support import wait_until

__all__ = ["MANUAL", "RawResponse", "exchange", "request", "upgrade", "wait_until"]

MANUAL = 3600.0
"""An update_interval that ticks once at start, then only when a test says."""


def upgrade(port: int, headers: dict[str, str] | None = None, *, timeout: float = 10.0,
            rcvbuf: int | None = None, path: str = "/ws") -> tuple[socket.socket, bytes]:
    """A WebSocket handshake by hand; returns the open socket and the response head.

    ``rcvbuf`` shrinks the socket's receive buffer before connecting (so the TCP window
    the server sees is that small), for clients that stop reading.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


@dataclass
class RawResponse:
    status: int | None
    """None when the server closed without answering."""
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(raw: bytes) -> RawResponse:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return RawResponse(None, raw=raw)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = headers.get("content-length")
    if length is not None:
        body = body[: int(length[-1])]
    return RawResponse(status, headers, body, raw)


def exchange(port: int, data: bytes, *, timeout: float = 5.0, limit: int = 1 << 20,
             half_close: bool = False) -> RawResponse:
    """Send ``data``, read until the server closes (or ``limit`` bytes, or ``timeout``).

    ``half_close`` shuts our sending side after ``data``, so a server waiting for the rest
    of an incomplete request sees the end at once (Tornado then closes the connection, so
    a complete request sent that way may get no answer).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close on a bad request before reading it all
            pass
        received = b""
        while len(received) < limit and not _complete(received):
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    return parse_response(received)


def _complete(raw: bytes) -> bool:
    """Whether ``raw`` holds a whole response (so a kept-alive connection need not close)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    first = head.split(b"\r\n", 1)[0].split(b" ")
    if len(first) > 1 and first[1] in (b"101", b"204", b"304"):
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False


def request(port: int, path: str, *, method: str = "GET", host: str | None = None,
            headers: dict[str, str] | None = None, body: bytes = b"") -> RawResponse:
    """One request (``Connection: close`` unless ``headers`` says otherwise); ``host``
    replaces the ``Host`` header."""
    headers = dict(headers or {})
    headers.setdefault("Connection", "close")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return exchange(port, data)
