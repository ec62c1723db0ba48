"""Who may talk to the server: response headers, the Host allowlist, the WebSocket origin
rule, the bearer token and basic-auth passwords.

Plain functions over strings, so each rule is tested without a socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HSTS",
    "SECURITY_HEADERS",
    "BasicAuth",
    "HostPolicy",
    "OriginPolicy",
    "PasswordHash",
    "basic_credentials",
    "check_host_entry",
    "default_hosts",
    "hash_password",
    "parse_basic_entry",
    "is_loopback_host",
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

HSTS = "max-age=31536000"
"""``Strict-Transport-Security`` under TLS: a year, this host only (``includeSubDomains``
would bind every other service on the domain to HTTPS too, which is not ours to decide)."""

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


_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _parse_host(value: str, scheme: str) -> tuple[str, int | None] | None:
    """The ``Host`` header as (host, port), the request scheme's default port filled in."""
    parsed = _parse_origin(f"{scheme}://{value.strip()}")
    return None if parsed is None else (parsed.host, parsed.port)


def _host_name(value: str) -> str:
    """A host as compared: lower case, no brackets around IPv6, no final dot."""
    name = value.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") else name


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("", "0.0.0.0", "::", "*")


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only (what ``127.0.0.1`` promises).

    A name counts when every address it resolves to is a loopback address.
    """
    name = _host_name(host)
    if name in _WILDCARD_BINDS:
        return False
    if name == "localhost":
        return True
    ip = _ip(name)
    if ip is not None:
        return ip.is_loopback
    addresses = [_ip(address) for address in _resolve(name)]
    return bool(addresses) and all(a is not None and a.is_loopback for a in addresses)


def _resolve(name: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()
    return {_host_name(str(info[4][0]).split("%")[0]) for info in infos}


def default_hosts(bind: str) -> tuple[set[str], bool]:
    """The host names a server bound to ``bind`` answers by default, and whether any
    IP-address ``Host`` is accepted too.

    Always the loopback names; then the bound host and the addresses it resolves to. A
    wildcard bind (``0.0.0.0``, ``::``) adds the machine's host name and its addresses,
    and accepts any IP literal: DNS rebinding needs a name the attacker controls, so a
    ``Host`` that is an address cannot come from it (and probes, scrapers and people on the
    LAN reach such a server by its address).
    """
    names = set(LOOPBACK_NAMES)
    bound = _host_name(bind)
    wildcard = bound in _WILDCARD_BINDS
    if wildcard:
        # The host name, not getfqdn(): that asks reverse DNS, which can hang for seconds.
        own = socket.gethostname()
        if own:
            names.add(_host_name(own))
            names |= _resolve(own)
    else:
        names.add(bound)
        names |= _resolve(bound)
    return {n for n in names if n}, wildcard


def check_host_entry(entry: object) -> str:
    """One ``allowed_hosts`` entry, normalised; ValueError/TypeError naming the field."""
    if not isinstance(entry, str):
        raise TypeError(f"allowed_hosts entries must be strings, got {type(entry).__name__}")
    name = entry.strip().lower()
    if name == "*":
        return name
    bare = name[1:] if name.startswith(".") else name
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    if _ip(bare) is None and (
        not bare or not all(part and _HOST_LABEL.fullmatch(part) for part in
                            (bare[:-1] if bare.endswith(".") else bare).split("."))
    ):
        raise ValueError(
            f"allowed_hosts: {entry!r} is not a host name (no scheme, port or path; "
            "'.example.com' for a domain and its subdomains, '*' for any)"
        )
    return ("." if name.startswith(".") else "") + _host_name(bare)


class HostPolicy:
    """Which ``Host`` header values the server answers: its defence against DNS rebinding.

    A page on ``http://evil.test:8080`` whose name the attacker then points at 127.0.0.1
    is, to the browser, the same origin as the dashboard, so it could read every endpoint
    and open the stream; its requests still say ``Host: evil.test:8080``, and that is
    refused. ``allowed`` adds names to :func:`default_hosts`: exact names or addresses,
    ``.example.com`` for the domain and every subdomain, ``*`` for any host at all. The
    port in ``Host`` is not compared (rebinding changes names, not ports).

    >>> policy = HostPolicy(["dash.example.com"], bind="127.0.0.1")
    >>> policy.allows("dash.example.com:8080"), policy.allows("evil.test:8080")
    (True, False)
    """

    def __init__(self, allowed: Iterable[str] = (), *, bind: str = "127.0.0.1") -> None:
        names, self._any_ip = default_hosts(bind)
        self._any = False
        self._suffixes: list[str] = []
        for entry in allowed:
            name = check_host_entry(entry)
            if name == "*":
                self._any = True
            elif name.startswith("."):
                self._suffixes.append(name)
            else:
                names.add(name)
        self._names = frozenset(names)

    @property
    def names(self) -> frozenset[str]:
        """The exact names and addresses accepted (for the README and the error message)."""
        return self._names

    def allows_name(self, name: str) -> bool:
        """Whether the bare host ``name`` (no port) is one this server answers to."""
        name = _host_name(name)
        if self._any or name in self._names:
            return True
        if self._any_ip and _ip(name) is not None:
            return True
        return any(name == s[1:] or name.endswith(s) for s in self._suffixes)

    def allows(self, host: str | None) -> bool:
        """Whether a ``Host`` header (``name[:port]``) is allowed; no header is (HTTP/1.0)."""
        if host is None:
            return True
        parsed = _parse_host(host, "http")
        return parsed is not None and self.allows_name(parsed[0])


class OriginPolicy:
    """Which browser origins may open the WebSocket.

    The page's own origin is allowed: the ``Origin`` header names the host and port of the
    ``Host`` header, *and* that host is in the Host allowlist (so a rebound name is never
    its own origin). ``allowed`` adds exact origins (``https://ops.example.com``) or
    one-level-or-deeper wildcards (``https://*.example.com``, which does not match
    ``https://example.com`` itself). A request without ``Origin`` does not come from a
    browser page and is allowed: the origin rule exists because browsers send cookies,
    cached basic-auth credentials and cross-site sockets on a visitor's behalf, which other
    clients cannot be made to do.

    >>> policy = OriginPolicy(["https://*.example.com"])
    >>> policy.allows("https://ops.example.com", host="dash:8080", scheme="http")
    True
    >>> policy.allows("https://evil.test", host="dash:8080", scheme="http")
    False
    """

    def __init__(self, allowed: Iterable[str] = (), *, hosts: HostPolicy | None = None) -> None:
        self._exact: set[_Origin] = set()
        self._suffixes: list[tuple[str, str, int | None]] = []
        self.hosts = hosts if hosts is not None else HostPolicy()
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
            if (own is not None and own == (parsed.host, parsed.port)
                    and self.hosts.allows_name(parsed.host)):
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


# -- basic auth ------------------------------------------------------------------------------

SCRYPT_N = 2**14
"""scrypt cost of new hashes: 16 MiB and about 70 ms of one core per check."""
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 256 * 1024 * 1024
_SALT_BYTES = 16
_KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class PasswordHash:
    """A salted scrypt hash, written ``scrypt:N:r:p:<salt base64>:<key base64>``."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def __str__(self) -> str:
        return f"scrypt:{self.n}:{self.r}:{self.p}:{_b64(self.salt)}:{_b64(self.key)}"

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        parts = text.split(":")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("expected scrypt:N:r:p:salt:key (from `hyperdash hash-password`)")
        try:
            n, r, p = (int(x) for x in parts[1:4])
            salt = base64.b64decode(parts[4], validate=True)
            key = base64.b64decode(parts[5], validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("N, r, p must be integers and salt, key base64") from None
        if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise ValueError("N must be a power of 2 up to 2**20, r in 1..32, p in 1..16")
        if 128 * r * n > _SCRYPT_MAXMEM // 2 or len(salt) < 8 or len(key) < 16:
            raise ValueError("needs 128*r*N <= 128 MiB, a salt of >= 8 and a key of >= 16 bytes")
        return cls(n, r, p, salt, key)

    def derive(self, password: str) -> bytes:
        return hashlib.scrypt(
            password.encode("utf-8"), salt=self.salt, n=self.n, r=self.r, p=self.p,
            maxmem=_SCRYPT_MAXMEM, dklen=len(self.key),
        )

    def verify(self, password: str) -> bool:
        return hmac.compare_digest(self.derive(password), self.key)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
                  ) -> PasswordHash:
    """A new salted scrypt hash of ``password`` (``str()`` of it goes into ``basic_auth``).

    >>> entry = f"alice:{hash_password('correct horse')}"
    >>> entry.startswith("alice:scrypt:16384:8:1:")
    True
    """
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty string")
    template = PasswordHash(n, r, p, secrets.token_bytes(_SALT_BYTES), b"\0" * _KEY_BYTES)
    return PasswordHash(n, r, p, template.salt, template.derive(password))


def parse_basic_entry(entry: object) -> tuple[str, PasswordHash]:
    """``"user:scrypt:..."`` as (user, hash); ValueError/TypeError naming ``basic_auth``."""
    if not isinstance(entry, str):
        raise TypeError(f"basic_auth entries must be strings, got {type(entry).__name__}")
    user, sep, rest = entry.strip().partition(":")
    if not sep or not user or not user.isprintable():
        raise ValueError("basic_auth entries must be 'user:scrypt:N:r:p:salt:key' "
                         "(make one with `hyperdash hash-password USER`)")
    try:
        return user, PasswordHash.parse(rest)
    except ValueError as exc:
        raise ValueError(f"basic_auth entry for {user!r}: {exc}") from None


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) from ``Authorization: Basic <base64 user:password>``, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class BasicAuth:
    """The users allowed in with a password, checked against their scrypt hashes.

    scrypt is slow on purpose, so a check that passed is remembered (by a keyed digest of
    the credentials, never the password itself) for the next request of the same browser;
    at most :attr:`CACHE_SIZE` are kept. An unknown user costs as much as a wrong password,
    so timing does not tell which users exist.
    """

    CACHE_SIZE = 256

    def __init__(self, users: Mapping[str, PasswordHash]) -> None:
        self._users = dict(users)
        self.running = 0
        """Checks in progress (kept by the server, on its event loop)."""
        self._lock = threading.Lock()  # the cache is read on the loop, filled in threads
        self._key = secrets.token_bytes(32)
        self._passed: OrderedDict[bytes, str] = OrderedDict()
        self._dummy = PasswordHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, b"\0" * _SALT_BYTES,
                                   b"\0" * _KEY_BYTES)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> BasicAuth:
        return cls(dict(parse_basic_entry(entry) for entry in entries))

    def __bool__(self) -> bool:
        return bool(self._users)

    def _digest(self, user: str, password: str) -> bytes:
        message = user.encode("utf-8", "surrogatepass") + b"\0" + password.encode(
            "utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def cached(self, user: str, password: str) -> bool | None:
        """True when these credentials passed before; None when a full check is needed."""
        digest = self._digest(user, password)
        with self._lock:
            if self._passed.get(digest) == user:
                self._passed.move_to_end(digest)
                return True
        return None

    def check(self, user: str, password: str) -> bool:
        """The full (slow) check; safe to call from a worker thread."""
        stored = self._users.get(user)
        ok = (stored or self._dummy).verify(password) and stored is not None
        if ok:
            with self._lock:
                self._passed[self._digest(user, password)] = user
                while len(self._passed) > self.CACHE_SIZE:
                    self._passed.popitem(last=False)
        return ok


# -- redaction -------------------------------------------------------------------------------

TOKEN_PARAMETER = "token"


def _query_name(raw: str) -> str:
    """A query parameter's name as Tornado decodes it (``tok%65n`` is ``token``)."""
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        return raw


def redact_token(uri: str) -> str:
    """``uri`` with the value of every ``token`` query parameter replaced, for logs.

    The name is compared as the server reads it (percent-decoded), so ``?tok%65n=`` is
    redacted like ``?token=``.
    """
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}=<redacted>" if eq and _query_name(name) == TOKEN_PARAMETER
                     else item)
    return f"{path}?{'&'.join(parts)}"
