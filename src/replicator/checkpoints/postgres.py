"""Checkpoints (and pipeline status) kept in tables of the PostgreSQL target.

The PostgreSQL sink writes the checkpoint row in the same transaction as the data it applied
(:func:`write_checkpoint`), which gives exactly-once effect: after a crash the target's data
and its checkpoint always agree. This store reads them back, and saves the positions written
outside a data transaction (a new slot's starting point).

A Kafka source's position is also kept per partition, in ``kafka_offsets``
(:func:`offsets_statement`, :func:`load_offsets`): the consumers of one group each commit the
partitions they hold, and none may overwrite another's. ``version_tables`` belongs to the
sink's staleness guard (:mod:`replicator.sinks.postgres.versions`).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.checkpoints import snapshot_state
from replicator.contracts import ApplyStats, Checkpoint, CheckpointStore, TableSnapshot
from replicator.errors import SinkConnectionError, SinkError
from replicator.events import Position, TableId
from replicator.observability.redaction import redact
from replicator.pgsession import TARGET_FIX, cannot_connect, connection_lost, connection_string
from replicator.sources.kafka.position import KafkaPosition, Partition

SCHEMA = "_replicator"

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.checkpoints (
    pipeline text PRIMARY KEY,
    position jsonb NOT NULL,
    source_commit_ts timestamptz,
    transactions bigint NOT NULL DEFAULT 0,
    rows_inserted bigint NOT NULL DEFAULT 0,
    rows_updated bigint NOT NULL DEFAULT 0,
    rows_deleted bigint NOT NULL DEFAULT 0,
    truncates bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.tables (
    pipeline text NOT NULL,
    source_id text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    PRIMARY KEY (pipeline, source_id)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.pipelines (
    pipeline text PRIMARY KEY,
    phase text NOT NULL,
    pid integer,
    host text,
    started_at timestamptz,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lag_seconds double precision,
    last_error text
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.kafka_offsets (
    pipeline text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, topic, partition)
);
-- The staleness guard: each target table's version table, and its last truncate's order key.
CREATE TABLE IF NOT EXISTS {SCHEMA}.version_tables (
    version_table text PRIMARY KEY,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    truncated numeric[],
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_name, table_name)
);
"""

_UPSERT = f"""
INSERT INTO {SCHEMA}.checkpoints AS c
    (pipeline, position, source_commit_ts, transactions, rows_inserted, rows_updated,
     rows_deleted, truncates, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (pipeline) DO UPDATE SET
    position = EXCLUDED.position,
    source_commit_ts = coalesce(EXCLUDED.source_commit_ts, c.source_commit_ts),
    transactions = c.transactions + EXCLUDED.transactions,
    rows_inserted = c.rows_inserted + EXCLUDED.rows_inserted,
    rows_updated = c.rows_updated + EXCLUDED.rows_updated,
    rows_deleted = c.rows_deleted + EXCLUDED.rows_deleted,
    truncates = c.truncates + EXCLUDED.truncates,
    updated_at = now()
"""


def ensure_tables(conn: psycopg.Connection[Any]) -> None:
    """Create the bookkeeping schema and tables when missing (serialised across pipelines)."""
    with conn.transaction():
        # Concurrent CREATE ... IF NOT EXISTS can still collide on the catalog's unique index.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('replicator.ddl'))")
        conn.execute(_DDL)
        conn.execute(snapshot_state.DDL)


def checkpoint_statement(
    pipeline: str,
    position: Position,
    *,
    commit_ts: datetime | None = None,
    transactions: int = 0,
    stats: ApplyStats | None = None,
) -> sql.Composed:
    """The statement that writes the checkpoint row, values inlined as SQL literals.

    Inlined so that it can travel in the same round trip as the batch's last statements.
    """
    s = stats or ApplyStats()
    values = (
        pipeline,
        json.dumps(position.to_json()),
        commit_ts,
        transactions,
        s.inserted,
        s.updated,
        s.deleted,
        s.truncated,
    )
    return sql.SQL(_UPSERT.replace("%s", "{}")).format(*(sql.Literal(v) for v in values))


def write_checkpoint(
    conn: psycopg.Connection[Any], pipeline: str, position: Position, **kwargs: Any
) -> None:
    """Write the checkpoint row (and a Kafka position's offsets) inside the caller's open
    transaction."""
    if isinstance(position, KafkaPosition) and position.offsets:
        conn.execute(offsets_statement(pipeline, position))
    conn.execute(checkpoint_statement(pipeline, position, **kwargs))


def offsets_statement(pipeline: str, position: KafkaPosition) -> sql.Composed:
    """The statement that stores a Kafka position's offsets, one row per partition, each
    only ever moved forward; values inlined, like :func:`checkpoint_statement`.

    A consumer that lost a partition to another still lists it, with an older offset: rows
    already at or past ours are left alone without even locking them, and rows are locked in
    one order (topic, partition) by every consumer.
    """
    rows = sql.SQL(", ").join(
        sql.SQL("({}::text, {}::int, {}::bigint)").format(
            sql.Literal(topic), sql.Literal(partition), sql.Literal(offset)
        )
        for (topic, partition), offset in sorted(position.offsets.items())
    )
    return sql.SQL(
        "INSERT INTO {offsets} AS o (pipeline, topic, partition, next_offset, updated_at)"
        " SELECT {pipeline}, n.topic, n.partition, n.next_offset, now()"
        " FROM (VALUES {rows}) AS n (topic, partition, next_offset)"
        " WHERE NOT EXISTS (SELECT FROM {offsets} s WHERE s.pipeline = {pipeline}"
        " AND s.topic = n.topic AND s.partition = n.partition"
        " AND s.next_offset >= n.next_offset)"
        " ORDER BY n.topic, n.partition"
        " ON CONFLICT (pipeline, topic, partition) DO UPDATE"
        " SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()"
    ).format(
        offsets=sql.Identifier(SCHEMA, "kafka_offsets"),
        pipeline=sql.Literal(pipeline),
        rows=rows,
    )


def load_offsets(
    conn: psycopg.Connection[Any], pipeline: str, partitions: Iterable[Partition]
) -> dict[Partition, int]:
    """The stored next offset of each of ``partitions`` that has one."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    rows = conn.execute(
        f"SELECT o.topic, o.partition, o.next_offset FROM {SCHEMA}.kafka_offsets o"
        " JOIN unnest(%s::text[], %s::int[]) AS w (topic, partition)"
        " ON w.topic = o.topic AND w.partition = o.partition"
        " WHERE o.pipeline = %s",
        ([t for t, _ in wanted], [p for _, p in wanted], pipeline),
    ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


def known_tables(
    conn: psycopg.Connection[Any], pipeline: str, source_id: str, table: TableId
) -> list[tuple[str, TableId]]:
    """Tables this pipeline wrote before with the same source identity or the same name."""
    rows = conn.execute(
        f"SELECT source_id, schema_name, table_name FROM {SCHEMA}.tables"
        " WHERE pipeline = %s AND (source_id = %s OR (schema_name = %s AND table_name = %s))",
        (pipeline, source_id, table.schema, table.name),
    ).fetchall()
    return [(r[0], TableId(r[1], r[2])) for r in rows]


def remember_table(
    conn: psycopg.Connection[Any], pipeline: str, source_id: str, table: TableId
) -> None:
    """Record which source table a target table copies (inside the caller's transaction)."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.tables WHERE pipeline = %s AND schema_name = %s"
        " AND table_name = %s AND source_id <> %s",
        (pipeline, table.schema, table.name, source_id),
    )
    conn.execute(
        f"INSERT INTO {SCHEMA}.tables (pipeline, source_id, schema_name, table_name)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (pipeline, source_id) DO UPDATE"
        " SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name",
        (pipeline, source_id, table.schema, table.name),
    )


class PostgresCheckpointStore(CheckpointStore):
    """Checkpoints in ``_replicator.checkpoints`` of the target database."""

    def __init__(self, dsn: str, application_name: str = "replicator") -> None:
        self._dsn = dsn
        self._app = application_name
        self._conn: psycopg.Connection[Any] | None = None
        self._ready = False

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    connection_string(self._dsn, self._app), autocommit=True
                )
            except psycopg.Error as exc:
                raise cannot_connect(
                    SinkConnectionError, "the target database", exc, TARGET_FIX
                ) from exc
            self._ready = False
        if not self._ready:
            try:
                ensure_tables(self._conn)
            except psycopg.Error as exc:
                if connection_lost(exc):
                    raise _translate(exc) from exc
                raise SinkError(
                    f"cannot create the {SCHEMA} bookkeeping tables in the target: "
                    f"{redact(str(exc).strip())}",
                    fix="grant the sink's role CREATE on the target database",
                ) from exc
            self._ready = True
        return self._conn

    def load(self, pipeline: str) -> Checkpoint | None:
        """The stored checkpoint with its counters, or None."""
        row = self._query(
            f"SELECT position, source_commit_ts, transactions, rows_inserted, rows_updated,"
            f" rows_deleted, truncates, updated_at FROM {SCHEMA}.checkpoints WHERE pipeline = %s",
            (pipeline,),
        )
        if not row:
            return None
        r = row[0]
        return Checkpoint(
            position=dict(r[0]),
            stats={
                "source_commit_ts": r[1],
                "transactions": r[2],
                "rows_inserted": r[3],
                "rows_updated": r[4],
                "rows_deleted": r[5],
                "truncates": r[6],
                "updated_at": r[7],
            },
        )

    def load_offsets(self, pipeline: str, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The stored next offset of each of ``partitions`` that has one (Kafka sources)."""
        try:
            return load_offsets(self._connection(), pipeline, partitions)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def save(self, pipeline: str, position: Position) -> None:
        """Store ``position`` (committed and durable on return)."""
        conn = self._connection()
        try:
            with conn.transaction():
                write_checkpoint(conn, pipeline, position)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def delete(self, pipeline: str) -> bool:
        """Remove the checkpoint (Kafka offsets included) and status rows; return whether a
        checkpoint existed.

        The staleness guard's version tables stay, like the target tables they describe.
        """
        conn = self._connection()
        try:
            with conn.transaction():
                cur = conn.execute(
                    f"DELETE FROM {SCHEMA}.checkpoints WHERE pipeline = %s", (pipeline,)
                )
                offsets = conn.execute(
                    f"DELETE FROM {SCHEMA}.kafka_offsets WHERE pipeline = %s", (pipeline,)
                )
                conn.execute(f"DELETE FROM {SCHEMA}.pipelines WHERE pipeline = %s", (pipeline,))
                conn.execute(f"DELETE FROM {SCHEMA}.tables WHERE pipeline = %s", (pipeline,))
                snapshot_state.forget(conn, pipeline)
                return cur.rowcount > 0 or offsets.rowcount > 0
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def report(
        self,
        pipeline: str,
        phase: str,
        *,
        lag_seconds: float | None = None,
        error: str | None = None,
        started: bool = False,
    ) -> None:
        """Record what the running pipeline is doing, for ``replicator status``."""
        self._query(
            f"""
            INSERT INTO {SCHEMA}.pipelines AS p
                (pipeline, phase, pid, host, started_at, heartbeat_at, lag_seconds, last_error)
            VALUES (%s, %s, %s, %s, now(), now(), %s, %s)
            ON CONFLICT (pipeline) DO UPDATE SET
                phase = EXCLUDED.phase, pid = EXCLUDED.pid, host = EXCLUDED.host,
                started_at = CASE WHEN %s THEN now() ELSE p.started_at END,
                heartbeat_at = now(), lag_seconds = EXCLUDED.lag_seconds,
                last_error = coalesce(EXCLUDED.last_error,
                                      CASE WHEN %s THEN NULL ELSE p.last_error END)
            """,
            (
                pipeline,
                phase,
                os.getpid(),
                socket.gethostname(),
                lag_seconds,
                redact(error) if error else None,
                started,
                started,
            ),
            fetch=False,
        )

    def read_status(self, pipeline: str) -> dict[str, Any] | None:
        """The last status the pipeline reported, with seconds since it did."""
        rows = self._query(
            f"SELECT phase, pid, host, started_at, heartbeat_at, lag_seconds, last_error,"
            f" extract(epoch FROM now() - heartbeat_at)"
            f" FROM {SCHEMA}.pipelines WHERE pipeline = %s",
            (pipeline,),
        )
        if not rows:
            return None
        r = rows[0]
        keys = (
            "phase",
            "pid",
            "host",
            "started_at",
            "heartbeat_at",
            "lag_seconds",
            "last_error",
            "heartbeat_age_s",
        )
        return dict(zip(keys, r, strict=True))

    def captured_tables(self, pipeline: str) -> list[TableId]:
        """Tables the pipeline has created or copied in the target."""
        rows = self._query(
            f"SELECT schema_name, table_name FROM {SCHEMA}.tables WHERE pipeline = %s"
            f" UNION SELECT schema_name, table_name FROM {SCHEMA}.snapshot_tables"
            " WHERE pipeline = %s",
            (pipeline, pipeline),
        )
        return [TableId(r[0], r[1]) for r in rows]

    def snapshot_tables(self, pipeline: str) -> list[TableSnapshot]:
        """Snapshot state of the pipeline's tables."""
        try:
            return snapshot_state.load_tables(self._connection(), pipeline)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def request_snapshot(self, pipeline: str, tables: list[TableId], *, resync: bool) -> None:
        """Queue a (re-)copy of ``tables`` for the pipeline to pick up."""
        conn = self._connection()
        try:
            with conn.transaction():
                snapshot_state.request(conn, pipeline, tables, resync=resync)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def record_snapshot_progress(self, pipeline: str, rows: dict[TableId, int]) -> None:
        """Rows copied so far per table."""
        conn = self._connection()
        try:
            with conn.transaction():
                snapshot_state.record_progress(conn, pipeline, rows)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _query(
        self, query: str, params: tuple[Any, ...], fetch: bool = True
    ) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            cur = conn.execute(query, params)
            return cur.fetchall() if fetch else []
        except psycopg.Error as exc:
            raise _translate(exc) from exc


def _translate(exc: psycopg.Error) -> SinkError:
    message = redact(str(exc).strip())
    if connection_lost(exc):
        return SinkConnectionError(f"lost the connection to the target: {message}")
    return SinkError(f"checkpoint storage failed: {message}")
