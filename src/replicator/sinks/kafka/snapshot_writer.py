"""A copy worker of a Kafka sink: each copied row published as a snapshot read (``op: r``).

A chunk counts as copied once the brokers acknowledged every row of it; its bookkeeping is
then saved in the pipeline's state file. A crash in between publishes the chunk again when
the copy resumes: consumers see those rows twice, which an upsert absorbs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from replicator.checkpoints.file import FileCheckpointStore
from replicator.contracts import (
    COPY_POSTGRES_TEXT,
    Chunk,
    ChunkState,
    CopyStream,
    SnapshotWriter,
    TablePlan,
)
from replicator.errors import SinkError
from replicator.events import ChangeEvent, Op, Position, TableId, TableSchema
from replicator.sinks.kafka.copy_text import read_rows

if TYPE_CHECKING:
    from replicator.sinks.kafka.sink import KafkaSink

_PUBLISH_ROWS = 5_000


class KafkaSnapshotWriter(SnapshotWriter):
    """Publishes copied rows to the table's topic."""

    formats = frozenset({COPY_POSTGRES_TEXT})

    def __init__(self, sink: KafkaSink, store: FileCheckpointStore, pipeline: str) -> None:
        self._sink = sink
        self._store = store
        self._pipeline = pipeline

    def chunks(self, table: TableId) -> list[ChunkState]:
        """The table's stored chunk plan."""
        return self._store.load_chunks(self._pipeline, table)

    def start_table(
        self,
        schema: TableSchema,
        plan: TablePlan,
        shadow: str | None,
        requested_at: datetime | None,
    ) -> None:
        """Record the plan. Nothing is emptied: consumers get the rows again, as upserts."""
        self._sink.ensure_table(schema)
        self._store.save_plan(self._pipeline, schema.table, plan, shadow, requested_at)

    def copy_chunk(
        self,
        schema: TableSchema,
        chunk: Chunk,
        stream: CopyStream,
        position: Position,
        *,
        shadow: str | None,
        upsert: bool,
        progress: Callable[[int], None],
    ) -> int:
        """Publish the chunk's rows, wait for the acknowledgements, then mark it copied."""
        if stream.format != COPY_POSTGRES_TEXT:
            raise SinkError(f"a Kafka sink cannot read a {stream.format} copy stream")
        by_name = {c.name: c for c in schema.columns}
        columns = tuple(by_name[name] for name in stream.columns)
        key = schema.key
        rows = 0
        pending: list[ChangeEvent] = []
        try:
            for row in read_rows(stream.blocks, columns):
                event_key = {k: row[k] for k in key} if key else None
                pending.append(ChangeEvent(Op.READ, schema, event_key, None, row, position))
                if len(pending) >= _PUBLISH_ROWS:
                    self._sink.publish(pending)
                    rows += len(pending)
                    pending = []
                    progress(rows)
        except ValueError as exc:
            raise SinkError(f"cannot read the copy of {schema.table}: {exc}") from exc
        if pending:
            self._sink.publish(pending)
            rows += len(pending)
        self._sink.wait_for_acks()
        self._store.chunk_done(self._pipeline, schema.table, chunk.number, position, rows)
        progress(rows)
        return rows

    def finish_table(
        self,
        schema: TableSchema,
        shadow: str | None,
        start: Position,
        until: Position,
        requested_at: datetime | None,
    ) -> bool:
        """Mark the table copied."""
        return self._store.finish(self._pipeline, schema.table, start, until, requested_at)

    def close(self) -> None:
        """Nothing to release: the sink owns the producer."""
