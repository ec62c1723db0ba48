"""Helper process for bench/fanout.py: N raw WebSocket clients that read and discard.

Usage: python -m bench._drain_clients PORT N. Prints "ready" once every handshake is done,
then drains all sockets until its stdin closes. Runs in its own process so that the
clients' reading does not compete with the server's loop for the GIL.
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import sys
import time


def main() -> int:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    sel = selectors.DefaultSelector()
    socks = []
    deadline = time.monotonic() + 60
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("server closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake refused: {head[:80]!r}")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    sel.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    end = time.monotonic() + 600  # bounded, whatever happens to the parent
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1):
            if key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    return 0
                continue
            try:
                if not key.fileobj.recv(1 << 20):  # type: ignore[union-attr]
                    sel.unregister(key.fileobj)
            except (BlockingIOError, ConnectionError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
