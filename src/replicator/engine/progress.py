"""Throughput over a sliding window, from cumulative counts sampled at each commit."""

from __future__ import annotations

import time
from collections import deque

WINDOW = 10.0  # seconds


class RateWindow:
    """Events per second over the last :data:`WINDOW` seconds."""

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, total: int, now: float | None = None) -> None:
        """Record the cumulative count ``total`` at ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        samples = self._samples
        samples.append((now, total))
        # Keep one sample older than the window, so the rate spans all of it.
        while len(samples) > 2 and samples[1][0] <= now - self._window:
            samples.popleft()

    def rate(self, total: int, now: float | None = None) -> float:
        """Events per second from the window's start up to ``total`` at ``now``."""
        now = time.monotonic() if now is None else now
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self._window:
            samples.popleft()
        if not samples:
            return 0.0
        start, counted = samples[0]
        return max(0, total - counted) / max(now - start, 1e-3)
