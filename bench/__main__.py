"""`make bench`: every benchmark, each a table of ratios against its baseline."""

import platform
import sys

from . import core, fanout


def main() -> int:
    print(f"# hyperdash-otel benchmarks (Python {platform.python_version()}, "
          f"{platform.machine()})")
    core.main()
    fanout.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
