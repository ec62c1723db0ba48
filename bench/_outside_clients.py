"""Helper process for bench/outside.py: N raw WebSocket clients that read and time each frame.

Usage: ``python -m bench._outside_clients PORT N RAMP_SECONDS``. It connects its N clients
at an even pace over RAMP_SECONDS, reading all the while (the replay arrives during the
ramp), answers pings, and prints one JSON line ``{"ready": ...}`` once every handshake is
done. It then reads until a line ``report T0 T1`` arrives on stdin and answers with one
JSON line of figures for the ticks stamped in [T0, T1] (``count`` answers how many live
messages have arrived so far); the stdin closing ends it. Bounded
to 15 minutes whatever the parent does.

Latency is the kernel's receive time of the data that completed the frame (SO_TIMESTAMPNS)
minus the message's own ``"timestamp"``, so a client process busy with its other sockets
does not inflate it. Only the first bytes of a message are looked at: the timestamp is the
first key of the Metrics message.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import math
import os
import re
import resource
import selectors
import socket
import struct
import sys
import time
from datetime import datetime

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # 35 on Linux
TIMESPEC = struct.Struct("ll")
ANC_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
STAMP = re.compile(rb'"timestamp"\s*:\s*"([^"]+)"')
PONG = b"\x8a\x80\x00\x00\x00\x00"  # masked (clients must mask), empty, mask of zeros
CLOSE_REPLY = b"\x88\x80\x00\x00\x00\x00"  # masked, empty
LIFETIME = 900.0


class Client:
    __slots__ = ("sock", "buf", "upgraded", "started", "seen", "closed", "close_code",
                 "messages")

    def __init__(self, sock: socket.socket, started: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.upgraded = False
        self.started = started
        self.seen: dict[bytes, float] = {}  # tick stamp -> kernel latency (s)
        self.closed = False
        self.close_code: int | None = None
        self.messages = 0


class Reader:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.stamps: dict[bytes, float] = {}  # tick stamp -> epoch seconds
        self.backlog = 0
        self.live = 0
        """Live (not replayed) messages received so far, by all clients."""
        self.refused: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.handshakes = 0
        self.queue_delays: list[float] = []  # app read time - kernel time, sampled

    def epoch(self, raw: bytes) -> float:
        value = self.stamps.get(raw)
        if value is None:
            text = raw.decode()
            value = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            self.stamps[raw] = value
        return value

    def connect(self, port: int) -> None:
        started = time.time()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            self.errors[name] = self.errors.get(name, 0) + 1
            return
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, Client(sock, started))

    def close(self, client: Client, code: int | None) -> None:
        if not client.closed:
            client.closed = True
            client.close_code = code
            self.sel.unregister(client.sock)
            client.sock.close()

    def poll(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            client = key.data
            if client is None:
                continue
            self.read(client)

    def read(self, client: Client) -> None:
        sock = client.sock
        try:
            data, anc, _, _ = sock.recvmsg(1 << 18, ANC_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(client, 1006)
            return
        if not data:
            self.close(client, 1006)
            return
        kernel = 0.0
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(raw[:TIMESPEC.size])
                kernel = sec + nsec * 1e-9
        if not kernel:
            kernel = time.time()
        buf = client.buf
        buf += data
        if not client.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[9:12])
            if not buf.startswith(b"HTTP/1.1 101"):
                self.refused[status.decode()] = self.refused.get(status.decode(), 0) + 1
                self.close(client, None)
                return
            client.upgraded = True
            self.handshakes += 1
            del buf[:end + 4]
        self.frames(client, buf, kernel)

    def frames(self, client: Client, buf: bytearray, kernel: float) -> None:
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            end = pos + head + n
            if end > size:
                break
            start = pos + head
            if opcode == 1:
                client.messages += 1
                match = STAMP.search(buf, start, min(end, start + 80))
                if match is not None:
                    raw = bytes(match.group(1))
                    at = self.epoch(raw)
                    if at < client.started - 0.001:
                        self.backlog += 1
                    elif raw not in client.seen:
                        client.seen[raw] = kernel - at
                        self.live += 1
            elif opcode == 9:
                client.sock.send(PONG)
            elif opcode == 8:
                code = (buf[start] << 8 | buf[start + 1]) if n >= 2 else 1005
                with contextlib.suppress(OSError):
                    client.sock.send(CLOSE_REPLY)
                self.close(client, code)
                return
            pos = end
        if pos:
            del buf[:pos]

    def clients(self) -> list[Client]:
        return [key.data for key in self.sel.get_map().values() if key.data is not None]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    port, n, ramp = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    reader = Reader()
    everyone: list[Client] = []
    begun = time.monotonic()
    deadline = begun + LIFETIME
    step = ramp / max(1, n)
    made = 0
    while made < n:
        due = begun + made * step
        now = time.monotonic()
        if now >= due:
            reader.connect(port)
            made += 1
            continue
        reader.poll(min(0.05, due - now))
    everyone = reader.clients()
    settle = time.monotonic() + 30
    while reader.handshakes + sum(reader.refused.values()) < len(everyone) \
            and time.monotonic() < settle:
        reader.poll(0.05)
    print(json.dumps({"ready": reader.handshakes, "refused": reader.refused,
                      "errors": reader.errors,
                      "connect_seconds": time.monotonic() - begun}), flush=True)
    reader.sel.register(sys.stdin, selectors.EVENT_READ, None)
    cpu0 = os.times()
    while time.monotonic() < deadline:
        ready = reader.sel.select(1.0)
        for key, _ in ready:
            if key.data is not None:
                reader.read(key.data)
                continue
            line = sys.stdin.readline()
            if not line:
                return 0
            if line.startswith("count"):
                print(json.dumps({"live": reader.live}), flush=True)
            elif line.startswith("report"):
                _, t0, t1 = line.split()
                print(json.dumps(report(reader, everyone, float(t0), float(t1), cpu0)),
                      flush=True)
    return 0


def report(reader: Reader, everyone: list[Client], t0: float, t1: float,
           cpu0: os.times_result) -> dict[str, object]:
    window = sorted((at, raw) for raw, at in reader.stamps.items() if t0 <= at <= t1)
    index = {raw: i for i, (_, raw) in enumerate(window)}
    latencies: list[float] = []
    slowest: list[float] = [0.0] * len(window)  # per tick: its latest delivery here
    fastest: list[float] = [math.inf] * len(window)  # and its earliest
    seen: list[list[int]] = []
    dropped: dict[str, int] = {}
    for client in everyone:
        if client.closed:
            key = str(client.close_code)
            dropped[key] = dropped.get(key, 0) + 1
            continue
        if not client.upgraded:
            continue
        got = []
        for raw, latency in client.seen.items():
            i = index.get(raw)
            if i is not None:
                got.append(i)
                latencies.append(latency)
                if latency > slowest[i]:
                    slowest[i] = latency
                if latency < fastest[i]:
                    fastest[i] = latency
        seen.append(got)
    cpu = os.times()
    return {
        "window": [at for at, _ in window],
        "seen": seen,
        "latencies": latencies,
        "slowest": slowest,
        "fastest": [None if math.isinf(x) else x for x in fastest],
        "dropped": dropped,
        "backlog": reader.backlog,
        "cpu": (cpu.user - cpu0.user) + (cpu.system - cpu0.system),
    }


if __name__ == "__main__":
    sys.exit(main())
