"""The origin rule, the token rule and the log redaction, as plain functions."""

from __future__ import annotations

import pytest

from hyperdash_otel.server.security import (
    CONTENT_SECURITY_POLICY,
    HostPolicy,
    OriginPolicy,
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
