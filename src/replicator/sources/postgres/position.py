"""PostgreSQL stream positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replicator.sources.postgres.pgoutput import format_lsn, parse_lsn


@dataclass(frozen=True, slots=True, order=True)
class PgPosition:
    """A place in a PostgreSQL logical stream.

    A checkpoint is a transaction's end LSN with ``index`` 0: streaming resumes there. An
    event's position is its transaction's commit LSN plus its 1-based index in the transaction,
    because BEGIN and the first change, or all rows of one COPY, can share a single LSN
    (Debezium DBZ-6204, dbz#1554). Since the next transaction's commit LSN is at or after the
    previous end LSN, both kinds order correctly against each other.
    """

    lsn: int
    index: int = 0

    def order_key(self) -> tuple[int, ...]:
        """Commit order: LSN, then index within the transaction."""
        return (self.lsn, self.index)

    def to_json(self) -> dict[str, Any]:
        """``{"lsn": "16/B374D848"}`` (plus ``index`` for an event position)."""
        data: dict[str, Any] = {"lsn": format_lsn(self.lsn)}
        if self.index:
            data["index"] = self.index
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PgPosition:
        """Parse the form written by :meth:`to_json`."""
        try:
            return cls(parse_lsn(str(data["lsn"])), int(data.get("index", 0)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not a PostgreSQL position: {data!r}") from exc

    def __str__(self) -> str:
        return format_lsn(self.lsn) if not self.index else f"{format_lsn(self.lsn)}#{self.index}"
