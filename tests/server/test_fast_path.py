"""The fan-out's writes on Tornado's internals, or on its public API: which one runs, and
when. (``make test-fallback`` runs the whole server suite with the fast path forced off.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import tornado

from hyperdash_otel.server import _tornado_fast as fast
from hyperdash_otel.server.handlers import StreamHandler
from hyperdash_otel.server.stream import PING_FRAME, text_frame


def test_the_handler_writes_on_the_path_the_environment_and_version_chose() -> None:
    forced_off = os.environ.get(fast.ENV, "").strip() == "0"
    assert fast.ENABLED is (not forced_off and tornado.version_info[:2] in fast.WRITTEN_FOR)
    expected = fast.FastWrites if fast.ENABLED else fast.PublicWrites
    assert issubclass(StreamHandler, expected)
    other = fast.PublicWrites if fast.ENABLED else fast.FastWrites
    assert not issubclass(StreamHandler, other)


def test_the_installed_tornado_is_one_the_fast_path_was_written_for() -> None:
    """pyproject.toml's bound and WRITTEN_FOR move together: CI runs the fast path."""
    assert tornado.version_info[:2] in fast.WRITTEN_FOR


def test_another_tornado_version_falls_back_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(fast.ENV, raising=False)
    monkeypatch.setattr(tornado, "version_info", (6, 99, 0, 0))
    monkeypatch.setattr(tornado, "version", "6.99")
    with caplog.at_level(logging.WARNING, logger="hyperdash_otel.server"):
        assert fast.decide() is False
    (record,) = caplog.records
    assert "Tornado 6.99" in record.getMessage() and "public API" in record.getMessage()


@pytest.mark.parametrize(("value", "enabled"), [("0", False), ("1", True), ("", True)])
def test_the_environment_variable_is_read_at_import(value: str, enabled: bool) -> None:
    code = ("from hyperdash_otel.server import _tornado_fast as f, handlers as h; "
            "print(f.ENABLED, issubclass(h.StreamHandler, f.FastWrites))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, fast.ENV: value}, timeout=60, check=True)
    assert out.stdout.split() == [str(enabled), str(enabled)]


def test_split_frames_reads_back_every_frame_length() -> None:
    payloads = [b"", b"x" * 125, b"y" * 126, b"z" * 70_000]
    data = b"".join(text_frame(p) for p in payloads) + PING_FRAME
    assert list(fast.split_frames(data)) == [(1, p) for p in payloads] + [(9, b"")]
