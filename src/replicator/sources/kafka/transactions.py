"""Whole source transactions through Kafka, when Debezium's transaction metadata is on.

With ``provide.transaction.metadata`` every change names its transaction, and the
transaction topic says at END how many changes it had. A syncer that reads the transaction
topic as well as the data topics holds back its commit point while a transaction it has
seen part of is still incomplete, so the target commits whole source transactions only
(invariant 3). A transaction whose changes are spread over partitions this member does not
own can never complete here: after ``max_wait_s`` the hold is given up, with a warning, and
changes are applied one by one as without metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from replicator.debezium.envelope import TransactionMarker


@dataclass(slots=True)
class _Open:
    seen: int = 0
    expected: int | None = None
    since: float = 0.0


class TransactionTracker:
    """Which source transactions are partly read."""

    def __init__(self, max_wait_s: float = 5.0) -> None:
        self._open: dict[str, _Open] = {}
        self._max_wait = max_wait_s
        self.gave_up = 0  # transactions applied without their grouping

    def change(self, key: str) -> None:
        """A change of transaction ``key`` was read."""
        entry = self._open.get(key)
        if entry is None:
            entry = self._open[key] = _Open(since=time.monotonic())
        entry.seen += 1
        self._close_if_complete(key, entry)

    def marker(self, marker: TransactionMarker) -> None:
        """A BEGIN or END record was read."""
        key = marker.key
        entry = self._open.get(key)
        if marker.status != "END":
            if entry is None:
                self._open[key] = _Open(since=time.monotonic())
            return
        if entry is None:
            entry = self._open[key] = _Open(since=time.monotonic())
        entry.expected = marker.event_count or 0
        self._close_if_complete(key, entry)

    def _close_if_complete(self, key: str, entry: _Open) -> None:
        if entry.expected is not None and entry.seen >= entry.expected:
            del self._open[key]

    def at_boundary(self) -> bool:
        """Whether every transaction read so far is complete (a commit point is safe).

        Transactions open longer than ``max_wait_s`` are given up on first.
        """
        if not self._open:
            return True
        deadline = time.monotonic() - self._max_wait
        stale = [k for k, e in self._open.items() if e.since < deadline]
        for key in stale:
            del self._open[key]
            self.gave_up += 1
        return not self._open
