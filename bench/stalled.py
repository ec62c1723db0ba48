"""A client that never reads, against the real ``hyperdash demo`` process.

The server's RSS is sampled for the same length of time twice: first with one ordinary
reading client (the control: what the process grows by anyway), then with a client that
connects with a small receive buffer and never reads a byte. The difference is what the
stalled client costs; the table also says when the server cut it off (1008 "too slow").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import time
import urllib.request

from . import outside
from ._outside_clients import Reader
from .outside import rss_of, start_server


def clients(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        return int(json.loads(resp.read())["clients"])


def watch(pid: int, seconds: float, reader: Reader | None = None) -> tuple[int, int]:
    """(RSS at start, highest RSS) over ``seconds``, reading ``reader``'s sockets meanwhile."""
    first = peak = rss_of(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if reader is not None:
            reader.poll(0.25)
        else:
            time.sleep(0.25)  # sampling interval
        peak = max(peak, rss_of(pid))
    return first, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stalled")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    server_cores, _ = outside.cpus()
    proc, port = start_server("hyperdash", "", 1.0, 10, server_cores)
    try:
        time.sleep(2.0)  # a couple of ticks before anything is measured
        reading = Reader()
        reading.connect(port)
        control_start, control_peak = watch(proc.pid, args.seconds, reading)
        stuck = outside_socket(port)
        cut_after: float | None = None
        start = rss_of(proc.pid)
        peak = start
        began = time.monotonic()
        while time.monotonic() - began < args.seconds:
            reading.poll(0.25)
            peak = max(peak, rss_of(proc.pid))
            if cut_after is None and clients(port) < 2:
                cut_after = time.monotonic() - began
        stuck.close()
    finally:
        outside.stop(proc)
    control = control_peak - control_start
    growth = peak - start
    print(f"\n## A client that never reads, {args.seconds:g} s against hyperdash demo\n")
    print("| | RSS growth over the window | cut off after |")
    print("|---|---|---|")
    print(f"| one reading client (control) | {control / 2**20:.2f} MiB | - |")
    print(f"| plus a client that never reads | {growth / 2**20:.2f} MiB "
          f"| {'not cut' if cut_after is None else f'{cut_after:.1f} s'} |")
    print(f"\nWhat the stalled client added: {(growth - control) / 2**20:.2f} MiB")
    return 0


def outside_socket(port: int) -> socket.socket:
    """A WebSocket client with a 4 KB receive buffer that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    return sock


if __name__ == "__main__":
    sys.exit(main())
