"""Dead-letter stores kept as an append-only log of records (a file, a Kafka topic).

A record is either an entry or a status change of one (``{"status_of": ENTRY_KEY, ...}``).
Reading folds the log: an entry written twice (the same event failing again, or a crash
between the write and the commit) is one entry with more attempts; status changes apply in
log order. Entry numbers are their order of first appearance.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from replicator.dlq.entry import OPEN, PENDING, DeadLetter, Resolution
from replicator.dlq.store import DeadLetterStore
from replicator.events import TableId


def fold(records: Iterable[dict[str, Any]]) -> list[DeadLetter]:
    """The entries a log of records describes, in order of first appearance."""
    by_key: dict[str, DeadLetter] = {}
    for doc in records:
        key = doc.get("status_of")
        if key is not None:
            entry = by_key.get(key)
            if entry is not None:
                entry.status = doc["status"]
                entry.resolved_by = doc.get("by")
                entry.note = doc.get("note") or entry.note
                at = doc.get("at")
                entry.resolved_at = datetime.fromisoformat(at) if at else None
                if doc.get("error"):
                    entry.error = doc["error"]
                    entry.attempts += 1
            continue
        entry = DeadLetter.from_dict(doc)
        known = by_key.get(entry.entry_key)
        if known is not None:
            # Written again: the same event failed again (or a crash repeated a write).
            known.attempts += 1
            known.status = PENDING
            known.error = entry.error
            continue
        entry.id = len(by_key) + 1
        by_key[entry.entry_key] = entry
    return list(by_key.values())


class LogDeadLetterStore(DeadLetterStore):
    """The queries and writes of a log-shaped store; subclasses read and append records."""

    @abstractmethod
    def _records(self) -> list[dict[str, Any]]:
        """Every record, in log order."""

    @abstractmethod
    def _append(self, records: list[dict[str, Any]]) -> None:
        """Append records durably."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise a read-then-append against other writers (where the log needs it)."""
        yield

    def _load(self) -> list[DeadLetter]:
        return fold(self._records())

    def open_entries(self, pipeline: str) -> list[DeadLetter]:
        """Entries still holding their key, in source order."""
        found = [e for e in self._load() if e.pipeline == pipeline and e.status in OPEN]
        return sorted(found, key=lambda e: (e.order_key, e.id or 0))

    def entries(
        self,
        pipeline: str,
        *,
        status: str | None = None,
        table: TableId | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Entries, newest first."""
        found = [
            e
            for e in self._load()
            if e.pipeline == pipeline
            and (status is None or e.status == status)
            and (table is None or e.table == table)
        ]
        return list(reversed(found))[:limit]

    def get(self, pipeline: str, entry_id: int) -> DeadLetter | None:
        """One entry by its number."""
        for entry in self._load():
            if entry.pipeline == pipeline and entry.id == entry_id:
                return entry
        return None

    def counts(self, pipeline: str) -> dict[str, int]:
        """Entries per status."""
        counts: dict[str, int] = {}
        for entry in self._load():
            if entry.pipeline == pipeline:
                counts[entry.status] = counts.get(entry.status, 0) + 1
        return counts

    def add(self, entries: Sequence[DeadLetter]) -> None:
        """Append entries, durably."""
        if entries:
            self._append([e.as_dict() for e in entries])

    def mark(
        self, pipeline: str, ids: Sequence[int], status: str, by: str, note: str | None = None
    ) -> list[int]:
        """Append status changes for the open entries among ``ids``."""
        wanted = set(ids)
        with self._locked():
            chosen = [
                e
                for e in self._load()
                if e.pipeline == pipeline and e.id in wanted and e.status in OPEN
            ]
            now = _now()
            self._append([_status(e.entry_key, status, by, now, note=note) for e in chosen])
        return sorted(e.id for e in chosen if e.id is not None)

    def resolve(self, pipeline: str, resolutions: Sequence[Resolution]) -> None:
        """Append status changes the pipeline made (replayed, superseded, back to pending)."""
        now = _now()
        by_key = {r.entry_key: r for r in resolutions}
        self._append(
            [_status(k, r.status, "replicator", now, note=r.note) for k, r in by_key.items()]
        )

    def failed_again(self, entries: Sequence[DeadLetter]) -> None:
        """Replayed entries that failed again: back to pending, with the new error."""
        now = _now()
        self._append([_status(e.entry_key, PENDING, "replay", now, error=e.error) for e in entries])


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _status(entry_key: str, status: str, by: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"status_of": entry_key, "status": status, "by": by, "at": at, **extra}
