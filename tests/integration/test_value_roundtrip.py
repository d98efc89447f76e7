"""Values survive source decoding and sink encoding exactly, checked against a real server.

For each (type, literal) edge case: the server's text output under the replication session's
settings is decoded with ``decoder_for`` (as pgoutput values are), written back with
``format_value`` / ``copy_row`` (as the sink does), and the server must read that back to a
value whose text output is identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from replicator.events import Interval
from replicator.sinks.postgres.copy_format import copy_row, format_value
from replicator.sources.postgres.values import Decoder, PgType, decoder_for

SESSION = (
    "SET DateStyle = ISO",
    "SET TimeZone = 'UTC'",
    "SET IntervalStyle = 'iso_8601'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
)

USER_TYPES = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'very happy')",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
    "CREATE DOMAIN small_posint AS posint CHECK (VALUE < 100)",
    "CREATE DOMAIN label AS text CHECK (VALUE <> '')",
    "CREATE DOMAIN intlist AS int[]",
    "CREATE TYPE pair AS (a int, b text)",
)

BIG_NUMERIC = "9" * 1000 + "." + "0123456789" * 50

# (type, literal): the literal is read by the type's input function; None is SQL NULL.
CASES: list[tuple[str, str | None]] = [
    ("bool", "true"),
    ("bool", "false"),
    ("bool", None),
    ("int2", "-32768"),
    ("int2", "32767"),
    ("int4", "-2147483648"),
    ("int4", "2147483647"),
    ("int8", "-9223372036854775808"),
    ("int8", "9223372036854775807"),
    ("oid", "0"),
    ("oid", "4294967295"),
    ("numeric", "NaN"),
    ("numeric", "Infinity"),
    ("numeric", "-Infinity"),
    ("numeric", "0"),
    ("numeric", "0.000"),
    ("numeric", "-0.5"),
    ("numeric", "1.50"),
    ("numeric", "1e-7"),
    ("numeric", "1e100"),
    ("numeric", "-1e-100"),
    ("numeric", "-123456789012345678901234567890.123456789012345678901234567890"),
    ("numeric", BIG_NUMERIC),
    ("numeric(10,2)", "12345678.9"),
    ("float4", "NaN"),
    ("float4", "Infinity"),
    ("float4", "-Infinity"),
    ("float4", "-0"),
    ("float4", "0.1"),
    ("float4", "3.4028235e38"),
    ("float4", "1.4e-45"),
    ("float4", "1.17549435e-38"),
    ("float4", "16777217"),
    ("float8", "NaN"),
    ("float8", "Infinity"),
    ("float8", "-Infinity"),
    ("float8", "-0"),
    ("float8", "0.1"),
    ("float8", "0.30000000000000004"),
    ("float8", "1.7976931348623157e308"),
    ("float8", "5e-324"),
    ("float8", "2.2250738585072014e-308"),
    ("float8", "1e16"),
    ("float8", "123456789.123"),
    ("text", ""),
    ("text", "plain"),
    ("text", "tab\there"),
    ("text", "new\nline"),
    ("text", "cr\rlf\r\n"),
    ("text", "back\\slash"),
    ("text", "\\N"),
    ("text", "\\."),
    ("text", 'a "quote"'),
    ("text", "NULL"),
    ("text", "{brace}"),
    ("text", "  padded  "),
    ("text", "unicode ü ☃ 😀"),
    ("text", "comma,semicolon;"),
    ("text", None),
    ("varchar(10)", "abc"),
    ("char(5)", "ab"),
    ("char(5)", ""),
    ("name", "a name"),
    ('"char"', "x"),
    ('"char"', "\\377"),
    ('"char"', ""),
    ("bytea", "\\x"),
    ("bytea", "\\x00ff5c0a0d09"),
    ("bytea", "abc\\\\"),
    ("date", "2000-02-29"),
    ("date", "0001-01-01"),
    ("date", "9999-12-31"),
    ("date", "10000-01-01"),
    ("date", "5874897-12-31"),
    ("date", "0001-12-31 BC"),
    ("date", "4714-11-24 BC"),
    ("date", "infinity"),
    ("date", "-infinity"),
    ("time", "00:00:00"),
    ("time", "12:34:56.5"),
    ("time", "23:59:59.999999"),
    ("time", "24:00:00"),
    ("time(0)", "12:34:56"),
    ("timetz", "12:00:00+00"),
    ("timetz", "12:34:56.789+05:45"),
    ("timetz", "12:00:00+05:30:15"),
    ("timetz", "00:00:00+15:59:59"),
    ("timetz", "23:59:59.999999-15:59:59"),
    ("timetz", "24:00:00-08"),
    ("timestamp", "2000-02-29 12:00:00.5"),
    ("timestamp", "1999-12-31 23:59:59.999999"),
    ("timestamp", "0001-01-01 00:00:00"),
    ("timestamp", "0099-06-01 00:00:00"),
    ("timestamp", "9999-12-31 23:59:59.999999"),
    ("timestamp", "10000-01-01 00:00:00"),
    ("timestamp", "294276-12-31 23:59:59.999999"),
    ("timestamp", "0001-01-01 00:00:00 BC"),
    ("timestamp", "4714-11-24 00:00:00 BC"),
    ("timestamp", "infinity"),
    ("timestamp", "-infinity"),
    ("timestamp(3)", "2020-01-01 00:00:00.123"),
    ("timestamptz", "2020-06-01 12:00:00+05:30"),
    ("timestamptz", "1900-01-01 00:00:00+00:53:28"),
    ("timestamptz", "epoch"),
    ("timestamptz", "0001-01-01 00:00:00+00"),
    ("timestamptz", "9999-12-31 23:59:59.999999+00"),
    ("timestamptz", "10000-01-01 00:00:00+00"),
    ("timestamptz", "294276-12-31 23:59:59.999999+00"),
    ("timestamptz", "0001-01-01 00:00:00+00 BC"),
    ("timestamptz", "4714-11-24 00:00:00+00 BC"),
    ("timestamptz", "infinity"),
    ("timestamptz", "-infinity"),
    ("interval", "0"),
    ("interval", "1 year 2 months -3 days 04:05:06.5"),
    ("interval", "-1 year -2 months"),
    ("interval", "-04:05:06.789"),
    ("interval", "1 mon"),
    ("interval", "30 days"),
    ("interval", "1 day -00:00:01"),
    ("interval", "-0.5 seconds"),
    ("interval", "1 microsecond"),
    ("interval", "1000000 hours"),
    ("interval", "178956970 years 7 months"),
    ("interval", "-178956970 years -8 months"),
    ("interval", "2147483647 days"),
    ("interval", "-2147483648 days"),
    ("interval", "PT2562047788H54.775807S"),
    ("interval", "PT-2562047788H-54.775808S"),
    ("interval", "P1Y2M3W4DT5H6M7.891011S"),
    ("interval(0)", "1 day 02:03:04"),
    ("uuid", "00000000-0000-0000-0000-000000000000"),
    ("uuid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
    ("json", '{"a": [1, 2.50, "x\\ny"],  "b" :null, "c": 1e400}'),
    ("json", '"\\u0000 \\u00e9 é"'),
    ("json", "null"),
    ("jsonb", '{"b": 1, "a": [1.50, true, "tab\\t"]}'),
    ("jsonb", '"é"'),
    ("jsonb", "[]"),
    ("int4[]", "{}"),
    ("int4[]", "{1,NULL,3}"),
    ("int4[]", "{{1,2},{3,4}}"),
    ("int4[]", "{{{1,2}},{{3,4}}}"),
    ("int4[]", "[0:2]={1,2,3}"),
    ("int4[]", "[1:1][2:3]={{1,2}}"),
    ("int2[]", "{-32768,32767}"),
    ("int8[]", "{9223372036854775807,NULL}"),
    ("oid[]", "{0,4294967295}"),
    (
        "text[]",
        '{"",NULL,"NULL",null,"a,b","q\\"uote","back\\\\slash"," spaced ","{br}","t\tab",'
        '"new\nline","\\\\N"}',
    ),
    ("text[]", '{{"a b",NULL},{"",c}}'),
    ("varchar[]", '{a,"b c"}'),
    ("char(3)[]", '{a,"b  ",""}'),
    ("name[]", "{pg_class,NULL}"),
    ('"char"[]', "{a,b}"),
    ("numeric[]", "{NaN,Infinity,-Infinity,1.50,NULL,0.0000001}"),
    ("float4[]", "{NaN,-0,0.1,Infinity}"),
    ("float8[]", "{Infinity,-Infinity,5e-324,0.30000000000000004}"),
    ("bool[]", "{t,f,NULL}"),
    ("bytea[]", '{"\\\\x00ff",NULL,"\\\\x"}'),
    ("date[]", '{infinity,-infinity,2020-01-01,"0001-01-01 BC",10000-01-01}'),
    ("time[]", "{24:00:00,12:00:00.5}"),
    ("timetz[]", '{"12:00:00+05:30:15","24:00:00+00"}'),
    ("timestamp[]", '{"2020-01-01 00:00:00",infinity,"0001-01-01 00:00:00 BC"}'),
    ("timestamptz[]", '{"2020-01-01 00:00:00+00",-infinity,"10000-01-01 00:00:00+00"}'),
    ("interval[]", '{P1Y2M-3DT4H5M6.5S,PT0S,"1 day",-00:00:01}'),
    ("uuid[]", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}"),
    ("json[]", '{"{\\"a\\": 1}",NULL,"[1, 2]"}'),
    ("jsonb[]", '{"{\\"a\\": 1}","\\"s\\""}'),
    ("box[]", "{(1,1),(0,0);(2,2),(1,1)}"),
    ("point[]", '{"(1,2)","(3.5,-4)"}'),
    ("inet[]", "{192.168.0.1/24,::1}"),
    ("int4range[]", '{"[1,3)",empty}'),
    ("pair[]", '{"(1,\\"x y\\")",NULL}'),
    ("money", "1234.56"),
    ("inet", "192.168.0.1/24"),
    ("inet", "::1"),
    ("cidr", "10.0.0.0/8"),
    ("macaddr", "08:00:2b:01:02:03"),
    ("macaddr8", "08:00:2b:01:02:03:04:05"),
    ("bit(4)", "1010"),
    ("varbit", "10101"),
    ("xml", '<a b="c">d &amp; e</a>'),
    ("tsvector", "fat:2 rat:3 a:1"),
    ("tsquery", "fat & (rat | cat)"),
    ("point", "(1.5,-2)"),
    ("line", "{1,2,3}"),
    ("lseg", "[(0,0),(1,1)]"),
    ("box", "(1,1),(0,0)"),
    ("path", "[(0,0),(1,1),(2,0)]"),
    ("polygon", "((0,0),(1,1),(1,0))"),
    ("circle", "<(0,0),5>"),
    ("int4range", "[1,10)"),
    ("int8range", "empty"),
    ("numrange", "(1.5,2.5]"),
    ("daterange", "[2020-01-01,infinity)"),
    ("tstzrange", '["2020-01-01 00:00:00+00",)'),
    ("int4multirange", "{[1,3),[5,7)}"),
    ("pg_lsn", "16/B374D848"),
    ("txid_snapshot", "10:20:10,14,15"),
    ("jsonpath", "$.a[*] ? (@ > 1)"),
    ("pair", '(1,"x y")'),
    ("pair", "(,)"),
    ("mood", "very happy"),
    ("mood[]", '{sad,NULL,"very happy"}'),
    ("posint", "42"),
    ("posint[]", "{1,2}"),
    ("small_posint", "7"),
    ("label", "hello world"),
    ("label[]", '{"a b",c}'),
    ("intlist", "{1,NULL}"),
]


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    for statement in SESSION:
        conn.execute(statement)
    return conn


def _lookup(conn: psycopg.Connection[Any]) -> Any:
    """A small catalog lookup for the types decoder_for does not know statically."""

    def lookup(oid: int) -> PgType:
        row = conn.execute(
            """
            SELECT t.typname, t.typtype, t.typbasetype,
                   CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
                   coalesce(e.typdelim, ',')
            FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
            WHERE t.oid = %s
            """,
            (oid,),
        ).fetchone()
        assert row is not None, oid
        name, kind, base, elem, delimiter = row
        return PgType(oid, name, kind, int(base), int(elem), delimiter)

    return lookup


@pytest.fixture
def conn(source_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a fresh database with the test's user types, in the source's session."""
    with _connect(source_dsn) as connection:
        for statement in USER_TYPES:
            connection.execute(statement)
        yield connection


def _type_oid(conn: psycopg.Connection[Any], type_name: str) -> int:
    row = conn.execute("SELECT %s::regtype::oid", (type_name,)).fetchone()
    assert row is not None
    return int(row[0])


def _server_text(conn: psycopg.Connection[Any], literal: str | None, type_name: str) -> str | None:
    """The server's text output for ``literal`` read by ``type_name``'s input function."""
    # An untyped string constant goes straight to the input function; a text-typed parameter
    # would go through casts from text instead, some of which are not I/O ("char", xml).
    query = sql.SQL("SELECT {}::{}").format(sql.Literal(literal), sql.SQL(type_name))
    with conn.cursor() as cur:
        cur.execute(query)
        assert cur.pgresult is not None
        raw = cur.pgresult.get_value(0, 0)
    return None if raw is None else bytes(raw).decode()


def _decoder(conn: psycopg.Connection[Any], type_name: str) -> Decoder:
    return decoder_for(_type_oid(conn, type_name), _lookup(conn))


def test_every_edge_case_survives_decode_and_encode(conn: psycopg.Connection[Any]) -> None:
    """Each edge-case value, decoded and re-encoded, reads back with identical text output."""
    failures = []
    for type_name, literal in CASES:
        original = _server_text(conn, literal, type_name)
        value = None if original is None else _decoder(conn, type_name)(original)
        encoded = format_value(value)
        try:
            again = _server_text(conn, encoded, type_name)
        except psycopg.Error as exc:
            failures.append(f"{type_name} {original!r} → {value!r} → {encoded!r}: {exc}")
            continue
        if again != original:
            failures.append(f"{type_name} {original!r} → {value!r} → {encoded!r} → {again!r}")
    assert not failures, "\n".join(failures)


def test_a_whole_row_of_edge_cases_survives_copy(conn: psycopg.Connection[Any]) -> None:
    """A row holding every edge case, written with copy_row into COPY, reads back identically."""
    columns = [
        sql.SQL("c{} {}").format(sql.SQL(str(i)), sql.SQL(t)) for i, (t, _) in enumerate(CASES)
    ]
    conn.execute(sql.SQL("CREATE TABLE source_row ({})").format(sql.SQL(", ").join(columns)))
    conn.execute("CREATE TABLE target_row (LIKE source_row)")
    values = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Literal(literal), sql.SQL(t)) for t, literal in CASES
    )
    conn.execute(sql.SQL("INSERT INTO source_row VALUES ({})").format(values))
    conn.execute("INSERT INTO source_row DEFAULT VALUES")  # a row of NULLs

    # Decode as the source does: one decoder per column, from the column's own type OID.
    lookup = _lookup(conn)
    type_oids = [
        int(oid)
        for (oid,) in conn.execute(
            "SELECT atttypid FROM pg_attribute WHERE attrelid = 'source_row'::regclass "
            "AND attnum > 0 ORDER BY attnum"
        )
    ]
    decoders = [decoder_for(oid, lookup) for oid in type_oids]
    source_rows = _rows_as_text(conn, "source_row")
    lines = []
    for row in source_rows:
        decoded = [None if t is None else d(t) for d, t in zip(decoders, row, strict=True)]
        lines.append(copy_row(decoded))
    with conn.cursor().copy("COPY target_row FROM STDIN") as copy:
        copy.write("".join(lines))

    target_rows = _rows_as_text(conn, "target_row")
    assert len(target_rows) == len(source_rows) == 2
    for source, target in zip(source_rows, target_rows, strict=True):
        differences = [
            f"{CASES[i][0]}: {s!r} → {t!r}"
            for i, (s, t) in enumerate(zip(source, target, strict=True))
            if s != t
        ]
        assert not differences, "\n".join(differences)


def _rows_as_text(conn: psycopg.Connection[Any], table: str) -> list[list[str | None]]:
    """Every row of ``table`` (NULL row last) as the server's text output per column."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY c0 NULLS LAST").format(sql.Identifier(table))
        )
        result = cur.pgresult
        assert result is not None
        rows = []
        for r in range(result.ntuples):
            row = []
            for c in range(result.nfields):
                raw = result.get_value(r, c)
                row.append(None if raw is None else bytes(raw).decode())
            rows.append(row)
    return rows


def test_decoded_values_have_the_documented_python_types(conn: psycopg.Connection[Any]) -> None:
    """Real server output decodes to the Python types of the mapping table."""
    expected = {
        "bool": "bool",
        "int8": "int",
        "numeric": "Decimal",
        "float8": "float",
        "text": "str",
        "bytea": "bytes",
        "date": "date",
        "time": "time",
        "timestamp": "datetime",
        "timestamptz": "datetime",
        "interval": "Interval",
        "uuid": "UUID",
        "jsonb": "str",
        "int4[]": "list",
        "mood": "str",
        "posint": "int",
        "inet": "str",
    }
    literals = dict(CASES[::-1])  # the first literal per type
    for type_name, python_type in expected.items():
        text = _server_text(conn, literals[type_name], type_name)
        assert text is not None
        value = _decoder(conn, type_name)(text)
        assert type(value).__name__ == python_type, (type_name, text, value)
    text = _server_text(conn, "2020-01-01 12:00+05", "timestamptz")
    assert text == "2020-01-01 07:00:00+00"
    aware = _decoder(conn, "timestamptz")(text)
    assert aware == datetime(2020, 1, 1, 7, tzinfo=UTC)
    assert aware.tzinfo is UTC


_INT32 = st.integers(-(2**31), 2**31 - 1)
_INTERVALS = st.builds(Interval, _INT32, _INT32, st.integers(-(2**63), 2**63 - 1))
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@st.composite
def _text_arrays(draw: st.DrawFn) -> list[Any]:
    """Rectangular lists of text/None with up to three dimensions, or the empty list."""
    dims = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    if not dims:
        return []

    def build(level: int) -> list[Any]:
        if level == len(dims) - 1:
            return [draw(st.none() | _TEXT) for _ in range(dims[level])]
        return [build(level + 1) for _ in range(dims[level])]

    return build(0)


def test_any_interval_reads_back_from_the_server_unchanged(conn: psycopg.Connection[Any]) -> None:
    """Any Interval, written by format_value, is read by the server as the same interval."""
    decode = _decoder(conn, "interval")

    @settings(max_examples=300, deadline=None)
    @given(_INTERVALS)
    def check(interval: Interval) -> None:
        text = _server_text(conn, format_value(interval), "interval")
        assert text is not None
        assert decode(text) == interval

    check()


def test_any_text_array_reads_back_from_the_server_unchanged(conn: psycopg.Connection[Any]) -> None:
    """Any rectangular text[] value, written by format_value, decodes back from the server equal."""
    decode = _decoder(conn, "text[]")

    @settings(max_examples=300, deadline=None)
    @given(_text_arrays())
    def check(value: list[Any]) -> None:
        text = _server_text(conn, format_value(value), "text[]")
        assert text is not None
        assert decode(text) == value

    check()
