"""Compare a PostgreSQL target with the MariaDB source: per table, the row count and an
order-independent fingerprint of every row after type normalisation.

Each row becomes one text, the same on both sides: every column's value normalised to text,
length-prefixed (``5:abcde``, so no separator inside a value can make two rows alike), NULL
as ``N``, joined with ``|``. Its fingerprint is the first 60 bits of the MD5 of that text
(UTF-8), and a table's fingerprint is the row count and the sum of those numbers: a multiset
hash, independent of row order and of the physical layout.

Normalisation, per MySQL column type (other types fail loudly rather than compare wrongly):

- integers (``smallint``, ``mediumint``, ``int``, ``bigint``): decimal text. A consumer may
  widen the type (pg_chameleon makes an AUTO_INCREMENT ``int`` a ``bigint``); the digits stay.
- ``char(n)``: trailing spaces removed on both sides. MySQL strips them when it reads a CHAR
  (without PAD_CHAR_TO_FULL_LENGTH); PostgreSQL's ``char(n)`` pads them back on output, and
  a consumer mapping it to ``varchar`` or ``text`` would keep whatever it was sent.
- ``varchar``, ``text`` and friends: the text as is (trailing spaces are significant there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg import sql

from bench.db import BenchError, Row, connect

_INTEGERS = ("smallint", "mediumint", "int", "bigint")
_PADDED = ("char",)
_TEXTS = ("varchar", "tinytext", "text", "mediumtext", "longtext")


@dataclass(frozen=True)
class Column:
    """A source column: its name and MySQL data type (information_schema ``DATA_TYPE``)."""

    name: str
    data_type: str


@dataclass(frozen=True)
class TableFingerprint:
    """Row count and the sum of the rows' 60-bit hashes."""

    rows: int
    hash_sum: int

    def __str__(self) -> str:
        return f"{self.rows} rows, hash sum {self.hash_sum}"


def source_columns(conn: Any, schema: str, table: str) -> list[Column]:
    """The table's columns in the source, in definition order; unsupported types raise."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        columns = [Column(str(name), str(kind).lower()) for name, kind in cur.fetchall()]
    if not columns:
        raise BenchError(f"the source has no table {schema}.{table}")
    for column in columns:
        if column.data_type not in (*_INTEGERS, *_PADDED, *_TEXTS):
            raise BenchError(
                f"{schema}.{table}.{column.name} is {column.data_type}: the fingerprint has no"
                " normalisation for that type (bench/mysql/fingerprint.py)"
            )
    return columns


def _mysql_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _mysql_row_text(columns: Sequence[Column]) -> str:
    parts = []
    for column in columns:
        name = _mysql_identifier(column.name)
        if column.data_type in _INTEGERS:
            value = f"CAST({name} AS CHAR)"
        elif column.data_type in _PADDED:
            value = f"RTRIM({name})"
        else:
            value = name
        value = f"CONVERT({value} USING utf8mb4)"
        parts.append(f"COALESCE(CONCAT(CHAR_LENGTH({value}), ':', {value}), 'N')")
    return "CONCAT_WS('|', " + ", ".join(parts) + ")"


def _pg_row_text(columns: Sequence[Column]) -> sql.Composable:
    parts: list[sql.Composable] = []
    for column in columns:
        name = sql.Identifier(column.name)
        if column.data_type in _PADDED:
            value = sql.SQL("rtrim({}::text, ' ')").format(name)
        else:
            value = sql.SQL("{}::text").format(name)
        parts.append(sql.SQL("coalesce(length({0}) || ':' || {0}, 'N')").format(value))
    return sql.SQL("concat_ws('|', {})").format(sql.SQL(", ").join(parts))


def source_fingerprint(
    conn: Any, schema: str, table: str, columns: Sequence[Column]
) -> TableFingerprint:
    """The source table's fingerprint, computed by MariaDB."""
    statement = (
        "SELECT COUNT(*), COALESCE(SUM(CAST(CONV(LEFT(MD5("
        + _mysql_row_text(columns)
        + f"), 15), 16, 10) AS UNSIGNED)), 0) FROM {_mysql_identifier(schema)}"
        f".{_mysql_identifier(table)}"
    )
    with conn.cursor() as cur:
        cur.execute(statement)
        count, total = cur.fetchone()
    return TableFingerprint(int(count), int(total))


def target_fingerprint(
    conn: psycopg.Connection[Row], schema: str, table: str, columns: Sequence[Column]
) -> TableFingerprint:
    """The same fingerprint of a PostgreSQL target's copy of the table."""
    statement = sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || lpad(left(md5({}), 15), 16, '0'))"
        "::bit(64)::bigint), 0) FROM {}"
    ).format(_pg_row_text(columns), sql.Identifier(schema, table))
    row = conn.execute(statement).fetchone()
    assert row is not None
    return TableFingerprint(int(row[0]), int(row[1]))


def target_row_counts(
    conn: psycopg.Connection[Row], schema: str, tables: Sequence[str]
) -> dict[str, int]:
    """Exact row counts in a target; a table that is missing (or locked) counts -1."""
    counts: dict[str, int] = {}
    for table in tables:
        try:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ).fetchone()
            counts[table] = int(cast(Row, row)[0])
        except (psycopg.errors.UndefinedTable, psycopg.errors.LockNotAvailable):
            counts[table] = -1
    return counts


def counts_reached(conn: psycopg.Connection[Row], schema: str, expected: dict[str, int]) -> bool:
    """Whether every table holds its expected number of rows; stops at the first that does
    not, so polling while a copy runs stays cheap."""
    return all(
        target_row_counts(conn, schema, [table])[table] == rows for table, rows in expected.items()
    )


def source_row_counts(conn: Any, schema: str, tables: Sequence[str]) -> dict[str, int]:
    """Exact row counts in the source."""
    counts = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(
                f"SELECT COUNT(*) FROM {_mysql_identifier(schema)}.{_mysql_identifier(table)}"
            )
            counts[table] = int(cur.fetchone()[0])
    return counts


def differences(
    source: Any,
    targets: Mapping[str, str],
    schema: str,
    columns: Mapping[str, Sequence[Column]],
) -> list[str]:
    """Compare every table of ``columns`` between the source and each target (label → DSN).

    Returns one line per difference (or unreadable target); empty when all are equal.
    """
    expected = {
        table: source_fingerprint(source, schema, table, cols) for table, cols in columns.items()
    }
    problems: list[str] = []
    for label, dsn in targets.items():
        try:
            with connect(dsn) as conn:
                actual = {
                    table: target_fingerprint(conn, schema, table, cols)
                    for table, cols in columns.items()
                }
        except psycopg.Error as exc:
            problems.append(f"{label}: cannot read the target: {exc}")
            continue
        problems += [
            f"{label}: {schema}.{table} has {actual[table]}, the source {expected[table]}"
            for table in columns
            if actual[table] != expected[table]
        ]
    return problems
