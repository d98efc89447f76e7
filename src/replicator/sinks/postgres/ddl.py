"""Target-side DDL: create tables (and the types they need) from source definitions, and
compare an existing target table with the source so data is never written misaligned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.errors import SchemaMismatchError, SinkError
from replicator.events import TableId, TableSchema, TypeDefinition, quote_ident
from replicator.pgsession import primary_key_columns


@dataclass(frozen=True, slots=True)
class TargetColumn:
    """A column of an existing target table."""

    name: str
    type_name: str  # format_type(atttypid, atttypmod)
    storage_type: str  # the type to stage values in: a domain's base type, else type_name
    generated: bool


@dataclass(frozen=True, slots=True)
class TargetTable:
    """An existing target table."""

    table: TableId
    columns: dict[str, TargetColumn]
    primary_key: tuple[str, ...]


def read_table(conn: psycopg.Connection[Any], table: TableId) -> TargetTable | None:
    """The target table's columns and primary key, or None if it does not exist."""
    rows = conn.execute(
        """
        WITH RECURSIVE col AS (
            SELECT a.attnum, a.attname, a.atttypid, a.atttypmod, a.attgenerated
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped
        ), base(attnum, typ, mod, depth) AS (
            SELECT attnum, atttypid, atttypmod, 0 FROM col
            UNION ALL
            SELECT b.attnum, t.typbasetype, t.typtypmod, b.depth + 1
            FROM base b JOIN pg_type t ON t.oid = b.typ
            WHERE t.typtype = 'd' AND b.depth < 16
        )
        SELECT col.attname, format_type(col.atttypid, col.atttypmod),
               (SELECT format_type(b.typ, b.mod) FROM base b
                 WHERE b.attnum = col.attnum ORDER BY b.depth DESC LIMIT 1),
               col.attgenerated <> ''
        FROM col ORDER BY col.attnum
        """,
        (table.schema, table.name),
    ).fetchall()
    if not rows:
        return None
    return TargetTable(
        table=table,
        columns={r[0]: TargetColumn(r[0], r[1], r[2], r[3]) for r in rows},
        primary_key=primary_key_columns(conn, table.quoted),
    )


def create_table(conn: psycopg.Connection[Any], schema: TableSchema) -> None:
    """Create the schema, the user-defined types and the table the source describes."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema.table.schema)}")
    for definition in schema.types:
        _ensure_type(conn, definition)
    by_name = {c.name: c for c in schema.columns}
    by_name.update({c.name: c for c in schema.generated})
    order = schema.order or tuple(by_name)
    parts = []
    for name in order:
        column = by_name[name]
        spec = f"{quote_ident(column.name)} {column.type_name}"
        if column.generated:
            spec += f" GENERATED ALWAYS AS ({column.generated}) STORED"
        if not column.nullable:
            spec += " NOT NULL"
        parts.append(spec)
    if schema.key:
        parts.append(f"PRIMARY KEY ({', '.join(quote_ident(k) for k in schema.key)})")
    conn.execute(f"CREATE TABLE {schema.table.quoted} (\n  " + ",\n  ".join(parts) + "\n)")


def _type_exists(conn: psycopg.Connection[Any], definition: TypeDefinition) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %s AND t.typname = %s",
        (definition.schema, definition.name),
    ).fetchone()
    return row is not None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ensure_type(conn: psycopg.Connection[Any], definition: TypeDefinition) -> None:
    if _type_exists(conn, definition):
        return
    name = definition.qualified
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(definition.schema)}")
    try:
        if definition.kind == "enum":
            labels = ", ".join(_literal(label) for label in definition.labels)
            conn.execute(f"CREATE TYPE {name} AS ENUM ({labels})")
        elif definition.kind == "domain":
            spec = f"CREATE DOMAIN {name} AS {definition.base_type}"
            if definition.not_null:
                spec += " NOT NULL"
            for check in definition.checks:
                spec += f" {check}"
            conn.execute(spec)
        elif definition.kind == "composite":
            attributes = ", ".join(f"{quote_ident(a)} {t}" for a, t in definition.attributes)
            conn.execute(f"CREATE TYPE {name} AS ({attributes})")
        elif definition.kind == "extension":
            with conn.transaction():
                conn.execute(
                    f"CREATE EXTENSION IF NOT EXISTS {quote_ident(definition.base_type or '')}"
                    f" SCHEMA {quote_ident(definition.schema)}"
                )
        else:
            raise SchemaMismatchError(
                f"type {definition.schema}.{definition.name} does not exist in the target and "
                "Replicator cannot create this kind of type",
                fix=f"create {definition.schema}.{definition.name} in the target as it is "
                "defined in the source, then restart the pipeline",
            )
    except psycopg.Error as exc:
        what = f"extension {definition.base_type}" if definition.kind == "extension" else name
        raise SinkError(
            f"cannot create {what} in the target: {str(exc).strip()}",
            fix=f"create {what} in the target by hand (as the source has it), then restart",
        ) from exc


def differences(schema: TableSchema, target: TargetTable) -> list[tuple[str, str]]:
    """What differs between the source table and the target table: (problem, fix) pairs."""
    name = schema.table.quoted
    found: list[tuple[str, str]] = []
    source_columns = {c.name: c for c in schema.columns}
    generated = {c.name for c in schema.generated}
    for column in schema.columns:
        have = target.columns.get(column.name)
        if have is None:
            found.append(
                (
                    f"column {column.name} ({column.type_name}) exists in the source but not in "
                    "the target",
                    f"ALTER TABLE {name} ADD COLUMN {quote_ident(column.name)} {column.type_name};",
                )
            )
        elif have.generated:
            found.append(
                (
                    f"column {column.name} is generated in the target but carries values in "
                    "the source",
                    f"ALTER TABLE {name} ALTER COLUMN {quote_ident(column.name)} DROP EXPRESSION;",
                )
            )
        elif have.type_name != column.type_name:
            found.append(
                (
                    f"column {column.name} is {column.type_name} in the source but "
                    f"{have.type_name} in the target",
                    f"ALTER TABLE {name} ALTER COLUMN {quote_ident(column.name)} TYPE "
                    f"{column.type_name};",
                )
            )
    for column_name, target_column in target.columns.items():
        if column_name in source_columns or target_column.generated or column_name in generated:
            continue
        found.append(
            (
                f"column {column_name} exists in the target but no longer in the source "
                "(dropped or renamed there)",
                f"ALTER TABLE {name} DROP COLUMN {quote_ident(column_name)}; (or rename it to "
                "match the source)",
            )
        )
    if schema.key and target.primary_key != schema.key:
        have_key = ", ".join(target.primary_key) or "none"
        found.append(
            (
                f"rows are identified by ({', '.join(schema.key)}) in the source, but the "
                f"target's primary key is ({have_key})",
                f"make ({', '.join(quote_ident(k) for k in schema.key)}) the primary key of "
                f"{name} in the target",
            )
        )
    return found
