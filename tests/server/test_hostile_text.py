"""Over a real server: undecodable text never stops the stream, and a failed tick stays one."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families as parse_text
from websockets.sync.client import ClientConnection

from hyperdash_otel import JobInfo

SURROGATE = os.fsdecode(b"vm-\xff")
REPLACED = "vm-\ufffd"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
MANUAL = 3600.0  # ticks once at start, then only when a test calls tick()


def receive_until(client: ClientConnection, predicate: Callable[[dict[str, Any]], bool],
                  timeout: float = 10.0) -> dict[str, Any]:
    """The first message (replayed or live) for which ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no message matched within {timeout}s")
        message: dict[str, Any] = json.loads(client.recv(timeout=left))
        if predicate(message):
            return message


def test_surrogates_everywhere_keep_every_endpoint_and_the_stream_alive(
    serve: Callable[..., Any], wait: Any
) -> None:
    s = serve()
    client = s.ws()
    counter = s.dash.meter_provider.get_meter("user").create_counter("user.exports")
    counter.add(1, {"file": "x\udcff"})
    s.dash.add_job(JobInfo(id="job-1", name=SURROGATE, status="running", provider=SURROGATE))
    s.dash.add_alert("critical", f"disk {SURROGATE} full")

    live = receive_until(client, lambda m: bool(m["recent_jobs"] and m["alerts"]))
    assert live["recent_jobs"][0]["name"] == REPLACED
    assert live["provider_stats"] == {REPLACED: 1}
    assert live["alerts"][0]["message"] == f"disk {REPLACED} full"
    assert [s["labels"]["file"] for s in live["custom"]["user_exports_total"]] == ["x\ufffd"]

    for accept in ("text/plain", OPENMETRICS):
        resp = s.request("/metrics", headers={"Accept": accept})
        assert resp.status == 200
        assert f'provider="{REPLACED}"' in resp.body.decode("utf-8")
    jobs = s.request("/api/jobs")
    assert jobs.status == 200 and jobs.json()[0]["provider"] == REPLACED
    assert s.request("/api/jobs/job-1").json()["vm_name"] == ""
    assert s.request("/api/metrics").json()["provider_stats"] == {REPLACED: 1}
    ticks = s.ctx.ticker.ticks
    wait(lambda: s.ctx.ticker.ticks >= ticks + 2, what="two more ticks")
    assert s.ctx.ticker.errors == 0


class FailsWhenArmed:
    """A collector on the dashboard's registry that raises on the next collect, once."""

    def __init__(self) -> None:
        self.armed = False

    def collect(self) -> Iterable[Metric]:
        if self.armed:
            self.armed = False
            raise RuntimeError("a user's collector broke")
        return ()


def test_a_tick_after_a_failed_one_runs(serve: Callable[..., Any]) -> None:
    s = serve(update_interval=MANUAL)
    broken = FailsWhenArmed()
    s.dash.registry.register(broken)  # type: ignore[arg-type]
    client = s.ws()
    receive_until(client, lambda m: True)  # the replayed first tick

    broken.armed = True
    assert s.on_loop(s.ctx.ticker.tick()) is None  # failed, logged, counted, not raised
    assert s.ctx.ticker.errors == 1
    s.dash.update_job_metrics(active=4, completed=0, failed=0, pending=0, queue_len=0)
    frame = s.tick()
    assert json.loads(frame.payload)["jobs_active"] == 4
    assert receive_until(client, lambda m: m["jobs_active"] == 4)
    exposition = parse_text(s.request("/metrics").body.decode())
    assert [sample.value for family in exposition for sample in family.samples
            if sample.name == "hyperdash_tick_errors_total"] == [1.0]
