"""Which definition a row event is decoded with: information_schema's, when the binlog
logged the same one, else the binlog's own (or a clear stop)."""

from __future__ import annotations

import pytest

from replicator.errors import SourceError
from replicator.events import TableId
from replicator.sources.mysql import catalog, rows
from replicator.sources.mysql.columns import MyColumn, TypeOptions
from replicator.sources.mysql.rows import BinlogColumn
from replicator.sources.mysql.tables import decoding, from_binlog, logged_decoding, matches

TABLE = TableId("db", "t")


def described(
    name: str,
    data_type: str,
    column_type: str,
    *,
    nullable: str = "YES",
    max_chars: int | None = None,
    precision: int | None = None,
    charset: str | None = None,
    json_columns: frozenset[str] = frozenset(),
) -> MyColumn:
    """A column as ``catalog.describe`` reads it from an information_schema.COLUMNS row."""
    row = (name, data_type, column_type, nullable, max_chars, precision, None, None, charset)
    return catalog._column(row, set(json_columns))


def test_enum_and_set_members_are_read_exactly_from_column_type() -> None:
    """ENUM and SET members keep their case, and COLUMN_TYPE's escapes ('' and \\\\, \\n, \\0)
    are undone, so they equal the members the binlog logs."""
    enum = described(
        "e", "enum", r"enum('NULL','It''s','back\\slash','nl\n','x,y',' lead','Zero\0')"
    )
    assert enum.labels == ("NULL", "It's", "back\\slash", "nl\n", "x,y", " lead", "Zero\x00")
    members = described("s", "set", "set('A','b''c','UNSIGNED')")
    assert members.labels == ("A", "b'c", "UNSIGNED") and not members.unsigned


def test_column_type_spelling_decides_unsigned_boolean_and_json() -> None:
    """UNSIGNED and TINYINT(1) are read from COLUMN_TYPE in any case, and a MariaDB LONGTEXT
    with a json_valid check is JSON without a character set."""
    assert described("u", "int", "INT(10) UNSIGNED ZEROFILL").unsigned
    assert described("b", "tinyint", "TINYINT(1)").boolean
    assert not described("b", "tinyint", "tinyint(1) unsigned").boolean
    json = described("j", "longtext", "longtext", charset="utf8mb4", json_columns=frozenset("j"))
    assert (json.data_type, json.charset) == ("json", None)


def varchar(charset: str | None, logged_charset: str | None) -> tuple[MyColumn, BinlogColumn]:
    column = MyColumn(name="v", data_type="varchar", length=20, charset=charset)
    per_char = {"utf8mb4": 4, None: 1}.get(charset, 1)
    binlog = BinlogColumn(
        name="v", type=rows.VARCHAR, max_length=20 * per_char, charset=logged_charset
    )
    return column, binlog


def test_a_collation_unknown_to_the_binlog_library_keeps_the_catalog_character_set() -> None:
    """A column whose collation the library cannot name (MariaDB's uca1400 ones) still
    matches its information_schema definition, and decodes as text, never as bytes."""
    column, binlog = varchar("utf8mb4", None)
    assert matches(column, binlog)
    info = catalog.TableInfo(TABLE, "InnoDB", 0, (column,), ())
    found = decoding(TABLE, (binlog,), (), info, TypeOptions())
    assert found is not None
    assert found.schema.columns[0].type_name == "character varying(20)"
    assert found.decoder.images(b"\x00\x02\xc3\xbc", b"\x01", 1) == [("ü",)]


def test_a_binary_column_never_matches_a_character_column() -> None:
    """A character set change between binary and text is a different definition."""
    assert not matches(*varchar("utf8mb4", "binary"))
    assert not matches(*varchar(None, None))
    assert not matches(*varchar("latin1", "utf8mb4"))
    assert matches(*varchar("latin1", "latin1"))


def test_the_binlog_definition_alone_refuses_an_unknown_character_set() -> None:
    """Decoding from the binlog alone stops, naming the table and column, when a character
    column's collation is unknown, rather than copying its text as bytes."""
    _, binlog = varchar("utf8mb4", None)
    with pytest.raises(SourceError) as raised:
        logged_decoding(TABLE, (binlog,), (), TypeOptions())
    assert "db.t" in raised.value.message and "column v" in raised.value.message
    assert raised.value.fix is not None and "replicator snapshot" in raised.value.fix


@pytest.mark.parametrize(
    ("binlog", "kind", "length"),
    [
        (BinlogColumn(name="c", type=rows.STRING, max_length=40, charset="utf8mb4"), "char", 10),
        (BinlogColumn(name="c", type=rows.VARCHAR, max_length=20, charset="latin1"), "varchar", 20),
        (BinlogColumn(name="c", type=rows.STRING, max_length=4, charset="binary"), "binary", 4),
        (
            BinlogColumn(name="c", type=rows.BLOB, length_size=3, charset="utf8mb4"),
            "mediumtext",
            None,
        ),
        (BinlogColumn(name="c", type=rows.BLOB, length_size=1, charset="binary"), "tinyblob", None),
        (BinlogColumn(name="c", type=rows.BIT, bits=7), "bit", 7),
        (BinlogColumn(name="c", type=rows.TIME2, fsp=3), "time", None),
    ],
)
def test_the_binlog_alone_describes_lengths_and_kinds(
    binlog: BinlogColumn, kind: str, length: int | None
) -> None:
    """From the binlog alone a column gets its kind back, and lengths in characters."""
    column = from_binlog(binlog)
    assert (column.data_type, column.length) == (kind, length)
