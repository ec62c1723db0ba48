import dataclasses
from datetime import datetime, timedelta
from typing import Optional

import pytest

from hyperdash_otel import Config, default_config
from hyperdash_otel.config import env_parsers
from hyperdash_otel.server.security import hash_password


def test_defaults_are_the_originals_plus_safe_binding():
    c = default_config()
    assert (c.enabled, c.port, c.update_interval, c.max_clients) == (True, 8080, 1.0, 100)
    assert (c.host, c.max_jobs, c.max_alerts, c.collect_system_metrics) == (
        "127.0.0.1", 50, 20, True)
    assert c == Config()


def test_update_interval_takes_seconds_or_timedelta():
    assert Config(update_interval=timedelta(milliseconds=500)).update_interval == 0.5
    assert Config(update_interval=2).update_interval == 2.0
    assert Config(update_interval=0.05).update_interval_timedelta == timedelta(milliseconds=50)


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"port": -1}, ValueError, "port"),
        ({"port": 65536}, ValueError, "port"),
        ({"port": "80"}, TypeError, "port"),
        ({"port": True}, TypeError, "port"),
        ({"update_interval": 0.01}, ValueError, "update_interval"),
        ({"update_interval": float("nan")}, ValueError, "update_interval"),
        ({"update_interval": "1s"}, TypeError, "update_interval"),
        ({"max_clients": 0}, ValueError, "max_clients"),
        ({"max_jobs": 0}, ValueError, "max_jobs"),
        ({"max_alerts": 0}, ValueError, "max_alerts"),
        ({"host": ""}, ValueError, "host"),
        ({"enabled": 1}, TypeError, "enabled"),
        ({"auth_token": "short"}, ValueError, "auth_token"),
        ({"tls_certfile": "cert.pem"}, ValueError, "tls_"),
        ({"allowed_origins": ("",)}, ValueError, "allowed_origins"),
        ({"stall_after": -1}, ValueError, "stall_after"),
        ({"stall_after": float("inf")}, ValueError, "stall_after"),
        ({"stall_after": "5m"}, TypeError, "stall_after"),
    ],
)
def test_bad_values_name_the_field(kwargs, exc, field):
    with pytest.raises(exc, match=field):
        Config(**kwargs)


def test_stall_after_takes_seconds_or_timedelta_and_zero_turns_it_off():
    assert Config().stall_after == 300.0
    assert Config(stall_after=timedelta(minutes=2)).stall_after == 120.0
    assert Config(stall_after=0).stall_after == 0.0
    assert Config.from_env({"HYPERDASH_STALL_AFTER": "45.5"}).stall_after == 45.5
    with pytest.raises(ValueError, match="HYPERDASH_STALL_AFTER"):
        Config.from_env({"HYPERDASH_STALL_AFTER": "soon"})


def test_port_zero_means_any_free_port():
    assert Config(port=0).port == 0


def test_config_is_frozen_and_keyword_only():
    c = Config()
    with pytest.raises(AttributeError):
        c.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Config(True)  # type: ignore[misc]
    assert c.replace(port=9000).port == 9000


def test_from_env_reads_prefixed_variables_and_overrides_win():
    env = {
        "HYPERDASH_PORT": "9090",
        "HYPERDASH_UPDATE_INTERVAL": "0.5",
        "HYPERDASH_ENABLED": "false",
        "HYPERDASH_HOST": "0.0.0.0",
        "HYPERDASH_ALLOWED_ORIGINS": "https://a.example.com, https://*.b.example.com",
        "UNRELATED": "x",
    }
    c = Config.from_env(env, max_clients=7)
    assert (c.port, c.update_interval, c.enabled, c.host, c.max_clients) == (
        9090, 0.5, False, "0.0.0.0", 7)
    assert c.allowed_origins == ("https://a.example.com", "https://*.b.example.com")
    assert Config.from_env(env, port=1).port == 1


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"HYPERDASH_PORT": "eighty"}, "HYPERDASH_PORT"),
        ({"HYPERDASH_ENABLED": "maybe"}, "HYPERDASH_ENABLED"),
        ({"HYPERDASH_UPDATE_INTERVAL": "fast"}, "HYPERDASH_UPDATE_INTERVAL"),
    ],
)
def test_from_env_unparsable_value_names_the_variable(env, name):
    with pytest.raises(ValueError, match=name):
        Config.from_env(env)


def test_from_env_validates_like_the_constructor():
    with pytest.raises(ValueError, match="port"):
        Config.from_env({"HYPERDASH_PORT": "70000"})


# -- from_env follows the annotations -----------------------------------------------------------

NOT_DEFAULTS: dict[str, object] = {
    "enabled": False, "port": 9091, "update_interval": 0.25, "max_clients": 7,
    "host": "0.0.0.0", "max_jobs": 60, "max_alerts": 30, "collect_system_metrics": False,
    "max_text_length": 500, "max_custom_series": 20, "history_size": 10,
    "slow_client_max_skips": 3,
    "allowed_origins": ("https://a.example.com", "https://*.b.example.com"),
    "auth_token": "a-token-long-enough",
    "basic_auth": (f"alice:{hash_password('correct horse', n=2, r=1, p=1)}",),
    "metrics_token": "scraper-token", "allowed_hosts": ("dash.example.com", ".example.org"),
    "tls_certfile": "/etc/tls/cert.pem", "tls_keyfile": "/etc/tls/key.pem",
    "use_global_registry": True, "max_connections": 64, "max_connections_per_ip": 8,
    "header_timeout": 2.5, "rate_limit": 0.0, "rate_limit_burst": 5,
    "auth_failures_per_minute": 1.5, "auth_failure_burst": 2,
    "rate_limit_max_addresses": 100, "stall_after": 90.0,
}
"""A valid value other than the default for every field (a new field needs one here)."""


def as_env(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(value)
    return "" if value is None else str(value)


def test_every_field_round_trips_through_from_env():
    fields = [f.name for f in dataclasses.fields(Config)]
    assert sorted(NOT_DEFAULTS) == sorted(fields)
    wanted = Config(**NOT_DEFAULTS)
    defaults = Config()
    assert all(getattr(wanted, name) != getattr(defaults, name) for name in fields)
    env = {f"HYPERDASH_{name.upper()}": as_env(getattr(wanted, name)) for name in fields}
    assert Config.from_env(env) == wanted
    # And back: the defaults, written out, read as the defaults ("auto" for the caps).
    env = {f"HYPERDASH_{name.upper()}": as_env(getattr(defaults, name)) for name in fields}
    assert Config.from_env(env) == defaults


@pytest.mark.parametrize(("variable", "raw", "says"), [
    ("HYPERDASH_PORT", "eighty", "expected an integer, got 'eighty'"),
    ("HYPERDASH_ENABLED", "maybe", "expected a boolean (true/false), got 'maybe'"),
    ("HYPERDASH_UPDATE_INTERVAL", "fast", "expected seconds, got 'fast'"),
    ("HYPERDASH_HEADER_TIMEOUT", "soon", "expected seconds, got 'soon'"),
    ("HYPERDASH_RATE_LIMIT", "lots", "expected a number, got 'lots'"),
    ("HYPERDASH_MAX_CONNECTIONS", "many", "expected an integer or 'auto', got 'many'"),
])
def test_from_env_says_what_the_annotation_expects(variable, raw, says):
    with pytest.raises(ValueError) as error:
        Config.from_env({variable: raw})
    assert str(error.value) == f"{variable}: {says}"


def test_optional_caps_read_auto_or_empty_as_none():
    for raw in ("auto", "AUTO", ""):
        assert Config.from_env({"HYPERDASH_MAX_CONNECTIONS": raw}).max_connections is None


def test_an_annotation_from_env_cannot_parse_fails_loudly():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings:
        port: int = 1
        started: datetime | None = None

    with pytest.raises(TypeError, match=r"Settings\.started: from_env has no parser"):
        env_parsers(Settings)


def test_either_spelling_of_an_optional_annotation_is_understood():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings:
        cap: Optional[int] = None  # noqa: UP045 - the spelling under test
        name: str | None = None

    parsers = env_parsers(Settings)
    assert (parsers["cap"]("auto"), parsers["cap"]("3"), parsers["name"]("")) == (None, 3, None)
