"""The fleet bench's parts: simulated instances that a real Prometheus accepts, and the
harness that measures them (bench/_fleet_targets.py, bench/fleet.py)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import fleet
from bench._fleet_targets import Endpoint, Template, capture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def template() -> Template:
    return capture(seed=3)


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize("index", [0, 3, 9])
def test_each_endpoint_serves_a_consistent_exposition(template, index):
    endpoint = Endpoint(template, index)
    before = families(endpoint.exposition.render().decode())
    endpoint.exposition.born -= 120.0  # two minutes later
    after = families(endpoint.exposition.render().decode())

    health = {s.labels["status"]: s.value for s in after["hyperdash_system_health"].samples}
    expected = "unhealthy" if index == 9 else "degraded" if index == 3 else "healthy"
    assert health == {h: float(h == expected) for h in ("healthy", "degraded", "unhealthy")}

    tick = after["hyperdash_tick_duration_seconds"].samples
    buckets = [s.value for s in tick if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] > 0  # cumulative, and it ticked
    (count,) = [s.value for s in tick if s.name.endswith("_count")]
    assert buckets[-1] == count

    for name, family in after.items():
        if family.type != "counter":
            continue
        old = {tuple(sorted(s.labels.items())): s.value for s in before[name].samples}
        for sample in family.samples:
            assert sample.value >= old[tuple(sorted(sample.labels.items()))], name
    active = after["hyperdash_jobs_active"].samples[0].value
    assert active == math.floor(active)  # a count of jobs stays whole


def test_endpoint_json_is_marked_per_instance(template):
    jobs = json.loads(Endpoint(template, 12).jobs)
    assert jobs and all(job["name"].endswith("@member-0012") for job in jobs)
    snap = json.loads(Endpoint(template, 12).snapshot)
    assert all(a["message"].endswith("(member-0012)") for a in snap["alerts"])


@pytest.fixture
def targets() -> Iterator[fleet.Targets]:
    started = fleet.start_targets(4)
    try:
        yield started
    finally:
        fleet.stop(started.proc)


def test_targets_serve_http_and_stop_when_stdin_closes(targets):
    port = targets.ports[2]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nowhere", timeout=5)
    assert err.value.code == 404
    err.value.close()
    assert targets.proc.stdin is not None
    targets.proc.stdin.close()  # the parent went away
    assert targets.proc.wait(timeout=10) == 0


def test_harness_measures_a_small_fleet_behind_real_prometheus(prometheus_bin):
    result = fleet.measure(3, prometheus_bin, scrape=1.0, window=2.0)
    assert result.up == 3
    assert result.fetch_failures == 0
    assert len(result.queries) >= 2 and len(result.fetches) >= 2
    assert result.scrape_max > 0
    # The fleet's own parts found every instance, and the snapshot carries them and their
    # jobs (so the timings measure real work).
    assert result.series == 3
    assert result.snapshot_instances == 3 and result.snapshot_jobs > 0
    assert len(result.ticks) >= 2
