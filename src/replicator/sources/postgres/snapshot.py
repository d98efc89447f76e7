"""Consistent snapshots of a PostgreSQL source, read with ``COPY … TO STDOUT``.

A snapshot comes from creating a logical replication slot with ``EXPORT_SNAPSHOT``: the
exported snapshot sees exactly the transactions that committed before the slot's consistent
point, and the slot streams exactly those that commit after it (the same pairing PostgreSQL's
own table-sync workers rely on). The pipeline's own slot provides it at creation; later copies
(after a restart, for a new table, for a re-sync) use a temporary slot that lives only as long
as the session. Readers import the snapshot (``SET TRANSACTION SNAPSHOT``) in REPEATABLE READ
transactions, so any number of them see the same data.

Tables are split into ranges of heap blocks (``ctid``), which PostgreSQL 14+ scans directly,
so one table's chunks can be copied in parallel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from replicator.contracts import (
    COPY_POSTGRES_BINARY,
    COPY_POSTGRES_TEXT,
    Chunk,
    CopyStream,
    SnapshotReader,
    SnapshotSession,
    TablePlan,
)
from replicator.errors import SourceConnectionError, SourceError
from replicator.events import TableSchema
from replicator.observability.redaction import redact
from replicator.pgsession import cannot_connect, connection_lost, connection_string
from replicator.sources.postgres.position import PgPosition
from replicator.sources.postgres.replication import ReplicationConnection

BINARY = COPY_POSTGRES_BINARY
TEXT = COPY_POSTGRES_TEXT

_FIRST_USER_OID = 16384  # FirstNormalObjectId: below it, every type is built in
_ROWS_PER_PAGE_GUESS = 60  # when the table was never analysed
_TID_RANGE_SCAN = 140000  # PostgreSQL 14 scans a ctid range directly
_COUNT_PAGES = 4096  # up to 32 MB, a never-analysed table's rows are counted for progress


class PgSnapshotSession(SnapshotSession):
    """An exported snapshot and the stream position it corresponds to."""

    def __init__(
        self,
        dsn: str,
        application_name: str,
        position: PgPosition,
        snapshot_name: str,
        exporter: ReplicationConnection | None,
    ) -> None:
        self.position = position
        self._dsn = dsn
        self._app = application_name
        self._name = snapshot_name
        self._exporter = exporter
        self._catalog: psycopg.Connection[Any] | None = None

    @classmethod
    def temporary(cls, dsn: str, application_name: str, slot: str) -> PgSnapshotSession:
        """A fresh snapshot from a temporary slot (dropped when the session closes)."""
        exporter = ReplicationConnection(dsn, application_name)
        name = f"{slot[:40]}_snap_{os.getpid()}"
        try:
            lsn, snapshot = exporter.create_slot(name, temporary=True, export_snapshot=True)
        except SourceError as exc:
            exporter.close()
            if exc.sqlstate == "53400":
                raise SourceError(
                    "cannot take a snapshot: every replication slot is in use (a copy needs "
                    "one temporary slot while it runs)",
                    fix="raise max_replication_slots on the source (needs a restart) or drop "
                    "unused slots",
                ) from exc
            raise
        except BaseException:
            exporter.close()
            raise
        assert snapshot is not None
        return cls(dsn, application_name, PgPosition(lsn), snapshot, exporter)

    def _conn(self) -> psycopg.Connection[Any]:
        # Autocommit, outside the snapshot: planning only estimates, and a transaction held
        # open here would keep table locks that make a source TRUNCATE, and every reader
        # queued behind it, wait for the whole round.
        if self._catalog is None or self._catalog.closed:
            self._catalog = _connect(self._dsn, self._app)
            self._catalog.autocommit = True
        return self._catalog

    def plan(self, schema: TableSchema, chunk_rows: int) -> TablePlan:
        """Split by heap blocks into chunks of about ``chunk_rows`` rows.

        Chunks copied at this snapshot may be kept when the rest of the table is copied at a
        later one only when replaying the changes in between is idempotent: the table has a
        key, and no TOAST table (so no update can arrive with a value left out as unchanged,
        which a row copied at the later snapshot could not supply).
        """
        assert schema.source_id is not None
        try:
            row = (
                self._conn()
                .execute(
                    """
                SELECT c.relkind, c.reltuples, c.reltoastrelid <> 0,
                       pg_relation_size(c.oid) / current_setting('block_size')::bigint,
                       (SELECT sum(greatest(p.reltuples, 0)) FROM pg_partition_tree(c.oid) t
                        JOIN pg_class p ON p.oid = t.relid),
                       current_setting('server_version_num')::int
                FROM pg_class c WHERE c.oid = %s
                """,
                    (int(schema.source_id),),
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise _translate(exc, f"planning the copy of {schema.table}") from exc
        if row is None:
            raise SourceError(f"table {schema.table} no longer exists in the source")
        kind, tuples, has_toast, pages, partition_tuples, version = row
        if kind == "p":
            return TablePlan([Chunk(0)], int(partition_tuples or 0), resumable_by_chunk=False)
        estimate = int(tuples) if tuples >= 0 else None
        if estimate is None and pages <= _COUNT_PAGES:
            estimate = self._count(schema)  # never analysed, and small enough to count
        rows = estimate if estimate is not None else pages * _ROWS_PER_PAGE_GUESS
        resumable = bool(schema.key) and not has_toast
        count = max(1, min(math.ceil(rows / chunk_rows), pages))
        if version < _TID_RANGE_SCAN:
            count = 1  # without TID range scans every chunk would read the whole table
        if count == 1:
            return TablePlan([Chunk(0)], estimate, resumable_by_chunk=resumable)
        bounds = [pages * i // count for i in range(count)]
        chunks = [
            Chunk(i, lo if i else None, bounds[i + 1] if i + 1 < count else None)
            for i, lo in enumerate(bounds)
        ]
        return TablePlan(chunks, estimate, resumable_by_chunk=resumable)

    def _count(self, schema: TableSchema) -> int | None:
        try:
            row = (
                self._conn()
                .execute(
                    sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.SQL(schema.table.quoted))
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise _translate(exc, f"counting the rows of {schema.table}") from exc
        return int(row[0]) if row else None

    def reader(self) -> PgSnapshotReader:
        """A connection inside the snapshot."""
        return PgSnapshotReader(_open(self._dsn, self._app, self._name))

    def close(self) -> None:
        """Close the catalog connection and release a temporary slot."""
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None


class PgSnapshotReader(SnapshotReader):
    """Copies chunks out of one REPEATABLE READ transaction that imported the snapshot."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._kinds: dict[str, str] = {}

    @contextmanager
    def copy(
        self, schema: TableSchema, chunk: Chunk, formats: frozenset[str]
    ) -> Iterator[CopyStream]:
        """Stream the chunk: binary when every column type is built in, text otherwise.

        Binary COPY data names element and field types by OID, which only built-in types
        share between two databases; text is read back under identical session settings.
        """
        binary = BINARY in formats and all(
            c.type_oid is not None and c.type_oid < _FIRST_USER_OID for c in schema.columns
        )
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in schema.column_names)
        table = sql.SQL(schema.table.quoted)
        only = sql.SQL("") if self._kind(schema) == "p" else sql.SQL("ONLY ")
        conditions = []
        if chunk.lo is not None:
            conditions.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({chunk.lo},0)")))
        if chunk.hi is not None:
            conditions.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({chunk.hi},0)")))
        where = (
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        )
        query = sql.SQL("COPY (SELECT {} FROM {}{}{}) TO STDOUT{}").format(
            columns, only, table, where, sql.SQL(" (FORMAT binary)" if binary else "")
        )
        try:
            with self._conn.cursor().copy(query) as copy:
                yield CopyStream(BINARY if binary else TEXT, schema.column_names, iter(copy))
        except psycopg.Error as exc:
            raise _translate(exc, f"copying {schema.table}") from exc

    def _kind(self, schema: TableSchema) -> str:
        oid = schema.source_id or ""
        kind = self._kinds.get(oid)
        if kind is None:
            row = self._conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", (int(oid),))
            found = row.fetchone()
            kind = self._kinds[oid] = str(found[0]) if found else "r"
        return kind

    def close(self) -> None:
        """End the transaction and close the connection."""
        self._conn.close()


def _connect(dsn: str, application_name: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(connection_string(dsn, application_name))
    except psycopg.Error as exc:
        raise cannot_connect(SourceConnectionError, "the source database", exc) from exc


def _open(dsn: str, application_name: str, snapshot: str) -> psycopg.Connection[Any]:
    conn = _connect(dsn, application_name)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    except psycopg.Error as exc:
        conn.close()
        raise _translate(exc, "importing the snapshot") from exc
    return conn


def _translate(exc: psycopg.Error, doing: str) -> SourceError:
    message = redact(str(exc).strip())
    if connection_lost(exc):
        return SourceConnectionError(f"lost the connection to the source while {doing}: {message}")
    return SourceError(f"{doing} failed: {message}")
