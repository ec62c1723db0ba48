"""Command line: `hyperdash demo | serve | watch` (filled in by the CLI work)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("hyperdash: the command line is not built yet")
