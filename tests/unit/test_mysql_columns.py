"""The type table: which PostgreSQL type each MySQL column becomes, and how its text decodes."""

from __future__ import annotations

import pytest

from replicator.errors import SourceError
from replicator.sources.mysql.columns import (
    MyColumn,
    TypeOptions,
    nullable_in_target,
    pg_type,
    python_codec,
    supported_charset,
)

DEFAULTS = TypeOptions()


def column(data_type: str, **fields: object) -> MyColumn:
    return MyColumn(name="c", data_type=data_type, **fields)  # type: ignore[arg-type]


# (information_schema definition, PostgreSQL type): the README's table, row by row.
MAPPING = [
    (column("tinyint"), "smallint"),
    (column("tinyint", unsigned=True), "smallint"),
    (column("smallint"), "smallint"),
    (column("smallint", unsigned=True), "integer"),
    (column("mediumint"), "integer"),
    (column("mediumint", unsigned=True), "integer"),
    (column("int"), "integer"),
    (column("int", unsigned=True), "bigint"),
    (column("bigint"), "bigint"),
    (column("bigint", unsigned=True), "numeric(20,0)"),
    (column("tinyint", boolean=True), "boolean"),
    (column("decimal", precision=10, scale=2), "numeric(10,2)"),
    (column("decimal", precision=65, scale=30), "numeric(65,30)"),
    (column("decimal", precision=5, scale=0), "numeric(5,0)"),
    (column("decimal", precision=12, scale=3, unsigned=True), "numeric(12,3)"),
    (column("float"), "real"),
    (column("double"), "double precision"),
    (column("bit", length=1), "bit(1)"),
    (column("bit", length=64), "bit(64)"),
    (column("year"), "smallint"),
    (column("char", length=10, charset="utf8mb4"), "character(10)"),
    (column("char", length=0, charset="utf8mb4"), "character(1)"),
    (column("varchar", length=255, charset="latin1"), "character varying(255)"),
    (column("varchar", length=0, charset="utf8mb4"), "character varying(1)"),
    (column("tinytext", charset="utf8mb4"), "text"),
    (column("text", charset="ucs2"), "text"),
    (column("mediumtext", charset="utf8mb4"), "text"),
    (column("longtext", charset="utf8mb4"), "text"),
    (column("binary", length=4), "bytea"),
    (column("varbinary", length=10), "bytea"),
    (column("tinyblob"), "bytea"),
    (column("blob"), "bytea"),
    (column("mediumblob"), "bytea"),
    (column("longblob"), "bytea"),
    (column("date"), "date"),
    (column("datetime"), "timestamp(0) without time zone"),
    (column("datetime", fsp=6), "timestamp(6) without time zone"),
    (column("timestamp"), "timestamp(0) with time zone"),
    (column("timestamp", fsp=3), "timestamp(3) with time zone"),
    (column("time", fsp=4), "interval"),
    (column("enum", labels=("a", "b")), "text"),
    (column("set", labels=("a", "b")), "text[]"),
    (column("json"), "jsonb"),
    *[
        (column(kind), "bytea")
        for kind in (
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
    ],
]


@pytest.mark.parametrize(
    ("definition", "expected"), MAPPING, ids=[f"{c.data_type}-{t}" for c, t in MAPPING]
)
def test_every_mysql_type_maps_to_its_postgresql_type(definition: MyColumn, expected: str) -> None:
    """Each MySQL type becomes the PostgreSQL type of the README's table (format_type's
    spelling), wide enough for every value it holds."""
    assert pg_type(definition, DEFAULTS) == expected


def test_tinyint1_is_smallint_when_booleans_are_off() -> None:
    """With tinyint1_as_boolean: false a TINYINT(1) is a smallint like any TINYINT."""
    options = TypeOptions(tinyint1_as_boolean=False)
    assert pg_type(column("tinyint", boolean=True), options) == "smallint"


@pytest.mark.parametrize(
    ("kind", "instead"), [("uuid", "CHAR(36)"), ("inet4", "VARCHAR(15)"), ("inet6", "VARCHAR(45)")]
)
def test_unmapped_types_are_refused_with_the_column_and_a_fix(kind: str, instead: str) -> None:
    """A MariaDB type without a mapping is an error naming the column, its type and what to
    change it to."""
    with pytest.raises(SourceError) as raised:
        pg_type(MyColumn(name="addr", data_type=kind, column_type=kind), DEFAULTS)
    assert raised.value.message.startswith(f"column addr has MySQL type {kind},")
    assert raised.value.fix is not None
    assert "source.tables" in raised.value.fix and f"MODIFY `addr` {instead}" in raised.value.fix


def test_vector_is_refused_too() -> None:
    """Types newer than the mapping (MariaDB 11.7's VECTOR) are refused, not guessed at."""
    with pytest.raises(SourceError, match="column v has MySQL type vector"):
        pg_type(MyColumn(name="v", data_type="vector", column_type="vector(3)"), DEFAULTS)


def test_target_columns_allow_null_as_in_mysql_or_for_zero_dates() -> None:
    """A target column allows NULL when the MySQL column does, and a NOT NULL date, datetime
    or timestamp column does too when its zero dates become NULL."""
    not_null = {kind: column(kind, nullable=False) for kind in ("date", "datetime", "timestamp")}
    for definition in not_null.values():
        assert nullable_in_target(definition, TypeOptions(zero_dates_null=True))
        assert not nullable_in_target(definition, TypeOptions(zero_dates_null=False))
    for kind in ("time", "year", "int", "varchar"):
        assert not nullable_in_target(column(kind, nullable=False), DEFAULTS)
    assert nullable_in_target(column("int"), DEFAULTS)


@pytest.mark.parametrize(
    ("charset", "data", "text"),
    [
        ("latin1", bytes(range(0x80, 0xA0)), "€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ"),
        ("latin1", b"\xa0\xe9\xff", "\xa0éÿ"),
        ("utf8mb3", "ü☃".encode(), "ü☃"),
        ("utf8", "ü☃".encode(), "ü☃"),
        ("ucs2", b"\x00\xfc", "ü"),
        ("utf16", b"\xd8\x3d\xde\x00", "😀"),
        ("ascii", b"abc", "abc"),
        ("koi8r", b"\xf0\xd2\xc9", "При"),
    ],
)
def test_character_sets_decode_as_mysql_does(charset: str, data: bytes, text: str) -> None:
    """Each character set's bytes decode as MySQL reads them: latin1 is cp1252 whose five
    undefined bytes are the C1 controls of the same number."""
    codec, errors = python_codec(charset)
    assert data.decode(codec, errors) == text


def test_an_unknown_character_set_is_refused_with_the_fix() -> None:
    """A character set without a decoder is an error whose fix converts it to utf8mb4."""
    assert not supported_charset("armscii8") and supported_charset("latin1")
    with pytest.raises(SourceError) as raised:
        python_codec("armscii8")
    assert "armscii8" in raised.value.message
    assert raised.value.fix is not None and "utf8mb4" in raised.value.fix
