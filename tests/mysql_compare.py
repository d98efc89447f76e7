"""Compare a MariaDB table with its PostgreSQL copy, row by row, as a multiset.

Both sides are read with their own drivers (PyMySQL at session time zone +00:00, psycopg with
default settings) and every value is brought to one canonical form by one function per side:
:func:`mysql_value` knows the MySQL column type, :func:`pg_value` the PostgreSQL one. Rows are
compared as multisets (keyless tables may hold duplicates, and each copy counts), and a
mismatch names the rows missing from the target and the rows it should not have.

Canonical forms:

* NULL → ``None``; booleans (``TINYINT(1)`` / ``boolean``) → ``0`` / ``1``
* integers and decimals → their exact decimal text, scale kept (``'1.50'``,
  ``'18446744073709551615'``)
* doubles → ``repr`` of the float
* DATE → ISO date; DATETIME / ``timestamp`` → naive ISO; TIMESTAMP / ``timestamptz`` → ISO in
  UTC with ``+00:00``
* TIME / ``interval`` → total microseconds
* bytes → ``\\x`` + hex; BIT(n) / ``bit(n)`` → a string of n ``0``/``1``
* JSON / ``jsonb`` → parsed and re-dumped with sorted keys
* SET / ``text[]`` → sorted tuple of members; CHAR / ``character(n)`` → trailing spaces stripped
"""

from __future__ import annotations

import collections
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from tests.mariadb import connect as mysql_connect

_SAMPLE = 5


class MyColumn(NamedTuple):
    """A MySQL column as ``information_schema`` describes it."""

    name: str
    data_type: str  # DATA_TYPE, lower case; 'json' for MariaDB's JSON (a checked LONGTEXT)
    column_type: str  # COLUMN_TYPE, lower case
    bits: int  # BIT(n): n


def mysql_columns(conn: Any, database: str, table: str) -> list[MyColumn]:
    """The table's columns in order, with MariaDB's JSON columns recognised."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), NUMERIC_PRECISION"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            " ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
        checks = [str(r[0]) for r in cur.fetchall()]
    json_columns = {m.group(1) for c in checks if (m := re.fullmatch(r"json_valid\(`(.+)`\)", c))}
    if not rows:
        raise AssertionError(f"MySQL table {database}.{table} does not exist")
    return [
        MyColumn(
            str(name),
            "json" if str(name) in json_columns else str(data_type),
            str(column_type),
            int(precision or 0),
        )
        for name, data_type, column_type, precision in rows
    ]


def _number(value: int | Decimal) -> str:
    return str(value) if isinstance(value, int) else format(value, "f")


def _bytes(value: bytes | bytearray | memoryview) -> str:
    return "\\x" + bytes(value).hex()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _micros(value: timedelta) -> int:
    return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds


def mysql_value(column: MyColumn, value: Any) -> Any:
    """The canonical form of a value PyMySQL read from ``column`` (session time zone UTC)."""
    if value is None:
        return None
    kind = column.data_type
    if kind == "tinyint" and column.column_type.startswith("tinyint(1)"):
        return int(value)  # BOOL, a boolean in PostgreSQL
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, Decimal)):
        return _number(value)
    if isinstance(value, float):
        return repr(value)
    if kind == "bit":
        return format(int.from_bytes(value, "big"), f"0{column.bits}b")
    if kind == "timestamp":
        return value.replace(tzinfo=UTC).isoformat()  # read at time zone +00:00
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _micros(value)
    if isinstance(value, (bytes, bytearray)):
        return _bytes(value)
    if kind == "json":
        return _json(json.loads(value))
    if kind == "set":
        members = value if isinstance(value, (set, frozenset)) else value.split(",")
        return tuple(sorted(m for m in members if m))
    if kind == "char":
        return value.rstrip(" ")
    return value


_PG_JSON = ("json", "jsonb")


def pg_value(type_name: str, value: Any) -> Any:
    """The canonical form of a value psycopg read from a column of type ``type_name``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, Decimal)):
        return _number(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).isoformat()
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _micros(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes(value)
    if type_name in _PG_JSON:
        return _json(json.loads(value))  # read as text
    if isinstance(value, list):  # text[], a SET
        return tuple(sorted(value))
    if type_name == "bpchar":
        return value.rstrip(" ")
    return value


def mysql_rows(mysql_dsn: str, database: str, table: str) -> tuple[list[str], list[tuple]]:
    """Column names and canonical rows of a MySQL table."""
    with mysql_connect(mysql_dsn, init_command="SET time_zone = '+00:00'") as conn:
        columns = mysql_columns(conn, database, table)
        names = ", ".join(f"`{c.name}`" for c in columns)
        with conn.cursor() as cur:
            cur.execute(f"SELECT {names} FROM `{database}`.`{table}`")
            rows = [
                tuple(mysql_value(c, v) for c, v in zip(columns, row, strict=True))
                for row in cur.fetchall()
            ]
    return [c.name for c in columns], rows


def pg_rows(pg_dsn: str, schema: str, table: str, columns: list[str]) -> list[tuple]:
    """Canonical rows of a PostgreSQL table, columns in the given order."""
    target = sql.Identifier(schema, table)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        probe = conn.execute(
            sql.SQL("SELECT {} FROM {} LIMIT 0").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in columns), target
            )
        )
        types = []
        for column in probe.description or []:
            info = conn.adapters.types.get(column.type_code)
            types.append(info.name if info is not None else str(column.type_code))
        # JSON as text: psycopg would load the JSON value null as None, like SQL NULL.
        fields = [
            sql.SQL("{}::text").format(sql.Identifier(c)) if t in _PG_JSON else sql.Identifier(c)
            for c, t in zip(columns, types, strict=True)
        ]
        cur = conn.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(fields), target))
        return [
            tuple(pg_value(t, v) for t, v in zip(types, row, strict=True)) for row in cur.fetchall()
        ]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:45] + f"…({len(text)} chars)"


def _show(row: tuple) -> str:
    return "(" + ", ".join(_short(v) for v in row) + ")"


def _sample(counter: collections.Counter[tuple]) -> list[str]:
    return [_show(r) for r in sorted(counter.elements(), key=repr)[:_SAMPLE]]


def _key_columns(mysql_dsn: str, database: str, table: str) -> list[str]:
    with mysql_connect(mysql_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s"
            " AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (database, table),
        )
        return [str(r[0]) for r in cur.fetchall()]


def _changed(
    columns: list[str], key: list[str], missing: list[tuple], unexpected: list[tuple]
) -> list[str]:
    """Rows of a keyed table present on both sides with different values: which columns."""
    where = [columns.index(k) for k in key]
    found = {tuple(r[i] for i in where): r for r in unexpected}
    changes = []
    for row in missing:
        other = found.get(tuple(row[i] for i in where))
        if other is None:
            continue
        names = ", ".join(f"{k}={row[i]!r}" for k, i in zip(key, where, strict=True))
        columns_changed = [
            f"{c}: source {_short(a)} target {_short(b)}"
            for c, a, b in zip(columns, row, other, strict=True)
            if a != b
        ]
        changes.append(f"[{names}] " + "; ".join(columns_changed))
        if len(changes) == _SAMPLE:
            break
    return changes


def diff_table(mysql_dsn: str, pg_dsn: str, qualified: str) -> str | None:
    """None when ``db.table`` in MySQL and ``db.table`` in PostgreSQL hold the same rows;
    else a description of the difference."""
    database, table = qualified.split(".", 1)
    columns, source = mysql_rows(mysql_dsn, database, table)
    try:
        target = pg_rows(pg_dsn, database, table, columns)
    except psycopg.errors.UndefinedTable:
        return f"{qualified}: {len(source)} source rows, and no such table in the target"
    wanted, found = collections.Counter(source), collections.Counter(target)
    if wanted == found:
        return None
    missing, unexpected = wanted - found, found - wanted
    text = (
        f"{qualified} ({', '.join(columns)}): {len(source)} source rows, {len(target)} target "
        f"rows; {sum(missing.values())} missing in the target, e.g. {_sample(missing)}; "
        f"{sum(unexpected.values())} unexpected in the target, e.g. {_sample(unexpected)}"
    )
    key = _key_columns(mysql_dsn, database, table)
    if key:
        changes = _changed(
            columns, key, sorted(missing.elements(), key=repr), list(unexpected.elements())
        )
        if changes:
            text += "\n  same key, other values: " + "\n  ".join(changes)
    return text


def assert_same_tables(mysql_dsn: str, pg_dsn: str, tables: list[str]) -> None:
    """Every ``db.table`` holds exactly the same rows (duplicates counted) on both sides."""
    problems = [p for t in tables if (p := diff_table(mysql_dsn, pg_dsn, t)) is not None]
    assert not problems, "\n".join(problems)


def row_count(pg_dsn: str, qualified: str) -> int:
    """Rows of ``db.table`` in the target (0 when it does not exist yet)."""
    schema, table = qualified.split(".", 1)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    assert row is not None
    return int(row[0])
