"""The dead-letter queue as a table in the target: ``_replicator.dlq``.

The default with a PostgreSQL sink. New entries, and the status of replayed ones, are written
by the sink in the same transaction as the data and the checkpoint, so an entry exists exactly
when the checkpoint has moved past its event (nothing lost, nothing twice). The CLI's
requests (replay, discard) are plain updates the running pipeline picks up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.checkpoints.postgres import SCHEMA
from replicator.dlq.entry import PENDING, REPLAY, DeadLetter, Resolution
from replicator.dlq.store import DeadLetterStore
from replicator.errors import SinkConnectionError, SinkError
from replicator.events import Op, TableId
from replicator.observability.redaction import redact
from replicator.pgsession import connection_lost, connection_string, login_refused

DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.dlq (
    id bigserial PRIMARY KEY,
    pipeline text NOT NULL,
    entry_key text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'replay', 'replayed', 'discarded', 'superseded')),
    kind text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    op text NOT NULL,
    key jsonb,
    event jsonb NOT NULL,
    error text NOT NULL,
    sqlstate text,
    rule text,
    attempts int NOT NULL DEFAULT 1,
    position jsonb NOT NULL,
    order_key numeric[] NOT NULL,
    held_behind text,
    created_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolved_by text,
    note text,
    UNIQUE (pipeline, entry_key)
);
CREATE INDEX IF NOT EXISTS dlq_open ON {SCHEMA}.dlq (pipeline, order_key)
    WHERE status IN ('pending', 'replay');
"""

_COLUMNS = (
    "id, pipeline, entry_key, status, kind, table_schema, table_name, op, key, event, error,"
    " sqlstate, rule, attempts, position, order_key::text, held_behind, created_at,"
    " resolved_at, resolved_by, note"
)
_TABLE = sql.Identifier(SCHEMA, "dlq")


def insert_statement(entries: Sequence[DeadLetter]) -> sql.Composed:
    """Write new entries (values inlined, to travel with the checkpoint); an entry written
    before (the same event failing again after a restart) counts one more attempt."""
    rows = sql.SQL(", ").join(
        sql.SQL("({})").format(
            sql.SQL(", ").join(
                sql.Literal(v)
                for v in (
                    e.pipeline,
                    e.entry_key,
                    e.kind,
                    e.table.schema,
                    e.table.name,
                    e.op.name.lower(),
                    json.dumps(e.key) if e.key is not None else None,
                    json.dumps(e.event),
                    e.error,
                    e.sqlstate,
                    e.rule,
                    e.attempts,
                    json.dumps(e.position),
                    "{" + ",".join(map(str, e.order_key)) + "}",
                    e.held_behind,
                )
            )
        )
        for e in entries
    )
    return sql.SQL(
        "INSERT INTO {} AS d (pipeline, entry_key, kind, table_schema, table_name, op, key,"
        " event, error, sqlstate, rule, attempts, position, order_key, held_behind)"
        " SELECT pipeline, entry_key, kind, table_schema, table_name, op, key::jsonb,"
        " event::jsonb, error, sqlstate, rule, attempts, position::jsonb,"
        " order_key::numeric[], held_behind FROM (VALUES {}) AS v(pipeline, entry_key, kind,"
        " table_schema, table_name, op, key, event, error, sqlstate, rule, attempts, position,"
        " order_key, held_behind)"
        " ON CONFLICT (pipeline, entry_key) DO UPDATE SET attempts = d.attempts + 1,"
        " error = EXCLUDED.error, status = 'pending'"
    ).format(_TABLE, rows)


def resolve_statement(pipeline: str, resolutions: Iterable[Resolution]) -> sql.Composed:
    """Apply status changes (replayed, superseded, back to pending) inside the caller's
    transaction, values inlined."""
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}, {})").format(
            sql.Literal(r.entry_key), sql.Literal(r.status), sql.Literal(r.note)
        )
        for r in resolutions
    )
    return sql.SQL(
        "UPDATE {} AS d SET status = v.status, note = coalesce(v.note, d.note),"
        " resolved_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,"
        " resolved_by = 'replicator' FROM (VALUES {}) AS v(entry_key, status, note)"
        " WHERE d.pipeline = {} AND d.entry_key = v.entry_key"
    ).format(_TABLE, rows, sql.Literal(pipeline))


class TableDeadLetterStore(DeadLetterStore):
    """Reads and operator updates of ``_replicator.dlq`` (the sink writes new entries)."""

    in_target = True

    def __init__(self, dsn: str, application_name: str = "replicator") -> None:
        self._dsn = dsn
        self._app = application_name
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    connection_string(self._dsn, self._app), autocommit=True
                )
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('replicator.ddl'))")
                    self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                    self._conn.execute(DDL)
            except psycopg.Error as exc:
                raise _translate(exc) from exc
        return self._conn

    def _query(self, query: sql.Composable | str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            cur = self._connection().execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def add(self, entries: Sequence[DeadLetter]) -> None:
        """Write entries now (for the CLI and tests; the pipeline writes through the sink)."""
        if entries:
            self._query(insert_statement(entries))

    def resolve(self, pipeline: str, resolutions: Sequence[Resolution]) -> None:
        """Apply status changes now (the pipeline's own go through the sink)."""
        if resolutions:
            self._query(resolve_statement(pipeline, resolutions))

    def failed_again(self, entries: Sequence[DeadLetter]) -> None:
        """Back to pending with one more attempt (the insert's conflict rule does it)."""
        self.add(entries)

    def open_entries(self, pipeline: str) -> list[DeadLetter]:
        """Entries still holding their key (pending, or waiting to be replayed), in source
        order."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM {SCHEMA}.dlq WHERE pipeline = %s"
            " AND status IN ('pending', 'replay') ORDER BY order_key, id",
            (pipeline,),
        )
        return [_entry(r) for r in rows]

    def entries(
        self,
        pipeline: str,
        *,
        status: str | None = None,
        table: TableId | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Entries, newest first, optionally only of one status or table."""
        where = [sql.SQL("pipeline = {}").format(sql.Literal(pipeline))]
        if status is not None:
            where.append(sql.SQL("status = {}").format(sql.Literal(status)))
        if table is not None:
            where.append(
                sql.SQL("table_schema = {} AND table_name = {}").format(
                    sql.Literal(table.schema), sql.Literal(table.name)
                )
            )
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY id DESC LIMIT {}").format(
            sql.SQL(_COLUMNS), _TABLE, sql.SQL(" AND ").join(where), sql.Literal(limit)
        )
        return [_entry(r) for r in self._query(query)]

    def get(self, pipeline: str, entry_id: int) -> DeadLetter | None:
        """One entry by its number."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM {SCHEMA}.dlq WHERE pipeline = %s AND id = %s",
            (pipeline, entry_id),
        )
        return _entry(rows[0]) if rows else None

    def mark(
        self, pipeline: str, ids: Sequence[int], status: str, by: str, note: str | None = None
    ) -> list[int]:
        """Set the status of open entries (replay or discard them); the ids changed."""
        rows = self._query(
            f"UPDATE {SCHEMA}.dlq SET status = %s, resolved_by = %s, note = coalesce(%s, note),"
            " resolved_at = CASE WHEN %s = 'replay' THEN NULL ELSE now() END"
            " WHERE pipeline = %s AND id = ANY(%s) AND status IN ('pending', 'replay')"
            " RETURNING id",
            (status, by, note, status, pipeline, list(ids)),
        )
        return sorted(r[0] for r in rows)

    def counts(self, pipeline: str) -> dict[str, int]:
        """Entries per status."""
        rows = self._query(
            f"SELECT status, count(*) FROM {SCHEMA}.dlq WHERE pipeline = %s GROUP BY status",
            (pipeline,),
        )
        return {status: int(n) for status, n in rows}

    def close(self) -> None:
        """Close the connection; idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _entry(row: tuple[Any, ...]) -> DeadLetter:
    (
        entry_id,
        pipeline,
        entry_key,
        status,
        kind,
        schema,
        name,
        op,
        key,
        event,
        error,
        sqlstate,
        rule,
        attempts,
        position,
        order_key,
        held_behind,
        created_at,
        resolved_at,
        resolved_by,
        note,
    ) = row
    return DeadLetter(
        pipeline=pipeline,
        kind=kind,
        table=TableId(schema, name),
        op=Op[op.upper()],
        key=key,
        event=event,
        error=error,
        position=position,
        order_key=tuple(int(n) for n in order_key.strip("{}").split(",") if n),
        attempts=attempts,
        sqlstate=sqlstate,
        rule=rule,
        held_behind=held_behind,
        status=status,
        id=entry_id,
        created_at=created_at,
        resolved_at=resolved_at,
        resolved_by=resolved_by,
        note=note,
        entry_key=entry_key,
    )


def _translate(exc: psycopg.Error) -> SinkError:
    message = redact(str(exc).strip())
    if connection_lost(exc):
        lost = SinkConnectionError(f"cannot reach the target's dead-letter queue: {message}")
        lost.transient = not login_refused(str(exc))
        return lost
    return SinkError(f"the dead-letter queue in the target failed: {message}")


__all__ = ["DDL", "PENDING", "REPLAY", "TableDeadLetterStore", "insert_statement"]
