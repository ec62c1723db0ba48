"""The host process's own CPU, memory and threads, read with psutil."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

__all__ = ["ProcessSample", "ProcessSampler"]

# psutil's cpu_percent(None) over a shorter window is mostly noise; keep the last reading.
MIN_CPU_WINDOW = 0.1


@dataclass(frozen=True)
class ProcessSample:
    memory_bytes: int
    cpu_percent: float
    threads: int


class ProcessSampler:
    """Samples this process; ``cpu_percent`` covers the time since the previous sample.

    One sample costs a few tens of microseconds (``/proc`` reads under ``oneshot``).
    """

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid)
        self._lock = threading.Lock()
        self._process.cpu_percent(None)  # primes the interval
        self._last_cpu_at = time.monotonic()
        self._last_cpu = 0.0

    def sample(self) -> ProcessSample:
        with self._lock, self._process.oneshot():
            now = time.monotonic()
            if now - self._last_cpu_at >= MIN_CPU_WINDOW:
                self._last_cpu = self._process.cpu_percent(None)
                self._last_cpu_at = now
            return ProcessSample(
                memory_bytes=self._process.memory_info().rss,
                cpu_percent=self._last_cpu,
                threads=self._process.num_threads(),
            )
