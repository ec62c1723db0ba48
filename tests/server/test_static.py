"""/static/*: served from memory, with what a browser and a cache rely on.

gzip made once and the identity bytes, a strong ETag per representation, 304s, Vary,
Content-Length, byte ranges, HEAD, a changed file picked up, and the cache's bounds.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rawhttp import RawResponse, request
from support import wait_until

from hyperdash_otel.server.app import Assets
from hyperdash_otel.server.security import HSTS
from hyperdash_otel.server.static import OutsideRoot, StaticFiles, accepts_gzip, parse_range

MAIN = "/static/js/main.js"
CHART = "/static/vendor/chart.umd.js"
GZ = {"Accept-Encoding": "gzip, deflate, br"}


def file_of(path: str) -> bytes:
    assets = Assets.locate()
    if path == CHART:
        return assets.chart_js.read_bytes()
    return (assets.static / path.removeprefix("/static/")).read_bytes()


def assert_json_error(resp: RawResponse, status: int, fragment: str = "") -> None:
    assert resp.status == status, (resp.status, resp.body[:200])
    assert resp.header("Content-Type") == "application/json"
    body = resp.json()
    assert body["status"] == status and fragment in body["error"], body


@pytest.fixture
def port(serve: Callable[..., Any]) -> int:
    return int(serve().port)


@pytest.fixture
def own_files(serve: Callable[..., Any], tmp_path: Path) -> tuple[int, Path]:
    """A server whose static directory is a copy we may edit."""
    real = Assets.locate()
    web = tmp_path / "web"
    shutil.copytree(real.static, web / "static")
    (web / "templates").mkdir()
    assets = Assets(web / "templates", web / "static", real.chart_js)
    return int(serve(runner={"assets": assets}).port), web / "static"


@pytest.mark.parametrize("path", [MAIN, CHART])
def test_gzip_when_accepted_identity_otherwise(port: int, path: str) -> None:
    plain = request(port, path)
    packed = request(port, path, headers=GZ)
    assert plain.status == packed.status == 200
    assert plain.header("Content-Encoding") is None and plain.body == file_of(path)
    assert packed.header("Content-Encoding") == "gzip"
    assert gzip.decompress(packed.body) == file_of(path)
    assert len(packed.body) < len(plain.body)
    for resp in (plain, packed):
        assert resp.header("Content-Length") == str(len(resp.body))
        assert resp.headers["vary"] == ["Accept-Encoding"]  # once, not once per layer
        assert "javascript" in (resp.header("Content-Type") or "")
        assert resp.header("X-Content-Type-Options") == "nosniff"


def test_a_refused_gzip_is_not_sent(port: int) -> None:
    resp = request(port, MAIN, headers={"Accept-Encoding": "gzip;q=0, br"})
    assert resp.header("Content-Encoding") is None and resp.body == file_of(MAIN)


def test_strong_etags_one_per_representation(port: int) -> None:
    plain, packed = request(port, MAIN), request(port, MAIN, headers=GZ)
    tags = plain.header("ETag"), packed.header("ETag")
    assert all(t and t.startswith('"') and t.endswith('"') for t in tags), tags
    assert tags[0] != tags[1]
    assert request(port, MAIN).header("ETag") == tags[0]  # stable between requests
    assert request(port, CHART).header("ETag") not in tags


@pytest.mark.parametrize("form", ["{}", "W/{}", '"other", {}', "*"])
def test_if_none_match_gives_304(port: int, form: str) -> None:
    for extra in ({}, GZ):
        tag = request(port, MAIN, headers=extra).header("ETag")
        resp = request(port, MAIN, headers={**extra, "If-None-Match": form.format(tag)})
        assert resp.status == 304 and resp.body == b""
        assert resp.header("ETag") == tag and resp.header("Content-Encoding") is None


def test_a_stale_etag_gets_the_file(port: int) -> None:
    plain = request(port, MAIN)
    # The identity tag does not validate the gzip representation, nor a made-up one.
    for tag in ('"nope"', plain.header("ETag")):
        resp = request(port, MAIN, headers={**GZ, "If-None-Match": str(tag)})
        assert resp.status == 200 and gzip.decompress(resp.body) == file_of(MAIN)


def test_if_modified_since(port: int) -> None:
    last = request(port, MAIN).header("Last-Modified")
    assert last is not None
    assert request(port, MAIN, headers={"If-Modified-Since": last}).status == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert request(port, MAIN, headers={"If-Modified-Since": old}).status == 200
    assert request(port, MAIN, headers={"If-Modified-Since": "yesterday"}).status == 200
    # If-None-Match wins when both are sent (RFC 9110 13.2.2).
    both = {"If-Modified-Since": last, "If-None-Match": '"nope"'}
    assert request(port, MAIN, headers=both).status == 200


def test_head_has_the_headers_and_no_body(port: int) -> None:
    for extra in ({}, GZ):
        got = request(port, CHART, headers=extra)
        head = request(port, CHART, method="HEAD", headers=extra)
        assert head.status == 200 and head.body == b""
        for name in ("Content-Length", "Content-Encoding", "ETag", "Content-Type", "Vary"):
            assert head.header(name) == got.header(name), name


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("bytes=0-9", 0, 9), ("bytes=10-", 10, None), ("bytes=-7", -7, None),
    ("bytes=5-999999999", 5, None),
])
def test_a_byte_range(port: int, spec: str, first: int, last: int | None) -> None:
    data = file_of(MAIN)
    want = data[first:] if last is None else data[first:last + 1]
    resp = request(port, MAIN, headers={**GZ, "Range": spec})  # ranges: identity bytes
    assert resp.status == 206 and resp.body == want
    assert resp.header("Content-Encoding") is None
    assert resp.header("Content-Length") == str(len(want))
    start = first % len(data)
    assert resp.header("Content-Range") == f"bytes {start}-{start + len(want) - 1}/{len(data)}"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "items=0-9", "bytes=9-2", "bytes=x-"])
def test_a_range_we_do_not_serve_gets_the_whole_file(port: int, spec: str) -> None:
    resp = request(port, MAIN, headers={"Range": spec})
    assert resp.status == 200 and resp.body == file_of(MAIN)


def test_if_range(port: int) -> None:
    tag = request(port, MAIN).header("ETag")
    ok = request(port, MAIN, headers={"Range": "bytes=0-3", "If-Range": str(tag)})
    assert ok.status == 206 and ok.body == file_of(MAIN)[:4]
    stale = request(port, MAIN, headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status == 200 and stale.body == file_of(MAIN)


def test_an_unsatisfiable_range_is_a_json_416(port: int) -> None:
    size = len(file_of(MAIN))
    resp = request(port, MAIN, headers={"Range": f"bytes={size}-"})
    assert_json_error(resp, 416, f"the file has {size} bytes")
    assert resp.header("Content-Range") == f"bytes */{size}"


@pytest.mark.parametrize(("path", "status"), [
    ("/static/js", 404), ("/static/", 404), ("/static/nope.js", 404),
    ("/static/js/main.js/x", 404), ("/static/..%2f..%2fpyproject.toml", 403),
])
def test_what_is_not_a_file_here(port: int, path: str, status: int) -> None:
    assert_json_error(request(port, path, headers=GZ), status)


def test_a_link_out_of_the_directory_is_refused(own_files: tuple[int, Path],
                                                tmp_path: Path) -> None:
    port, static = own_files
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    (static / "leak.txt").symlink_to(secret)
    assert_json_error(request(port, "/static/leak.txt"), 403)


def test_a_fifo_is_a_404_and_does_not_hang(own_files: tuple[int, Path]) -> None:
    port, static = own_files
    os.mkfifo(static / "pipe.js")
    assert_json_error(request(port, "/static/pipe.js"), 404)
    assert request(port, MAIN).status == 200  # the loop was never blocked


def test_a_changed_file_is_picked_up(own_files: tuple[int, Path]) -> None:
    port, static = own_files
    target = static / "js" / "main.js"
    before = request(port, MAIN, headers=GZ)
    target.write_bytes(b"// edited\n" * 100)
    after = request(port, MAIN, headers=GZ)
    assert gzip.decompress(after.body) == b"// edited\n" * 100
    assert after.header("ETag") != before.header("ETag")
    stale = request(port, MAIN, headers={**GZ, "If-None-Match": str(before.header("ETag"))})
    assert stale.status == 200
    target.unlink()
    assert_json_error(request(port, MAIN), 404)


# -- the cache itself -------------------------------------------------------------------------


def files(tmp_path: Path, sizes: dict[str, int]) -> StaticFiles:
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    return StaticFiles(str(tmp_path), max_entries=3, max_bytes=10_000, max_file=4_000)


def test_a_file_is_read_once_while_unchanged(tmp_path: Path) -> None:
    cache = files(tmp_path, {"a.js": 1000})
    first = cache.get("a.js")
    assert first is not None and cache.get("a.js") is first and cache.reads == 1


def test_the_cache_keeps_at_most_max_entries(tmp_path: Path) -> None:
    cache = files(tmp_path, {f"{i}.bin": 10 for i in range(5)})
    for i in range(5):
        assert cache.get(f"{i}.bin") is not None
    assert len(cache) == 3
    cache.get("4.bin")
    assert cache.reads == 5  # the newest are kept
    cache.get("0.bin")
    assert cache.reads == 6  # the oldest was dropped


def test_the_cache_keeps_at_most_max_bytes(tmp_path: Path) -> None:
    cache = files(tmp_path, {f"{i}.bin": 3_000 for i in range(3)})
    for i in range(3):
        assert cache.get(f"{i}.bin") is not None
    assert len(cache) == 3 and cache.cached_bytes == 9_000
    (tmp_path / "big.bin").write_bytes(b"y" * 3_500)
    assert cache.get("big.bin") is not None
    assert cache.cached_bytes == 9_500 and len(cache) == 3
    reads = cache.reads
    cache.get("0.bin")  # the least recently served went
    assert cache.reads == reads + 1


def test_a_file_over_max_file_is_served_not_kept(tmp_path: Path) -> None:
    cache = files(tmp_path, {"huge.js": 5_000})
    asset = cache.get("huge.js")
    assert asset is not None and asset.body == b"x" * 5_000 and asset.gzipped is None
    assert len(cache) == 0 and cache.cached_bytes == 0
    cache.get("huge.js")
    assert cache.reads == 2


def test_paths_that_lead_out_are_refused(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "outside.js").write_text("x")
    cache = StaticFiles(str(inner))
    with pytest.raises(OutsideRoot):
        cache.get("../outside.js")
    with pytest.raises(ValueError, match="NUL"):
        cache.get("a\x00b")
    assert cache.get("") is None and cache.get("nope") is None


@pytest.mark.parametrize(("header", "accepted"), [
    ("gzip", True), ("GZIP;q=0.5", True), ("gzip;q=0", False), ("br, *;q=0.1", True),
    ("*;q=0, gzip", True), ("identity", False), ("", False), ("gzip;q=x", False),
])
def test_accept_encoding(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


@pytest.mark.parametrize(("header", "size", "expected"), [
    ("bytes=0-0", 1, (0, 0)), ("bytes=-5", 3, (0, 2)), ("bytes=-0", 3, False),
    ("bytes=0-", 0, False), ("bytes=3-", 3, False), ("bytes= 1-2", 9, (1, 2)),
    ("bytes=-", 9, None), ("bytes=1-2, 4-5", 9, None),
])
def test_parse_range(header: str, size: int, expected: object) -> None:
    got = parse_range(header, size)
    assert (got if got is None or got is False else (got.start, got.end)) == expected


# -- the answers written below the RequestHandler layer (StaticFast) --------------------------


def test_every_answer_carries_the_security_headers(port: int) -> None:
    tag = request(port, MAIN).header("ETag")
    answers = [request(port, MAIN), request(port, MAIN, method="HEAD"),
               request(port, MAIN, headers={"If-None-Match": str(tag)}),
               request(port, MAIN, headers={"Range": "bytes=0-1"}),
               request(port, "/static/nope.js")]
    assert [a.status for a in answers] == [200, 200, 304, 206, 404]
    for resp in answers:
        assert resp.header("X-Content-Type-Options") == "nosniff"
        assert resp.header("Content-Security-Policy")
        assert resp.header("Server") is None and resp.header("Date")
    assert answers[2].header("Content-Type") is None  # a 304 names no representation


def test_the_access_log_has_a_line_per_answer(port: int,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def lines() -> list[str] | None:
        got = [r.getMessage() for r in caplog.records if r.name == "hyperdash_otel.access"]
        return got if len(got) >= 2 else None

    with caplog.at_level(logging.INFO, logger="hyperdash_otel.access"):
        request(port, f"{MAIN}?token=never-logged-secret", headers=GZ)
        request(port, MAIN, method="HEAD")
        first, second = wait_until(lines, what="two access lines")[:2]
    assert first.startswith(f"200 GET {MAIN}?token=") and "never-logged-secret" not in first
    assert second.startswith(f"200 HEAD {MAIN} (127.0.0.1)")


def test_hsts_on_a_file_under_tls(serve: Callable[..., Any],
                                  certificate: tuple[str, str]) -> None:
    cert, key = certificate
    s = serve(tls_certfile=cert, tls_keyfile=key)
    conn = http.client.HTTPSConnection(
        "127.0.0.1", s.port, context=ssl.create_default_context(cafile=cert), timeout=10)
    try:
        conn.request("GET", MAIN, headers=GZ)
        resp = conn.getresponse()
        assert gzip.decompress(resp.read()) == file_of(MAIN)
        assert resp.status == 200 and resp.getheader("Strict-Transport-Security") == HSTS
    finally:
        conn.close()
