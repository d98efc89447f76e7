"""Writing Python values as PostgreSQL text input and as COPY text-format lines."""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.events import UNCHANGED, Interval, RawValue
from replicator.sinks.postgres.copy_format import copy_row, format_value


class Colour(str, enum.Enum):  # noqa: UP042 - str() of this is "Colour.RED", unlike StrEnum
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, "t"),
        (False, "f"),
        (0, "0"),
        (-9223372036854775808, "-9223372036854775808"),
        (2**70, "1180591620717411303424"),
        (0.1, "0.1"),
        (1e16, "1e+16"),
        (5e-324, "5e-324"),
        (-0.0, "-0.0"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (math.nan, "NaN"),
        (Decimal("1.50"), "1.50"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-0.000"), "-0.000"),
        (Decimal("NaN"), "NaN"),
        (Decimal("sNaN"), "NaN"),
        (Decimal("Infinity"), "Infinity"),
        (Decimal("-Infinity"), "-Infinity"),
        ("", ""),
        ("tab\tnew\nline\\", "tab\tnew\nline\\"),
        (b"", "\\x"),
        (b"\x00\xff\\", "\\x00ff5c"),
        (bytearray(b"\x01"), "\\x01"),
        (memoryview(b"\x02"), "\\x02"),
        (date(1, 1, 1), "0001-01-01"),
        (datetime(2024, 1, 2, 3, 4, 5, 678901), "2024-01-02T03:04:05.678901"),
        (datetime(2024, 1, 2, tzinfo=UTC), "2024-01-02T00:00:00+00:00"),
        (
            datetime(1900, 1, 1, tzinfo=timezone(timedelta(minutes=53, seconds=28))),
            "1900-01-01T00:00:00+00:53:28",
        ),
        (time(23, 59, 59, 999999), "23:59:59.999999"),
        (
            time(12, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15))),
            "12:00:00+05:30:15",
        ),
        (
            time(12, tzinfo=timezone(-timedelta(hours=15, minutes=59, seconds=59))),
            "12:00:00-15:59:59",
        ),
        (UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (Interval(), "PT0S"),
        (Interval(14, -3, 14_706_500_000), "P1Y2M-3DT4H5M6.5S"),
        (Interval(-14, 0, 0), "P-1Y-2M"),
        (Interval(0, 0, -14_706_789_000), "PT-4H-5M-6.789S"),
        (Interval(0, 0, -500_000), "PT-0.5S"),
        (RawValue("infinity"), "infinity"),
        (RawValue("0001-01-01 00:00:00 BC"), "0001-01-01 00:00:00 BC"),
        ({"a": [1, "é"], "b": None}, '{"a": [1, "é"], "b": null}'),
        (Colour.RED, "red"),
        (Level.HIGH, "3"),
    ],
)
def test_values_are_written_as_postgresql_text_input(value: Any, expected: str | None) -> None:
    """Each Python value becomes the text input literal the mapping table documents."""
    assert format_value(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "{}"),
        ((), "{}"),
        ([1, None, 3], '{"1",NULL,"3"}'),
        (["NULL", None, ""], '{"NULL",NULL,""}'),
        (
            ['q"uote', "back\\slash", "a,b", " s ", "{}"],
            '{"q\\"uote","back\\\\slash","a,b"," s ","{}"}',
        ),
        ([[1, 2], [3, None]], '{{"1","2"},{"3",NULL}}'),
        ((("a",), ("b",)), '{{"a"},{"b"}}'),
        ([b"\x00\xff", None], '{"\\\\x00ff",NULL}'),
        ([RawValue("infinity"), date(2020, 1, 1)], '{"infinity","2020-01-01"}'),
        ([Interval(0, 1, 0), Decimal("NaN"), True], '{"P1D","NaN","t"}'),
        ([{"k": "v"}], '{"{\\"k\\": \\"v\\"}"}'),
    ],
)
def test_lists_are_written_as_array_literals(value: Any, expected: str) -> None:
    """Lists and tuples become array literals: elements quoted and escaped, NULL bare, nested."""
    assert format_value(value) == expected


def test_unchanged_is_refused() -> None:
    """UNCHANGED is not a value: formatting it raises ValueError, also inside arrays and rows."""
    with pytest.raises(ValueError, match="UNCHANGED"):
        format_value(UNCHANGED)
    with pytest.raises(ValueError, match="UNCHANGED"):
        format_value([1, UNCHANGED])
    with pytest.raises(ValueError, match="UNCHANGED"):
        copy_row([1, UNCHANGED])


def test_types_without_a_mapping_are_refused() -> None:
    """A value of a type with no defined mapping raises TypeError rather than being guessed."""
    with pytest.raises(TypeError, match="timedelta"):
        format_value(timedelta(seconds=1))
    with pytest.raises(TypeError, match="object"):
        copy_row([object()])


def test_json_that_is_not_json_is_refused() -> None:
    """A dict holding NaN raises instead of producing text PostgreSQL would reject."""
    with pytest.raises(ValueError):
        format_value({"x": math.nan})


def test_copy_row_separates_fields_with_tabs_and_writes_null_as_backslash_n() -> None:
    """A COPY line is the fields joined by tabs, NULL written as \\N, ending in a newline."""
    assert copy_row([1, None, "x", True]) == "1\t\\N\tx\tt\n"
    assert copy_row([]) == "\n"


def test_copy_row_escapes_copy_special_characters() -> None:
    """Backslash, newline, carriage return and tab in a value are escaped for COPY."""
    assert copy_row(["a\\b\nc\rd\te"]) == "a\\\\b\\nc\\rd\\te\n"
    assert copy_row(["\\N", "\\."]) == "\\\\N\t\\\\.\n"


def test_copy_row_escapes_backslashes_in_bytes_raw_values_and_arrays() -> None:
    """Values whose text holds backslashes (bytea, raw text, arrays, JSON) are escaped too."""
    assert copy_row([b"\x01"]) == "\\\\x01\n"
    assert copy_row([RawValue("a\tb")]) == "a\\tb\n"
    assert copy_row([['q"', "t\tab"]]) == '{"q\\\\"","t\\tab"}\n'
    assert copy_row([{"k": "new\nline"}]) == '{"k": "new\\\\nline"}\n'


def test_copy_row_writes_subclasses_as_their_base_type() -> None:
    """A str or int subclass in a row is written (and escaped) like a plain str or int."""
    assert copy_row([Colour.RED, Level.HIGH]) == "red\t3\n"


def _read_copy_line(line: str) -> list[str | None]:
    """Test oracle: PostgreSQL's COPY text-format reading of one line."""
    assert line.endswith("\n")
    escapes = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v", "\\": "\\"}
    fields: list[str | None] = []
    for raw in line[:-1].split("\t"):
        if raw == "\\N":
            fields.append(None)
            continue
        out = []
        i = 0
        while i < len(raw):
            if raw[i] == "\\":
                out.append(escapes.get(raw[i + 1], raw[i + 1]))
                i += 2
            else:
                out.append(raw[i])
                i += 1
        fields.append("".join(out))
    return fields


@given(st.lists(st.none() | st.text(st.characters(codec="utf-8")), min_size=1))
def test_copy_rows_of_text_read_back_to_the_same_values(values: list[str | None]) -> None:
    """Any list of strings and NULLs written by copy_row is read back by COPY unchanged."""
    line = copy_row(values)
    assert line.count("\n") == 1
    assert _read_copy_line(line) == values


@given(st.floats())
def test_floats_are_written_so_that_they_read_back_exactly(value: float) -> None:
    """Every float, NaN and ±Infinity included, is written as text that parses to itself."""
    text = format_value(value)
    assert text is not None
    back = float(text)
    assert back == value or (math.isnan(back) and math.isnan(value))
    assert math.copysign(1, back) == math.copysign(1, value) or math.isnan(value)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_finite_decimals_are_written_positionally_and_read_back_equal(value: Decimal) -> None:
    """A finite Decimal is written without an exponent and parses back to an equal value."""
    text = format_value(value)
    assert text is not None
    assert "E" not in text and "e" not in text
    assert Decimal(text) == value


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
)
def test_intervals_keep_seconds_below_a_minute(months: int, days: int, micros: int) -> None:
    """Interval text carries whole hours and minutes, so its seconds (which PostgreSQL reads
    through a double) stay below 60 and keep all six fractional digits exact."""
    text = format_value(Interval(months, days, micros))
    assert text is not None
    assert text.startswith("P") and " " not in text
    if text.endswith("S"):
        seconds = re.split("[THM]", text)[-1].removesuffix("S")
        assert abs(float(seconds)) < 60
        assert len(seconds.partition(".")[2]) <= 6
