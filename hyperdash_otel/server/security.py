"""Who may talk to the server: response headers, the WebSocket origin rule, the bearer token.

Plain functions over strings, so each rule is tested without a socket.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "OriginPolicy",
    "presented_token",
    "redact_token",
    "token_matches",
]

# The page loads nothing but its own files (Chart.js included), never runs inline code and
# never talks to another host; the page engineer's markup and scripts rely on exactly this.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int | None


def _parse_origin(value: str) -> _Origin | None:
    """``scheme://host[:port]`` lower-cased, with the scheme's default port filled in."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return _Origin(scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme))


def _parse_host(value: str, scheme: str) -> tuple[str, int | None] | None:
    """The ``Host`` header as (host, port), the request scheme's default port filled in."""
    parsed = _parse_origin(f"{scheme}://{value.strip()}")
    return None if parsed is None else (parsed.host, parsed.port)


class OriginPolicy:
    """Which browser origins may open the WebSocket.

    The page's own origin (the ``Origin`` header names the host and port of the ``Host``
    header) is always allowed; ``allowed`` adds exact origins (``https://ops.example.com``)
    or one-level-or-deeper wildcards (``https://*.example.com``, which does not match
    ``https://example.com`` itself). A request without ``Origin`` does not come from a
    browser page and is allowed: the origin rule exists because browsers send cookies and
    open cross-site sockets on a visitor's behalf, which other clients cannot be made to do.

    >>> policy = OriginPolicy(["https://*.example.com"])
    >>> policy.allows("https://ops.example.com", host="dash:8080", scheme="http")
    True
    >>> policy.allows("https://evil.test", host="dash:8080", scheme="http")
    False
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._exact: set[_Origin] = set()
        self._suffixes: list[tuple[str, str, int | None]] = []
        for entry in allowed:
            wildcard = "://*." in entry
            parsed = _parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
            if parsed is None:
                raise ValueError(f"allowed_origins: not an origin: {entry!r}")
            if wildcard:
                self._suffixes.append((parsed.scheme, "." + parsed.host, parsed.port))
            else:
                self._exact.add(parsed)

    def allows(self, origin: str | None, *, host: str | None, scheme: str) -> bool:
        if origin is None:
            return True
        parsed = _parse_origin(origin)
        if parsed is None:  # "null" (sandboxed frames, file: pages) and garbage
            return False
        if host is not None:
            own = _parse_host(host, scheme)
            if own is not None and own == (parsed.host, parsed.port):
                return True
        if parsed in self._exact:
            return True
        return any(
            parsed.scheme == scheme_ and parsed.port == port and parsed.host.endswith(suffix)
            for scheme_, suffix, port in self._suffixes
        )


def presented_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request offers: ``Authorization: Bearer <t>``, else ``?token=<t>``.

    The query form exists because a browser's WebSocket cannot set headers.
    """
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak the token's prefix."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def redact_token(uri: str) -> str:
    """``uri`` with the value of any ``token`` query parameter replaced, for access logs."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}=<redacted>" if name == "token" and eq else item)
    return f"{path}?{'&'.join(parts)}"
