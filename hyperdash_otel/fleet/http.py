"""Credentials and one JSON GET: how the fleet talks to Prometheus, Alertmanager, instances.

A :class:`Credentials` value holds a bearer token or a user and password, and a CA file;
it never prints them (``repr`` names only which kind is set). :func:`check_url` refuses a
URL with userinfo (``http://user:pw@host``): credentials come from flags, the environment or
a file, never from a URL, which ends up in logs, errors and browser histories.

:class:`JsonClient` is deliberately small: the standard library's HTTP client, no proxy
(the fleet talks to addresses it was given, not through whatever ``HTTP_PROXY`` says), no
redirects (a redirect to another host would carry the ``Authorization`` header along), a
timeout per request and a cap on the body it reads. Its errors (:class:`FetchError`) are
short sentences naming the host and path, never a credential.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY",
    "Credentials",
    "FetchError",
    "JsonClient",
    "check_url",
    "read_secret_file",
]

DEFAULT_MAX_BODY = 32 * 1024 * 1024
"""Largest response body read (bytes); a larger one is an error, not a memory spike."""


class FetchError(Exception):
    """A request that failed; ``str()`` is a short human sentence, safe to log and show."""


def check_url(url: object, name: str) -> str:
    """``url`` without a trailing slash, or ValueError naming ``name``.

    >>> check_url("http://127.0.0.1:9090/", "--prometheus")
    'http://127.0.0.1:9090'
    """
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{name} must be an http:// or https:// URL")
    if "@" in parts.netloc:
        # Say which flags take the credentials; never echo the URL (it holds them).
        raise ValueError(
            f"{name} must not carry credentials in the URL (user:password@): pass them "
            f"with {name}-token-file, {name}-user and {name}-password-file, or the "
            "environment"
        )
    if not parts.hostname:
        raise ValueError(f"{name} must name a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError(f"{name} has an invalid port") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def read_secret_file(path: str | os.PathLike[str], name: str) -> str:
    """The first line of a secret file, stripped; ValueError naming ``name`` (never the
    content) if it cannot be read or is empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ValueError(f"{name}: cannot read {os.fspath(path)!r}: {reason}") from None
    lines = text.splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise ValueError(f"{name}: {os.fspath(path)!r} is empty")
    return value


def _check_header_value(value: str, name: str) -> None:
    if not value or not all(" " <= c <= "~" for c in value):
        raise ValueError(f"{name} must be non-empty printable ASCII")


@dataclass(frozen=True, kw_only=True, repr=False)
class Credentials:
    """How to authenticate to one kind of peer: a bearer token, or a user and password,
    and a CA file to verify its certificate (default: the system's CAs).

    >>> Credentials(token="s3cret-token")
    Credentials(token=set)
    """

    token: str | None = None
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None:
            _check_header_value(self.token, "token")
            if self.user is not None or self.password is not None:
                raise ValueError("token: give a bearer token or a user and password, not both")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together: give both or neither")
        if self.user is not None:
            _check_header_value(self.user, "user")
            if ":" in self.user:
                raise ValueError("user must not contain ':'")
        if self.password is not None:
            _check_header_value(self.password, "password")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"ca_file: {self.ca_file!r} is not a readable file")

    def __repr__(self) -> str:
        shown = [f"{k}=set" for k in ("token", "user", "password") if getattr(self, k)]
        if self.ca_file:
            shown.append(f"ca_file={self.ca_file!r}")
        return f"Credentials({', '.join(shown)})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never be shown (for log redaction)."""
        return tuple(s for s in (self.token, self.password) if s)

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, or None."""
        if self.token is not None:
            return f"Bearer {self.token}"
        if self.user is not None and self.password is not None:
            raw = f"{self.user}:{self.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return None

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    @classmethod
    def from_sources(
        cls,
        prefix: str,
        *,
        token_file: str | None = None,
        user: str | None = None,
        password_file: str | None = None,
        ca_file: str | None = None,
        environ: Mapping[str, str] | None = None,
        flag: str = "",
    ) -> Credentials:
        """Flags (files) win over ``{prefix}_TOKEN``, ``_USER``, ``_PASSWORD``, ``_CA_FILE``.

        ``flag`` is the flag stem named in errors (``--prometheus``).
        """
        env = os.environ if environ is None else environ

        def from_env(key: str) -> str | None:
            value = env.get(f"{prefix}_{key}", "").strip()
            return value or None

        token = (read_secret_file(token_file, f"{flag}-token-file")
                 if token_file is not None else from_env("TOKEN"))
        password = (read_secret_file(password_file, f"{flag}-password-file")
                    if password_file is not None else from_env("PASSWORD"))
        user = user if user is not None else from_env("USER")
        ca = ca_file if ca_file is not None else from_env("CA_FILE")
        if ca is not None and not Path(ca).is_file():
            where = f"{flag}-ca-file" if ca_file is not None else f"{prefix}_CA_FILE"
            raise ValueError(f"{where}: {ca!r} is not a readable file")
        if token is not None and (user is not None or password is not None):
            if token_file is None and (user is not None and password is not None):
                token = None  # flags for basic auth win over a token from the environment
            else:
                raise ValueError(f"{flag}-token-file: give a bearer token or a user and "
                                 "password, not both")
        if (user is None) != (password is None):
            missing = f"{flag}-password-file" if password is None else f"{flag}-user"
            raise ValueError(f"{missing} is required with "
                             f"{f'{flag}-user' if password is None else f'{flag}-password-file'}"
                             f" (or {prefix}_{'PASSWORD' if password is None else 'USER'})")
        try:
            return cls(token=token, user=user, password=password, ca_file=ca)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx becomes an HTTPError: reported, never followed


class JsonClient:
    """GET JSON from one base URL with one set of credentials (thread-safe)."""

    def __init__(
        self, base_url: str, credentials: Credentials | None = None, *,
        timeout: float = 5.0, max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self.max_body = max_body
        self._authorization = self.credentials.authorization()
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.ProxyHandler({}), _NoRedirect(),
        ]
        if self.base_url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=self.credentials.ssl_context()))
        self._opener = urllib.request.build_opener(*handlers)
        parts = urllib.parse.urlsplit(self.base_url)
        self.where = parts.netloc
        """``host:port``, for messages."""

    def __repr__(self) -> str:
        return f"JsonClient({self.base_url!r}, {self.credentials!r})"

    def get_json(self, path: str, params: Mapping[str, str | list[str]] | None = None) -> Any:
        """``GET base_url + path`` decoded as JSON; FetchError with a short reason."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self._authorization is not None:
            request.add_header("Authorization", self._authorization)
        where = f"{self.where}{path}"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read(self.max_body + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            exc.close()
            raise FetchError(f"{where} answered {exc.code}{detail}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise FetchError(f"{where} is unreachable: {text}") from None
        except TimeoutError:
            raise FetchError(f"{where} did not answer within {self.timeout:g} s") from None
        except (OSError, HTTPException) as exc:
            raise FetchError(f"{where} failed: {type(exc).__name__}") from None
        if len(body) > self.max_body:
            raise FetchError(f"{where} answered more than {self.max_body} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FetchError(f"{where} did not answer JSON") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The ``error`` field of a JSON error body (Prometheus's and ours), shortened."""
    try:
        body = json.loads(exc.read(4096))
    except (ValueError, OSError, UnicodeDecodeError):
        return ""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f": {body['error'][:200]}"
    return ""
