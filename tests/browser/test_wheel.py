"""The built wheel carries the page and Chart.js: a server run from the installed wheel, not
the checkout, serves a page whose charts work."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

BUILD_TIMEOUT = 300


def build_wheel(repo: Path, outdir: Path, unavailable) -> Path:
    """`python -m build --wheel` of the checkout (what `make wheel` runs)."""
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(repo)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )
    wheels = sorted(outdir.glob("hyperdash_otel-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = "could not build the wheel (`python -m build` needs hatchling from PyPI):\n"
        reason += (result.stderr or result.stdout)[-2000:]
        unavailable(reason)
    return wheels[-1]


def test_server_from_the_wheel_serves_working_charts(
    repo, unavailable, tmp_path, new_page, make_ui, browser_log
):
    wheel = build_wheel(repo, tmp_path / "dist", unavailable)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # a pure wheel installs by unpacking
        archive.extractall(site)
        names = set(archive.namelist())
    assert "hyperdash_otel/web/static/vendor/chart.umd.js" in names
    assert "hyperdash_otel/web/templates/index.html" in names

    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import hyperdash_otel; print(hyperdash_otel.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the checkout

    server = subprocess.Popen(
        [sys.executable, "-m", "hyperdash_otel", "serve", "--port", "0", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url

        class Served:  # what DashboardPage needs of a dashboard
            port = int(url.rstrip("/").rsplit(":", 1)[1])

        ui = make_ui(new_page(), Served())
        ui.open()
        assert ui.page.evaluate(
            "() => ['chart-job-status', 'chart-jobs-over-time', 'chart-providers',"
            " 'chart-resources'].every((id) => Chart.getChart(id) !== undefined)"
        )
        assert ui.page.locator(".chart-unavailable").count() == 0
        assert browser_log.unexpected_console_errors() == []
    finally:
        server.terminate()
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
