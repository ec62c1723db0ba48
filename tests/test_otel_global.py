"""The dashboard's MeterProvider as the process's global one.

OpenTelemetry sets the global provider once per process, so each case runs in its own
interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from otel_helpers import get_json, get_text, wait_until

SERVE_GLOBAL = """
    import json, sys
    from opentelemetry import metrics

    # An instrument made before the dashboard exists (at import time, as libraries do).
    early = metrics.get_meter("vm.exporter.early").create_counter("exports.started")

    from hyperdash_otel import Config, Dashboard

    dash = Dashboard(Config(port=0, update_interval=0.1, collect_system_metrics=False),
                     set_global=True)
    dash.start_in_thread()
    early.add(3, {"provider": "aws"})
    meter = metrics.get_meter("vm.exporter")
    meter.create_up_down_counter("exports.inflight", unit="{export}").add(2)
    meter.create_histogram("export.duration", unit="s").record(4.0)
    print(json.dumps({"url": dash.url,
                      "same": metrics.get_meter_provider() is dash.meter_provider}), flush=True)
    sys.stdin.read()
    dash.close()
"""


def _run(script: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    result["stderr"] = done.stderr
    return result


def test_instruments_from_the_global_api_reach_metrics_and_custom():
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SERVE_GLOBAL)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline() or "{}")
        assert started.get("same") is True, proc.stderr.read() if proc.stderr else ""
        url = started["url"]

        def custom() -> dict[str, Any] | None:
            snap = get_json(url + "api/metrics")
            return snap["custom"] if "export_duration_seconds_count" in snap["custom"] else None

        found = wait_until(custom, what="the global instruments in custom")
        assert found["exports_started_total"] == [{"labels": {"provider": "aws"}, "value": 3.0}]
        assert found["exports_inflight"] == 2.0
        assert found["export_duration_seconds_sum"] == 4.0
        text = get_text(url + "metrics")
        assert ('exports_started_total{otel_scope_name="vm.exporter.early",'
                'otel_scope_schema_url="",otel_scope_version="",provider="aws"} 3.0') in text
        assert 'exports_inflight{otel_scope_name="vm.exporter"' in text
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(15)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == 0


def test_a_global_sdk_provider_already_set_is_an_error_naming_the_way_out():
    result = _run("""
        import json
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from hyperdash_otel import Config, Dashboard

        theirs = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[theirs]))
        config = Config(port=0, collect_system_metrics=False)
        try:
            Dashboard(config, set_global=True)
            error = None
        except RuntimeError as exc:
            error = str(exc)
        # The way out the error names: the dashboard reads the provider already set.
        dash = Dashboard(config, meter_provider=metrics.get_meter_provider())
        dash.update_job_metrics(active=1, completed=4, failed=0, pending=0, queue_len=0)
        logins = metrics.get_meter("app").create_counter("app.logins")
        logins.add(7)
        snap = dash.snapshot()
        text = dash.metrics_text()
        names = {m.name for rm in theirs.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics}
        dash.close()
        # Closing the dashboard takes its reader off; the provider goes on for its owner.
        logins.add(1)
        after = [dp.value for rm in theirs.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics if m.name == "app.logins"
                 for dp in m.data.data_points]
        print(json.dumps({"error": error, "custom": snap["custom"],
                          "completed": snap["jobs_completed"],
                          "in_text": "app_logins_total{" in text,
                          "theirs_sees_ours": "hyperdash.jobs.completed" in names,
                          "provider_alive": after}))
    """)
    assert result["error"] is not None
    assert "already has a global MeterProvider" in result["error"]
    assert "meter_provider=opentelemetry.metrics.get_meter_provider()" in result["error"]
    assert result["custom"] == {"app_logins_total": 7.0}
    assert result["completed"] == 4 and result["in_text"] and result["theirs_sees_ours"]
    assert result["provider_alive"] == [8]


def test_a_global_provider_that_is_not_the_sdks_is_an_error_too():
    result = _run("""
        import json
        from opentelemetry import metrics
        from opentelemetry.metrics import NoOpMeterProvider
        from hyperdash_otel import Config, Dashboard

        metrics.set_meter_provider(NoOpMeterProvider())
        try:
            Dashboard(Config(port=0, collect_system_metrics=False), set_global=True)
            error = None
        except RuntimeError as exc:
            error = str(exc)
        print(json.dumps({"error": error}))
    """)
    assert "NoOpMeterProvider" in result["error"]
    assert "not an SDK MeterProvider" in result["error"]


def test_set_global_twice_with_the_same_dashboard_provider_is_fine():
    result = _run("""
        import json
        from opentelemetry import metrics
        from hyperdash_otel import Config, Dashboard
        from hyperdash_otel.otel import install_global

        dash = Dashboard(Config(port=0, collect_system_metrics=False), set_global=True)
        install_global(dash.meter_provider)
        try:
            Dashboard(Config(port=0, collect_system_metrics=False), set_global=True)
            second = None
        except RuntimeError as exc:
            second = str(exc)
        print(json.dumps({"second": second,
                          "same": metrics.get_meter_provider() is dash.meter_provider}))
        dash.close()
    """)
    assert result["same"] is True
    assert "already has a global MeterProvider" in result["second"]
