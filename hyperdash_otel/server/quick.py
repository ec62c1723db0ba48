"""``/ws`` answered from a new connection's first request head, below Tornado's HTTP layer.

A connect storm pays, per client, for Tornado's HTTP/1.1 machinery before ``/ws``'s own
upgrade (:meth:`StreamHandler._upgrade_here
<hyperdash_otel.server.handlers.StreamHandler>`) even starts: a serving coroutine and its
task, an ``HTTP1Connection``, a parsed ``HTTPHeaders``, an ``HTTPServerRequest``, the
routing table, a ``RequestHandler`` with its default headers, and the coroutine that runs
it. :class:`QuickUpgrade` reads the first request head of each new plain-TCP connection
itself (:class:`~hyperdash_otel.server.listener.GuardedHTTPServer` asks it to) and
answers it when it is, byte for byte, the simple case:

* ``GET /ws HTTP/1.1`` with no query, or with ``?token=`` and a value that needs no
  decoding (letters, digits, ``-._~``), headers of printable ASCII in the plain
  ``Name: value`` form, none of the handshake's headers twice, no body;
* every check ``/ws`` makes passes: the Host allowlist, ``Upgrade``/``Connection``/
  ``Sec-WebSocket-Key``/``Sec-WebSocket-Version: 13``, the origin rule, the per-address
  request rate, the credentials when some are configured (a bearer token in the
  ``Authorization`` header or the query, or a user and password checked before), and a
  free place under ``max_clients``.

Then it writes the 101 the handler would (same headers, same order, same access log
line) with the replay, and the connection becomes a
:class:`~hyperdash_otel.server._tornado_fast.Connection`, as on the handler's path.

Anything else (another path or method, any other query, a header it does not read
plainly, a check that fails, a password to verify) goes to Tornado untouched: the
head is put back in front of the stream's buffer (:func:`~._tornado_fast.unread`) and
Tornado reads it as if nothing had. So every refusal, with its JSON body, status,
counters and log line, still comes from the handlers, and the quick path only ever says
yes. It changes nothing on the way to a no: the rate limit is only peeked
(:meth:`~hyperdash_otel.server.limits.RequestLimits.allows`) until the place is taken.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from tornado.iostream import IOStream
from tornado.websocket import WebSocketProtocol13

from .handlers import StreamHandler, credentials_verdict, open_upgraded
from .logs import log_answered
from .security import SECURITY_HEADERS, TOKEN_PARAMETER
from .static import DateLine

if TYPE_CHECKING:
    from .app import DashboardApp

__all__ = ["REQUEST_LINE", "QuickUpgrade", "parse_head"]

REQUEST_LINE = b"GET /ws HTTP/1.1\r\n"
"""The request line the quick path answers, besides :data:`_TOKEN_LINE`'s."""
_TOKEN_LINE = re.compile(rb"GET /ws\?token=([A-Za-z0-9._~-]+) HTTP/1\.1\r\n")
"""``/ws?token=...`` (how a browser's WebSocket presents the token), only with a value
that needs no decoding: any other query is Tornado's to read."""
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x20-\x7e]*?)[ \t]*")
"""``Name: value`` (an RFC 9110 token, then printable ASCII; no folded lines)."""
_READ = frozenset({b"host", b"upgrade", b"connection", b"sec-websocket-key",
                   b"sec-websocket-version", b"origin", b"authorization"})
"""The headers the checks read: each may appear once."""
_BODY = frozenset({b"content-length", b"transfer-encoding"})
"""Headers that announce a body: Tornado's to handle."""


def parse_head(head: bytes) -> dict[bytes, str] | None:
    """The headers ``/ws``'s checks read (lower-case names), from a request head that is
    the simple case; None for anything else. A ``?token=`` value comes back under
    ``b"?token"``.

    >>> parse_head(b"GET /ws HTTP/1.1\\r\\nHost: dash:8080\\r\\nUpgrade:  websocket \\r\\n\\r\\n")
    {b'host': 'dash:8080', b'upgrade': 'websocket'}
    >>> parse_head(b"GET /ws?token=t-1 HTTP/1.1\\r\\nHost: dash\\r\\n\\r\\n")
    {b'?token': 't-1', b'host': 'dash'}
    >>> parse_head(b"GET /ws?token=a%20b HTTP/1.1\\r\\nHost: dash\\r\\n\\r\\n") is None
    True
    >>> parse_head(b"GET /ws HTTP/1.1\\r\\nHost: a\\r\\nHost: b\\r\\n\\r\\n") is None
    True
    """
    if not head.endswith(b"\r\n\r\n"):
        return None
    found: dict[bytes, str] = {}
    if head.startswith(REQUEST_LINE):
        start = len(REQUEST_LINE)
    else:
        query = _TOKEN_LINE.match(head)
        if query is None:
            return None
        found[b"?token"] = query[1].decode("ascii")
        start = query.end()
    match = _HEADER_LINE.fullmatch
    for line in head[start:-4].split(b"\r\n"):
        parts = match(line)
        if parts is None:
            return None
        name = parts[1].lower()
        if name in _READ:
            if name in found:
                return None
            found[name] = parts[2].decode("ascii")
        elif name in _BODY:
            return None
    return found


class QuickUpgrade:
    """Answers ``/ws`` upgrades from a request head (see the module), for one application.

    :meth:`answer` is the whole interface: True when it took the connection, False when
    Tornado should serve the head.
    """

    def __init__(self, app: DashboardApp) -> None:
        self.app = app
        self.ctx = app.ctx
        self.taken = 0
        """Upgrades answered here (the rest went to Tornado), for tests and benches."""
        self._date = DateLine()
        # The 101's headers, as Tornado's RequestHandler would order them: Date (from
        # clear()), the security headers (set_default_headers; HSTS only under TLS, which
        # never comes here), the upgrade's three, then Vary from the gzip transform.
        self._before = "".join(f"{n}: {v}\r\n" for n, v in SECURITY_HEADERS).encode("latin1")
        self._after = b"\r\nVary: Accept-Encoding\r\n\r\n"

    def _head(self, key: str) -> bytes:
        return b"".join((
            b"HTTP/1.1 101 Switching Protocols\r\n", self._date(time.time()), self._before,
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-Websocket-Accept: ",
            WebSocketProtocol13.compute_accept_value(key).encode("ascii"), self._after,
        ))

    def answer(self, head: bytes, stream: IOStream, address: Any) -> bool:
        """Upgrade ``stream`` to ``/ws`` if ``head`` is the simple case and passes every
        check; False (nothing changed, nothing counted) otherwise."""
        started = time.time()
        headers = parse_head(head)
        if headers is None:
            return False
        host = headers.get(b"host")
        key = headers.get(b"sec-websocket-key")
        if (not host or not key or not self.app.host_allowed(host)
                or headers.get(b"upgrade", "").lower() != "websocket"
                or headers.get(b"sec-websocket-version") != "13"
                or "upgrade" not in {v.strip().lower() for v in
                                     headers.get(b"connection", "").split(",")}):
            return False
        ctx = self.ctx
        if not ctx.origins.allows(headers.get(b"origin"), host=host, scheme="http"):
            return False
        ip = address[0] if isinstance(address, tuple) and address else ""
        limits = ctx.limits if StreamHandler.rate_limited else None
        if limits is not None and not limits.allows(ip):
            return False
        query_token = headers.get(b"?token")
        # True only: a password still to check (on a thread) is the handler's.
        if credentials_verdict(ctx, headers.get(b"authorization"), query_token) is not True:
            return False
        fanout = ctx.fanout
        if not fanout.reserve():
            return False
        if limits is not None and limits.check(ip) is not None:  # allows() said yes
            fanout.release()
            return False
        try:
            response = self._head(key)
        except BaseException:
            fanout.release()  # nothing holds the place yet
            raise
        uri = "/ws" if query_token is None else f"/ws?{TOKEN_PARAMETER}={query_token}"
        log_answered(101, "GET", uri, ip, 1000.0 * (time.time() - started))
        self.taken += 1
        # From here the Connection holds the place: it gives it back when its stream closes.
        open_upgraded(ctx, stream, response, self.app.settings)
        return True
