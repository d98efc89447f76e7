"""Consistent snapshots of a MySQL or MariaDB source, each with its binlog coordinates.

MariaDB (and Percona Server) report the binlog position a consistent-snapshot transaction
corresponds to (``binlog_snapshot_file`` / ``binlog_snapshot_position``), with no lock at
all: every chunk is read in a fresh ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and
carries its own position, so no transaction stays open for longer than one chunk. MySQL has
no such status: there a reader takes a brief ``FLUSH TABLES WITH READ LOCK`` just to open its
snapshot and read the coordinates, and reads all its chunks in that one snapshot.

Tables with a single integer key are split into key ranges; a chunk copied at position P is
joined by the stream from P, and a keyed table absorbs the replay of changes between its
chunks' positions exactly (full row images, upsert by key). Other tables are one chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql

from replicator.contracts import (
    COPY_POSTGRES_TEXT,
    Chunk,
    CopyStream,
    SnapshotReader,
    SnapshotSession,
    TablePlan,
)
from replicator.errors import SourceError
from replicator.events import TableId, TableSchema
from replicator.sources.mysql import catalog, copy_sql, server
from replicator.sources.mysql.columns import TypeOptions
from replicator.sources.mysql.position import MysqlPosition
from replicator.sources.mysql.protocol import result_lines

_CHUNKED_KEY_TYPES = ("smallint", "integer", "bigint")


def binlog_position(conn: Any, info: server.ServerInfo) -> MysqlPosition:
    """The current binlog coordinates, with the GTID state at them when the server has one."""
    rows = server.query(
        conn, server.binlog_status_statement(info), doing="reading the binlog position"
    )
    if not rows:
        raise SourceError(
            "the source has no binary log",
            fix="start the server with log_bin (and binlog_format = ROW)",
        )
    file, pos = str(rows[0][0]), int(rows[0][1])
    gtid = None
    statement = server.gtid_position_statement(info)
    if statement is not None:
        gtid = str(server.query(conn, statement, doing="reading the GTID position")[0][0] or "")
    return MysqlPosition(file, pos, _clean(gtid))


def _clean(gtid: str | None) -> str | None:
    return None if gtid is None else gtid.replace("\n", "").strip()


class MysqlSnapshotSession(SnapshotSession):
    """Plans chunks and opens readers; each reader's chunks carry their own positions."""

    def __init__(
        self, connect_args: dict[str, Any], info: server.ServerInfo, options: TypeOptions
    ) -> None:
        self._args = connect_args
        self._info = info
        self._options = options
        self._conn = server.connect(connect_args)
        self._lock_free: bool | None = None
        # Every chunk is read at or after this position (the readers open afterwards).
        self.position = binlog_position(self._conn, info)

    def plan(self, schema: TableSchema, chunk_rows: int) -> TablePlan:
        """Key ranges of about ``chunk_rows`` rows for a single integer key; else one chunk."""
        table = schema.table
        info = catalog.describe(self._conn, table)
        if info is None:
            raise SourceError(f"table {table} no longer exists in the source")
        estimate = info.rows_estimate
        keyed = bool(schema.key)
        single = (
            len(schema.key) == 1
            and schema.columns[schema.column_names.index(schema.key[0])].type_name
            in _CHUNKED_KEY_TYPES
        )
        if not single or not estimate or estimate <= chunk_rows:
            return TablePlan([Chunk(0)], estimate, resumable_by_chunk=keyed)
        key = copy_sql.quote(schema.key[0])
        low, high = server.query(
            self._conn,
            f"SELECT MIN({key}), MAX({key}) FROM {copy_sql.quote_table(table)}",
            doing=f"planning the copy of {table}",
        )[0]
        if low is None:
            return TablePlan([Chunk(0)], estimate, resumable_by_chunk=keyed)
        count = max(1, min(math.ceil(estimate / chunk_rows), int(high) - int(low) + 1))
        bounds = [int(low) + (int(high) - int(low) + 1) * i // count for i in range(count)]
        chunks = [
            Chunk(i, lo if i else None, bounds[i + 1] if i + 1 < count else None)
            for i, lo in enumerate(bounds)
        ]
        return TablePlan(chunks, estimate, resumable_by_chunk=True)

    def reader(self) -> MysqlSnapshotReader:
        """A connection of its own, reading chunks at consistent snapshots."""
        if self._lock_free is None:
            rows = server.query(
                self._conn, "SHOW STATUS LIKE 'binlog_snapshot_file'", doing="probing snapshots"
            )
            self._lock_free = bool(rows)
        return MysqlSnapshotReader(self._args, self._info, self._options, self._lock_free)

    def close(self) -> None:
        """Close the planning connection."""
        self._conn.close()


class MysqlSnapshotReader(SnapshotReader):
    """Reads chunks as PostgreSQL COPY text, each inside a consistent snapshot.

    After a failure it reconnects for the next chunk: every chunk's position is its own, so
    a chunk may always be read again at a new snapshot.
    """

    recovers = True

    def __init__(
        self,
        connect_args: dict[str, Any],
        info: server.ServerInfo,
        options: TypeOptions,
        lock_free: bool,
    ) -> None:
        self._args = connect_args
        self._info = info
        self._options = options
        self._lock_free = lock_free
        self._conn: Any = None
        self._described: dict[str, catalog.TableInfo] = {}
        self._position: MysqlPosition | None = None
        self._session()

    def _session(self) -> Any:
        """The connection, opened (again) and prepared when needed."""
        if self._conn is not None and self._conn.open:
            return self._conn
        self._position = None  # a locked snapshot ends with its connection
        conn = server.connect(self._args)
        try:
            for statement in (
                f"SET SESSION sql_mode = '{copy_sql.SESSION_SQL_MODE}'",
                # A worker waiting on a slow target stops reading mid-result for a while.
                "SET SESSION net_write_timeout = 3600",
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            ):
                server.query(conn, statement, doing="preparing the snapshot session")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _begin(self) -> MysqlPosition:
        """Open the snapshot the next chunk is read in; return its binlog coordinates."""
        if self._lock_free:
            server.query(
                self._conn,
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
                doing="starting a snapshot",
            )
            status = dict(
                server.query(
                    self._conn,
                    "SHOW STATUS LIKE 'binlog_snapshot_%'",
                    doing="reading the snapshot's binlog position",
                )
            )
            file = str(status["Binlog_snapshot_file"])
            pos = int(status["Binlog_snapshot_position"])
            gtid = status.get("Binlog_snapshot_gtid_executed")  # Percona Server
            if self._info.mariadb:
                gtid = server.query(
                    self._conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos), doing="GTIDs"
                )[0][0]
            return MysqlPosition(file, pos, _clean(None if gtid is None else str(gtid)))
        if self._position is None:
            self._position = self._locked_snapshot()
        return self._position

    def _locked_snapshot(self) -> MysqlPosition:
        """MySQL: hold a global read lock just while the snapshot opens and the coordinates
        are read, so nothing commits in between."""
        try:
            server.query(self._conn, "FLUSH TABLES WITH READ LOCK", doing="locking for a snapshot")
        except SourceError as exc:
            raise SourceError(
                f"taking a consistent snapshot needs a brief global read lock: {exc.message}",
                fix="GRANT RELOAD ON *.* TO the source user (MySQL reports no snapshot "
                "position without it)",
            ) from exc
        try:
            server.query(
                self._conn,
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
                doing="starting a snapshot",
            )
            return binlog_position(self._conn, self._info)
        finally:
            server.query(self._conn, "UNLOCK TABLES", doing="unlocking after the snapshot")

    @contextmanager
    def copy(
        self, schema: TableSchema, chunk: Chunk, formats: frozenset[str]
    ) -> Iterator[CopyStream]:
        """Stream the chunk's rows as COPY text lines, read at a snapshot of their own."""
        if COPY_POSTGRES_TEXT not in formats:
            raise SourceError("the sink takes no PostgreSQL COPY text; a MySQL copy needs it")
        table = schema.table
        self._session()
        info = self._describe(schema)
        where = []
        key = copy_sql.quote(schema.key[0]) if schema.key else ""
        if chunk.lo is not None:
            where.append(f"{key} >= {int(chunk.lo)}")
        if chunk.hi is not None:
            where.append(f"{key} < {int(chunk.hi)}")
        statement = copy_sql.select(table, info.columns, self._options, " AND ".join(where))
        position = self._begin()
        rows = _Rows(self._conn, statement, table)
        try:
            yield CopyStream(COPY_POSTGRES_TEXT, schema.column_names, iter(rows), position)
        except BaseException:
            self.close()  # the rest of the result is still coming: the connection is spent
            raise
        if not rows.finished:
            self.close()
            raise SourceError(f"the copy of {table} stopped before its last row")
        if self._lock_free:
            server.query(self._conn, "COMMIT", doing="ending the snapshot")

    def _describe(self, schema: TableSchema) -> catalog.TableInfo:
        """The table's columns, checked against the definition the copy was planned with."""
        name = str(schema.table)
        info = self._described.get(name)
        if info is None:
            found = catalog.describe(self._session(), schema.table)
            if found is None:
                raise SourceError(f"table {schema.table} no longer exists in the source")
            info = self._described[name] = found
        if tuple(c.name for c in info.columns) != schema.column_names:
            raise SourceError(
                f"table {schema.table} changed while it was being copied",
                fix="restart the pipeline; the copy starts over with the new definition",
            )
        return info

    def close(self) -> None:
        """Close the connection (ending any snapshot); safe to call more than once."""
        conn, self._conn = self._conn, None
        if conn is not None and conn.open:
            try:
                conn.close()
            except (pymysql.Error, OSError):
                pass  # already broken: closing is all that was left to do


class _Rows:
    """The COPY lines of one chunk's SELECT, read off the socket as they arrive."""

    def __init__(self, conn: Any, statement: str, table: TableId) -> None:
        self._conn = conn
        self._statement = statement
        self._table = table
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from result_lines(self._conn, self._statement)
        except pymysql.Error as exc:
            raise server.translate(exc, f"copying {self._table}") from exc
        except (OSError, ValueError) as exc:
            raise server.translate(exc, f"copying {self._table}") from exc
        self.finished = True
