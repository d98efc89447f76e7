"""Debezium's logical types read into Replicator's values, checked against messages that
Debezium's own PostgreSQL and MySQL connectors wrote (tests/fixtures/debezium)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from replicator.debezium.logical import (
    FieldType,
    decoder,
    field_type,
    parse_iso_duration,
    pg_type,
)
from replicator.errors import SourceError
from replicator.events import UNCHANGED, Interval, RawValue

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debezium"
WITH_SCHEMAS = ["postgres.schemas.json", "postgres.txmeta.json", "mysql.schemas.json"]


@cache
def messages(name: str) -> list[dict[str, Any]]:
    """The captured messages of one fixture file."""
    return list(json.loads((FIXTURES / name).read_text())["messages"])


def row_fields(value: dict[str, Any], part: str) -> dict[str, FieldType]:
    """The field types of the envelope's ``before`` or ``after`` struct."""
    (node,) = [f for f in value["schema"]["fields"] if f["field"] == part]
    return {name: ft for name, ft in field_type(node).fields}


def decoded(value: dict[str, Any], part: str = "after") -> dict[str, Any]:
    """One row image of an envelope, every column through its decoder."""
    fields = row_fields(value, part)
    row = value["payload"][part]
    return {name: decoder(ft, name)(row[name]) for name, ft in fields.items()}


def envelope(name: str, table: str, op: str, row_id: int) -> dict[str, Any]:
    """The value of the one message changing row ``row_id`` of ``table`` with ``op``."""
    found = [
        m["value"]
        for m in messages(name)
        if m["value"]
        and m["topic"].endswith(f".{table}")
        and m["value"]["payload"].get("op") == op
        and (m["value"]["payload"]["after"] or m["value"]["payload"]["before"])["id"] == row_id
    ]
    assert len(found) == 1, f"{len(found)} messages for {table} {op} {row_id}"
    return found[0]


@pytest.mark.parametrize("name", WITH_SCHEMAS)
def test_every_captured_column_decodes(name: str) -> None:
    """Every key and row image of every captured change event decodes, and has a target type."""
    count = 0
    for message in messages(name):
        for part in ("key", "value"):
            data = message[part]
            if not data or "schema" not in data or data["schema"].get("type") != "struct":
                continue
            schema = field_type(data["schema"])
            payload = data["payload"]
            if part == "key":
                for column, ft in schema.fields:
                    decoder(ft, column)(payload[column])
                    pg_type(ft)
                continue
            for image in ("before", "after"):
                if image in dict(schema.fields) and payload.get(image) is not None:
                    decoded(data, image)
                    count += 1
                    for ft in row_fields(data, image).values():
                        assert pg_type(ft)
    assert count > 20


def test_postgres_values_are_the_ones_inserted() -> None:
    """All types of the PostgreSQL table, as the SQL in the fixture's header wrote them."""
    row = decoded(envelope("postgres.schemas.json", "all_types", "r", 1))
    assert row == {
        "id": 1,
        "c_int2": -32768,
        "c_int4": 2147483647,
        "c_int8": -9223372036854775808,
        "c_numeric": Decimal("12345678901234567890.123456789"),
        "c_numeric_10_2": Decimal("12345678.90"),
        "c_real": 3.14,
        "c_double": -2.718281828459045,
        "c_bool": True,
        "c_text": "héllo wörld ✓",
        "c_varchar": "varchar",
        "c_char": "ab   ",
        "c_bytea": b"\x00\xff\x10",
        "c_date": date(2024, 2, 29),
        "c_time": time(23, 59, 59, 999999),
        # Debezium sends timetz in UTC: 12:34:56.789+05:30.
        "c_timetz": time(7, 4, 56, 789000, tzinfo=UTC),
        "c_timestamp3": datetime(2024, 1, 2, 3, 4, 5, 678000),
        "c_timestamp6": datetime(2024, 1, 2, 3, 4, 5, 678901),
        "c_timestamptz": datetime(2024, 1, 2, 1, 4, 5, 678901, tzinfo=UTC),
        # MicroDuration: 1 year 2 months 3 days 04:05:06.789 with 30.4375-day months.
        "c_interval": Interval(microseconds=37091106789000),
        "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "c_json": '{"k": [1, 2.5, "x"], "n": null}',
        "c_jsonb": '{"a": [true], "b": 1}',
        "c_mood": "happy",
        "c_int_array": [1, 2, None, 4],
        "c_text_array": ["a", "b c", None],
        "c_bit": "1010",
        # varbit(16) B'110011': the length is not in the event, so it is padded.
        "c_varbit": "0000000000110011",
        "c_inet": "192.168.1.5/24",
        "c_cidr": "10.0.0.0/8",
        "c_macaddr": "08:00:2b:01:02:03",
        "c_money": Decimal("1234.56"),
    }
    assert set(decoded(envelope("postgres.schemas.json", "all_types", "r", 2)).values()) == {
        2,
        None,
    }


def test_postgres_edge_values() -> None:
    """Zeros, empties, negatives, the infinities and NaN, dates before the epoch."""
    row = decoded(envelope("postgres.schemas.json", "all_types", "c", 3))
    assert math.isinf(row.pop("c_real")) and math.isnan(row.pop("c_double"))
    assert row == {
        "id": 3,
        "c_int2": 0,
        "c_int4": -1,
        "c_int8": 9223372036854775807,
        "c_numeric": Decimal("-0.000001"),
        "c_numeric_10_2": Decimal("-99999999.99"),
        "c_bool": False,
        "c_text": "",
        "c_varchar": "",
        "c_char": "     ",
        "c_bytea": b"",
        "c_date": date(1969, 7, 20),
        "c_time": time(0, 0),
        "c_timetz": time(8, 0, tzinfo=UTC),
        "c_timestamp3": datetime(1900, 1, 1),
        "c_timestamp6": datetime(2038, 1, 19, 3, 14, 7, 999999),
        "c_timestamptz": datetime(2000, 1, 1, 4, 59, 59, 500000, tzinfo=UTC),
        "c_interval": Interval(microseconds=-(86_400_000_000 + 1_000_000)),
        "c_uuid": "00000000-0000-0000-0000-000000000000",
        "c_json": "[]",
        "c_jsonb": "{}",
        "c_mood": "sad",
        "c_int_array": [],
        "c_text_array": [],
        "c_bit": "0000",
        "c_varbit": "0000000000000000",
        "c_inet": "::1",
        "c_cidr": "2001:db8::/32",
        "c_macaddr": "ff:ff:ff:ff:ff:ff",
        "c_money": Decimal("-0.01"),
    }


def test_postgres_target_types() -> None:
    """The column types a target table made from the PostgreSQL events gets."""
    fields = row_fields(envelope("postgres.schemas.json", "all_types", "r", 1), "after")
    assert {name: pg_type(ft) for name, ft in fields.items()} == {
        "id": "integer",
        "c_int2": "smallint",
        "c_int4": "integer",
        "c_int8": "bigint",
        "c_numeric": "numeric",
        "c_numeric_10_2": "numeric(10,2)",
        "c_real": "real",
        "c_double": "double precision",
        "c_bool": "boolean",
        "c_text": "text",
        "c_varchar": "text",
        "c_char": "text",
        "c_bytea": "bytea",
        "c_date": "date",
        "c_time": "time(6) without time zone",
        "c_timetz": "time with time zone",
        "c_timestamp3": "timestamp(3) without time zone",
        "c_timestamp6": "timestamp(6) without time zone",
        "c_timestamptz": "timestamp with time zone",
        "c_interval": "interval",
        "c_uuid": "uuid",
        "c_json": "jsonb",
        "c_jsonb": "jsonb",
        "c_mood": "text",
        "c_int_array": "integer[]",
        "c_text_array": "text[]",
        "c_bit": "bit(4)",
        "c_varbit": "bit(16)",
        "c_inet": "text",
        "c_cidr": "text",
        "c_macaddr": "text",
        "c_money": "numeric",
    }


def test_an_unchanged_toasted_value_is_unchanged() -> None:
    """Debezium's placeholder for a TOASTed value PostgreSQL did not send is UNCHANGED."""
    row = decoded(envelope("postgres.schemas.json", "toasted", "u", 1))
    assert row["body"] is UNCHANGED and row["counter"] == 1


def test_mysql_values_are_the_ones_inserted() -> None:
    """All types of the MySQL table (read from MariaDB) as the SQL wrote them."""
    row = decoded(envelope("mysql.schemas.json", "all_types", "r", 1))
    point = row.pop("c_point")
    assert point[:4] == b"\x00\x00\x00\x00" and len(point) == 4 + 21  # SRID 0, then WKB
    assert row == {
        "id": 1,
        "c_tinyint": -128,
        "c_tinyint_u": 255,
        "c_smallint": -32768,
        "c_smallint_u": 65535,
        "c_mediumint": -8388608,
        "c_mediumint_u": 16777215,
        "c_int": -2147483648,
        "c_int_u": 4294967295,
        "c_bigint": -9223372036854775808,
        # 18446744073709551615 under bigint.unsigned.handling.mode=long (the default).
        "c_bigint_u": -1,
        "c_decimal": Decimal("12345678.1234"),
        "c_float": 3.14,
        "c_double": -2.718281828459045,
        "c_bit": "1010101010",
        "c_bool": 1,
        "c_char": "ab",
        "c_varchar": "Grüße 😀",
        "c_text": "text with ✓ and 😀",
        "c_binary": b"\x00\xff\x10\x20",
        "c_varbinary": b"\xde\xad\xbe\xef",
        "c_blob": b"\x00\x01\x02",
        "c_date": date(2024, 2, 29),
        "c_time": time(12, 34, 56, 789000),
        "c_datetime": datetime(2024, 1, 2, 3, 4, 5, 678901),
        "c_timestamp": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "c_year": 2024,
        "c_enum": "medium",
        "c_set": ["red", "blue"],
        "c_json": '{"k": [1, 2.5, "x"], "n": null}',
    }


def ft(kind: str, logical: str | None = None, **parameters: str) -> FieldType:
    """A field type as a connector would describe it."""
    return FieldType(kind, logical, parameters or None)


def test_connect_and_nano_time_types() -> None:
    """Kafka Connect's own Date/Time/Timestamp and Debezium's nanosecond types."""
    assert decoder(ft("int32", "org.apache.kafka.connect.data.Date"))(-1) == date(1969, 12, 31)
    assert decoder(ft("int32", "org.apache.kafka.connect.data.Time"))(3_723_004) == time(
        1, 2, 3, 4000
    )
    assert decoder(ft("int64", "org.apache.kafka.connect.data.Timestamp"))(-1) == datetime(
        1969, 12, 31, 23, 59, 59, 999000
    )
    assert decoder(ft("int64", "io.debezium.time.NanoTime"))(1_000_001_999) == time(0, 0, 1, 1)
    assert decoder(ft("int64", "io.debezium.time.NanoTimestamp"))(
        1_700_000_000_123_456_789
    ) == datetime(2023, 11, 14, 22, 13, 20, 123456)


def test_values_a_python_type_cannot_hold() -> None:
    """PostgreSQL's 24:00:00 and infinite timestamps, and MySQL TIME beyond a day."""
    micro_time = decoder(ft("int64", "io.debezium.time.MicroTime"))
    assert micro_time(86_400_000_000) == RawValue("24:00:00")
    assert micro_time(-1_000_000) == Interval(microseconds=-1_000_000)
    assert micro_time(90_000_000_000) == Interval(microseconds=90_000_000_000)
    stamp = decoder(ft("int64", "io.debezium.time.MicroTimestamp"))
    assert stamp(2**63 - 1) == RawValue("infinity") and stamp(-(2**63)) == RawValue("-infinity")
    zoned = decoder(ft("string", "io.debezium.time.ZonedTimestamp"))
    assert zoned("infinity") == RawValue("infinity")
    assert zoned("2024-06-01T12:00:00+02:00") == datetime(
        2024, 6, 1, 12, tzinfo=timezone(timedelta(hours=2))
    )


def test_iso_durations_keep_months_and_days_apart() -> None:
    """``interval.handling.mode=string`` durations are exact, negatives included."""
    assert parse_iso_duration("P1Y2M3DT4H5M6.789S") == Interval(14, 3, 14_706_789_000)
    assert parse_iso_duration("P-1DT-1S") == Interval(0, -1, -1_000_000)
    assert parse_iso_duration("-P1M") == Interval(-1, 0, 0)
    assert parse_iso_duration("P2W") == Interval(0, 14, 0)
    assert parse_iso_duration("PT0S") == Interval()
    assert decoder(ft("string", "io.debezium.time.Interval"))("P1M") == Interval(1, 0, 0)
    with pytest.raises(ValueError):
        parse_iso_duration("P")


def test_sets_bits_and_decimals() -> None:
    """Empty sets, varbit with the source type propagated, VariableScaleDecimal zero."""
    assert decoder(ft("string", "io.debezium.data.EnumSet", allowed="a,b"))("") == []
    varbit = FieldType(
        "bytes",
        "io.debezium.data.Bits",
        {"length": "16", "__debezium.source.column.type": "VARBIT"},
    )
    assert decoder(varbit)("Mw==") == "110011" and pg_type(varbit) == "bit varying(16)"
    assert decoder(ft("struct", "io.debezium.data.VariableScaleDecimal"))(
        {"scale": 2, "value": "AA=="}
    ) == Decimal("0.00")
    decimal = ft("bytes", "org.apache.kafka.connect.data.Decimal", scale="3")
    assert decoder(decimal)("/w==") == Decimal("-0.001") and pg_type(decimal) == "numeric"


def test_a_value_of_the_wrong_shape_names_its_column() -> None:
    """A value that does not fit its schema stops with the column, not a traceback."""
    with pytest.raises(SourceError, match="column c_date: cannot read 'tomorrow'"):
        decoder(ft("int32", "io.debezium.time.Date"), "c_date")("tomorrow")
    with pytest.raises(SourceError, match="unknown Kafka Connect type"):
        decoder(ft("uint128"), "weird")
    assert decoder(ft("string"))(None) is None
