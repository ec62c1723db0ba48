"""Side-by-side timing: baseline and candidate interleaved, medians compared."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def per_call(
    fn: Callable[[], object], *, number: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds per call of ``fn`` over ``number`` calls, GC paused."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        for _ in range(number):
            fn()
        return (clock() - start) / number
    finally:
        if gc_was:
            gc.enable()


def compare(
    baseline: Callable[[], object], candidate: Callable[[], object], *, number: int,
    rounds: int = 7, clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Median seconds per call of each, measured in alternating rounds.

    ``clock``: ``time.thread_time`` counts the CPU time of the calling thread only, so a
    busy machine that preempts the benchmark does not add its waits to either side.
    """
    base, cand = [], []
    per_call(baseline, number=max(1, number // 10), clock=clock)
    per_call(candidate, number=max(1, number // 10), clock=clock)
    for _ in range(rounds):
        base.append(per_call(baseline, number=number, clock=clock))
        cand.append(per_call(candidate, number=number, clock=clock))
    return statistics.median(base), statistics.median(cand)


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def print_table(title: str, rows: list[tuple[str, str, float, float]]) -> None:
    print(f"\n## {title}\n")
    print("| case | baseline | baseline time | hyperdash time | ratio |")
    print("|---|---|---|---|---|")
    for case, base_name, base, cand in rows:
        print(f"| {case} | {base_name} | {fmt_seconds(base)} | {fmt_seconds(cand)} | "
              f"{cand / base:.2f}x |")
