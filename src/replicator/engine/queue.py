"""A queue bounded by both item count and payload bytes, between a reader thread and the engine.

Bounding by bytes as well as count keeps memory flat when rows are wide (TOASTed text): ten
thousand 1 MB rows must not be buffered just because ten thousand small ones could be.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    """FIFO of (item, size) pairs; ``put`` waits while either bound is reached.

    A single item larger than ``max_bytes`` is still accepted when the queue is empty, so an
    oversize row slows the pipeline down instead of wedging it.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._cond = threading.Condition()

    def _has_room(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self._max_items and self._bytes + size <= self._max_bytes

    def put(self, item: T, size: int = 0, timeout: float | None = None) -> bool:
        """Append ``item``; return False if there was no room within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._has_room(size):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Pop the oldest item, waiting up to ``timeout`` seconds; None if none arrived."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, size = self._items.popleft()
            self._bytes -= size
            self._cond.notify_all()
            return item

    def get_nowait(self) -> T | None:
        """Pop the oldest item if there is one."""
        return self.get(timeout=0)
