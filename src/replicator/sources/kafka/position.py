"""Positions of a Kafka source: offsets per (topic, partition), and an event's order key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Partition = tuple[str, int]
"""A topic and one of its partitions."""

SNAPSHOT_PHASE = 0
"""First element of a snapshot read's order key: below every streamed change."""
STREAM_PHASE = 1
"""First element of a streamed change's order key."""


@dataclass(slots=True)
class KafkaPosition:
    """Where a syncer stands: the next offset to read of each partition it consumed.

    A transaction boundary's position carries ``offsets``, each checkpointed separately in
    the target per (pipeline, topic, partition), so consumers of one group never overwrite
    each other's (DESIGN, Position). A change event's position carries ``order`` instead: its
    place in its *source's* log where the Debezium envelope gives one (PostgreSQL lsn, MySQL
    binlog coordinates, SQL Server LSNs), then its Kafka offset, which the sink's staleness
    guard compares with the order of the change that last wrote the row (invariant 2).

    Snapshot reads order ``(SNAPSHOT_PHASE, offset)``: below every streamed change, since a
    change streamed after the snapshot began is newer than what the snapshot read even when
    its own log position is lower (a transaction open across the snapshot point). Streamed
    changes order ``(STREAM_PHASE, *source order, offset)``, or ``(STREAM_PHASE, offset)``
    when the envelope names no position; offsets only compare within a partition, which is
    where one key's changes are.

    Never changed once made (not ``frozen`` only because the reader makes one per message,
    and a frozen dataclass takes three times as long to construct).
    """

    offsets: Mapping[Partition, int] = field(default_factory=dict)
    order: tuple[int, ...] = ()

    def order_key(self) -> tuple[int, ...]:
        """The event's order (empty for a transaction boundary, which has none)."""
        return self.order

    def to_json(self) -> dict[str, Any]:
        """``{"offsets": [["shop.public.orders", 0, 1234], ...]}``: next offsets to read."""
        return {"offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KafkaPosition:
        """Parse the form written by :meth:`to_json`."""
        try:
            offsets = {(str(t), int(p)): int(o) for t, p, o in data.get("offsets", ())}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a Kafka position: {data!r}") from exc
        return cls(offsets)

    def __str__(self) -> str:
        if self.order:
            return "order " + ".".join(str(part) for part in self.order)
        parts = [f"{t}[{p}]@{o}" for (t, p), o in sorted(self.offsets.items())]
        if len(parts) > 4:
            parts = [*parts[:4], f"... ({len(parts)} partitions)"]
        return ", ".join(parts) or "(no offsets)"
