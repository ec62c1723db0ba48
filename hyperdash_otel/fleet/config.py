"""The fleet's settings: where Prometheus (and Alertmanager) are, and how to reach them.

A frozen value checked once; the server's own settings (host, port, limits, tokens) stay in
:class:`~hyperdash_otel.Config`. :meth:`FleetConfig.from_env` reads the credentials of the
three peers from ``HYPERDASH_FLEET_{PROMETHEUS,ALERTMANAGER,INSTANCES}_{TOKEN,USER,PASSWORD,
CA_FILE}``; the CLI's ``--*-token-file``, ``--*-user``, ``--*-password-file`` and
``--*-ca-file`` win over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .http import Credentials, check_url
from .prometheus import Matcher, parse_selector

__all__ = [
    "DEFAULT_INSTANCE_TIMEOUT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_INSTANCES",
    "DEFAULT_QUERY_TIMEOUT",
    "DEFAULT_SELECTOR",
    "ENV_PREFIX",
    "FleetConfig",
]

DEFAULT_SELECTOR = '{job="hyperdash"}'
DEFAULT_INSTANCE_TIMEOUT = 2.0
DEFAULT_QUERY_TIMEOUT = 2.0
DEFAULT_MAX_CONCURRENCY = 16
MAX_MAX_CONCURRENCY = 256
DEFAULT_MAX_INSTANCES = 1000
DEFAULT_MIN_REFRESH = 1.0
ENV_PREFIX = "HYPERDASH_FLEET_"
PEERS = ("prometheus", "alertmanager", "instances")


def _seconds(value: object, name: str, *, high: float = 300.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 < value <= high):
        raise ValueError(f"{name} must be > 0 and <= {high:g} s, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """Settings of ``hyperdash fleet``.

    >>> FleetConfig(prometheus="http://127.0.0.1:9090").selector
    '{job="hyperdash"}'
    """

    prometheus: str
    """Base URL of Prometheus's HTTP API (or Thanos, Mimir, VictoriaMetrics)."""
    selector: str = DEFAULT_SELECTOR
    """Label selector of the instances' series and targets."""
    alertmanager: str | None = None
    """Base URL of Alertmanager (None: only the instances' own alerts)."""
    prometheus_credentials: Credentials = field(default_factory=Credentials)
    alertmanager_credentials: Credentials = field(default_factory=Credentials)
    instances_credentials: Credentials = field(default_factory=Credentials)
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    """Seconds one Prometheus or Alertmanager request may take."""
    instance_timeout: float = DEFAULT_INSTANCE_TIMEOUT
    """Seconds one instance's ``/api/jobs`` or ``/api/metrics`` may take."""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """Instances fetched at once."""
    max_instances: int = DEFAULT_MAX_INSTANCES
    """Most targets whose records are fetched (the first by instance name); the numbers
    of every instance still come from Prometheus."""
    refresh_interval: float | None = None
    """Seconds between two fetches of the instances' records (None: the targets' scrape
    interval, at least :data:`DEFAULT_MIN_REFRESH`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prometheus", check_url(self.prometheus, "prometheus"))
        if self.alertmanager is not None:
            object.__setattr__(self, "alertmanager",
                               check_url(self.alertmanager, "alertmanager"))
        parse_selector(self.selector, "selector")
        for peer in PEERS:
            creds = getattr(self, f"{peer}_credentials")
            if not isinstance(creds, Credentials):
                raise TypeError(f"{peer}_credentials must be a Credentials")
        object.__setattr__(self, "query_timeout", _seconds(self.query_timeout, "query_timeout"))
        object.__setattr__(self, "instance_timeout",
                           _seconds(self.instance_timeout, "instance_timeout"))
        if self.refresh_interval is not None:
            object.__setattr__(self, "refresh_interval",
                               _seconds(self.refresh_interval, "refresh_interval", high=3600))
        for name, high in (("max_concurrency", MAX_MAX_CONCURRENCY),
                           ("max_instances", 100_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if not 1 <= value <= high:
                raise ValueError(f"{name} must be between 1 and {high}, got {value}")

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return parse_selector(self.selector, "selector")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential value (for log redaction)."""
        return tuple(s for peer in PEERS for s in getattr(self, f"{peer}_credentials").secrets)
