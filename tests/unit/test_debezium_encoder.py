"""ChangeEvents written as Debezium JSON envelopes: read back by our decoder, and compared with
what Debezium's own PostgreSQL and MySQL connectors wrote for the same rows
(tests/fixtures/debezium)."""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import pytest

from replicator.debezium.encoder import EnvelopeEncoder
from replicator.debezium.envelope import Change, Tombstone, read_message
from replicator.debezium.logical import UNAVAILABLE
from replicator.errors import SinkError
from replicator.events import (
    UNCHANGED,
    ChangeEvent,
    Column,
    Interval,
    Op,
    RawValue,
    Row,
    TableId,
    TableSchema,
    TypeDefinition,
)
from replicator.sources.mysql.position import MysqlPosition
from replicator.sources.postgres.position import PgPosition

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debezium"
COMMIT = datetime(2026, 12, 1, 11, 26, 30, 48982, tzinfo=UTC)
MOOD = TypeDefinition("public", "mood", "enum", labels=("sad", "ok", "happy"))


def table(
    name: str,
    columns: list[tuple[str, str, bool]],
    key: tuple[str, ...] = ("id",),
    *,
    schema: str = "public",
    types: tuple[TypeDefinition, ...] = (),
    dialect: str = "postgres",
) -> TableSchema:
    """A table definition from (column, PostgreSQL type, nullable) triples."""
    return TableSchema(
        table=TableId(schema, name),
        columns=tuple(Column(n, t, nullable=nullable) for n, t, nullable in columns),
        key=key,
        types=types,
        dialect=dialect,
    )


def change(
    op: Op,
    schema: TableSchema,
    after: Row | None = None,
    before: Row | None = None,
    key: Row | None = None,
    position: Any = None,
    commit_ts: datetime | None = COMMIT,
    txid: int | None = 745,
) -> ChangeEvent:
    """A change event; its key is taken from the row unless given."""
    if key is None and schema.key and op is not Op.TRUNCATE:
        image = after if after is not None else before
        assert image is not None
        key = {k: image[k] for k in schema.key}
    return ChangeEvent(
        op=op,
        schema=schema,
        key=key,
        before=before,
        after=after,
        position=position if position is not None else PgPosition(26490640, 1),
        commit_ts=commit_ts,
        txid=txid,
    )


def decoded(encoder: EnvelopeEncoder, event: ChangeEvent) -> Change:
    """The event encoded, then read back by our decoder."""
    key, value = encoder.encode(event)
    message = read_message(key, value)
    assert isinstance(message, Change)
    return message


@cache
def fixture(name: str) -> list[dict[str, Any]]:
    """The captured messages of one fixture file."""
    return list(json.loads((FIXTURES / name).read_text())["messages"])


def captured(name: str, table_name: str, op: str, nth: int = 0) -> dict[str, Any]:
    """The ``nth`` message with ``op`` on one table's topic: its key and value."""
    found = [
        m
        for m in fixture(name)
        if m["topic"].endswith(f".{table_name}")
        and m["value"]
        and m["value"].get("payload", m["value"]).get("op") == op  # with or without schemas
    ]
    return found[nth]


def as_json(data: bytes | None) -> Any:
    """Message bytes parsed (None stays None)."""
    return None if data is None else json.loads(data)


# -- round trips ----------------------------------------------------------------------------


@dataclass
class Case:
    """Values of one column type and what our decoder gives back for them."""

    type_name: str
    values: list[Any]
    read_back_type: str
    expected: list[Any] | None = None  # None: the values themselves
    types: tuple[TypeDefinition, ...] = ()
    dialect: str = "postgres"
    same_json: bool = False  # without schemas, the JSON value is the Python value
    id: str = field(default="")


PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
CASES = [
    Case("boolean", [True, False], "boolean", same_json=True),
    Case("smallint", [-32768, 0, 32767], "smallint", same_json=True),
    Case("integer", [2147483647, -1], "integer", same_json=True),
    Case("bigint", [-(2**63), 2**63 - 1], "bigint", same_json=True),
    Case("oid", [4294967295], "bigint", same_json=True),
    Case("real", [3.14, -0.0, math.inf, -math.inf, math.nan], "real"),
    Case("double precision", [-2.718281828459045, 1e300, -math.inf], "double precision"),
    Case(
        "numeric",
        [Decimal("12345678901234567890.123456789"), Decimal("1.50"), Decimal("-0.000001")],
        "numeric",
    ),
    Case("numeric(10,2)", [Decimal("12345678.90"), Decimal("-99999999.99")], "numeric(10,2)"),
    Case(
        "numeric(20,0)",
        [18446744073709551615, 0],  # MySQL's BIGINT UNSIGNED arrives as an int
        "numeric(20,0)",
        [Decimal(18446744073709551615), Decimal(0)],
        dialect="mysql",
    ),
    Case(
        "money",
        ["$1,234.56", "-$0.01", "($5.00)"],
        "numeric",
        [Decimal("1234.56"), Decimal("-0.01"), Decimal("-5.00")],
    ),
    Case("text", ["héllo wörld ✓", ""], "text", same_json=True),
    Case("character varying(20)", ["varchar"], "text", same_json=True),
    Case("character(5)", ["ab   "], "text", same_json=True),
    Case('"char"', ["x"], "text", same_json=True),
    Case("bytea", [b"\x00\xff\x10", b""], "bytea"),
    Case(
        "date",
        [date(2024, 2, 29), date(1969, 7, 20), date(1, 1, 1), date(9999, 12, 31)],
        "date",
    ),
    Case(
        "time without time zone",
        [time(23, 59, 59, 999999), time(0), RawValue("24:00:00")],
        "time(6) without time zone",
    ),
    Case(
        "time(3) with time zone",
        [time(12, 34, 56, 789000, tzinfo=PLUS_0530), time(0, tzinfo=UTC)],
        "time with time zone",
    ),
    Case(
        "timestamp(3) without time zone",
        [datetime(2024, 1, 2, 3, 4, 5, 678000), datetime(1900, 1, 1)],
        "timestamp(3) without time zone",
    ),
    Case(
        "timestamp without time zone",
        [
            datetime(2038, 1, 19, 3, 14, 7, 999999),
            datetime(1, 1, 1),
            RawValue("infinity"),
            RawValue("-infinity"),
        ],
        "timestamp(6) without time zone",
    ),
    Case(
        "timestamp with time zone",
        [
            datetime(2024, 1, 2, 1, 4, 5, 678901, tzinfo=UTC),
            datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2024, 1, 2, 6, 34, 5, 1, tzinfo=PLUS_0530),
            RawValue("infinity"),
            RawValue("-infinity"),
        ],
        "timestamp with time zone",
    ),
    Case(
        "timestamp(0) with time zone",
        [datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)],
        "timestamp with time zone",
        dialect="mysql",
    ),
    Case(
        "interval",
        [
            Interval(14, 3, (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 789000),
            Interval(0, -1, -1_000_000),
            Interval(-14, 0, 500_000),
            Interval(),
            Interval(microseconds=-3_723_500_000),  # MySQL's TIME '-01:02:03.500'
        ],
        "interval",
    ),
    Case(
        "uuid",
        [UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")],
        "uuid",
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],  # the decoder keeps uuids as text
    ),
    Case("json", ['{"k": [1, 2.5, "x"], "n": null}', "[]"], "jsonb", same_json=True),
    Case("jsonb", ['{"a": [true], "b": 1}', {"parsed": [1]}], "jsonb", [None, '{"parsed":[1]}']),
    Case("public.mood", ["happy", "sad"], "text", types=(MOOD,), same_json=True),
    Case("integer[]", [[1, 2, None, 4], []], "integer[]", same_json=True),
    Case("text[]", [["a", "b c", None]], "text[]", same_json=True),
    Case("numeric(10,2)[]", [[Decimal("1.50"), None]], "numeric(10,2)[]"),
    Case(
        "timestamp with time zone[]",
        [[datetime(2024, 1, 2, tzinfo=UTC), None]],
        "timestamp with time zone[]",
    ),
    Case("public.mood[]", [["ok", "sad"]], "text[]", types=(MOOD,), same_json=True),
    Case("bit(4)", ["1010", "0000", "0001"], "bit(4)"),
    Case("bit(10)", [RawValue("1010101010")], "bit(10)", ["1010101010"], dialect="mysql"),
    Case("bit(1)", ["1", "0"], "boolean", [True, False]),
    Case("bit varying(16)", ["110011", "1"], "bit varying(16)"),
    Case("bit varying", ["0011"], "text", same_json=True),
    Case("inet", ["192.168.1.5/24"], "text", same_json=True),
    Case("macaddr", ["08:00:2b:01:02:03"], "text", same_json=True),
    Case("xml", ["<a>b</a>"], "xml", same_json=True),
    Case(
        "public.posint",
        [5],
        "integer",
        types=(TypeDefinition("public", "posint", "domain", base_type="integer"),),
        same_json=True,
    ),
    Case(
        "public.pair",
        ["(1,2)"],
        "text",
        types=(TypeDefinition("public", "pair", "composite", attributes=(("a", "integer"),)),),
        same_json=True,
    ),
    Case("box[]", ["(1,1),(0,0);(2,2),(1,1)"], "text", same_json=True),
    Case("point", ["(1.5,-2.25)"], "text", same_json=True),
    Case("bytea", [b"\x00\x00\x00\x00\x01\x01\x00\x00\x00"], "bytea", dialect="mysql"),
    Case("text[]", [["red", "blue"], []], "text[]", dialect="mysql", same_json=True),
]
for case in CASES:
    case.id = f"{case.dialect}:{case.type_name}"


def one_column(case: Case) -> TableSchema:
    """A table of an int key and one column of the case's type."""
    return table(
        "t",
        [("id", "integer", False), ("c", case.type_name, True)],
        types=case.types,
        dialect=case.dialect,
    )


def position(dialect: str, row: int) -> Any:
    """A source position of the dialect."""
    if dialect == "mysql":
        return MysqlPosition("binlog.000003", 4711, "0-1-57", row)
    return PgPosition(26490640 + row, 1)


def same(got: Any, expected: Any) -> bool:
    """Equal and of the same type (NaN equal to NaN)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(got)
    return bool(got == expected)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_type_reads_back_as_its_value_and_column_type(case: Case) -> None:
    """With schemas, each value reads back equal and the column as the PostgreSQL type
    Debezium's schema can name."""
    encoder = EnvelopeEncoder(server_name="srv", database="shop")
    schema = one_column(case)
    expected = case.expected or case.values
    for i, (value, want) in enumerate(zip(case.values, expected, strict=True)):
        want = value if want is None else want
        got = decoded(
            encoder,
            change(Op.INSERT, schema, {"id": i, "c": value}, position=position(case.dialect, i)),
        )
        assert got.after is not None
        assert same(got.after["c"], want), (value, got.after["c"])
        assert got.columns is not None
        assert [(c.name, c.type_name) for c in got.columns] == [
            ("id", "integer"),
            ("c", case.read_back_type),
        ]
        assert [c.nullable for c in got.columns] == [False, True]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_without_schemas_the_payload_is_the_same_json(case: Case) -> None:
    """schemas=False writes the payload alone, identical to the wrapped one; values that
    are JSON values themselves read back equal."""
    with_schemas = EnvelopeEncoder(server_name="srv", database="shop")
    without = EnvelopeEncoder(server_name="srv", database="shop", schemas=False)
    schema = one_column(case)
    for value in case.values:
        event = change(Op.INSERT, schema, {"id": 1, "c": value}, position=position(case.dialect, 1))
        key, wrapped = with_schemas.encode(event)
        bare_key, bare = without.encode(event)
        assert as_json(bare)["after"] == as_json(wrapped)["payload"]["after"]
        assert as_json(bare_key) == as_json(key)["payload"] == {"id": 1}
        message = read_message(bare_key, bare)
        assert isinstance(message, Change) and message.columns is None
        assert message.key_columns == ("id",) and message.after is not None
        if case.same_json:
            assert message.after["c"] == value


def test_nan_floats_are_written_as_jsonconverter_writes_them() -> None:
    """Float NaN and the infinities are the strings JsonConverter writes, and read back."""
    schema = table(
        "t", [("id", "integer", False), ("r", "real", True), ("d", "double precision", True)]
    )
    encoder = EnvelopeEncoder(server_name="srv", database="shop", schemas=False)
    row = {"id": 1, "r": math.nan, "d": -math.inf}
    _, value = encoder.encode(change(Op.INSERT, schema, row))
    assert as_json(value)["after"] == {"id": 1, "r": "NaN", "d": "-Infinity"}
    got = decoded(
        EnvelopeEncoder(server_name="srv", database="shop"), change(Op.INSERT, schema, row)
    )
    assert got.after is not None and math.isnan(got.after["r"]) and got.after["d"] == -math.inf


def test_unconstrained_numeric_keeps_its_scale() -> None:
    """1.50 stays 1.50 (Debezium would strip it to 1.5)."""
    schema = table("t", [("id", "integer", False), ("n", "numeric", True)])
    got = decoded(
        EnvelopeEncoder(server_name="srv", database="shop"),
        change(Op.INSERT, schema, {"id": 1, "n": Decimal("1.50")}),
    )
    assert got.after is not None and str(got.after["n"]) == "1.50"


def test_values_python_cannot_hold_are_written_as_debezium_computes_them() -> None:
    """BC and far-future dates and timestamps become the epoch numbers and ISO text of the
    proleptic Gregorian calendar."""
    schema = table(
        "t",
        [
            ("id", "integer", False),
            ("d", "date", True),
            ("ts", "timestamp without time zone", True),
            ("tz", "timestamp with time zone", True),
        ],
    )
    encoder = EnvelopeEncoder(server_name="srv", database="shop", schemas=False)
    row = {
        "id": 1,
        "d": RawValue("0001-01-01 BC"),
        "ts": RawValue("0044-03-15 12:00:00.5 BC"),
        "tz": RawValue("10000-01-01 00:00:00+00"),
    }
    after = as_json(encoder.encode(change(Op.INSERT, schema, row))[1])["after"]

    # 400 Gregorian years are 146097 days: year 0 (1 BC) is 400 AD less one cycle.
    def days(year: int, month: int, day: int) -> int:
        return date(year + 400, month, day).toordinal() - date(1970, 1, 1).toordinal() - 146097

    assert after["d"] == days(0, 1, 1)
    assert after["ts"] == (days(-43, 3, 15) * 86400 + 12 * 3600) * 1_000_000 + 500_000
    assert after["tz"] == "+10000-01-01T00:00:00.000000Z"
    infinite = {"id": 2, "d": RawValue("infinity"), "ts": None, "tz": None}
    after = as_json(encoder.encode(change(Op.INSERT, schema, infinite))[1])["after"]
    assert after["d"] == 2**31 - 1


def test_leading_zeros_of_a_bit_varying_value_are_lost_as_in_debezium() -> None:
    """Debezium's Bits carry the number, not the length: varbit '0011' reads back as '11'."""
    schema = table("t", [("id", "integer", False), ("b", "bit varying(8)", True)])
    got = decoded(
        EnvelopeEncoder(server_name="srv", database="shop"),
        change(Op.INSERT, schema, {"id": 1, "b": "0011"}),
    )
    assert got.after == {"id": 1, "b": "11"}


# -- decimal handling -----------------------------------------------------------------------


DECIMALS = table(
    "t",
    [
        ("id", "integer", False),
        ("n", "numeric", True),
        ("m", "numeric(10,2)", True),
        ("cash", "money", True),
    ],
)
DECIMAL_ROW: Row = {"id": 1, "n": Decimal("1E-7"), "m": Decimal("1.50"), "cash": "$1,234.56"}


@pytest.mark.parametrize(
    ("mode", "kind", "expected"),
    [
        ("string", "string", {"n": "0.0000001", "m": "1.50", "cash": "1234.56"}),
        ("double", "double", {"n": 1e-7, "m": 1.5, "cash": 1234.56}),
    ],
)
def test_decimal_handling_string_and_double(
    mode: Literal["string", "double"], kind: str, expected: dict[str, Any]
) -> None:
    """string writes decimals as plain text, double as floats, NaN and the infinities
    included."""
    encoder = EnvelopeEncoder(server_name="srv", database="shop", decimal_handling=mode)
    value = as_json(encoder.encode(change(Op.INSERT, DECIMALS, DECIMAL_ROW))[1])
    nodes = list(fields(row_schema(value)).values())[1:]
    assert nodes == [{"type": kind, "optional": True, "field": f} for f in ("n", "m", "cash")]
    assert {k: value["payload"]["after"][k] for k in expected} == expected
    special = {**DECIMAL_ROW, "n": Decimal("NaN"), "m": Decimal("-Infinity")}
    after = as_json(encoder.encode(change(Op.INSERT, DECIMALS, special))[1])["payload"]["after"]
    assert (after["n"], after["m"]) == ("NaN", "-Infinity")


def test_double_decimals_read_back_as_double_precision() -> None:
    """With decimal_handling double, NaN reads back as a float NaN in a double column."""
    got = decoded(
        EnvelopeEncoder(server_name="srv", database="shop", decimal_handling="double"),
        change(Op.INSERT, DECIMALS, {**DECIMAL_ROW, "n": Decimal("NaN")}),
    )
    assert got.after is not None and math.isnan(got.after["n"])
    assert got.columns is not None and got.columns[1].type_name == "double precision"


def test_nan_in_precise_mode_is_refused_with_the_fix() -> None:
    """NaN and the infinities have no Kafka Connect Decimal: the event is refused, naming
    the column and the setting that can carry them."""
    schema = table(
        "t", [("id", "integer", False), ("n", "numeric(10,2)", True), ("v", "numeric", True)]
    )
    encoder = EnvelopeEncoder(server_name="srv", database="shop")
    for row in (
        {"id": 1, "n": Decimal("NaN"), "v": None},
        {"id": 1, "n": None, "v": Decimal("Infinity")},
    ):
        with pytest.raises(SinkError, match=r"column [nv] \(numeric") as raised:
            encoder.encode(change(Op.INSERT, schema, row))
        assert raised.value.fix is not None and "decimal_handling" in raised.value.fix


def test_decimal_handling_is_checked() -> None:
    """An unknown decimal_handling is a ValueError at construction."""
    with pytest.raises(ValueError, match="decimal_handling"):
        EnvelopeEncoder(server_name="srv", database="shop", decimal_handling="exact")  # type: ignore[arg-type]


# -- compatibility with Debezium's own messages ---------------------------------------------

PG_ALL_TYPES = table(
    "all_types",
    [
        ("id", "integer", False),
        ("c_int2", "smallint", True),
        ("c_int4", "integer", True),
        ("c_int8", "bigint", True),
        ("c_numeric", "numeric", True),
        ("c_numeric_10_2", "numeric(10,2)", True),
        ("c_real", "real", True),
        ("c_double", "double precision", True),
        ("c_bool", "boolean", True),
        ("c_text", "text", True),
        ("c_varchar", "character varying(20)", True),
        ("c_char", "character(5)", True),
        ("c_bytea", "bytea", True),
        ("c_date", "date", True),
        ("c_time", "time without time zone", True),
        ("c_timetz", "time with time zone", True),
        ("c_timestamp3", "timestamp(3) without time zone", True),
        ("c_timestamp6", "timestamp(6) without time zone", True),
        ("c_timestamptz", "timestamp with time zone", True),
        ("c_interval", "interval", True),
        ("c_uuid", "uuid", True),
        ("c_json", "json", True),
        ("c_jsonb", "jsonb", True),
        ("c_mood", "public.mood", True),
        ("c_int_array", "integer[]", True),
        ("c_text_array", "text[]", True),
        ("c_bit", "bit(4)", True),
        ("c_varbit", "bit varying(16)", True),
        ("c_inet", "inet", True),
        ("c_cidr", "cidr", True),
        ("c_macaddr", "macaddr", True),
        ("c_money", "money", True),
    ],
    types=(MOOD,),
)
# The rows of POSTGRES_SETUP (capture.py) as the PostgreSQL source hands them over.
PG_ROW_1: Row = {
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
    "c_timetz": time(12, 34, 56, 789000, tzinfo=PLUS_0530),
    "c_timestamp3": datetime(2024, 1, 2, 3, 4, 5, 678000),
    "c_timestamp6": datetime(2024, 1, 2, 3, 4, 5, 678901),
    "c_timestamptz": datetime(2024, 1, 2, 1, 4, 5, 678901, tzinfo=UTC),
    "c_interval": Interval(14, 3, (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 789000),
    "c_uuid": UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    "c_json": '{"k": [1, 2.5, "x"], "n": null}',
    "c_jsonb": '{"a": [true], "b": 1}',
    "c_mood": "happy",
    "c_int_array": [1, 2, None, 4],
    "c_text_array": ["a", "b c", None],
    "c_bit": "1010",
    "c_varbit": "110011",
    "c_inet": "192.168.1.5/24",
    "c_cidr": "10.0.0.0/8",
    "c_macaddr": "08:00:2b:01:02:03",
    "c_money": "$1,234.56",
}
PG_ROW_3: Row = {
    "id": 3,
    "c_int2": 0,
    "c_int4": -1,
    "c_int8": 9223372036854775807,
    "c_numeric": Decimal("-0.000001"),
    "c_numeric_10_2": Decimal("-99999999.99"),
    "c_real": math.inf,
    "c_double": math.nan,
    "c_bool": False,
    "c_text": "",
    "c_varchar": "",
    "c_char": "     ",
    "c_bytea": b"",
    "c_date": date(1969, 7, 20),
    "c_time": time(0),
    "c_timetz": time(0, tzinfo=timezone(timedelta(hours=-8))),
    "c_timestamp3": datetime(1900, 1, 1),
    "c_timestamp6": datetime(2038, 1, 19, 3, 14, 7, 999999),
    "c_timestamptz": datetime(2000, 1, 1, 4, 59, 59, 500000, tzinfo=UTC),
    "c_interval": Interval(0, -1, -1_000_000),
    "c_uuid": UUID("00000000-0000-0000-0000-000000000000"),
    "c_json": "[]",
    "c_jsonb": "{}",
    "c_mood": "sad",
    "c_int_array": [],
    "c_text_array": [],
    "c_bit": "0000",
    "c_varbit": "",
    "c_inet": "::1",
    "c_cidr": "2001:db8::/32",
    "c_macaddr": "ff:ff:ff:ff:ff:ff",
    "c_money": "-$0.01",
}
PG = EnvelopeEncoder(server_name="postgres_schemas", database="shop")
PG_BARE = EnvelopeEncoder(server_name="postgres_noschemas", database="shop", schemas=False)


def fields(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A struct schema's fields by name."""
    return {f["field"]: f for f in node["fields"]}


def row_schema(value: dict[str, Any]) -> dict[str, Any]:
    """The ``after`` struct of an envelope's schema."""
    return fields(value["schema"])["after"]


def test_postgres_schemas_are_debeziums_but_for_the_documented_columns() -> None:
    """The all_types value schema equals the one Debezium wrote, except interval (string
    mode) and bit varying (its propagated source type); the key schema is identical."""
    theirs = captured("postgres.schemas.json", "all_types", "r")
    key, value = PG.encode(
        change(Op.READ, PG_ALL_TYPES, PG_ROW_1, position=PgPosition(26490408, 1))
    )
    ours = as_json(value)
    assert as_json(key) == theirs["key"]
    expected = json.loads(json.dumps(theirs["value"]["schema"]))
    for part in ("before", "after"):
        columns = fields(fields(expected)[part])
        assert columns["c_interval"]["name"] == "io.debezium.time.MicroDuration"
        columns["c_interval"].update(type="string", name="io.debezium.time.Interval")
        columns["c_varbit"]["parameters"].update(
            {"__debezium.source.column.type": "VARBIT", "__debezium.source.column.length": "16"}
        )
    # Compared as text, so that the order of fields and of their attributes counts too.
    assert json.dumps(ours["schema"]) == json.dumps(expected)


@pytest.mark.parametrize(("row", "op", "nth"), [(PG_ROW_1, "r", 0), (PG_ROW_3, "c", 0)])
def test_postgres_payloads_are_debeziums_value_for_value(row: Row, op: str, nth: int) -> None:
    """Every column of all_types is written as Debezium wrote it (interval: as ISO text),
    with and without schemas."""
    theirs = captured("postgres.schemas.json", "all_types", op, nth)["value"]["payload"]
    bare = captured("postgres.noschemas.json", "all_types", op, nth)["value"]
    event = change(Op(op), PG_ALL_TYPES, row)
    ours = as_json(PG.encode(event)[1])["payload"]
    ours_bare = as_json(PG_BARE.encode(event)[1])
    interval = {1: "P1Y2M3DT4H5M6.789S", 3: "P0Y0M-1DT0H0M-1S"}[row["id"]]
    for mine, debezium in ((ours, theirs), (ours_bare, bare)):
        assert list(mine) == list(debezium)
        assert (mine["before"], mine["op"], mine["transaction"]) == (None, op, None)
        assert list(mine["after"]) == list(debezium["after"])
        assert mine["after"] == dict(debezium["after"], c_interval=interval)


def test_postgres_source_block_has_debeziums_fields_in_order() -> None:
    """source carries Debezium's PostgreSQL fields, in its order, with our position."""
    theirs = captured("postgres.schemas.json", "all_types", "c")["value"]["payload"]["source"]
    event = change(Op.INSERT, PG_ALL_TYPES, PG_ROW_3, position=PgPosition(26490640, 3), txid=747)
    source = as_json(PG.encode(event)[1])["payload"]["source"]
    assert list(source) == list(theirs)
    assert source["version"].startswith("replicator")
    assert {k: source[k] for k in ("connector", "name", "db", "schema", "table", "snapshot")} == {
        k: theirs[k] for k in ("connector", "name", "db", "schema", "table", "snapshot")
    }
    assert (source["txId"], source["lsn"], source["xmin"], source["sequence"]) == (
        747,
        26490640,
        None,
        None,
    )
    micros = (COMMIT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert (source["ts_ms"], source["ts_us"], source["ts_ns"]) == (
        micros // 1000,
        micros,
        micros * 1000,
    )


CUSTOMERS = table(
    "customers",
    [("id", "integer", False), ("name", "text", False), ("email", "character varying(100)", True)],
)
COMPOSITE = table(
    "composite_key",
    [("region", "character(2)", False), ("id", "integer", False), ("label", "text", True)],
    key=("region", "id"),
)
NO_PK = table("no_pk", [("a", "integer", True), ("b", "text", True)], key=())
TOASTED = table(
    "toasted", [("id", "integer", False), ("body", "text", True), ("counter", "integer", True)]
)
TRUNCATED = table("truncated", [("id", "integer", False), ("note", "text", True)])


@pytest.mark.parametrize(
    ("schema", "op", "nth", "event"),
    [
        (CUSTOMERS, "r", 1, change(Op.READ, CUSTOMERS, {"id": 2, "name": "Grace", "email": None})),
        # REPLICA IDENTITY DEFAULT: the delete carries the key only; NOT NULL name is "".
        (CUSTOMERS, "d", 0, change(Op.DELETE, CUSTOMERS, before={"id": 1})),
        (
            COMPOSITE,
            "u",
            0,
            change(Op.UPDATE, COMPOSITE, {"region": "eu", "id": 1, "label": "eins"}),
        ),
        (
            NO_PK,
            "u",
            0,
            change(Op.UPDATE, NO_PK, {"a": 2, "b": "changed"}, {"a": 2, "b": "second"}),
        ),
        (NO_PK, "d", 0, change(Op.DELETE, NO_PK, before={"a": 1, "b": "twin"})),
        (TOASTED, "u", 0, change(Op.UPDATE, TOASTED, {"id": 1, "body": UNCHANGED, "counter": 1})),
        (TRUNCATED, "t", 0, change(Op.TRUNCATE, TRUNCATED)),
    ],
    ids=[
        "snapshot read",
        "delete by key",
        "composite key",
        "no key update",
        "no key delete",
        "toast",
        "truncate",
    ],
)
def test_postgres_messages_match_debeziums(
    schema: TableSchema, op: str, nth: int, event: ChangeEvent
) -> None:
    """Key and value (schema, images, op) equal what Debezium wrote for the same change."""
    theirs = captured("postgres.schemas.json", schema.table.name, op, nth)
    key, value = PG.encode(event)
    ours = as_json(value)
    assert as_json(key) == theirs["key"]
    assert ours["schema"] == theirs["value"]["schema"]
    for part in ("before", "after", "op", "transaction"):
        assert ours["payload"][part] == theirs["value"]["payload"][part], part
    assert list(ours["payload"]["source"]) == list(theirs["value"]["payload"]["source"])


MYSQL_ALL_TYPES = table(
    "all_types",
    [
        ("id", "integer", False),
        ("c_tinyint", "smallint", True),
        ("c_tinyint_u", "smallint", True),
        ("c_smallint", "smallint", True),
        ("c_smallint_u", "integer", True),
        ("c_mediumint", "integer", True),
        ("c_mediumint_u", "integer", True),
        ("c_int", "integer", True),
        ("c_int_u", "bigint", True),
        ("c_bigint", "bigint", True),
        ("c_bigint_u", "numeric(20,0)", True),
        ("c_decimal", "numeric(12,4)", True),
        ("c_float", "real", True),
        ("c_double", "double precision", True),
        ("c_bit", "bit(10)", True),
        ("c_bool", "boolean", True),
        ("c_char", "character(5)", True),
        ("c_varchar", "character varying(50)", True),
        ("c_text", "text", True),
        ("c_binary", "bytea", True),
        ("c_varbinary", "bytea", True),
        ("c_blob", "bytea", True),
        ("c_date", "date", True),
        ("c_time", "interval", True),
        ("c_datetime", "timestamp(6) without time zone", True),
        ("c_timestamp", "timestamp(6) with time zone", True),
        ("c_year", "smallint", True),
        ("c_enum", "text", True),
        ("c_set", "text[]", True),
        ("c_json", "jsonb", True),
        ("c_point", "bytea", True),
    ],
    schema="shop",
    dialect="mysql",
)
POINT_WKB = base64.b64decode("AQEAAAAAAAAAAAD4PwAAAAAAAALA")
# The first row of MYSQL_SETUP as the MySQL source hands it over (FLOAT as its 4 stored bytes).
MYSQL_ROW_1: Row = {
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
    "c_bigint_u": 18446744073709551615,
    "c_decimal": Decimal("12345678.1234"),
    "c_float": struct.unpack("<f", struct.pack("<f", 3.14))[0],
    "c_double": -2.718281828459045,
    "c_bit": RawValue("1010101010"),
    "c_bool": True,
    "c_char": "ab",
    "c_varchar": "Grüße 😀",
    "c_text": "text with ✓ and 😀",
    "c_binary": b"\x00\xff\x10\x20",
    "c_varbinary": b"\xde\xad\xbe\xef",
    "c_blob": b"\x00\x01\x02",
    "c_date": date(2024, 2, 29),
    "c_time": Interval(microseconds=45_296_789_000),
    "c_datetime": datetime(2024, 1, 2, 3, 4, 5, 678901),
    "c_timestamp": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "c_year": 2024,
    "c_enum": "medium",
    "c_set": ["red", "blue"],
    "c_json": '{"k": [1, 2.5, "x"], "n": null}',
    "c_point": b"\x00\x00\x00\x00" + POINT_WKB,
}
# Where our MySQL fields differ from the MySQL connector's, and why (see the encoder's
# docstring): our node, and our payload value for MYSQL_ROW_1.
MYSQL_DIFFERENCES = {
    "c_bigint_u": (
        {
            "type": "bytes",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": "0", "connect.decimal.precision": "20"},
        },
        base64.b64encode((2**64 - 1).to_bytes(9, "big", signed=True)).decode(),
    ),
    "c_float": ({"type": "float", "optional": True}, MYSQL_ROW_1["c_float"]),
    "c_bool": ({"type": "boolean", "optional": True}, True),
    "c_time": (
        {"type": "string", "optional": True, "name": "io.debezium.time.Interval", "version": 1},
        "P0Y0M0DT12H34M56.789S",
    ),
    "c_year": ({"type": "int16", "optional": True}, 2024),
    "c_enum": ({"type": "string", "optional": True}, "medium"),
    "c_set": (
        {"type": "array", "items": {"type": "string", "optional": True}, "optional": True},
        ["red", "blue"],
    ),
    "c_json": (
        {"type": "string", "optional": True, "name": "io.debezium.data.Json", "version": 1},
        '{"k": [1, 2.5, "x"], "n": null}',
    ),
    "c_point": (
        {"type": "bytes", "optional": True},
        base64.b64encode(MYSQL_ROW_1["c_point"]).decode(),
    ),
}


def test_mysql_messages_match_debeziums_but_for_the_documented_columns() -> None:
    """MySQL all_types: the same fields in the same order, Debezium's node and value for
    every column but the documented ones, and Debezium's MySQL source block."""
    theirs = captured("mysql.schemas.json", "all_types", "r")
    encoder = EnvelopeEncoder(server_name="mysql_schemas", database="ignored")
    event = change(
        Op.READ,
        MYSQL_ALL_TYPES,
        MYSQL_ROW_1,
        position=MysqlPosition("binlog.000001", 5332, None, 0),
    )
    key, value = encoder.encode(event)
    ours = as_json(value)
    assert as_json(key) == theirs["key"]
    our_fields, their_fields = fields(row_schema(ours)), fields(row_schema(theirs["value"]))
    assert list(our_fields) == list(their_fields)
    our_after, their_after = ours["payload"]["after"], theirs["value"]["payload"]["after"]
    for name, node in our_fields.items():
        if name in MYSQL_DIFFERENCES:
            want_node, want_value = MYSQL_DIFFERENCES[name]
            assert node == {**want_node, "field": name}
            assert our_after[name] == want_value, name
        else:
            assert node == their_fields[name]
            assert our_after[name] == their_after[name], name
    # Debezium prints FLOAT's shortest form; ours is the stored float32 as a double.
    assert struct.pack("<f", our_after["c_float"]) == struct.pack("<f", their_after["c_float"])
    schema_without_rows = {
        k: v for k, v in fields(ours["schema"]).items() if k not in ("before", "after")
    }
    assert schema_without_rows == {
        k: v for k, v in fields(theirs["value"]["schema"]).items() if k not in ("before", "after")
    }
    source, their_source = ours["payload"]["source"], theirs["value"]["payload"]["source"]
    assert list(source) == list(their_source)
    same_fields = ("connector", "name", "db", "table", "file", "pos", "row")
    assert {k: source[k] for k in same_fields} == {k: their_source[k] for k in same_fields}
    assert source["snapshot"] == "true"  # Debezium: "first", ..., "last"
    assert (source["server_id"], source["gtid"], source["thread"], source["query"]) == (
        0,
        None,
        None,
        None,
    )


def test_mysql_values_read_back() -> None:
    """A MySQL row reads back with its values and the target types the MySQL source maps to."""
    event = change(
        Op.INSERT,
        MYSQL_ALL_TYPES,
        MYSQL_ROW_1,
        position=MysqlPosition("binlog.000001", 6163, "0-1-9", 1),
    )
    got = decoded(EnvelopeEncoder(server_name="mysql_schemas", database="shop"), event)
    assert got.after is not None and got.columns is not None
    expected = dict(MYSQL_ROW_1, c_bigint_u=Decimal(2**64 - 1), c_bit="1010101010")
    assert got.after == expected
    assert [c.type_name for c in got.columns] == [
        {
            "character(5)": "text",
            "character varying(50)": "text",
            "timestamp(6) with time zone": "timestamp with time zone",
        }.get(c.type_name, c.type_name)
        for c in MYSQL_ALL_TYPES.columns
    ]
    assert got.source["db"] == "shop" and got.source["gtid"] == "0-1-9"


# -- keys, keyless tables, truncate, tombstones, snapshots, unchanged values ------------------


def test_keys_follow_the_table_key_in_order() -> None:
    """The key is the key columns in key order, with its own Key schema; a missing
    event key is taken from the row."""
    event = change(Op.INSERT, COMPOSITE, {"region": "ca", "id": 1, "label": "uno"}, key=None)
    key = as_json(PG.encode(event)[0])
    assert key == captured("postgres.schemas.json", "composite_key", "c")["key"]
    no_key = ChangeEvent(
        Op.INSERT, COMPOSITE, None, None, {"region": "ca", "id": 1, "label": "x"}, PgPosition(1, 1)
    )
    assert PG.encode(no_key)[0] == PG.encode(event)[0]
    message = read_message(*PG.encode(event))
    assert isinstance(message, Change) and message.key == {"region": "ca", "id": 1}
    assert message.key_columns == ("region", "id")


def test_a_key_is_encoded_like_its_column() -> None:
    """A key of a converted type (uuid, timestamp) is written and read back as that type."""
    schema = table(
        "t", [("id", "uuid", False), ("at", "timestamp without time zone", False)], key=("id", "at")
    )
    row = {"id": UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "at": datetime(2024, 1, 2)}
    got = decoded(
        EnvelopeEncoder(server_name="srv", database="shop"), change(Op.INSERT, schema, row)
    )
    assert got.key == {"id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "at": datetime(2024, 1, 2)}


def test_a_table_without_a_key_has_no_message_key() -> None:
    """Keyless tables (REPLICA IDENTITY FULL) are written with a null key, whole rows in
    before and after."""
    event = change(Op.UPDATE, NO_PK, {"a": 2, "b": "changed"}, {"a": 2, "b": "second"})
    key, value = PG.encode(event)
    assert key is None
    message = read_message(key, value)
    assert isinstance(message, Change) and message.key is None and message.key_columns == ()
    assert message.before == {"a": 2, "b": "second"} and message.after == {"a": 2, "b": "changed"}


def test_truncate_names_the_table_but_no_row() -> None:
    """A truncate has no key, null images and op t."""
    key, value = PG.encode(change(Op.TRUNCATE, TRUNCATED))
    assert key is None
    message = read_message(key, value)
    assert isinstance(message, Change) and message.op is Op.TRUNCATE
    assert (message.key, message.before, message.after) == (None, None, None)
    assert message.source["table"] == "truncated"


def test_a_tombstone_is_the_delete_key_and_a_null_value() -> None:
    """After a delete, the tombstone carries the deleted row's key and no value."""
    event = change(Op.DELETE, CUSTOMERS, before={"id": 1, "name": "Ada", "email": None})
    key, value = PG.tombstone(event)
    assert value is None and key == PG.encode(event)[0]
    assert as_json(key) == captured("postgres.schemas.json", "customers", "d")["key"]
    assert read_message(key, value) == Tombstone({"id": 1})
    bare_key, _ = PG_BARE.tombstone(event)
    assert read_message(bare_key, None) == Tombstone({"id": 1})


def test_a_tombstone_needs_a_delete_with_a_key() -> None:
    """Tombstones of a keyless table (compaction drops nothing) or of another op are refused."""
    with pytest.raises(ValueError, match="has no key"):
        PG.tombstone(change(Op.DELETE, NO_PK, before={"a": 1, "b": "x"}))
    with pytest.raises(ValueError, match="not updates"):
        PG.tombstone(change(Op.UPDATE, CUSTOMERS, {"id": 1, "name": "Ada", "email": None}))


def test_snapshot_reads_are_marked_as_such() -> None:
    """READ events are op r with source.snapshot "true"; streamed events say "false"."""
    read = as_json(PG.encode(change(Op.READ, TRUNCATED, {"id": 1, "note": "x"}))[1])["payload"]
    streamed = as_json(PG.encode(change(Op.INSERT, TRUNCATED, {"id": 1, "note": "x"}))[1])[
        "payload"
    ]
    assert (read["op"], read["source"]["snapshot"]) == ("r", "true")
    assert (streamed["op"], streamed["source"]["snapshot"]) == ("c", "false")
    message = read_message(*PG.encode(change(Op.READ, TRUNCATED, {"id": 1, "note": "x"})))
    assert isinstance(message, Change) and message.op is Op.READ


def test_unchanged_values_are_debeziums_placeholder_and_read_back_as_unchanged() -> None:
    """An unchanged TOASTed value is the placeholder (bytea: its bytes), whatever the type,
    and reads back as UNCHANGED."""
    schema = table(
        "t",
        [
            ("id", "integer", False),
            ("t", "text", True),
            ("b", "bytea", True),
            ("j", "jsonb", True),
            ("a", "integer[]", True),
            ("n", "numeric", True),
        ],
    )
    row = {"id": 1, "t": UNCHANGED, "b": UNCHANGED, "j": UNCHANGED, "a": UNCHANGED, "n": UNCHANGED}
    for encoder in (PG, PG_BARE):
        after = as_json(encoder.encode(change(Op.UPDATE, schema, row))[1])
        after = after.get("payload", after)["after"]
        assert after["t"] == after["j"] == after["a"] == after["n"] == UNAVAILABLE
        assert base64.b64decode(after["b"]) == UNAVAILABLE.encode()
    got = decoded(PG, change(Op.UPDATE, schema, row))
    assert got.after == row


def test_an_update_carries_its_old_image_and_changed_key() -> None:
    """An update changing the key is one u event under the new key, the old key in before."""
    event = change(Op.UPDATE, CUSTOMERS, {"id": 10, "name": "Ada", "email": None}, before={"id": 1})
    got = decoded(PG, event)
    assert got.key == {"id": 10}
    assert got.before == {"id": 1, "name": "", "email": None}


# -- source positions -----------------------------------------------------------------------


def test_postgres_events_order_by_their_commit_lsn() -> None:
    """The decoder orders our PostgreSQL events by the commit LSN we write."""
    lsns = [26490640, 26491064, 26491064, 2**40]
    orders = [
        decoded(
            PG, change(Op.INSERT, TRUNCATED, {"id": i, "note": None}, position=PgPosition(lsn, i))
        ).order
        for i, lsn in enumerate(lsns)
    ]
    assert orders == [(lsn,) for lsn in lsns]


def test_mysql_events_order_by_binlog_file_offset_and_row() -> None:
    """The decoder's MySQL order is exactly our position's order key."""
    schema = table("t", [("id", "integer", False)], schema="shop", dialect="mysql")
    encoder = EnvelopeEncoder(server_name="srv", database="shop")
    positions = [
        MysqlPosition("binlog.000009", 99999, None, 1),
        MysqlPosition("binlog.000010", 4, "0-1-5", 1),
        MysqlPosition("binlog.000010", 4, "0-1-5", 2),
        MysqlPosition("binlog.000010", 800, "0-1-6", 1),
    ]
    orders = [
        decoded(encoder, change(Op.INSERT, schema, {"id": 1}, position=p)).order for p in positions
    ]
    assert orders == [p.order_key() for p in positions] and orders == sorted(orders)  # type: ignore[type-var]


def test_a_mysql_event_needs_binlog_coordinates() -> None:
    """A MySQL table's event without a binlog position is refused."""
    schema = table("t", [("id", "integer", False)], schema="shop", dialect="mysql")
    with pytest.raises(SinkError, match="binlog"):
        EnvelopeEncoder(server_name="srv", database="shop").encode(
            change(Op.INSERT, schema, {"id": 1})
        )


def test_times_come_from_the_commit_else_now() -> None:
    """source.ts_ms is the commit time when known, else the time of encoding, like the
    envelope's own ts_ms."""
    event = change(Op.INSERT, TRUNCATED, {"id": 1, "note": None}, commit_ts=None)
    before = datetime.now(UTC).timestamp() * 1000
    payload = as_json(PG.encode(event)[1])["payload"]
    after = datetime.now(UTC).timestamp() * 1000
    assert before - 1 <= payload["source"]["ts_ms"] <= payload["ts_ms"] <= after + 1
    assert (
        payload["ts_ns"] // 1000 == payload["ts_us"]
        and payload["ts_us"] // 1000 == payload["ts_ms"]
    )


# -- schemas and bad input ------------------------------------------------------------------


def test_a_changed_table_gets_its_new_schema() -> None:
    """A table's definition with a column added is written with the new column."""
    added = table(
        "customers",
        [
            *((c.name, c.type_name, c.nullable) for c in CUSTOMERS.columns),
            ("vip", "boolean", False),
        ],
    )
    theirs = captured("postgres.schemas.json", "customers", "c", 1)["value"]
    old = as_json(PG.encode(change(Op.INSERT, CUSTOMERS, {"id": 3, "name": "L", "email": None}))[1])
    row = {"id": 3, "name": "Linus", "email": "linus@example.com", "vip": True}
    new = as_json(PG.encode(change(Op.INSERT, added, row))[1])
    expected = json.loads(json.dumps(theirs["schema"]))
    for part in ("before", "after"):
        # A TableSchema carries no column defaults, so the schema has none (Debezium's has).
        assert fields(fields(expected)[part])["vip"].pop("default") is False
    assert new["schema"] == expected != old["schema"]
    assert new["payload"]["after"] == theirs["payload"]["after"]


def test_names_with_percent_signs_are_written_verbatim() -> None:
    """Table and column names are data, not format directives."""
    schema = table("a%sb", [("id", "integer", False), ("100%d", "text", True)], schema="s%%")
    got = decoded(
        EnvelopeEncoder(server_name="srv%s", database="d%d"),
        change(Op.INSERT, schema, {"id": 1, "100%d": "x"}),
    )
    assert got.after == {"id": 1, "100%d": "x"}
    assert (got.source["name"], got.source["db"], got.source["schema"], got.source["table"]) == (
        "srv%s",
        "d%d",
        "s%%",
        "a%sb",
    )


@pytest.mark.parametrize(
    ("type_name", "value", "message"),
    [
        ("integer[]", [[1, 2], [3, 4]], "multi-dimensional"),
        ("integer[]", RawValue("[0:1]={1,2}"), "not a list"),
        ("timestamp with time zone", "2024-01-02", "timestamp with time zone"),
        ("numeric(4,1)", Decimal("1.25"), "more than 1 fractional digits"),
        ("money", "1.234,56 €", "lc_monetary"),
        ("text", object(), "object"),
    ],
)
def test_values_that_cannot_be_written_are_refused_naming_the_column(
    type_name: str, value: Any, message: str
) -> None:
    """A value with no faithful Debezium form is a SinkError naming table and column."""
    schema = table("t", [("id", "integer", False), ("c", type_name, True)])
    with pytest.raises(SinkError, match=r"public\.t .*column c") as raised:
        PG.encode(change(Op.INSERT, schema, {"id": 1, "c": value}))
    assert message in str(raised.value)


def test_incomplete_and_foreign_rows_are_refused() -> None:
    """An after image lacking a column, or with a column the table does not have, is refused."""
    with pytest.raises(SinkError, match="lacks columns"):
        PG.encode(change(Op.INSERT, CUSTOMERS, {"id": 1, "name": "Ada"}))
    with pytest.raises(SinkError, match="does not"):
        PG.encode(change(Op.INSERT, CUSTOMERS, {"id": 1, "name": "Ada", "email": None, "x": 1}))


def test_only_postgres_and_mysql_tables_are_written() -> None:
    """A table of another dialect has no Debezium connector to imitate."""
    schema = table("t", [("id", "integer", False)], dialect="mongodb")
    with pytest.raises(SinkError, match="mongodb"):
        PG.encode(change(Op.INSERT, schema, {"id": 1}))
