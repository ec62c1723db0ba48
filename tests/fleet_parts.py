"""Real parts for the fleet tests: Debian's ``prometheus`` and ``prometheus-alertmanager``
started on 127.0.0.1 (free ports, temp directories), waited for with deadlines, stopped.

Alertmanager is started by ``tests/integration/alertmanager.py``, which the integration
tests share.
"""

from __future__ import annotations

from support import free_port
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "grafana" / "prometheus" / "alerts.yml"
JOB = "hyperdash"


def wait_for(what: str, check: Any, timeout: float = 20.0, log: Path | None = None) -> Any:
    """Poll ``check`` until it returns something truthy (OSError/ValueError count as not
    yet); fail at the deadline with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "" if log is None else log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.05)


class Process:
    """A server binary on a loopback port, its output in a log file."""

    def __init__(self, argv: list[str], base: str, ready_path: str, log: Path,
                 cwd: Path, *, ca_file: str | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.base = base
        self.log = log
        self._ready_path = ready_path
        self._ca_file = ca_file
        self._auth = auth
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args[0]} exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text(errors='replace')[-3000:]}")
        import base64
        import ssl

        request = urllib.request.Request(self.base + self._ready_path)
        if self._auth is not None:
            raw = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {raw}")
        context = ssl.create_default_context(cafile=self._ca_file) if self._ca_file else None
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)

    def wait_ready(self) -> None:
        wait_for(f"{self.proc.args[0]} to be ready", self.ready, log=self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_prometheus(
    binary: str, tmp: Path, targets: list[str], *, port: int | None = None,
    rules: Path | None = None, alertmanager: str | None = None,
    web_config: dict[str, Any] | None = None, scrape_auth_file: Path | None = None,
    ca_file: str | None = None, auth: tuple[str, str] | None = None, wait: bool = True,
) -> Process:
    """Prometheus scraping ``targets`` every second under job="hyperdash"."""
    tmp.mkdir(parents=True, exist_ok=True)
    scrape: dict[str, Any] = {"job_name": JOB, "metrics_path": "/metrics",
                              "static_configs": [{"targets": targets}]}
    if scrape_auth_file is not None:
        scrape["authorization"] = {"type": "Bearer",
                                   "credentials_file": str(scrape_auth_file)}
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": [str(rules)] if rules else [],
        "scrape_configs": [scrape],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager.removeprefix("http://")]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = port or free_port()
    argv = [binary, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    scheme = "http"
    if web_config is not None:
        (tmp / "web.yml").write_text(yaml.safe_dump(web_config))
        argv.append(f"--web.config.file={tmp / 'web.yml'}")
        if "tls_server_config" in web_config:
            scheme = "https"
    proc = Process(argv, f"{scheme}://127.0.0.1:{port}", "/-/ready", tmp / "prometheus.log",
                   tmp, ca_file=ca_file, auth=auth)
    if wait:
        proc.wait_ready()
    return proc
