"""A served dashboard in a child process with a low descriptor limit, and ways to flood it.

The child lowers its own soft ``RLIMIT_NOFILE`` before importing anything, then runs
``hyperdash serve``; its log goes to a file (a pipe nobody reads would block a spinning
server and hide the spin). Flood connections come from other loopback addresses
(127.0.0.2 and up) so that a probe from 127.0.0.1 is a different client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD = """
import resource, sys
soft = int(sys.argv[1])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
from hyperdash_otel.cli import main
sys.exit(main(sys.argv[2:]))
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """``hyperdash serve`` with ``RLIMIT_NOFILE`` lowered to ``nofile``."""

    def __init__(self, log_path: Path, *args: str, nofile: int = 256,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(nofile), "serve", "--port", "0",
             "--log-level", "warning", *args],
            stdout=subprocess.PIPE, stderr=self._log, env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()  # the URL, printed once serving
        assert line.startswith("http://127.0.0.1:"), f"no URL: {line!r} {self.log()}"
        self.port = int(line.rsplit(":", 1)[1].rstrip("/"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> int:
        return len(self.log().splitlines())

    def get(self, path: str, *, timeout: float = 5.0, source: str = "127.0.0.1"
            ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=(source, 0))
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, json.loads(body) if path != "/" else body
        finally:
            conn.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def half_open(port: int, count: int, *, addresses: int = 1, partial_every: int = 2,
              deadline: float = 20.0) -> list[socket.socket]:
    """``count`` connections that never complete a request, from ``addresses`` loopback
    addresses (127.0.0.2, .3, ...). Every ``partial_every``-th one sends half a request
    head (slowloris), the rest nothing (0: none sends). Connecting is bounded by
    ``deadline`` seconds in all."""
    opened: list[socket.socket] = []
    stop = time.monotonic() + deadline
    try:
        for i in range(count):
            if time.monotonic() > stop:
                raise AssertionError(f"opened only {i} of {count} connections in {deadline}s")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            opened.append(sock)
            sock.bind((f"127.0.0.{2 + i % addresses}", 0))
            sock.settimeout(max(0.1, stop - time.monotonic()))
            sock.connect(("127.0.0.1", port))
            if partial_every and i % partial_every == partial_every - 1:
                with contextlib.suppress(OSError):  # the server may have refused it already
                    sock.send(b"GET /api/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


SCRAPERS = """
import asyncio, sys
port, count, accept = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nAccept: {accept}\\r\\n"
                 "Connection: close\\r\\n\\r\\n".encode())
    try:
        answer = await reader.read()
    finally:
        writer.close()
    return answer.split(b" ", 2)[1].decode() + (" series" if b'vm="vm-0' in answer else "")

async def main():
    answers = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 120)
    for answer in answers:
        print(answer)

asyncio.run(main())
"""


def scrape_from_another_process(port: int, count: int, accept: str) -> list[str]:
    """``count`` concurrent ``GET /metrics`` from a child process (its own GIL, as real
    scrapers have); each answer's status, plus " series" when the user's series were in it."""
    done = subprocess.run(
        [sys.executable, "-c", SCRAPERS, str(port), str(count), accept],
        capture_output=True, text=True, timeout=150, check=True,
    )
    return done.stdout.splitlines()
