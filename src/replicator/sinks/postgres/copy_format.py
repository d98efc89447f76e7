"""Python values → PostgreSQL text input, and rows → ``COPY ... FROM STDIN`` text lines.

The inverse of :mod:`replicator.sources.postgres.values`: each value is written in a form the
column type's input function reads back to exactly the value the source held (so the target's
text output is identical), whatever the target session's DateStyle or IntervalStyle.

==========================================  ===============================================
Python value                                PostgreSQL text input
==========================================  ===============================================
``None``                                    SQL NULL (``\\N`` in a COPY line)
``bool``                                    ``t`` / ``f``
``int``                                     decimal digits
``float``                                   ``repr`` (shortest exact form);
                                            ``NaN``, ``Infinity``, ``-Infinity``
``Decimal``                                 positional digits, never an exponent
                                            (``1E-7`` → ``0.0000001``);
                                            ``NaN``, ``Infinity``, ``-Infinity``
``str``                                     itself
``bytes``, ``bytearray``, ``memoryview``    ``\\x`` + hex digits
``date``, ``datetime``, ``time``            ISO 8601; aware values keep their offset
``UUID``                                    canonical hyphenated form
``events.Interval``                         ISO 8601 with designators (``P1Y2M-3DT4H``)
``events.RawValue``                         its text, unchanged
``list``, ``tuple``                         array literal: every non-null element
                                            double-quoted, NULL bare, nested lists nested
``dict``                                    JSON text (``json.dumps``)
==========================================  ===============================================

Subclasses of these types (an ``IntEnum``, a ``str`` subclass) are written as their base type.
:data:`~replicator.events.UNCHANGED` is refused with ValueError: a sink must resolve it before
formatting, and any other type raises TypeError rather than being guessed at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from replicator.events import UNCHANGED, Interval, RawValue

__all__ = ["copy_row", "format_value"]

_Formatter = Callable[[Any], str]


def _format_bool(value: bool) -> str:
    return "t" if value else "f"


def _format_float(value: float) -> str:
    if math.isfinite(value):
        return float.__repr__(value)  # the shortest text that reads back as the same float
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _format_decimal(value: Decimal) -> str:
    if value.is_finite():
        # str() switches to exponent notation for small values (1E-7); 'f' writes the
        # positional digits with the scale intact (1.50 stays 1.50), as numeric_out does.
        return format(value, "f")
    if value.is_nan():
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _format_bytes(value: bytes | bytearray | memoryview) -> str:
    return "\\x" + value.hex()


def _format_raw(value: RawValue) -> str:
    return value.text


def _format_json(value: dict[Any, Any]) -> str:
    # allow_nan=False: NaN/Infinity are not JSON, and PostgreSQL would reject them anyway;
    # better to fail here with the value at hand.
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _quote_element(text: str) -> str:
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def _format_array(value: Sequence[Any]) -> str:
    # Quoting every element sidesteps array_in's rules on whitespace, delimiters, braces
    # and the bare word NULL; only '\' and '"' need escaping inside quotes.
    parts = []
    for item in value:
        if item is None:
            parts.append("NULL")
        elif type(item) is list or type(item) is tuple:
            parts.append(_format_array(item))
        else:
            text = format_value(item)
            parts.append("NULL" if text is None else _quote_element(text))
    return "{" + ",".join(parts) + "}"


# Unbound base-class methods, so a subclass that overrides __str__ or __repr__ (an Enum mixing
# in str or int, say) is still written as the value it holds.
_FORMATTERS: Final[dict[type, _Formatter]] = {
    str: str.__str__,
    int: int.__repr__,
    bool: _format_bool,
    float: _format_float,
    Decimal: _format_decimal,
    datetime: datetime.isoformat,
    date: date.isoformat,
    time: time.isoformat,
    UUID: str,
    Interval: Interval.isoformat,
    RawValue: _format_raw,
    bytes: _format_bytes,
    bytearray: _format_bytes,
    memoryview: _format_bytes,
    list: _format_array,
    tuple: _format_array,
    dict: _format_json,
}

# The order matters where one type subclasses another (bool < int, datetime < date).
_BASES: Final[tuple[type, ...]] = (
    bool,
    int,
    float,
    Decimal,
    str,
    datetime,
    date,
    time,
    UUID,
    bytes,
    bytearray,
    memoryview,
    list,
    tuple,
    dict,
)


def _formatter_by_base(value: Any) -> _Formatter:
    if value is UNCHANGED:
        raise ValueError(
            "UNCHANGED is not a value: the sink must resolve unchanged TOAST columns from the "
            "target row before formatting"
        )
    for base in _BASES:
        if isinstance(value, base):
            return _FORMATTERS[base]
    raise TypeError(f"cannot write a {type(value).__qualname__} value to PostgreSQL: {value!r}")


def format_value(value: Any) -> str | None:
    """The PostgreSQL text input literal for ``value``; ``None`` for SQL NULL.

    Raises ValueError for :data:`~replicator.events.UNCHANGED` and TypeError for a type with
    no defined mapping (see the module docstring's table).
    """
    if value is None:
        return None
    formatter = _FORMATTERS.get(type(value))
    if formatter is None:
        formatter = _formatter_by_base(value)
    return formatter(value)


# --- COPY text format ------------------------------------------------------------------------


def _escape(text: str) -> str:
    # COPY text format gives '\' , newline, carriage return and tab a meaning; isprintable()
    # is False for the last three (and for other control characters, which only cost this
    # slower, still correct, path), so most strings are checked in two quick scans.
    if text.isprintable() and "\\" not in text:
        return text
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _copy_null(value: None) -> str:
    return "\\N"


def _copy_bytes(value: bytes | bytearray | memoryview) -> str:
    return "\\\\x" + value.hex()  # the '\x' prefix with its backslash escaped for COPY


def _copy_escaped(formatter: _Formatter) -> _Formatter:
    def copy_field(value: Any) -> str:
        return _escape(formatter(value))

    return copy_field


def _copy_other(value: Any) -> str:
    text = format_value(value)
    return "\\N" if text is None else _escape(text)


# Per type, the COPY field: types whose text can never hold a character COPY escapes (digits,
# ISO dates, UUIDs, intervals) skip the escaping scan altogether.
_COPY_FIELDS: Final[dict[type, _Formatter]] = {
    **_FORMATTERS,
    type(None): _copy_null,
    str: _escape,
    bytes: _copy_bytes,
    bytearray: _copy_bytes,
    memoryview: _copy_bytes,
    RawValue: _copy_escaped(_format_raw),
    list: _copy_escaped(_format_array),
    tuple: _copy_escaped(_format_array),
    dict: _copy_escaped(_format_json),
}


def copy_row(values: Sequence[Any]) -> str:
    """One line of ``COPY ... FROM STDIN`` text format: fields tab-separated, ``\\N`` for NULL.

    Each value is written as :func:`format_value` writes it, escaped for COPY, and the line
    ends with a newline, so lines can simply be concatenated.
    """
    get = _COPY_FIELDS.get
    return "\t".join([get(type(value), _copy_other)(value) for value in values]) + "\n"
