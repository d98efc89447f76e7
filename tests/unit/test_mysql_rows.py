"""Binlog row images decode to the values of the type table, from bytes built by hand.

Byte layouts follow MySQL's documentation and source comments: integers little-endian;
DATETIME2 / TIMESTAMP2 / TIME2 big-endian with an offset ("Date and Time Data Type
Representation" in the MySQL internals manual, ``my_time_packed_from_binary``); NEWDECIMAL as
``decimal2bin`` in ``strings/decimal.c`` describes, including its worked example.
"""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from replicator.events import Interval, RawValue
from replicator.sources.mysql import rows
from replicator.sources.mysql.columns import MyColumn, TypeOptions
from replicator.sources.mysql.rows import BadValue, BinlogColumn, RowDecoder, column_reader

NULLS = TypeOptions()
ERRORS = TypeOptions(zero_dates_null=False)


def decode(
    binlog: BinlogColumn,
    data: bytes,
    column: MyColumn | None = None,
    options: TypeOptions = NULLS,
) -> Any:
    """The value of one column's bytes, checking that the reader consumed exactly them."""
    column = column or MyColumn(name=binlog.name, data_type="x", charset=binlog.charset)
    value, end = column_reader(column, binlog, options)(b"\xaa" + data + b"\xbb", 1)
    assert end == 1 + len(data)
    return value


def col(kind: int, **fields: Any) -> BinlogColumn:
    return BinlogColumn(name="c", type=kind, **fields)


def micros(text: str) -> Interval:
    """An Interval of ``[-]H:M:S[.f]``, spelled out."""
    sign = -1 if text.startswith("-") else 1
    hours, minutes, seconds = text.lstrip("-").split(":")
    whole, _, fraction = seconds.partition(".")
    total = (int(hours) * 3600 + int(minutes) * 60 + int(whole)) * 1_000_000
    return Interval(microseconds=sign * (total + int(fraction.ljust(6, "0") or 0)))


# --- integers and numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "unsigned", "data", "expected"),
    [
        (rows.TINY, False, b"\x80", -128),
        (rows.TINY, False, b"\x7f", 127),
        (rows.TINY, True, b"\xff", 255),
        (rows.SHORT, False, b"\x00\x80", -32768),
        (rows.SHORT, True, b"\xff\xff", 65535),
        (rows.INT24, False, b"\x00\x00\x80", -8388608),
        (rows.INT24, False, b"\xff\xff\x7f", 8388607),
        (rows.INT24, False, b"\xff\xff\xff", -1),
        (rows.INT24, True, b"\xff\xff\xff", 16777215),
        (rows.LONG, False, b"\x00\x00\x00\x80", -(2**31)),
        (rows.LONG, True, b"\xff\xff\xff\xff", 2**32 - 1),
        (rows.LONGLONG, False, b"\x00" * 7 + b"\x80", -(2**63)),
        (rows.LONGLONG, False, b"\xff" * 7 + b"\x7f", 2**63 - 1),
        (rows.LONGLONG, True, b"\xff" * 8, 2**64 - 1),
        (rows.LONGLONG, True, b"\x01" + b"\x00" * 7, 1),
    ],
)
def test_integers_are_little_endian_signed_or_unsigned(
    kind: int, unsigned: bool, data: bytes, expected: int
) -> None:
    """Every integer width decodes little-endian, as two's complement unless UNSIGNED."""
    assert decode(col(kind, unsigned=unsigned), data) == expected


def test_tinyint1_is_a_boolean_and_other_values_name_the_option() -> None:
    """TINYINT(1) reads 0 and 1 as booleans; 2 is an error whose fix names
    tinyint1_as_boolean: false; with the option off it stays a number."""
    column = MyColumn(name="flag", data_type="tinyint", boolean=True)
    binlog = BinlogColumn(name="flag", type=rows.TINY)
    assert decode(binlog, b"\x01", column) is True
    assert decode(binlog, b"\x00", column) is False
    with pytest.raises(BadValue) as raised:
        decode(binlog, b"\x02", column)
    assert raised.value.column == "flag" and "holds 2" in raised.value.message
    assert raised.value.fix is not None and "tinyint1_as_boolean: false" in raised.value.fix
    assert decode(binlog, b"\x02", column, TypeOptions(tinyint1_as_boolean=False)) == 2
    assert decode(binlog, b"\xff", column, TypeOptions(tinyint1_as_boolean=False)) == -1


def test_floats_keep_the_stored_float4_and_doubles_their_bits() -> None:
    """FLOAT decodes to the exact float4 value (1.2345678 stays that float4), DOUBLE to its
    64 bits."""
    value = decode(col(rows.FLOAT), bytes.fromhex("51069e3f"))
    assert value == struct.unpack("<f", struct.pack("<f", 1.2345678))[0] == 1.2345677614212036
    assert (
        decode(col(rows.FLOAT), struct.pack("<f", 3.4028234663852886e38)) == 3.4028234663852886e38
    )
    assert decode(col(rows.DOUBLE), bytes.fromhex("343333333333d33f")) == 0.30000000000000004
    assert decode(col(rows.DOUBLE), struct.pack("<d", 5e-324)) == 5e-324


@pytest.mark.parametrize(
    ("precision", "scale", "data", "expected"),
    [
        # decimal2bin's worked example in strings/decimal.c, and its negative.
        (14, 4, "810dfb38d204d2", "1234567890.1234"),
        (14, 4, "7ef204c72dfb2d", "-1234567890.1234"),
        # 8 integer digits in 4 bytes, 2 fraction digits in 1: the scale is kept.
        (10, 2, "8000000132", "1.50"),
        (10, 2, "7ffffffecd", "-1.50"),
        (10, 2, "8000000000", "0.00"),
        (10, 2, "85f5e0ff63", "99999999.99"),
        (4, 4, "84d2", "0.1234"),  # no integer part at all
        (5, 0, "7fcfc6", "-12345"),  # no fraction at all
        (18, 9, "8000000000000001", "0.000000001"),
        (
            65,
            30,
            "85f5e0ff" + "3b9ac9ff" * 6 + "03e7",
            "9" * 35 + "." + "9" * 30,
        ),
        (
            65,
            30,
            "7a0a1f00" + "c4653600" * 6 + "fc18",
            "-" + "9" * 35 + "." + "9" * 30,
        ),
    ],
)
def test_newdecimal_decodes_mysql_binary_decimals(
    precision: int, scale: int, data: str, expected: str
) -> None:
    """NEWDECIMAL decodes to the exact Decimal with the column's scale, either sign."""
    value = decode(col(rows.NEWDECIMAL, precision=precision, decimals=scale), bytes.fromhex(data))
    assert isinstance(value, Decimal) and format(value, "f") == expected
    assert value.as_tuple().exponent == -scale


def test_bits_are_big_endian_bit_strings_of_the_column_width() -> None:
    """BIT(n) decodes big-endian into n binary digits, leading zeros kept."""
    assert decode(col(rows.BIT, bits=1), b"\x01") == RawValue("1")
    assert decode(col(rows.BIT, bits=7), b"\x55") == RawValue("1010101")
    assert decode(col(rows.BIT, bits=10), b"\x02\x01") == RawValue("1000000001")
    assert decode(col(rows.BIT, bits=64), b"\x80" + b"\x00" * 7) == RawValue("1" + "0" * 63)
    assert decode(col(rows.BIT, bits=64), b"\x00" * 8) == RawValue("0" * 64)


def test_year_is_1900_plus_its_byte_and_zero_stays_zero() -> None:
    """YEAR's byte counts from 1900, except 0, which is the year 0000."""
    assert [decode(col(rows.YEAR), bytes([b])) for b in (0, 1, 124, 255)] == [0, 1901, 2024, 2155]


# --- dates and times -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("5dc80f", date(2020, 2, 29)),
        ("9f1f4e", date(9999, 12, 31)),
        ("21d007", date(1000, 1, 1)),
    ],
)
def test_date_is_day_month_year_packed_little_endian(data: str, expected: date) -> None:
    """DATE's 3 bytes are day (5 bits), month (4 bits) and year, little-endian."""
    assert decode(col(rows.DATE), bytes.fromhex(data)) == expected


def test_zero_dates_are_null_or_an_error_naming_the_option() -> None:
    """A zero date, or one with a zero month or day, is NULL under zero_dates: null and an
    error naming the column and zero_dates under zero_dates: error."""
    column = MyColumn(name="born", data_type="date")
    binlog = BinlogColumn(name="born", type=rows.DATE)
    zero_day = (2 << 5 | 2020 << 9).to_bytes(3, "little")
    zero_month = (15 | 2020 << 9).to_bytes(3, "little")
    for data in (b"\x00\x00\x00", zero_day, zero_month):
        assert decode(binlog, data, column) is None
        with pytest.raises(BadValue) as raised:
            decode(binlog, data, column, ERRORS)
        assert "column born" in raised.value.message and "zero_dates" in raised.value.message
    with pytest.raises(BadValue, match="2020-02-00"):
        decode(binlog, zero_day, column, ERRORS)


def test_an_invalid_date_is_an_error_naming_it() -> None:
    """A date no calendar has (MySQL's ALLOW_INVALID_DATES) is an error, never a date."""
    with pytest.raises(BadValue, match="invalid date 2021-02-31"):
        decode(col(rows.DATE), bytes.fromhex("5fca0f"))
    with pytest.raises(BadValue, match="invalid date 2020-02-31 00:00:00"):
        decode(col(rows.DATETIME2), bytes.fromhex("99a5be0000"))


@pytest.mark.parametrize(
    ("fsp", "fraction", "micro"),
    [
        (0, "", 0),
        (1, "32", 500000),  # hundredths: .5
        (2, "63", 990000),
        (3, "04ce", 123000),  # ten-thousandths: .123
        (4, "270f", 999900),
        (5, "01e23a", 123450),  # microseconds
        (6, "0f423f", 999999),
    ],
)
def test_datetime2_decodes_every_fsp(fsp: int, fraction: str, micro: int) -> None:
    """DATETIME2 decodes its 5 bytes and the fraction of every precision, 0 to 6."""
    data = bytes.fromhex("99a5bac8b8" + fraction)
    assert decode(col(rows.DATETIME2, fsp=fsp), data) == datetime(2020, 2, 29, 12, 34, 56, micro)


def test_datetime2_range_and_zero() -> None:
    """DATETIME2 reaches from 1000-01-01 to 9999-12-31 23:59:59.999999; the zero datetime
    (and a zero month) is NULL or an error."""
    assert decode(col(rows.DATETIME2), bytes.fromhex("8cb2420000")) == datetime(1000, 1, 1)
    top = bytes.fromhex("fef3ff7efb0f423f")
    assert decode(col(rows.DATETIME2, fsp=6), top) == datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert decode(col(rows.DATETIME2, fsp=6), bytes.fromhex("8000000000000000")) is None
    assert decode(col(rows.DATETIME2), bytes.fromhex("99a51ea000")) is None
    with pytest.raises(BadValue, match=r"zero date 2020-00-15 10:00:00\b.*zero_dates"):
        decode(col(rows.DATETIME2), bytes.fromhex("99a51ea000"), options=ERRORS)


@pytest.mark.parametrize(
    ("fsp", "fraction", "micro"),
    [(0, "", 0), (1, "0a", 100000), (2, "63", 990000), (3, "0028", 4000), (4, "270f", 999900)]
    + [(5, "000001", 1), (6, "0f423f", 999999)],
)
def test_timestamp2_is_utc_seconds_with_every_fsp(fsp: int, fraction: str, micro: int) -> None:
    """TIMESTAMP2 is big-endian seconds since the epoch plus a fraction: a UTC datetime."""
    data = bytes.fromhex("7fffffff" + fraction)
    expected = datetime(2038, 1, 19, 3, 14, 7, micro, tzinfo=UTC)
    assert decode(col(rows.TIMESTAMP2, fsp=fsp), data) == expected


def test_timestamp2_zero_is_the_zero_timestamp() -> None:
    """TIMESTAMP2 0 is MySQL's zero timestamp (its range starts at second 1): NULL or an
    error; second 1 is 1970-01-01 00:00:01 UTC."""
    assert decode(col(rows.TIMESTAMP2, fsp=3), bytes.fromhex("000000000000")) is None
    with pytest.raises(BadValue, match="zero_dates"):
        decode(col(rows.TIMESTAMP2), b"\x00" * 4, options=ERRORS)
    expected = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert decode(col(rows.TIMESTAMP2), bytes.fromhex("00000001")) == expected


@pytest.mark.parametrize(
    ("fsp", "data", "text"),
    [
        (0, "800000", "00:00:00"),
        (0, "b46efb", "838:59:59"),
        (0, "4b9105", "-838:59:59"),
        (0, "819000", "25:00:00"),
        # my_time_packed_from_binary's own table of negative values with 1-byte fractions.
        (2, "80000000", "00:00:00.00"),
        (2, "7fffffff", "-00:00:00.01"),
        (2, "7fffff9d", "-00:00:00.99"),
        (2, "7fffff00", "-00:00:01.00"),
        (2, "7ffffeff", "-00:00:01.01"),
        (2, "7ffffef6", "-00:00:01.10"),
        (1, "7ffffff6", "-00:00:00.1"),
        (1, "81900032", "25:00:00.5"),
        (3, "7ffffeec78", "-00:00:01.5"),
        (4, "7fffffffff", "-00:00:00.0001"),
        (4, "8010830d80", "01:02:03.3456"),
        (5, "7ffffef85ee0", "-00:00:01.5"),
        (6, "7fef7cfe1dc0", "-01:02:03.123456"),
        (6, "7fffffffffff", "-00:00:00.000001"),
        (6, "b46efb000000", "838:59:59"),
    ],
)
def test_time2_decodes_negative_and_long_durations_at_every_fsp(
    fsp: int, data: str, text: str
) -> None:
    """TIME2 decodes to an interval, negative ones with fractions included, up to 838 h."""
    assert decode(col(rows.TIME2, fsp=fsp), bytes.fromhex(data)) == micros(text)


def test_pre_56_temporal_formats_decode() -> None:
    """The pre-MySQL-5.6 DATETIME (decimal digits in 8 bytes), TIME (signed HHMMSS) and
    TIMESTAMP (4 little-endian seconds) decode too, zero dates included."""
    assert decode(col(rows.DATETIME), bytes.fromhex("80357b3b5f120000")) == datetime(
        2020, 2, 29, 12, 34, 56
    )
    assert decode(col(rows.DATETIME), b"\x00" * 8) is None
    assert decode(col(rows.TIME), bytes.fromhex("c01dfe")) == micros("-12:34:56")
    assert decode(col(rows.TIMESTAMP), b"\x01\x00\x00\x00") == datetime(
        1970, 1, 1, 0, 0, 1, tzinfo=UTC
    )
    with pytest.raises(BadValue, match="zero_dates"):
        decode(col(rows.TIMESTAMP), b"\x00" * 4, options=ERRORS)


# --- strings, enums and sets -----------------------------------------------------------------


def text_column(charset: str, kind: str = "varchar", length: int | None = None) -> MyColumn:
    return MyColumn(name="s", data_type=kind, charset=charset, length=length)


@pytest.mark.parametrize(
    ("charset", "data", "expected"),
    [
        ("utf8mb4", "tab\t😀\\".encode(), "tab\t😀\\"),
        ("utf8mb3", "ü ☃".encode(), "ü ☃"),
        # MySQL's latin1 is cp1252 with 0x81, 0x8D, 0x8F, 0x90 and 0x9D as C1 controls.
        ("latin1", bytes.fromhex("80818d8f909d"), "€\x81\x8d\x8f\x90\x9d"),
        ("latin1", bytes.fromhex("e9ff"), "éÿ"),
        ("ascii", b"plain", "plain"),
        ("ucs2", bytes.fromhex("00fc2603"), "ü☃"),
        ("utf16", bytes.fromhex("d83dde00"), "😀"),
        ("utf16le", bytes.fromhex("3dd800de"), "😀"),
        ("utf32", bytes.fromhex("0001f600"), "😀"),
        ("cp1251", bytes.fromhex("cff0e8"), "При"),
    ],
)
def test_strings_decode_in_their_character_set(charset: str, data: bytes, expected: str) -> None:
    """Character columns decode their bytes as MySQL's character set does."""
    binlog = BinlogColumn(name="s", type=rows.VARCHAR, max_length=40, charset=charset)
    assert decode(binlog, bytes([len(data)]) + data, text_column(charset)) == expected


def test_string_lengths_take_one_byte_up_to_255_and_two_beyond() -> None:
    """VARCHAR and CHAR values carry a 1-byte length up to 255 bytes of column, else 2."""
    short = BinlogColumn(name="s", type=rows.VARCHAR, max_length=255, charset="utf8mb4")
    assert decode(short, b"\x03abc", text_column("utf8mb4")) == "abc"
    wide = BinlogColumn(name="s", type=rows.VARCHAR, max_length=400, charset="utf8mb4")
    assert decode(wide, b"\x2c\x01" + b"x" * 300, text_column("utf8mb4")) == "x" * 300
    char = BinlogColumn(name="s", type=rows.STRING, max_length=400, charset="utf8mb4")
    assert decode(char, b"\x02\x00ab", text_column("utf8mb4", "char", 100)) == "ab"


def test_text_and_blob_lengths_take_their_length_size() -> None:
    """TEXT and BLOB values carry a length of 1 to 4 bytes, as the column's metadata says."""
    for size in (1, 2, 3, 4):
        blob = BinlogColumn(name="b", type=rows.BLOB, length_size=size)
        data = (5).to_bytes(size, "little") + b"\x00\xff\\\n\x00"
        assert decode(blob, data, MyColumn(name="b", data_type="blob")) == b"\x00\xff\\\n\x00"
    text = BinlogColumn(name="t", type=rows.BLOB, length_size=3, charset="utf8mb4")
    assert decode(text, b"\x02\x00\x00\xc3\xbc", text_column("utf8mb4", "mediumtext")) == "ü"


def test_binary_is_padded_with_zero_bytes_and_varbinary_is_not() -> None:
    """BINARY(n) gets back the trailing zero bytes the binlog leaves out, as SELECT shows
    them; VARBINARY and GEOMETRY stay as logged."""
    binary = BinlogColumn(name="b", type=rows.STRING, max_length=4, charset="binary")
    padded = MyColumn(name="b", data_type="binary", length=4)
    assert decode(binary, b"\x02ab", padded) == b"ab\x00\x00"
    assert decode(binary, b"\x00", padded) == b"\x00" * 4
    assert decode(binary, b"\x04abcd", padded) == b"abcd"
    varbinary = BinlogColumn(name="b", type=rows.VARCHAR, max_length=10, charset="binary")
    assert decode(varbinary, b"\x01\x00", MyColumn(name="b", data_type="varbinary")) == b"\x00"
    geometry = BinlogColumn(name="g", type=rows.GEOMETRY, length_size=4)
    wkb = b"\x00\x00\x00\x00\x01\x01\x00\x00\x00" + struct.pack("<dd", 1, 2)
    point = MyColumn(name="g", data_type="point")
    assert decode(geometry, len(wkb).to_bytes(4, "little") + wkb, point) == wkb


def test_text_that_postgresql_cannot_hold_is_an_error() -> None:
    """A NUL character, or bytes invalid in the column's character set, is an error naming
    the column rather than a changed value."""
    binlog = BinlogColumn(name="s", type=rows.VARCHAR, max_length=40, charset="utf8mb4")
    with pytest.raises(BadValue, match="column s holds a NUL"):
        decode(binlog, b"\x03a\x00b", text_column("utf8mb4"))
    with pytest.raises(BadValue, match="column s holds bytes that are not valid utf8mb4"):
        decode(binlog, b"\x02\xc3\x28", text_column("utf8mb4"))


def test_mariadb_json_is_text_and_mysql_json_is_binary() -> None:
    """MariaDB's JSON (LONGTEXT) decodes as its text; MySQL's binary JSON decodes to JSON
    text with the same content."""
    mariadb = BinlogColumn(name="j", type=rows.BLOB, length_size=4, charset="utf8mb4")
    text = b'{"a": [1, 2.50]}'
    json_column = MyColumn(name="j", data_type="json")
    assert (
        decode(mariadb, len(text).to_bytes(4, "little") + text, json_column) == '{"a": [1, 2.50]}'
    )
    mysql = BinlogColumn(name="j", type=rows.JSON, length_size=4)
    # A small object {"a": 1}: count, size, key entry (offset, length), value entry (int16
    # inline), then the key.
    small_object = b"\x00" + bytes.fromhex("01000c000b000100050100") + b"a"
    data = len(small_object).to_bytes(4, "little") + small_object
    assert decode(mysql, data, json_column) == '{"a":1}'
    string = b"\x0c\x04ab\xc3\xbc"  # a JSON string scalar of 4 bytes
    assert decode(mysql, len(string).to_bytes(4, "little") + string, json_column) == '"abü"'


def test_enum_and_set_decode_by_index_and_bitmask() -> None:
    """ENUM's 1- or 2-byte index picks its member (0: the empty invalid value); SET's bitmask
    lists members in definition order."""
    labels = ("a", "b c", "it's")
    enum = BinlogColumn(name="e", type=rows.ENUM, size=1, labels=labels)
    column = MyColumn(name="e", data_type="enum", labels=labels)
    assert [decode(enum, bytes([i]), column) for i in (1, 2, 3, 0)] == ["a", "b c", "it's", ""]
    many = tuple(f"m{i}" for i in range(300))
    wide = BinlogColumn(name="e", type=rows.ENUM, size=2, labels=many)
    assert decode(wide, (257).to_bytes(2, "little"), column) == "m256"
    members = BinlogColumn(name="s", type=rows.SET, size=1, labels=labels)
    assert decode(members, b"\x05", column) == ["a", "it's"]
    assert decode(members, b"\x00", column) == []
    sixty_four = tuple(f"s{i}" for i in range(64))
    full = BinlogColumn(name="s", type=rows.SET, size=8, labels=sixty_four)
    assert decode(full, b"\xff" * 8, column) == list(sixty_four)
    assert decode(full, (1 << 63).to_bytes(8, "little"), column) == ["s63"]


# --- whole row images ------------------------------------------------------------------------


def decoder(*columns: tuple[MyColumn, BinlogColumn]) -> RowDecoder:
    return RowDecoder([column_reader(c, b, NULLS) for c, b in columns])


INT = (MyColumn(name="i", data_type="int"), BinlogColumn(name="i", type=rows.LONG))
NAME = (
    MyColumn(name="n", data_type="varchar", charset="utf8mb4"),
    BinlogColumn(name="n", type=rows.VARCHAR, max_length=40, charset="utf8mb4"),
)
DAY = (MyColumn(name="d", data_type="date"), BinlogColumn(name="d", type=rows.DATE))


def test_null_bitmaps_skip_null_columns_row_by_row() -> None:
    """Each row image starts with a NULL bitmap; NULL columns have no bytes, and rows follow
    each other."""
    data = (
        b"\x00" + struct.pack("<i", 7) + b"\x02hi" + bytes.fromhex("5dc80f")
        + b"\x02" + struct.pack("<i", -1) + bytes.fromhex("5dc80f")
        + b"\x07"
        + b"\x05" + b"\x02ok"
    )  # fmt: skip
    images = decoder(INT, NAME, DAY).images(data, b"\x07", 1)
    assert images == [
        (7, "hi", date(2020, 2, 29)),
        (-1, None, date(2020, 2, 29)),
        (None, None, None),
        (None, "ok", None),
    ]


def test_a_null_bitmap_spans_bytes_beyond_eight_columns() -> None:
    """With nine columns the NULL bitmap takes two bytes, the ninth column's bit in the
    second."""
    nine = decoder(*[INT] * 9)
    data = b"\x00\x01" + b"".join(struct.pack("<i", i) for i in range(8))
    assert nine.images(data, b"\xff\x01", 1) == [(0, 1, 2, 3, 4, 5, 6, 7, None)]


def test_update_images_come_in_pairs_and_partial_images_are_refused() -> None:
    """An update event holds before and after images in pairs; an odd count, or a row event
    that leaves columns out (binlog_row_image not FULL), is an error."""
    one = decoder(INT)
    pair = b"\x00" + struct.pack("<i", 1) + b"\x00" + struct.pack("<i", 2)
    assert one.images(pair, b"\x01", 2) == [(1,), (2,)]
    with pytest.raises(BadValue, match="middle of a row"):
        one.images(pair[:5], b"\x01", 2)
    with pytest.raises(BadValue, match="binlog_row_image"):
        decoder(INT, NAME).images(b"\x00" + struct.pack("<i", 1), b"\x01", 1)
