"""Writes a snapshot copy into PostgreSQL: ``COPY … FROM STDIN`` fed with the source's own
``COPY … TO STDOUT`` bytes, one chunk per transaction together with its bookkeeping row.

A chunk's rows commit with ``synchronous_commit = off``: a commit lost in a crash takes its
bookkeeping row with it, so the chunk is simply copied again, and the first durable commit of
the stream afterwards flushes every earlier one (WAL is written in order).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.checkpoints import snapshot_state
from replicator.config import PipelineConfig
from replicator.contracts import (
    COPY_POSTGRES_BINARY as BINARY,
)
from replicator.contracts import (
    COPY_POSTGRES_TEXT as TEXT,
)
from replicator.contracts import (
    Chunk,
    ChunkState,
    CopyStream,
    SnapshotWriter,
    TablePlan,
)
from replicator.events import Position, TableId, TableSchema
from replicator.sinks.postgres.session import connect, translate

_WRITE_SIZE = 256 * 1024  # bytes handed to libpq per write
_PROGRESS_EVERY = 10_000  # rows between progress callbacks


class PgSnapshotWriter(SnapshotWriter):
    """One copy worker's target connection."""

    formats = frozenset({BINARY, TEXT})

    def __init__(self, pipeline: PipelineConfig) -> None:
        self._pipeline = pipeline.name
        self._conn = connect(pipeline, synchronous_commit=False)

    def chunks(self, table: TableId) -> list[ChunkState]:
        """The table's stored chunk plan."""
        with self._transaction("reading the copy plan"):
            return snapshot_state.load_chunks(self._conn, self._pipeline, table)

    def start_table(
        self,
        schema: TableSchema,
        plan: TablePlan,
        shadow: str | None,
        requested_at: datetime | None,
    ) -> None:
        """Store the plan and empty the table (or create its empty shadow)."""
        target = _target(schema.table, shadow)
        with self._transaction(f"preparing the copy of {schema.table}"):
            if shadow is not None:
                self._conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
                # LIKE … INCLUDING ALL: same columns, generated expressions, defaults and
                # indexes (the primary key an upsert needs); no foreign keys.
                self._conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                        target, _target(schema.table, None)
                    )
                )
            else:
                # The target must end up an exact copy: rows from an earlier copy or an
                # earlier pipeline go.
                self._conn.execute(sql.SQL("TRUNCATE {}").format(target))
            snapshot_state.save_plan(
                self._conn,
                self._pipeline,
                schema.table,
                plan.chunks,
                plan.rows_estimated,
                requested_at,
            )

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
        """COPY the chunk in (through a staging table when it must upsert) and mark it."""
        target = _target(schema.table, shadow)
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in stream.columns)
        options = sql.SQL(" (FORMAT binary)" if stream.format == BINARY else "")
        conn = self._conn
        with self._transaction(f"copying {schema.table}"):
            into: sql.Composable = target
            if upsert:
                into = sql.Identifier("_replicator_copy_stage")
                conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
                    ).format(into, columns, target)
                )
            with conn.cursor() as cur:
                with cur.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN{}").format(into, columns, options)
                ) as copy:
                    buffered: list[bytes | bytearray | memoryview] = []
                    size = 0
                    messages = 0
                    for block in stream.blocks:
                        buffered.append(block)
                        size += len(block)
                        messages += 1
                        if size >= _WRITE_SIZE:
                            copy.write(b"".join(buffered))
                            buffered.clear()
                            size = 0
                        if messages % _PROGRESS_EVERY == 0:
                            progress(messages)
                    if buffered:
                        copy.write(b"".join(buffered))
                rows = cur.rowcount
                if upsert:
                    rows = self._upsert(cur, schema, target, into, columns)
            conn.execute(
                snapshot_state.chunk_done_statement(
                    self._pipeline, schema.table, chunk, position, rows
                )
            )
        return rows

    def _upsert(
        self,
        cur: psycopg.Cursor[Any],
        schema: TableSchema,
        target: sql.Composable,
        stage: sql.Composable,
        columns: sql.Composable,
    ) -> int:
        others = [c for c in schema.column_names if c not in schema.key]
        action: sql.Composable = sql.SQL("DO NOTHING")
        if others:
            action = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in others
                )
            )
        cur.execute(
            sql.SQL(
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT ({}) {}"
            ).format(
                target,
                columns,
                columns,
                stage,
                sql.SQL(", ").join(sql.Identifier(k) for k in schema.key),
                action,
            )
        )
        return max(cur.rowcount, 0)

    def finish_table(
        self,
        schema: TableSchema,
        shadow: str | None,
        start: Position,
        until: Position,
        requested_at: datetime | None,
    ) -> bool:
        """Swap the shadow's rows in (one transaction: readers see old rows, then new) and
        mark the table copied from ``start``."""
        live = _target(schema.table, None)
        with self._transaction(f"finishing the copy of {schema.table}"):
            if shadow is not None:
                copy = _target(schema.table, shadow)
                columns = sql.SQL(", ").join(sql.Identifier(c) for c in schema.column_names)
                self._conn.execute(sql.SQL("TRUNCATE {}").format(live))
                self._conn.execute(
                    sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
                        live, columns, columns, copy
                    )
                )
                self._conn.execute(sql.SQL("DROP TABLE {}").format(copy))
            return snapshot_state.finish(
                self._conn,
                self._pipeline,
                schema.table,
                start.to_json(),
                until.to_json(),
                requested_at,
            )

    def close(self) -> None:
        """Roll back anything unfinished and close."""
        self._conn.close()

    def _transaction(self, doing: str) -> _Transaction:
        return _Transaction(self._conn, doing)


class _Transaction:
    """``conn.transaction()`` that turns database errors into sink errors."""

    def __init__(self, conn: psycopg.Connection[Any], doing: str) -> None:
        self._conn = conn
        self._doing = doing
        self._tx: Any = None

    def __enter__(self) -> None:
        self._tx = self._conn.transaction()
        self._tx.__enter__()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self._tx.__exit__(kind, exc, tb)
        except psycopg.Error as failure:
            raise translate(failure, self._doing) from failure
        if isinstance(exc, psycopg.Error):
            raise translate(exc, self._doing) from exc


def _target(table: TableId, shadow: str | None) -> sql.Composable:
    if shadow is not None:
        return sql.Identifier(snapshot_state.SCHEMA, shadow)
    return sql.Identifier(table.schema, table.name)
