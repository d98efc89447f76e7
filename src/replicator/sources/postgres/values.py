"""PostgreSQL text output → Python values: one defined mapping per type.

pgoutput sends each column value as its type's text output. The replication session forces
``DateStyle=ISO, TimeZone=UTC, IntervalStyle=iso_8601, extra_float_digits=3,
bytea_output=hex``, so every text form below is fixed and parsed exactly; the PostgreSQL sink
(:mod:`replicator.sinks.postgres.copy_format`) writes each Python value back so that the
target's text output is identical to the source's.

=============================================  =============================================
PostgreSQL type (OID)                          Python value
=============================================  =============================================
bool (16)                                      ``bool``
int2 (21), int4 (23), int8 (20), oid (26)      ``int``
numeric (1700)                                 ``decimal.Decimal``, scale kept (``1.50``);
                                               also ``NaN``, ``Infinity``, ``-Infinity``
float4 (700), float8 (701)                     ``float``, also ``inf``, ``-inf``, ``nan``
                                               and ``-0.0``
text (25), varchar (1043), bpchar (1042),      ``str``; ``char(n)`` keeps its padding
name (19), "char" (18)
bytea (17)                                     ``bytes``
date (1082)                                    ``datetime.date``; ``RawValue`` for
                                               ``infinity``, ``-infinity``, BC and years
                                               after 9999
time (1083)                                    ``datetime.time``; ``RawValue`` for
                                               ``24:00:00``
timetz (1266)                                  ``datetime.time`` with a fixed-offset
                                               ``tzinfo`` (offsets may carry seconds);
                                               ``RawValue`` for ``24:00:00+hh``
timestamp (1114)                               naive ``datetime.datetime``; ``RawValue`` for
                                               ``infinity``, ``-infinity``, BC, year > 9999
timestamptz (1184)                             ``datetime.datetime`` in UTC
                                               (``tzinfo=datetime.UTC``); ``RawValue`` as
                                               for timestamp
interval (1186)                                ``events.Interval(months, days,
                                               microseconds)``; ``RawValue`` for a form
                                               that is not ISO 8601 (``infinity`` in
                                               PostgreSQL 17)
uuid (2950)                                    ``uuid.UUID``
json (114), jsonb (3802)                       ``str``: the JSON text unchanged
arrays of any element type but box             ``list`` (nested lists for more dimensions),
(e.g. int4[] 1007, text[] 1009, enum[],        elements decoded as their own type, NULL
domain[]; any type with ``elem_oid``)          elements → ``None``, ``{}`` → ``[]``;
                                               ``RawValue`` for explicit bounds
                                               (``[0:2]={1,2,3}``)
box[] (1020)                                   ``str``: its elements are separated by ``;``,
                                               which a list could not carry back to a sink
enum                                           ``str`` (the label)
domain                                         the value of its base type
everything else: money, inet, cidr, macaddr,   ``str``: the exact text output
macaddr8, bit, varbit, xml, tsvector,
tsquery, geometric types, ranges,
multiranges, composite types, pg_lsn,
jsonpath, int2vector, oidvector, reg* types,
extension types ...
=============================================  =============================================

:class:`~replicator.events.RawValue` holds the exact source text of a value that no Python
type can hold faithfully; sinks write that text back unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from replicator.events import Interval, RawValue

__all__ = ["Decoder", "PgType", "decoder_for", "parse_array"]

Decoder = Callable[[str], Any]
"""Turns one column value's text output into its Python value."""


@dataclass(frozen=True, slots=True)
class PgType:
    """What the source catalog says about a type (pg_type)."""

    oid: int
    name: str  # format_type(oid, NULL)
    kind: str  # typtype: 'b' base, 'e' enum, 'd' domain, 'c' composite, 'r' range, ...
    base_oid: int = 0  # typbasetype for domains
    elem_oid: int = 0  # typelem for array types (typcategory 'A'), else 0
    delimiter: str = ","  # typdelim of the element type for arrays (',' except box ';')


# --- scalar decoders -------------------------------------------------------------------------

_decode_bool: Decoder = {"t": True, "f": False}.__getitem__


def _decode_bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return _decode_bytea_escape(text)


def _decode_bytea_escape(text: str) -> bytes:
    # bytea_output=escape is never used by the replication session, but a server that
    # ignored the setting must still not be misread: \\ is a backslash, \ooo an octal byte.
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        backslash = text.find("\\", i)
        if backslash < 0:
            out += text[i:].encode()
            break
        out += text[i:backslash].encode()
        if text.startswith("\\\\", backslash):
            out.append(0x5C)
            i = backslash + 2
        else:
            out.append(int(text[backslash + 1 : backslash + 4], 8))
            i = backslash + 4
    return bytes(out)


def _decode_date(text: str) -> date | RawValue:
    try:
        return date.fromisoformat(text)
    except ValueError:  # infinity, -infinity, BC, year > 9999
        return RawValue(text)


def _decode_time(text: str) -> time | RawValue:
    try:
        return time.fromisoformat(text)
    except ValueError:  # 24:00:00
        return RawValue(text)


def _decode_timestamp(text: str) -> datetime | RawValue:
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # infinity, -infinity, BC, year > 9999
        return RawValue(text)


def _decode_timestamptz(text: str) -> datetime | RawValue:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:  # infinity, -infinity, BC, year > 9999
        return RawValue(text)
    if value.tzinfo is UTC:  # always, with the session's TimeZone=UTC
        return value
    if value.tzinfo is None:
        return RawValue(text)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # an offset pushed it past year 1 or 9999
        return RawValue(text)


# Each field carries its own sign; seconds carry theirs apart from the digits because
# "-0.5S" is negative although its integer part is zero.
_ISO_INTERVAL: Final = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?)(\d+)(?:\.(\d{1,6}))?S)?)?",
    re.ASCII,
)


def _decode_interval(text: str) -> Interval | RawValue:
    match = _ISO_INTERVAL.fullmatch(text)
    if match is None or text == "P" or text.endswith("T"):
        return RawValue(text)
    years, months, days, hours, minutes, sign, seconds, fraction = match.groups()
    micros = 0
    if seconds is not None:
        micros = int(seconds) * 1_000_000
        if fraction:
            micros += int(fraction.ljust(6, "0"))
        if sign:
            micros = -micros
    if hours is not None:
        micros += int(hours) * 3_600_000_000
    if minutes is not None:
        micros += int(minutes) * 60_000_000
    return Interval(
        months=(int(years) * 12 if years else 0) + (int(months) if months else 0),
        days=int(days) if days else 0,
        microseconds=micros,
    )


# --- arrays ----------------------------------------------------------------------------------

_SPACE: Final = " \t\n\r\v\f"  # what array_in treats as whitespace (array_isspace)


def parse_array(text: str, element: Decoder, delimiter: str = ",") -> list[Any] | RawValue:
    """Parse PostgreSQL's array text form into (nested) lists of decoded elements.

    Follows ``array_in``: elements are separated by ``delimiter``; a double-quoted element
    may contain anything, with ``\\`` escaping the next character; an unquoted element has
    its surrounding whitespace removed and may use ``\\`` escapes too; an unquoted ``NULL``
    (any case, no escapes) is ``None`` while ``"NULL"`` is the string. Non-null elements are
    passed to ``element``. Sub-arrays must all have the same shape. An array with explicit
    bounds (``[0:2]={1,2,3}``) has no list form that keeps its bounds, so it is returned as
    ``RawValue(text)``.

    Raises ValueError for text that is not a well-formed array literal.
    """
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1]
        # The usual case (array_out of numbers, dates, plain words): no nesting, quoting or
        # escapes, so splitting on the delimiter is exact.
        if "{" not in inner and "}" not in inner and '"' not in inner and "\\" not in inner:
            return _split_flat(text, inner, element, delimiter)
    if text.lstrip(_SPACE).startswith("["):
        return RawValue(text)
    pos = _skip_space(text, 0)
    if not text.startswith("{", pos):
        raise _malformed(text, pos, "expected '{'")
    result, pos = _parse_items(text, pos + 1, 0, element, delimiter, {})
    pos = _skip_space(text, pos)
    if pos != len(text):
        raise _malformed(text, pos, "junk after the array")
    return result


def _split_flat(text: str, inner: str, element: Decoder, delimiter: str) -> list[Any]:
    tokens = inner.split(delimiter)
    # isprintable() is False for every array_in whitespace character except the space.
    if " " in inner or not inner.isprintable():
        if not inner.strip(_SPACE):
            return []
        tokens = [token.strip(_SPACE) for token in tokens]
    elif not inner:
        return []
    if "" in tokens:
        raise _malformed(text, 0, "empty element")
    if "l" not in inner and "L" not in inner:  # no NULL among the elements
        return list(map(element, tokens))
    return [
        None if len(token) == 4 and token.upper() == "NULL" else element(token) for token in tokens
    ]


def _malformed(text: str, pos: int, why: str) -> ValueError:
    return ValueError(f"malformed array literal ({why} at {pos}): {text!r}")


def _skip_space(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _SPACE:
        pos += 1
    return pos


def _parse_items(
    text: str,
    pos: int,
    depth: int,
    element: Decoder,
    delimiter: str,
    shapes: dict[int, tuple[bool, int]],
) -> tuple[list[Any], int]:
    """Parse an array whose ``{`` ends just before ``pos``; return it and the position after
    its ``}``. ``shapes`` maps each depth to the shape of the first array closed there
    (holds sub-arrays, length), which every other array at that depth must match."""
    n = len(text)
    items: list[Any] = []
    nested: bool | None = None
    while True:
        while pos < n and text[pos] in _SPACE:
            pos += 1
        if pos >= n:
            raise _malformed(text, pos, "unterminated array")
        c = text[pos]
        if c == "}" and not items:
            if depth:
                raise _malformed(text, pos, "empty sub-array")
            return items, pos + 1
        if c == "{":
            if nested is False:
                raise _malformed(text, pos, "sub-array among elements")
            nested = True
            sub, pos = _parse_items(text, pos + 1, depth + 1, element, delimiter, shapes)
            items.append(sub)
        elif nested:
            raise _malformed(text, pos, "element among sub-arrays")
        elif c == '"':
            nested = False
            value, pos = _quoted(text, pos + 1)
            items.append(element(value))
        else:
            nested = False
            value, escaped, pos = _unquoted(text, pos, delimiter)
            if not escaped and len(value) == 4 and value.upper() == "NULL":
                items.append(None)
            else:
                items.append(element(value))
        while pos < n and text[pos] in _SPACE:
            pos += 1
        if pos >= n:
            raise _malformed(text, pos, "unterminated array")
        c = text[pos]
        pos += 1
        if c == "}":
            break
        if c != delimiter:
            raise _malformed(text, pos - 1, f"unexpected {c!r}")
    shape = (bool(nested), len(items))
    if shapes.setdefault(depth, shape) != shape:
        raise _malformed(text, pos - 1, "sub-arrays of different dimensions")
    return items, pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """The content of a quoted element starting at ``pos`` (after its opening quote)."""
    quote = text.find('"', pos)
    if quote >= 0 and text.find("\\", pos, quote) < 0:  # no escapes: the usual case
        return text[pos:quote], quote + 1
    parts: list[str] = []
    while True:
        quote = text.find('"', pos)
        if quote < 0:
            raise _malformed(text, len(text), "unterminated quoted element")
        backslash = text.find("\\", pos, quote)
        if backslash < 0:
            parts.append(text[pos:quote])
            return "".join(parts), quote + 1
        parts.append(text[pos:backslash])
        # The escaped character may be the '"' found above, so search again from after it.
        parts.append(text[backslash + 1])
        pos = backslash + 2


def _unquoted(text: str, pos: int, delimiter: str) -> tuple[str, bool, int]:
    """An unquoted element starting at ``pos``: its value, whether it used escapes, and the
    position of the delimiter or ``}`` that ends it."""
    end = text.find(delimiter, pos)
    brace = text.find("}", pos)
    if end < 0 or 0 <= brace < end:
        end = brace
    if end < 0:
        raise _malformed(text, len(text), "unterminated array")
    token = text[pos:end]
    if "\\" not in token:
        if "{" in token or '"' in token:
            raise _malformed(text, pos, "'{' or '\"' in an unquoted element")
        token = token.rstrip(_SPACE)
        if not token:
            raise _malformed(text, pos, "empty element")
        return token, False, end
    # With escapes the end found above may be an escaped delimiter or brace: walk it.
    n = len(text)
    chars: list[str] = []
    keep = 0  # trailing whitespace is dropped, except where it was escaped
    while pos < n:
        c = text[pos]
        if c == "\\":
            if pos + 1 >= n:
                break
            chars.append(text[pos + 1])
            keep = len(chars)
            pos += 2
            continue
        if c == delimiter or c == "}":
            break
        if c == "{" or c == '"':
            raise _malformed(text, pos, f"unexpected {c!r} in an unquoted element")
        chars.append(c)
        pos += 1
    value = "".join(chars)
    return value[:keep] + value[keep:].rstrip(_SPACE), True, pos


@functools.lru_cache(maxsize=256)
def _array_decoder(element: Decoder, delimiter: str) -> Decoder:
    if delimiter != ",":
        # format_value writes arrays with ',' and cannot know the column's delimiter, so a
        # list would not survive the round trip; the exact text does.
        return str

    def decode_array(text: str) -> list[Any] | RawValue:
        try:
            return parse_array(text, element, delimiter)
        except ValueError:
            # Not an array literal after all (an extension's output function): keep the text
            # rather than lose the value.
            return RawValue(text)

    return decode_array


# --- the static table of built-in types ------------------------------------------------------

_SCALARS: Final[dict[int, Decoder]] = {
    16: _decode_bool,
    17: _decode_bytea,
    20: int,
    21: int,
    23: int,
    26: int,
    700: float,
    701: float,
    1700: Decimal,
    1082: _decode_date,
    1083: _decode_time,
    1266: _decode_time,
    1114: _decode_timestamp,
    1184: _decode_timestamptz,
    1186: _decode_interval,
    2950: UUID,
}

# Every other built-in (PostgreSQL 15) non-array type: kept as its exact text. int2vector (22)
# and oidvector (30) are in typcategory 'A' but print as "1 2 3", not as array literals.
_TEXT_OIDS: Final = (
    *(18, 19, 22, 24, 25, 27, 28, 29, 30, 32, 71, 75, 81, 83, 114, 142, 194, 269, 325),
    *(600, 601, 602, 603, 604, 628, 650, 705, 718, 774, 790, 829, 869, 1033, 1042, 1043),
    *(1248, 1560, 1562, 1790, 2202, 2203, 2204, 2205, 2206, 2249, 2275, 2842, 2843, 2970),
    *(3220, 3361, 3402, 3614, 3615, 3642, 3734, 3769, 3802, 3904, 3906, 3908, 3910, 3912),
    *(3926, 4066, 4072, 4089, 4096, 4191, 4451, 4532, 4533, 4534, 4535, 4536, 4600, 4601),
    *(5017, 5038, 5069, 6101),
)

# Built-in array type → element type (PostgreSQL 15, pg_type.typelem of typcategory 'A').
_ARRAYS: Final[dict[int, int]] = {
    143: 142, 199: 114, 210: 71, 270: 75, 271: 5069, 272: 81, 273: 83, 629: 628, 651: 650,
    719: 718, 775: 774, 791: 790, 1000: 16, 1001: 17, 1002: 18, 1003: 19, 1005: 21, 1006: 22,
    1007: 23, 1008: 24, 1009: 25, 1010: 27, 1011: 28, 1012: 29, 1013: 30, 1014: 1042,
    1015: 1043, 1016: 20, 1017: 600, 1018: 601, 1019: 602, 1020: 603, 1021: 700, 1022: 701,
    1027: 604, 1028: 26, 1034: 1033, 1040: 829, 1041: 869, 1115: 1114, 1182: 1082, 1183: 1083,
    1185: 1184, 1187: 1186, 1231: 1700, 1263: 2275, 1270: 1266, 1561: 1560, 1563: 1562,
    2201: 1790, 2207: 2202, 2208: 2203, 2209: 2204, 2210: 2205, 2211: 2206, 2287: 2249,
    2949: 2970, 2951: 2950, 3221: 3220, 3643: 3614, 3644: 3642, 3645: 3615, 3735: 3734,
    3770: 3769, 3807: 3802, 3905: 3904, 3907: 3906, 3909: 3908, 3911: 3910, 3913: 3912,
    3927: 3926, 4073: 4072, 4090: 4089, 4097: 4096, 4192: 4191, 5039: 5038, 6150: 4451,
    6151: 4532, 6152: 4533, 6153: 4534, 6155: 4535, 6157: 4536,
}  # fmt: skip

_BOX_OID: Final = 603  # the one built-in type whose typdelim is ';'


def _static_table() -> dict[int, Decoder]:
    table: dict[int, Decoder] = dict.fromkeys(_TEXT_OIDS, str)
    table.update(_SCALARS)
    for array_oid, elem_oid in _ARRAYS.items():
        delimiter = ";" if elem_oid == _BOX_OID else ","
        table[array_oid] = _array_decoder(table[elem_oid], delimiter)
    return table


_STATIC: Final = _static_table()


def decoder_for(type_oid: int, lookup: Callable[[int], PgType]) -> Decoder:
    """The decoder for one column type: a fast function from text output to Python value.

    Built-in types come from a static table without calling ``lookup``. ``lookup`` describes
    every other type (enums, domains, user arrays, extension types); those are resolved on
    each call rather than cached here by OID, because a user type's OID only means something
    within its own database (and callers look types up once per relation, caching the
    catalog answers themselves). Array decoders are shared per element decoder.
    """
    known = _STATIC.get(type_oid)
    if known is not None:
        return known
    info = lookup(type_oid)
    if info.kind == "d" and info.base_oid:
        # Checked before elem_oid: a domain over an array copies its base's typelem.
        return decoder_for(info.base_oid, lookup)
    if info.elem_oid:
        return _array_decoder(decoder_for(info.elem_oid, lookup), info.delimiter)
    # Enums are their labels; composites, ranges and extension types keep their exact text.
    return str
