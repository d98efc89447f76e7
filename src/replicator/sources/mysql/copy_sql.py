"""The SELECT that makes MySQL itself write a table's rows as PostgreSQL ``COPY`` text.

Rows reach the target without being decoded in Python: each row comes back as one binary
string, already a line of PostgreSQL's text COPY format, so the copy is bound by the two
servers rather than by per-value work here. Every expression writes exactly the text that
PostgreSQL reads back into the value the binlog decoder (:mod:`.rows`) produces for the same
row, so a copied row and a streamed row are identical in the target (tested value by value).

The session must run with :data:`SESSION_SQL_MODE` (no ``NO_BACKSLASH_ESCAPES``, no
``PAD_CHAR_TO_FULL_LENGTH``) and ``time_zone = '+00:00'``.
"""

from __future__ import annotations

from replicator.events import TableId
from replicator.sources.mysql.columns import BLOBS, SPATIAL, TEXTS, MyColumn, TypeOptions

SESSION_SQL_MODE = "NO_ENGINE_SUBSTITUTION"
_NULL = "'\\\\N'"  # COPY's NULL marker, \N


def quote(name: str) -> str:
    """A MySQL identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def quote_table(table: TableId) -> str:
    """``db.table`` as a quoted MySQL name."""
    return f"{quote(table.schema)}.{quote(table.name)}"


def _copy_escaped(expression: str) -> str:
    # COPY text gives backslash, tab, newline and carriage return a meaning.
    for char, escaped in (
        ("\\\\", "\\\\\\\\"),
        ("\\t", "\\\\t"),
        ("\\n", "\\\\n"),
        ("\\r", "\\\\r"),
    ):
        expression = f"REPLACE({expression}, '{char}', '{escaped}')"
    return expression


def _zero_date(column: str, kind: str, options: TypeOptions) -> str:
    """What a zero date ('0000-00-00', or a zero month or day) becomes."""
    if options.zero_dates_null:
        return _NULL
    # PostgreSQL rejects this text, naming the column and the option: never a wrong date.
    return f"CONCAT('zero {kind} ', {column}, ' (source.zero_dates is error)')"


def field(column: MyColumn, options: TypeOptions) -> str:
    """The SQL expression of one COPY field (never NULL: NULL becomes ``\\N``)."""
    name = quote(column.name)
    kind = column.data_type
    if kind == "tinyint" and column.boolean and options.tinyint1_as_boolean:
        # A value other than 0 or 1 stays a number, which PostgreSQL refuses as boolean.
        text = f"CASE {name} WHEN 0 THEN 'f' WHEN 1 THEN 't' ELSE {name} END"
    elif kind in ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "year"):
        text = name
    elif kind == "float":
        # FLOAT's own text keeps 6 digits; as DOUBLE it prints the stored value exactly.
        text = f"CAST({name} AS DOUBLE)"
    elif kind == "double":
        text = name  # the shortest text that reads back as the same double
    elif kind == "bit":
        text = f"LPAD(BIN({name} + 0), {column.length}, '0')"
    elif kind in ("char", "varchar", "enum", *TEXTS, "json"):
        text = _copy_escaped(name)
    elif kind == "set":
        # text[] literal: members double-quoted (a member cannot hold a comma).
        members = f"REPLACE(REPLACE({name}, '\\\\', '\\\\\\\\'), '\"', '\\\\\"')"
        text = _copy_escaped(
            f"IF({name} = '', '{{}}', CONCAT('{{\"', REPLACE({members}, ',', '\",\"'), '\"}}'))"
        )
    elif kind in ("binary", "varbinary", *BLOBS, *SPATIAL):
        text = f"CONCAT('\\\\\\\\x', HEX({name}))"
    elif kind in ("date", "datetime"):
        zero = f"YEAR({name}) = 0 OR MONTH({name}) = 0 OR DAYOFMONTH({name}) = 0"
        text = f"IF({zero}, {_zero_date(name, kind, options)}, {name})"
    elif kind == "timestamp":
        zero = f"UNIX_TIMESTAMP({name}) = 0"
        text = f"IF({zero}, {_zero_date(name, kind, options)}, CONCAT({name}, '+00'))"
    elif kind == "time":
        text = name  # [-]HHH:MM:SS[.ffffff], which PostgreSQL reads as an interval
    else:
        raise ValueError(f"no copy expression for MySQL type {kind}")
    return f"IFNULL({text}, {_NULL})"


def select(
    table: TableId,
    columns: tuple[MyColumn, ...],
    options: TypeOptions,
    where: str = "",
) -> str:
    """The SELECT returning one COPY text line (newline included) per row."""
    fields = ", ".join(field(c, options) for c in columns)
    line = f"CAST(CONCAT(CONCAT_WS(CHAR(9), {fields}), CHAR(10)) AS BINARY)"
    return f"SELECT {line} FROM {quote_table(table)}" + (f" WHERE {where}" if where else "")
