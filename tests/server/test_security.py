"""The origin rule, the token rule and the log redaction, as plain functions."""

from __future__ import annotations

import base64

import pytest

from hyperdash_otel.server.security import (
    CONTENT_SECURITY_POLICY,
    HostPolicy,
    OriginPolicy,
    basic_credentials,
    is_loopback_host,
    presented_token,
    redact_token,
    token_matches,
)

ALLOWED = ("https://ops.example.com", "https://*.corp.example", "http://localhost:3000")


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "expected"),
    [
        # no Origin header: not a browser page
        (None, "127.0.0.1:8080", "http", True),
        # the page's own origin
        ("http://127.0.0.1:8080", "127.0.0.1:8080", "http", True),
        ("http://LOCALHOST:8080", "localhost:8080", "http", True),
        ("https://dash.example.com", "dash.example.com", "https", True),
        ("https://dash.example.com:443", "dash.example.com", "https", True),
        ("http://[::1]:8080", "[::1]:8080", "http", True),
        # same host, other port or host: another origin
        ("http://127.0.0.1:9999", "127.0.0.1:8080", "http", False),
        ("http://evil.test:8080", "127.0.0.1:8080", "http", False),
        ("http://127.0.0.1.evil.test:8080", "127.0.0.1:8080", "http", False),
        # exact allowed origins
        ("https://ops.example.com", "127.0.0.1:8080", "http", True),
        ("https://ops.example.com:443", "127.0.0.1:8080", "http", True),
        ("http://ops.example.com", "127.0.0.1:8080", "http", False),
        ("https://ops.example.com:8443", "127.0.0.1:8080", "http", False),
        ("http://localhost:3000", "127.0.0.1:8080", "http", True),
        ("http://localhost:3001", "127.0.0.1:8080", "http", False),
        # wildcard: any subdomain, not the domain itself, not a look-alike
        ("https://a.corp.example", "127.0.0.1:8080", "http", True),
        ("https://a.b.corp.example", "127.0.0.1:8080", "http", True),
        ("https://corp.example", "127.0.0.1:8080", "http", False),
        ("https://evilcorp.example", "127.0.0.1:8080", "http", False),
        ("http://a.corp.example", "127.0.0.1:8080", "http", False),
        # not an origin at all
        ("null", "127.0.0.1:8080", "http", False),
        ("", "127.0.0.1:8080", "http", False),
        ("http://127.0.0.1:8080/path", "127.0.0.1:8080", "http", False),
        ("http://127.0.0.1:notaport", "127.0.0.1:8080", "http", False),
        # no Host header: only the allowed list can match
        ("http://127.0.0.1:8080", None, "http", False),
    ],
)
def test_origin_policy(origin: str | None, host: str | None, scheme: str, expected: bool) -> None:
    hosts = HostPolicy(["dash.example.com"])
    assert OriginPolicy(ALLOWED, hosts=hosts).allows(origin, host=host, scheme=scheme) is expected


def test_origin_policy_rejects_entries_that_are_not_origins() -> None:
    with pytest.raises(ValueError, match="allowed_origins"):
        OriginPolicy(["example.com"])


@pytest.mark.parametrize(
    ("authorization", "query", "expected"),
    [
        ("Bearer s3cret-token", None, "s3cret-token"),
        ("bearer   s3cret-token  ", None, "s3cret-token"),
        ("Bearer s3cret-token", "other", "s3cret-token"),
        ("Basic dXNlcjpwYXNz", "q-token", "q-token"),
        ("Bearer ", None, None),
        (None, "q-token", "q-token"),
        (None, "", None),
        (None, None, None),
    ],
)
def test_presented_token(authorization: str | None, query: str | None, expected: str | None
                         ) -> None:
    assert presented_token(authorization, query) == expected


def test_token_matches() -> None:
    assert token_matches("s3cret-token", "s3cret-token")
    assert not token_matches("s3cret-tokeN", "s3cret-token")
    assert not token_matches("s3cret", "s3cret-token")
    assert not token_matches(None, "s3cret-token")
    assert token_matches("jéton-sécret", "jéton-sécret")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/ws?token=abc", "/ws?token=<redacted>"),
        ("/api/jobs?status=failed&token=abc&limit=2",
         "/api/jobs?status=failed&token=<redacted>&limit=2"),
        ("/api/jobs?status=failed", "/api/jobs?status=failed"),
        ("/ws", "/ws"),
        ("/ws?tokens=abc", "/ws?tokens=abc"),
        ("/ws?tok%65n=abc", "/ws?tok%65n=<redacted>"),  # the name as the server decodes it
        ("/ws?%74oken=abc&x=1", "/ws?%74oken=<redacted>&x=1"),
    ],
)
def test_redact_token(uri: str, expected: str) -> None:
    assert redact_token(uri) == expected


def test_csp_is_the_one_the_page_is_written_for() -> None:
    assert CONTENT_SECURITY_POLICY == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    )


@pytest.mark.parametrize(
    ("allowed", "bind", "host", "expected"),
    [
        ((), "127.0.0.1", "127.0.0.1:8080", True),
        ((), "127.0.0.1", "localhost", True),
        ((), "127.0.0.1", "LocalHost.:8080", True),
        ((), "127.0.0.1", "[::1]:8080", True),
        ((), "127.0.0.1", None, True),  # HTTP/1.0 without Host
        ((), "127.0.0.1", "evil.test:8080", False),
        ((), "127.0.0.1", "127.0.0.1.evil.test", False),
        ((), "127.0.0.1", "10.0.0.1", False),  # an address, but not ours
        ((), "localhost", "localhost:1", True),
        ((), "0.0.0.0", "10.0.0.1:8080", True),  # wildcard bind: any address literal
        ((), "0.0.0.0", "[fe80::1]", True),
        ((), "0.0.0.0", "evil.test", False),
        (("dash.example.com",), "127.0.0.1", "DASH.example.com:443", True),
        (("dash.example.com",), "127.0.0.1", "x.dash.example.com", False),
        ((".example.com",), "127.0.0.1", "example.com", True),
        ((".example.com",), "127.0.0.1", "a.b.example.com", True),
        ((".example.com",), "127.0.0.1", "badexample.com", False),
        (("*",), "127.0.0.1", "anything.test", True),
        ((), "127.0.0.1", "a:b:c", False),  # not a host at all
    ],
)
def test_host_policy(allowed: tuple[str, ...], bind: str, host: str | None, expected: bool
                     ) -> None:
    assert HostPolicy(allowed, bind=bind).allows(host) is expected


def test_the_same_origin_needs_an_allowed_host() -> None:
    policy = OriginPolicy([], hosts=HostPolicy())
    assert policy.allows("http://localhost:8080", host="localhost:8080", scheme="http")
    # The rebinding case of the issue: Origin and Host agree, but the name is the attacker's.
    assert not policy.allows("http://evil.test:8080", host="evil.test:8080", scheme="http")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("authorization", "expected"), [
    ("Basic " + base64.b64encode(b"alice:pw:with:colons").decode(), ("alice", "pw:with:colons")),
    ("basic " + base64.b64encode("jé:pässe".encode()).decode(), ("jé", "pässe")),
    ("Basic " + base64.b64encode(b"nocolon").decode(), None),
    ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
    ("Basic !!!", None),
    ("Bearer abc", None),
    (None, None),
])
def test_basic_credentials(authorization: str | None, expected: tuple[str, str] | None) -> None:
    assert basic_credentials(authorization) == expected


SECRET = "s3cret'to\\ken"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws?token={SECRET} (1.2.3.4)",
        "GET /ws?tok%65n=abc%27def (1.2.3.4)",
        "GET /ws?%74%6F%6B%65%6E=abc (1.2.3.4)",
        f"uri={SECRET!r}",
        "".join(f"%{b:02x}" for b in SECRET.encode()),
        "".join(f"%{b:02X}" for b in SECRET.encode()),
        "Invalid header value 'Bearer abc\\x01'",
        "Invalid header value 'Basic YWxpY2U6cHc=\\x01'",
        "GET http://alice:pw@127.0.0.1/ HTTP/1.1",
    ],
)
def test_redact_every_spelling(text: str) -> None:
    from hyperdash_otel.server.logs import REDACTED, redact
    out = redact(text, [SECRET])
    assert REDACTED in out
    for leaked in (SECRET, "abc", "YWxpY2U6cHc=", ":pw@", "s3cret"):
        assert leaked not in out, out


def test_redact_leaves_other_text_alone() -> None:
    from hyperdash_otel.server.logs import redact
    text = "200 GET /api/jobs?status=failed&limit=5 (127.0.0.1) 1.00ms; tokens=3"
    assert redact(text, ["not-in-it"]) == text


def test_escape_controls() -> None:
    from hyperdash_otel.server.logs import escape_controls
    assert escape_controls("a\nb\r\x00\x1b[31m\x85\u2028é") == (
        "a\\x0ab\\x0d\\x00\\x1b[31m\\x85\\u2028é")


def test_a_wildcard_bind_answers_the_machine_s_name() -> None:
    import socket
    assert HostPolicy(bind="0.0.0.0").allows(f"{socket.gethostname()}:8080")
    assert not HostPolicy(bind="127.0.0.1").allows("dashboard-host-that-is-not-us.test")
