"""Decoding PostgreSQL text output (pgoutput column values) into Python values."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.events import Interval, RawValue
from replicator.sinks.postgres.copy_format import format_value
from replicator.sources.postgres.values import PgType, decoder_for, parse_array

INT4_ARRAY = 1007
TEXT_ARRAY = 1009


def no_lookup(oid: int) -> PgType:
    raise AssertionError(f"lookup called for built-in type {oid}")


def decode(oid: int, text: str) -> Any:
    return decoder_for(oid, no_lookup)(text)


def catalog(*types: PgType) -> Any:
    """A lookup over a fixed set of user types, recording which OIDs were asked for."""
    by_oid = {t.oid: t for t in types}
    asked: list[int] = []

    def lookup(oid: int) -> PgType:
        asked.append(oid)
        return by_oid[oid]

    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (16, "t", True),
        (16, "f", False),
        (21, "-32768", -32768),
        (23, "2147483647", 2147483647),
        (20, "-9223372036854775808", -9223372036854775808),
        (26, "4294967295", 4294967295),
        (25, "", ""),
        (25, " spaced\ttext\n", " spaced\ttext\n"),
        (1043, "varchar", "varchar"),
        (1042, "ab   ", "ab   "),
        (19, "pg_class", "pg_class"),
        (18, "\\377", "\\377"),
        (17, "\\x", b""),
        (17, "\\x00ff5c", b"\x00\xff\\"),
        (1082, "2000-02-29", date(2000, 2, 29)),
        (1082, "0001-01-01", date(1, 1, 1)),
        (1083, "23:59:59.999999", time(23, 59, 59, 999999)),
        (1083, "12:00:00.5", time(12, 0, 0, 500000)),
        (1114, "2024-01-02 03:04:05.678901", datetime(2024, 1, 2, 3, 4, 5, 678901)),
        (1114, "0099-06-01 00:00:00", datetime(99, 6, 1)),
        (1184, "9999-12-31 23:59:59.999999+00", datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)),
        (
            2950,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (114, '{"a": [1, 2.50],  "b" :null}', '{"a": [1, 2.50],  "b" :null}'),
        (3802, '{"a": [1.50, true]}', '{"a": [1.50, true]}'),
        (869, "192.168.0.1/24", "192.168.0.1/24"),
        (790, "$1,234.56", "$1,234.56"),
        (3904, "[1,10)", "[1,10)"),
        (3220, "16/B374D848", "16/B374D848"),
        (22, "1 2 3", "1 2 3"),
        (30, "1 2", "1 2"),
    ],
)
def test_builtin_types_decode_to_their_documented_python_values(
    oid: int, text: str, expected: Any
) -> None:
    """Each built-in type's text output decodes to the Python value the mapping table names."""
    value = decode(oid, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "1.50",
        "0",
        "0.000",
        "0.0000001",
        "-123456789012345678901234567890.123456789012345678901234567890",
        "9" * 1000 + "." + "1" * 500,
    ],
)
def test_numeric_decodes_exactly_with_its_scale(text: str) -> None:
    """numeric becomes a Decimal with every digit and the display scale of the source."""
    value = decode(1700, text)
    assert isinstance(value, Decimal)
    assert format(value, "f") == text


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_numeric_special_values_become_decimal_specials(text: str) -> None:
    """numeric NaN and ±Infinity are kept as the matching Decimal special values."""
    value = decode(1700, text)
    assert isinstance(value, Decimal)
    assert str(value) == text


@pytest.mark.parametrize("oid", [700, 701])
def test_float_special_values_survive(oid: int) -> None:
    """float4/float8 NaN, ±Infinity and negative zero decode to the same float values."""
    assert math.isnan(decode(oid, "NaN"))
    assert decode(oid, "Infinity") == math.inf
    assert decode(oid, "-Infinity") == -math.inf
    negative_zero = decode(oid, "-0")
    assert negative_zero == 0 and math.copysign(1, negative_zero) == -1
    assert decode(oid, "1.4e-45") == 1.4e-45
    assert decode(oid, "1.7976931348623157e+308") == 1.7976931348623157e308


@pytest.mark.parametrize(
    ("oid", "text"),
    [
        (1082, "infinity"),
        (1082, "-infinity"),
        (1082, "0001-12-31 BC"),
        (1082, "4713-01-01 BC"),
        (1082, "10000-01-01"),
        (1082, "5874897-12-31"),
        (1083, "24:00:00"),
        (1266, "24:00:00+01"),
        (1114, "infinity"),
        (1114, "-infinity"),
        (1114, "0001-01-01 00:00:00 BC"),
        (1114, "294276-12-31 23:59:59.999999"),
        (1184, "infinity"),
        (1184, "-infinity"),
        (1184, "4714-11-24 00:00:00+00 BC"),
        (1184, "10000-01-01 00:00:00+00"),
        (1186, "infinity"),
        (1186, "1 year 2 mons"),
        (1186, "P"),
        (1186, "P1YT"),
    ],
)
def test_values_python_cannot_hold_are_kept_as_raw_text(oid: int, text: str) -> None:
    """Infinite, BC, year > 9999 and 24:00:00 values become a RawValue of the exact text."""
    assert decode(oid, text) == RawValue(text)


def test_timestamptz_decodes_to_an_aware_datetime_in_utc() -> None:
    """timestamptz output under TimeZone=UTC becomes a datetime whose tzinfo is UTC."""
    value = decode(1184, "2024-01-02 03:04:05.5+00")
    assert value == datetime(2024, 1, 2, 3, 4, 5, 500000, UTC)
    assert value.tzinfo is UTC


def test_timestamptz_with_another_offset_is_converted_to_utc() -> None:
    """A timestamptz printed with a non-zero offset still arrives as the same instant in UTC."""
    value = decode(1184, "1900-01-01 00:53:28+00:53:28")
    assert value == datetime(1900, 1, 1, tzinfo=UTC)
    assert value.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("12:00:00+00", timedelta(0)),
        ("12:00:00+05:30", timedelta(hours=5, minutes=30)),
        ("12:00:00+05:30:15", timedelta(hours=5, minutes=30, seconds=15)),
        ("12:00:00-15:59:59", -timedelta(hours=15, minutes=59, seconds=59)),
    ],
)
def test_timetz_keeps_its_offset_including_seconds(text: str, offset: timedelta) -> None:
    """timetz decodes to a time whose fixed-offset tzinfo is the printed offset, to the second."""
    value = decode(1266, text)
    assert value == time(12, 0, tzinfo=timezone(offset))
    assert value.utcoffset() == offset


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT0S", Interval()),
        ("P1Y2M-3DT4H5M6.5S", Interval(14, -3, 14_706_500_000)),
        ("P-1Y-2M", Interval(-14, 0, 0)),
        ("PT-4H-5M-6.789S", Interval(0, 0, -14_706_789_000)),
        ("PT-0.5S", Interval(0, 0, -500_000)),
        ("P1DT-1S", Interval(0, 1, -1_000_000)),
        ("P1M", Interval(1, 0, 0)),
        ("P30D", Interval(0, 30, 0)),
        ("PT0.000001S", Interval(0, 0, 1)),
        ("P-178956970Y-8M", Interval(-(2**31), 0, 0)),
        ("PT2562047788H54.775807S", Interval(0, 0, 2**63 - 1)),
        ("PT-2562047788H-54.775808S", Interval(0, 0, -(2**63))),
    ],
)
def test_interval_decodes_iso_8601_with_a_sign_per_field(text: str, expected: Interval) -> None:
    """An iso_8601 interval keeps months, days and microseconds apart, each with its own sign."""
    assert decode(1186, text) == expected


_INT32 = st.integers(-(2**31), 2**31 - 1)


@given(_INT32, _INT32, st.integers(-(2**63), 2**63 - 1))
def test_interval_isoformat_decodes_back_to_the_same_interval(
    months: int, days: int, micros: int
) -> None:
    """Any Interval written by Interval.isoformat decodes back to an equal Interval."""
    interval = Interval(months, days, micros)
    assert decode(1186, interval.isoformat()) == interval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{ }", []),
        ("{1,2,3}", ["1", "2", "3"]),
        ("{1,NULL,3}", ["1", None, "3"]),
        ("{NULL,null,Null}", [None, None, None]),
        ('{"NULL","null"}', ["NULL", "null"]),
        ("{\\NULL,NULL\\ }", ["NULL", "NULL "]),
        ("{{1,2},{3,4}}", [["1", "2"], ["3", "4"]]),
        ("{{{1}},{{2}}}", [[["1"]], [["2"]]]),
        (
            '{"a b","","x\\\\y","q\\"",NULL,"{","}",","}',
            ["a b", "", "x\\y", 'q"', None, "{", "}", ","],
        ),
        ('{"tab\there","new\nline"}', ["tab\there", "new\nline"]),
        ("{ a , b c ,  d\t}", ["a", "b c", "d"]),
        ("{a\\ , \\ b}", ["a ", " b"]),
        ("{a\\,b,c\\}}", ["a,b", "c}"]),
        ('{ "a" , "b" }', ["a", "b"]),
        (" { {1} , {2} } ", [["1"], ["2"]]),
        ('{{"a",NULL},{NULL,"d"}}', [["a", None], [None, "d"]]),
    ],
)
def test_parse_array_follows_array_in(text: str, expected: list[Any]) -> None:
    """parse_array handles nesting, quoting, escapes, NULLs and whitespace as array_in does."""
    assert parse_array(text, str) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1,2",
        "{",
        "{1,2",
        "{1,,2}",
        "{,1}",
        "{1,}",
        '{"a}',
        '{a"b"}',
        '{"a"b}',
        "{{1,2},{3}}",
        "{{1},{{2}}}",
        "{1,{2}}",
        "{{1},2}",
        "{{}}",
        "{1} x",
        "{a{b}",
    ],
)
def test_parse_array_rejects_malformed_literals(text: str) -> None:
    """Text that array_in would reject raises ValueError instead of being half-parsed."""
    with pytest.raises(ValueError, match="malformed array literal"):
        parse_array(text, str)


def test_parse_array_decodes_elements_with_the_element_decoder() -> None:
    """Non-null elements go through the element decoder; NULL elements become None."""
    assert decode(INT4_ARRAY, "{{1,NULL},{-3,4}}") == [[1, None], [-3, 4]]
    assert [str(v) for v in decode(1231, "{NaN,1.50,-Infinity}")] == ["NaN", "1.50", "-Infinity"]
    assert decode(1001, '{"\\\\x00ff",NULL}') == [b"\x00\xff", None]
    assert decode(1182, '{infinity,2020-01-01,"0001-01-01 BC"}') == [
        RawValue("infinity"),
        date(2020, 1, 1),
        RawValue("0001-01-01 BC"),
    ]
    assert decode(1187, "{P1D,P-1MT2S}") == [Interval(0, 1, 0), Interval(-1, 0, 2_000_000)]
    assert decode(1000, "{t,f,NULL}") == [True, False, None]


def test_parse_array_splits_on_the_given_delimiter() -> None:
    """With delimiter ';' (box), commas belong to the elements."""
    assert parse_array("{(1,1),(0,0);(2,2),(1,1)}", str, ";") == ["(1,1),(0,0)", "(2,2),(1,1)"]


def test_arrays_with_explicit_bounds_are_kept_as_raw_text() -> None:
    """An array printed with bounds decoration keeps its exact text, bounds included."""
    assert decode(INT4_ARRAY, "[0:2]={1,2,3}") == RawValue("[0:2]={1,2,3}")
    assert decode(INT4_ARRAY, "[1:1][2:3]={{1,2}}") == RawValue("[1:1][2:3]={{1,2}}")


def test_box_arrays_are_kept_as_text() -> None:
    """box[] (elements separated by ';') stays its exact text, since a list could not say so."""
    text = "{(1,1),(0,0);(2,2),(1,1)}"
    assert decode(1020, text) == text


def test_array_output_that_is_not_an_array_literal_is_kept_as_raw_text() -> None:
    """An array type whose output is no array literal keeps its exact text rather than failing."""
    lookup = catalog(PgType(90001, "odd[]", "b", elem_oid=23))
    assert decoder_for(90001, lookup)("1 2 3") == RawValue("1 2 3")


@pytest.mark.parametrize(
    "oid",
    [16, 17, 18, 19, 20, 21, 23, 25, 26, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184]
    + [1186, 1266, 1700, 2950, 3802, 869, 650, 829, 1560, 1562, 142, 3614, 600, 603, 3904]
    + [1000, 1001, 1002, 1003, 1005, 1007, 1009, 1014, 1015, 1016, 1020, 1021, 1022, 1028]
    + [1115, 1182, 1183, 1185, 1187, 1231, 1270, 2951, 199, 3807],
)
def test_builtin_types_never_call_the_lookup(oid: int) -> None:
    """Built-in types are decoded from the static table without asking the catalog."""
    assert callable(decoder_for(oid, no_lookup))


def test_enums_decode_to_their_label() -> None:
    """An enum value is its label as a str."""
    lookup = catalog(PgType(90001, "mood", "e"))
    assert decoder_for(90001, lookup)("happy") == "happy"


def test_domains_decode_as_their_base_type() -> None:
    """A domain (also over another domain, or over an array) decodes like its base type."""
    lookup = catalog(
        PgType(90001, "posint", "d", base_oid=23),
        PgType(90002, "small_posint", "d", base_oid=90001),
        PgType(90003, "intlist", "d", base_oid=INT4_ARRAY, elem_oid=23),
        PgType(90004, "label", "d", base_oid=25),
    )
    assert decoder_for(90001, lookup)("42") == 42
    assert decoder_for(90002, lookup)("7") == 7
    assert decoder_for(90003, lookup)("{1,NULL}") == [1, None]
    assert decoder_for(90004, lookup)("hello") == "hello"


def test_user_arrays_decode_their_elements_as_the_element_type() -> None:
    """Arrays of enums and of domains are lists of the element type's values."""
    lookup = catalog(
        PgType(90001, "mood", "e"),
        PgType(90002, "mood[]", "b", elem_oid=90001),
        PgType(90003, "posint", "d", base_oid=23),
        PgType(90004, "posint[]", "b", elem_oid=90003),
    )
    assert decoder_for(90002, lookup)('{happy,NULL,"very sad"}') == ["happy", None, "very sad"]
    assert decoder_for(90004, lookup)("{1,2}") == [1, 2]


@pytest.mark.parametrize("kind", ["c", "r", "m", "p", "b"])
def test_other_user_types_keep_their_exact_text(kind: str) -> None:
    """Composite, range, multirange, pseudo and extension base types decode to their text."""
    lookup = catalog(PgType(90001, "thing", kind))
    assert decoder_for(90001, lookup)('(1,"x y")') == '(1,"x y")'


def test_user_types_are_looked_up_per_call_not_cached_by_oid() -> None:
    """The same OID may be a different type in another database, so it is asked again."""
    enum_db = catalog(PgType(90001, "mood", "e"))
    domain_db = catalog(PgType(90001, "posint", "d", base_oid=23))
    assert decoder_for(90001, enum_db)("1") == "1"
    assert decoder_for(90001, domain_db)("1") == 1
    assert domain_db.asked == [90001]


def test_bytea_escape_format_is_understood_too() -> None:
    """bytea in the escape output format (if a server ignored bytea_output) decodes exactly."""
    assert decode(17, "a\\\\b\\000\\377") == b"a\\b\x00\xff"


# --- round trips through format_value ----------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"))


@st.composite
def _rectangular_arrays(draw: st.DrawFn) -> list[Any]:
    """Lists of str/None shaped like a PostgreSQL array: rectangular, 1-3 dimensions."""
    dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))

    def build(level: int) -> list[Any]:
        if level == len(dims) - 1:
            return [draw(st.none() | _TEXT) for _ in range(dims[level])]
        return [build(level + 1) for _ in range(dims[level])]

    return build(0)


@given(st.just([]) | _rectangular_arrays())
def test_formatted_arrays_parse_back_to_the_same_lists(value: list[Any]) -> None:
    """format_value's array literal for any rectangular list of str/None parses back equal."""
    text = format_value(value)
    assert text is not None
    assert parse_array(text, str) == value


@given(st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=20))
def test_integer_arrays_round_trip_through_the_fast_path(value: list[int | None]) -> None:
    """Integer arrays in array_out's unquoted form decode to the same ints and Nones."""
    text = "{" + ",".join("NULL" if v is None else str(v) for v in value) + "}"
    assert decode(1016, text) == value
