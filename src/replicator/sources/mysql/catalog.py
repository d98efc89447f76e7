"""What ``information_schema`` says about the captured tables: which exist, their columns
(normalised to :class:`~.columns.MyColumn`) and the columns that identify a row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from replicator.errors import SourceError
from replicator.events import TableId
from replicator.sources.mysql.columns import MyColumn
from replicator.sources.mysql.server import query

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
TRANSACTIONAL_ENGINES = ("innodb", "rocksdb", "tokudb", "ndbcluster", "ndb")
# An ENUM or SET member in COLUMN_TYPE, which writes ' as '' and escapes \\, NUL, newline,
# carriage return and Ctrl-Z with a backslash (the server's append_unescaped()).
_LABEL = re.compile(r"'((?:[^'\\]|''|\\.)*)'", re.DOTALL)
_LABEL_ESCAPE = re.compile(r"''|\\(.)", re.DOTALL)
_LABEL_ESCAPES = {"0": "\x00", "n": "\n", "r": "\r", "Z": "\x1a"}


@dataclass(frozen=True, slots=True)
class TableInfo:
    """One base table: its engine, a row estimate, its columns and its key."""

    table: TableId
    engine: str
    rows_estimate: int | None
    columns: tuple[MyColumn, ...] = ()
    key: tuple[str, ...] = ()

    @property
    def transactional(self) -> bool:
        """Whether a consistent-snapshot read sees the table as of one point in time."""
        return self.engine.lower() in TRANSACTIONAL_ENGINES


def match_tables(conn: Any, patterns: list[str]) -> list[TableInfo]:
    """Base tables matching any ``database.table`` glob, by name (columns not read)."""
    rows = query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(ENGINE, ''), TABLE_ROWS"
        " FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'"
        " AND TABLE_SCHEMA NOT IN (" + ", ".join(f"'{s}'" for s in SYSTEM_SCHEMAS) + ")"
        " ORDER BY TABLE_SCHEMA, TABLE_NAME",
        doing="listing the source's tables",
    )
    found = []
    for schema, name, engine, estimate in rows:
        table = TableId(str(schema), str(name))
        if any(table.matches(p) for p in patterns):
            found.append(TableInfo(table, str(engine), None if estimate is None else int(estimate)))
    return found


def describe(conn: Any, table: TableId) -> TableInfo | None:
    """The table's columns in order and its key; None when it does not exist."""
    tables = query(
        conn,
        "SELECT COALESCE(ENGINE, ''), TABLE_ROWS FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND TABLE_TYPE = 'BASE TABLE'",
        (table.schema, table.name),
        doing=f"describing {table}",
    )
    if not tables:
        return None
    rows = query(
        conn,
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE, IS_NULLABLE,"
        " CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION,"
        " CHARACTER_SET_NAME"
        " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
        " ORDER BY ORDINAL_POSITION",
        (table.schema, table.name),
        doing=f"describing {table}",
    )
    json_columns = _mariadb_json_columns(conn, table)
    columns = tuple(_column(row, json_columns) for row in rows)
    engine, estimate = tables[0]
    return TableInfo(
        table,
        str(engine),
        None if estimate is None else int(estimate),
        columns,
        _key(conn, table, columns),
    )


def _column(row: tuple[Any, ...], json_columns: set[str]) -> MyColumn:
    name, data_type, column_type, nullable, max_chars, precision, scale, fsp, charset = row
    name = str(name)
    data_type = str(data_type)
    column_type = str(column_type)  # as written: ENUM and SET members keep their case
    spelling = column_type.lower()
    if data_type == "longtext" and name in json_columns:
        data_type = "json"  # MariaDB's JSON is LONGTEXT checked by json_valid()
    labels: tuple[str, ...] = ()
    if data_type in ("enum", "set"):
        labels = tuple(_unescape_label(m) for m in _LABEL.findall(column_type))
    length = None
    if data_type in ("char", "varchar", "binary", "varbinary"):
        length = int(max_chars)
    elif data_type == "bit":
        length = int(precision)
    return MyColumn(
        name=name,
        data_type=data_type,
        unsigned=data_type not in ("enum", "set") and "unsigned" in spelling,
        length=length,
        precision=int(precision) if data_type == "decimal" else None,
        scale=int(scale) if data_type == "decimal" else None,
        fsp=int(fsp or 0) if data_type in ("time", "datetime", "timestamp") else 0,
        charset=None if charset is None or data_type == "json" else str(charset),
        labels=labels,
        nullable=str(nullable) == "YES",
        boolean=spelling == "tinyint(1)",
        column_type=spelling if data_type not in ("enum", "set") else column_type,
    )


def _unescape_label(text: str) -> str:
    """An ENUM or SET member as it is, from its spelling in COLUMN_TYPE."""

    def one(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if escaped is None:
            return "'"
        return _LABEL_ESCAPES.get(escaped, escaped)

    return _LABEL_ESCAPE.sub(one, text)


def _mariadb_json_columns(conn: Any, table: TableId) -> set[str]:
    """Columns declared JSON on MariaDB, which keeps them as LONGTEXT with a CHECK."""
    try:
        rows = query(
            conn,
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (table.schema, table.name),
            doing=f"reading the checks of {table}",
        )
    except SourceError:  # MySQL before 8.0.16 has no such view (and no such JSON)
        return set()
    found = set()
    for (clause,) in rows:
        match = re.fullmatch(r"json_valid\(`((?:[^`]|``)+)`\)", str(clause).strip())
        if match:
            found.add(match.group(1).replace("``", "`"))
    return found


def _key(conn: Any, table: TableId, columns: tuple[MyColumn, ...]) -> tuple[str, ...]:
    """The primary key, else the first unique key of NOT NULL whole columns (which InnoDB
    itself uses as the clustered index), else none."""
    rows = query(
        conn,
        "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART, NON_UNIQUE FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY INDEX_NAME = 'PRIMARY' DESC,"
        " INDEX_NAME, SEQ_IN_INDEX",
        (table.schema, table.name),
        doing=f"reading the keys of {table}",
    )
    not_null = {c.name for c in columns if not c.nullable}
    indexes: dict[str, list[tuple[str, Any, Any]]] = {}
    for index, column, sub_part, non_unique in rows:
        indexes.setdefault(str(index), []).append((str(column), sub_part, non_unique))
    for parts in indexes.values():
        if any(int(non_unique) for _, _, non_unique in parts):
            continue
        names = [name for name, _, _ in parts]
        if all(sub is None for _, sub, _ in parts) and all(n in not_null for n in names):
            return tuple(names)
    return ()
