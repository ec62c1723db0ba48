"""`make bench`: every benchmark, each a table of ratios against its baseline.

``python -m bench`` runs them all (about 35 minutes: the outside-in stream bench runs up to
10,000 clients per server); ``python -m bench NAME [options]`` runs one of them:
core, fanout, calls, tick, endpoints, stalled, page, page-budget, outside, fleet,
connect.
"""

import platform
import sys
from collections.abc import Callable
from typing import Any

from . import (calls, connect, core, endpoints, fanout, fleet, outside, page, page_budget,
               stalled, tick)

BENCHES: dict[str, Callable[..., Any]] = {
    "core": core.main,
    "calls": calls.main,
    "tick": tick.main,
    "fanout": fanout.main,
    "endpoints": endpoints.main,
    "stalled": stalled.main,
    "page": page.main,
    "page-budget": page_budget.main,
    "outside": outside.main,
    "fleet": fleet.main,
    "connect": connect.main,
}
TAKE_ARGS = {"stalled", "page", "page-budget", "outside", "fleet", "connect"}


def main(argv: list[str]) -> int:
    print(f"# hyperdash-otel benchmarks (Python {platform.python_version()}, "
          f"{platform.machine()})")
    with open("/proc/loadavg") as f:
        print(f"load average at start: {' '.join(f.read().split()[:3])}")
    if argv:
        name, rest = argv[0], argv[1:]
        if name not in BENCHES:
            print(f"unknown benchmark {name!r}; one of: {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        BENCHES[name](rest) if name in TAKE_ARGS else BENCHES[name]()
        return 0
    for name, run in BENCHES.items():
        run([]) if name in TAKE_ARGS else run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
