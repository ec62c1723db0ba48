"""The sdist and the wheel install every way pip installs: from the sdist with no npm
anywhere, from a checkout that has never run ``npm ci``, and the two wheels are the same."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART_JS = REPO / "web/node_modules/chart.js"
ON_CI = os.environ.get("CI") == "true"

pytestmark = pytest.mark.packaging


def run(*args: str | Path, timeout: float = 300, **kwargs: object
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]


def build(*args: str | Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    # --no-isolation: the test venv has hatchling already; isolation would download it.
    return run(sys.executable, "-m", "build", "--no-isolation", *args, env=env)


def no_npm_env(*bin_dirs: Path) -> dict[str, str]:
    """This environment with PATH reduced to ``bin_dirs``: no npm, no node."""
    path = os.pathsep.join(str(d) for d in bin_dirs)
    assert shutil.which("npm", path=path) is None
    return {**os.environ, "PATH": path}


def checkout_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked or new, never ignored): no node_modules."""
    listed = run("git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                 "--exclude-standard")
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    assert not (dest / "web/node_modules").exists()
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, a wheel built from that sdist, and a wheel built from the checkout."""
    if not (CHART_JS / "dist/chart.umd.js").is_file():
        pytest.fail("web/node_modules is missing: run `make setup` (npm ci) first")
    from_sdist = tmp_path_factory.mktemp("from-sdist")
    from_checkout = tmp_path_factory.mktemp("from-checkout")
    # With neither --sdist nor --wheel, `build` makes the sdist and then the wheel from it,
    # in a directory that holds only what the sdist holds, with no npm on PATH.
    done = build("--outdir", from_sdist, REPO, env=no_npm_env(Path(sys.executable).parent))
    assert done.returncode == 0, done.stderr + done.stdout
    done = build("--wheel", "--outdir", from_checkout, REPO)
    assert done.returncode == 0, done.stderr + done.stdout
    (sdist,) = from_sdist.glob("hyperdash_otel-*.tar.gz")
    (wheel_from_sdist,) = from_sdist.glob("hyperdash_otel-*.whl")
    (wheel_from_checkout,) = from_checkout.glob("hyperdash_otel-*.whl")
    return {"sdist": sdist, "wheel_from_sdist": wheel_from_sdist,
            "wheel_from_checkout": wheel_from_checkout}


def wheel_files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as wheel:
        return {name: wheel.read(name) for name in wheel.namelist()}


def sdist_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as sdist:
        files = {}
        for member in sdist.getmembers():
            if member.isfile():
                extracted = sdist.extractfile(member)
                assert extracted is not None
                files[member.name.split("/", 1)[1]] = extracted.read()
        return files


def test_the_wheel_built_from_the_sdist_equals_the_wheel_built_from_the_checkout(dists):
    from_sdist = wheel_files(dists["wheel_from_sdist"])
    from_checkout = wheel_files(dists["wheel_from_checkout"])
    assert sorted(from_sdist) == sorted(from_checkout)
    chart = "hyperdash_otel/web/static/vendor/chart.umd.js"
    chart_bytes = (CHART_JS / "dist/chart.umd.js").read_bytes()
    assert from_sdist[chart] == from_checkout[chart] == chart_bytes
    # Every file, RECORD (the hashes of all others) included.
    assert from_sdist == from_checkout


def test_the_sdist_carries_the_pinned_chart_js_build_and_the_licences(dists):
    files = sdist_files(dists["sdist"])
    for name in ("dist/chart.umd.js", "LICENSE.md", "package.json"):
        assert files[f"web/node_modules/chart.js/{name}"] == (CHART_JS / name).read_bytes()
    pinned = json.loads(files["web/package-lock.json"])["packages"]["node_modules/chart.js"]
    carried = json.loads(files["web/node_modules/chart.js/package.json"])
    assert carried["version"] == pinned["version"]
    # Only Chart.js's own files: not its dependencies (the UMD build bundles them), not
    # its other builds.
    assert sorted(n for n in files if "node_modules" in n) == [
        "web/node_modules/chart.js/LICENSE.md", "web/node_modules/chart.js/dist/chart.umd.js",
        "web/node_modules/chart.js/package.json"]
    assert files["LICENSE"] == (REPO / "LICENSE").read_bytes()
    assert "hatch_build.py" in files


def test_the_licence_holds_the_lgpl_and_the_gpl_it_builds_on():
    text = (REPO / "LICENSE").read_text()
    lgpl = text.index("GNU LESSER GENERAL PUBLIC LICENSE\n                       Version 3")
    gpl = text.index("GNU GENERAL PUBLIC LICENSE\n                       Version 3")
    assert lgpl < gpl, "the LGPL's additional permissions first, then the GPL they extend"
    assert "TERMS AND CONDITIONS" in text[gpl:] and "END OF TERMS AND CONDITIONS" in text[gpl:]
    assert "or (at your option) any later version" in text[:lgpl]


def test_the_wheel_carries_the_licence_and_chart_js_keeps_its_own_beside_it(dists):
    files = wheel_files(dists["wheel_from_sdist"])
    licence = files["hyperdash_otel-0.1.0.dist-info/licenses/LICENSE"]
    assert licence == (REPO / "LICENSE").read_bytes()
    assert files["hyperdash_otel/web/static/vendor/chart.js.LICENSE.md"] == (
        CHART_JS / "LICENSE.md").read_bytes()
    metadata = files["hyperdash_otel-0.1.0.dist-info/METADATA"].decode()
    assert "License-Expression: LGPL-3.0-or-later" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()


def test_the_sdist_installs_in_a_fresh_venv_without_npm_and_serves_its_chart_js(
        dists, tmp_path):
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    env = no_npm_env(venv / "bin")
    # A real install: build isolation, dependencies from the index, hatch_build.py run
    # from the unpacked sdist.
    installed = run(venv / "bin/python", "-m", "pip", "install", "--quiet", dists["sdist"],
                    env=env, timeout=600, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr + installed.stdout
    serve = subprocess.Popen([str(venv / "bin/hyperdash"), "serve", "--port", "0"],
                             cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert serve.stdout is not None
        url = serve.stdout.readline().strip()  # printed once it listens, or "" if it exits
        assert url.startswith("http://127.0.0.1:"), serve.stderr.read() if serve.stderr else ""
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        (src,) = re.findall(r'<script src="([^"]*chart[^"]*)"', page)
        with urllib.request.urlopen(url + src, timeout=10) as response:
            assert "javascript" in response.headers["Content-Type"]
            served = response.read()
        assert served == (CHART_JS / "dist/chart.umd.js").read_bytes()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(15) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
        for stream in (serve.stdout, serve.stderr):
            if stream is not None:
                stream.close()


def test_a_checkout_without_node_modules_or_npm_stops_with_one_line(tmp_path):
    src = checkout_copy(tmp_path / "src")
    env = no_npm_env(Path(sys.executable).parent)
    done = run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
               "--target", tmp_path / "site", src, env=env)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    lines = [line.strip() for line in output.splitlines() if "hyperdash-otel build:" in line]
    assert lines == ["hyperdash-otel build: web/node_modules/chart.js is missing and npm is not "
                     "on PATH: install Node.js's npm, or run `cd web && npm ci` elsewhere, "
                     "then build again"], output
    assert "Traceback" not in output
    assert not (tmp_path / "site").exists()


def test_a_checkout_without_node_modules_runs_npm_ci(tmp_path):
    if shutil.which("npm") is None:
        if ON_CI:
            pytest.fail("npm is not on PATH")
        pytest.skip("npm is not on PATH")
    src = checkout_copy(tmp_path / "src")
    done = build("--wheel", "--outdir", tmp_path / "dist", src)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "running `npm ci` in web/" in done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    files = wheel_files(wheel)
    assert files["hyperdash_otel/web/static/vendor/chart.umd.js"] == (
        CHART_JS / "dist/chart.umd.js").read_bytes()


def test_a_stale_chart_js_is_refused(tmp_path):
    src = checkout_copy(tmp_path / "src")
    shutil.copytree(CHART_JS, src / "web/node_modules/chart.js")
    package = src / "web/node_modules/chart.js/package.json"
    package.write_text(json.dumps({**json.loads(package.read_text()), "version": "4.0.0"}))
    done = build("--wheel", "--outdir", tmp_path / "dist", src)
    assert done.returncode != 0
    assert "web/node_modules/chart.js is version 4.0.0, web/package-lock.json pins" in (
        done.stdout + done.stderr)
    assert not list((tmp_path / "dist").glob("*.whl"))

