"""``hyperdash fleet``: help, one-line errors naming the flag (exit 2), credentials from
files and the environment, and a taken port (exit 1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperdash_otel.cli import _fleet_config, build_parser, main

SECRET = "cli-secret-token-31337"


def test_help_lists_the_fleet_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fleet", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hyperdash fleet")
    for flag in ("--prometheus", "--selector", "--alertmanager", "--instance-timeout",
                 "--max-concurrency", "--host", "--port", "--interval",
                 "--prometheus-token-file", "--prometheus-user", "--prometheus-password-file",
                 "--prometheus-ca-file", "--alertmanager-token-file", "--instances-ca-file",
                 "HYPERDASH_FLEET_"):
        assert flag in out
    assert "--stall-after" not in out  # a fleet has no jobs of its own to watch


@pytest.mark.parametrize(("argv", "says"), [
    ([], "--prometheus is required (or HYPERDASH_FLEET_PROMETHEUS_URL)"),
    (["--prometheus", f"http://admin:{SECRET}@127.0.0.1:9090"],
     "--prometheus must not carry credentials in the URL"),
    (["--prometheus", "http://127.0.0.1:9090", "--alertmanager", f"https://u:{SECRET}@am"],
     "--alertmanager must not carry credentials in the URL"),
    (["--prometheus", "127.0.0.1:9090"], "--prometheus must be an http:// or https:// URL"),
    (["--prometheus", "http://h:9090", "--selector", "hyperdash"],
     "--selector must be a label selector in braces"),
    (["--prometheus", "http://h:9090", "--prometheus-user", "bob"],
     "--prometheus-password-file is required with --prometheus-user"),
    (["--prometheus", "http://h:9090", "--instances-token-file", "/no/such"],
     "--instances-token-file: cannot read '/no/such'"),
    (["--prometheus", "http://h:9090", "--alertmanager-ca-file", "/no/such.pem"],
     "--alertmanager-ca-file: '/no/such.pem' is not a readable file"),
])
def test_bad_settings_are_one_line_naming_the_flag(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HYPERDASH_FLEET_PROMETHEUS_URL", raising=False)
    assert main(["fleet", *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"hyperdash fleet: error: {says}\n" or err.startswith(
        f"hyperdash fleet: error: {says}")
    assert err.count("\n") == 1 and SECRET not in err


@pytest.mark.parametrize(("argv", "says"), [
    (["--max-concurrency", "0"], "argument --max-concurrency: must be >= 1 and <= 256, got 0"),
    (["--instance-timeout", "0"], "argument --instance-timeout: must be > 0 and <= 300"),
    (["--query-timeout", "x"], "argument --query-timeout: expected a number, got 'x'"),
    (["--refresh-interval", "-1"], "argument --refresh-interval: must be > 0"),
])
def test_bad_numbers_are_refused_by_the_parser(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fleet", "--prometheus", "http://h:9090", *argv])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def parse(*argv: str) -> Any:
    return build_parser().parse_args(["fleet", *argv])


def test_flags_and_environment_make_the_fleet_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    env = {
        "HYPERDASH_FLEET_PROMETHEUS_URL": "http://127.0.0.1:9090/",
        "HYPERDASH_FLEET_ALERTMANAGER_URL": "http://127.0.0.1:9093",
        "HYPERDASH_FLEET_PROMETHEUS_TOKEN": "from-env-token",
        "HYPERDASH_FLEET_ALERTMANAGER_USER": "am",
        "HYPERDASH_FLEET_ALERTMANAGER_PASSWORD": "am-password",
    }
    config = _fleet_config(parse("--instances-token-file", str(token), "--selector",
                                 '{job="exporter"}', "--max-concurrency", "4"), env)
    assert (config.prometheus, config.alertmanager, config.selector) == (
        "http://127.0.0.1:9090", "http://127.0.0.1:9093", '{job="exporter"}')
    assert config.prometheus_credentials.token == "from-env-token"
    assert (config.alertmanager_credentials.user,
            config.alertmanager_credentials.password) == ("am", "am-password")
    assert config.instances_credentials.token == SECRET
    assert config.max_concurrency == 4
    assert SECRET not in repr(config)
    # The flag wins over the environment.
    flagged = _fleet_config(parse("--prometheus", "http://10.0.0.1:9090"), env)
    assert flagged.prometheus == "http://10.0.0.1:9090"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_port_is_one_line_and_exit_1(busy_port: int, spawn: Any) -> None:
    process = spawn("fleet", "--prometheus", "http://127.0.0.1:9", "--port", str(busy_port))
    assert process.proc.wait(20) == 1
    err = process.stderr()
    assert err.startswith(f"hyperdash fleet: cannot listen on 127.0.0.1:{busy_port}")
    assert err.count("\n") == 1


def test_the_fleet_serves_the_page_and_stops_on_sigterm(spawn: Any) -> None:
    import signal

    process = spawn("fleet", "--prometheus", "http://127.0.0.1:9", "--port", "0")
    snap = process.get("api/metrics")
    assert snap["fleet"]["prometheus"] == "unreachable"
    assert process.url.startswith("http://127.0.0.1:")
    code, _ = process.stop(signal.SIGTERM)
    assert code == 0
