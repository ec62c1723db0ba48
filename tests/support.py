"""What every test suite shares: polling with a deadline, JSON over HTTP, the CLI as a
process, and series values read with prometheus_client's own text parser.

Import it as ``support`` (tests/ is on the path through tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

HYPERDASH = [sys.executable, "-m", "hyperdash_otel"]
"""The command line of the ``hyperdash`` CLI, run from this interpreter."""


def on_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where nothing may be skipped."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """A real part this test needs is missing: fail on CI, skip elsewhere, with the reason."""
    if on_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, package: str = "prometheus") -> str:
    """The binary's path; skip (locally) or fail (on CI) when it is not installed.
    ``package``: the Debian package that ships it, for the reason."""
    path = shutil.which(name)
    if path is not None:
        return path
    also = ", which ships promtool too" if package == "prometheus" else ""
    unavailable(f"`{name}` is not on PATH; install Debian's {package} package "
                f"(`make system-deps` or `apt-get install {package}`{also})")
    raise AssertionError("unreachable")  # pytest.skip/fail raise


def self_signed_certificate(tmp: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 in ``tmp``, made by Debian's openssl:
    (cert, key). Without openssl: a failure on CI, a skip elsewhere."""
    if shutil.which("openssl") is None:
        unavailable("needs the openssl command (apt-get install openssl; `make system-deps`)")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def over_tls(url: str, context: ssl.SSLContext, while_open: Callable[[str], Any]) -> None:
    """Opens the ``wss://`` ``url`` and calls ``while_open`` with its first message while the
    connection is still open.

    With websockets' asyncio client, never its sync one: the sync client reads in a thread of
    its own while the caller's thread writes, and an SSL socket used from two threads at
    once fails now and then (``ssl.SSLError: [SSL] internal error`` in the handshake's
    write, seen on Python 3.10 in CI). The asyncio client does both on one thread.
    """
    from websockets.asyncio.client import connect

    async def session() -> None:
        async with connect(url, ssl=context, proxy=None, compression=None,
                           open_timeout=10) as client:
            first = await asyncio.wait_for(client.recv(), 5)
            while_open(first if isinstance(first, str) else first.decode())

    asyncio.run(session())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "",
               *, every: float = 0.005) -> Any:
    """Poll ``predicate`` every ``every`` seconds until it returns something truthy, and
    return that; fail after ``timeout`` seconds, naming ``what`` (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(every)


def get_json(url: str, timeout: float = 5.0) -> Any:
    """The decoded JSON body of a GET (an HTTP error status raises)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def get_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode("utf-8"))


def hyperdash(*args: str, env: dict[str, str] | None = None,
              timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (``timeout`` bounds it) and capture its output."""
    return subprocess.run([*HYPERDASH, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name`` in a Prometheus text exposition, with its labels, as
    prometheus_client's parser reads them (``name`` is the sample's name: with its
    ``_total``, ``_count`` or ``_bucket`` suffix)."""
    return [(dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels``; None if there
    is none, an AssertionError if several match."""
    found = [value for have, value in samples(text, name)
             if all(have.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{len(found)} samples of {name} match {labels}"
    return found[0] if found else None
