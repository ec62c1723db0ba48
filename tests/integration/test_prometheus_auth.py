"""A real Prometheus scrapes /metrics with the metrics token (the README's scrape config),
and without it gets nothing."""

from __future__ import annotations

from support import free_port
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_prometheus import GRAFANA, Prometheus, ready

from hyperdash_otel import Config, Dashboard

pytestmark = pytest.mark.integration

AUTH_TOKEN = "people-token-123456"
METRICS_TOKEN = "scraper-token-654321"


@pytest.fixture
def prometheus_with(prometheus_bin: str, tmp_path: Path) -> Iterator[Prometheus]:
    dash = Dashboard(Config(port=0, update_interval=0.2, collect_system_metrics=False,
                            auth_token=AUTH_TOKEN, metrics_token=METRICS_TOKEN))
    dash.start_in_thread()
    token_file = tmp_path / "hyperdash.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    config = yaml.safe_load((GRAFANA / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    config["rule_files"] = []
    (job,) = config["scrape_configs"]
    target = [{"targets": [f"127.0.0.1:{dash.port}"]}]
    config["scrape_configs"] = [
        {**job, "job_name": "with-token", "static_configs": target,
         "authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
        {**job, "job_name": "without", "static_configs": target},
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
        prom = Prometheus(f"http://127.0.0.1:{port}", log_path)
        try:
            prom.wait_for("prometheus to be ready", lambda: ready(prom.base))
            yield prom
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            dash.close()


def test_the_metrics_token_lets_prometheus_scrape(prometheus_with: Prometheus) -> None:
    prom = prometheus_with
    prom.wait_for("a scrape with the token", lambda: prom.scalar('up{job="with-token"} == 1'))
    prom.wait_for("a scrape without it", lambda: prom.query('up{job="without"}'))
    assert prom.scalar('up{job="without"}') == 0.0
    targets = prom.get("/api/v1/targets")["activeTargets"]
    refused = [t for t in targets if t["labels"]["job"] == "without"]
    assert "401" in refused[0]["lastError"]
    assert prom.scalar('count(hyperdash_jobs_active{job="with-token"})') == 1.0
