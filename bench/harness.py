"""The plumbing both benchmarks' runs share: progress lines, warnings, timing one consumer
with its CPU use, and the machine's description for the results file."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter
from bench.db import BenchError
from bench.model import Measurement

FOREIGN_CPU_WARNING = 0.10
"""Share of the machine's CPU time other processes may use before a timing is called skewed."""


def loadavg() -> float:
    """The 1-minute load average, rounded."""
    return round(os.getloadavg()[0], 2)


def replicator_version() -> str:
    """The installed Replicator's version, or ``unknown``."""
    try:
        return importlib.metadata.version("replicator")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine() -> dict[str, Any]:
    """CPUs, memory, platform and Python, the first entries of a run's environment."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {
        "cpus": os.cpu_count(),
        "memory_total_kb": int(meminfo[1]),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


class Harness:
    """Progress, warnings and timing for one run; each benchmark's ``Benchmark`` extends it."""

    def __init__(self, warnings: list[str]) -> None:
        """``warnings``: the run's results list, where every warning is also recorded."""
        self.warnings = warnings
        self.cpu = CpuMeter([])  # setup() replaces it once the servers' pids are known
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        """Progress on stdout, with the seconds since the start."""
        print(f"[{time.monotonic() - self._started:7.1f}s] {message}", flush=True)

    def warn(self, warning: str) -> None:
        """Record a warning in the results and say it."""
        self.warnings.append(warning)
        self.say(f"  warning: {warning}")

    def before_timing(self, measurement: Measurement, label: str) -> None:
        """Called before each timed step; a benchmark flushes its servers here, so that no
        consumer pays for the writes another one left behind."""

    def measure(
        self,
        measurement: Measurement,
        label: str,
        start: Callable[[], None],
        wait: Callable[[float], float],
    ) -> None:
        """Start a consumer and wait for it; record seconds and CPU, or the error and re-raise.

        ``wait`` gets the monotonic start time and returns the time the consumer was done.
        """
        self.before_timing(measurement, label)
        self.say(f"  {label}: started")
        cpu_start = self.cpu.sample()
        started = time.monotonic()
        try:
            start()
            finished = wait(started)
        except BenchError as exc:
            measurement.error = str(exc)
            raise BenchError(f"{label}: {exc}") from None
        measurement.seconds = finished - started
        usage = self.cpu.since(cpu_start)
        measurement.detail["cpu_seconds"] = round(usage.own_seconds, 2)
        measurement.detail["foreign_cpu_seconds"] = round(usage.foreign_seconds, 2)
        self.say(
            f"  {label}: done in {measurement.seconds:.2f}s"
            f" ({usage.own_seconds:.1f} CPU-s used by the servers and the consumer)"
        )
        capacity = (time.monotonic() - started) * (os.cpu_count() or 1)
        if usage.foreign_seconds > FOREIGN_CPU_WARNING * capacity:
            self.warn(
                f"{label}: other processes on this machine used {usage.foreign_seconds:.1f}"
                f" CPU-s during the {measurement.seconds:.1f}s measured; this timing is skewed"
                " (busiest: "
                + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in usage.top_foreign)
                + ")"
            )
