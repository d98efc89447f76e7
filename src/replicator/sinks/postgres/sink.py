"""The PostgreSQL sink: set-based apply, whole source transactions, checkpoint in the same
transaction as the data (exactly-once effect, DESIGN invariants 1-3).

Per batch and table, changes are folded to their net effect (:mod:`.fold`), the survivors are
COPYed into a temporary staging table, and one ``INSERT … ON CONFLICT`` plus one ``DELETE …
USING`` apply them: a handful of round trips per table, never one per row. Tables without a
key cannot be folded (duplicates are legal), so their changes are applied in order, each update
or delete touching exactly one matching row.

A batch without ``commit`` is a chunk of a transaction too large for memory: it is applied
but the target transaction stays open until the batch that ends the source transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.checkpoints.postgres import checkpoint_statement, known_tables, remember_table
from replicator.config import PipelineConfig
from replicator.contracts import ApplyStats, Batch, Problem, Severity, Sink, SinkCapabilities
from replicator.errors import SchemaMismatchError, SinkConnectionError, SinkError
from replicator.events import (
    UNCHANGED,
    ChangeEvent,
    Op,
    Position,
    TableId,
    TableSchema,
    quote_ident,
)
from replicator.observability.logging import get_logger
from replicator.observability.redaction import redact
from replicator.pgsession import IDENTITY_QUERY, connection_string
from replicator.sinks.postgres import ddl
from replicator.sinks.postgres.copy_format import copy_row, format_value
from replicator.sinks.postgres.fold import FoldedTable, fold_changes

# Types without an equality operator: rows are matched on their text form instead.
_TEXT_COMPARED = {"json", "xml", "point", "lseg", "box", "path", "polygon", "line", "circle"}

_staging_names = itertools.count(1)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _table(table: TableId) -> sql.Composable:
    return sql.Identifier(table.schema, table.name)


class _KeyedTable:
    """Applies folded changes to a table with a key, through a staging table."""

    def __init__(self, schema: TableSchema, target: ddl.TargetTable) -> None:
        self.schema = schema
        self.columns = schema.column_names
        self.key = schema.key
        self.key_index = [self.columns.index(k) for k in self.key]
        self.staging = f"_replicator_stage_{next(_staging_names)}"
        self.created = False
        self.used_in_transaction = False
        types = [target.columns[c].storage_type for c in self.columns]
        key_types = [types[i] for i in self.key_index]
        spec = [f"c{i} {t}" for i, t in enumerate(types)]
        spec += [f"o{i} {t}" for i, t in enumerate(key_types)]
        spec += ['op "char"', "unch int2[]"]
        self.create_sql = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.staging} ({', '.join(spec)})"
            " ON COMMIT DELETE ROWS"
        )
        names = [f"c{i}" for i in range(len(types))] + [f"o{i}" for i in range(len(key_types))]
        self.copy_sql = f"COPY {self.staging} ({', '.join(names)}, op, unch) FROM STDIN"
        self.target = _table(schema.table)
        self._upserts: dict[frozenset[str], sql.Composed] = {}
        key_match = sql.SQL(" AND ").join(
            sql.SQL("t.{} = s.{}").format(_ident(k), sql.SQL(f"c{i}"))
            for k, i in zip(self.key, self.key_index, strict=True)
        )
        self.delete_sql = sql.SQL("DELETE FROM {} t USING {} s WHERE s.op = 'd' AND {}").format(
            self.target, sql.SQL(self.staging), key_match
        )
        origin_match = sql.SQL(" AND ").join(
            sql.SQL("o.{} = s.o{}").format(_ident(k), sql.SQL(str(j)))
            for j, k in enumerate(self.key)
        )
        self.origin_join = sql.SQL("LEFT JOIN {} o ON {}").format(self.target, origin_match)
        self.missing_origin_sql = sql.SQL(
            "SELECT {} FROM {} s WHERE s.op = 'u' AND s.unch IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM {} o WHERE {}) LIMIT 3"
        ).format(
            sql.SQL(", ").join(sql.SQL(f"s.o{j}::text") for j in range(len(self.key))),
            sql.SQL(self.staging),
            self.target,
            origin_match,
        )

    def upsert_sql(self, unchanged: frozenset[str]) -> sql.Composed:
        cached = self._upserts.get(unchanged)
        if cached is not None:
            return cached
        selected: list[sql.Composable] = []
        for i, column in enumerate(self.columns):
            if column in unchanged:
                # Keep the target's value: read from the row where it lived at batch start.
                selected.append(
                    sql.SQL(
                        "CASE WHEN s.unch @> ARRAY[{}]::int2[] THEN o.{} ELSE s.c{} END"
                    ).format(sql.Literal(i), _ident(column), sql.SQL(str(i)))
                )
            else:
                selected.append(sql.SQL(f"s.c{i}"))
        others = [c for c in self.columns if c not in self.key]
        if others:
            conflict = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(_ident(c), _ident(c)) for c in others
                )
            )
        else:
            conflict = sql.Composed([sql.SQL("DO NOTHING")])
        statement = sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM {} s {} WHERE s.op = 'u' ON CONFLICT ({}) {}"
        ).format(
            self.target,
            sql.SQL(", ").join(_ident(c) for c in self.columns),
            sql.SQL(", ").join(selected),
            sql.SQL(self.staging),
            self.origin_join if unchanged else sql.SQL(""),
            sql.SQL(", ").join(_ident(k) for k in self.key),
            conflict,
        )
        self._upserts[unchanged] = statement
        return statement

    def apply(
        self, conn: psycopg.Connection[Any], events: list[ChangeEvent], deferred: list[Any]
    ) -> ApplyStats:
        """Stage the net effect now; queue the upsert and delete on ``deferred``."""
        folded = fold_changes(events, self.key)
        if folded.truncate:
            conn.execute(sql.SQL("TRUNCATE {}").format(self.target))
        if folded.upserts or folded.deletes:
            self._stage(conn, folded, deferred)
        return folded.stats

    def _stage(
        self, conn: psycopg.Connection[Any], folded: FoldedTable, deferred: list[Any]
    ) -> None:
        if not self.created:
            conn.execute(self.create_sql)
            self.created = True
        if self.used_in_transaction:
            conn.execute(f"TRUNCATE {self.staging}")
        self.used_in_transaction = True
        unchanged: set[str] = set()
        width = len(self.columns)
        lines = []
        no_origin = [None] * len(self.key)
        for row in folded.upserts:
            values = row.values
            ordered = [values[c] for c in self.columns]
            missing = [i for i, v in enumerate(ordered) if v is UNCHANGED]
            if missing:
                if row.origin is None:
                    raise SinkError(
                        f"{self.schema.table}: a row's unchanged TOASTed value cannot be "
                        "recovered because the row is new in this batch",
                    )
                unchanged.update(self.columns[i] for i in missing)
                for i in missing:
                    ordered[i] = None
                lines.append(copy_row([*ordered, *row.origin, "u", missing]))
            else:
                lines.append(copy_row([*ordered, *no_origin, "u", None]))
        for key in folded.deletes:
            ordered = [None] * width
            for i, value in zip(self.key_index, key, strict=True):
                ordered[i] = value
            lines.append(copy_row([*ordered, *no_origin, "d", None]))
        with conn.cursor().copy(self.copy_sql) as copy:
            copy.write("".join(lines))
        if unchanged:
            lost = conn.execute(self.missing_origin_sql).fetchall()
            if lost:
                keys = "; ".join(", ".join(str(v) for v in r) for r in lost)
                raise SinkError(
                    f"{self.schema.table}: an update left TOASTed values unchanged, but the row "
                    f"({', '.join(self.key)}) = ({keys}) is missing from the target, so those "
                    "values are unknown: the target is not a copy of the source",
                    fix="re-copy the table from the source (the initial snapshot), then resume",
                )
        # Upsert before delete: the upsert reads unchanged values from rows the delete removes.
        if folded.upserts:
            deferred.append(self.upsert_sql(frozenset(unchanged)))
        if folded.deletes:
            deferred.append(self.delete_sql)

    def end_transaction(self) -> None:
        self.used_in_transaction = False


class _KeylessTable:
    """Applies changes to a table without a key in order, one matching row at a time."""

    def __init__(self, schema: TableSchema, target: ddl.TargetTable) -> None:
        self.schema = schema
        self.columns = schema.column_names
        self.target = _table(schema.table)
        columns = sql.SQL(", ").join(_ident(c) for c in self.columns)
        self.copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(self.target, columns)
        matches = []
        for i, column in enumerate(self.columns):
            base = target.columns[column].storage_type.removesuffix("[]").split("(")[0]
            cast = sql.SQL("::text") if base in _TEXT_COMPARED else sql.SQL("")
            matches.append(
                sql.SQL("{}{} IS NOT DISTINCT FROM {}").format(
                    _ident(column), cast, sql.Placeholder(f"o{i}")
                )
            )
        # ctid pins exactly one of possibly several identical rows (invariant 2).
        one_row = sql.SQL("ctid = (SELECT ctid FROM {} WHERE {} LIMIT 1)").format(
            self.target, sql.SQL(" AND ").join(matches)
        )
        new_values = sql.SQL(", ").join(sql.Placeholder(f"n{i}") for i in range(len(self.columns)))
        # Like an upsert on a keyed table: when the old row is missing from the target (it
        # predates the pipeline), the new version is inserted rather than silently dropped.
        self.update_sql = sql.SQL(
            "WITH changed AS (UPDATE {} SET ({}) = ROW({}) WHERE {} RETURNING 1)"
            " INSERT INTO {} ({}) SELECT {} WHERE NOT EXISTS (SELECT 1 FROM changed)"
        ).format(self.target, columns, new_values, one_row, self.target, columns, new_values)
        self.delete_sql = sql.SQL("DELETE FROM {} WHERE {}").format(self.target, one_row)

    def apply(
        self, conn: psycopg.Connection[Any], events: list[ChangeEvent], deferred: list[Any]
    ) -> ApplyStats:
        """Apply in order, now (row order matters without a key)."""
        stats = ApplyStats()
        inserts: list[str] = []
        pending_op: Op | None = None
        params: list[dict[str, str | None]] = []

        def flush() -> None:
            if inserts:
                with conn.cursor().copy(self.copy_sql) as copy:
                    copy.write("".join(inserts))
                inserts.clear()
            if params:
                statement = self.update_sql if pending_op is Op.UPDATE else self.delete_sql
                with conn.cursor() as cur:
                    cur.executemany(statement, params)
                params.clear()

        for event in events:
            op = event.op
            if op is Op.INSERT or op is Op.READ:
                if params:
                    flush()
                assert event.after is not None
                inserts.append(copy_row([event.after[c] for c in self.columns]))
                stats.inserted += 1
                continue
            if op is Op.TRUNCATE:
                inserts.clear()
                params.clear()
                conn.execute(sql.SQL("TRUNCATE {}").format(self.target))
                stats.truncated += 1
                continue
            if event.before is None or any(c not in event.before for c in self.columns):
                raise SinkError(
                    f"{self.schema.table} has no key and its {op.name.lower()} carries no full "
                    "old row, so the row to change cannot be found",
                    fix=f"ALTER TABLE {self.schema.table.quoted} REPLICA IDENTITY FULL; "
                    "on the source",
                )
            if inserts or (params and pending_op is not op):
                flush()
            pending_op = op
            values = {f"o{i}": self._text(event.before[c]) for i, c in enumerate(self.columns)}
            if op is Op.UPDATE:
                assert event.after is not None
                after = event.after
                values.update({f"n{i}": self._text(after[c]) for i, c in enumerate(self.columns)})
                stats.updated += 1
            else:
                stats.deleted += 1
            params.append(values)
        flush()
        return stats

    def _text(self, value: Any) -> str | None:
        if value is UNCHANGED:
            raise SinkError(
                f"{self.schema.table}: an unchanged TOASTed value arrived without the old row",
                fix=f"ALTER TABLE {self.schema.table.quoted} REPLICA IDENTITY FULL; on the source",
            )
        return format_value(value)

    def end_transaction(self) -> None:
        pass


_Applier = _KeyedTable | _KeylessTable


class PostgresSink(Sink):
    """Keeps PostgreSQL tables an exact copy of the source's."""

    capabilities = SinkCapabilities(transactional_checkpoint=True)

    def __init__(self, pipeline: PipelineConfig) -> None:
        self._pipeline = pipeline
        self._dsn = pipeline.sink.dsn
        self._app = f"replicator:{pipeline.name}"[:63]
        self._conn: psycopg.Connection[Any] | None = None
        self._appliers: dict[TableId, _Applier] = {}
        self._schemas: dict[TableId, TableSchema] = {}
        self._in_transaction = False
        self._open_stats = ApplyStats()
        self._open_transactions = 0
        self._log = get_logger(pipeline=pipeline.name, sink="postgres")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    connection_string(
                        self._dsn.secret(), self._app, settings={"synchronous_commit": "on"}
                    )
                )
            except psycopg.Error as exc:
                raise SinkConnectionError(
                    f"cannot connect to the target database: {redact(str(exc).strip())}",
                    fix="check the sink DSN (host, port, database, user, password)",
                ) from exc
            # Staging tables and cached appliers belong to the old session.
            self._appliers.clear()
            self._in_transaction = False
        return self._conn

    # --- Sink contract ----------------------------------------------------------------------

    def preflight(self) -> list[Problem]:
        """Connectivity, write access, and that the target is not a read-only standby."""
        conn = self._connection()
        problems = []
        try:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), has_database_privilege(current_database(), 'CREATE'),"
                " current_user, current_database(),"
                " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '_replicator')"
            ).fetchone()
            conn.rollback()
        except psycopg.Error as exc:
            raise _translate(exc, "checking the target") from exc
        assert row is not None
        in_recovery, can_create, user, database, has_schema = row
        if in_recovery:
            problems.append(
                Problem(
                    Severity.ERROR,
                    "the target database is a read-only standby",
                    "point the sink DSN at the primary server",
                )
            )
        if not can_create:
            problems.append(
                Problem(
                    Severity.ERROR if not has_schema else Severity.WARNING,
                    f"role {user} may not create schemas in the target database {database}",
                    f'GRANT CREATE ON DATABASE "{database}" TO "{user}"; (needed for the '
                    "_replicator bookkeeping schema and for schemas of new tables)",
                )
            )
        return problems

    def identity(self) -> str | None:
        """Cluster system identifier and database name."""
        conn = self._connection()
        try:
            row = conn.execute(IDENTITY_QUERY).fetchone()
            if not self._in_transaction:
                conn.rollback()
        except psycopg.Error as exc:
            raise _translate(exc, "identifying the target") from exc
        return str(row[0]) if row else None

    def ensure_table(self, schema: TableSchema) -> None:
        """Create the target table when missing; otherwise insist it matches the source."""
        conn = self._connection()
        try:
            target = ddl.read_table(conn, schema.table)
            self._check_identity(conn, schema, exists=target is not None)
            if target is None:
                ddl.create_table(conn, schema)
                target = ddl.read_table(conn, schema.table)
                assert target is not None
                self._log.info("created target table", table=str(schema.table))
            problems = ddl.differences(schema, target)
            if problems:
                raise SchemaMismatchError(
                    f"table {schema.table} differs between source and target: "
                    + "; ".join(p for p, _ in problems),
                    fix="on the target, run: "
                    + " ".join(f for _, f in problems)
                    + " — then restart the pipeline",
                )
            if not self._in_transaction:
                conn.commit()
        except psycopg.Error as exc:
            self._abort()
            raise _translate(exc, f"preparing target table {schema.table}") from exc
        except SchemaMismatchError:
            if not self._in_transaction:
                conn.rollback()
            raise
        self._schemas[schema.table] = schema
        self._appliers[schema.table] = (
            _KeyedTable(schema, target) if schema.key else _KeylessTable(schema, target)
        )

    def _check_identity(
        self, conn: psycopg.Connection[Any], schema: TableSchema, exists: bool
    ) -> None:
        """Catch a source table renamed, or dropped and re-created, since the target copied it.

        Either would otherwise go unnoticed: the renamed table would get a second, partial copy
        under its new name, and the re-created one would keep the old table's rows.
        """
        source_id = schema.source_id
        if source_id is None:
            return
        table = schema.table
        for known_id, known in known_tables(conn, self._pipeline.name, source_id, table):
            if known_id == source_id and known != table and not exists:
                if ddl.read_table(conn, known) is None:
                    continue  # the old copy is gone: nothing to keep apart
                steps = []
                moved = known
                if known.schema != table.schema:
                    schema_name = quote_ident(table.schema)
                    steps.append(f"ALTER TABLE {known.quoted} SET SCHEMA {schema_name};")
                    moved = TableId(table.schema, known.name)
                if known.name != table.name:
                    steps.append(f"ALTER TABLE {moved.quoted} RENAME TO {quote_ident(table.name)};")
                raise SchemaMismatchError(
                    f"source table {known} was renamed to {table}; the target still has it as "
                    f"{known}",
                    fix="on the target, run: " + " ".join(steps) + " then restart the pipeline",
                )
            if known_id != source_id and known == table and exists:
                raise SchemaMismatchError(
                    f"table {table} was dropped and re-created in the source, but the target "
                    "still holds the rows of the old table",
                    fix=f"on the target, run: DROP TABLE {table.quoted}; then restart the "
                    "pipeline (it re-creates the table; rows the new source table received "
                    "before the pipeline captured it are not copied)",
                )
        remember_table(conn, self._pipeline.name, source_id, table)

    def apply(self, batch: Batch, pipeline: str) -> Position | None:
        """Apply the batch; commit with the checkpoint when it ends a source transaction."""
        conn = self._connection()
        # Statements that need no answer travel together in one round trip at the end.
        deferred: list[Any] = []
        try:
            self._in_transaction = True
            for table, events in _group_by_table(batch.events):
                applier = self._applier(table)
                try:
                    stats = applier.apply(conn, events, deferred)
                except psycopg.Error as exc:
                    raise _translate(exc, f"applying changes to {table}", events) from exc
                _add(self._open_stats, stats)
            self._open_transactions += batch.transactions
            if batch.commit is not None:
                deferred.append(
                    checkpoint_statement(
                        pipeline,
                        batch.commit.position,
                        commit_ts=batch.commit.commit_ts,
                        transactions=self._open_transactions,
                        stats=self._open_stats,
                    )
                )
            if deferred:
                try:
                    conn.execute(sql.SQL(";\n").join(deferred))
                except psycopg.Error as exc:
                    table_name = exc.diag.table_name
                    where = (
                        f"changes to {exc.diag.schema_name}.{table_name}"
                        if table_name
                        else ("changes")
                    )
                    raise _translate(exc, f"applying {where}", batch.events) from exc
            if batch.commit is None:
                return None
            conn.commit()
        except psycopg.Error as exc:
            self._abort()
            raise _translate(exc, "committing") from exc
        except BaseException:
            self._abort()
            raise
        self._end_transaction()
        return batch.commit.position

    def rollback(self) -> None:
        """Abandon the open target transaction, if any."""
        self._abort()

    def close(self) -> None:
        """Roll back anything uncommitted and close the connection."""
        self._abort()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- internals --------------------------------------------------------------------------

    def _applier(self, table: TableId) -> _Applier:
        applier = self._appliers.get(table)
        if applier is None:
            schema = self._schemas.get(table)
            if schema is None:
                raise SinkError(f"no table definition known for {table}")
            self.ensure_table(schema)  # new session after a reconnect: rebuild staging
            applier = self._appliers[table]
        return applier

    def _end_transaction(self) -> None:
        self._in_transaction = False
        self._open_stats = ApplyStats()
        self._open_transactions = 0
        for applier in self._appliers.values():
            applier.end_transaction()

    def _abort(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error:
                self._conn.close()
        self._end_transaction()
        # Staging tables (and target tables) created in the rolled-back transaction are gone:
        # appliers are rebuilt, with their tables re-checked, on next use.
        self._appliers.clear()


def _group_by_table(events: Sequence[ChangeEvent]) -> list[tuple[TableId, list[ChangeEvent]]]:
    """Events per table, each table's events in commit order (tables are independent)."""
    groups: dict[TableId, list[ChangeEvent]] = {}
    for event in events:
        groups.setdefault(event.schema.table, []).append(event)
    return list(groups.items())


def _add(total: ApplyStats, part: ApplyStats) -> None:
    total.inserted += part.inserted
    total.updated += part.updated
    total.deleted += part.deleted
    total.truncated += part.truncated


def _translate(
    exc: psycopg.Error, doing: str, events: Sequence[ChangeEvent] | None = None
) -> SinkError:
    message = redact(str(exc).strip())
    code = exc.sqlstate or ""
    # No SQLSTATE on an OperationalError means libpq lost the connection; classes 08
    # (connection), 57P (shutdown, terminated) and 53 (resources) are worth a retry too.
    if (isinstance(exc, psycopg.OperationalError) and not code) or code.startswith(
        ("08", "57P", "53")
    ):
        return SinkConnectionError(f"lost the connection to the target while {doing}: {message}")
    where = ""
    if events:
        where = f" (source positions {events[0].position} to {events[-1].position})"
    return SinkError(f"{doing} failed{where}: {message}")
