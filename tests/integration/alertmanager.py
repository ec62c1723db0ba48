"""Real Alertmanager and a Prometheus that sends it alerts, for the fleet's integration tests.

Use with the ``alertmanager_bin`` and ``prometheus_bin`` fixtures (tests/integration/conftest.py:
a missing binary skips locally, fails on CI)::

    with run_alertmanager(alertmanager_bin, tmp) as am, \\
         run_prometheus(prometheus_bin, tmp, targets=[instance],
                        rules=immediate_rules(tmp), alertmanager=am) as prom:
        am.wait_for("the alert", lambda: am.alerts())

Both listen on 127.0.0.1 only (free ports), keep their data in ``tmp`` and log there; each
context manager waits for ``/-/ready`` (failing with the log if the process exits or the
deadline passes) and stops its process (terminate, then kill) on the way out. Alertmanager
runs without clustering (``--cluster.listen-address=`` empty: no gossip port, no peers) with
one receiver that sends nothing: the tests read alerts back through its v2 API, as the fleet
does.

The Prometheus side reuses test_prometheus.py's client (:class:`Prometheus`) and its
config writer (the shipped prometheus.yml with a 1 s scrape), adding the rules file given and
an ``alerting`` section pointing at the Alertmanager.
"""

from __future__ import annotations

from support import free_port
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_prometheus import GRAFANA, Prometheus, ready, write_config

from hyperdash_otel.fleet.alerts import ALERTMANAGER_ALERTS_PATH

ALERTS_YML = GRAFANA / "prometheus" / "alerts.yml"
DEADLINE = 20.0  # seconds for any one wait: start-up, an alert to arrive or to resolve
STOP_TIMEOUT = 10.0

# One receiver without integrations: Alertmanager keeps, groups and serves the alerts, and
# notifies nobody. Short group timings so nothing waits on notification batching.
ALERTMANAGER_CONFIG: dict[str, Any] = {
    "route": {"receiver": "fleet", "group_wait": "1s", "group_interval": "1s",
              "repeat_interval": "1h"},
    "receivers": [{"name": "fleet"}],
}


@dataclass
class Alertmanager:
    """A running Alertmanager: its base URL and log, and reads of its v2 API."""

    base: str
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=5) as response:
            return json.load(response)

    def send(self, method: str, path: str, body: Any = None) -> Any:
        """A POST/DELETE to the v2 API (a silence, say); the decoded answer or None."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def alerts(self, path: str = ALERTMANAGER_ALERTS_PATH) -> list[dict[str, Any]]:
        """The firing, unsilenced, uninhibited alerts: what the fleet asks for."""
        body = self.get(path)
        assert isinstance(body, list), body
        return body

    def wait_for(self, what: str, check: Callable[[], Any], *,
                 also: tuple[Path, ...] = (), timeout: float = DEADLINE) -> Any:
        """Poll ``check`` until it returns something truthy; at the deadline fail with this
        log and the ``also`` logs (Prometheus's, say)."""
        return wait_for(what, check, logs=(self.log, *also), timeout=timeout)


def wait_for(what: str, check: Callable[[], Any], *, logs: tuple[Path, ...],
             timeout: float = DEADLINE) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy, and return that. A
    connection refused or an HTTP error counts as "not yet". Past ``timeout`` seconds the
    test fails naming ``what``, with the tail of each log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:  # not listening yet, or 503 while starting (HTTPError is an OSError)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}"
                              for log in logs if log.exists())
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(0.1)


@contextmanager
def _running(name: str, command: list[str], log_path: Path, cwd: Path,
             base: str) -> Iterator[None]:
    """Start ``command`` logging to ``log_path``; wait until ``base``/-/ready answers 200;
    on the way out terminate it (kill after STOP_TIMEOUT) and reap it."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            def alive_and_ready() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n"
                                f"{log_path.read_text(errors='replace')[-4000:]}")
                return ready(base)

            wait_for(f"{name} to be ready", alive_and_ready, logs=(log_path,))
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def run_alertmanager(binary: str, tmp: Path,
                     config: dict[str, Any] | None = None) -> Iterator[Alertmanager]:
    """Debian's ``prometheus-alertmanager`` on 127.0.0.1 (a free port), clustering off, its
    data and log in ``tmp``, with :data:`ALERTMANAGER_CONFIG` unless ``config`` is given."""
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config or ALERTMANAGER_CONFIG))
    port = free_port()
    am = Alertmanager(f"http://127.0.0.1:{port}", tmp / "alertmanager.log")
    command = [binary, f"--config.file={config_path}", f"--storage.path={tmp / 'am-data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
               "--log.level=warn"]
    with _running("alertmanager", command, am.log, tmp, am.base):
        yield am


def immediate_rules(tmp: Path, source: Path = ALERTS_YML) -> Path:
    """A copy of the bundled rules in ``tmp`` with every ``for:`` set to 0s, and nothing else
    changed: a test sees a rule fire on its first evaluation instead of minutes later."""
    rules = yaml.safe_load(source.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path = tmp / "alerts-for-0s.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def run_prometheus(binary: str, tmp: Path, *, targets: list[str], rules: Path = ALERTS_YML,
                   alertmanager: Alertmanager | None = None) -> Iterator[Prometheus]:
    """Debian's ``prometheus`` on 127.0.0.1 (a free port): the shipped prometheus.yml with a
    1 s scrape and evaluation of ``targets`` (job ``hyperdash``), the ``rules`` file, and,
    given an Alertmanager, an ``alerting`` section sending it the firing alerts."""
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = write_config(tmp, targets)
    config = yaml.safe_load(config_path.read_text())
    config["rule_files"] = [str(rules)]
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager.base.removeprefix("http://")]}]}]}
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    prom = Prometheus(f"http://127.0.0.1:{port}", tmp / "prometheus.log")
    command = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tmp / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with _running("prometheus", command, prom.log, tmp, prom.base):
        yield prom
