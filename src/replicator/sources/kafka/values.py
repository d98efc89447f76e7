"""Values of schemaless Debezium events (``schemas.enable=false``), read by the target's types.

Without the JsonConverter's schema part an event says nothing of its columns' types: an
integer may be a count, a date (days since 1970) or a timestamp (micro- or milliseconds since
1970). The target table's column type resolves it, read as Debezium's defaults write each
type (``time.precision.mode=adaptive_time_microseconds``, ``binary.handling.mode=bytes``),
and as the documented alternatives write it where the JSON type tells them apart
(``decimal.handling.mode=string`` or ``double``, ``time.precision.mode=isostring``,
``interval.handling.mode=string``).

A decimal string cannot tell by itself whether it is ``decimal.handling.mode=precise``'s
base64 of the unscaled number or ``string`` mode's text ("1234" is both), so the source's
``decimal_handling`` says which the producer used; numbers (``double``) and
``VariableScaleDecimal`` structs are read whichever it says.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from replicator.debezium.logical import UNAVAILABLE, parse_iso_duration
from replicator.errors import SourceError
from replicator.events import UNCHANGED, Interval, RawValue

Decode = Callable[[Any], Any]

_EPOCH = datetime(1970, 1, 1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LONG_MAX = 2**63 - 1
_LONG_MIN = -(2**63)
_PRECISION = re.compile(r"\((\d+)")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("not an integer")
    return int(value)


def _float(value: Any) -> float:
    return float(value)  # "NaN", "Infinity" and "-Infinity" arrive as strings


def _unscaled(text: str, scale: int) -> Decimal:
    unscaled = int.from_bytes(base64.b64decode(text, validate=True), "big", signed=True)
    return Decimal(f"{unscaled}e{-scale}")


def _decimal(scale: int | None, precise: bool) -> Decode:
    def decode(value: Any) -> Decimal:
        if isinstance(value, dict):  # io.debezium.data.VariableScaleDecimal
            return _unscaled(value["value"], int(value["scale"]))
        if isinstance(value, float):
            return Decimal(repr(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        if not isinstance(value, str):
            raise ValueError("not a decimal")
        if precise and value not in ("NaN", "Infinity", "-Infinity"):
            if scale is None:
                raise ValueError(
                    "a precise-mode decimal for a numeric column without a fixed scale "
                    "(set decimal_handling: string if the producer writes text)"
                )
            return _unscaled(value, scale)
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(
                "not decimal text (set decimal_handling: precise if the producer writes "
                "Debezium's default base64 decimals)"
            ) from None

    return decode


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    # A JSON column written as an object (a converter that parsed io.debezium.data.Json).
    return json.dumps(value, ensure_ascii=False)


def _bytes(value: Any) -> Any:
    raw = base64.b64decode(value, validate=True)
    return UNCHANGED if raw == UNAVAILABLE.encode() else raw


def _date(value: Any) -> Any:
    if isinstance(value, str):
        return date.fromisoformat(value)
    return date.fromordinal(_EPOCH_ORDINAL + _int(value))


def _timestamp(per_second: int) -> Decode:
    def decode(value: Any) -> Any:
        if isinstance(value, str):
            if value in ("infinity", "-infinity"):
                return RawValue(value)
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=None) if parsed.tzinfo else parsed
        number = _int(value)
        if number == _LONG_MAX:
            return RawValue("infinity")
        if number == _LONG_MIN:
            return RawValue("-infinity")
        return _EPOCH + timedelta(microseconds=number * 1_000_000 // per_second)

    return decode


def _timestamptz(value: Any) -> Any:
    if isinstance(value, str):
        if value in ("infinity", "-infinity"):
            return RawValue(value)
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return (_EPOCH + timedelta(microseconds=_int(value))).replace(tzinfo=UTC)


def _time(value: Any) -> Any:
    if isinstance(value, str):
        return time.fromisoformat(value)
    micros = _int(value)
    if micros == 86_400_000_000:
        return RawValue("24:00:00")
    seconds, fraction = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, fraction)


def _interval(value: Any) -> Interval:
    if isinstance(value, str):
        return parse_iso_duration(value)
    return Interval(microseconds=_int(value))  # MicroDuration


_NUMERIC_SCALE = re.compile(r"^numeric\(\d+,\s*(\d+)\)")


def _bits(length: int, varying: bool) -> Decode:
    # io.debezium.data.Bits: the number's little-endian bytes (Java's BitSet.toByteArray).
    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            return _text(value)
        raw = base64.b64decode(value, validate=True)
        number = int.from_bytes(raw, "little")
        text = format(number, "b") if number else ""
        return text if varying else text.zfill(length)

    return decode


def _scalar(type_name: str, precise: bool) -> Decode:
    base = type_name.split("(")[0].strip()
    if base in ("smallint", "integer", "bigint", "oid"):
        return _int
    if base in ("real", "double precision"):
        return _float
    if base == "money":  # Debezium writes money as a decimal of scale 2
        return _decimal(2, precise)
    if base == "numeric":
        scale = _NUMERIC_SCALE.match(type_name)
        return _decimal(int(scale.group(1)) if scale else None, precise)
    if base == "boolean":
        return _bool
    if base == "bytea":
        return _bytes
    if base == "date":
        return _date
    if base == "timestamp without time zone" or type_name.startswith("timestamp("):
        if "with time zone" in type_name:
            return _timestamptz
        # Debezium's adaptive mode: precision up to 3 in milliseconds, else microseconds.
        match = _PRECISION.search(type_name)
        precision = int(match.group(1)) if match else 6
        return _timestamp(1_000 if precision <= 3 else 1_000_000)
    if base == "timestamp with time zone":
        return _timestamptz
    if base == "time without time zone" or (
        type_name.startswith("time(") and "with time zone" not in type_name
    ):
        return _time
    if base == "interval":
        return _interval
    if base in ("bit", "bit varying"):
        match = _PRECISION.search(type_name)
        return _bits(int(match.group(1)) if match else 1, base == "bit varying")
    return _text  # text, varchar, uuid, json(b), xml, enums, ... keep their text


def value_decoder(type_name: str, column: str, precise: bool = True) -> Decode:
    """The function reading one schemaless JSON value for a target column of ``type_name``
    (``format_type`` spelling, e.g. ``timestamp(3) without time zone`` or ``text[]``);
    ``precise``: decimal strings are Debezium's base64 unscaled numbers, not text."""
    decode = _array(type_name, precise) if type_name.endswith("[]") else _scalar(type_name, precise)

    def field(value: Any) -> Any:
        if value is None or value is UNCHANGED:  # UNCHANGED: a decoder said so already
            return value
        if value == UNAVAILABLE:
            return UNCHANGED
        try:
            return decode(value)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise SourceError(
                f"column {column}: cannot read {value!r:.80} as {type_name}: {exc}",
                fix="check that the topic's events match the target table, or publish them "
                "with their schema (JsonConverter schemas.enable=true)",
            ) from exc

    return field


def _array(type_name: str, precise: bool) -> Decode:
    element = value_decoder(type_name[:-2], "element", precise)

    def decode(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError("not an array")
        return [element(item) for item in value]

    return decode
