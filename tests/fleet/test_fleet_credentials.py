"""Credentials against a real Prometheus behind TLS and basic auth (its --web.config.file),
and never a credential in a log line, an error or the message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import bcrypt
import pytest
from fleet_parts import Process, start_prometheus, wait_for
from support import require_binary, self_signed_certificate

from hyperdash_otel import Config, Dashboard
from hyperdash_otel.fleet.config import FleetConfig
from hyperdash_otel.fleet.http import Credentials
from hyperdash_otel.fleet.source import FleetSource

USER = "fleet"
PASSWORD = "correct-horse-battery-staple-9"
WRONG = "wrong-password-but-secret-too-4"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    """Prometheus on https with one basic-auth user, scraping one Dashboard."""
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("guarded")
    cert, key = self_signed_certificate(tmp)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    dash = Dashboard(Config(port=0, collect_system_metrics=False))
    dash.update_job_metrics(4, 0, 0, 0, 0)
    dash.start_in_thread()
    prom = None
    try:
        prom = start_prometheus(
            binary, tmp / "prom", [f"127.0.0.1:{dash.port}"],
            web_config={"tls_server_config": {"cert_file": cert, "key_file": key},
                        "basic_auth_users": {USER: hashed}},
            ca_file=cert, auth=(USER, PASSWORD))
        yield prom, cert
    finally:
        if prom is not None:
            prom.stop()
        dash.close()


def fleet(prom: Process, creds: Credentials) -> FleetSource:
    return FleetSource(FleetConfig(prometheus=prom.base, prometheus_credentials=creds,
                                   refresh_interval=0.3), Config(port=0))


def test_basic_auth_and_a_ca_file_reach_a_guarded_prometheus(
    guarded: tuple[Process, str],
) -> None:
    prom, ca = guarded
    with fleet(prom, Credentials(user=USER, password=PASSWORD, ca_file=ca)) as source:
        snap = wait_for("the fleet to read the guarded Prometheus", lambda: (
            s if s["fleet"]["instances_up"] == 1 else None) if (s := source.snapshot())
            else None)
        assert (snap["fleet"]["prometheus"], snap["jobs_active"]) == ("ok", 4)


@pytest.mark.parametrize(("creds", "says"), [
    (Credentials(user=USER, password=WRONG), "answered 401"),
    (Credentials(token=WRONG), "answered 401"),
    (Credentials(user=USER, password=PASSWORD), "CERTIFICATE_VERIFY_FAILED"),  # no CA
])
def test_a_refused_fleet_says_why_and_never_shows_the_secret(
    guarded: tuple[Process, str], creds: Credentials, says: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prom, ca = guarded
    if "401" in says:
        creds = Credentials(token=creds.token, user=creds.user, password=creds.password,
                            ca_file=ca)
    with caplog.at_level(logging.DEBUG), fleet(prom, creds) as source:
        snap = source.snapshot()
        source.refresh()
        assert snap["fleet"]["prometheus"] == "unreachable"
        assert says in snap["fleet"]["error"]
        assert snap["system_health"] == "unknown"
        exposition = source.exposition()[0].decode()
    shown = json.dumps(snap) + exposition + caplog.text + repr(source.fleet)
    for secret in (PASSWORD, WRONG):
        assert secret not in shown
    assert "Prometheus unreachable" in caplog.text


def test_the_command_takes_basic_auth_from_the_environment(
    guarded: tuple[Process, str], spawn: Any,
) -> None:
    prom, ca = guarded
    process = spawn(
        "fleet", "--prometheus", prom.base, "--prometheus-ca-file", ca, "--port", "0",
        "--interval", "0.2", "--log-level", "debug",
        env={"HYPERDASH_FLEET_PROMETHEUS_USER": USER,
             "HYPERDASH_FLEET_PROMETHEUS_PASSWORD": PASSWORD})
    snap = wait_for("the fleet command to read the guarded Prometheus", lambda: (
        s if s["fleet"]["instances_up"] == 1 else None) if (s := process.get("api/metrics"))
        else None)
    assert snap["jobs_active"] == 4
    page = "".join(json.dumps(process.get(p)) for p in ("api/metrics", "healthz"))
    process.stop()
    assert PASSWORD not in page + process.stderr()
