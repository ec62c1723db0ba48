"""The ``hyperdash`` command line: help, one-line errors with exit code 2, configuration from
``HYPERDASH_*`` variables with flags winning, and ``serve`` as a real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hyperdash_process import HyperdashProcess
from support import hyperdash

from hyperdash_otel import __version__
from hyperdash_otel.cli import main


# -- in-process: parsing only (nothing here starts a server or configures logging) -------------


@pytest.mark.parametrize(
    ("argv", "usage", "mentions"),
    [
        ([], "usage: hyperdash", ["demo", "serve", "watch", "HYPERDASH_"]),
        (["demo"], "usage: hyperdash demo",
         ["--host", "--port", "--interval", "--rate", "--seed", "--speed", "--warmup",
          "--log-level"]),
        (["serve"], "usage: hyperdash serve", ["--host", "--port", "--interval"]),
        (["watch"], "usage: hyperdash watch",
         ["--json", "--once", "--count", "--max-retries", "--wait", "HYPERDASH_AUTH_TOKEN"]),
    ],
)
def test_every_command_has_help(
    argv: list[str], usage: str, mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(usage)
    for flag in mentions:
        assert flag in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert (exit_.value.code, capsys.readouterr().out) == (0, f"hyperdash {__version__}\n")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "hyperdash: error: choose a command: demo, serve, watch or fleet"),
        (["nope"], "hyperdash: error: argument COMMAND: invalid choice: 'nope'"),
        (["demo", "--port", "x"], "argument --port: expected an integer, got 'x'"),
        (["demo", "--port", "70000"], "argument --port: must be >= 0 and <= 65535, got 70000"),
        (["demo", "--interval", "0"], "argument --interval: must be >= 0.05 s, got 0"),
        (["demo", "--interval", "nan"], "argument --interval: expected a finite number"),
        (["demo", "--rate", "0"], "argument --rate: must be > 0 and <= 600, got 0"),
        (["demo", "--speed", "1000"], "argument --speed: must be > 0 and <= 100"),
        (["demo", "--workers", "0"], "argument --workers: must be >= 1 and <= 256"),
        (["demo", "--seed", "1.5"], "argument --seed: expected an integer, got '1.5'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["serve", "--log-level", "loud"], "argument --log-level: must be one of debug"),
        (["watch"], "the following arguments are required: URL"),
        (["watch", "http://h:1", "--once", "--count", "2"], "not allowed with argument"),
        (["watch", "http://h:1", "--count", "0"], "argument --count: must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.endswith("--help)\n")
    assert captured.err.startswith("hyperdash")
    assert says in captured.err


# -- configuration errors as a process ---------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"HYPERDASH_PORT": "abc"},
         "hyperdash serve: error: HYPERDASH_PORT: expected an integer, got 'abc'\n"),
        ({"HYPERDASH_UPDATE_INTERVAL": "0.01"},
         "hyperdash serve: error: update_interval must be >= 0.05 s, got 0.01\n"),
        ({"HYPERDASH_ENABLED": "false"},
         "hyperdash serve: error: the dashboard is disabled (HYPERDASH_ENABLED)\n"),
        ({"HYPERDASH_AUTH_TOKEN": "short"},
         "hyperdash serve: error: auth_token must be a string of at least 8 characters\n"),
    ],
    ids=["bad-port", "too-fast", "disabled", "short-token"],
)
def test_bad_environment_is_one_line_and_exit_2(env: dict[str, str], says: str) -> None:
    result = hyperdash("serve", "--port", "0", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", says)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_taken_port_is_one_line_and_exit_1(command: str, busy_port: int) -> None:
    result = hyperdash(command, "--port", str(busy_port))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"hyperdash {command}: cannot listen on 127.0.0.1:{busy_port}: Address already in use\n"
    )


# -- `hyperdash serve` as a process ------------------------------------------------------------


Serve = Callable[..., HyperdashProcess]


@pytest.fixture
def server(spawn: Serve) -> Serve:
    """A ``hyperdash serve|demo`` process, once it has printed its URL."""

    def start(*args: str, env: dict[str, str] | None = None) -> HyperdashProcess:
        process = spawn(*args, env=env)
        assert process.url, f"exited {process.proc.poll()}: {process.stderr()}"
        return process

    return start


def test_serve_runs_an_empty_dashboard_until_sigterm(server: Serve) -> None:
    s = server("serve", "--port", "0")
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/", s.url)
    assert s.get("healthz")["status"] == "ok"
    snap = s.get("api/metrics")
    assert (snap["jobs_active"], snap["recent_jobs"], snap["provider_stats"]) == (0, [], {})
    assert snap["memory_usage"] > 0  # the process's own, sampled
    code, took = s.stop(signal.SIGTERM)
    assert (code, took < 2.0) == (0, True), took
    assert "Traceback" not in s.stderr()


def ticks_within(s: HyperdashProcess, ticks: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if s.get("healthz")["ticks"] >= ticks:
            return True
        time.sleep(0.05)
    return False


def test_configuration_comes_from_the_environment(server: Serve) -> None:
    s = server("serve", env={"HYPERDASH_PORT": "0", "HYPERDASH_HOST": "127.0.0.1",
                             "HYPERDASH_UPDATE_INTERVAL": "0.1"})
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/", s.url)
    assert ticks_within(s, 5, 3.0)  # 0.1 s ticks: the default 1 s would need 5 s


def test_flags_win_over_the_environment(server: Serve, busy_port: int) -> None:
    s = server("serve", "--port", "0", "--interval", "0.1",
               env={"HYPERDASH_PORT": str(busy_port), "HYPERDASH_UPDATE_INTERVAL": "5"})
    assert not s.url.endswith(f":{busy_port}/")
    assert ticks_within(s, 5, 3.0)


def test_log_level_from_the_environment_or_the_flag(server: Serve) -> None:
    s = server("serve", "--port", "0", env={"HYPERDASH_LOG_LEVEL": "info"})
    s.get("healthz")
    assert s.stop()[0] == 0
    assert re.search(r"INFO hyperdash_otel\.server: hyperdash dashboard on http://", s.stderr())
    quiet = server("serve", "--port", "0", "--log-level", "error",
                   env={"HYPERDASH_LOG_LEVEL": "info"})
    assert quiet.stop()[0] == 0
    assert quiet.stderr() == ""


def test_demo_prints_the_url_alone_on_stdout_and_the_rest_on_stderr(
    server: Serve,
) -> None:
    s = server("demo", "--port", "0", "--seed", "42", "--rate", "20")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", s.url)
    assert s.stop(signal.SIGINT)[0] == 0
    assert s.stderr() == (
        "hyperdash demo: a simulated VM-export daemon (seed 42, 20 jobs/min, 8 workers, "
        "speed 1x); Ctrl-C to stop\n"
    )


def test_the_console_script_and_the_module_are_the_same_command() -> None:
    script = Path(sys.executable).with_name("hyperdash")
    if not script.exists():
        reason = "no console script next to this interpreter (not an installed venv)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true and {reason}: `make setup` installs it", pytrace=False)
        pytest.skip(reason)
    by_script = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                               timeout=20)
    by_module = hyperdash("--version")
    assert by_script.stdout == by_module.stdout == f"hyperdash {__version__}\n"
