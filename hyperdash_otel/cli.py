"""The ``hyperdash`` command: ``demo``, ``serve``, ``watch``, ``fleet`` and ``hash-password``.

Settings come from ``HYPERDASH_*`` environment variables (:meth:`Config.from_env`) with the
command-line flags winning. A bad argument or variable is one line on stderr and exit code 2;
a runtime failure (the port is taken, the stream is unreachable) one line and exit code 1.
``demo`` and ``serve`` print the dashboard's URL, alone on one line of stdout, once the
socket listens, and end with exit code 0 on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import math
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

from . import __version__
from . import validation as v
from .config import MIN_UPDATE_INTERVAL, Config
from .dashboard import Dashboard
from .server.security import hash_password
from .fleet.config import (
    DEFAULT_INSTANCE_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_QUERY_TIMEOUT,
    DEFAULT_SELECTOR,
    MAX_MAX_CONCURRENCY,
    FleetConfig,
)
from .fleet.config import ENV_PREFIX as FLEET_ENV
from .fleet.http import Credentials, check_url
from .fleet.prometheus import parse_selector
from .demo import (
    DEFAULT_HANG_EVERY,
    DEFAULT_RATE,
    DEFAULT_SPEED,
    DEFAULT_WARMUP,
    DEFAULT_WORKERS,
    MAX_HANG_EVERY,
    MAX_RATE,
    MAX_SPEED,
    MAX_WARMUP,
    MAX_WORKERS,
    DemoSettings,
    run_demo,
)
from .otel import OtlpSettings
from .watch import (
    DEFAULT_BACKLOG,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    WatchOptions,
    token_from_env,
    watch,
)

__all__ = ["build_parser", "main"]

PROG = "hyperdash"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ENV = "HYPERDASH_LOG_LEVEL"

log = logging.getLogger("hyperdash_otel.cli")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage stays behind ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- argument types: each raises ArgumentTypeError with the reason -----------------------------


def _number(text: str, kind: type[float] | type[int]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _ranged(
    kind: type[float] | type[int], low: float, high: float | None = None, *,
    low_open: bool = False, unit: str = "",
) -> Callable[[str], Any]:
    """A flag's type: a number of ``kind`` within the bounds, worded as validation.py words
    every bound (the flag's name comes first, from argparse)."""
    def parse(text: str) -> Any:
        value = _number(text, kind)
        problem = v.bound_problem(value, low, high, low_open=low_open, unit=unit, shown=text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


_port = _ranged(int, 0, 65535)
_interval = _ranged(float, MIN_UPDATE_INTERVAL, unit=" s")


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}"
        )
    return level


_LIMIT_FLAGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--max-connections", "max_connections", _ranged(int, 1), "HTTP connections at once "
     "(default: derived from the descriptor limit, RLIMIT_NOFILE)"),
    ("--max-connections-per-ip", "max_connections_per_ip", _ranged(int, 1),
     "HTTP connections from one address (default: a quarter of --max-connections)"),
    ("--header-timeout", "header_timeout", _ranged(float, 0, low_open=True, unit=" s"),
     "seconds a connection may take to send a request head (default: 10)"),
    ("--rate-limit", "rate_limit", _ranged(float, 0), "requests per second per address, "
     "0 for no limit (default: 50)"),
    ("--rate-limit-burst", "rate_limit_burst", _ranged(int, 1),
     "requests an address may make at once (default: 200)"),
    ("--auth-failures-per-minute", "auth_failures_per_minute", _ranged(float, 0),
     "failed authentications per minute per address, 0 for no limit (default: 6)"),
    ("--auth-failure-burst", "auth_failure_burst", _ranged(int, 1),
     "failed authentications an address may make at once (default: 10)"),
)
"""Connection caps and rate limits: flag, Config field, type, help (each also
``HYPERDASH_<FIELD>``)."""


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection caps and rate limits")
    for flag, dest, kind, text in _LIMIT_FLAGS:
        group.add_argument(flag, dest=dest, type=kind, metavar="N", help=text)


def _limit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {dest: getattr(args, dest, None) for _, dest, _, _ in _LIMIT_FLAGS}
    return {dest: value for dest, value in values.items() if value is not None}


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level", type=_log_level, metavar="LEVEL",
        help=f"debug, info, warning or error (default: ${LOG_LEVEL_ENV} or warning)",
    )

    serving = _Parser(add_help=False)
    serving.add_argument("--host",
                         help="address to bind (default: $HYPERDASH_HOST or 127.0.0.1)")
    serving.add_argument("--port", type=_port, help="port to bind, 0 for any free one "
                         "(default: $HYPERDASH_PORT or 8080)")
    serving.add_argument("--interval", type=_interval, metavar="SECONDS",
                         help="seconds between ticks (default: $HYPERDASH_UPDATE_INTERVAL or 1)")
    _add_limit_flags(serving)
    serving.add_argument("--allowed-host", action="append", metavar="NAME",
                         help="a Host name to answer besides loopback and the bound host "
                              "(repeatable; '.example.com' for a domain, '*' for any; "
                              "default: $HYPERDASH_ALLOWED_HOSTS)")

    server = _Parser(add_help=False, parents=[serving])
    server.add_argument("--stall-after", type=_ranged(float, 0, unit=" s"), metavar="SECONDS",
                        help="seconds a running job's progress may stand still before it is "
                             "marked stalled, 0 for never (default: $HYPERDASH_STALL_AFTER "
                             "or 300)")

    parser = _Parser(
        prog=PROG,
        description="A live job-monitoring dashboard on OpenTelemetry and Prometheus.",
        epilog="Every Config field can also be set as HYPERDASH_<FIELD> (HYPERDASH_PORT=9090, "
               "HYPERDASH_AUTH_TOKEN=...); flags win over the environment. "
               "OTEL_EXPORTER_OTLP_ENDPOINT (and the other standard OTEL_* variables) "
               "sends the metrics to an OpenTelemetry Collector too.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", parents=[common, server],
        help="serve a dashboard fed by a simulated VM-export daemon",
        description="Serve a dashboard fed by a simulated daemon exporting VMs from AWS, Azure "
                    "and GCP. Prints the URL on stdout, runs until Ctrl-C or SIGTERM.",
    )
    demo.add_argument("--hang-every", type=_ranged(float, 0, MAX_HANG_EVERY, unit=" s"),
                      default=DEFAULT_HANG_EVERY, metavar="SECONDS",
                      help="mean simulated seconds between hung exports, which stand still "
                           "for 2 to 4 times --stall-after and then move again; 0 for none "
                           f"(default: {DEFAULT_HANG_EVERY:g})")
    demo.add_argument("--rate", type=_ranged(float, 0, MAX_RATE, low_open=True),
                      default=DEFAULT_RATE, metavar="JOBS",
                      help=f"export requests per simulated minute (default: {DEFAULT_RATE:g}; "
                           "scheduled batches come on top)")
    demo.add_argument("--seed", type=lambda s: _number(s, int),
                      help="seed of the simulation: the same seed replays the same workload "
                           "(default: a random one, printed on stderr)")
    demo.add_argument("--speed", type=_ranged(float, 0, MAX_SPEED, low_open=True),
                      default=DEFAULT_SPEED, metavar="FACTOR",
                      help=f"simulated seconds per real second (default: {DEFAULT_SPEED:g})")
    demo.add_argument("--warmup", type=_ranged(float, 0, MAX_WARMUP, unit=" s"),
                      default=DEFAULT_WARMUP, metavar="SECONDS",
                      help="simulated seconds run before serving, so the first page has "
                           f"history (default: {DEFAULT_WARMUP:g})")
    demo.add_argument("--workers", type=_ranged(int, 1, MAX_WORKERS),
                      default=DEFAULT_WORKERS, metavar="N",
                      help=f"exports running at once (default: {DEFAULT_WORKERS})")

    commands.add_parser(
        "serve", parents=[common, server],
        help="serve an empty dashboard (no workload), for checks and embedding trials",
        description="Serve a dashboard with no workload. Prints the URL on stdout, runs until "
                    "Ctrl-C or SIGTERM.",
    )

    _add_fleet_parser(commands, [common, serving])

    hp = commands.add_parser(
        "hash-password", parents=[common],
        help="print a basic_auth entry (user and salted scrypt hash) for a password",
        description="Read a password (prompted twice on a terminal, else the first line of "
                    "stdin) and print 'USER:scrypt:N:r:p:salt:key', an entry for "
                    "HYPERDASH_BASIC_AUTH (comma-separated) or Config(basic_auth=...).",
    )
    hp.add_argument("user", metavar="USER", help="the user name (no ':')")

    w = commands.add_parser(
        "watch", parents=[common],
        help="follow a dashboard's stream in the terminal",
        description="Print one line per tick from a dashboard's WebSocket stream (or the raw "
                    "JSON with --json). A first connection that fails ends the watch at once "
                    "(unless --wait); a dropped connection is retried with backoff. Sends "
                    "$HYPERDASH_AUTH_TOKEN as a bearer token when set. Exit codes: 0 done "
                    "(--once, --count, Ctrl-C), 1 connection error, 2 bad arguments.",
    )
    w.add_argument("url", metavar="URL",
                   help="the dashboard (http://host:port) or its stream (ws://host:port/ws)")
    w.add_argument("--json", action="store_true",
                   help="print each message as received, one JSON object a line")
    stop = w.add_mutually_exclusive_group()
    stop.add_argument("--once", action="store_true",
                      help="print the newest snapshot and exit")
    stop.add_argument("--count", type=_ranged(int, 1), metavar="N",
                      help="exit after printing N messages")
    w.add_argument("--backlog", type=_ranged(int, 0), default=DEFAULT_BACKLOG, metavar="N",
                   help="replayed snapshots to print on connect (default: "
                        f"{DEFAULT_BACKLOG}, the newest)")
    w.add_argument("--max-retries", type=_ranged(int, 0), default=DEFAULT_MAX_RETRIES,
                   metavar="N",
                   help="failed reconnection attempts in a row before giving up (default: "
                        f"{DEFAULT_MAX_RETRIES}; 0 ends the watch when the stream drops)")
    w.add_argument("--wait", action="store_true",
                   help="retry the first connection too (start before the server)")
    w.add_argument("--connect-timeout", type=_ranged(float, 0, low_open=True, unit=" s"),
                   default=DEFAULT_CONNECT_TIMEOUT, metavar="SECONDS",
                   help=f"per attempt (default: {DEFAULT_CONNECT_TIMEOUT:g})")
    w.add_argument("--no-color", action="store_true",
                   help="never color the health (default: color on a terminal unless "
                        "$NO_COLOR is set)")
    return parser


# -- fleet -------------------------------------------------------------------------------------

_FLEET_PEERS = (
    ("prometheus", "Prometheus"),
    ("alertmanager", "Alertmanager"),
    ("instances", "the instances' /api/jobs and /api/metrics"),
)


def _add_fleet_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    f = commands.add_parser(
        "fleet", parents=parents,
        help="serve one page over every instance a Prometheus scrapes",
        description="Serve the page over a fleet: numbers from Prometheus's HTTP API (two "
                    "instant queries a tick), jobs and alerts from each live instance and "
                    "from Alertmanager. Prints the URL on stdout, runs until Ctrl-C or "
                    "SIGTERM. Credentials come from the *-file flags or "
                    f"{FLEET_ENV}<PEER>_TOKEN, _USER, _PASSWORD, _CA_FILE (PEER: PROMETHEUS, "
                    "ALERTMANAGER, INSTANCES), never from a URL.",
    )
    f.add_argument("--prometheus", metavar="URL",
                   help=f"Prometheus's base URL (default: ${FLEET_ENV}PROMETHEUS_URL; required)")
    f.add_argument("--selector", metavar="SELECTOR",
                   help=f"label selector of the instances (default: {DEFAULT_SELECTOR})")
    f.add_argument("--alertmanager", metavar="URL",
                   help="Alertmanager's base URL (default: "
                        f"${FLEET_ENV}ALERTMANAGER_URL; none: only the instances' alerts)")
    f.add_argument("--instance-timeout", type=_ranged(float, 0, 300, low_open=True, unit=" s"),
                   metavar="SECONDS", default=DEFAULT_INSTANCE_TIMEOUT,
                   help="per request to an instance (default: "
                        f"{DEFAULT_INSTANCE_TIMEOUT:g})")
    f.add_argument("--query-timeout", type=_ranged(float, 0, 300, low_open=True, unit=" s"),
                   metavar="SECONDS", default=DEFAULT_QUERY_TIMEOUT,
                   help="per request to Prometheus or Alertmanager (default: "
                        f"{DEFAULT_QUERY_TIMEOUT:g})")
    f.add_argument("--max-concurrency", type=_ranged(int, 1, MAX_MAX_CONCURRENCY),
                   metavar="N", default=DEFAULT_MAX_CONCURRENCY,
                   help=f"instances fetched at once (default: {DEFAULT_MAX_CONCURRENCY})")
    f.add_argument("--max-instances", type=_ranged(int, 1, 100_000), metavar="N",
                   default=DEFAULT_MAX_INSTANCES,
                   help="most instances whose jobs and alerts are fetched (default: "
                        f"{DEFAULT_MAX_INSTANCES}); every instance still counts in the sums")
    f.add_argument("--refresh-interval", type=_ranged(float, 0, 3600, low_open=True,
                                                      unit=" s"),
                   metavar="SECONDS",
                   help="seconds between two fetches of the instances' jobs and alerts "
                        "(default: the targets' scrape interval, at least 1)")
    for peer, what in _FLEET_PEERS:
        group = f.add_argument_group(f"credentials for {what}")
        group.add_argument(f"--{peer}-token-file", metavar="FILE",
                           help="a file whose first line is a bearer token")
        group.add_argument(f"--{peer}-user", metavar="USER", help="basic auth user")
        group.add_argument(f"--{peer}-password-file", metavar="FILE",
                           help="a file whose first line is the basic auth password")
        group.add_argument(f"--{peer}-ca-file", metavar="FILE",
                           help="CA certificates (PEM) to verify its TLS certificate")


def _fleet_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> FleetConfig:
    """The fleet's settings from flags and the environment; ValueError naming the flag."""
    env = dict(os.environ) if environ is None else environ
    urls: dict[str, str | None] = {}
    for peer in ("prometheus", "alertmanager"):
        raw = getattr(args, peer)
        if raw is None:
            raw = env.get(f"{FLEET_ENV}{peer.upper()}_URL", "").strip() or None
        urls[peer] = None if raw is None else check_url(raw, f"--{peer}")
    prometheus = urls["prometheus"]
    if prometheus is None:
        raise ValueError(f"--prometheus is required (or {FLEET_ENV}PROMETHEUS_URL)")
    selector = args.selector if args.selector is not None else DEFAULT_SELECTOR
    parse_selector(selector, "--selector")
    creds = {
        peer: Credentials.from_sources(
            f"{FLEET_ENV}{peer.upper()}",
            token_file=getattr(args, f"{peer}_token_file"),
            user=getattr(args, f"{peer}_user"),
            password_file=getattr(args, f"{peer}_password_file"),
            ca_file=getattr(args, f"{peer}_ca_file"),
            environ=env, flag=f"--{peer}",
        )
        for peer, _ in _FLEET_PEERS
    }
    return FleetConfig(
        prometheus=prometheus, selector=selector, alertmanager=urls["alertmanager"],
        prometheus_credentials=creds["prometheus"],
        alertmanager_credentials=creds["alertmanager"],
        instances_credentials=creds["instances"],
        query_timeout=args.query_timeout, instance_timeout=args.instance_timeout,
        max_concurrency=args.max_concurrency, max_instances=args.max_instances,
        refresh_interval=args.refresh_interval,
    )


def _url(config: Config, port: int) -> str:
    scheme = "https" if config.tls_certfile else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{scheme}://{host}:{port}/"


async def _serve_fleet(config: Config, fleet: FleetConfig, stop: asyncio.Event,
                       out: TextIO, err: TextIO) -> int:
    from .fleet.source import FleetSource  # the server stack, only when serving a fleet
    from .server.runner import Runner

    source = FleetSource(fleet, config)
    try:
        runner = Runner(source)
        await runner.start()
        try:
            assert runner.port is not None
            out.write(_url(config, runner.port) + "\n")
            out.flush()
            am = f" and Alertmanager at {fleet.alertmanager}" if fleet.alertmanager else ""
            err.write(f"{PROG} fleet: instances {fleet.selector} from Prometheus at "
                      f"{fleet.prometheus}{am}; Ctrl-C to stop\n")
            err.flush()
            await stop.wait()
        finally:
            await runner.aclose()
    finally:
        # Joins the fetch threads (each bounded by its timeout): off the loop.
        await asyncio.to_thread(source.close)
    return 0


def _cmd_fleet(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = _config(args, "fleet", err)
    if config is None:
        return 2
    try:
        fleet = _fleet_config(args)
    except (ValueError, TypeError) as exc:
        err.write(f"{PROG} fleet: error: {exc}\n")
        return 2
    try:
        return _run_until_signalled(lambda stop: _serve_fleet(config, fleet, stop, out, err))
    except OSError as exc:
        return _listen_error("fleet", config, exc, err)


# -- running -----------------------------------------------------------------------------------


def _setup_logging(level: str | None) -> None:
    name = level or os.environ.get(LOG_LEVEL_ENV, "").strip().lower() or "warning"
    if name not in LOG_LEVELS:
        name = "warning"
    logging.basicConfig(
        level=getattr(logging, name.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _config(args: argparse.Namespace, command: str, err: TextIO) -> Config | None:
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.interval is not None:
        overrides["update_interval"] = args.interval
    overrides.update(_limit_overrides(args))
    if getattr(args, "stall_after", None) is not None:
        overrides["stall_after"] = args.stall_after
    if args.allowed_host:
        overrides["allowed_hosts"] = tuple(args.allowed_host)
    try:
        config = Config.from_env(**overrides)
        # The OTEL_* variables that send metrics to a Collector, checked before serving.
        OtlpSettings.from_env()
    except (ValueError, TypeError) as exc:
        err.write(f"{PROG} {command}: error: {exc}\n")
        return None
    if not config.enabled:
        err.write(f"{PROG} {command}: error: the dashboard is disabled (HYPERDASH_ENABLED)\n")
        return None
    return config


def _run_until_signalled(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``body(stop)`` on a fresh loop; SIGINT or SIGTERM sets ``stop``.

    After the first signal the handlers are removed, so a second Ctrl-C interrupts a
    shutdown that hangs.
    """

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed: list[signal.Signals] = []

        def on_signal() -> None:
            stop.set()
            for sig in installed:
                loop.remove_signal_handler(sig)
            installed.clear()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            return await body(stop)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(runner())
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


def _listen_error(command: str, config: Config, exc: OSError, err: TextIO) -> int:
    reason = str(exc.strerror or exc).removeprefix(f"{PROG}: ")
    if not reason.startswith("cannot listen"):
        reason = f"cannot listen on {config.host}:{config.port}: {reason}"
    err.write(f"{PROG} {command}: {reason}\n")
    return 1


def _print_url(dashboard: Dashboard, out: TextIO) -> None:
    out.write(f"{dashboard.url}\n")
    out.flush()


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = _config(args, "demo", err)
    if config is None:
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    settings = DemoSettings(seed=seed, rate=args.rate, workers=args.workers,
                            speed=args.speed, warmup=args.warmup, hang_every=args.hang_every)

    def ready(dashboard: Dashboard) -> None:
        _print_url(dashboard, out)
        err.write(
            f"{PROG} demo: a simulated VM-export daemon (seed {seed}, {settings.rate:g} jobs/min, "
            f"{settings.workers} workers, speed {settings.speed:g}x); Ctrl-C to stop\n"
        )
        err.flush()

    async def body(stop: asyncio.Event) -> int:
        steps = await run_demo(config, settings, stop, ready)
        log.info("demo stopped after %d steps", steps)
        return 0

    try:
        return _run_until_signalled(body)
    except OSError as exc:
        return _listen_error("demo", config, exc, err)


async def _serve(config: Config, stop: asyncio.Event, out: TextIO) -> int:
    dashboard = Dashboard(config)
    try:
        async with dashboard:
            _print_url(dashboard, out)
            await stop.wait()
    finally:
        dashboard.close()
    return 0


def _cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = _config(args, "serve", err)
    if config is None:
        return 2
    try:
        return _run_until_signalled(lambda stop: _serve(config, stop, out))
    except OSError as exc:
        return _listen_error("serve", config, exc, err)


def _cmd_hash_password(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    user = args.user
    if not user or ":" in user or not user.isprintable():
        err.write(f"{PROG} hash-password: error: USER must be non-empty, printable, "
                  "without ':'\n")
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            err.write(f"{PROG} hash-password: error: the passwords differ\n")
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        err.write(f"{PROG} hash-password: error: the password is empty\n")
        return 2
    out.write(f"{user}:{hash_password(password)}\n")
    return 0


def _cmd_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    color = not args.no_color and not args.json and "NO_COLOR" not in os.environ
    options = WatchOptions(
        raw_json=args.json,
        count=1 if args.once else args.count,
        backlog=args.backlog,
        max_retries=args.max_retries,
        wait=args.wait,
        connect_timeout=args.connect_timeout,
        token=token_from_env(),
        color=color and out.isatty(),
    )

    async def body(stop: asyncio.Event) -> int:
        task = asyncio.ensure_future(watch(args.url, options, out=out, err=err))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0  # stopped by a signal: the normal way to end a watch

    return _run_until_signalled(body)


def _quiet_broken_pipe() -> int:
    """The reader went away (``| head``): stop without a traceback or a flush error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO, TextIO], int]] = {
    "demo": _cmd_demo,
    "fleet": _cmd_fleet,
    "hash-password": _cmd_hash_password,
    "serve": _cmd_serve,
    "watch": _cmd_watch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hyperdash`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("choose a command: demo, serve, watch or fleet")
    _setup_logging(args.log_level)
    try:
        return COMMANDS[args.command](args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        return _quiet_broken_pipe()
