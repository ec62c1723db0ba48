from datetime import timedelta

import pytest

from hyperdash_otel import Config, default_config


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
