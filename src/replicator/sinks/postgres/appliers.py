"""Appliers: how one batch of changes to one target table is written.

:class:`KeyedApplier` folds a table's changes (:mod:`.fold`), COPYs the survivors into a
temporary staging table and queues one ``INSERT … ON CONFLICT`` plus one ``DELETE … USING``;
:class:`KeylessApplier` applies a table without a key in order, each update or delete touching
exactly one matching row.

Each applier's :meth:`stage` returns a :class:`Staged`: statements to check before writing
(run together with every other table's in one round trip), then the writes, which travel with
the checkpoint in the batch's last round trip. With a :class:`~.versions.VersionTable` (the
staleness guard), the check also drops the staged rows that are stale, under row locks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from replicator.contracts import ApplyStats
from replicator.errors import SinkError
from replicator.events import UNCHANGED, ChangeEvent, Op, TableId, TableSchema
from replicator.sinks.postgres import ddl
from replicator.sinks.postgres.copy_format import copy_row, format_value
from replicator.sinks.postgres.fold import FoldedTable, fold_changes
from replicator.sinks.postgres.versions import VersionTable, version_literal

# Types without an equality operator: rows are matched on their text form instead.
_TEXT_COMPARED = {"json", "xml", "point", "lseg", "box", "path", "polygon", "line", "circle"}

_staging_names = itertools.count(1)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _table(table: TableId) -> sql.Composable:
    return sql.Identifier(table.schema, table.name)


@dataclass(slots=True)
class Staged:
    """One table's share of a batch, staged: what to check first, and what to write then."""

    stats: ApplyStats
    checks: list[sql.Composable] = field(default_factory=list)
    """Statements whose rows :meth:`KeyedApplier.checked` reads (one round trip for all)."""
    writes: list[sql.Composable] = field(default_factory=list)
    """Statements that need no answer, sent with the checkpoint."""
    stale: int = 0
    """Events refused as older than what the target holds (not counted in ``stats``)."""
    unchanged: bool = False  # an upsert reads TOASTed values from the target


class KeyedApplier:
    """Applies folded changes to a table with a key, through a staging table."""

    def __init__(
        self, schema: TableSchema, target: ddl.TargetTable, guard: VersionTable | None = None
    ) -> None:
        self.schema = schema
        self.columns = schema.column_names
        self.key = schema.key
        self.key_index = [self.columns.index(k) for k in self.key]
        self.guard = guard
        self.staging = f"_replicator_stage_{next(_staging_names)}"
        self.created = False
        self.used_in_transaction = False
        types = [target.columns[c].storage_type for c in self.columns]
        key_types = [types[i] for i in self.key_index]
        spec = [f"c{i} {t}" for i, t in enumerate(types)]
        spec += [f"o{i} {t}" for i, t in enumerate(key_types)]
        spec += ['op "char"', "unch int2[]"]
        names = [f"c{i}" for i in range(len(types))] + [f"o{i}" for i in range(len(key_types))]
        names += ["op", "unch"]
        if guard is not None:
            # The row's version, and the inserts, updates and deletes it stands for.
            spec += ["ver numeric[]", "ni int4", "nu int4", "nd int4"]
            names += ["ver", "ni", "nu", "nd"]
            self.guard_sql = guard.guard_sql(self.staging, [f"c{i}" for i in self.key_index])
        self.create_sql = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.staging} ({', '.join(spec)})"
            " ON COMMIT DELETE ROWS"
        )
        self.copy_sql = f"COPY {self.staging} ({', '.join(names)}) FROM STDIN"
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

    def stage(self, conn: psycopg.Connection[Any], events: list[ChangeEvent]) -> Staged:
        """Fold the events and COPY their net effect into the staging table (a truncate is
        applied now); checks and writes follow."""
        guard = self.guard
        folded = fold_changes(events, self.key, versioned=guard is not None)
        staged = Staged(folded.stats, stale=folded.stale)
        if folded.truncate:
            if guard is None:
                conn.execute(sql.SQL("TRUNCATE {}").format(self.target))
            else:
                assert folded.truncate_version is not None
                if not guard.truncate(conn, self.target, folded.truncate_version):
                    staged.stale += folded.stats.truncated
                    folded.stats.truncated = 0
        if folded.upserts or folded.deletes:
            self._stage(conn, folded, staged)
        return staged

    def _stage(self, conn: psycopg.Connection[Any], folded: FoldedTable, staged: Staged) -> None:
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
        versioned = self.guard is not None
        versions = folded.versions
        counts = folded.counts
        no_counts = [0, 0, 0]
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
                fields = [*ordered, *row.origin, "u", missing]
            else:
                fields = [*ordered, *no_origin, "u", None]
            if versioned:
                fields.append(version_literal(versions[row.key]))
                fields.extend(counts.get(row.key, no_counts))
            lines.append(copy_row(fields))
        for key in folded.deletes:
            ordered = [None] * width
            for i, value in zip(self.key_index, key, strict=True):
                ordered[i] = value
            fields = [*ordered, *no_origin, "d", None]
            if versioned:
                fields.append(version_literal(versions[key]))
                fields.extend(counts.get(key, no_counts))
            lines.append(copy_row(fields))
        with conn.cursor().copy(self.copy_sql) as copy:
            copy.write("".join(lines))
        # Stale rows go first: a refused update must not trip the lost-origin check.
        if versioned:
            staged.checks.append(self.guard_sql)
        if unchanged:
            staged.checks.append(self.missing_origin_sql)
            staged.unchanged = True
        # Upsert before delete: the upsert reads unchanged values from rows the delete removes.
        if folded.upserts:
            staged.writes.append(self.upsert_sql(frozenset(unchanged)))
        if folded.deletes:
            staged.writes.append(self.delete_sql)

    def checked(self, staged: Staged, results: list[list[tuple[Any, ...]]]) -> None:
        """Take in the answers to ``staged.checks``: count stale rows, refuse lost origins."""
        answers = iter(results)
        if self.guard is not None and staged.checks:
            ((_rows, inserts, updates, deletes),) = next(answers)
            stats = staged.stats
            stats.inserted -= inserts
            stats.updated -= updates
            stats.deleted -= deletes
            staged.stale += inserts + updates + deletes
        if staged.unchanged:
            lost = next(answers)
            if lost:
                keys = "; ".join(", ".join(str(v) for v in r) for r in lost)
                raise SinkError(
                    f"{self.schema.table}: an update left TOASTed values unchanged, but the row "
                    f"({', '.join(self.key)}) = ({keys}) is missing from the target, so those "
                    "values are unknown: the target is not a copy of the source",
                    fix="re-copy the table: replicator snapshot -c FILE -p PIPELINE -t "
                    f"'{self.schema.table}' (the pipeline applies it when it runs again)",
                )

    def end_transaction(self) -> None:
        self.used_in_transaction = False

    def rolled_back(self) -> None:
        """The transaction rolled back to a savepoint: the staging table may be gone with it
        (created again if so), or hold rows (emptied before its next use)."""
        self.created = False
        self.used_in_transaction = True


class KeylessApplier:
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

    def stage(self, conn: psycopg.Connection[Any], events: list[ChangeEvent]) -> Staged:
        """Apply in order, now (row order matters without a key): nothing left to check."""
        return Staged(self._apply(conn, events))

    def checked(self, staged: Staged, results: list[list[tuple[Any, ...]]]) -> None:
        """Nothing was asked."""

    def _apply(self, conn: psycopg.Connection[Any], events: list[ChangeEvent]) -> ApplyStats:
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

    def rolled_back(self) -> None:
        """Nothing is staged."""


Applier = KeyedApplier | KeylessApplier
