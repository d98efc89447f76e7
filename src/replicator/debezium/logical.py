"""Kafka Connect field schemas, as Debezium's JSON converter writes them, to Python values and
PostgreSQL column types.

A change event with ``schemas.enable=true`` describes every column: a Connect type
(``int16``, ``string``, ``bytes``, ``struct``, ...) and, for most database types, a logical
``name`` (``io.debezium.time.MicroTimestamp``, ``org.apache.kafka.connect.data.Decimal``,
...) with ``parameters``. :func:`field_type` reads such a node once per column and
:func:`decoder` compiles the function that turns each JSON value into the value a sink
writes (the same Python types the database sources produce: ``Decimal``, ``date``,
``datetime``, :class:`~replicator.events.Interval`, ``bytes``, ...).

What the format itself loses, under Debezium's default connector settings, cannot be
recovered here; the README says which setting keeps it:

- ``interval.handling.mode=numeric`` (``MicroDuration``) counts a month as 30.4375 days: the
  value arrives as microseconds only (``string`` mode, ``io.debezium.time.Interval``, is
  exact);
- ``bigint.unsigned.handling.mode=long`` wraps unsigned BIGINTs above 2^63 - 1 to negative
  numbers (``precise`` sends a Decimal);
- a BIT VARYING value arrives without its length: it is padded to the column's maximum
  unless the source type is propagated (``column.propagate.source.type``);
- ``time.precision.mode=connect`` truncates to milliseconds.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from replicator.errors import SourceError
from replicator.events import UNCHANGED, Interval, RawValue

UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for a value PostgreSQL did not send (an unchanged TOASTed column)."""
_UNAVAILABLE_BYTES = UNAVAILABLE.encode()

_EPOCH = datetime(1970, 1, 1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LONG_MAX = 2**63 - 1
_LONG_MIN = -(2**63)
_MICROS_PER_DAY = 86_400_000_000
_SOURCE_TYPE = "__debezium.source.column.type"
_SOURCE_LENGTH = "__debezium.source.column.length"

Decode = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class FieldType:
    """One field of a Connect schema: its type, logical name and parameters."""

    type: str
    logical: str | None = None
    parameters: Mapping[str, str] | None = None
    optional: bool = True
    items: FieldType | None = None  # element type of an array
    fields: tuple[tuple[str, FieldType], ...] = ()  # of a struct

    def parameter(self, name: str) -> str | None:
        """A schema parameter, or None."""
        return (self.parameters or {}).get(name)


def field_type(node: Mapping[str, Any]) -> FieldType:
    """Read a Connect schema node (as JsonConverter writes it)."""
    try:
        kind = str(node["type"])
    except (KeyError, TypeError):
        raise SourceError(f"a Kafka Connect schema node without a type: {node!r:.200}") from None
    items = node.get("items")
    fields = node.get("fields") or ()
    parameters = node.get("parameters")
    return FieldType(
        type=kind,
        logical=node.get("name"),
        parameters={str(k): str(v) for k, v in parameters.items()} if parameters else None,
        optional=bool(node.get("optional", True)),
        items=field_type(items) if isinstance(items, Mapping) else None,
        fields=tuple((str(f["field"]), field_type(f)) for f in fields),
    )


# -- decoding --------------------------------------------------------------------------------


def decoder(ft: FieldType, column: str = "") -> Decode:
    """The function turning one JSON value of this field into a Replicator value.

    ``None`` stays ``None``; Debezium's placeholder for an unchanged TOASTed value becomes
    :data:`~replicator.events.UNCHANGED`. ``column`` names the column in errors.
    """
    decode = _decoder(ft, column)

    def field(value: Any) -> Any:
        if value is None:
            return None
        if value == UNAVAILABLE:
            return UNCHANGED
        try:
            return decode(value)
        except SourceError:
            raise
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise SourceError(
                f"column {column or '?'}: cannot read {value!r:.80} as "
                f"{ft.logical or ft.type}: {exc}",
                fix="check that the topic carries Debezium change events with their schema",
            ) from exc

    return field


def _decoder(ft: FieldType, column: str) -> Decode:
    logical = ft.logical
    if logical is not None:
        special = _LOGICAL.get(logical)
        if special is not None:
            return special(ft, column)
    base = _BASE.get(ft.type)
    if base is not None:
        return base
    if ft.type == "array":
        if ft.items is None:
            raise SourceError(f"column {column}: an array schema without its element type")
        element = decoder(ft.items, column)
        return lambda value: [element(v) for v in value]
    if ft.type == "struct":
        fields = [(name, decoder(sub, f"{column}.{name}")) for name, sub in ft.fields]
        return lambda value: {name: decode(value.get(name)) for name, decode in fields}
    if ft.type == "map":
        return lambda value: dict(value)
    raise SourceError(f"column {column}: unknown Kafka Connect type {ft.type!r}")


def _float(value: Any) -> float:
    # JsonConverter writes NaN and the infinities as the strings "NaN", "Infinity", ...
    return float(value)


def _bytes(value: Any) -> bytes:
    return base64.b64decode(value, validate=True)


def _bytes_field(value: Any) -> Any:
    raw = _bytes(value)
    return UNCHANGED if raw == _UNAVAILABLE_BYTES else raw


_BASE: dict[str, Decode] = {
    "int8": int,
    "int16": int,
    "int32": int,
    "int64": int,
    "float32": _float,
    "float": _float,
    "float64": _float,
    "double": _float,
    "boolean": bool,
    "string": str,
    "bytes": _bytes_field,
}


def _scaled(value: Any, scale: int) -> Decimal:
    # Built from text, which is exact: Decimal arithmetic (scaleb) would round to 28 digits.
    return Decimal(f"{int.from_bytes(_bytes(value), 'big', signed=True)}e{-scale}")


def _decimal(ft: FieldType, column: str) -> Decode:
    # The unscaled number as big-endian two's complement bytes, the scale a parameter.
    scale = int(ft.parameter("scale") or 0)
    return lambda value: _scaled(value, scale)


def _variable_decimal(ft: FieldType, column: str) -> Decode:
    def decode(value: Any) -> Decimal:
        return _scaled(value["value"], int(value["scale"]))

    return decode


def _days(ft: FieldType, column: str) -> Decode:
    return lambda value: date.fromordinal(_EPOCH_ORDINAL + int(value))


def _time_of_day(per_second: int) -> Callable[[FieldType, str], Decode]:
    def make(ft: FieldType, column: str) -> Decode:
        def decode(value: Any) -> Any:
            micros = int(value) * 1_000_000 // per_second
            if micros == _MICROS_PER_DAY:
                return RawValue("24:00:00")  # PostgreSQL's end of day
            if not 0 <= micros < _MICROS_PER_DAY:
                # MySQL's TIME is a duration (-838:59:59 to 838:59:59).
                return Interval(microseconds=micros)
            seconds, fraction = divmod(micros, 1_000_000)
            minutes, second = divmod(seconds, 60)
            hour, minute = divmod(minutes, 60)
            return time(hour, minute, second, fraction)

        return decode

    return make


def _instant(per_second: int) -> Callable[[FieldType, str], Decode]:
    def make(ft: FieldType, column: str) -> Decode:
        def decode(value: Any) -> Any:
            number = int(value)
            if number == _LONG_MAX:
                return RawValue("infinity")
            if number == _LONG_MIN:
                return RawValue("-infinity")
            return _EPOCH + timedelta(microseconds=number * 1_000_000 // per_second)

        return decode

    return make


def _zoned_timestamp(ft: FieldType, column: str) -> Decode:
    def decode(value: Any) -> Any:
        if value in ("infinity", "-infinity"):
            return RawValue(value)
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    return decode


def _zoned_time(ft: FieldType, column: str) -> Decode:
    return lambda value: time.fromisoformat(value)


def _micro_duration(ft: FieldType, column: str) -> Decode:
    return lambda value: Interval(microseconds=int(value))


_ISO_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<years>-?\d+)Y)?(?:(?P<months>-?\d+)M)?(?:(?P<weeks>-?\d+)W)?"
    r"(?:(?P<days>-?\d+)D)?(?:T(?:(?P<hours>-?\d+)H)?(?:(?P<minutes>-?\d+)M)?"
    r"(?:(?P<seconds>-?\d+(?:\.\d+)?)S)?)?$"
)


def parse_iso_duration(text: str) -> Interval:
    """An ISO 8601 duration (``P1Y2M3DT4H5M6.78S``, as Debezium's ``Interval`` writes it)."""
    match = _ISO_DURATION.match(text)
    if match is None or text in ("P", "PT", "-P"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    part = {k: v for k, v in match.groupdict().items() if v is not None and k != "sign"}
    seconds = Decimal(part.get("seconds", "0"))
    interval = Interval(
        months=int(part.get("years", 0)) * 12 + int(part.get("months", 0)),
        days=int(part.get("weeks", 0)) * 7 + int(part.get("days", 0)),
        microseconds=(int(part.get("hours", 0)) * 3600 + int(part.get("minutes", 0)) * 60)
        * 1_000_000
        + int(seconds * 1_000_000),
    )
    if match.group("sign"):
        return Interval(-interval.months, -interval.days, -interval.microseconds)
    return interval


def _interval(ft: FieldType, column: str) -> Decode:
    return lambda value: parse_iso_duration(value)


def _enum_set(ft: FieldType, column: str) -> Decode:
    return lambda value: value.split(",") if value else []


def _bits(ft: FieldType, column: str) -> Decode:
    # Debezium writes a bit string as the little-endian bytes of its number (Java's
    # BitSet.toByteArray), so the bits keep no length of their own.
    length = int(ft.parameter("length") or 0)
    varying = (ft.parameter(_SOURCE_TYPE) or "").upper() in ("VARBIT", "BIT VARYING")

    def decode(value: Any) -> Any:
        raw = _bytes(value)
        if raw == _UNAVAILABLE_BYTES:
            return UNCHANGED
        number = int.from_bytes(raw, "little")
        text = format(number, "b") if number else ("" if varying else "0")
        return text if varying else text.zfill(length)

    return decode


def _geometry(ft: FieldType, column: str) -> Decode:
    # As the MySQL source writes spatial values: a 4-byte little-endian SRID, then WKB.
    def decode(value: Any) -> bytes:
        srid = int(value.get("srid") or 0)
        return srid.to_bytes(4, "little") + _bytes(value["wkb"])

    return decode


def _text(ft: FieldType, column: str) -> Decode:
    return str


_LOGICAL: dict[str, Callable[[FieldType, str], Decode]] = {
    "org.apache.kafka.connect.data.Decimal": _decimal,
    "io.debezium.data.VariableScaleDecimal": _variable_decimal,
    "org.apache.kafka.connect.data.Date": _days,
    "io.debezium.time.Date": _days,
    "org.apache.kafka.connect.data.Time": _time_of_day(1_000),
    "io.debezium.time.Time": _time_of_day(1_000),
    "io.debezium.time.MicroTime": _time_of_day(1_000_000),
    "io.debezium.time.NanoTime": _time_of_day(1_000_000_000),
    "org.apache.kafka.connect.data.Timestamp": _instant(1_000),
    "io.debezium.time.Timestamp": _instant(1_000),
    "io.debezium.time.MicroTimestamp": _instant(1_000_000),
    "io.debezium.time.NanoTimestamp": _instant(1_000_000_000),
    "io.debezium.time.ZonedTimestamp": _zoned_timestamp,
    "io.debezium.time.IsoTimestamp": _zoned_timestamp,
    "io.debezium.time.ZonedTime": _zoned_time,
    "io.debezium.time.IsoTime": _zoned_time,
    "io.debezium.time.MicroDuration": _micro_duration,
    "io.debezium.time.Interval": _interval,
    "io.debezium.time.Year": lambda ft, column: int,
    "io.debezium.data.Json": _text,
    "io.debezium.data.Uuid": _text,
    "io.debezium.data.Xml": _text,
    "io.debezium.data.Enum": _text,
    "io.debezium.data.EnumSet": _enum_set,
    "io.debezium.data.Bits": _bits,
    "io.debezium.data.geometry.Geometry": _geometry,
    "io.debezium.data.geometry.Geography": _geometry,
    "io.debezium.data.geometry.Point": _geometry,
}


# -- PostgreSQL types ------------------------------------------------------------------------

_BASE_PG = {
    "int8": "smallint",
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "float32": "real",
    "float": "real",
    "float64": "double precision",
    "double": "double precision",
    "boolean": "boolean",
    "string": "text",
    "bytes": "bytea",
    "map": "jsonb",
    "struct": "jsonb",
}

_LOGICAL_PG = {
    "io.debezium.data.VariableScaleDecimal": "numeric",
    "org.apache.kafka.connect.data.Date": "date",
    "io.debezium.time.Date": "date",
    "org.apache.kafka.connect.data.Time": "time(3) without time zone",
    "io.debezium.time.Time": "time(3) without time zone",
    "io.debezium.time.MicroTime": "time(6) without time zone",
    "io.debezium.time.NanoTime": "time(6) without time zone",
    "org.apache.kafka.connect.data.Timestamp": "timestamp(3) without time zone",
    "io.debezium.time.Timestamp": "timestamp(3) without time zone",
    "io.debezium.time.MicroTimestamp": "timestamp(6) without time zone",
    "io.debezium.time.NanoTimestamp": "timestamp(6) without time zone",
    "io.debezium.time.ZonedTimestamp": "timestamp with time zone",
    "io.debezium.time.IsoTimestamp": "timestamp with time zone",
    "io.debezium.time.ZonedTime": "time with time zone",
    "io.debezium.time.IsoTime": "time with time zone",
    "io.debezium.time.MicroDuration": "interval",
    "io.debezium.time.Interval": "interval",
    "io.debezium.time.Year": "smallint",
    "io.debezium.data.Json": "jsonb",
    "io.debezium.data.Uuid": "uuid",
    "io.debezium.data.Xml": "xml",
    "io.debezium.data.Enum": "text",
    "io.debezium.data.EnumSet": "text[]",
    "io.debezium.data.geometry.Geometry": "bytea",
    "io.debezium.data.geometry.Geography": "bytea",
    "io.debezium.data.geometry.Point": "bytea",
}


def pg_type(ft: FieldType) -> str:
    """The PostgreSQL type a column of this field is created with in the target."""
    logical = ft.logical
    if logical == "org.apache.kafka.connect.data.Decimal":
        precision = ft.parameter("connect.decimal.precision")
        scale = int(ft.parameter("scale") or 0)
        return f"numeric({precision},{scale})" if precision else "numeric"
    if logical == "io.debezium.data.Bits":
        length = int(ft.parameter("length") or 1)
        varying = (ft.parameter(_SOURCE_TYPE) or "").upper() in ("VARBIT", "BIT VARYING")
        return f"bit varying({length})" if varying else f"bit({max(1, length)})"
    if logical is not None and logical in _LOGICAL_PG:
        return _LOGICAL_PG[logical]
    if ft.type == "array":
        if ft.items is None:
            return "jsonb"
        element = pg_type(ft.items)
        return "jsonb" if element.endswith("[]") or element == "jsonb" else f"{element}[]"
    if ft.type == "string" and ft.parameter(_SOURCE_LENGTH) is not None:
        source = (ft.parameter(_SOURCE_TYPE) or "").upper()
        if source in ("VARCHAR", "CHARACTER VARYING"):
            return f"character varying({ft.parameter(_SOURCE_LENGTH)})"
    try:
        return _BASE_PG[ft.type]
    except KeyError:
        raise SourceError(f"no PostgreSQL type for Kafka Connect type {ft.type!r}") from None
