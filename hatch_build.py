"""Build hook: put the pinned Chart.js build into the sdist and the wheel.

Chart.js is not in git. ``npm ci`` in ``web/`` puts the version pinned by
``web/package-lock.json`` into ``web/node_modules``; the sdist carries the three files the
wheel needs from there (under the same paths), so a wheel built from the sdist, with no
npm at hand, equals one built from the checkout. A checkout without ``web/node_modules``
runs ``npm ci`` when npm is on PATH, or stops with one line saying what to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

CHART_JS = "web/node_modules/chart.js"
# What the sdist carries from node_modules: the build, its licence, and its package.json
# (for the version check below).
SDIST_FILES = ("dist/chart.umd.js", "LICENSE.md", "package.json")
# Where the wheel puts them: beside the page's other static files, served at /static/vendor/.
WHEEL_FILES = {
    "dist/chart.umd.js": "hyperdash_otel/web/static/vendor/chart.umd.js",
    "LICENSE.md": "hyperdash_otel/web/static/vendor/chart.js.LICENSE.md",
}


def _stop(message: str) -> NoReturn:
    # SystemExit with a string: the build frontend (pip, build) shows this one line and no
    # traceback from inside hatchling.
    raise SystemExit(f"hyperdash-otel build: {message}")


def pinned_version(root: Path) -> str:
    """The Chart.js version ``web/package-lock.json`` pins."""
    lock = json.loads((root / "web/package-lock.json").read_text(encoding="utf-8"))
    return str(lock["packages"]["node_modules/chart.js"]["version"])


def ensure_chart_js(root: Path) -> Path:
    """``web/node_modules/chart.js`` holding the pinned version; runs ``npm ci`` if needed."""
    chart = root / CHART_JS
    want = pinned_version(root)
    if not all((chart / name).is_file() for name in SDIST_FILES):
        npm = shutil.which("npm")
        if npm is None:
            _stop(f"{CHART_JS} is missing and npm is not on PATH: "
                  "install Node.js's npm, or run `cd web && npm ci` elsewhere, then build again")
        print(f"hyperdash-otel build: {CHART_JS} is missing, running `npm ci` in web/",
              file=sys.stderr, flush=True)
        # stdout to stderr: a PEP 517 frontend may parse the hook's stdout.
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=root / "web",
                              stdout=sys.stderr, check=False)
        if done.returncode != 0 or not (chart / SDIST_FILES[0]).is_file():
            _stop(f"`npm ci` in web/ failed (exit code {done.returncode}): "
                  "run `cd web && npm ci` to see why, then build again")
    have = json.loads((chart / "package.json").read_text(encoding="utf-8")).get("version")
    if have != want:
        _stop(f"{CHART_JS} is version {have}, web/package-lock.json pins {want}: "
              "run `cd web && npm ci`, then build again")
    return chart


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds Chart.js to the sdist (as in the checkout) and to the wheel (in the package)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        chart = ensure_chart_js(root)
        if self.target_name == "sdist":
            for name in SDIST_FILES:
                build_data["force_include"][os.fspath(chart / name)] = f"{CHART_JS}/{name}"
        elif self.target_name == "wheel" and version == "standard":
            # An editable install serves web/ from the checkout (see server/app.py Assets),
            # so only a standard wheel needs its own copy.
            for name, target in WHEEL_FILES.items():
                build_data["force_include"][os.fspath(chart / name)] = target
