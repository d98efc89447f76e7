"""The staleness guard's bookkeeping: per keyed target table, the version of each key.

Through Kafka a key's events can reach the target late or twice (a consumer that lost its
partition in a rebalance still applies its last batch; the new owner starts from the committed
offset). So that an older event never overwrites a newer row, deletes included (DESIGN
invariant 2), each keyed target table has a *version table* in ``_replicator``: the key columns
(the target's types) and ``version numeric[]``, the order key of the last event applied to that
key. A delete keeps its row there (a tombstone) so that a late insert of the key is refused.
Order keys may exceed 64 bits (SQL Server LSNs), hence ``numeric[]``, whose comparison is the
order keys' lexicographic one.

``_replicator.version_tables`` names the target table each version table belongs to (the
name is a hash: target names may be 63 bytes long already) and holds its *truncate watermark*:
a truncate at version P deletes the rows whose key has no version or one below P, and events
at or below P are stale from then on.

Concurrency between consumers of one group is settled by row locks, not by reading first:
the batch's versions are written with ``INSERT … ON CONFLICT DO UPDATE … WHERE stored <
new``, which locks each key's version row (waiting for a consumer holding it) and compares
with its latest committed value; only keys it wrote are applied. Keys are written in key order,
so two consumers never lock one table's keys in opposite orders. A truncate first takes a
SHARE ROW EXCLUSIVE lock on the version table, so it waits for every consumer that is writing
the table and the writers after it see its watermark.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import sql

from replicator.checkpoints.postgres import SCHEMA
from replicator.errors import SchemaMismatchError, SinkError
from replicator.events import TableId
from replicator.sinks.postgres import ddl

Version = tuple[int, ...]

_REGISTRY = sql.Identifier(SCHEMA, "version_tables")


def version_table_name(table: TableId) -> str:
    """``v_`` and a hash of the target table's name: unique, and short enough (34 bytes)."""
    digest = hashlib.blake2b(f"{table.schema}\0{table.name}".encode(), digest_size=16)
    return "v_" + digest.hexdigest()


def version_literal(version: Version) -> str:
    """The ``numeric[]`` text of an order key (also a valid COPY field)."""
    return "{" + ",".join(map(str, version)) + "}"


def lock_table_ddl(conn: psycopg.Connection[Any], table: TableId) -> None:
    """Serialise creating ``table`` (or its version table) with other consumers doing so."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('replicator.table'), hashtext(%s))", (str(table),)
    )


class VersionTable:
    """The version table of one keyed target table, and the guard's SQL for it."""

    def __init__(self, table: TableId, key: tuple[str, ...], key_types: list[str]) -> None:
        self.table = table
        self.key = key
        self.key_types = key_types
        self.name = version_table_name(table)
        self.relation = sql.Identifier(SCHEMA, self.name)

    # --- DDL -----------------------------------------------------------------------------

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the version table when missing (inside the caller's transaction); check it
        belongs to this table and has its key otherwise."""
        existing = self._read(conn)
        if existing is None:
            lock_table_ddl(conn, self.table)
            existing = self._read(conn)
        if existing is None:
            columns = [
                sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(t))
                for k, t in zip(self.key, self.key_types, strict=True)
            ]
            # Every change rewrites its key's row: room left in each page lets the update stay
            # on the page without touching the index (HOT), which keeps the table from bloating.
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} ({}, version numeric[] NOT NULL, PRIMARY KEY ({}))"
                    " WITH (fillfactor = 70)"
                ).format(
                    self.relation,
                    sql.SQL(", ").join(columns),
                    sql.SQL(", ").join(sql.Identifier(k) for k in self.key),
                )
            )
            conn.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    self.relation,
                    sql.Literal(
                        f"Replicator's staleness guard: order key of the last change applied "
                        f"to each key of {self.table}"
                    ),
                )
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version_table, schema_name, table_name) VALUES ({}, {}, {})"
                    " ON CONFLICT (version_table) DO NOTHING"
                ).format(
                    _REGISTRY,
                    sql.Literal(self.name),
                    sql.Literal(self.table.schema),
                    sql.Literal(self.table.name),
                )
            )
            return
        owner, have = existing
        if owner is not None and owner != self.table:
            raise SinkError(  # two names with one 128-bit hash: not expected to happen
                f"version table {SCHEMA}.{self.name} of {owner} would also serve {self.table}"
            )
        wanted = [*zip(self.key, self.key_types, strict=True), ("version", "numeric[]")]
        if have != wanted:
            raise SchemaMismatchError(
                f"the staleness guard's version table {SCHEMA}.{self.name} of {self.table} "
                f"has columns ({', '.join(f'{n} {t}' for n, t in have)}), but the table's "
                f"key is now ({', '.join(f'{n} {t}' for n, t in wanted[:-1])})",
                fix=f"on the target, run: DROP TABLE {SCHEMA}.{self.name}; then restart the "
                "pipeline (the guard starts over for this table: until each key changes "
                "again, a late older change to it is applied)",
            )

    def _read(
        self, conn: psycopg.Connection[Any]
    ) -> tuple[TableId | None, list[tuple[str, str]]] | None:
        target = ddl.read_table(conn, TableId(SCHEMA, self.name))
        if target is None:
            return None
        row = conn.execute(
            sql.SQL("SELECT schema_name, table_name FROM {} WHERE version_table = {}").format(
                _REGISTRY, sql.Literal(self.name)
            )
        ).fetchone()
        owner = TableId(row[0], row[1]) if row else None
        return owner, [(c.name, c.type_name) for c in target.columns.values()]

    # --- per batch -----------------------------------------------------------------------

    def guard_sql(self, staging: str, key_columns: list[str]) -> sql.Composed:
        """Record the staged rows' versions where newer than the stored ones (or the
        watermark), and remove the other staged rows: the stale ones.

        Returns one row: stale staged rows, and the inserts, updates and deletes they stood
        for. ``key_columns`` name the staging columns holding the key.
        """
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in self.key)
        staged = sql.SQL(", ").join(sql.SQL(f"s.{c}") for c in key_columns)
        match = sql.SQL(" AND ").join(
            sql.SQL("f.{} = s.{}").format(sql.Identifier(k), sql.SQL(c))
            for k, c in zip(self.key, key_columns, strict=True)
        )
        return sql.SQL(
            "WITH fresh AS ("
            "INSERT INTO {relation} AS v ({keys}, version)"
            " SELECT {staged}, s.ver FROM {staging} s"
            " WHERE s.ver > coalesce((SELECT truncated FROM {registry}"
            " WHERE version_table = {name}), '{{}}')"
            " ORDER BY {staged}"
            " ON CONFLICT ({keys}) DO UPDATE SET version = EXCLUDED.version"
            " WHERE v.version < EXCLUDED.version"
            " RETURNING {returned}"
            "), stale AS ("
            "DELETE FROM {staging} s WHERE NOT EXISTS (SELECT FROM fresh f WHERE {match})"
            " RETURNING s.ni, s.nu, s.nd"
            ") SELECT count(*), coalesce(sum(ni), 0), coalesce(sum(nu), 0),"
            " coalesce(sum(nd), 0) FROM stale"
        ).format(
            relation=self.relation,
            keys=keys,
            staged=staged,
            staging=sql.SQL(staging),
            registry=_REGISTRY,
            name=sql.Literal(self.name),
            returned=sql.SQL(", ").join(
                sql.SQL("v.{}").format(sql.Identifier(k)) for k in self.key
            ),
            match=match,
        )

    def truncate(
        self, conn: psycopg.Connection[Any], target: sql.Composable, version: Version
    ) -> bool:
        """Apply a truncate at ``version``: delete the rows not changed after it, and make it
        the watermark. False when it is stale (the watermark is at or above it already)."""
        p = sql.Literal(version_literal(version))
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self.relation))
        row = conn.execute(
            sql.SQL(
                "WITH mark AS ("
                "INSERT INTO {registry} AS r (version_table, schema_name, table_name, truncated)"
                " VALUES ({name}, {schema}, {table}, {p}::numeric[])"
                " ON CONFLICT (version_table) DO UPDATE SET truncated = EXCLUDED.truncated"
                " WHERE r.truncated IS NULL OR r.truncated < EXCLUDED.truncated"
                " RETURNING 1"
                ") SELECT (SELECT count(*) FROM mark),"
                " EXISTS (SELECT FROM {relation} WHERE version >= {p}::numeric[])"
            ).format(
                registry=_REGISTRY,
                name=sql.Literal(self.name),
                schema=sql.Literal(self.table.schema),
                table=sql.Literal(self.table.name),
                p=p,
                relation=self.relation,
            )
        ).fetchone()
        assert row is not None
        fresh, newer_rows = row
        if not fresh:
            return False
        if not newer_rows:
            # Nothing was changed after the truncate: a real TRUNCATE is far cheaper.
            conn.execute(sql.SQL("TRUNCATE {}, {}").format(target, self.relation))
            return True
        match = sql.SQL(" AND ").join(
            sql.SQL("v.{k} = t.{k}").format(k=sql.Identifier(k)) for k in self.key
        )
        conn.execute(
            sql.SQL(
                "DELETE FROM {target} t WHERE NOT EXISTS (SELECT FROM {relation} v"
                " WHERE {match} AND v.version >= {p}::numeric[]);"
                "DELETE FROM {relation} WHERE version < {p}::numeric[]"
            ).format(target=target, relation=self.relation, match=match, p=p)
        )
        return True
