"""The definition each row event is decoded with, and the target table it describes.

A TABLE_MAP event carries the table's columns as they were when the rows were logged
(``binlog_row_metadata = FULL``): names, types, sizes, character sets, ENUM members.
That is the definition rows are decoded with, so an ``ALTER TABLE`` between a row event
and the time it is read can never misalign values and columns. ``information_schema``
adds what the binlog leaves out (``TINYINT(1)``, MariaDB's JSON, lengths in characters)
whenever its definition is the one the event was logged with; when the table changed since,
the definition comes from the event alone, and the target table's mismatch stops the
pipeline with the ALTER to run (DESIGN invariant 7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from replicator.errors import SourceError
from replicator.events import Column, TableId, TableSchema
from replicator.sources.mysql import rows as binlog_types
from replicator.sources.mysql.catalog import TableInfo
from replicator.sources.mysql.columns import (
    BLOBS,
    SPATIAL,
    TEXTS,
    MyColumn,
    TypeOptions,
    bytes_per_char,
    nullable_in_target,
    pg_type,
)
from replicator.sources.mysql.rows import BinlogColumn, RowDecoder, column_reader

_INTEGER_CODES = {
    "tinyint": binlog_types.TINY,
    "smallint": binlog_types.SHORT,
    "mediumint": binlog_types.INT24,
    "int": binlog_types.LONG,
    "bigint": binlog_types.LONGLONG,
}
_CHARACTER_CODES = (
    binlog_types.STRING,
    binlog_types.VARCHAR,
    binlog_types.VAR_STRING,
    binlog_types.BLOB,
)
_LENGTH_SIZES = {t: i + 1 for i, t in enumerate(TEXTS)} | {t: i + 1 for i, t in enumerate(BLOBS)}


@dataclass(frozen=True, slots=True)
class Decoding:
    """How one table's row images become values: its schema and a compiled decoder."""

    schema: TableSchema
    decoder: RowDecoder
    names: tuple[str, ...]
    key: tuple[str, ...]
    key_of: Callable[[tuple[Any, ...]], dict[str, Any] | None]
    """The key columns' values of a decoded image (None for a table without a key)."""


def key_getter(
    names: tuple[str, ...], key: tuple[str, ...]
) -> Callable[[tuple[Any, ...]], dict[str, Any] | None]:
    """A fast ``image → {key column: value}`` for a table's column order."""
    if not key:
        return lambda image: None
    places = [(k, names.index(k)) for k in key]
    if len(places) == 1:
        ((name, at),) = places
        return lambda image: {name: image[at]}
    return lambda image: {k: image[at] for k, at in places}


def table_schema(
    table: TableId, columns: tuple[MyColumn, ...], key: tuple[str, ...], options: TypeOptions
) -> TableSchema:
    """The target table a MySQL table is copied into."""
    return TableSchema(
        table=table,
        columns=tuple(
            Column(
                name=c.name,
                type_name=pg_type(c, options),
                nullable=nullable_in_target(c, options),
            )
            for c in columns
        ),
        key=key,
        order=tuple(c.name for c in columns),
        dialect="mysql",
    )


def matches(column: MyColumn, logged: BinlogColumn) -> bool:
    """Whether the binlog logged ``column`` as ``information_schema`` defines it now."""
    if column.name != logged.name or column.nullable != logged.nullable:
        return False
    kind = column.data_type
    code = logged.type
    if kind in _INTEGER_CODES:
        return code == _INTEGER_CODES[kind] and column.unsigned == logged.unsigned
    if kind == "decimal":
        return code == binlog_types.NEWDECIMAL and (column.precision, column.scale) == (
            logged.precision,
            logged.decimals,
        )
    if kind == "float":
        return code == binlog_types.FLOAT
    if kind == "double":
        return code == binlog_types.DOUBLE
    if kind == "year":
        return code == binlog_types.YEAR
    if kind == "bit":
        return code == binlog_types.BIT and column.length == logged.bits
    if kind in ("enum", "set"):
        wanted = binlog_types.ENUM if kind == "enum" else binlog_types.SET
        return code == wanted and column.labels == logged.labels
    if kind in ("char", "varchar", "binary", "varbinary"):
        codes = (
            (binlog_types.STRING,)
            if kind in ("char", "binary")
            else (
                binlog_types.VARCHAR,
                binlog_types.VAR_STRING,
            )
        )
        if code not in codes or not _same_charset(column, logged):
            return False
        per_char = bytes_per_char(column.charset or "binary")
        return column.length is not None and column.length * per_char == logged.max_length
    if kind in TEXTS or kind in BLOBS or kind == "json" and code == binlog_types.BLOB:
        size = 4 if kind == "json" else _LENGTH_SIZES[kind]
        return (
            code == binlog_types.BLOB
            and logged.length_size == size
            and (kind == "json" or _same_charset(column, logged))
        )
    if kind == "json":
        return code == binlog_types.JSON
    if kind in SPATIAL:
        return code == binlog_types.GEOMETRY
    if kind == "date":
        return code == binlog_types.DATE
    if kind in ("datetime", "timestamp", "time"):
        new, old = {
            "datetime": (binlog_types.DATETIME2, binlog_types.DATETIME),
            "timestamp": (binlog_types.TIMESTAMP2, binlog_types.TIMESTAMP),
            "time": (binlog_types.TIME2, binlog_types.TIME),
        }[kind]
        return code == new and column.fsp == logged.fsp or code == old and column.fsp == 0
    return False


def _same_charset(column: MyColumn, logged: BinlogColumn) -> bool:
    """Whether the character set information_schema names is the one the binlog logged.

    The binlog names a collation by number, and a collation the library does not know
    (MariaDB 10.10's ``utf8mb4_uca1400_ai_ci``, say) leaves it without a character set.
    Binary columns always name one (``binary``), so an unknown one is some character set:
    the current definition's, when everything else about the column matches.
    """
    described = column.charset or "binary"
    if logged.charset is None:
        return described != "binary"
    return described == logged.charset


def from_binlog(logged: BinlogColumn) -> MyColumn:
    """The column as the binlog alone describes it (the definition at that point of the
    log, when the table has changed since)."""
    code = logged.type
    kind = {
        binlog_types.TINY: "tinyint",
        binlog_types.SHORT: "smallint",
        binlog_types.INT24: "mediumint",
        binlog_types.LONG: "int",
        binlog_types.LONGLONG: "bigint",
        binlog_types.FLOAT: "float",
        binlog_types.DOUBLE: "double",
        binlog_types.YEAR: "year",
        binlog_types.BIT: "bit",
        binlog_types.NEWDECIMAL: "decimal",
        binlog_types.ENUM: "enum",
        binlog_types.SET: "set",
        binlog_types.DATE: "date",
        binlog_types.DATETIME: "datetime",
        binlog_types.DATETIME2: "datetime",
        binlog_types.TIMESTAMP: "timestamp",
        binlog_types.TIMESTAMP2: "timestamp",
        binlog_types.TIME: "time",
        binlog_types.TIME2: "time",
        binlog_types.JSON: "json",
        binlog_types.GEOMETRY: "geometry",
    }.get(code)
    charset = logged.charset if logged.charset != "binary" else None
    length = None
    if code in (binlog_types.STRING, binlog_types.VARCHAR, binlog_types.VAR_STRING):
        fixed = code == binlog_types.STRING
        if charset is None:
            kind = "binary" if fixed else "varbinary"
            length = logged.max_length
        else:
            kind = "char" if fixed else "varchar"
            length = logged.max_length // bytes_per_char(charset)
    elif code == binlog_types.BLOB:
        names = TEXTS if charset else BLOBS
        kind = names[max(0, min(logged.length_size, 4) - 1)]
    elif code == binlog_types.BIT:
        length = logged.bits
    if kind is None:
        kind = f"binlog type {code}"
    return MyColumn(
        name=logged.name,
        data_type=kind,
        unsigned=logged.unsigned,
        length=length,
        precision=logged.precision if code == binlog_types.NEWDECIMAL else None,
        scale=logged.decimals if code == binlog_types.NEWDECIMAL else None,
        fsp=logged.fsp,
        charset=charset,
        labels=logged.labels,
        nullable=logged.nullable,
    )


def decoding(
    table: TableId,
    logged: tuple[BinlogColumn, ...],
    logged_key: tuple[str, ...],
    described: TableInfo | None,
    options: TypeOptions,
) -> Decoding | None:
    """The decoding of rows logged with ``logged``, when ``described`` is the definition they
    were logged with; None when it is not (the caller may describe the table again)."""
    if described is None or len(described.columns) != len(logged):
        return None
    if not all(matches(c, b) for c, b in zip(described.columns, logged, strict=True)):
        return None
    return _compile(table, described.columns, logged, described.key or logged_key, options)


def logged_decoding(
    table: TableId,
    logged: tuple[BinlogColumn, ...],
    logged_key: tuple[str, ...],
    options: TypeOptions,
) -> Decoding:
    """The decoding from the binlog's definition alone."""
    for column in logged:
        if column.charset is None and column.type in _CHARACTER_CODES:
            # Decoding it as binary would turn text into bytes without a word.
            raise SourceError(
                f"{table}: the binlog logged column {column.name} with a collation Replicator "
                "does not know, and the table's definition has changed since, so the "
                "column's character set is unknown",
                fix=f"re-copy the table: replicator snapshot -c FILE -p PIPELINE -t '{table}'",
            )
    return _compile(table, tuple(from_binlog(b) for b in logged), logged, logged_key, options)


def _compile(
    table: TableId,
    columns: tuple[MyColumn, ...],
    logged: tuple[BinlogColumn, ...],
    key: tuple[str, ...],
    options: TypeOptions,
) -> Decoding:
    readers = [column_reader(c, b, options) for c, b in zip(columns, logged, strict=True)]
    schema = table_schema(table, columns, key, options)
    names = schema.column_names
    return Decoding(schema, RowDecoder(readers), names, key, key_getter(names, key))
