"""The page-budget bench's stubs (bench/page_stubs) still fit the page they stand in for.

`python -m bench page-budget` measures the page with some modules swapped for stubs that
draw nothing. A stub that lacks a name the page imports from its module stops the whole
module graph from loading, and the bench then waits for messages until it times out; these
tests say which name is missing instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "web" / "static" / "js"
STUBS = ROOT / "bench" / "page_stubs"

IMPORT = re.compile(r'import\s*\{([^}]*)\}\s*from\s*"\./([\w-]+)\.js"')
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:const|let|function|class)\s+(\w+)", re.M)


def names_in(braces: str) -> set[str]:
    """The imported names of an ``import { a, b as c }`` list (``a``, ``b``)."""
    return {name.split(" as ")[0].strip() for name in braces.split(",") if name.strip()}


def imported_from(module: str) -> dict[str, set[str]]:
    """The names each of the page's modules imports from ``module``."""
    wanted: dict[str, set[str]] = {}
    for source in JS.glob("*.js"):
        for names, target in IMPORT.findall(source.read_text()):
            if target == module:
                wanted.setdefault(source.name, set()).update(names_in(names))
    return wanted


STUBBED = sorted(path.stem for path in STUBS.glob("*.js"))


def test_every_stub_stands_in_for_a_page_module() -> None:
    assert STUBBED, "no stubs found"
    assert [name for name in STUBBED if not (JS / f"{name}.js").is_file()] == []


@pytest.mark.parametrize("module", STUBBED)
def test_stub_exports_what_the_page_imports(module: str) -> None:
    exported = set(EXPORT.findall((STUBS / f"{module}.js").read_text()))
    wanted = imported_from(module)
    assert wanted, f"no page module imports {module}.js"
    missing = {importer: sorted(names - exported) for importer, names in wanted.items()
               if names - exported}
    assert missing == {}, f"bench/page_stubs/{module}.js lacks names the page imports"


@pytest.mark.parametrize("module", STUBBED)
def test_stub_imports_only_what_the_page_has(module: str) -> None:
    for names, target in IMPORT.findall((STUBS / f"{module}.js").read_text()):
        real = set(EXPORT.findall((JS / f"{target}.js").read_text()))
        asked = names_in(names)
        assert asked <= real, f"{module}.js stub imports {sorted(asked - real)} from {target}.js"
