"""Throughput over a sliding window, from cumulative counts sampled at each commit."""

from __future__ import annotations

import threading
import time
from collections import deque

WINDOW = 10.0  # seconds


class RateWindow:
    """Events per second over the last :data:`WINDOW` seconds.

    The engine adds samples while the API's threads ask for the rate: a lock keeps the two
    from trimming the same samples at once.
    """

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, total: int, now: float | None = None) -> None:
        """Record the cumulative count ``total`` at ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, total))
            self._trim(now)

    def rate(self, total: int, now: float | None = None) -> float:
        """Events per second from the window's start up to ``total`` at ``now``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if not self._samples:
                return 0.0
            start, counted = self._samples[0]
        return max(0, total - counted) / max(now - start, 1e-3)

    def _trim(self, now: float) -> None:
        # Keep the newest sample at or before the window's start, so the rate spans it all.
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self._window:
            samples.popleft()
