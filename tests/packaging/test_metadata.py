"""What pyproject.toml declares is what CI runs: the Pythons, the dependency bounds."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
MAKEFILE = (REPO / "Makefile").read_text()


def minor(text: str) -> tuple[int, int]:
    major, minor_, *_ = text.split(".")
    return int(major), int(minor_)


def makefile_pythons() -> list[str]:
    match = re.search(r"^PYTHONS\s*\?=\s*(.+)$", MAKEFILE, re.M)
    assert match is not None, "no PYTHONS in the Makefile"
    return match.group(1).split()


def test_the_classifiers_list_exactly_the_pythons_ci_runs():
    classified = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
                  if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert classified == makefile_pythons()


def test_the_pythons_ci_runs_go_from_the_declared_minimum_without_a_gap():
    pythons = [minor(v) for v in makefile_pythons()]
    (spec,) = SpecifierSet(PROJECT["requires-python"])
    assert spec.operator == ">="
    assert pythons[0] == minor(spec.version)
    assert pythons == [(3, m) for m in range(pythons[0][1], pythons[-1][1] + 1)]


def test_ci_runs_the_python_matrix_after_make_test():
    run = (REPO / ".ci/run").read_text().splitlines()
    assert run.index("make test") < run.index("make test-pythons")


def test_tornado_and_the_exporter_have_upper_bounds_that_admit_what_runs_here():
    requirements = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
    for name in ("tornado", "opentelemetry-exporter-prometheus"):
        specifier = requirements[name].specifier
        assert any(s.operator == "<" for s in specifier), f"{name} has no upper bound"
        assert specifier.contains(version(name), prereleases=True), (name, version(name))
