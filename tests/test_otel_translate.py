"""The translation to Prometheus families with the names cached
(:class:`~hyperdash_otel._otel_internal.TranslatingCollector`) gives what the exporter's own
gives, and sees every change on the next collection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from hyperdash_otel import Config, Dashboard
from hyperdash_otel import _otel_internal as internal


@pytest.fixture
def dash() -> Iterator[Dashboard]:
    d = Dashboard(Config(collect_system_metrics=False, max_custom_series=10_000))
    yield d
    d.close()


def translated(dash: Dashboard) -> Any:
    """The dashboard's collector, translating with names cached (also on the fallback,
    where the dashboard leaves it as the exporter made it)."""
    collector: Any = dash.telemetry.reader._collector
    if type(collector) is not internal.TranslatingCollector:
        collector._names, collector._units, collector._keys = {}, {}, {}
        collector.__class__ = internal.TranslatingCollector
    return collector


def both(dash: Dashboard) -> tuple[bytes, bytes]:
    """(this registry's exposition, the same with the exporter's own translation), in
    alternating collections of the one aggregation."""
    collector = translated(dash)
    ours = generate_openmetrics(dash.registry)
    collector.__class__ = internal._Collector
    try:
        stock = generate_openmetrics(dash.registry)
    finally:
        collector.__class__ = internal.TranslatingCollector
    return ours, stock


def record_everything(dash: Dashboard) -> None:
    meter = dash.meter_provider.get_meter("tests.translate", "1.2", attributes={"team": "x"})
    meter.create_counter("req.count-1", unit="{request}").add(3, {"http.route": "/a b",
                                                                  "1st": "x"})
    gauge = meter.create_gauge("queue.depth", unit="By/s", description="Depth é")
    gauge.set(4, {"tenant": "t1"})
    gauge.set(5, {"tenant": "t2", "zone": "eu"})  # another label set: "" backfilled
    gauge.set(6, {"tenant": 7, "ok": True, "tags": ("a", "b")})  # values not str
    gauge.set(8, {"a.b": "dot", "a_b": "underscore"})  # two keys, one label
    meter.create_up_down_counter("conns", unit="1").add(-2)
    hist = meter.create_histogram("lat", unit="ms", explicit_bucket_boundaries_advisory=[1, 5])
    hist.record(3, {"route": "/x"})
    hist.record(9, {"route": "/y"})


def test_the_dashboards_reader_translates_with_names_cached(dash: Dashboard) -> None:
    """Unless the private hooks are off (``make test-fallback``)."""
    kind = type(dash.telemetry.reader._collector)
    assert (kind is internal.TranslatingCollector) is internal.TRANSLATES


def test_the_families_are_the_exporters_byte_for_byte(dash: Dashboard) -> None:
    record_everything(dash)
    ours, stock = both(dash)
    assert ours == stock
    # The later of two keys that become one label wins; a label another point lacks is "".
    assert b'queue_depth_bytes_per_second{a_b="underscore",ok="",otel_scope_name=' in ours
    assert b'ok="true",' in ours and b'tenant="7",zone=""} 6.0' in ours
    assert b'req_count_1_total{_st="x",http_route="/a b",' in ours


def test_a_change_is_seen_on_the_next_collection(dash: Dashboard) -> None:
    meter = dash.meter_provider.get_meter("tests.translate")
    gauge = meter.create_gauge("queue.depth")
    gauge.set(1, {"tenant": "t1"})
    translated(dash)
    generate_latest(dash.registry)  # names cached
    gauge.set(2, {"tenant": "t1"})
    gauge.set(3, {"tenant.id": "t2"})  # a new key, then a new instrument
    meter.create_counter("jobs.new").add(1)
    text = generate_latest(dash.registry).decode()
    assert 'queue_depth{otel_scope_name="tests.translate",otel_scope_schema_url="",' \
           'otel_scope_version="",tenant="t1",tenant_id=""} 2.0' in text
    assert 'tenant="",tenant_id="t2"} 3.0' in text
    assert 'jobs_new_total{otel_scope_name="tests.translate"' in text
    ours, stock = both(dash)
    assert ours == stock


def test_the_name_cache_is_bounded(dash: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internal, "NAME_CACHE_SIZE", 8)
    meter = dash.meter_provider.get_meter("tests.translate")
    gauge = meter.create_gauge("wide")
    for i in range(30):
        gauge.set(i, {f"key{i}": "v"})
    translated(dash)
    text = generate_latest(dash.registry).decode()
    collector: Any = dash.telemetry.reader._collector
    assert len(collector._keys) <= 8
    assert 'key29="v"' in text and 'key0="v"' in text
    ours, stock = both(dash)
    assert ours == stock


def test_another_collector_is_left_as_it_is() -> None:
    """Only the exporter's own collector class is changed (a subclass may translate its own
    way)."""

    class Mine(internal._Collector or object):  # type: ignore[misc]
        pass

    assert internal.translating(Mine()) is False
    assert internal.translating(object()) is False

    assert internal.TranslatingCollector.__mro__[1] is internal._Collector


def test_a_reader_of_its_own_translates_too() -> None:
    """The fleet's reader is a DashboardReader as well."""
    registry = CollectorRegistry()
    reader = internal.DashboardReader(registry=registry)
    kind = type(reader._collector)
    assert (kind is internal.TranslatingCollector) is internal.TRANSLATES
    reader.shutdown()


def test_only_families_whose_strings_are_all_ascii_are_marked(dash: Dashboard) -> None:
    meter = dash.meter_provider.get_meter("tests.translate")
    meter.create_gauge("plain").set(1, {"tenant": "t1"})
    meter.create_gauge("accented").set(1, {"tenant": "é"})
    meter.create_gauge("described", description="Tiefe ä").set(1)
    meter.create_counter("odd").add(1, {"n": 7})  # a value not str: its JSON is ASCII
    collector = translated(dash)
    marks = {f.name: internal.known_ascii(f) for f in collector.collect()}
    assert {k: marks[k] for k in ("plain", "accented", "described", "odd", "target")} == {
        "plain": True, "accented": False, "described": False, "odd": True, "target": False}


def test_a_surrogate_that_appears_later_is_cleaned_on_the_next_tick(dash: Dashboard) -> None:
    gauge = dash.meter_provider.get_meter("tests.translate").create_gauge("files")
    gauge.set(1, {"file": "a.txt"})
    translated(dash)
    assert dash.snapshot()["custom"]["files"][0]["labels"]["file"] == "a.txt"
    gauge.set(2, {"file": "b-\udcff.txt"})
    assert [s["labels"]["file"] for s in dash.snapshot()["custom"]["files"]] == [
        "a.txt", "b-\ufffd.txt"]
    assert 'file="b-\ufffd.txt"' in dash.metrics_text()
