"""Prometheus's HTTP API as the fleet uses it: two instant queries a tick, and the targets.

The numbers of every instance come from two instant queries whatever the fleet's size
(:func:`series_query` and :func:`extras_query`); :func:`parse_series` and
:func:`parse_extras` turn their JSON into per-instance figures. Both are pure, so tests feed
them JSON captured from the real binary.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..telemetry import BY_FIELD, METRICS
from .http import FetchError, JsonClient

__all__ = [
    "InstanceFigures",
    "Matcher",
    "PrometheusClient",
    "Target",
    "extras_query",
    "parse_extras",
    "parse_selector",
    "parse_series",
    "series_query",
]

_MATCHER = re.compile(
    r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)'
)


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector: ``job="hyperdash"``."""

    name: str
    op: str
    value: str
    """As written between the quotes (escapes kept)."""

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_selector(selector: str, name: str = "selector") -> tuple[Matcher, ...]:
    """The matchers of ``{a="b", c=~"d"}``; ValueError naming ``name`` when it is not one.

    >>> [str(m) for m in parse_selector('{job="hyperdash"}')]
    ['job="hyperdash"']
    """
    if not isinstance(selector, str):
        raise TypeError(f"{name} must be a str, got {type(selector).__name__}")
    text = selector.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f'{name} must be a label selector in braces, like {{job="hyperdash"}}')
    body = text[1:-1].strip()
    matchers: list[Matcher] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ValueError(f"{name}: cannot read a matcher at {body[pos:pos + 30]!r} "
                             '(expected label="value", label=~"regex", != or !~)')
        if m.group(1) == "__name__":
            raise ValueError(f"{name} must not match __name__ (the fleet picks the series)")
        matchers.append(Matcher(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    if not any(mt.op in ("=", "=~") and mt.value not in ("", ".*") for mt in matchers):
        raise ValueError(f'{name} must have at least one positive matcher, like job="hyperdash"')
    return tuple(matchers)


# The raw series the fleet sums, by their exposition name (with _total for counters).
_SCALARS = tuple(m for m in METRICS if m.scalar and m.field != "active_connections")
_PROVIDERS = BY_FIELD["provider_stats"].prometheus
_HEALTH = BY_FIELD["system_health"].prometheus
_NAMES = ("up", *(m.prometheus for m in _SCALARS), _PROVIDERS, _HEALTH)
_FAILED = BY_FIELD["jobs_failed"].prometheus

EXTRA = "hyperdash_fleet"
"""The label :func:`extras_query` tags its two parts with."""


def _inside(matchers: tuple[Matcher, ...]) -> str:
    return ", ".join(str(m) for m in matchers)


def series_query(matchers: tuple[Matcher, ...]) -> str:
    """One query for every instance's figures: each series summed by name and instance
    (and provider, status), so the scope labels an exporter adds fold away."""
    names = "|".join(re.escape(n) for n in _NAMES)
    return (f'sum by (__name__, instance, provider, status) '
            f'({{__name__=~"{names}", {_inside(matchers)}}})')


def extras_query(matchers: tuple[Matcher, ...], window: str = "5m") -> str:
    """One query for every instance's last scrape time and failures over ``window``."""
    inside = _inside(matchers)
    return (
        f'label_replace(max by (instance) (timestamp(up{{{inside}}})), '
        f'"{EXTRA}", "scraped_at", "", "") '
        f'or label_replace(sum by (instance) (increase({_FAILED}{{{inside}}}[{window}])), '
        f'"{EXTRA}", "failed", "", "")'
    )


def _value(sample: Any) -> float:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError("result: each sample needs a value [time, \"number\"]") from None
    return value


@dataclass
class InstanceFigures:
    """What the two queries say about one instance."""

    instance: str
    up: bool = False
    values: dict[str, float] = field(default_factory=dict)
    """Exposition name -> value summed over the instance's series (finite values only)."""
    providers: dict[str, float] = field(default_factory=dict)
    health: str = "unknown"
    failed_5m: float = 0.0
    scraped_at: float | None = None


def vector(data: Any) -> tuple[list[dict[str, Any]], float | None]:
    """An instant query's ``data`` -> (samples, evaluation time); ValueError if not a vector."""
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise ValueError("data: expected an instant vector result")
    result = data.get("result")
    if not isinstance(result, list):
        raise ValueError("data.result: expected a list")
    at: float | None = None
    for s in result:
        if not isinstance(s, dict) or not isinstance(s.get("metric"), dict):
            raise ValueError("data.result: each sample needs a metric object")
        if at is None:
            try:
                at = float(s["value"][0])
            except (KeyError, IndexError, TypeError, ValueError):
                raise ValueError("data.result: each sample needs a value [time, v]") from None
    return result, at


HEALTH_ORDER = ("healthy", "degraded", "unhealthy")


def parse_series(data: Any) -> dict[str, InstanceFigures]:
    """:func:`series_query`'s result, by instance."""
    result, _ = vector(data)
    out: dict[str, InstanceFigures] = {}
    for s in result:
        metric = s["metric"]
        instance = metric.get("instance")
        name = metric.get("__name__")
        if not isinstance(instance, str) or not isinstance(name, str):
            continue
        value = _value(s)
        fig = out.get(instance)
        if fig is None:
            fig = out[instance] = InstanceFigures(instance)
        if not math.isfinite(value):
            continue
        if name == "up":
            fig.up = fig.up or value == 1
        elif name == _PROVIDERS:
            provider = metric.get("provider")
            if isinstance(provider, str):
                fig.providers[provider] = fig.providers.get(provider, 0.0) + value
        elif name == _HEALTH:
            status = metric.get("status")
            # The gauge is 1 for the current status; the worst one set wins should an
            # instance export two (two meters under one name).
            if value >= 1 and status in HEALTH_ORDER and (
                fig.health not in HEALTH_ORDER
                or HEALTH_ORDER.index(status) > HEALTH_ORDER.index(fig.health)
            ):
                fig.health = status
        else:
            fig.values[name] = fig.values.get(name, 0.0) + value
    for fig in out.values():
        if not fig.up:
            fig.health = "unknown"
    return out


def parse_extras(data: Any, into: dict[str, InstanceFigures]) -> float | None:
    """:func:`extras_query`'s result merged into ``into``; returns the evaluation time."""
    result, at = vector(data)
    for s in result:
        metric = s["metric"]
        instance = metric.get("instance")
        fig = into.get(instance) if isinstance(instance, str) else None
        if fig is None:
            continue
        value = _value(s)
        if not math.isfinite(value):
            continue
        kind = metric.get(EXTRA)
        if kind == "scraped_at":
            fig.scraped_at = value
        elif kind == "failed":
            fig.failed_5m = value
    return at


@dataclass(frozen=True)
class Target:
    """One active scrape target, as ``/api/v1/targets`` reports it."""

    instance: str
    labels: Mapping[str, str]
    base_url: str
    """``scheme://host:port`` of its scrape URL: where its ``/api/jobs`` is."""
    health: str
    scrape_interval: float | None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Prometheus's ``1m30s`` in seconds, or None."""
    if not isinstance(text, str) or not text:
        return None
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and total > 0 else None


def _matches(labels: Mapping[str, str], matchers: tuple[Matcher, ...]) -> bool:
    for m in matchers:
        value = labels.get(m.name, "")
        want = m.value.encode("utf-8").decode("unicode_escape") if "\\" in m.value else m.value
        if m.op == "=" and value != want:
            return False
        if m.op == "!=" and value == want:
            return False
        if m.op in ("=~", "!~"):
            try:
                hit = re.fullmatch(want, value) is not None
            except re.error:
                return False
            if hit != (m.op == "=~"):
                return False
    return True


def parse_targets(data: Any, matchers: tuple[Matcher, ...]) -> list[Target]:
    """``/api/v1/targets``'s active targets that the selector matches, sorted by instance.

    The selector is matched here as PromQL would (RE2 and Python's ``re`` agree on the
    patterns a label selector uses), so discovery needs one request, not one per target.
    """
    if not isinstance(data, dict) or not isinstance(data.get("activeTargets"), list):
        raise ValueError("data.activeTargets: expected a list")
    out: dict[str, Target] = {}
    for t in data["activeTargets"]:
        if not isinstance(t, dict) or not isinstance(t.get("labels"), dict):
            continue
        labels = {str(k): str(v) for k, v in t["labels"].items()}
        instance = labels.get("instance")
        scrape_url = t.get("scrapeUrl")
        if instance is None or not isinstance(scrape_url, str) or not _matches(labels, matchers):
            continue
        parts = urllib.parse.urlsplit(scrape_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        netloc = parts.netloc.rsplit("@", 1)[-1]  # never carry userinfo along
        out[instance] = Target(
            instance=instance, labels=labels, base_url=f"{parts.scheme}://{netloc}",
            health=str(t.get("health", "unknown")),
            scrape_interval=parse_duration(str(t.get("scrapeInterval", ""))),
        )
    return [out[k] for k in sorted(out)]


class PrometheusClient:
    """Instant queries and the targets list over one :class:`JsonClient`."""

    def __init__(self, client: JsonClient, matchers: tuple[Matcher, ...]) -> None:
        self.client = client
        self.matchers = matchers

    def _data(self, path: str, params: dict[str, str] | None = None) -> Any:
        body = self.client.get_json(path, params)
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise FetchError(f"{self.client.where}{path} failed: "
                             f"{str(error)[:200] if error else 'not a Prometheus API answer'}")
        return body.get("data")

    def query(self, expr: str) -> Any:
        """``/api/v1/query`` (instant, now): the ``data`` object."""
        return self._data("/api/v1/query", {"query": expr})

    def figures(self) -> tuple[dict[str, InstanceFigures], float | None]:
        """Every instance's figures (two queries) and Prometheus's evaluation time."""
        try:
            figures = parse_series(self.query(series_query(self.matchers)))
            at = parse_extras(self.query(extras_query(self.matchers)), figures)
        except ValueError as exc:
            raise FetchError(f"{self.client.where}: unexpected answer ({exc})") from None
        return figures, at

    def targets(self) -> list[Target]:
        try:
            return parse_targets(self._data("/api/v1/targets", {"state": "active"}),
                                 self.matchers)
        except ValueError as exc:
            raise FetchError(f"{self.client.where}: unexpected targets answer ({exc})") from None
