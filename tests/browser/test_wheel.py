"""The built wheel carries the page and Chart.js: a server run from the installed wheel,
not the checkout, serves a page whose four charts draw."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_HOST = "127.0.0.1"
WAIT_MS = 15_000

pytestmark = pytest.mark.browser

SERVER = textwrap.dedent("""
    import sys
    import hyperdash_otel
    from hyperdash_otel import Config, Dashboard, JobInfo
    dash = Dashboard(Config(port=0, update_interval=0.2))
    dash.update_job_metrics(3, 7, 1, 2, 2)
    dash.add_job(JobInfo(id="w1", name="export-from-wheel", status="running", progress=30,
                         provider="gcp", vm_name="vm-1"))
    dash.start_in_thread()
    print(hyperdash_otel.__file__, dash.port, flush=True)
    sys.stdin.read()   # serve until the test closes our stdin
    dash.stop()
""")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "web/node_modules/chart.js/dist/chart.umd.js").is_file():
        pytest.fail("web/node_modules is missing: run `make setup` (npm ci) first")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
         str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = out.glob("hyperdash_otel-*.whl")
    site = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    return site


@pytest.fixture
def wheel_server(installed_wheel: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": str(installed_wheel)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], cwd=tmp_path, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints once it listens, or exits
        assert line, f"the server from the wheel exited with {proc.wait(10)}"
        module_file, port = line.split()
        yield module_file, int(port)
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def test_server_from_the_installed_wheel_serves_working_charts(installed_wheel, wheel_server,
                                                               new_page, browser_log):
    module_file, port = wheel_server
    assert Path(module_file).is_relative_to(installed_wheel), "ran the checkout, not the wheel"
    page = new_page()
    page.goto(f"http://{LOCAL_HOST}:{port}/")
    page.wait_for_function(
        """() => typeof Chart !== "undefined"
             && Object.values(Chart.instances).length === 4
             && Object.values(Chart.instances).every(
                  (c) => c.data.datasets.some((d) => d.data.length > 0))""",
        timeout=WAIT_MS,
    )
    page.get_by_text("export-from-wheel").first.wait_for(timeout=WAIT_MS)
    vendor = [u for u in browser_log.requests if u.endswith("/static/vendor/chart.umd.js")]
    assert vendor, "Chart.js was not loaded from the wheel's /static/vendor/"
    assert browser_log.console_errors == []
