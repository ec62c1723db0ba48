"""The server depends on the snapshot-source protocol, never on the Dashboard class."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hyperdash_otel.server

SERVER = Path(hyperdash_otel.server.__file__).parent
FORBIDDEN = "hyperdash_otel.dashboard"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, wherever the import sits (TYPE_CHECKING
    blocks and function bodies included)."""
    package = "hyperdash_otel.server"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            # ``from .. import dashboard`` names the module as an imported name
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("source", [
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..dashboard import Dashboard\n",
    "def f():\n    import hyperdash_otel.dashboard\n",
    "from .. import dashboard\n",
    "from hyperdash_otel.dashboard import Dashboard as D\n",
])
def test_the_parser_sees_every_form_of_import(tmp_path: Path, source: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert FORBIDDEN in imported_modules(probe)


def test_the_parser_leaves_other_modules_alone(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from ..source import Source\nfrom .stream import FanOut\n")
    assert not {m for m in imported_modules(probe) if m.startswith(FORBIDDEN)}


def test_no_server_module_imports_the_dashboard() -> None:
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) > 5
    offenders = {
        str(path.relative_to(SERVER)): sorted(m for m in imported_modules(path)
                                              if m == FORBIDDEN or m.startswith(FORBIDDEN + "."))
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
