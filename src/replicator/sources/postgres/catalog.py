"""What the source database's catalog says: tables, keys, types, slots, publications.

All queries run on an ordinary (non-replication) connection, because a replication connection
cannot run catalog queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.events import Column, TableId, TableSchema, TypeDefinition
from replicator.pgsession import primary_key_columns
from replicator.sources.postgres import pgoutput
from replicator.sources.postgres.values import PgType

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


@dataclass(frozen=True, slots=True)
class SourceTable:
    """A table the pipeline captures, as the catalog describes it now."""

    oid: int
    table: TableId
    kind: str  # 'r' table, 'p' partitioned table
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    has_primary_key: bool
    owned: bool  # whether the current role may add it to a publication


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """A replication slot's state from ``pg_replication_slots``."""

    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    active_pid: int | None
    restart_lsn: int | None
    confirmed_flush_lsn: int | None
    wal_status: str | None
    safe_wal_size: int | None


def match_tables(conn: psycopg.Connection[Any], patterns: list[str]) -> list[SourceTable]:
    """Tables matching the schema-qualified glob patterns, partitions folded into their root.

    A partition is captured through its partitioned root (``publish_via_partition_root``), so
    it is left out whenever its root is selected too.
    """
    rows = conn.execute(
        """
        SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident,
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
               pg_has_role(c.relowner, 'USAGE'),
               c.relispartition,
               CASE WHEN c.relispartition THEN pg_partition_root(c.oid)::oid END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
          AND n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
          AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
        ORDER BY n.nspname, c.relname
        """,
        (list(_SYSTEM_SCHEMAS),),
    ).fetchall()
    matched = [r for r in rows if any(TableId(r[1], r[2]).matches(p) for p in patterns)]
    matched_oids = {r[0] for r in matched}
    return [
        SourceTable(
            oid=r[0],
            table=TableId(r[1], r[2]),
            kind=r[3],
            replica_identity=r[4],
            has_primary_key=r[5],
            owned=r[6],
        )
        for r in matched
        if not (r[7] and r[8] in matched_oids)
    ]


def build_table_schema(conn: psycopg.Connection[Any], relation: pgoutput.Relation) -> TableSchema:
    """Describe a table from its pgoutput Relation message plus what the catalog adds.

    The Relation message is authoritative for the column list and types (it reflects the
    table at that point of the WAL); the catalog supplies the key, NOT NULL, generated
    columns and user-defined type definitions.
    """
    table = TableId(relation.namespace, relation.name)
    oids = [c.type_oid for c in relation.columns]
    mods = [c.type_modifier for c in relation.columns]
    names = [
        r[0]
        for r in conn.execute(
            "SELECT format_type(t.oid, t.mod) FROM unnest(%s::oid[], %s::int[])"
            " WITH ORDINALITY AS t(oid, mod, ord) ORDER BY t.ord",
            (oids, mods),
        ).fetchall()
    ]
    attrs = {
        r[0]: r[1:]
        for r in conn.execute(
            """
            SELECT a.attname, a.attnotnull, a.attgenerated,
                   pg_get_expr(d.adbin, d.adrelid), format_type(a.atttypid, a.atttypmod),
                   a.atttypid
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            (relation.relation_id,),
        ).fetchall()
    }
    columns = tuple(
        Column(
            name=c.name,
            type_name=type_name,
            type_oid=c.type_oid,
            nullable=not bool(attrs.get(c.name, (False,))[0]),
        )
        for c, type_name in zip(relation.columns, names, strict=True)
    )
    sent = {c.name for c in relation.columns}
    generated = tuple(
        Column(
            name=name, type_name=info[3], type_oid=info[4], nullable=not info[0], generated=info[2]
        )
        for name, info in attrs.items()
        if info[1] == "s" and name not in sent
    )
    key: tuple[str, ...]
    if relation.replica_identity in ("d", "i"):
        key = tuple(c.name for c in relation.columns if c.is_key)
    elif relation.replica_identity == "f":
        key = primary_key_columns(conn, str(relation.relation_id))
    else:
        key = ()
    type_oids = {c.type_oid for c in relation.columns} | {int(g.type_oid or 0) for g in generated}
    wanted = sent | {g.name for g in generated}
    order = tuple(n for n in attrs if n in wanted)
    return TableSchema(
        table=table,
        columns=columns,
        key=key,
        generated=generated,
        types=user_type_definitions(conn, type_oids),
        # The catalog may have moved on since this WAL was written; then keep message order.
        order=order if set(order) == wanted else (),
        source_id=str(relation.relation_id),
    )


def user_type_definitions(
    conn: psycopg.Connection[Any], type_oids: set[int]
) -> tuple[TypeDefinition, ...]:
    """Definitions of the non-built-in types behind ``type_oids``, dependencies first."""
    ordered: list[TypeDefinition] = []
    seen: set[int] = set()

    def visit(oid: int) -> None:
        if oid in seen or oid == 0:
            return
        seen.add(oid)
        row = conn.execute(
            """
            SELECT n.nspname, t.typname, t.typtype, t.typelem, t.typcategory, t.typbasetype,
                   format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typrelid,
                   (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                     WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                       AND d.deptype = 'e' LIMIT 1)
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.oid = %s
            """,
            (oid,),
        ).fetchone()
        if row is None:
            return
        schema, name, kind, elem, category, base, base_name, not_null, relid, ext = row
        if category == "A" and elem:
            visit(elem)
            return
        if schema in _SYSTEM_SCHEMAS:
            return
        if ext:
            ordered.append(TypeDefinition(schema, name, "extension", base_type=ext))
            return
        if kind == "e":
            labels = tuple(
                r[0]
                for r in conn.execute(
                    "SELECT enumlabel FROM pg_enum WHERE enumtypid = %s ORDER BY enumsortorder",
                    (oid,),
                )
            )
            ordered.append(TypeDefinition(schema, name, "enum", labels=labels))
        elif kind == "d":
            visit(base)
            checks = tuple(
                r[0]
                for r in conn.execute(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE contypid = %s AND contype = 'c' ORDER BY conname",
                    (oid,),
                )
            )
            ordered.append(
                TypeDefinition(
                    schema, name, "domain", base_type=base_name, not_null=not_null, checks=checks
                )
            )
        elif kind == "c":
            attributes = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), atttypid FROM pg_attribute"
                " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (relid,),
            ).fetchall()
            for attr in attributes:
                visit(attr[2])
            ordered.append(
                TypeDefinition(
                    schema, name, "composite", attributes=tuple((a[0], a[1]) for a in attributes)
                )
            )
        else:
            ordered.append(TypeDefinition(schema, name, "unsupported"))

    for oid in sorted(type_oids):
        visit(oid)
    return tuple(ordered)


def lookup_type(conn: psycopg.Connection[Any], oid: int) -> PgType:
    """What the decoders need to know about a type they do not know statically."""
    row = conn.execute(
        """
        SELECT t.oid, format_type(t.oid, NULL), t.typtype, t.typbasetype,
               CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
               coalesce((SELECT e.typdelim FROM pg_type e WHERE e.oid = t.typelem), ',')
        FROM pg_type t WHERE t.oid = %s
        """,
        (oid,),
    ).fetchone()
    if row is None:
        # The type was dropped since this WAL was written; its text form is still exact.
        return PgType(oid=oid, name=f"oid {oid}", kind="b")
    return PgType(
        oid=row[0],
        name=row[1],
        kind=row[2],
        base_oid=int(row[3]),
        elem_oid=int(row[4]),
        delimiter=str(row[5]),
    )


def slot_info(conn: psycopg.Connection[Any], slot: str) -> SlotInfo | None:
    """The named replication slot, or None if it does not exist."""
    row = conn.execute(
        """
        SELECT slot_name, plugin, slot_type, database, active, active_pid,
               restart_lsn::text, confirmed_flush_lsn::text, wal_status, safe_wal_size
        FROM pg_replication_slots WHERE slot_name = %s
        """,
        (slot,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        name=row[0],
        plugin=row[1],
        slot_type=row[2],
        database=row[3],
        active=bool(row[4]),
        active_pid=row[5],
        restart_lsn=pgoutput.parse_lsn(row[6]) if row[6] else None,
        confirmed_flush_lsn=pgoutput.parse_lsn(row[7]) if row[7] else None,
        wal_status=row[8],
        safe_wal_size=row[9],
    )


def current_wal_lsn(conn: psycopg.Connection[Any]) -> int:
    """The source's current WAL write position."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return pgoutput.parse_lsn(row[0])


def publication_tables(conn: psycopg.Connection[Any], publication: str) -> set[int] | None:
    """OIDs of the tables explicitly in the publication, or None if it does not exist."""
    row = conn.execute(
        "SELECT oid, puballtables FROM pg_publication WHERE pubname = %s", (publication,)
    ).fetchone()
    if row is None:
        return None
    return {
        r[0]
        for r in conn.execute(
            "SELECT prrelid FROM pg_publication_rel WHERE prpubid = %s", (row[0],)
        )
    }


def ensure_publication(
    conn: psycopg.Connection[Any], publication: str, tables: list[SourceTable]
) -> list[SourceTable]:
    """Create the publication, or bring its table list up to date; return tables newly added.

    Partitioned tables publish through their root so that every partition's rows land in one
    target table, and all four operations (including TRUNCATE) are published.
    """
    wanted = {t.oid for t in tables}
    names = sql.SQL(", ").join(sql.SQL(t.table.quoted) for t in tables)
    existing = publication_tables(conn, publication)
    options = sql.SQL(
        "publish = 'insert, update, delete, truncate', publish_via_partition_root = true"
    )
    ident = sql.Identifier(publication)
    if existing is None:
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH ({})").format(ident, names, options)
        )
        return list(tables)
    if existing != wanted:
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(ident, names))
    row = conn.execute(
        "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate AND pubviaroot"
        " FROM pg_publication WHERE pubname = %s",
        (publication,),
    ).fetchone()
    if row is not None and not row[0]:
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET ({})").format(ident, options))
    return [t for t in tables if t.oid not in existing]


def tables_with_rows(
    conn: psycopg.Connection[Any], tables: list[SourceTable]
) -> tuple[list[TableId], list[TableId]]:
    """Which of ``tables`` hold at least one row, and which this role may not read."""
    found = []
    unreadable = []
    for t in tables:
        try:
            row = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.SQL(t.table.quoted))
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            unreadable.append(t.table)
            continue
        if row and row[0]:
            found.append(t.table)
    return found, unreadable


def setting(conn: psycopg.Connection[Any], name: str) -> str:
    """A server setting's current value."""
    row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def describe_table(conn: psycopg.Connection[Any], oid: int) -> TableSchema:
    """Describe a table from the catalog alone, the way its pgoutput Relation message would.

    Used before the stream has sent anything about the table (an initial copy); building it
    through :func:`build_table_schema` keeps both descriptions identical.
    """
    row = conn.execute(
        "SELECT n.nspname, c.relname, c.relreplident FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
        (oid,),
    ).fetchone()
    if row is None:
        raise LookupError(f"table with OID {oid} no longer exists")
    namespace, name, identity = row
    # The replica identity columns pgoutput flags as key: the primary key ('d'), the chosen
    # index ('i'), every column ('f'), none ('n').
    key_columns = {
        r[0]
        for r in conn.execute(
            """
            SELECT a.attname FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = %s
              AND ((%s = 'd' AND i.indisprimary) OR (%s = 'i' AND i.indisreplident))
            """,
            (oid, identity, identity),
        ).fetchall()
    }
    columns = tuple(
        pgoutput.RelationColumn(
            is_key=identity == "f" or r[0] in key_columns,
            name=r[0],
            type_oid=r[1],
            type_modifier=r[2],
        )
        for r in conn.execute(
            "SELECT attname, atttypid::int, atttypmod FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = ''"
            " ORDER BY attnum",
            (oid,),
        ).fetchall()
    )
    relation = pgoutput.Relation(oid, namespace, name, identity, columns)
    return build_table_schema(conn, relation)
