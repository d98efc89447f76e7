"""The SELECT that makes MySQL itself write a table's rows as PostgreSQL ``COPY`` text.

Rows reach the target without being decoded in Python: each row comes back as one binary
string, already a line of PostgreSQL's text COPY format, so the copy is bound by the two
servers rather than by per-value work here. Every expression writes exactly the text that
PostgreSQL reads back into the value the binlog decoder (:mod:`.rows`) produces for the same
row, so a copied row and a streamed row are identical in the target (tested value by value).

Three things about MySQL's string functions shape the expressions:

* every field is converted to utf8mb4, since one ``CONCAT`` of columns in other character
  sets would keep their bytes (latin1, UTF-16) or refuse to mix their collations;
* long text is escaped with ``JSON_QUOTE`` (one linear pass) rather than a chain of
  ``REPLACE``, which copies the rest of the string at every replacement: quadratic, minutes
  for a megabyte of short lines, and a running REPLACE ignores KILL;
* a string function whose result would exceed ``max_allowed_packet`` returns NULL with a
  mere warning; a NULL where the column holds a value stops the copy with an error instead
  (:func:`_fail`), rather than copying NULL in its place.

The session must run with :data:`SESSION_SQL_MODE` (no ``NO_BACKSLASH_ESCAPES``, no
``PAD_CHAR_TO_FULL_LENGTH``) and ``time_zone = '+00:00'``.
"""

from __future__ import annotations

from replicator.events import TableId
from replicator.sources.mysql.columns import (
    BLOBS,
    SPATIAL,
    TEXTS,
    MyColumn,
    TypeOptions,
    bytes_per_char,
)

SESSION_SQL_MODE = "NO_ENGINE_SUBSTITUTION"
_NULL = "'\\\\N'"  # COPY's NULL marker, \N
_SHORT_TEXT = 256  # bytes, in the column's own character set
_FIX_PACKET = "SET GLOBAL max_allowed_packet = 1073741824 on the source, then restart"


def quote(name: str) -> str:
    """A MySQL identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def quote_table(table: TableId) -> str:
    """``db.table`` as a quoted MySQL name."""
    return f"{quote(table.schema)}.{quote(table.name)}"


def _literal(text: str) -> str:
    """A MySQL string literal (backslashes are escapes in :data:`SESSION_SQL_MODE`)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _utf8(expression: str) -> str:
    return f"CONVERT({expression} USING utf8mb4)"


# Character sets whose bytes already are UTF-8: their values need no conversion, only to be
# taken as bytes (so that columns of different collations can be concatenated).
_UTF8_BYTES = ("utf8mb4", "utf8mb3", "utf8", "ascii")


def _as_utf8_bytes(column: MyColumn) -> str:
    name = quote(column.name)
    if column.charset in _UTF8_BYTES:  # (MySQL's JSON has none: it is converted)
        return f"CAST({name} AS BINARY)"
    return f"CAST({_utf8(name)} AS BINARY)"


def _replaced(expression: str) -> str:
    # COPY text gives backslash, tab, newline and carriage return a meaning.
    for char, escaped in (
        ("\\\\", "\\\\\\\\"),
        ("\\t", "\\\\t"),
        ("\\n", "\\\\n"),
        ("\\r", "\\\\r"),
    ):
        expression = f"REPLACE({expression}, '{char}', '{escaped}')"
    return expression


def _always_short(column: MyColumn) -> bool:
    """Whether no value of the column can be longer than :data:`_SHORT_TEXT` bytes."""
    per_char = bytes_per_char(column.charset or "binary")
    if column.data_type in ("char", "varchar") and column.length is not None:
        return column.length * per_char <= _SHORT_TEXT
    if column.data_type == "enum":
        return max((len(label) for label in column.labels), default=0) * per_char <= _SHORT_TEXT
    return column.data_type == "tinytext"


def _copy_text(column: str, expression: str, short: str | None = None) -> str:
    """COPY text of a (non-NULL) column, given as a utf8mb4 ``expression``.

    Short values go through REPLACE, whose quadratic cost is small there and which is the
    quicker for them. Longer ones go through JSON_QUOTE, which writes \\\\, \\", \\b, \\f,
    \\n, \\r and \\t, each of which COPY reads back as the character itself, and every
    other control character as \\u00XX, which COPY would not: a value whose quoted form
    holds ``\\u`` at all (a control character, or a backslash before a 'u') takes REPLACE
    after all.
    """
    replaced = _replaced(expression)
    fast = _replaced(short) if short is not None else replaced
    quoted = f"JSON_QUOTE({expression})"
    inner = f"SUBSTRING({quoted}, 2, CHAR_LENGTH({quoted}) - 2)"
    long = f"IF(LOCATE('\\\\u', {quoted}) = 0, {inner}, {replaced})"
    return f"IF(LENGTH({column}) <= {_SHORT_TEXT}, {fast}, {long})"


def _fail(message: str, witness: str) -> str:
    """An expression that stops the SELECT with ``message`` when evaluated.

    SQL outside a stored program has no way to raise an error of its own; BIGINT UNSIGNED
    arithmetic that overflows fails in every sql_mode, quoting the expression, message
    included. ``witness`` is a non-constant true expression, so that nothing is evaluated
    before a row needs it.
    """
    return f"~0 + ({_literal(message)} IS NOT NULL AND {witness})"


def _zero_date(table: TableId, column: MyColumn, options: TypeOptions) -> str:
    """What a zero date ('0000-00-00', or a zero month or day) becomes."""
    if options.zero_dates_null:
        return _NULL
    # PostgreSQL rejects this text, which names the column and the option: never a wrong date.
    return (
        f"CONCAT('column {_bare(column.name)} of {_bare(str(table))} holds the zero "
        f"{column.data_type} ', {quote(column.name)}, ', which PostgreSQL has no value for "
        "(source.zero_dates is error; set source.zero_dates: null to copy zero dates as "
        "NULL)')"
    )


def _bare(text: str) -> str:
    """Text to put inside a single-quoted literal."""
    return text.replace("\\", "\\\\").replace("'", "''")


def _value(table: TableId, column: MyColumn, options: TypeOptions) -> str:
    """The SQL expression of one column's COPY text, for a row where it is not NULL."""
    name = quote(column.name)
    kind = column.data_type
    if kind == "tinyint" and column.boolean and options.tinyint1_as_boolean:
        # PostgreSQL rejects anything but t and f as a boolean, quoting this text.
        return (
            f"CASE {name} WHEN 0 THEN 'f' WHEN 1 THEN 't' ELSE CONCAT('TINYINT(1) column "
            f"{_bare(column.name)} of {_bare(str(table))} holds ', {name}, ', which is not a "
            "boolean (set source.tinyint1_as_boolean: false to copy TINYINT(1) as "
            "smallint)') END"
        )
    if kind in ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "year"):
        return name
    if kind == "float":
        # FLOAT's own text keeps 6 digits; as DOUBLE it prints the stored value exactly.
        return f"CAST({name} AS DOUBLE)"
    if kind == "double":
        return name  # the shortest text that reads back as the same double
    if kind == "bit":
        return f"LPAD(BIN({name} + 0), {column.length}, '0')"
    if kind in ("char", "varchar", "enum", *TEXTS, "json"):
        # REPLACE on bytes: in UTF-8 no byte of a multi-byte character is ASCII (and on
        # bytes REPLACE costs next to nothing, where charset-aware it costs a third of the
        # whole SELECT).
        if _always_short(column):
            return _replaced(_as_utf8_bytes(column))
        return _copy_text(name, _utf8(name), _as_utf8_bytes(column))
    if kind == "set":
        # text[] literal: members double-quoted (a member cannot hold a comma).
        members = f"REPLACE(REPLACE({_utf8(name)}, '\\\\', '\\\\\\\\'), '\"', '\\\\\"')"
        return _replaced(
            f"IF({name} = '', '{{}}', CONCAT('{{\"', REPLACE({members}, ',', '\",\"'), '\"}}'))"
        )
    if kind in ("binary", "varbinary", *BLOBS, *SPATIAL):
        return f"CONCAT('\\\\\\\\x', HEX({name}))"
    if kind in ("date", "datetime"):
        zero = f"YEAR({name}) = 0 OR MONTH({name}) = 0 OR DAYOFMONTH({name}) = 0"
        return f"IF({zero}, {_zero_date(table, column, options)}, {name})"
    if kind == "timestamp":
        zero = f"UNIX_TIMESTAMP({name}) = 0"
        return f"IF({zero}, {_zero_date(table, column, options)}, CONCAT({name}, '+00'))"
    if kind == "time":
        return name  # [-]HHH:MM:SS[.ffffff], which PostgreSQL reads as an interval
    raise ValueError(f"no copy expression for MySQL type {kind}")


# Types whose COPY text is short and never NULL for a value: no guard against a result
# beyond max_allowed_packet (which a string function would turn into NULL) is needed.
_BOUNDED = (
    "tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float", "double", "year",
    "bit", "date", "datetime", "timestamp", "time",
)  # fmt: skip


def field(table: TableId, column: MyColumn, options: TypeOptions) -> str:
    """The SQL expression of one COPY field (never NULL: NULL becomes ``\\N``)."""
    name = quote(column.name)
    value = _value(table, column, options)
    if column.data_type not in _BOUNDED:
        too_large = _fail(
            f"column {column.name} of {table} holds a value too large to copy: as COPY text "
            f"it exceeds the source's max_allowed_packet; {_FIX_PACKET}",
            f"{name} IS NOT NULL",
        )
        value = f"IFNULL({value}, {too_large})"
    if not column.nullable:
        return value
    return f"IF({name} IS NULL, {_NULL}, {value})"


def select(
    table: TableId,
    columns: tuple[MyColumn, ...],
    options: TypeOptions,
    where: str = "",
) -> str:
    """The SELECT returning one COPY text line (newline included) per row."""
    fields = ", ".join(field(table, c, options) for c in columns)
    line = f"CONCAT(CONCAT_WS(CHAR(9), {fields}), CHAR(10))"
    too_large = _fail(
        f"a row of {table} is too large to copy: as one COPY text line it exceeds the "
        f"source's max_allowed_packet; {_FIX_PACKET}",
        f"ISNULL({line})",
    )
    statement = f"SELECT CAST(IFNULL({line}, {too_large}) AS BINARY) FROM {quote_table(table)}"
    return statement + (f" WHERE {where}" if where else "")
