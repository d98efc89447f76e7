"""The PostgreSQL sink: set-based apply, whole source transactions, checkpoint in the same
transaction as the data (exactly-once effect, DESIGN invariants 1-3).

Per batch and table, changes are folded to their net effect (:mod:`.fold`), the survivors are
COPYed into a temporary staging table, and one ``INSERT … ON CONFLICT`` plus one ``DELETE …
USING`` apply them: a handful of round trips per table, never one per row. Tables without a
key cannot be folded (duplicates are legal), so their changes are applied in order, each update
or delete touching exactly one matching row.

A batch without ``commit`` is a chunk of a transaction too large for memory: it is applied
but the target transaction stays open until the batch that ends the source transaction.

A batch costs, besides each table's COPY into staging: one round trip for the checks (every
table's lost-TOAST-origin check and, with a Kafka source, its staleness guard), skipped when
there is nothing to check, then one that sends every upsert and delete with the bookkeeping,
then COMMIT.

With a Kafka source (:class:`~replicator.sources.kafka.position.KafkaPosition`), several
consumers of one group apply to the target at once:

* the staleness guard (:mod:`.versions`) refuses events older than what a row already
  reflects, deletes and truncates included (invariant 2); :attr:`PostgresSink.stale_events`
  counts them, and the checkpoint's counters leave them out;
* the commit's offsets go to ``_replicator.kafka_offsets``, one row per partition, never moved
  back (a consumer that lost a partition still reports its older offset);
* the checkpoint row, which every consumer of the pipeline updates, is written last, so a
  consumer holds its lock only from that statement to COMMIT and consumers queue on it for
  no longer than one commit each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator import failpoints
from replicator.checkpoints.postgres import (
    checkpoint_statement,
    known_tables,
    offsets_statement,
    remember_table,
)
from replicator.config import PipelineConfig, PostgresSinkConfig
from replicator.contracts import ApplyStats, Batch, Problem, Severity, Sink, SinkCapabilities
from replicator.dlq import table as dlq_table
from replicator.errors import SchemaMismatchError, SinkError
from replicator.events import (
    ChangeEvent,
    Position,
    TableId,
    TableSchema,
    quote_ident,
)
from replicator.observability.logging import get_logger
from replicator.observability.metrics import STALE_EVENTS
from replicator.observability.tracing import step
from replicator.pgsession import IDENTITY_QUERY
from replicator.sinks.postgres import ddl
from replicator.sinks.postgres.appliers import Applier, KeyedApplier, KeylessApplier, Staged
from replicator.sinks.postgres.session import connect, translate
from replicator.sinks.postgres.snapshot_writer import PgSnapshotWriter
from replicator.sinks.postgres.versions import VersionTable, lock_table_ddl
from replicator.sources.kafka.position import KafkaPosition


class PostgresSink(Sink):
    """Keeps PostgreSQL tables an exact copy of the source's."""

    capabilities = SinkCapabilities(transactional_checkpoint=True, isolates_rejects=True)

    def __init__(self, pipeline: PipelineConfig) -> None:
        self._pipeline = pipeline
        self._conn: psycopg.Connection[Any] | None = None
        self._appliers: dict[TableId, Applier] = {}
        self._schemas: dict[TableId, TableSchema] = {}
        self._in_transaction = False
        self._open_stats = ApplyStats()
        self._open_transactions = 0
        self._log = get_logger(pipeline=pipeline.name, sink="postgres")
        # Consumers of a Kafka group may apply a key's events late or twice (invariant 2).
        sink = pipeline.sink
        assert isinstance(sink, PostgresSinkConfig)
        wanted = sink.staleness_guard == "always" or pipeline.source.type == "kafka"
        self._guarded = wanted and not pipeline.backfill
        self._stale_counter = STALE_EVENTS.labels(pipeline.name)
        self._unguarded_tables: set[TableId] = set()
        self.stale_events = 0
        """Events refused by the staleness guard as older than the target's rows (in
        committed batches)."""
        self._open_stale = 0

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # A COMMIT that returned must be durable before the source is acknowledged.
            self._conn = connect(self._pipeline, synchronous_commit=True)
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
            raise translate(exc, "checking the target") from exc
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
            raise translate(exc, "identifying the target") from exc
        return str(row[0]) if row else None

    def ensure_table(self, schema: TableSchema, replacing: bool = False) -> None:
        """Create the target table when missing; otherwise insist it matches the source."""
        conn = self._connection()
        try:
            target = ddl.read_table(conn, schema.table)
            self._check_identity(conn, schema, exists=target is not None, replacing=replacing)
            if target is None:
                # Other consumers of a Kafka group may be creating it right now.
                lock_table_ddl(conn, schema.table)
                target = ddl.read_table(conn, schema.table)
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
            guard = self._version_table(conn, schema, target)
            if not self._in_transaction:
                conn.commit()
        except psycopg.Error as exc:
            self._abort()
            raise translate(exc, f"preparing target table {schema.table}") from exc
        except SchemaMismatchError:
            if not self._in_transaction:
                conn.rollback()
            raise
        self._schemas[schema.table] = schema
        self._appliers[schema.table] = (
            KeyedApplier(schema, target, guard) if schema.key else KeylessApplier(schema, target)
        )

    def _version_table(
        self, conn: psycopg.Connection[Any], schema: TableSchema, target: ddl.TargetTable
    ) -> VersionTable | None:
        """The table's staleness guard, created when missing; None when unguarded."""
        if not self._guarded:
            return None
        if not schema.key:
            if schema.table not in self._unguarded_tables:
                self._unguarded_tables.add(schema.table)
                self._log.warning(
                    "table has no key: the staleness guard cannot tell a late change from a "
                    "new one, so its changes are applied as they arrive",
                    table=str(schema.table),
                )
            return None
        guard = VersionTable(
            schema.table, schema.key, [target.columns[k].type_name for k in schema.key]
        )
        guard.ensure(conn)
        return guard

    def _check_identity(
        self, conn: psycopg.Connection[Any], schema: TableSchema, exists: bool, replacing: bool
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
            if known_id != source_id and known == table and exists and not replacing:
                raise SchemaMismatchError(
                    f"table {table} was dropped and re-created in the source, but the target "
                    "still holds the rows of the old table",
                    fix=f"on the target, run: DROP TABLE {table.quoted}; then restart the "
                    "pipeline (it re-creates the table and, with snapshot: initial, copies "
                    "its rows)",
                )
        remember_table(conn, self._pipeline.name, source_id, table)

    def apply(self, batch: Batch, pipeline: str) -> Position | None:
        """Apply the batch; commit with the checkpoint when it ends a source transaction.

        A batch the target refuses (``SinkError.rejected``) leaves the target transaction as
        it was before the call, so that :meth:`isolate` can apply it without the culprits.
        """
        conn = self._connection()
        continuing = self._in_transaction and bool(batch.events)
        saved = self._savepoint(conn) if continuing else None
        try:
            self._in_transaction = True
            with step("apply"):
                deferred = self._stage_all(conn, batch.events)
            self._open_transactions += batch.transactions
            # The upserts and deletes share the checkpoint's round trip, so its span has them.
            with step("checkpoint"):
                if batch.commit is not None:
                    deferred.extend(self._bookkeeping(batch, pipeline))
                elif saved is not None:
                    deferred.append(sql.SQL("RELEASE SAVEPOINT replicator_batch"))
                if deferred:
                    self._execute(conn, deferred, "applying", batch.events)
                if batch.commit is None:
                    return None
                failpoints.fail("sink.before_commit")
                conn.commit()
        except SinkError as exc:
            if exc.rejected and saved is not None:
                self._back_to(conn, saved)
            else:
                self._abort()
            raise
        except psycopg.Error as exc:
            self._abort()
            error = translate(exc, "committing")
            # A deferred constraint refused the COMMIT: the transaction is gone, and
            # isolating rows needs it, so this one stops the pipeline with its message.
            error.rejected = False
            raise error from exc
        except BaseException:
            self._abort()
            raise
        if self._open_stale:
            self.stale_events += self._open_stale
            self._stale_counter.inc(self._open_stale)
            self._log.info(
                "refused stale changes: the target already reflects newer ones",
                events=self._open_stale,
                checkpoint=str(batch.commit.position),
            )
        self._end_transaction()
        return batch.commit.position

    def isolate(
        self,
        events: list[ChangeEvent],
        screen: Callable[[list[ChangeEvent]], list[ChangeEvent]],
        reject: Callable[[ChangeEvent, SinkError], None],
    ) -> None:
        """Apply what the target takes of ``events`` in the open transaction (see
        :meth:`Sink.isolate`), halving refused groups under savepoints down to the events
        refused: about twice the work of the batch, plus two round trips per halving."""
        conn = self._connection()
        self._in_transaction = True
        self._isolate(conn, events, screen, reject)

    def _isolate(
        self,
        conn: psycopg.Connection[Any],
        events: list[ChangeEvent],
        screen: Callable[[list[ChangeEvent]], list[ChangeEvent]],
        reject: Callable[[ChangeEvent, SinkError], None],
    ) -> None:
        events = screen(events)
        if not events:
            return
        saved = self._savepoint(conn)
        try:
            writes = self._stage_all(conn, events)
            writes.append(sql.SQL("RELEASE SAVEPOINT replicator_batch"))
            self._execute(conn, writes, "applying", events)
        except SinkError as exc:
            if not exc.rejected:
                self._abort()
                raise
            self._back_to(conn, saved)
            if len(events) == 1:
                reject(events[0], exc)
                return
            middle = len(events) // 2
            self._isolate(conn, events[:middle], screen, reject)
            self._isolate(conn, events[middle:], screen, reject)
        except BaseException:
            self._abort()
            raise

    def _stage_all(self, conn: psycopg.Connection[Any], events: list[ChangeEvent]) -> list[Any]:
        """Stage and check every table's events; the writes still to send (counted)."""
        staged: list[tuple[TableId, list[ChangeEvent], Applier, Staged]] = []
        # Statements that need no answer travel together in one round trip at the end.
        deferred: list[sql.Composable] = []
        groups = _group_by_table(events)
        if self._guarded:
            # One table order for every consumer: row locks are never taken crosswise.
            groups.sort(key=lambda group: group[0])
        for table, table_events in groups:
            applier = self._applier(table)
            try:
                staged.append((table, table_events, applier, applier.stage(conn, table_events)))
            except psycopg.Error as exc:
                raise translate(exc, f"applying changes to {table}", table_events) from exc
        self._check(conn, staged, events)
        for table, _, _, part in staged:
            _add(self._open_stats, part.stats)
            deferred.extend(part.writes)
            if part.stale:
                self._open_stale += part.stale
                self._log.debug("refused stale changes", table=str(table), events=part.stale)
        return deferred

    def _bookkeeping(self, batch: Batch, pipeline: str) -> list[sql.Composable]:
        """The statements that commit with the batch: DLQ entries, Kafka offsets, checkpoint."""
        assert batch.commit is not None
        statements: list[sql.Composable] = []
        if batch.dead_letters:
            statements.append(dlq_table.insert_statement(batch.dead_letters))
        if batch.resolved:
            statements.append(dlq_table.resolve_statement(pipeline, batch.resolved))
        position = batch.commit.position
        if isinstance(position, KafkaPosition) and position.offsets:
            statements.append(offsets_statement(pipeline, position))
        # Last: every consumer of a Kafka group updates this row (see the docstring).
        statements.append(
            checkpoint_statement(
                pipeline,
                position,
                commit_ts=batch.commit.commit_ts,
                transactions=self._open_transactions,
                stats=self._open_stats,
            )
        )
        return statements

    def _savepoint(self, conn: psycopg.Connection[Any]) -> _Saved:
        """Mark where a refused batch rolls back to, with the counters to restore."""
        try:
            conn.execute("SAVEPOINT replicator_batch")
        except psycopg.Error as exc:
            self._abort()
            raise translate(exc, "opening a savepoint") from exc
        stats = self._open_stats
        return _Saved(
            ApplyStats(stats.inserted, stats.updated, stats.deleted, stats.truncated),
            self._open_transactions,
            self._open_stale,
            set(self._appliers),
        )

    def _back_to(self, conn: psycopg.Connection[Any], saved: _Saved) -> None:
        """Undo everything since the savepoint; the transaction stays open."""
        try:
            conn.execute("ROLLBACK TO SAVEPOINT replicator_batch")
            conn.execute("RELEASE SAVEPOINT replicator_batch")
        except psycopg.Error as exc:
            self._abort()
            raise translate(exc, "rolling back to a savepoint") from exc
        self._open_stats = saved.stats
        self._open_transactions = saved.transactions
        self._open_stale = saved.stale
        for table in [t for t in self._appliers if t not in saved.appliers]:
            del self._appliers[table]  # its table or staging may be rolled back with it
        for applier in self._appliers.values():
            applier.rolled_back()

    def _check(
        self,
        conn: psycopg.Connection[Any],
        staged: list[tuple[TableId, list[ChangeEvent], Applier, Staged]],
        events: list[ChangeEvent],
    ) -> None:
        """Run every table's checks in one round trip and hand each table its answers."""
        checks = [c for *_, part in staged for c in part.checks]
        if not checks:
            return
        cur = self._execute(conn, checks, "checking", events)
        for _, _, applier, part in staged:
            if not part.checks:
                continue
            answers = []
            for _ in part.checks:
                answers.append(cur.fetchall())
                cur.nextset()
            applier.checked(part, answers)

    def _execute(
        self,
        conn: psycopg.Connection[Any],
        statements: list[sql.Composable],
        doing: str,
        events: list[ChangeEvent],
    ) -> psycopg.Cursor[Any]:
        """Send statements in one round trip; the cursor stands on the first one's result."""
        try:
            return conn.execute(sql.SQL(";\n").join(statements))
        except psycopg.Error as exc:
            table_name = exc.diag.table_name
            where = f"changes to {exc.diag.schema_name}.{table_name}" if table_name else "changes"
            raise translate(exc, f"{doing} {where}", events) from exc

    def snapshot_writer(self, pipeline: str) -> PgSnapshotWriter:
        """A copy worker's own connection to the target."""
        return PgSnapshotWriter(self._pipeline)

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

    def _applier(self, table: TableId) -> Applier:
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
        self._open_stale = 0
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


@dataclass(frozen=True, slots=True)
class _Saved:
    """What a savepoint restores besides the data."""

    stats: ApplyStats
    transactions: int
    stale: int
    appliers: set[TableId]


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
