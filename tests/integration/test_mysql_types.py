"""Every MySQL type lands in PostgreSQL as the README's type table says, value by value.

Each type family is one MariaDB table (and a copy without a key). Its rows are written
before the pipeline starts, so the snapshot copies them (MySQL writes the COPY text, see
``copy_sql``), and written again after it streams, so the binlog carries them (decoded from
raw bytes, see ``rows``). Both must land as the same, explicitly expected Python value, with
the same PostgreSQL text. Updates and deletes of those rows then have to find them: a keyed
table by key, a keyless one by every value, so a value that landed differently from what
the binlog's before image says would leave a duplicate or a row that should be gone.
"""

from __future__ import annotations

import json
import re
import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.config import PipelineConfig
from replicator.errors import PreflightError
from tests.mariadb import MariaDbFactory, MariaDbServer, MysqlDatabase, connect
from tests.pgcluster import PgCluster
from tests.support import RunningPipeline, run_cli, snapshot_done, wait_for, write_config

# --- the cases ----------------------------------------------------------------------------

STREAMED = 100  # streamed rows have the ids of the snapshot's rows plus this
MOVED = 1000  # updates move a row's id by this


class Sql(str):
    """A value written as SQL text (``_latin1 0x80``, ``b'101'``) rather than as a parameter."""


@dataclass(frozen=True)
class Col:
    """One column: its MySQL type, the PostgreSQL type it must get, and (inserted, expected)
    value pairs; ``None`` inserted is SQL NULL and expected as None."""

    name: str
    mysql: str
    pg: str
    values: Sequence[tuple[Any, Any]]


@dataclass(frozen=True)
class Family:
    """A table of columns written in one session (its sql_mode and time zone)."""

    name: str
    columns: Sequence[Col]
    sql_mode: str = "STRICT_ALL_TABLES"
    time_zone: str = "+00:00"

    def rows(self) -> list[list[tuple[Any, Any]]]:
        """Row i holds each column's i-th value (NULL once a column runs out), and a last
        row is NULL everywhere."""
        count = max(len(c.values) for c in self.columns) + 1
        return [
            [c.values[i] if i < len(c.values) else (None, None) for c in self.columns]
            for i in range(count)
        ]


@dataclass(frozen=True)
class Json:
    """An expected jsonb value, by its JSON text: numbers compare as numeric, as in jsonb,
    and JSON's null is not SQL NULL."""

    text: str

    def parsed(self) -> Any:
        return _json(self.text)


def _json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def f32(value: float) -> float:
    """The float4 nearest to ``value``."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def frac(fsp: int, digits: str = "123456") -> str:
    """Fractional seconds of ``fsp`` digits: '.123' for 3, '' for 0."""
    return "." + digits[:fsp] if fsp else ""


def micros(fsp: int, digits: str = "123456") -> int:
    """The microseconds of ``frac(fsp, digits)``."""
    return int(digits[:fsp].ljust(6, "0")) if fsp else 0


def point_wkb(srid: int, x: float, y: float) -> bytes:
    """MySQL's internal form of a POINT: SRID, then little-endian WKB."""
    return struct.pack("<IBI", srid, 1, 1) + struct.pack("<dd", x, y)


DEC65 = "9" * 35 + "." + "9" * 30
LONG_LINES = "line with \\ and \t tab and ünïcode\n" * 4000  # ~150 KB, 12000 escapes
JSON_BIG = json.dumps({"items": list(range(20000)), "text": "ü" * 1000})

INTEGERS = Family(
    "integers",
    [
        Col("c_tinyint", "tinyint", "smallint", [(-128, -128), (127, 127), (0, 0)]),
        Col("c_tinyint_u", "tinyint unsigned", "smallint", [(0, 0), (255, 255)]),
        Col("c_tinyint1_u", "tinyint(1) unsigned", "smallint", [(255, 255), (1, 1)]),
        Col("c_smallint", "smallint", "smallint", [(-32768, -32768), (32767, 32767)]),
        Col("c_smallint_u", "smallint unsigned", "integer", [(0, 0), (65535, 65535)]),
        Col("c_mediumint", "mediumint", "integer", [(-8388608, -8388608), (8388607, 8388607)]),
        Col("c_mediumint_u", "mediumint unsigned", "integer", [(0, 0), (16777215, 16777215)]),
        Col("c_int", "int", "integer", [(-(2**31), -(2**31)), (2**31 - 1, 2**31 - 1)]),
        Col("c_int_u", "int unsigned", "bigint", [(0, 0), (2**32 - 1, 2**32 - 1)]),
        Col("c_zerofill", "int(6) unsigned zerofill", "bigint", [(42, 42), (0, 0)]),
        Col("c_bigint", "bigint", "bigint", [(-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1)]),
        Col(
            "c_bigint_u",
            "bigint unsigned",
            "numeric(20,0)",
            [(0, Decimal(0)), (2**64 - 1, Decimal(2**64 - 1)), (2**63, Decimal(2**63))],
        ),
        Col("c_bool", "tinyint(1)", "boolean", [(0, False), (1, True)]),
        Col("c_boolean", "boolean", "boolean", [(1, True), (0, False)]),
        Col("c_year", "year", "smallint", [(Sql("0"), 0), (1901, 1901), (2155, 2155)]),
    ],
)

NUMBERS = Family(
    "numbers",
    [
        Col(
            "c_dec",
            "decimal(10,2)",
            "numeric(10,2)",
            [
                (Sql("1.50"), Decimal("1.50")),
                (Sql("-1.50"), Decimal("-1.50")),
                (Sql("0"), Decimal("0.00")),
                (Sql("99999999.99"), Decimal("99999999.99")),
                (Sql("-99999999.99"), Decimal("-99999999.99")),
                (Sql("-0.01"), Decimal("-0.01")),
            ],
        ),
        Col(
            "c_dec_65_30",
            "decimal(65,30)",
            "numeric(65,30)",
            [
                (Sql(DEC65), Decimal(DEC65)),
                (Sql("-" + DEC65), Decimal("-" + DEC65)),
                (Sql("0.000000000000000000000000000001"), Decimal("0." + "0" * 29 + "1")),
                (Sql("-1.5"), Decimal("-1.500000000000000000000000000000")),
                (
                    Sql("12345678901234567890.123456789012345678901234567890"),
                    Decimal("12345678901234567890.123456789012345678901234567890"),
                ),
            ],
        ),
        Col(
            "c_dec_5_0",
            "decimal(5,0)",
            "numeric(5,0)",
            [(12345, Decimal(12345)), (-1, Decimal(-1))],
        ),
        Col(
            "c_dec_4_4",
            "decimal(4,4)",
            "numeric(4,4)",
            [(Sql("0.1234"), Decimal("0.1234")), (Sql("-0.9999"), Decimal("-0.9999"))],
        ),
        Col(
            "c_dec_18_9",
            "decimal(18,9)",
            "numeric(18,9)",
            [
                (Sql("123456789.123456789"), Decimal("123456789.123456789")),
                (Sql("-123456789.000000001"), Decimal("-123456789.000000001")),
                (Sql("0.000000001"), Decimal("0.000000001")),
            ],
        ),
        Col(
            "c_dec_u",
            "decimal(12,3) unsigned",
            "numeric(12,3)",
            [(Sql("987654321.123"), Decimal("987654321.123"))],
        ),
        Col(
            "c_float",
            "float",
            "real",
            [
                (Sql("1.2345678e0"), f32(1.2345678)),
                (Sql("3.4028234e38"), f32(3.4028234e38)),
                (Sql("-3.4028234e38"), f32(-3.4028234e38)),
                (Sql("1.17549435e-38"), f32(1.17549435e-38)),
                (Sql("1.4e-45"), f32(1.4e-45)),
                (Sql("0.1e0"), f32(0.1)),
                (Sql("16777217e0"), 16777216.0),
                (Sql("-0e0"), 0.0),
            ],
        ),
        Col("c_float_7_3", "float(7,3)", "real", [(Sql("1234.567"), f32(1234.567))]),
        Col(
            "c_double",
            "double",
            "double precision",
            [
                (Sql("0.1e0 + 0.2e0"), 0.30000000000000004),
                (Sql("1.7976931348623157e308"), 1.7976931348623157e308),
                (Sql("-1.7976931348623157e308"), -1.7976931348623157e308),
                (Sql("2.2250738585072014e-308"), 2.2250738585072014e-308),
                (Sql("5e-324"), 5e-324),
                (Sql("1e-300"), 1e-300),
                (Sql("123456789.123e0"), 123456789.123),
                (Sql("-0e0"), 0.0),
                (Sql("1e16"), 1e16),
            ],
        ),
        Col("c_bit1", "bit(1)", "bit(1)", [(Sql("b'0'"), "0"), (Sql("b'1'"), "1")]),
        Col(
            "c_bit7",
            "bit(7)",
            "bit(7)",
            [
                (Sql("b'1010101'"), "1010101"),
                (Sql("b'1'"), "0000001"),
                (Sql("b'1111111'"), "1" * 7),
            ],
        ),
        Col(
            "c_bit64",
            "bit(64)",
            "bit(64)",
            [
                (Sql("b'" + "1" * 64 + "'"), "1" * 64),
                (Sql("b'0'"), "0" * 64),
                (Sql(f"{2**63}"), "1" + "0" * 63),
                (Sql("b'101'"), "0" * 61 + "101"),
            ],
        ),
    ],
)

TEXTS = [
    "tab\there",
    "new\nline",
    "cr\rlf\r\n",
    "back\\slash",
    "it's",
    'a "quote"',
    "ü ☃ 😀 𝄞",
    "trailing  ",
    "",
    "\\N",
    "\\.",
    "NULL",
    "{brace},comma;",
    "\x01ctl\x08\x0b\x0c\x1f\x7f",
    "bs\x08 ff\x0c",
    "back\\u0041 and \\u00e9",
    "\\\\\\",
]

# MySQL's latin1 from 0x80 on: cp1252, whose five undefined bytes are the C1 controls.
LATIN1_HIGH = "€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ" + "".join(
    map(chr, range(0xA0, 0x100))
)

STRINGS = Family(
    "strings",
    [
        Col("c_varchar", "varchar(100)", "character varying(100)", [(t, t) for t in TEXTS]),
        Col(
            "c_char",
            "char(10)",
            "character(10)",
            [
                ("ab  ", "ab".ljust(10)),  # MySQL strips a CHAR's trailing spaces on read
                ("", " " * 10),
                ("ü😀", "ü😀".ljust(10)),
                ("x\ty\\", "x\ty\\".ljust(10)),
                ("  lead", "  lead".ljust(10)),
            ],
        ),
        Col("c_char0", "char(0)", "character(1)", [("", " ")]),
        Col(
            # 400 bytes in utf8mb4: the binlog gives it a 2-byte length, unlike CHAR(10).
            "c_char_wide",
            "char(100)",
            "character(100)",
            [("ü" * 100, "ü" * 100), ("x\n", "x\n".ljust(100))],
        ),
        Col("weird `name` it's \\", "varchar(10)", "character varying(10)", [("odd", "odd")]),
        Col(
            "c_text",
            "text",
            "text",
            [("tab\tnew\nline\\", "tab\tnew\nline\\"), ("0123456789" * 6000,) * 2],
        ),
        Col("c_tinytext", "tinytext", "text", [("short ☃\n", "short ☃\n")]),
        Col(
            "c_mediumtext",
            "mediumtext",
            "text",
            [
                (LONG_LINES, LONG_LINES),
                ("x" * 200_000, "x" * 200_000),
                # Long values with JSON's own escapes, and with ones COPY lacks (\u00XX).
                ('\x08\x0c"' * 200 + "y" * 300, '\x08\x0c"' * 200 + "y" * 300),
                ("\x01" + "a\tb\n" * 1000 + "x" * 2000, "\x01" + "a\tb\n" * 1000 + "x" * 2000),
                ("\\u00e9 " * 100, "\\u00e9 " * 100),
            ],
        ),
        Col("c_longtext", "longtext", "text", [("😀" * 100_000, "😀" * 100_000)]),
        Col(
            "c_utf8mb3",
            "varchar(20) CHARACTER SET utf8mb3",
            "character varying(20)",
            [("ü ☃ ä", "ü ☃ ä"), ("tab\t\\", "tab\t\\")],
        ),
        Col(
            "c_latin1",
            "varchar(20) CHARACTER SET latin1",
            "character varying(20)",
            [
                # MySQL's latin1 is cp1252, with 0x81, 0x8D, 0x8F, 0x90, 0x9D as C1 controls.
                (Sql("_latin1 0x80818D8F909D"), "€\x81\x8d\x8f\x90\x9d"),
                ("café ÿ", "café ÿ"),
                (Sql("_latin1 0x9F5C0A09"), "Ÿ\\\n\t"),
            ],
        ),
        Col(
            "c_latin1_char",
            "char(8) CHARACTER SET latin1",
            "character(8)",
            [(Sql("_latin1 0x80A9"), "€©".ljust(8))],
        ),
        Col(
            "c_latin1_text",
            "text CHARACTER SET latin1",
            "text",
            [(Sql("_latin1 0x" + bytes(range(0x80, 0x100)).hex()), LATIN1_HIGH)],
        ),
        Col(
            "c_ascii",
            "varchar(20) CHARACTER SET ascii",
            "character varying(20)",
            [("plain ~ ascii", "plain ~ ascii")],
        ),
        Col(
            "c_ucs2",
            "varchar(20) CHARACTER SET ucs2",
            "character varying(20)",
            [("ü ☃ ucs2", "ü ☃ ucs2"), ("tab\tnl\n", "tab\tnl\n")],
        ),
        Col(
            "c_utf16",
            "varchar(20) CHARACTER SET utf16",
            "character varying(20)",
            [("😀 utf16 𝄞", "😀 utf16 𝄞")],
        ),
        Col(
            "c_utf16le",
            "varchar(20) CHARACTER SET utf16le",
            "character varying(20)",
            [("😀 le", "😀 le")],
        ),
        Col(
            "c_utf32",
            "varchar(20) CHARACTER SET utf32",
            "character varying(20)",
            [("😀 32", "😀 32")],
        ),
        Col(
            "c_cp1251",
            "varchar(20) CHARACTER SET cp1251",
            "character varying(20)",
            [("Привет", "Привет")],
        ),
        Col(
            "c_greek",
            "varchar(20) CHARACTER SET greek",
            "character varying(20)",
            [("αβγ", "αβγ")],
        ),
        Col(
            "c_sjis",
            "varchar(20) CHARACTER SET sjis",
            "character varying(20)",
            [("こんにちは", "こんにちは")],
        ),
        Col(
            # A collation python-mysql-replication does not know by number (MariaDB 10.10+).
            "c_uca1400",
            "varchar(20) COLLATE utf8mb4_uca1400_ai_ci",
            "character varying(20)",
            [("uca ü 😀", "uca ü 😀")],
        ),
        Col(
            "c_nopad",
            "varchar(20) COLLATE utf8mb4_nopad_bin",
            "character varying(20)",
            [("nopad  ", "nopad  ")],
        ),
    ],
)

BLOB_BYTES = bytes(range(256)) * 100
BINARIES = Family(
    "binaries",
    [
        Col(
            "c_binary",
            "binary(4)",
            "bytea",
            [
                (b"ab", b"ab\x00\x00"),  # padded with zero bytes, as SELECT shows it
                (b"\x00\x00\x00\x00", b"\x00\x00\x00\x00"),
                (b"\xff\x00\xff\x00", b"\xff\x00\xff\x00"),
                (b"a\x00", b"a\x00\x00\x00"),
                (b"", b"\x00\x00\x00\x00"),
            ],
        ),
        Col(
            "c_varbinary",
            "varbinary(10)",
            "bytea",
            [(b"\x00", b"\x00"), (b"", b""), (b"\\\n\r\t", b"\\\n\r\t"), (b"\xff" * 10,) * 2],
        ),
        Col("c_tinyblob", "tinyblob", "bytea", [(b"\x00\xff", b"\x00\xff")]),
        Col("c_blob", "blob", "bytea", [(BLOB_BYTES, BLOB_BYTES)]),
        Col("c_mediumblob", "mediumblob", "bytea", [(BLOB_BYTES * 4, BLOB_BYTES * 4)]),
        Col("c_longblob", "longblob", "bytea", [(b"\x00" * 70_000, b"\x00" * 70_000)]),
    ],
)


def _datetime_col(fsp: int) -> Col:
    return Col(
        f"c_datetime{fsp}",
        f"datetime({fsp})",
        f"timestamp({fsp}) without time zone",
        [
            ("1000-01-01 00:00:00", datetime(1000, 1, 1)),
            (
                f"9999-12-31 23:59:59{frac(fsp, '999999')}",
                datetime(9999, 12, 31, 23, 59, 59, micros(fsp, "999999")),
            ),
            (f"2020-02-29 12:34:56{frac(fsp)}", datetime(2020, 2, 29, 12, 34, 56, micros(fsp))),
        ],
    )


def _timestamp_col(fsp: int) -> Col:
    # Written in a session at +05:30: the target holds the same instants, in UTC.
    return Col(
        f"c_timestamp{fsp}",
        f"timestamp({fsp}) NULL",
        f"timestamp({fsp}) with time zone",
        [
            ("1970-01-01 05:30:01", datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)),
            (
                f"2038-01-19 08:44:07{frac(fsp, '999999')}",
                datetime(2038, 1, 19, 3, 14, 7, micros(fsp, "999999"), tzinfo=UTC),
            ),
            (
                f"2024-03-10 07:30:00{frac(fsp)}",
                datetime(2024, 3, 10, 2, 0, 0, micros(fsp), tzinfo=UTC),
            ),
        ],
    )


def _time_col(fsp: int) -> Col:
    values = [
        ("838:59:59", timedelta(hours=838, minutes=59, seconds=59)),
        ("-838:59:59", -timedelta(hours=838, minutes=59, seconds=59)),
        ("00:00:00", timedelta(0)),
        (
            f"-01:02:03{frac(fsp)}",
            -timedelta(hours=1, minutes=2, seconds=3, microseconds=micros(fsp)),
        ),
        (f"25:00:00{frac(fsp)}", timedelta(hours=25, microseconds=micros(fsp))),
        (
            f"-100:00:00{frac(fsp, '999999')}",
            -timedelta(hours=100, microseconds=micros(fsp, "999999")),
        ),
    ]
    if fsp:
        smallest = "0" * (fsp - 1) + "1"
        values.append((f"-00:00:00.{smallest}", -timedelta(microseconds=micros(fsp, smallest))))
        values.append((f"00:00:00.{smallest}", timedelta(microseconds=micros(fsp, smallest))))
    return Col(f"c_time{fsp}", f"time({fsp})", "interval", values)


TEMPORALS = Family(
    "temporals",
    [
        Col(
            "c_date",
            "date",
            "date",
            [
                ("1000-01-01", date(1000, 1, 1)),
                ("9999-12-31", date(9999, 12, 31)),
                ("2000-02-29", date(2000, 2, 29)),
                ("0001-01-01", date(1, 1, 1)),
            ],
        ),
        *(_datetime_col(fsp) for fsp in range(7)),
        *(_timestamp_col(fsp) for fsp in range(7)),
        *(_time_col(fsp) for fsp in range(7)),
    ],
    time_zone="+05:30",
)

ENUM_MEMBERS = ["a", "b c", "it's", "back\\slash", "x,y", " lead", "NULL"]
SET_MEMBERS = ["a", "b c", "it's", 'q"uote', "back\\slash", "{br}", "NULL"]


def _members(members: list[str]) -> str:
    return ", ".join("'" + m.replace("\\", "\\\\").replace("'", "''") + "'" for m in members)


JSON_TEXTS = [
    '{"a": 1}',
    "[1, 2.50, null, true, false]",
    '{"nested": {"deep": [1, {"x": "ü😀"}]}, "n": -0.5}',
    '"just a string"',
    "null",
    "12345678901234567890123",
    "1.5e300",
    '{"tab": "a\\tb", "nl": "a\\nb", "bs": "\\\\", "q": "\\"", "u": "\\u00e9"}',
    "{}",
    "[]",
    JSON_BIG,
]

CHOICES = Family(
    "choices",
    [
        Col(
            "c_enum",
            f"enum({_members(ENUM_MEMBERS)})",
            "text",
            [(m, m) for m in ENUM_MEMBERS] + [("nope", "")],  # '' is MySQL's invalid value
        ),
        Col(
            "c_set",
            f"set({_members(SET_MEMBERS)})",
            "text[]",
            [
                ("", []),
                ("a", ["a"]),
                ("b c,a", ["a", "b c"]),  # members come in definition order
                (",".join(SET_MEMBERS), SET_MEMBERS),
                ("NULL", ["NULL"]),
                ('q"uote,back\\slash', ['q"uote', "back\\slash"]),
            ],
        ),
        Col("c_json", "json", "jsonb", [(t, Json(t)) for t in JSON_TEXTS]),
    ],
    sql_mode="",
)

POLYGON = struct.pack("<IBIII", 0, 1, 3, 1, 5) + b"".join(
    struct.pack("<dd", x, y) for x, y in [(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]
)
SPATIAL = Family(
    "spatial",
    [
        Col(
            "c_point",
            "point",
            "bytea",
            [
                (Sql("ST_GeomFromText('POINT(1 2)')"), point_wkb(0, 1, 2)),
                (Sql("ST_GeomFromText('POINT(-1.5 1e300)', 4326)"), point_wkb(4326, -1.5, 1e300)),
            ],
        ),
        Col(
            "c_polygon",
            "polygon",
            "bytea",
            [(Sql("ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))')"), POLYGON)],
        ),
        Col(
            "c_geometry",
            "geometry",
            "bytea",
            [
                (
                    Sql("ST_GeomFromText('LINESTRING(0 0,1 1)')"),
                    struct.pack("<IBII", 0, 1, 2, 2) + struct.pack("<dddd", 0, 0, 1, 1),
                )
            ],
        ),
    ],
)

FAMILIES = [INTEGERS, NUMBERS, STRINGS, BINARIES, TEMPORALS, CHOICES, SPATIAL]
FAMILY_IDS = [f.name for f in FAMILIES]
TABLES = [(f, table) for f in FAMILIES for table in (f.name, f.name + "_nokey")]


# --- running the pipeline once over every family ---------------------------------------------


@dataclass
class Landed:
    """What the target held after the streamed inserts, and after the updates and deletes:
    table → id → column → (value, value::text)."""

    schema: str
    inserted: dict[str, dict[int, dict[str, tuple[Any, str | None]]]] = field(default_factory=dict)
    changed: dict[str, dict[int, dict[str, tuple[Any, str | None]]]] = field(default_factory=dict)
    types: dict[str, dict[str, tuple[str, bool]]] = field(default_factory=dict)
    mysql_raw: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _create(conn: Any, family: Family, table: str, keyed: bool) -> None:
    columns = ", ".join(f"{_quote(c.name)} {c.mysql}" for c in family.columns)
    key = "id int PRIMARY KEY" if keyed else "id int NOT NULL"
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{table}` ({key}, {columns}) CHARACTER SET utf8mb4")


def _insert(conn: Any, family: Family, table: str, first_id: int) -> None:
    """Write the family's rows with ids from ``first_id``, in the family's session."""
    with conn.cursor() as cur:
        cur.execute(
            "SET SESSION sql_mode = %s, time_zone = %s", (family.sql_mode, family.time_zone)
        )
        for i, row in enumerate(family.rows()):
            params: list[Any] = [first_id + i]
            texts = ["%s"]
            for inserted, _ in row:
                if isinstance(inserted, Sql):
                    texts.append(inserted.replace("%", "%%"))
                else:
                    texts.append("%s")
                    params.append(inserted)
            cur.execute(f"INSERT INTO `{table}` VALUES ({', '.join(texts)})", params)
        cur.execute("SET SESSION sql_mode = DEFAULT, time_zone = DEFAULT")


def _target_rows(
    conn: psycopg.Connection[Any], schema: str, family: Family, table: str
) -> dict[int, dict[str, tuple[Any, str | None]]]:
    names = [c.name for c in family.columns]
    selected = sql.SQL(", ").join(
        sql.SQL("{0}, {0}::text").format(sql.Identifier(n)) for n in names
    )
    query = sql.SQL("SELECT id, {} FROM {}.{}").format(
        selected, sql.Identifier(schema), sql.Identifier(table)
    )
    found: dict[int, dict[str, tuple[Any, str | None]]] = {}
    for row in conn.execute(query).fetchall():
        assert row[0] not in found, f"{table}: id {row[0]} is in the target twice"
        found[row[0]] = {n: (row[1 + 2 * i], row[2 + 2 * i]) for i, n in enumerate(names)}
    return found


def _target_connection(dsn: str) -> psycopg.Connection[Any]:
    # IntervalStyle postgres: psycopg reads intervals as timedelta only in that style.
    options = "-c TimeZone=UTC -c IntervalStyle=postgres -c DateStyle=ISO -c extra_float_digits=1"
    return psycopg.connect(dsn, autocommit=True, options=options)


def _wait_marker(pipeline: RunningPipeline, target_dsn: str, schema: str, value: int) -> None:
    def arrived() -> bool:
        if pipeline.error is not None:
            return True
        with _target_connection(target_dsn) as conn:
            try:
                query = sql.SQL("SELECT 1 FROM {}.marker WHERE id = %s").format(
                    sql.Identifier(schema)
                )
                return conn.execute(query, (value,)).fetchone() is not None
            except psycopg.errors.UndefinedTable:
                return False

    wait_for(arrived, 60, f"marker {value} to reach the target")
    if pipeline.error is not None:
        raise pipeline.error


def pipeline_config(
    name: str, mysql_dsn: str, database: str, target_dsn: str, **source: Any
) -> PipelineConfig:
    """A MySQL → PostgreSQL pipeline over every table of ``database``."""
    return PipelineConfig.model_validate(
        {
            "name": name,
            "source": {"type": "mysql", "dsn": mysql_dsn, "tables": [f"{database}.*"], **source},
            "sink": {"type": "postgres", "dsn": target_dsn},
        }
    )


@pytest.fixture(scope="module")
def landed(
    mariadb_server: MariaDbServer, _mariadb_repl_password: str, target_cluster: PgCluster
) -> Iterator[Landed]:
    """Every family copied by the snapshot, streamed, then updated and deleted."""
    database = f"types_{secrets.token_hex(4)}"
    mariadb_server.create_database(database)
    target_dsn = target_cluster.create_database(database)
    mysql_dsn = mariadb_server.dsn("repl", _mariadb_repl_password, database)
    result = Landed(database)
    conn = connect(mysql_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE marker (id int PRIMARY KEY)")
        for family, table in TABLES:
            _create(conn, family, table, keyed=not table.endswith("_nokey"))
            _insert(conn, family, table, 1)
        pipeline = RunningPipeline(pipeline_config("types", mysql_dsn, database, target_dsn))
        try:
            wait_for(
                lambda: (
                    pipeline.error is not None
                    or snapshot_done(target_dsn, "types", len(TABLES) + 1)
                ),
                60,
                "the snapshot",
            )
            if pipeline.error is not None:
                raise pipeline.error
            for family, table in TABLES:
                _insert(conn, family, table, 1 + STREAMED)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO marker VALUES (1)")
            _wait_marker(pipeline, target_dsn, database, 1)
            with _target_connection(target_dsn) as pg:
                for family, table in TABLES:
                    result.inserted[table] = _target_rows(pg, database, family, table)
            with conn.cursor() as cur:
                for family, table in TABLES:
                    count = len(family.rows())
                    # Snapshot rows and even streamed rows move; odd streamed rows go.
                    cur.execute(f"UPDATE `{table}` SET id = id + {MOVED} WHERE id <= {count}")
                    cur.execute(
                        f"DELETE FROM `{table}` WHERE id > {STREAMED} AND id < {MOVED}"
                        " AND id % 2 = 1"
                    )
                    cur.execute(
                        f"UPDATE `{table}` SET id = id + {MOVED}"
                        f" WHERE id > {STREAMED} AND id < {MOVED}"
                    )
                cur.execute("INSERT INTO marker VALUES (2)")
            _wait_marker(pipeline, target_dsn, database, 2)
        finally:
            pipeline.stop()
        with _target_connection(target_dsn) as pg:
            for family, table in TABLES:
                result.changed[table] = _target_rows(pg, database, family, table)
                rows = pg.execute(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull"
                    " FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0"
                    " AND NOT a.attisdropped",
                    (f'"{database}"."{table}"',),
                ).fetchall()
                result.types[table] = {r[0]: (r[1], r[2]) for r in rows}
        with conn.cursor() as cur:
            columns = ", ".join(_quote(c.name) for c in SPATIAL.columns)
            cur.execute(f"SELECT id, {columns} FROM `spatial`")
            result.mysql_raw["spatial"] = {
                r[0]: dict(zip([c.name for c in SPATIAL.columns], r[1:], strict=True))
                for r in cur.fetchall()
            }
        yield result
    finally:
        conn.close()
        mariadb_server.drop_database(database)
        target_cluster.drop_database(database)


def _same(expected: Any, got: Any, text: str | None, pg_type: str) -> bool:
    """Whether the target's value (and its text) is the expected one, exactly."""
    if expected is None:
        return got is None and text is None
    if pg_type == "real":
        return isinstance(got, float) and f32(got) == f32(expected)
    if isinstance(expected, Json):
        return text is not None and _json(text) == expected.parsed()
    if isinstance(expected, Decimal):
        return isinstance(got, Decimal) and str(got) == str(expected)  # the scale counts
    if isinstance(expected, float):
        return isinstance(got, float) and got == expected
    if isinstance(expected, datetime):
        return (
            isinstance(got, datetime)
            and got == expected
            and (got.tzinfo is None) == (expected.tzinfo is None)
        )
    return type(got) is type(expected) and got == expected


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:60] + f"… ({len(text)} chars)"


def _mismatches(family: Family, table: str, rows: dict[int, Any], first_id: int) -> list[str]:
    problems = []
    for i, row in enumerate(family.rows()):
        found = rows.get(first_id + i)
        if found is None:
            problems.append(f"{table} id {first_id + i}: missing")
            continue
        for column, (inserted, expected) in zip(family.columns, row, strict=True):
            got, text = found[column.name]
            if not _same(expected, got, text, column.pg):
                problems.append(
                    f"{table} id {first_id + i} {column.name} ({column.mysql}) from "
                    f"{_short(inserted)}: expected {_short(expected)}, got {_short(got)} "
                    f"(text {_short(text)})"
                )
    return problems


# --- the checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_snapshot_copies_every_value_exactly(landed: Landed, family: Family) -> None:
    """Rows present before the pipeline started land in the target as the expected values."""
    problems = []
    for table in (family.name, family.name + "_nokey"):
        problems += _mismatches(family, table, landed.inserted[table], 1)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_stream_inserts_every_value_exactly(landed: Landed, family: Family) -> None:
    """Rows inserted while the pipeline streams land in the target as the expected values."""
    problems = []
    for table in (family.name, family.name + "_nokey"):
        problems += _mismatches(family, table, landed.inserted[table], 1 + STREAMED)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_snapshot_and_stream_write_the_same_text(landed: Landed, family: Family) -> None:
    """A value copied by the snapshot and the same value streamed have the same text form."""
    problems = []
    for table in (family.name, family.name + "_nokey"):
        rows = landed.inserted[table]
        for i in range(len(family.rows())):
            copied, streamed = rows.get(1 + i), rows.get(1 + STREAMED + i)
            if copied is None or streamed is None:
                problems.append(f"{table}: row {i + 1} is missing")
                continue
            for column in family.columns:
                if copied[column.name][1] != streamed[column.name][1]:
                    problems.append(
                        f"{table} row {i + 1} {column.name}: snapshot "
                        f"{_short(copied[column.name][1])}, stream "
                        f"{_short(streamed[column.name][1])}"
                    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_updates_and_deletes_find_rows_by_these_values(landed: Landed, family: Family) -> None:
    """Updates and deletes of copied and of streamed rows change exactly those rows, keyed
    or not (a keyless table matches every value of the before image)."""
    count = len(family.rows())
    moved = {MOVED + 1 + i: 1 + i for i in range(count)}
    moved |= {MOVED + id_: id_ for id_ in range(1 + STREAMED, 1 + STREAMED + count) if id_ % 2 == 0}
    problems = []
    for table in (family.name, family.name + "_nokey"):
        rows = landed.changed[table]
        if set(rows) != set(moved):
            problems.append(
                f"{table}: ids {sorted(rows)} in the target, expected {sorted(moved)} "
                "(an update or delete did not find its row)"
            )
            continue
        for new_id, old_id in moved.items():
            for column, (_, expected) in zip(
                family.columns, family.rows()[(old_id - 1) % STREAMED], strict=True
            ):
                got, text = rows[new_id][column.name]
                if not _same(expected, got, text, column.pg):
                    problems.append(f"{table} id {new_id} {column.name}: got {_short(got)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_target_columns_get_the_mapped_types(landed: Landed, family: Family) -> None:
    """Each MySQL column becomes the PostgreSQL type of the README's table, nullable as in
    MySQL."""
    for table in (family.name, family.name + "_nokey"):
        types = landed.types[table]
        got = {c.name: types[c.name][0] for c in family.columns}
        assert got == {c.name: c.pg for c in family.columns}
        assert all(types[c.name][1] for c in family.columns)  # all are nullable in MySQL
        assert types["id"] == ("integer", False)


def test_spatial_values_are_mysql_internal_geometry(landed: Landed) -> None:
    """Spatial values land as the bytes MySQL's SELECT returns: a 4-byte SRID, then WKB."""
    raw = landed.mysql_raw["spatial"]
    assert set(raw) == set(landed.changed["spatial"])
    for id_, values in raw.items():
        for column in SPATIAL.columns:
            assert landed.changed["spatial"][id_][column.name][0] == values[column.name]
    assert raw[MOVED + 1]["c_point"] == point_wkb(0, 1, 2)
    assert raw[MOVED + 1]["c_polygon"] == POLYGON


# --- options, zero dates and what cannot be copied -------------------------------------------


def _run(db: MysqlDatabase, target_dsn: str, **source: Any) -> RunningPipeline:
    config = pipeline_config("opts", db.dsn, db.name, target_dsn, **source)
    return RunningPipeline(config)


def _wait_snapshot(pipeline: RunningPipeline, target_dsn: str, tables: int = 2) -> None:
    wait_for(
        lambda: pipeline.error is not None or snapshot_done(target_dsn, "opts", tables),
        30,
        "the snapshot",
    )
    if pipeline.error is not None:
        raise pipeline.error


def _streamed(
    pipeline: RunningPipeline, db: MysqlDatabase, target_dsn: str, statements: list[str]
) -> None:
    """Run ``statements`` in one session while streaming, then wait for a marker row."""
    conn = connect(db.dsn)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            cur.execute("INSERT INTO marker VALUES (1)")
    finally:
        conn.close()
    _wait_marker(pipeline, target_dsn, db.name, 1)


def _run_sql(db: MysqlDatabase, statements: list[str]) -> None:
    conn = connect(db.dsn)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


ZERO_TABLE = (
    "CREATE TABLE zero (id int PRIMARY KEY, d date NOT NULL, d_month date, d_day date,"
    " dt datetime NOT NULL, dt6 datetime(6), ts timestamp NULL, ts3 timestamp(3) NULL)"
)
ZERO_ROWS = [
    "SET SESSION sql_mode = ''",
    "INSERT INTO zero VALUES (%d, '0000-00-00', '2020-00-15', '2020-05-00',"
    " '0000-00-00 00:00:00', '0000-00-00 00:00:00.000000', '0000-00-00 00:00:00',"
    " '0000-00-00 00:00:00.000')",
    "INSERT INTO zero VALUES (%d, '2020-01-02', '2020-03-04', '2020-05-06',"
    " '2020-01-02 03:04:05', '2020-01-02 03:04:05.123456', '2020-01-02 03:04:05',"
    " '2020-01-02 03:04:05.678')",
]


def _zero_rows(first: int) -> list[str]:
    return [ZERO_ROWS[0], ZERO_ROWS[1] % first, ZERO_ROWS[2] % (first + 1)]


def test_zero_dates_become_null_in_nullable_columns(
    mysql_database: MysqlDatabase, target_dsn: str
) -> None:
    """With zero_dates: null every kind of zero date (zero year, month or day; zero datetime
    and timestamp) is NULL in the target, whose columns then allow NULL, by both paths."""
    db = mysql_database
    _run_sql(db, [ZERO_TABLE, "CREATE TABLE marker (id int PRIMARY KEY)", *_zero_rows(1)])
    pipeline = _run(db, target_dsn, zero_dates="null")
    try:
        _wait_snapshot(pipeline, target_dsn)
        _streamed(pipeline, db, target_dsn, _zero_rows(11))
    finally:
        pipeline.stop()
    with _target_connection(target_dsn) as pg:
        rows = pg.execute(
            sql.SQL("SELECT * FROM {}.zero ORDER BY id").format(sql.Identifier(db.name))
        ).fetchall()
        nullable = pg.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'zero' AND column_name <> 'id'",
            (db.name,),
        ).fetchall()
    valid = (
        date(2020, 1, 2),
        date(2020, 3, 4),
        date(2020, 5, 6),
        datetime(2020, 1, 2, 3, 4, 5),
        datetime(2020, 1, 2, 3, 4, 5, 123456),
        datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    zero = (None,) * 7
    assert rows == [(1, *zero), (2, *valid), (11, *zero), (12, *valid)]
    assert all(n == "YES" for _, n in nullable) and len(nullable) == 7


@pytest.mark.parametrize("path", ["snapshot", "stream"])
@pytest.mark.parametrize(
    ("column", "kind", "value"),
    [
        ("d", "date", "'2020-05-00'"),
        ("dt", "datetime(6)", "'0000-00-00 00:00:00'"),
        ("ts", "timestamp(3) NULL", "'0000-00-00 00:00:00'"),
    ],
)
def test_zero_dates_stop_the_pipeline_when_they_are_errors(
    mysql_database: MysqlDatabase, target_dsn: str, path: str, column: str, kind: str, value: str
) -> None:
    """With zero_dates: error a zero date fails the pipeline, naming the column and the
    zero_dates option, whether the snapshot or the stream meets it."""
    db = mysql_database
    rows = ["SET SESSION sql_mode = ''", f"INSERT INTO zero VALUES (1, {value})"]
    _run_sql(db, [f"CREATE TABLE zero (id int PRIMARY KEY, {column} {kind})"])
    _run_sql(db, ["CREATE TABLE marker (id int PRIMARY KEY)"])
    if path == "snapshot":
        _run_sql(db, rows)
    pipeline = _run(db, target_dsn, zero_dates="error")
    if path == "stream":
        _wait_snapshot(pipeline, target_dsn)
        _run_sql(db, rows)
    error = str(pipeline.wait_failed())
    assert f"column {column} " in error and "zero_dates" in error, error
    with _target_connection(target_dsn) as pg:
        query = sql.SQL("SELECT count(*) FROM {}.zero").format(sql.Identifier(db.name))
        try:
            assert pg.execute(query).fetchone() == (0,)
        except psycopg.errors.UndefinedTable:
            pass


@pytest.mark.parametrize("path", ["snapshot", "stream"])
def test_a_tinyint1_that_is_not_a_boolean_stops_the_pipeline(
    mysql_database: MysqlDatabase, target_dsn: str, path: str
) -> None:
    """A TINYINT(1) holding 2 fails the pipeline with an error naming the column and the
    option tinyint1_as_boolean: false, on either path."""
    db = mysql_database
    _run_sql(db, ["CREATE TABLE flags (id int PRIMARY KEY, flag tinyint(1))"])
    _run_sql(db, ["CREATE TABLE marker (id int PRIMARY KEY)"])
    rows = ["INSERT INTO flags VALUES (1, 1), (2, 2)"]
    if path == "snapshot":
        _run_sql(db, rows)
    pipeline = _run(db, target_dsn)
    if path == "stream":
        _wait_snapshot(pipeline, target_dsn)
        _run_sql(db, rows)
    error = str(pipeline.wait_failed())
    assert "column flag " in error and "tinyint1_as_boolean: false" in error, error


def test_tinyint1_as_smallint_keeps_every_value(
    mysql_database: MysqlDatabase, target_dsn: str
) -> None:
    """With tinyint1_as_boolean: false a TINYINT(1) is a smallint holding any TINYINT value."""
    db = mysql_database
    _run_sql(db, ["CREATE TABLE flags (id int PRIMARY KEY, flag tinyint(1))"])
    _run_sql(db, ["CREATE TABLE marker (id int PRIMARY KEY)"])
    _run_sql(db, ["INSERT INTO flags VALUES (1, 1), (2, 2), (3, -128), (4, NULL)"])
    pipeline = _run(db, target_dsn, tinyint1_as_boolean=False)
    try:
        _wait_snapshot(pipeline, target_dsn)
        _streamed(pipeline, db, target_dsn, ["INSERT INTO flags VALUES (11, 0), (12, 127)"])
    finally:
        pipeline.stop()
    with _target_connection(target_dsn) as pg:
        rows = pg.execute(
            sql.SQL("SELECT id, flag, pg_typeof(flag)::text FROM {}.flags ORDER BY id").format(
                sql.Identifier(db.name)
            )
        ).fetchall()
    assert [r[:2] for r in rows] == [(1, 1), (2, 2), (3, -128), (4, None), (11, 0), (12, 127)]
    assert {r[2] for r in rows} == {"smallint"}


@pytest.mark.parametrize("path", ["snapshot", "stream"])
def test_an_invalid_date_stops_the_pipeline_naming_it(
    mysql_database: MysqlDatabase, target_dsn: str, path: str
) -> None:
    """A date MySQL took under ALLOW_INVALID_DATES (February 31st) fails the pipeline with
    the value in the message; no other date lands in its place."""
    db = mysql_database
    _run_sql(db, ["CREATE TABLE days (id int PRIMARY KEY, d date)"])
    _run_sql(db, ["CREATE TABLE marker (id int PRIMARY KEY)"])
    rows = [
        "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",
        "INSERT INTO days VALUES (1, '2021-02-31')",
    ]
    if path == "snapshot":
        _run_sql(db, rows)
    pipeline = _run(db, target_dsn)
    if path == "stream":
        _wait_snapshot(pipeline, target_dsn)
        _run_sql(db, rows)
    error = str(pipeline.wait_failed())
    assert "2021-02-31" in error, error


def test_unmapped_types_are_refused_by_check_and_at_start(
    mysql_database: MysqlDatabase, target_dsn: str, tmp_path: Any
) -> None:
    """MariaDB types without a mapping (uuid, inet4, inet6) stop `replicator check` and the
    pipeline's start with an error naming the table, the column and the fix."""
    db = mysql_database
    _run_sql(db, ["CREATE TABLE odd (id int PRIMARY KEY, u uuid, i4 inet4, i6 inet6)"])
    pipeline = _run(db, target_dsn)
    error = pipeline.wait_failed()
    assert isinstance(error, PreflightError)
    for column, kind, instead in (("u", "uuid", "CHAR(36)"), ("i4", "inet4", "VARCHAR(15)")):
        pattern = rf"table {db.name}\.odd: column {column} has MySQL type {kind}\b.*" + re.escape(
            instead
        )
        assert any(re.search(pattern, p) for p in error.problems), error.problems
    config = write_config(
        tmp_path / "replicator.yaml",
        {
            "name": "opts",
            "source": {"type": "mysql", "dsn": db.dsn, "tables": [f"{db.name}.*"]},
            "sink": {"type": "postgres", "dsn": target_dsn},
        },
    )
    checked = run_cli("check", "-c", str(config))
    assert checked.returncode != 0
    output = checked.stdout + checked.stderr
    assert f"table {db.name}.odd: column i6 has MySQL type inet6" in output, output
    assert "VARCHAR(45)" in output, output


def test_a_value_beyond_max_allowed_packet_stops_the_copy(
    mysql_database: MysqlDatabase, target_dsn: str
) -> None:
    """A blob whose COPY text (hex, twice its size) exceeds max_allowed_packet stops the
    snapshot with an error naming the column and max_allowed_packet, never copying NULL."""
    db = mysql_database
    packet = int(db.execute("SELECT @@global.max_allowed_packet")[0][0])
    _run_sql(
        db,
        [
            "CREATE TABLE blobs (id int PRIMARY KEY, b longblob)",
            f"INSERT INTO blobs VALUES (1, REPEAT('x', {packet // 2 + 1024}))",
        ],
    )
    pipeline = _run(db, target_dsn)
    error = str(pipeline.wait_failed())
    assert "column b of" in error and "max_allowed_packet" in error, error


@pytest.fixture(scope="module")
def big_packet_server(mariadb_factory: MariaDbFactory) -> MariaDbServer:
    """A server that takes (and sends) statements and rows of up to 256 MiB."""
    server = mariadb_factory("big_packets", max_allowed_packet="256M")
    server.create_user("repl", "repl-password")
    return server


def test_values_over_16_mib_land_by_both_paths(
    big_packet_server: MariaDbServer, target_dsn: str
) -> None:
    """A 17 MiB LONGTEXT (full of escapes) and a 17 MiB LONGBLOB arrive whole by the
    snapshot and by the stream (binlog events of several protocol packets)."""
    server = big_packet_server
    database = f"big_{secrets.token_hex(4)}"
    server.create_database(database)
    dsn = server.dsn("repl", "repl-password", database)
    size = 17 * 1024 * 1024
    text = "\\\t\n😀" * (size // 7 + 1)  # 7 bytes each
    blob = bytes(range(256)) * (size // 256)
    db = MysqlDatabase(database, server, dsn)
    _run_sql(
        db,
        [
            "CREATE TABLE big (id int PRIMARY KEY, t longtext, b longblob)",
            "CREATE TABLE marker (id int PRIMARY KEY)",
        ],
    )
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO big VALUES (1, %s, %s)", (text, blob))
        pipeline = _run(db, target_dsn)
        try:
            _wait_snapshot(pipeline, target_dsn)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO big VALUES (2, %s, %s)", (text, blob))
                cur.execute("INSERT INTO marker VALUES (1)")
            _wait_marker(pipeline, target_dsn, database, 1)
        finally:
            pipeline.stop()
    finally:
        conn.close()
    assert len(text.encode()) > 16 * 1024 * 1024 and len(blob) > 16 * 1024 * 1024
    with _target_connection(target_dsn) as pg:
        rows = pg.execute(
            sql.SQL("SELECT id, t = %s, b = %s, length(t) FROM {}.big ORDER BY id").format(
                sql.Identifier(database)
            ),
            (text, blob),
        ).fetchall()
    assert rows == [(1, True, True, len(text)), (2, True, True, len(text))]
