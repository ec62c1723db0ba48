"""The page's static files, served from memory: identity and gzip bodies, built once.

Every visit to the page fetches a dozen scripts and Chart.js (200 KB). Tornado's
``StaticFileHandler`` with ``compress_response`` reads each file and gzips it anew on every
request: slower than building the answer per request by hand. :class:`StaticFiles` keeps,
per file, its bytes, their gzip (level 9, made once) and a strong ETag, so a request costs
one ``stat`` and a write.

**When a file changes.** Each request stats the file (one system call) and compares its
modification time, size and inode with the cached entry's; a file edited in a checkout is
picked up at the next request, with a new ETag. Nothing is read at start: a file is read
(and gzipped) on its first request.

**Bounds.** At most :data:`MAX_ENTRIES` files and :data:`MAX_CACHE_BYTES` of bodies
(identity plus gzip) are kept, the least recently served dropped first; a file larger than
:data:`MAX_CACHED_FILE` is never kept: it is read on each request and sent uncompressed.
The package's own files are about 0.3 MB, gzip included.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

__all__ = [
    "MAX_CACHED_FILE",
    "MAX_CACHE_BYTES",
    "MAX_ENTRIES",
    "MAX_HEADS",
    "Asset",
    "ByteRange",
    "DateLine",
    "HeadBlocks",
    "OutsideRoot",
    "StaticFiles",
    "accepts_gzip",
    "etag_matches",
    "modified_since",
    "parse_range",
]

MAX_ENTRIES = 256
"""Files kept in memory per :class:`StaticFiles` (the package has about a dozen)."""
MAX_CACHE_BYTES = 32 * 1024 * 1024
"""Bytes of bodies, identity and gzip together, kept per :class:`StaticFiles`."""
MAX_CACHED_FILE = 4 * 1024 * 1024
"""A file larger than this is read per request, sent uncompressed, and never kept."""
MAX_HEADS = 1024
"""Pre-built response heads kept per :class:`HeadBlocks` (a file has about eight: 200 and
304, identity and gzip, over http and https)."""
GZIP_MIN = 256
"""Smaller files are sent as they are: gzip's own header would eat most of the gain."""

COMPRESSIBLE = frozenset({
    "application/javascript", "application/json", "application/xml", "image/svg+xml",
    "application/wasm",
})


class OutsideRoot(ValueError):
    """The path leads out of the static directory (``..``, or a link pointing away)."""


@dataclass(frozen=True)
class Asset:
    """One file as it is served: its bytes, their gzip (or None) and validators."""

    body: bytes
    gzipped: bytes | None
    etag: str
    """Strong ETag of the identity bytes, quotes included."""
    gzip_etag: str
    """Strong ETag of the gzip bytes (a different representation, so a different tag)."""
    content_type: str
    last_modified: str
    """``Last-Modified``: the file's modification time, as an HTTP date."""
    mtime: float
    """Whole seconds, as ``If-Modified-Since`` compares them."""
    key: tuple[int, int, int]
    """``(st_mtime_ns, st_size, st_ino)`` the entry was read at."""

    @property
    def cost(self) -> int:
        return len(self.body) + (len(self.gzipped) if self.gzipped is not None else 0)


def _content_type(path: str) -> str:
    guessed, encoding = mimetypes.guess_type(path)
    if guessed is None or encoding is not None:  # .gz and such: opaque bytes
        return "application/octet-stream"
    return guessed


def _compressible(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in COMPRESSIBLE


def build_asset(path: str, data: bytes, st: os.stat_result, *, compress: bool = True) -> Asset:
    """The served form of ``data`` (the file at ``path`` as ``st`` describes it)."""
    content_type = _content_type(path)
    digest = hashlib.sha256(data).hexdigest()[:32]
    gzipped = None
    if compress and len(data) >= GZIP_MIN and _compressible(content_type):
        # mtime=0: the same file gives the same bytes, and so the same ETag, in every process.
        packed = gzip.compress(data, compresslevel=9, mtime=0)
        if len(packed) < len(data):
            gzipped = packed
    return Asset(
        body=data, gzipped=gzipped, etag=f'"{digest}"', gzip_etag=f'"{digest}-gzip"',
        content_type=content_type, last_modified=formatdate(st.st_mtime, usegmt=True),
        mtime=float(int(st.st_mtime)), key=(st.st_mtime_ns, st.st_size, st.st_ino),
    )


class StaticFiles:
    """The files under ``root``, kept in memory within the bounds above (see the module)."""

    def __init__(self, root: str, *, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_CACHE_BYTES, max_file: int = MAX_CACHED_FILE) -> None:
        self.root = os.path.realpath(root)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_file = max_file
        self._entries: OrderedDict[str, Asset] = OrderedDict()
        self._bytes = 0
        self.reads = 0
        """Files read from disk so far (a cached answer reads nothing)."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def get(self, relative: str) -> Asset | None:
        """The file at ``relative`` (a URL path under the root, already decoded), or None
        when there is no such regular file. Raises :class:`OutsideRoot` for a path that
        leads out of the root, ValueError for one no file system takes (a NUL byte)."""
        if "\x00" in relative:
            raise ValueError("NUL in a path")
        entry = self._entries.get(relative)
        if entry is not None:
            try:
                st = os.stat(os.path.join(self.root, relative))
            except OSError:
                self._forget(relative)
                return None
            if (st.st_mtime_ns, st.st_size, st.st_ino) == entry.key:
                self._entries.move_to_end(relative)
                return entry
            self._forget(relative)
        return self._load(relative)

    def _load(self, relative: str) -> Asset | None:
        full = os.path.realpath(os.path.join(self.root, relative))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise OutsideRoot(relative)
        try:
            # Stat before opening: opening a FIFO would wait for a writer.
            if not stat.S_ISREG(os.stat(full).st_mode):
                return None  # a directory: never a listing
            with open(full, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError:  # gone, unreadable, a name too long for the file system...
            return None
        self.reads += 1
        keep = len(data) <= self.max_file
        entry = build_asset(full, data, st, compress=keep)
        if keep and entry.cost <= self.max_bytes:
            self._entries[relative] = entry
            self._bytes += entry.cost
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.cost
        return entry

    def _forget(self, relative: str) -> None:
        entry = self._entries.pop(relative, None)
        if entry is not None:
            self._bytes -= entry.cost


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (a ``q=0`` refuses it).

    >>> accepts_gzip("gzip, deflate, br"), accepts_gzip("gzip;q=0, br"), accepts_gzip("*")
    (True, False, True)
    >>> accepts_gzip(None), accepts_gzip("identity")
    (False, False)
    """
    if not header:
        return False
    header = header.lower()
    if "gzip" not in header and "*" not in header:
        return False
    star = False
    for item in header.split(","):
        name, _, params = item.partition(";")
        name = name.strip()
        if name not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name == "*":
            star = q > 0
        else:
            return q > 0
    return star


def etag_matches(header: str, etags: tuple[str, ...]) -> bool:
    """``If-None-Match`` against the ETags of what would be sent (weak comparison, as
    RFC 9110 section 13.1.2 asks: ``W/"x"`` matches ``"x"``).

    >>> etag_matches('W/"a", "b"', ('"b"',)), etag_matches("*", ('"c"',))
    (True, True)
    >>> etag_matches('"a"', ('"b"',))
    False
    """
    header = header.strip()
    if header == "*":
        return True
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag in etags:
            return True
    return False


def modified_since(header: str, mtime: float) -> bool:
    """Whether a file modified at ``mtime`` is newer than an ``If-Modified-Since`` date
    (an unreadable date: yes, send it)."""
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return True
    return mtime > since


@dataclass(frozen=True)
class ByteRange:
    """A satisfiable single range: bytes ``start`` to ``end`` inclusive."""

    start: int
    end: int


def parse_range(header: str, size: int) -> ByteRange | None | bool:
    """One ``Range`` header against a body of ``size`` bytes: a :class:`ByteRange`, None to
    ignore it (not bytes, malformed, or several ranges: the whole body is sent, as RFC
    9110 section 14.2 allows), or False when it cannot be satisfied (416).

    >>> parse_range("bytes=0-9", 100), parse_range("bytes=-10", 100)
    (ByteRange(start=0, end=9), ByteRange(start=90, end=99))
    >>> parse_range("bytes=95-", 100), parse_range("bytes=100-", 100)
    (ByteRange(start=95, end=99), False)
    >>> parse_range("bytes=0-1,5-6", 100) is None, parse_range("items=1-2", 100) is None
    (True, True)
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        length = int(last)
        if length == 0 or size == 0:
            return False
        return ByteRange(max(0, size - length), size - 1)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        return False
    return ByteRange(start, size - 1 if last == "" else min(int(last), size - 1))


class DateLine:
    """A response's ``Date`` header line as bytes (``Date: ...\\r\\n``), formatted once per
    second: for the heads written without Tornado's ``write_headers``."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self._line


class HeadBlocks:
    """A response's head as bytes, built once per distinct (status, headers) and kept, so
    a cached file's answer formats nothing but its ``Date`` line.

    ``head(status, reason, date, headers)`` gives the same bytes Tornado's
    ``HTTP1Connection.write_headers`` writes for an ``HTTPHeaders`` filled with
    ``Date: date`` and then ``headers`` in order (names normalised as ``HTTPHeaders`` does,
    a repeated name's last value kept in its first place); ``tests/server`` holds the two
    to each other. At most :data:`MAX_HEADS` heads are kept, all forgotten at once when
    full (a new ETag or ``Last-Modified`` makes new ones; the old are never asked again).
    """

    def __init__(self, *, max_heads: int = MAX_HEADS) -> None:
        self.max_heads = max_heads
        self._heads: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}
        self._date = DateLine()

    def __len__(self) -> int:
        return len(self._heads)

    def head(self, status: int, reason: str, now: float,
             headers: tuple[tuple[str, str], ...]) -> bytes:
        """The head (status line through the blank line) for ``headers``, dated ``now``."""
        key = (status, headers)
        rest = self._heads.get(key)
        if rest is None:
            rest = self._build(headers)
            if len(self._heads) >= self.max_heads:
                self._heads.clear()
            self._heads[key] = rest
        return b"HTTP/1.1 %d %s\r\n" % (status, reason.encode()) + self._date(now) + rest

    @staticmethod
    def _build(headers: tuple[tuple[str, str], ...]) -> bytes:
        # Tornado's HTTPHeaders: normalised names, a set replaces an earlier value in place.
        merged: dict[str, str] = {}
        for name, value in headers:
            merged[_normal_name(name)] = value
        lines = []
        for name, value in merged.items():
            line = f"{name}: {value}".encode("latin1")
            if b"\r" in line or b"\n" in line:
                raise ValueError(f"Illegal characters (CR or LF) in header: {line!r}")
            lines.append(line + b"\r\n")
        return b"".join(lines) + b"\r\n"


def _normal_name(name: str) -> str:
    """``HTTPHeaders``' spelling of a header name: ``content-type`` -> ``Content-Type``."""
    return "-".join(part.capitalize() for part in name.split("-"))
