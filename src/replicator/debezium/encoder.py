"""Replicator's change events written as Debezium's JSON envelopes (what Kafka Connect's
JsonConverter writes for Debezium's PostgreSQL and MySQL connectors), for the Kafka sink.

Pure: no I/O. One :class:`EnvelopeEncoder` per topic prefix compiles each table once (per
:class:`~replicator.events.TableSchema`): a converter per column, and the Kafka Connect
schemas of key and value serialised to JSON bytes once, into which each event's payload is
spliced. :func:`replicator.debezium.envelope.read_message` reads the messages back.

Columns are written as Debezium writes them under its default settings
(``time.precision.mode=adaptive_time_microseconds``, ``binary.handling.mode=bytes``,
``decimal.handling.mode`` as chosen), from the PostgreSQL type each column has here (tables
read from MySQL carry PostgreSQL types too). Deliberate differences, each because Debezium's
form would lose or misstate a value:

- ``interval`` is ``io.debezium.time.Interval`` text (``interval.handling.mode=string``):
  the default ``MicroDuration`` counts a month as 30.4375 days. This includes MySQL's TIME
  (a duration here), which Debezium's MySQL connector writes as ``MicroTime``.
- unconstrained ``numeric`` keeps its scale (``1.50`` stays scale 2); Debezium strips
  trailing zeros.
- ``bit varying(n)`` also carries ``__debezium.source.column.type=VARBIT`` and its length
  (what ``column.propagate.source.type`` adds), so that a reader neither pads it to ``n``
  bits nor takes it for ``bit(n)``; ``bit varying(1)`` stays bits (Debezium: boolean), and
  an unbounded ``bit varying`` is its text.
- NaN and ±Infinity cannot be a Kafka Connect ``Decimal``: with ``decimal_handling=
  "precise"`` the event is refused (:class:`~replicator.errors.SinkError` naming the column
  and the fix, so it is dead-lettered) where Debezium stops its task. With ``"string"``
  they are ``NaN``, ``Infinity``, ``-Infinity`` (Debezium: ``NAN``,
  ``POSITIVE_INFINITY``, ...), and numbers are written in plain notation, never ``1E-7``.
- an unchanged TOASTed value is Debezium's placeholder ``__debezium_unavailable_value``
  (for ``bytea`` its bytes) in every column type, arrays included; Debezium writes an array
  holding the placeholder (or its bytes as numbers), which a reader cannot tell from data.
- types Debezium leaves out of the event, or writes as structs Replicator's values do not
  carry (composite types, hstore, geometric types, ``money[]``, ``interval[]``, ...), are
  their text; MySQL's spatial values are ``bytea`` here, so bytes.
- from MySQL tables: ``tinyint(1)`` mapped to ``boolean`` is a boolean (Debezium: int16),
  ``bigint unsigned`` is ``numeric(20,0)``, an exact Decimal (Debezium's default wraps it
  into a negative int64), ``year`` is int16, enums are plain strings, SETs are arrays of
  strings (Debezium: ``EnumSet`` text), JSON is ``io.debezium.data.Json``.
- ``±infinity`` timestamps are ``Long.MAX_VALUE``/``MIN_VALUE`` (and ``±infinity`` dates
  the int32 extremes), which :mod:`.logical` reads back as ``RawValue("infinity")``.

What Debezium's format itself cannot say, whatever the encoder does: ``varchar(n)`` and
``char(n)`` lengths (both read back as ``text``), enum types (``text``), ``json`` versus
``jsonb`` (``jsonb``), ``bit(1)`` (a boolean, as Debezium writes it), the precision of
``timestamp(p)`` (3 or 6), ``time(p)`` (6) and ``timestamptz(p)``, a ``timetz`` value's
offset (written as the same instant in UTC), leading zeros of a ``bit varying`` value,
``money`` (``numeric``), string-mode numbers (``text``), and multi-dimensional arrays
(refused: Connect arrays have one dimension). An array with explicit bounds (a
``RawValue``) is refused too.
"""

from __future__ import annotations

import binascii
import decimal
import math
import re
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import metadata
from typing import Any, Final, Literal
from uuid import UUID

import orjson

from replicator.debezium.logical import UNAVAILABLE
from replicator.errors import SinkError
from replicator.events import (
    UNCHANGED,
    ChangeEvent,
    Interval,
    Op,
    RawValue,
    Row,
    TableSchema,
    TypeDefinition,
)

__all__ = ["EnvelopeEncoder"]

_DecimalHandling = Literal["precise", "string", "double"]


def _version() -> str:
    try:
        return "replicator-" + metadata.version("replicator")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "replicator"


_VERSION: Final = _version()

_CACHE_LIMIT: Final = 1024
_EPOCH: Final = datetime(1970, 1, 1)
_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MICRO: Final = timedelta(microseconds=1)
_MILLI: Final = timedelta(milliseconds=1)
_MICROS_PER_DAY: Final = 86_400_000_000
_LONG_MAX: Final = 2**63 - 1
_LONG_MIN: Final = -(2**63)
_INT_MAX: Final = 2**31 - 1
_INT_MIN: Final = -(2**31)
_UNAVAILABLE_B64: Final = binascii.b2a_base64(UNAVAILABLE.encode(), newline=False).decode()
# Exact decimal arithmetic: scaleb in the default context would round to 28 digits.
_EXACT: Final = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_UTC_Z
_FLOAT_TEXT: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}

_Encode = Callable[[Any], Any]


class _Unencodable(ValueError):
    """A value the envelope cannot carry under the encoder's settings."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


def _default(value: Any) -> Any:
    # orjson calls this for what it does not write itself (dataclasses included, so that
    # RawValue and Interval are never written as objects). It writes the UTC datetimes a
    # timestamptz converter hands back itself: RFC 3339, six fractional digits, "Z".
    if value is UNCHANGED:
        return UNAVAILABLE
    if type(value) is RawValue:
        return value.text
    raise TypeError(f"a {type(value).__name__} value")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_OPTIONS)


# -- calendar arithmetic for values Python's datetime cannot hold (BC, year > 9999) ---------


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


_RAW_DATE = re.compile(r"(\d+)-(\d\d)-(\d\d)")
_RAW_STAMP = re.compile(
    r"(\d+)-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?"
)
_RAW_TIME = re.compile(
    r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?"
)


def _offset_micros(
    sign: str | None, hours: str | None, minutes: str | None, secs: str | None
) -> int:
    if sign is None:
        return 0
    total = (int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(secs or 0)) * 1_000_000
    return -total if sign == "-" else total


def _raw_micros(raw: RawValue) -> int:
    """Microseconds since the epoch (UTC) of a PostgreSQL timestamp[tz] kept as text."""
    text = raw.text
    if text == "infinity":
        return _LONG_MAX
    if text == "-infinity":
        return _LONG_MIN
    match = _RAW_STAMP.fullmatch(text)
    if match is None:
        raise _Unencodable(f"not a PostgreSQL timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, *offset, bc = match.groups()
    number = 1 - int(year) if bc else int(year)
    days = _days_from_civil(number, int(month), int(day))
    clock = (int(hour) * 3600 + int(minute) * 60 + int(second)) * 1_000_000
    micros = days * _MICROS_PER_DAY + clock + int((fraction or "").ljust(6, "0"))
    return micros - _offset_micros(*offset)


def _raw_days(raw: RawValue) -> int:
    text = raw.text
    if text == "infinity":
        return _INT_MAX
    if text == "-infinity":
        return _INT_MIN
    bc = text.endswith(" BC")
    match = _RAW_DATE.fullmatch(text[:-3] if bc else text)
    if match is None:
        raise _Unencodable(f"not a PostgreSQL date: {text!r}")
    year, month, day = match.groups()
    return _days_from_civil(1 - int(year) if bc else int(year), int(month), int(day))


# -- column converters ----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _float(value: Any) -> Any:
    # JsonConverter writes NaN and the infinities as strings; orjson would write null.
    if value - value == 0:
        return value
    if value != value:
        return "NaN"
    return _FLOAT_TEXT[value]


def _two_complement(number: int) -> str:
    # Java's BigInteger.toByteArray: the fewest big-endian bytes holding the sign bit.
    size = (number if number >= 0 else ~number).bit_length() // 8 + 1
    return _b64(number.to_bytes(size, "big", signed=True))


def _unscaled(value: Any, scale: int) -> int:
    if type(value) is int:
        return int(value * 10**scale)
    if not value.is_finite():
        raise _Unencodable(
            f"{value} cannot be written as a Kafka Connect Decimal",
            fix='set the Kafka sink\'s decimal_handling to "string" or "double"',
        )
    scaled = _EXACT.scaleb(value, scale)
    number = int(scaled)
    if number != scaled:
        raise _Unencodable(f"{value} has more than {scale} fractional digits")
    return number


def _decimal(scale: int) -> _Encode:
    return lambda value: _two_complement(_unscaled(value, scale))


def _variable_decimal(value: Any) -> Any:
    if type(value) is int:
        return {"scale": 0, "value": _two_complement(value)}
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        _unscaled(value, 0)  # raises for NaN and the infinities
    scale = -exponent if exponent < 0 else 0
    return {"scale": scale, "value": _two_complement(_unscaled(value, scale))}


def _decimal_text(value: Any) -> str:
    return format(value, "f") if type(value) is not int else str(value)


def _decimal_double(value: Any) -> Any:
    return _float(float(value))


_MONEY = re.compile(r"(-)?\(?[^\d(),.-]*(-)?([\d,]*\d)(?:\.(\d+))?[^\d()]*\)?")


def _money(value: Any) -> Decimal:
    # money arrives as its text output (lc_monetary), e.g. "$1,234.56", "-$0.01", "($5.00)".
    if isinstance(value, Decimal | int):
        return Decimal(value)
    text = value.strip() if isinstance(value, str) else ""
    match = _MONEY.fullmatch(text)
    if match is None:
        raise _Unencodable(
            f"cannot read the money value {text!r} as a number",
            fix="run the source with lc_monetary = 'C' (or an English locale)",
        )
    minus, inner_minus, whole, fraction = match.groups()
    negative = bool(minus or inner_minus or text.startswith("("))
    number = Decimal(whole.replace(",", "") + ("." + fraction if fraction else ""))
    return -number if negative else number


def _date(value: Any) -> int:
    if type(value) is RawValue:
        return _raw_days(value)
    return value.toordinal() - _EPOCH_ORDINAL  # type: ignore[no-any-return]


def _time_micros(value: Any) -> int:
    if type(value) is RawValue:
        match = _RAW_TIME.fullmatch(value.text)
        if match is None:
            raise _Unencodable(f"not a PostgreSQL time: {value.text!r}")
        hour, minute, second, fraction, *offset = match.groups()
        clock = (int(hour) * 3600 + int(minute) * 60 + int(second)) * 1_000_000
        return clock + int((fraction or "").ljust(6, "0")) - _offset_micros(*offset)
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    return micros + value.microsecond  # type: ignore[no-any-return]


def _zoned_time(value: Any) -> str:
    # Debezium writes timetz as the same instant in UTC (ISO_OFFSET_TIME: seconds always,
    # the fraction with as many digits as it needs).
    micros = _time_micros(value)
    if type(value) is not RawValue:
        offset = value.utcoffset()
        if offset:
            micros -= offset // _MICRO
    if micros != _MICROS_PER_DAY:
        micros %= _MICROS_PER_DAY
    seconds, fraction = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    if fraction:
        text += "." + f"{fraction:06d}".rstrip("0")
    return text + "Z"


def _timestamp(per_second: int) -> _Encode:
    unit = _MILLI if per_second == 1000 else _MICRO

    def encode(value: Any) -> int:
        if type(value) is RawValue:
            micros = _raw_micros(value)
            if micros in (_LONG_MAX, _LONG_MIN):
                return micros
            return micros // (1_000_000 // per_second)
        return (value - _EPOCH) // unit  # type: ignore[no-any-return]

    return encode


def _year_text(year: int) -> str:
    # java.time's ISO form: four digits, a sign outside 0000-9999.
    if 0 <= year <= 9999:
        return f"{year:04d}"
    return f"+{year}" if year > 0 else f"-{-year:04d}"


def _zoned_timestamp(precision: int) -> _Encode:
    # ZonedTimestamp in UTC with the column's number of fractional digits (as Debezium pads).
    def encode(value: Any) -> Any:
        if isinstance(value, datetime):
            if precision == 6 and value.microsecond and value.tzinfo is UTC:
                return value  # orjson writes it as Debezium does: six digits and a Z
            offset = value.utcoffset()
            naive = value.replace(tzinfo=None)
            if offset:
                naive -= offset
            text = orjson.dumps(naive)[1:-1].decode()  # "2024-01-02T03:04:05[.ffffff]"
            fraction = text[20:].ljust(6, "0")[:precision]
            return f"{text[:19]}.{fraction}Z" if precision else text[:19] + "Z"
        if value.text in ("infinity", "-infinity"):  # a RawValue, else AttributeError
            return value.text
        return _far_zoned(_raw_micros(value), precision)

    return encode


def _far_zoned(micros: int, precision: int) -> str:
    days, clock = divmod(micros, _MICROS_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, fraction = divmod(clock, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{_year_text(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if precision:
        text += "." + f"{fraction:06d}"[:precision]
    return text + "Z"


def _interval(value: Any) -> str:
    # Debezium's Interval.toIsoString: every designator, each part with its own sign.
    if type(value) is RawValue:
        return value.text
    if isinstance(value, timedelta):
        value = Interval(microseconds=value // _MICRO)
    sign = -1 if value.months < 0 else 1
    years, months = divmod(abs(value.months), 12)
    neg = value.microseconds < 0
    hours, rest = divmod(abs(value.microseconds), 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    whole, fraction = divmod(rest, 1_000_000)
    seconds = f"{whole}.{fraction:06d}".rstrip("0") if fraction else str(whole)
    m = "-" if neg else ""
    return (
        f"P{sign * years}Y{sign * months}M{value.days}DT"
        f"{m if hours else ''}{hours}H{m if minutes else ''}{minutes}M"
        f"{m if rest else ''}{seconds}S"
    )


def _uuid(value: Any) -> Any:
    return str(value) if type(value) is UUID else value


def _json(value: Any) -> str:
    # The sources hand JSON over as its text; a parsed document is written as text too.
    if type(value) is str:
        return value
    return orjson.dumps(value).decode()


def _bit_text(value: Any) -> Any:
    return value.text if type(value) is RawValue else value


def _bits(width: int | None) -> _Encode:
    # Java's BitSet.toByteArray: the number's little-endian bytes (the PostgreSQL connector
    # writes the fewest; the MySQL connector pads to the column's width).
    def encode(value: Any) -> str:
        text = _bit_text(value)
        number = int(text, 2) if text else 0
        size = width if width is not None else (number.bit_length() + 7) // 8
        return _b64(number.to_bytes(size, "little"))

    return encode


def _bit_boolean(value: Any) -> bool:
    text = _bit_text(value)
    return text not in ("", "0")


def _array(element: _Encode | None) -> _Encode:
    def encode(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _Unencodable(
                f"an array value {str(value)[:60]!r} that is not a list (explicit bounds?)"
            )
        if element is None:
            for item in value:
                if type(item) is list:
                    raise _Unencodable("a multi-dimensional array (Connect arrays have one)")
            return value
        out: list[Any] = []
        for item in value:
            if item is None:
                out.append(None)
            elif type(item) is list:
                raise _Unencodable("a multi-dimensional array (Connect arrays have one)")
            else:
                out.append(element(item))
        return out

    return encode


# -- PostgreSQL type names to fields ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one column type is written: its Connect schema node and value converter."""

    node: Mapping[str, Any]  # the schema node, without "optional" and "field"
    encode: _Encode | None  # None: the Python value is already its JSON form
    fallback: Any  # what a NOT NULL column missing from a partial image is written as
    unchanged: Any = UNAVAILABLE  # what an unchanged TOASTed value becomes


def _logical(kind: str, name: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "name": name, "version": 1, **more}


_PLAIN = {
    "boolean": _Kind({"type": "boolean"}, None, False),
    "smallint": _Kind({"type": "int16"}, None, 0),
    "integer": _Kind({"type": "int32"}, None, 0),
    "bigint": _Kind({"type": "int64"}, None, 0),
    "oid": _Kind({"type": "int64"}, None, 0),
    "real": _Kind({"type": "float"}, _float, 0.0),
    "double precision": _Kind({"type": "double"}, _float, 0.0),
    "bytea": _Kind({"type": "bytes"}, _b64, "", _UNAVAILABLE_B64),
    "date": _Kind(_logical("int32", "io.debezium.time.Date"), _date, 0),
    "uuid": _Kind(
        _logical("string", "io.debezium.data.Uuid"),
        _uuid,
        "00000000-0000-0000-0000-000000000000",
    ),
    "json": _Kind(_logical("string", "io.debezium.data.Json"), _json, "{}"),
    "jsonb": _Kind(_logical("string", "io.debezium.data.Json"), _json, "{}"),
    "xml": _Kind(_logical("string", "io.debezium.data.Xml"), None, ""),
    "tsvector": _Kind(_logical("string", "io.debezium.data.TsVector"), None, ""),
    "interval": _Kind(_logical("string", "io.debezium.time.Interval"), _interval, "P0Y0M0DT0H0M0S"),
}
_TEXT = _Kind({"type": "string"}, None, "")
_VARIABLE_DECIMAL_NODE = {
    "type": "struct",
    "fields": [
        {"type": "int32", "optional": False, "field": "scale"},
        {"type": "bytes", "optional": False, "field": "value"},
    ],
    "name": "io.debezium.data.VariableScaleDecimal",
    "version": 1,
    "doc": "Variable scaled decimal",
}
_TYPE = re.compile(
    r"(?P<base>[a-z\" ]+?)(?:\((?P<mods>[\d, ]+)\))?(?P<zone> with(?:out)? time zone)?"
)


def _numeric(
    precision: int | None, scale: int, mode: _DecimalHandling, money: bool = False
) -> _Kind:
    parse: _Encode = _money if money else (lambda v: v)
    if mode == "string":
        return _Kind({"type": "string"}, lambda v: _decimal_text(parse(v)), "0")
    if mode == "double":
        return _Kind({"type": "double"}, lambda v: _decimal_double(parse(v)), 0.0)
    if precision is None and not money:
        return _Kind(_VARIABLE_DECIMAL_NODE, _variable_decimal, {"scale": 0, "value": "AA=="})
    parameters = {"scale": str(scale)}
    if precision is not None:
        parameters["connect.decimal.precision"] = str(precision)
    to_bytes = _decimal(scale)
    return _Kind(
        _logical("bytes", "org.apache.kafka.connect.data.Decimal", parameters=parameters),
        (lambda v: to_bytes(_money(v))) if money else to_bytes,
        "AA==",
    )


def _kind(
    type_name: str, types: Mapping[str, TypeDefinition], dialect: str, mode: _DecimalHandling
) -> _Kind:
    """How a column of this PostgreSQL type (``format_type``'s spelling) is written."""
    for _ in range(16):  # domains over domains, resolved to their base type
        found = types.get(type_name)
        if found is None or found.kind != "domain" or not found.base_type:
            break
        type_name = found.base_type
    if type_name.endswith("[]"):
        element = type_name[:-2]
        while element.endswith("[]"):
            element = element[:-2]
        if element in ("box", "pg_catalog.box"):  # box[] arrives as text (';'-separated)
            return _TEXT
        inner = _kind(element, types, dialect, mode)
        return _Kind(
            {"type": "array", "items": _node(inner.node, True)},
            _array(inner.encode),
            [],
        )
    found = types.get(type_name)
    if found is not None and found.kind == "enum":
        node = _logical(
            "string", "io.debezium.data.Enum", parameters={"allowed": ",".join(found.labels)}
        )
        return _Kind(node, None, found.labels[0] if found.labels else "")
    if type_name.startswith("pg_catalog."):
        type_name = type_name[len("pg_catalog.") :]
    plain = _PLAIN.get(type_name)
    if plain is not None:
        return plain
    match = _TYPE.fullmatch(type_name)
    if match is None:
        return _TEXT
    base, zone = match["base"], match["zone"]
    mods = [int(m) for m in match["mods"].split(",")] if match["mods"] else []
    if base == "numeric" or base == "decimal":
        return _numeric(mods[0] if mods else None, mods[1] if len(mods) > 1 else 0, mode)
    if base == "money":
        return _numeric(None, 2, mode, money=True)
    if base.startswith("interval"):
        return _PLAIN["interval"]
    precision = mods[0] if mods else 6
    if base == "timestamp" and zone == " with time zone":
        node = _logical("string", "io.debezium.time.ZonedTimestamp")
        return _Kind(node, _zoned_timestamp(precision), "1970-01-01T00:00:00Z")
    if base == "timestamp":
        if precision <= 3:
            return _Kind(_logical("int64", "io.debezium.time.Timestamp"), _timestamp(1000), 0)
        node = _logical("int64", "io.debezium.time.MicroTimestamp")
        return _Kind(node, _timestamp(1_000_000), 0)
    if base == "time" and zone == " with time zone":
        return _Kind(_logical("string", "io.debezium.time.ZonedTime"), _zoned_time, "00:00:00Z")
    if base == "time":
        return _Kind(_logical("int64", "io.debezium.time.MicroTime"), _time_micros, 0)
    if base == "bit" or base == "bit varying":
        return _bit_kind(base == "bit varying", mods[0] if mods else None, dialect)
    return _TEXT


def _bit_kind(varying: bool, length: int | None, dialect: str) -> _Kind:
    if length is None:
        if varying:
            return _TEXT
        length = 1
    if length == 1 and not varying:
        return _Kind({"type": "boolean"}, _bit_boolean, False)
    parameters = {"length": str(length)}
    if varying:
        parameters["__debezium.source.column.type"] = "VARBIT"
        parameters["__debezium.source.column.length"] = str(length)
    width = (length + 7) // 8 if dialect == "mysql" else None
    return _Kind(
        _logical("bytes", "io.debezium.data.Bits", parameters=parameters),
        _bits(width),
        "",
        _UNAVAILABLE_B64,
    )


def _type_index(types: tuple[TypeDefinition, ...]) -> dict[str, TypeDefinition]:
    index: dict[str, TypeDefinition] = {}
    for definition in types:
        index.setdefault(definition.name, definition)
        index[f"{definition.schema}.{definition.name}"] = definition
        index[definition.qualified] = definition
    return index


# -- Debezium's source blocks and envelope --------------------------------------------------

_SNAPSHOT_FIELD = {
    "type": "string",
    "optional": True,
    "name": "io.debezium.data.Enum",
    "version": 1,
    "parameters": {
        "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,"
        "incremental"
    },
    "default": "false",
    "field": "snapshot",
}


def _field(kind: str, name: str, optional: bool) -> dict[str, Any]:
    return {"type": kind, "optional": optional, "field": name}


_COMMON_SOURCE = [
    _field("string", "version", False),
    _field("string", "connector", False),
    _field("string", "name", False),
    _field("int64", "ts_ms", False),
    _SNAPSHOT_FIELD,
    _field("string", "db", False),
    _field("string", "sequence", True),
    _field("int64", "ts_us", True),
    _field("int64", "ts_ns", True),
]
_POSTGRES_SOURCE = {
    "type": "struct",
    "fields": [
        *_COMMON_SOURCE,
        _field("string", "schema", False),
        _field("string", "table", False),
        _field("int64", "txId", True),
        _field("int64", "lsn", True),
        _field("int64", "xmin", True),
        _field("string", "origin", True),
        _field("int64", "origin_lsn", True),
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "field": "source",
}
_MYSQL_SOURCE = {
    "type": "struct",
    "fields": [
        *_COMMON_SOURCE,
        _field("string", "table", True),
        _field("int64", "server_id", False),
        _field("string", "gtid", True),
        _field("string", "file", False),
        _field("int64", "pos", False),
        _field("int32", "row", False),
        _field("int64", "thread", True),
        _field("string", "query", True),
    ],
    "optional": False,
    "name": "io.debezium.connector.mysql.Source",
    "version": 1,
    "field": "source",
}
_TRANSACTION = {
    "type": "struct",
    "fields": [
        _field("string", "id", False),
        _field("int64", "total_order", False),
        _field("int64", "data_collection_order", False),
    ],
    "optional": True,
    "name": "event.block",
    "version": 1,
    "field": "transaction",
}
_INSERT, _UPDATE, _DELETE, _READ, _TRUNCATE = Op.INSERT, Op.UPDATE, Op.DELETE, Op.READ, Op.TRUNCATE


def _literal(text: str) -> bytes:
    """A JSON string for a %-template: every '%' doubled."""
    return orjson.dumps(text).replace(b"%", b"%%")


@dataclass(slots=True)
class _Field:
    name: str
    encode: _Encode | None
    fallback: Any
    unchanged: Any
    optional: bool
    type_name: str


class _Table:
    """One table's compiled encoder: converters, schemas and message templates."""

    def __init__(
        self,
        schema: TableSchema,
        server: str,
        database: str,
        schemas: bool,
        mode: _DecimalHandling,
    ) -> None:
        self.schema = schema
        table = schema.table
        types = _type_index(schema.types)
        dialect = schema.dialect
        if dialect not in ("postgres", "mysql"):
            raise SinkError(
                f"{table}: no Debezium envelope for {dialect!r} tables (postgres or mysql)"
            )
        self.mysql = dialect == "mysql"
        nodes: list[dict[str, Any]] = []
        kinds: dict[str, _Kind] = {}
        self.fields: list[_Field] = []
        for column in schema.columns:
            kind = kinds[column.name] = _kind(column.type_name, types, dialect, mode)
            nodes.append({**_node(kind.node, column.nullable), "field": column.name})
            self.fields.append(
                _Field(
                    column.name,
                    kind.encode,
                    kind.fallback,
                    kind.unchanged,
                    column.nullable,
                    column.type_name,
                )
            )
        self.by_name = {f.name: f for f in self.fields}
        self.names = frozenset(self.by_name)
        self.width = len(self.fields)
        self.converters = [(f.name, f.encode, f.unchanged) for f in self.fields if f.encode]
        self.key_names = schema.key
        self.key_set = frozenset(schema.key)
        missing = [k for k in schema.key if k not in self.by_name]
        if missing:
            raise SinkError(f"{table}: key columns {missing} are not among the table's columns")
        key_fields = [self.by_name[k] for k in schema.key]
        self.key_converters = [(f.name, f.encode, f.unchanged) for f in key_fields if f.encode]

        prefix = f"{server}.{table.schema}.{table.name}"
        row_struct = {
            "type": "struct",
            "fields": nodes,
            "optional": True,
            "name": f"{prefix}.Value",
        }
        envelope = {
            "type": "struct",
            "fields": [
                {**row_struct, "field": "before"},
                {**row_struct, "field": "after"},
                _MYSQL_SOURCE if self.mysql else _POSTGRES_SOURCE,
                _TRANSACTION,
                _field("string", "op", False),
                _field("int64", "ts_ms", True),
                _field("int64", "ts_us", True),
                _field("int64", "ts_ns", True),
            ],
            "optional": False,
            "name": f"{prefix}.Envelope",
            "version": 2,
        }
        key_schema = {
            "type": "struct",
            # A key column is never NULL, whatever the source says (Debezium's key says so).
            "fields": [{**_node(kinds[k].node, False), "field": k} for k in schema.key],
            "optional": False,
            "name": f"{prefix}.Key",
        }
        open_value = b'{"schema":' + orjson.dumps(envelope).replace(b"%", b"%%") + b',"payload":'
        open_key = b'{"schema":' + orjson.dumps(key_schema).replace(b"%", b"%%") + b',"payload":'
        if self.mysql:
            source = (
                b'"source":{"version":' + _literal(_VERSION) + b',"connector":"mysql","name":'
                + _literal(server)
                + b',"ts_ms":%d,"snapshot":%s,"db":' + _literal(table.schema)
                + b',"sequence":null,"ts_us":%d,"ts_ns":%d,"table":' + _literal(table.name)
                + b',"server_id":0,"gtid":%s,"file":%s,"pos":%d,"row":%d,"thread":null,'
                b'"query":null}'
            )  # fmt: skip
        else:
            source = (
                b'"source":{"version":' + _literal(_VERSION) + b',"connector":"postgresql",'
                b'"name":' + _literal(server)
                + b',"ts_ms":%d,"snapshot":%s,"db":' + _literal(database)
                + b',"sequence":null,"ts_us":%d,"ts_ns":%d,"schema":' + _literal(table.schema)
                + b',"table":' + _literal(table.name)
                + b',"txId":%s,"lsn":%s,"xmin":null,"origin":null,"origin_lsn":null}'
            )  # fmt: skip
        payload = (
            b'{"before":%s,"after":%s,%s,"transaction":null,"op":%s,'
            b'"ts_ms":%d,"ts_us":%d,"ts_ns":%d}'
        )
        self.value_template = open_value + payload + b"}" if schemas else payload
        self.source_template = source
        self.key_template = open_key + b"%s}"
        self.key_wrapped = schemas
        # The events of one transaction share their source block (PostgreSQL) or file and
        # GTID (MySQL): the last one made is kept.
        self._source: tuple[tuple[Any, ...], bytes] = ((), b"")
        self._file: tuple[str, bytes] = ("", b'""')
        self._gtid: tuple[str | None, bytes] = (None, b"null")

    # -- rows -------------------------------------------------------------------------------

    def image(self, row: Row, partial: bool) -> bytes:
        """A row image's JSON; a partial one (a delete's key columns) is filled as Debezium
        fills it: NULL, or for a NOT NULL column its type's zero."""
        if len(row) == self.width and row.keys() == self.names:
            if self.converters:
                row = row.copy()
                for name, encode, unchanged in self.converters:
                    value = row[name]
                    if value is not None:
                        row[name] = unchanged if value is UNCHANGED else encode(value)
            return _dumps(row)
        unknown = [name for name in row if name not in self.by_name]
        if unknown:
            raise _Unencodable(f"the row has columns the table does not: {unknown}")
        if not partial:
            lacking = [f.name for f in self.fields if f.name not in row]
            raise _Unencodable(f"the row image lacks columns {lacking}")
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name in row:
                out[f.name] = _one(f, row[f.name])
            else:
                out[f.name] = None if f.optional else f.fallback
        return _dumps(out)

    def key(self, event: ChangeEvent) -> bytes:
        key = event.key
        if key is None or key.keys() != self.key_set:
            image = event.after if event.after is not None else event.before
            if image is None:
                raise _Unencodable("an event of a table with a key, without its key")
            key = {k: image[k] for k in self.key_names}
        if self.key_converters:
            key = dict(key)
            for name, encode, unchanged in self.key_converters:
                value = key[name]
                if value is not None:
                    key[name] = unchanged if value is UNCHANGED else encode(value)
        return self.key_template % _dumps(key) if self.key_wrapped else _dumps(key)

    # -- source positions -------------------------------------------------------------------

    def pg_source(self, micros: int, snapshot: bytes, event: ChangeEvent) -> bytes:
        txid = event.txid
        lsn = getattr(event.position, "lsn", None)
        at = (micros, snapshot, txid, lsn)
        if at != self._source[0]:
            source = self.source_template % (
                micros // 1000,
                snapshot,
                micros,
                micros * 1000,
                b"null" if txid is None else b"%d" % txid,
                b"null" if lsn is None else b"%d" % lsn,
            )
            self._source = (at, source)
        return self._source[1]

    def mysql_source(self, micros: int, snapshot: bytes, event: ChangeEvent) -> bytes:
        position: Any = event.position
        try:
            file, pos, row = position.file, position.pos, position.index
        except AttributeError:
            raise _Unencodable(
                f"a MySQL event whose position {position!r} has no binlog file and offset"
            ) from None
        gtid = getattr(position, "gtid", None)
        if file != self._file[0]:
            self._file = (file, orjson.dumps(file))
        if gtid != self._gtid[0]:
            self._gtid = (gtid, b"null" if gtid is None else orjson.dumps(str(gtid)))
        return self.source_template % (
            micros // 1000,
            snapshot,
            micros,
            micros * 1000,
            self._gtid[1],
            self._file[1],
            pos,
            row,
        )


def _node(node: Mapping[str, Any], optional: bool) -> dict[str, Any]:
    """A schema node with ``optional`` where JsonConverter puts it (after type and items)."""
    items = list(node.items())
    items.insert(2 if "items" in node or "fields" in node else 1, ("optional", optional))
    return dict(items)


def _one(f: _Field, value: Any) -> Any:
    if value is None:
        return None
    if value is UNCHANGED:
        return f.unchanged
    return f.encode(value) if f.encode is not None else value


class EnvelopeEncoder:
    """Encodes ChangeEvents as Debezium JSON envelopes (key and value bytes).

    ``server_name`` is Debezium's ``topic.prefix`` (``source.name``, and the schema names
    ``<server>.<schema>.<table>.Value``/``.Key``/``.Envelope``); ``database`` is the
    PostgreSQL ``source.db`` (a MySQL event's ``db`` is its table's database). ``schemas``
    is JsonConverter's ``schemas.enable``. An update that changes the key is one ``u`` event
    under the new key, with the old key's columns in ``before``: Debezium itself writes a
    delete, a tombstone and a create, which a caller can make from it.
    """

    def __init__(
        self,
        *,
        server_name: str,
        database: str,
        schemas: bool = True,
        decimal_handling: Literal["precise", "string", "double"] = "precise",
    ) -> None:
        if decimal_handling not in ("precise", "string", "double"):
            raise ValueError(
                f"decimal_handling must be precise, string or double, not {decimal_handling!r}"
            )
        self._server = server_name
        self._database = database
        self._schemas = schemas
        self._decimal: _DecimalHandling = decimal_handling
        self._by_id: dict[int, tuple[TableSchema, _Table]] = {}
        self._by_value: dict[TableSchema, _Table] = {}
        self._commit: tuple[datetime | None, int] = (None, 0)  # the last commit time seen

    def encode(self, event: ChangeEvent) -> tuple[bytes | None, bytes]:
        """Key and value bytes of one change event (key None for a table without a key and
        for truncate)."""
        schema = event.schema
        entry = self._by_id.get(id(schema))
        table = entry[1] if entry is not None and entry[0] is schema else self._table(schema)
        try:
            op = event.op
            # Enum members compared by identity: hashing one runs Python code.
            if op is _INSERT:
                op_json, snapshot = b'"c"', b'"false"'
            elif op is _UPDATE:
                op_json, snapshot = b'"u"', b'"false"'
            elif op is _DELETE:
                op_json, snapshot = b'"d"', b'"false"'
            elif op is _READ:
                op_json, snapshot = b'"r"', b'"true"'
            else:
                op_json, snapshot = b'"t"', b'"false"'
            if op is _TRUNCATE:
                key = None
                before = after = b"null"
            else:
                key = table.key(event) if table.key_names else None
                if event.before is not None:
                    before = table.image(event.before, True)
                elif op is _DELETE and event.key:
                    before = table.image(event.key, True)
                else:
                    before = b"null"
                after = b"null" if event.after is None else table.image(event.after, False)
            now = _time.time_ns()
            commit_ts = event.commit_ts
            if commit_ts is None:
                micros = now // 1000
            elif commit_ts is self._commit[0]:  # a transaction's events share their commit
                micros = self._commit[1]
            else:
                micros = self._micros(commit_ts)
            if table.mysql:
                source = table.mysql_source(micros, snapshot, event)
            else:
                source = table.pg_source(micros, snapshot, event)
            value = table.value_template % (
                before,
                after,
                source,
                op_json,
                now // 1_000_000,
                now // 1000,
                now,
            )
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise _failure(table, event, exc) from exc
        return key, value

    def tombstone(self, event: ChangeEvent) -> tuple[bytes, None]:
        """The key and null value written after a delete (log compaction)."""
        table = self._table(event.schema)
        if not table.key_names:
            raise ValueError(f"{event.table} has no key, so its deletes have no tombstone")
        if event.op is not Op.DELETE:
            raise ValueError(
                f"{event.table}: tombstones follow deletes, not {event.op.name.lower()}s"
            )
        try:
            return table.key(event), None
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise _failure(table, event, exc) from exc

    # -- internals --------------------------------------------------------------------------

    def _table(self, schema: TableSchema) -> _Table:
        entry = self._by_id.get(id(schema))
        if entry is not None and entry[0] is schema:
            return entry[1]
        table = self._by_value.get(schema)
        if table is None:
            table = _Table(schema, self._server, self._database, self._schemas, self._decimal)
            if len(self._by_value) >= _CACHE_LIMIT:
                self._by_value.clear()  # schemas change rarely: a full cache means churn
            self._by_value[schema] = table
        if len(self._by_id) >= _CACHE_LIMIT:
            self._by_id.clear()
        # The entry holds the schema itself, so its id cannot be reused while cached.
        self._by_id[id(schema)] = (schema, table)
        return table

    def _micros(self, commit_ts: datetime) -> int:
        stamp = commit_ts if commit_ts.tzinfo is not None else commit_ts.replace(tzinfo=UTC)
        micros: int = (stamp - _EPOCH_UTC) // _MICRO
        self._commit = (commit_ts, micros)
        return micros


def _failure(table: _Table, event: ChangeEvent, exc: Exception) -> SinkError:
    """The error naming the table, the column and what could not be written."""
    where = f"{event.table} ({event.op.name.lower()} at {event.position})"
    for image in (event.before, event.after, event.key):
        for name, value in (image or {}).items():
            f = table.by_name.get(name)
            if f is None:
                continue
            try:
                _dumps([_one(f, value)])
            except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as found:
                fix = found.fix if isinstance(found, _Unencodable) else None
                return SinkError(
                    f"{where}: column {name} ({f.type_name}): cannot write a "
                    f"{type(value).__name__} value as a Debezium field: {found}",
                    fix=fix,
                )
    fix = exc.fix if isinstance(exc, _Unencodable) else None
    return SinkError(f"{where}: cannot write the event as a Debezium envelope: {exc}", fix=fix)
