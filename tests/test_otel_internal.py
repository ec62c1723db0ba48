"""OpenTelemetry's private names are used only on the releases they were written for.
(``make test-fallback`` runs the OpenTelemetry suites with them switched off.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from hyperdash_otel import _otel_internal as internal


def test_the_installed_releases_are_the_ones_written_for() -> None:
    """pyproject.toml's bounds and the checked ranges move together: CI runs the hooks."""
    assert internal.decide() is (os.environ.get(internal.ENV, "").strip() != "0")


@pytest.mark.parametrize(("sdk", "exporter"), [((1, 99), (0, 66)), ((1, 45), (0, 99)),
                                                ((1, 29), (0, 66)), ((1, 45), (0, 50))])
def test_another_release_falls_back_and_says_which(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    sdk: tuple[int, int], exporter: tuple[int, int],
) -> None:
    monkeypatch.delenv(internal.ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="hyperdash_otel"):
        assert internal.decide(sdk, exporter) is False
    (record,) = caplog.records
    bad = "opentelemetry-sdk" if sdk != (1, 45) else "opentelemetry-exporter-prometheus"
    assert record.getMessage().startswith(f"hyperdash: {bad} ")


def test_the_fallback_exports_the_same_series() -> None:
    """With the hooks off, a dashboard records and exposes exactly as with them on."""
    code = (
        "from hyperdash_otel import Config, Dashboard, _otel_internal as i\n"
        "d = Dashboard(Config(collect_system_metrics=False, use_global_registry=False))\n"
        "d.update_job_metrics(active=2, completed=5, failed=1, pending=3, queue_len=4)\n"
        "d.set_system_health('degraded')\n"
        "s = d.snapshot()\n"
        "print(i.ENABLED, i.SHARES_COLLECTION, i.sdk_gauge_class() is not None,"
        " s['jobs_completed'], s['queue_length'])\n"
        "d.close()\n"
    )
    runs = {
        value: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, internal.ENV: value}, timeout=60,
                              check=True).stdout.split()
        for value in ("0", "1")
    }
    assert runs["1"][:3] == ["True", "True", "True"]
    assert runs["0"][:3] == ["False", "False", "False"]
    assert runs["0"][3:] == runs["1"][3:] == ["5", "4"]
