"""MySQL column definitions and how each lands in PostgreSQL (the README's type table).

A :class:`MyColumn` is one column as MySQL defines it, read either from
``information_schema`` or from a binlog TABLE_MAP event (which carries the definition at
that point of the log). :func:`pg_type` maps it to the PostgreSQL type the target table
gets; the value decoders (:mod:`.rows` for the binlog, :mod:`.copy_sql` for the snapshot)
produce values that read back into that type exactly, so a row copied by the snapshot and
the same row written by the stream are identical in the target.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from replicator.errors import SourceError

INTEGERS = ("tinyint", "smallint", "mediumint", "int", "bigint")
TEXTS = ("tinytext", "text", "mediumtext", "longtext")
BLOBS = ("tinyblob", "blob", "mediumblob", "longblob")
SPATIAL = (
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
)
TEMPORAL = ("date", "datetime", "timestamp")


@dataclass(frozen=True, slots=True)
class MyColumn:
    """One MySQL column, normalised so that both definitions of it compare equal."""

    name: str
    data_type: str  # information_schema DATA_TYPE, lower case ('int', 'varchar', 'json', …)
    unsigned: bool = False
    length: int | None = None  # characters of char/varchar, bytes of binary/varbinary, bits
    precision: int | None = None  # decimal
    scale: int | None = None  # decimal
    fsp: int = 0  # fractional seconds digits of time, datetime and timestamp
    charset: str | None = None  # character set of a character column ('utf8mb4', 'latin1')
    labels: tuple[str, ...] = ()  # enum and set members, in definition order
    nullable: bool = True
    boolean: bool = False  # tinyint(1): MySQL's BOOL
    column_type: str = field(default="", compare=False)  # MySQL's spelling, for messages

    def describe(self) -> str:
        """MySQL's own spelling of the type, for messages."""
        return self.column_type or self.data_type


# The smallest PostgreSQL integer type holding every value (BIGINT UNSIGNED reaches 2^64 - 1).
_SIGNED = {"tinyint": "smallint", "smallint": "smallint", "mediumint": "integer"}
_SIGNED.update(int="integer", bigint="bigint")
_UNSIGNED = {"tinyint": "smallint", "smallint": "integer", "mediumint": "integer"}
_UNSIGNED.update(int="bigint", bigint="numeric(20,0)")


@dataclass(frozen=True, slots=True)
class TypeOptions:
    """The configurable parts of the type mapping."""

    zero_dates_null: bool = True
    tinyint1_as_boolean: bool = True


def pg_type(column: MyColumn, options: TypeOptions) -> str:
    """The PostgreSQL type (as ``format_type`` spells it) a MySQL column is copied into."""
    kind = column.data_type
    if kind in INTEGERS:
        if kind == "tinyint" and column.boolean and options.tinyint1_as_boolean:
            return "boolean"
        return (_UNSIGNED if column.unsigned else _SIGNED)[kind]
    if kind == "decimal":
        return f"numeric({column.precision},{column.scale})"
    if kind == "float":
        return "real"
    if kind == "double":
        return "double precision"
    if kind == "bit":
        return f"bit({column.length})"
    if kind == "year":
        return "smallint"
    if kind == "char":
        # PostgreSQL has no CHAR(0) (which holds '' or NULL); CHAR(1) holds the same.
        return f"character({max(column.length or 0, 1)})"
    if kind == "varchar":
        return f"character varying({max(column.length or 0, 1)})"
    if kind in TEXTS:
        return "text"
    if kind in ("binary", "varbinary", *BLOBS, *SPATIAL):
        return "bytea"
    if kind == "date":
        return "date"
    if kind == "datetime":
        return f"timestamp({column.fsp}) without time zone"
    if kind == "timestamp":
        return f"timestamp({column.fsp}) with time zone"
    if kind == "time":
        return "interval"  # MySQL TIME spans -838:59:59 to 838:59:59: a duration
    if kind == "enum":
        return "text"
    if kind == "set":
        return "text[]"
    if kind == "json":
        return "jsonb"
    instead = _INSTEAD.get(kind)
    change = f"MODIFY `{column.name}` {instead}" if instead else "a type listed in the README"
    raise SourceError(
        f"column {column.name} has MySQL type {column.describe()}, which Replicator cannot "
        "copy yet",
        fix=f"leave the table out of source.tables, or change the column's type "
        f"(ALTER TABLE … {change})",
    )


# What to change a type Replicator does not copy into, keeping its values' text.
_INSTEAD = {"uuid": "CHAR(36)", "inet4": "VARCHAR(15)", "inet6": "VARCHAR(45)"}


def nullable_in_target(column: MyColumn, options: TypeOptions) -> bool:
    """Whether the target column allows NULL: as in MySQL, except that a date column whose
    zero dates become NULL must allow them."""
    if column.nullable:
        return True
    return options.zero_dates_null and column.data_type in TEMPORAL


# --- character sets --------------------------------------------------------------------------

# MySQL character set → Python codec. MySQL's latin1 is Windows-1252 with its five undefined
# bytes mapped to the C1 controls of the same number (see _mysql_latin1 below).
_CODECS = {
    "utf8mb4": "utf-8",
    "utf8mb3": "utf-8",
    "utf8": "utf-8",
    "latin1": "cp1252",
    "ascii": "ascii",
    "latin2": "iso8859-2",
    "latin5": "iso8859-9",
    "latin7": "iso8859-13",
    "greek": "iso8859-7",
    "hebrew": "iso8859-8",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1256": "cp1256",
    "cp1257": "cp1257",
    "cp850": "cp850",
    "cp852": "cp852",
    "cp866": "cp866",
    "koi8r": "koi8_r",
    "koi8u": "koi8_u",
    "macroman": "mac_roman",
    "macce": "mac_latin2",
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "ujis": "euc_jp",
    "eucjpms": "euc_jis_2004",
    "gbk": "gbk",
    "gb2312": "gb2312",
    "gb18030": "gb18030",
    "big5": "big5",
    "euckr": "euc_kr",
    "tis620": "tis-620",
}


# The most bytes one character takes in a character set (1 for those not listed).
_MAX_BYTES = {
    "utf8mb4": 4,
    "utf8mb3": 3,
    "utf8": 3,
    "utf16": 4,
    "utf16le": 4,
    "utf32": 4,
    "ucs2": 2,
    "gbk": 2,
    "gb2312": 2,
    "gb18030": 4,
    "big5": 2,
    "sjis": 2,
    "cp932": 2,
    "ujis": 3,
    "eucjpms": 3,
    "euckr": 2,
}


def bytes_per_char(charset: str) -> int:
    """The most bytes one character of ``charset`` takes."""
    return _MAX_BYTES.get(charset, 1)


def _mysql_latin1(error: UnicodeError) -> tuple[str, int]:
    # Only 0x81, 0x8D, 0x8F, 0x90 and 0x9D are undefined in cp1252; MySQL maps each to the
    # code point of the same value.
    assert isinstance(error, UnicodeDecodeError)
    return chr(error.object[error.start]), error.start + 1


codecs.register_error("replicator-mysql-latin1", _mysql_latin1)


def python_codec(charset: str) -> tuple[str, str]:
    """(codec, error handler) decoding a MySQL character set's bytes as MySQL does."""
    codec = _CODECS.get(charset)
    if codec is None:
        raise SourceError(
            f"the MySQL character set {charset} is not supported",
            fix="convert the column to utf8mb4 (ALTER TABLE … CONVERT TO CHARACTER SET "
            "utf8mb4), or leave the table out of source.tables",
        )
    return codec, "replicator-mysql-latin1" if charset == "latin1" else "strict"


def supported_charset(charset: str) -> bool:
    """Whether :func:`python_codec` can decode the character set."""
    return charset in _CODECS
