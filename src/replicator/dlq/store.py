"""Where dead-letter entries live: the contract every store keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from replicator.dlq.entry import DeadLetter, Resolution
from replicator.events import TableId


class DeadLetterStore(ABC):
    """Entries of the dead-letter queue, per pipeline."""

    in_target: bool = False
    """True when the sink writes new entries in the data's own transaction (the table in a
    PostgreSQL target); otherwise the engine adds them, durably, before the data commits."""

    @abstractmethod
    def add(self, entries: Sequence[DeadLetter]) -> None:
        """Store entries durably; an entry already stored (same ``entry_key``) counts one
        more attempt instead of appearing twice."""

    @abstractmethod
    def open_entries(self, pipeline: str) -> list[DeadLetter]:
        """Entries still holding their key (pending or waiting for replay), in source order."""

    @abstractmethod
    def entries(
        self,
        pipeline: str,
        *,
        status: str | None = None,
        table: TableId | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Entries, newest first, optionally only of one status or table."""

    @abstractmethod
    def get(self, pipeline: str, entry_id: int) -> DeadLetter | None:
        """One entry by its number."""

    @abstractmethod
    def mark(
        self, pipeline: str, ids: Sequence[int], status: str, by: str, note: str | None = None
    ) -> list[int]:
        """Set the status of open entries; the ids that changed."""

    @abstractmethod
    def failed_again(self, entries: Sequence[DeadLetter]) -> None:
        """Replayed entries that failed again: back to pending, one more attempt, new error."""

    @abstractmethod
    def resolve(self, pipeline: str, resolutions: Sequence[Resolution]) -> None:
        """Record status changes the pipeline made, durably (stores not in the target)."""

    @abstractmethod
    def counts(self, pipeline: str) -> dict[str, int]:
        """Entries per status."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files; idempotent."""
