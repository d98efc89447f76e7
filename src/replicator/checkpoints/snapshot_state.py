"""Snapshot bookkeeping kept in the target, next to the checkpoint.

``_replicator.snapshot_tables`` holds one row per table a pipeline copies (or has copied):
``requested`` (waiting for a copy), ``copying`` (a chunk plan exists), ``done`` (copied; its
``start_position`` says from where the stream applies its changes). ``_replicator.
snapshot_chunks`` holds the plan of a table being copied; a chunk's ``position`` is set in the
same transaction that commits its rows, so after a crash exactly the committed chunks count
as copied.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.contracts import Chunk, ChunkState, TableSnapshot
from replicator.events import Position, TableId

SCHEMA = "_replicator"

DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.snapshot_tables (
    pipeline text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    state text NOT NULL CHECK (state IN ('requested', 'copying', 'done')),
    shadow text,
    rows_estimated bigint,
    rows_copied bigint NOT NULL DEFAULT 0,
    start_position jsonb,
    until_position jsonb,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (pipeline, schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.snapshot_chunks (
    pipeline text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    chunk integer NOT NULL,
    lo bigint,
    hi bigint,
    position jsonb,
    rows bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, schema_name, table_name, chunk)
);
"""


def _key(pipeline: str, table: TableId) -> tuple[str, str, str]:
    return (pipeline, table.schema, table.name)


def load_tables(conn: psycopg.Connection[Any], pipeline: str) -> list[TableSnapshot]:
    """Every table with snapshot state for ``pipeline``, by name."""
    rows = conn.execute(
        f"SELECT schema_name, table_name, state, shadow, rows_estimated, rows_copied,"
        f" start_position, until_position, requested_at, started_at, finished_at"
        f" FROM {SCHEMA}.snapshot_tables WHERE pipeline = %s ORDER BY schema_name, table_name",
        (pipeline,),
    ).fetchall()
    return [
        TableSnapshot(TableId(r[0], r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])
        for r in rows
    ]


def request(
    conn: psycopg.Connection[Any], pipeline: str, tables: list[TableId], *, resync: bool
) -> None:
    """Ask for a (re-)copy of ``tables``, forgetting any earlier plan (caller's transaction).

    A re-sync copies into a shadow table that replaces the target's rows in one transaction,
    so readers never see the table half-copied.
    """
    for table in tables:
        _drop_plan(conn, pipeline, table)
        conn.execute(
            f"""
            INSERT INTO {SCHEMA}.snapshot_tables AS s
                (pipeline, schema_name, table_name, state, shadow, requested_at)
            VALUES (%s, %s, %s, 'requested', %s, clock_timestamp())
            ON CONFLICT (pipeline, schema_name, table_name) DO UPDATE SET
                state = 'requested', shadow = EXCLUDED.shadow, rows_estimated = NULL,
                rows_copied = 0, start_position = NULL, until_position = NULL,
                requested_at = clock_timestamp(), started_at = NULL, finished_at = NULL
            """,
            (*_key(pipeline, table), shadow_name(pipeline, table) if resync else None),
        )


def shadow_name(pipeline: str, table: TableId) -> str:
    """The shadow table a re-sync copies into (in the bookkeeping schema)."""
    digest = hashlib.sha1(f"{pipeline}\0{table.schema}\0{table.name}".encode()).hexdigest()
    return f"resync_{digest[:20]}"


def load_chunks(conn: psycopg.Connection[Any], pipeline: str, table: TableId) -> list[ChunkState]:
    """The table's chunk plan, in chunk order (empty when not planned yet)."""
    rows = conn.execute(
        f"SELECT chunk, lo, hi, position, rows FROM {SCHEMA}.snapshot_chunks"
        " WHERE pipeline = %s AND schema_name = %s AND table_name = %s ORDER BY chunk",
        _key(pipeline, table),
    ).fetchall()
    return [ChunkState(Chunk(r[0], r[1], r[2]), r[3], r[4]) for r in rows]


def save_plan(
    conn: psycopg.Connection[Any],
    pipeline: str,
    table: TableId,
    chunks: list[Chunk],
    rows_estimated: int | None,
    requested_at: datetime | None,
) -> None:
    """Replace the table's chunk plan and mark it ``copying`` (caller's transaction)."""
    _drop_plan(conn, pipeline, table)
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {SCHEMA}.snapshot_chunks"
            " (pipeline, schema_name, table_name, chunk, lo, hi) VALUES (%s, %s, %s, %s, %s, %s)",
            [(*_key(pipeline, table), c.number, c.lo, c.hi) for c in chunks],
        )
    # Unless the copy was asked for again meanwhile: that request must stay visible.
    conn.execute(
        f"UPDATE {SCHEMA}.snapshot_tables SET state = 'copying', rows_estimated = %s,"
        " rows_copied = 0, started_at = now()"
        " WHERE pipeline = %s AND schema_name = %s AND table_name = %s"
        " AND requested_at IS NOT DISTINCT FROM %s",
        (rows_estimated, *_key(pipeline, table), requested_at),
    )


def chunk_done_statement(
    pipeline: str, table: TableId, chunk: Chunk, position: Position, rows: int
) -> sql.Composed:
    """Marks a chunk copied; runs in the transaction that commits its rows."""
    return sql.SQL(
        "UPDATE {}.snapshot_chunks SET position = {}, rows = {}"
        " WHERE pipeline = {} AND schema_name = {} AND table_name = {} AND chunk = {}"
    ).format(
        sql.Identifier(SCHEMA),
        sql.Literal(json.dumps(position.to_json())),
        sql.Literal(rows),
        *(sql.Literal(v) for v in _key(pipeline, table)),
        sql.Literal(chunk.number),
    )


def finish(
    conn: psycopg.Connection[Any],
    pipeline: str,
    table: TableId,
    start: dict[str, Any],
    until: dict[str, Any],
    requested_at: datetime | None,
) -> bool:
    """Mark the table copied (caller's transaction, together with any shadow swap).

    Returns False, leaving the table waiting, when a new copy was requested since this one
    was planned: that request is served by the next round instead of being lost.
    """
    done = conn.execute(
        f"""
        UPDATE {SCHEMA}.snapshot_tables SET state = 'done', shadow = NULL,
            start_position = %s, until_position = %s, finished_at = now(),
            rows_copied = (SELECT coalesce(sum(rows), 0) FROM {SCHEMA}.snapshot_chunks c
                           WHERE c.pipeline = %s AND c.schema_name = %s AND c.table_name = %s)
        WHERE pipeline = %s AND schema_name = %s AND table_name = %s
          AND requested_at IS NOT DISTINCT FROM %s
        """,
        (
            json.dumps(start),
            json.dumps(until),
            *_key(pipeline, table),
            *_key(pipeline, table),
            requested_at,
        ),
    ).rowcount
    if done:
        _drop_plan(conn, pipeline, table)
    return bool(done)


def record_progress(conn: psycopg.Connection[Any], pipeline: str, rows: dict[TableId, int]) -> None:
    """Store rows copied so far (committed and in flight), for ``replicator status``."""
    with conn.cursor() as cur:
        cur.executemany(
            f"UPDATE {SCHEMA}.snapshot_tables SET rows_copied = %s"
            " WHERE pipeline = %s AND schema_name = %s AND table_name = %s AND state <> 'done'",
            [(n, *_key(pipeline, t)) for t, n in rows.items()],
        )


def forget(conn: psycopg.Connection[Any], pipeline: str) -> None:
    """Remove the pipeline's snapshot state."""
    conn.execute(f"DELETE FROM {SCHEMA}.snapshot_chunks WHERE pipeline = %s", (pipeline,))
    conn.execute(f"DELETE FROM {SCHEMA}.snapshot_tables WHERE pipeline = %s", (pipeline,))


def _drop_plan(conn: psycopg.Connection[Any], pipeline: str, table: TableId) -> None:
    conn.execute(
        f"DELETE FROM {SCHEMA}.snapshot_chunks"
        " WHERE pipeline = %s AND schema_name = %s AND table_name = %s",
        _key(pipeline, table),
    )
