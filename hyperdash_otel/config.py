"""Typed, validated configuration.

A :class:`Config` is a frozen value: every field is checked once, in ``__post_init__``, and a
bad value raises ``ValueError`` (or ``TypeError`` for a wrong type) naming the field. Reading
the environment happens only in :meth:`Config.from_env`, never deep inside the code.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Union

from . import validation as v
from .server.security import check_host_entry, parse_basic_entry

__all__ = ["Config", "default_config"]

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_UPDATE_INTERVAL = 1.0
MIN_UPDATE_INTERVAL = 0.05
DEFAULT_MAX_CLIENTS = 100
DEFAULT_MAX_JOBS = 50
DEFAULT_MAX_ALERTS = 20
DEFAULT_MAX_TEXT_LENGTH = 1024
DEFAULT_MAX_CUSTOM_SERIES = 200
DEFAULT_HISTORY_SIZE = 50
DEFAULT_SLOW_CLIENT_MAX_SKIPS = 10
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_RATE_LIMIT = 50.0
DEFAULT_RATE_LIMIT_BURST = 200
DEFAULT_AUTH_FAILURES_PER_MINUTE = 6.0
DEFAULT_AUTH_FAILURE_BURST = 10
DEFAULT_RATE_LIMIT_MAX_ADDRESSES = 10_000
DEFAULT_STALL_AFTER = 300.0

ENV_PREFIX = "HYPERDASH_"

Seconds = Annotated[float, "seconds"]
"""A duration in seconds: a float to type checkers; ``from_env`` says "expected seconds"."""


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: it could never match a request's header
        raise ValueError(f"{name} must be valid Unicode (it has a lone surrogate)") from None


def _check_token(value: object, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) < 8:
        raise ValueError(f"{name} must be a string of at least 8 characters")
    # It travels in an HTTP header and a URL, and the log filter redacts it in those
    # spellings: printable ASCII keeps all three exact.
    if not all("!" <= c <= "~" for c in value):
        raise ValueError(f"{name} must be printable ASCII without spaces")


def _strings(value: object, name: str) -> tuple[str, ...]:
    """A tuple of non-empty strings; one string is a one-entry tuple."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of strings, got {type(value).__name__}")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{name} entries must be non-empty strings: {item!r}")
    return tuple(items)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Dashboard settings; the first four are the original's, with its defaults.

    >>> Config(port=0, update_interval=0.5).update_interval
    0.5
    """

    enabled: bool = True
    port: int = DEFAULT_PORT
    update_interval: Seconds = DEFAULT_UPDATE_INTERVAL
    """Seconds between ticks (a ``timedelta`` is accepted and converted)."""
    max_clients: int = DEFAULT_MAX_CLIENTS
    host: str = DEFAULT_HOST
    max_jobs: int = DEFAULT_MAX_JOBS
    max_alerts: int = DEFAULT_MAX_ALERTS
    collect_system_metrics: bool = True
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH
    """Longest job name, VM name, provider, error or alert message accepted (characters)."""
    max_custom_series: int = DEFAULT_MAX_CUSTOM_SERIES
    """Most series of user metrics copied into the snapshot's ``custom`` key per tick."""
    history_size: int = DEFAULT_HISTORY_SIZE
    """Snapshots kept and replayed to a WebSocket client on connect."""
    slow_client_max_skips: int = DEFAULT_SLOW_CLIENT_MAX_SKIPS
    """Consecutive ticks a client may stay behind before it is disconnected."""
    allowed_origins: tuple[str, ...] = ()
    """Extra WebSocket origins (``https://ops.example.com`` or ``https://*.example.com``)."""
    auth_token: str | None = None
    """When set, every endpoint but ``/healthz`` and ``/static`` requires
    ``Authorization: Bearer <token>`` (or ``?token=`` for the browser's WebSocket)."""
    basic_auth: tuple[str, ...] = ()
    """Users who may log in with a password (HTTP basic auth, for people in browsers), as
    ``user:scrypt:N:r:p:salt:key`` entries from ``hyperdash hash-password USER``. Beside
    ``auth_token``: either credential opens every endpoint but ``/healthz`` and ``/static``."""
    metrics_token: str | None = None
    """A token that opens ``/metrics`` only (and is required there when set), so a
    Prometheus scraper needs no user's credential."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` names answered besides the loopback names and the bound host (and what it
    resolves to): ``dash.example.com``, ``.example.com`` for a domain and its subdomains,
    ``*`` for any. Any other ``Host`` gets 421: the defence against DNS rebinding."""
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    use_global_registry: bool = False
    """Export into prometheus_client's global ``REGISTRY`` instead of a private one."""
    max_connections: int | None = None
    """HTTP connections held at once (WebSockets count against ``max_clients`` once
    upgraded); None derives it from ``RLIMIT_NOFILE`` when the server starts."""
    max_connections_per_ip: int | None = None
    """HTTP connections one client address may hold; None: a quarter of ``max_connections``."""
    header_timeout: Seconds = DEFAULT_HEADER_TIMEOUT
    """Seconds a connection may take to send a complete request head (or a body) before it
    is closed; it also ends idle keep-alive connections."""
    rate_limit: float = DEFAULT_RATE_LIMIT
    """Requests per second one client address may sustain (0: no limit); past it, 429."""
    rate_limit_burst: int = DEFAULT_RATE_LIMIT_BURST
    """Requests one address may make at once before ``rate_limit`` applies."""
    auth_failures_per_minute: float = DEFAULT_AUTH_FAILURES_PER_MINUTE
    """Failed authentications one address may sustain (0: no limit); past it every request
    from the address gets 429 until the allowance refills."""
    auth_failure_burst: int = DEFAULT_AUTH_FAILURE_BURST
    """Failed authentications one address may make before ``auth_failures_per_minute``
    applies."""
    rate_limit_max_addresses: int = DEFAULT_RATE_LIMIT_MAX_ADDRESSES
    """Client addresses the rate limits remember (least recently seen forgotten first)."""
    stall_after: Seconds = DEFAULT_STALL_AFTER
    """Seconds a running job's progress may stand still before it is marked stalled (float
    or ``timedelta``); 0 turns stall detection off."""

    def __post_init__(self) -> None:
        v.flag(self.enabled, "enabled")
        v.integer(self.port, "port", 0, 65535)
        interval = v.duration(self.update_interval, "update_interval", MIN_UPDATE_INTERVAL)
        object.__setattr__(self, "update_interval", interval)
        v.integer(self.max_clients, "max_clients", 1)
        _check_str(self.host, "host")
        if not self.host.strip():
            raise ValueError(f"host must be a non-empty string, got {self.host!r}")
        v.integer(self.max_jobs, "max_jobs", 1)
        v.integer(self.max_alerts, "max_alerts", 1)
        v.flag(self.collect_system_metrics, "collect_system_metrics")
        v.integer(self.max_text_length, "max_text_length", 1)
        v.integer(self.max_custom_series, "max_custom_series", 1)
        v.integer(self.history_size, "history_size", 1)
        v.integer(self.slow_client_max_skips, "slow_client_max_skips", 1)
        if isinstance(self.allowed_origins, str):
            object.__setattr__(self, "allowed_origins", (self.allowed_origins,))
        if not isinstance(self.allowed_origins, Iterable):
            kind = type(self.allowed_origins).__name__
            raise TypeError(f"allowed_origins must be a tuple of str, got {kind}")
        origins = tuple(self.allowed_origins)
        for origin in origins:
            _check_str(origin, "allowed_origins entries")
            if not origin:
                raise ValueError(f"allowed_origins entries must be non-empty strings: {origin!r}")
        object.__setattr__(self, "allowed_origins", origins)
        _check_token(self.auth_token, "auth_token")
        _check_token(self.metrics_token, "metrics_token")
        object.__setattr__(self, "basic_auth", _strings(self.basic_auth, "basic_auth"))
        for entry in self.basic_auth:
            parse_basic_entry(entry)
        users = [entry.partition(":")[0] for entry in self.basic_auth]
        if len(set(users)) != len(users):
            raise ValueError("basic_auth: a user is listed twice")
        hosts = _strings(self.allowed_hosts, "allowed_hosts")
        object.__setattr__(self, "allowed_hosts", tuple(check_host_entry(h) for h in hosts))
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile must be given together")
        for name in ("tls_certfile", "tls_keyfile"):
            path = getattr(self, name)
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path (str) or None, got {type(path).__name__}")
        v.flag(self.use_global_registry, "use_global_registry")
        stall = v.duration(self.stall_after, "stall_after", 0, note=" (0 turns it off)")
        object.__setattr__(self, "stall_after", stall)
        self._check_limits()

    def _check_limits(self) -> None:
        for name in ("max_connections", "max_connections_per_ip"):
            if getattr(self, name) is not None:
                v.integer(getattr(self, name), name, 1)
        timeout = v.duration(self.header_timeout, "header_timeout", 0, low_open=True)
        object.__setattr__(self, "header_timeout", timeout)
        for name in ("rate_limit", "auth_failures_per_minute"):
            rate = v.number(getattr(self, name), name, 0, note=" (0: no limit)")
            object.__setattr__(self, name, rate)
        v.integer(self.rate_limit_burst, "rate_limit_burst", 1)
        v.integer(self.auth_failure_burst, "auth_failure_burst", 1)
        v.integer(self.rate_limit_max_addresses, "rate_limit_max_addresses", 1)

    @property
    def update_interval_timedelta(self) -> timedelta:
        return timedelta(seconds=self.update_interval)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from ``HYPERDASH_*`` variables (``HYPERDASH_PORT=9090``, ...).

        ``overrides`` win over the environment. An unparsable value raises ``ValueError``
        naming the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key not in env:
                continue
            raw = env[key].strip()
            try:
                values[f.name] = _ENV_PARSERS[f.name](raw)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        values.update(overrides)
        return cls(**values)


# -- from_env: each field parsed as its annotation says -----------------------------------------


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _parser(kind: Callable[[str], Any], noun: str) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"expected {noun}, got {raw!r}") from None

    return parse


def _parse_optional_int(raw: str) -> int | None:
    """Empty or ``auto``: None (derived when the server starts)."""
    if raw.lower() in {"", "auto"}:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer or 'auto', got {raw!r}") from None


def _parse_strings(raw: str) -> tuple[str, ...]:
    """A comma-separated list; blank entries are dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_optional_str(raw: str) -> str | None:
    return raw or None


_PARSERS: dict[object, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: _parser(int, "an integer"),
    float: _parser(float, "a number"),
    Seconds: _parser(float, "seconds"),
    str: str,
    int | None: _parse_optional_int,
    str | None: _parse_optional_str,
    tuple[str, ...]: _parse_strings,
}
"""How ``from_env`` parses a field, by its annotation."""


def _normalised(annotation: object) -> object:
    """``Optional[int]`` as ``int | None``, so either spelling finds its parser."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if len(args) == 2 and type(None) in args:
            other = args[0] if args[1] is type(None) else args[1]
            return other | None
    return annotation


def env_parsers(cls: type[Any]) -> dict[str, Callable[[str], Any]]:
    """The parser of every field of dataclass ``cls``, chosen by its annotation.

    A field whose annotation has no parser raises ``TypeError`` here, when the module is
    imported, rather than being read from the environment as a plain string.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    parsers: dict[str, Callable[[str], Any]] = {}
    for f in dataclasses.fields(cls):
        annotation = _normalised(hints[f.name])
        try:
            parsers[f.name] = _PARSERS[annotation]
        except (KeyError, TypeError):  # TypeError: an unhashable annotation
            raise TypeError(
                f"{cls.__name__}.{f.name}: from_env has no parser for the annotation "
                f"{annotation!r}; use one of {', '.join(map(_type_name, _PARSERS))}"
            ) from None
    return parsers


def _type_name(annotation: object) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation)


_ENV_PARSERS = env_parsers(Config)


def default_config() -> Config:
    """The original's defaults: enabled, port 8080, 1 s ticks, 100 clients, bound to 127.0.0.1."""
    return Config()
