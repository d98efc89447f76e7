"""The hand-over from a source's reader thread to the engine's thread.

Items cross in lists (up to :data:`HANDOFF_ITEMS` or :data:`HANDOFF_BYTES`), so that queue
locking costs little per row, through a bounded queue, so that a slow target stops the
reading instead of filling memory. An error that stops the reader crosses too, after the
items read before it, and is raised in the engine's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from replicator.engine.queue import BoundedQueue
from replicator.events import Heartbeat, StreamItem

QUEUE_BATCHES = 64  # lists of up to HANDOFF_ITEMS items each
QUEUE_BYTES = 64 * 1024 * 1024
HANDOFF_ITEMS = 512
HANDOFF_BYTES = 1024 * 1024
_POLL = 0.2  # seconds between checks for a stop while the queue is full
_BUSY_WAIT = 0.1
_IDLE_WAIT = 1.0


class Stopped(Exception):
    """The engine asked the reader to stop while it waited for queue space."""


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class Handoff:
    """The queue between one reader thread and the engine."""

    def __init__(
        self, stopping: threading.Event, while_full: Callable[[], None] | None = None
    ) -> None:
        """``stopping`` ends a wait for space; ``while_full`` runs between such waits (to
        keep a connection alive that the server would otherwise time out)."""
        self._queue: BoundedQueue[list[StreamItem] | list[_Failure]] = BoundedQueue(
            QUEUE_BATCHES, QUEUE_BYTES
        )
        self._stopping = stopping
        self._while_full = while_full

    def put(self, items: list[StreamItem], size: int) -> None:
        """Queue ``items`` (about ``size`` bytes), waiting for space; :class:`Stopped` when
        the engine stops the reader meanwhile."""
        self._put(items, size)

    def fail(self, error: BaseException) -> None:
        """Queue the error that stopped the reader (:class:`Stopped` as for :meth:`put`)."""
        self._put([_Failure(error)], 0)

    def _put(self, items: list[StreamItem] | list[_Failure], size: int) -> None:
        while not self._queue.put(items, size, timeout=_POLL):
            if self._stopping.is_set():
                raise Stopped
            if self._while_full is not None:
                self._while_full()

    def items(self, busy: Callable[[], bool] | None = None) -> Iterator[StreamItem]:
        """Queued items in order; a ``Heartbeat()`` whenever none is ready right now.

        ``busy`` tells whether the reader is still decoding what the server sent: then an
        empty queue is only a moment between two hand-overs, worth a short wait rather than
        a heartbeat (on which the engine would commit a small batch).
        """
        queue = self._queue
        while True:
            items = queue.get_nowait()
            if items is None and busy is not None and busy():
                items = queue.get(timeout=_BUSY_WAIT)
            if items is None:
                yield Heartbeat()
                items = queue.get(timeout=_IDLE_WAIT)
                if items is None:
                    continue
            for item in items:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
