"""PostgreSQL COPY text rows → Python values, for a snapshot published to Kafka.

Both database sources copy tables as COPY text lines for PostgreSQL column types (MySQL
writes them too, see ``sources/mysql/copy_sql.py``). A Kafka sink publishes each row as a
snapshot read event, so it reads the lines back into the values the stream would have
carried, with the PostgreSQL source's own text decoders (``sources/postgres/values.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from replicator.events import Column
from replicator.sources.postgres.values import Decoder, PgType, decoder_for, parse_array

_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.S)
_CONTROL = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_TYPMOD = re.compile(r"\([^)]*\)")
# Built-in type names (format_type spelling, typmod removed) → OID, for columns whose source
# is not PostgreSQL and so names no OID.
_OIDS = {
    "boolean": 16,
    "bytea": 17,
    "bigint": 20,
    "smallint": 21,
    "integer": 23,
    "text": 25,
    "json": 114,
    "real": 700,
    "double precision": 701,
    "character": 1042,
    "character varying": 1043,
    "date": 1082,
    "time without time zone": 1083,
    "timestamp without time zone": 1114,
    "timestamp with time zone": 1184,
    "interval": 1186,
    "time with time zone": 1266,
    "bit": 1560,
    "bit varying": 1562,
    "numeric": 1700,
    "uuid": 2950,
    "jsonb": 3802,
}


def _unescape_match(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return _CONTROL.get(code, code)


def _field(text: str) -> str | None:
    if text == "\\N":
        return None
    return _ESCAPE.sub(_unescape_match, text) if "\\" in text else text


def _unknown(oid: int) -> PgType:
    # A user type (enum, domain, composite) of the source: kept as its text.
    return PgType(oid, "", "b")


def column_decoder(column: Column) -> Decoder:
    """The text decoder of one column."""
    if column.type_oid is not None:
        return decoder_for(column.type_oid, _unknown)
    name = column.type_name
    if name.endswith("[]"):
        element = column_decoder(Column(column.name, name[:-2]))
        return lambda text: parse_array(text, element)
    oid = _OIDS.get(_TYPMOD.sub("", name).strip())
    return decoder_for(oid, _unknown) if oid is not None else str


def read_rows(
    blocks: Iterable[bytes | bytearray | memoryview], columns: tuple[Column, ...]
) -> Iterator[dict[str, Any]]:
    """Rows of a COPY text stream as ``{column: value}``."""
    names = [c.name for c in columns]
    decoders = [column_decoder(c) for c in columns]
    width = len(names)
    rest = b""
    for block in blocks:
        data = rest + bytes(block)
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            fields = line.decode("utf-8").split("\t")
            if len(fields) != width:
                raise ValueError(f"a COPY row with {len(fields)} fields, expected {width}")
            row: dict[str, Any] = {}
            for name, decode, raw in zip(names, decoders, fields, strict=True):
                text = _field(raw)
                row[name] = None if text is None else decode(text)
            yield row
    if rest.strip():
        raise ValueError("the COPY stream ended in the middle of a row")
