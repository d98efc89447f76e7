"""Decode the rows of binlog ROWS events, from raw bytes (no I/O).

python-mysql-replication frames the events and parses TABLE_MAP metadata; the row images
themselves are decoded here, with one reader function compiled per column, because the
library's generic per-value decoding is the CPU bottleneck of a binlog reader and it folds
NULL, zero dates and empty sets into one ``None`` (its ``none_sources``).

Formats follow MySQL's ``sql/rpl_record.cc`` and the ``my_*_packed_from_binary`` functions
of ``mysys/my_time.cc``: integers and lengths little-endian, DATETIME2/TIME2/TIMESTAMP2
big-endian with an offset, NEWDECIMAL in MySQL's binary decimal form.

Values are those of :mod:`.columns`' table: ``int``, ``bool``, ``Decimal``, ``float``, ``str``,
``bytes``, ``date``, naive ``datetime`` (DATETIME), UTC ``datetime`` (TIMESTAMP),
:class:`~replicator.events.Interval` (TIME), ``list[str]`` (SET), JSON text, and
:class:`~replicator.events.RawValue` bit strings (BIT).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from replicator.events import Interval, RawValue
from replicator.sources.mysql.columns import MyColumn, TypeOptions, python_codec

# Binlog column type codes (MySQL's enum_field_types).
DECIMAL = 0
TINY = 1
SHORT = 2
LONG = 3
FLOAT = 4
DOUBLE = 5
TIMESTAMP = 7
LONGLONG = 8
INT24 = 9
DATE = 10
TIME = 11
DATETIME = 12
YEAR = 13
VARCHAR = 15
BIT = 16
TIMESTAMP2 = 17
DATETIME2 = 18
TIME2 = 19
JSON = 245
NEWDECIMAL = 246
ENUM = 247
SET = 248
BLOB = 252
VAR_STRING = 253
STRING = 254
GEOMETRY = 255

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


class BadValue(ValueError):
    """A stored value that has no faithful PostgreSQL counterpart (under the options)."""

    def __init__(self, column: str, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.message = message
        self.fix = fix


@dataclass(frozen=True, slots=True)
class BinlogColumn:
    """What a TABLE_MAP event says about one column: its type code and metadata."""

    name: str
    type: int
    unsigned: bool = False
    max_length: int = 0  # VARCHAR / STRING: bytes
    length_size: int = 0  # BLOB / GEOMETRY / JSON: bytes of the length prefix
    precision: int = 0  # NEWDECIMAL
    decimals: int = 0  # NEWDECIMAL
    fsp: int = 0  # TIME2 / DATETIME2 / TIMESTAMP2
    bits: int = 0  # BIT
    size: int = 0  # ENUM / SET: bytes
    charset: str | None = None  # character set of a character column
    labels: tuple[str, ...] = ()  # ENUM / SET members
    nullable: bool = True


Reader = Callable[[bytes, int], tuple[Any, int]]


# --- fixed-width numbers ---------------------------------------------------------------------


def _struct_reader(fmt: str) -> Reader:
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        return unpack(buf, off)[0], off + size

    read.struct_code = fmt[1:]  # type: ignore[attr-defined]  # for RowDecoder's fast path
    return read


def _int24(unsigned: bool) -> Reader:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        return int.from_bytes(buf[off : off + 3], "little", signed=not unsigned), off + 3

    return read


def _boolean(name: str, inner: Reader) -> Reader:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        value, off = inner(buf, off)
        if value == 0 or value == 1:
            return value == 1, off
        raise BadValue(
            name,
            f"TINYINT(1) column {name} holds {value}, which is not a boolean "
            "(source.tinyint1_as_boolean is true)",
            "set source.tinyint1_as_boolean: false (the column becomes smallint; re-copy "
            "the table after changing its type in the target)",
        )

    return read


def _float(buf: bytes, off: int) -> tuple[Any, int]:
    return struct.unpack_from("<f", buf, off)[0], off + 4


def _year(buf: bytes, off: int) -> tuple[Any, int]:
    value = buf[off]
    return (1900 + value if value else 0), off + 1


def _bit(bits: int) -> Reader:
    size = (bits + 7) // 8

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        value = int.from_bytes(buf[off : off + size], "big")
        return RawValue(format(value, f"0{bits}b")), off + size

    return read


def _newdecimal(precision: int, scale: int) -> Reader:
    intg = precision - scale
    intg0, intg0x = divmod(intg, 9)
    frac0, frac0x = divmod(scale, 9)
    size = intg0 * 4 + _DIG2BYTES[intg0x] + frac0 * 4 + _DIG2BYTES[frac0x]

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        data = bytearray(buf[off : off + size])
        negative = not data[0] & 0x80
        data[0] ^= 0x80
        if negative:
            data = bytearray(b ^ 0xFF for b in data)
        pos = 0
        digits = []
        first = _DIG2BYTES[intg0x]
        if first:
            digits.append(str(int.from_bytes(data[:first], "big")))
            pos = first
        for _ in range(intg0):
            digits.append(f"{int.from_bytes(data[pos : pos + 4], 'big'):09d}")
            pos += 4
        whole = "".join(digits).lstrip("0") or "0"
        fraction = []
        for _ in range(frac0):
            fraction.append(f"{int.from_bytes(data[pos : pos + 4], 'big'):09d}")
            pos += 4
        last = _DIG2BYTES[frac0x]
        if last:
            fraction.append(f"{int.from_bytes(data[pos : pos + last], 'big'):0{frac0x}d}")
        text = whole + ("." + "".join(fraction) if scale else "")
        return Decimal(("-" if negative else "") + text), off + size

    return read


# --- strings ---------------------------------------------------------------------------------


def _prefixed(prefix: int) -> Callable[[bytes, int], tuple[bytes, int]]:
    def read(buf: bytes, off: int) -> tuple[bytes, int]:
        end = off + prefix
        length = int.from_bytes(buf[off:end], "little")
        return buf[end : end + length], end + length

    return read


def _text(name: str, prefix: int, charset: str) -> Reader:
    raw = _prefixed(prefix)
    codec, errors = python_codec(charset)

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        data, off = raw(buf, off)
        try:
            text = data.decode(codec, errors)
        except UnicodeDecodeError as exc:
            raise BadValue(
                name,
                f"column {name} holds bytes that are not valid {charset} "
                f"({data[exc.start : exc.start + 4]!r} at byte {exc.start})",
                "repair the value in the source (it was written through a connection "
                "with another character set), or make the column binary",
            ) from exc
        if "\x00" in text:
            raise BadValue(
                name,
                f"column {name} holds a NUL character, which PostgreSQL text cannot store",
                "remove NUL characters from the column in the source, or store the data "
                "in a binary column",
            )
        return text, off

    read.text_codec = (prefix, codec, errors)  # type: ignore[attr-defined]  # for the fast path
    return read


def _binary(prefix: int, pad_to: int | None) -> Reader:
    raw = _prefixed(prefix)

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        data, off = raw(buf, off)
        if pad_to is not None and len(data) < pad_to:
            # BINARY(n) is padded with zero bytes to n, as SELECT returns it; the binlog
            # leaves the padding out.
            data = data + b"\x00" * (pad_to - len(data))
        return data, off

    return read


def _enum(labels: tuple[str, ...], size: int) -> Reader:
    members = ("", *labels)  # index 0: the empty string MySQL stores for an invalid value

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        return members[int.from_bytes(buf[off : off + size], "little")], off + size

    return read


def _set(labels: tuple[str, ...], size: int) -> Reader:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        mask = int.from_bytes(buf[off : off + size], "little")
        return [label for i, label in enumerate(labels) if mask >> i & 1], off + size

    return read


def _mysql_json(prefix: int) -> Reader:
    from pymysqlreplication.json_binary import parse_json

    raw = _prefixed(prefix)

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        data, off = raw(buf, off)
        if not data:
            return "null", off
        return json_text(parse_json(data[0], data[1:])), off

    return read


def json_text(value: Any) -> str:
    """JSON text of a value as the library decodes MySQL's binary JSON (bytes for keys and
    strings, ``Decimal`` for DECIMAL, datetimes for the temporal scalars)."""
    if isinstance(value, dict):
        items = (f"{json_text(k)}:{json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, Decimal):
        return format(value, "f")  # the exact digits; json.dumps would go through float
    if isinstance(value, (datetime, date, timedelta)):
        value = str(value)
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


# --- dates and times -------------------------------------------------------------------------


def _zero(name: str, text: str, zero_null: bool) -> Any:
    if zero_null:
        return None
    raise BadValue(
        name,
        f"column {name} holds the zero date {text}, which PostgreSQL has no value for "
        "(source.zero_dates is error)",
        "set source.zero_dates: null to copy zero dates as NULL",
    )


def _invalid(name: str, text: str) -> BadValue:
    # MySQL stores such dates under sql_mode ALLOW_INVALID_DATES; no calendar has them.
    return BadValue(
        name,
        f"column {name} holds the invalid date {text}, which PostgreSQL has no value for",
        "correct the value in the source (sql_mode ALLOW_INVALID_DATES let it in)",
    )


def _clock(hour: int, minute: int, second: int, micro: int) -> str:
    return f"{hour:02d}:{minute:02d}:{second:02d}" + (f".{micro:06d}" if micro else "")


def _date(name: str, zero_null: bool) -> Reader:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        packed = int.from_bytes(buf[off : off + 3], "little")
        day, month, year = packed & 31, packed >> 5 & 15, packed >> 9
        text = f"{year:04d}-{month:02d}-{day:02d}"
        if not (year and month and day):
            return _zero(name, text, zero_null), off + 3
        try:
            return date(year, month, day), off + 3
        except ValueError:
            raise _invalid(name, text) from None

    return read


def _fraction(fsp: int) -> tuple[int, int]:
    """(bytes, multiplier) of the fractional seconds that follow a temporal value."""
    return ((fsp + 1) // 2, (1, 10000, 100, 1)[(fsp + 1) // 2])


def _datetime2(name: str, fsp: int, zero_null: bool) -> Reader:
    frac_bytes, scale = _fraction(fsp)
    width = 5 + frac_bytes

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        packed = int.from_bytes(buf[off : off + 5], "big") - 0x8000000000
        micro = 0
        if frac_bytes:
            micro = int.from_bytes(buf[off + 5 : off + width], "big", signed=True) * scale
        ymd, hms = packed >> 17, packed & 0x1FFFF
        year_month, day = ymd >> 5, ymd & 31
        year, month = divmod(year_month, 13)
        hour, minute, second = hms >> 12, hms >> 6 & 63, hms & 63
        if not (year and month and day):
            text = f"{year:04d}-{month:02d}-{day:02d} {_clock(hour, minute, second, micro)}"
            return _zero(name, text, zero_null), off + width
        try:
            value = datetime(year, month, day, hour, minute, second, micro)
        except ValueError:
            text = f"{year:04d}-{month:02d}-{day:02d} {_clock(hour, minute, second, micro)}"
            raise _invalid(name, text) from None
        return value, off + width

    return read


def _timestamp2(name: str, fsp: int, zero_null: bool) -> Reader:
    frac_bytes, scale = _fraction(fsp)
    width = 4 + frac_bytes

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        seconds = int.from_bytes(buf[off : off + 4], "big")
        micro = int.from_bytes(buf[off + 4 : off + width], "big") * scale if frac_bytes else 0
        if not seconds and not micro:
            # 1970-01-01 00:00:00 UTC is outside TIMESTAMP's range: 0 is the zero timestamp.
            return _zero(name, "0000-00-00 00:00:00", zero_null), off + width
        return _EPOCH + timedelta(seconds=seconds, microseconds=micro), off + width

    return read


def _time2(fsp: int) -> Reader:
    frac_bytes = (fsp + 1) // 2
    width = 3 + frac_bytes

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        intpart = int.from_bytes(buf[off : off + 3], "big") - 0x800000
        if frac_bytes == 3:
            packed = int.from_bytes(buf[off : off + 6], "big") - 0x800000000000
        else:
            frac = int.from_bytes(buf[off + 3 : off + width], "big") if frac_bytes else 0
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100 if frac_bytes == 1 else 0x10000
            packed = (intpart << 24) + frac * (10000 if frac_bytes == 1 else 100)
        negative = packed < 0
        packed = -packed if negative else packed
        hms, micro = packed >> 24, packed & 0xFFFFFF
        seconds = (hms >> 12 & 0x3FF) * 3600 + (hms >> 6 & 63) * 60 + (hms & 63)
        total = seconds * 1_000_000 + micro
        return Interval(microseconds=-total if negative else total), off + width

    return read


def _old_timestamp(name: str, zero_null: bool) -> Reader:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        seconds = int.from_bytes(buf[off : off + 4], "little")
        if not seconds:
            return _zero(name, "0000-00-00 00:00:00", zero_null), off + 4
        return _EPOCH + timedelta(seconds=seconds), off + 4

    return read


def _old_datetime(name: str, zero_null: bool) -> Reader:
    def read(buf: bytes, off: int) -> tuple[Any, int]:
        packed = int.from_bytes(buf[off : off + 8], "little")
        ymd, hms = divmod(packed, 1_000_000)
        year, md = divmod(ymd, 10_000)
        month, day = divmod(md, 100)
        hour, ms = divmod(hms, 10_000)
        minute, second = divmod(ms, 100)
        text = f"{year:04d}-{month:02d}-{day:02d} {_clock(hour, minute, second, 0)}"
        if not (year and month and day):
            return _zero(name, text, zero_null), off + 8
        try:
            return datetime(year, month, day, hour, minute, second), off + 8
        except ValueError:
            raise _invalid(name, text) from None

    return read


def _old_time(buf: bytes, off: int) -> tuple[Any, int]:
    packed = int.from_bytes(buf[off : off + 3], "little", signed=True)
    negative = packed < 0
    hours, ms = divmod(abs(packed), 10_000)
    minutes, seconds = divmod(ms, 100)
    total = (hours * 3600 + minutes * 60 + seconds) * 1_000_000
    return Interval(microseconds=-total if negative else total), off + 3


# --- compiling a table's decoder -------------------------------------------------------------


def column_reader(column: MyColumn, binlog: BinlogColumn, options: TypeOptions) -> Reader:
    """The reader of one column's binlog value, producing what :mod:`.columns` promises."""
    kind = binlog.type
    name = column.name
    zero_null = options.zero_dates_null
    unsigned = binlog.unsigned
    if kind in (TINY, SHORT, LONG, LONGLONG):
        code = {TINY: "b", SHORT: "h", LONG: "i", LONGLONG: "q"}[kind]
        reader = _struct_reader("<" + (code.upper() if unsigned else code))
        if column.data_type == "tinyint" and column.boolean and options.tinyint1_as_boolean:
            return _boolean(name, reader)
        return reader
    if kind == INT24:
        return _int24(unsigned)
    if kind == FLOAT:
        return _float
    if kind == DOUBLE:
        return _struct_reader("<d")
    if kind == NEWDECIMAL:
        return _newdecimal(binlog.precision, binlog.decimals)
    if kind == YEAR:
        return _year
    if kind == BIT:
        return _bit(binlog.bits)
    if kind == DATE:
        return _date(name, zero_null)
    if kind == DATETIME2:
        return _datetime2(name, binlog.fsp, zero_null)
    if kind == TIMESTAMP2:
        return _timestamp2(name, binlog.fsp, zero_null)
    if kind == TIME2:
        return _time2(binlog.fsp)
    if kind == TIMESTAMP:
        return _old_timestamp(name, zero_null)
    if kind == DATETIME:
        return _old_datetime(name, zero_null)
    if kind == TIME:
        return _old_time
    if kind == ENUM:
        return _enum(binlog.labels, binlog.size)
    if kind == SET:
        return _set(binlog.labels, binlog.size)
    if kind in (VARCHAR, VAR_STRING, STRING):
        prefix = 1 if binlog.max_length <= 255 else 2
        if column.charset is None or column.charset == "binary":
            pad = column.length if column.data_type == "binary" else None
            return _binary(prefix, pad)
        return _text(name, prefix, column.charset)
    if kind == BLOB:
        if column.data_type == "json":
            return _text(name, binlog.length_size, column.charset or "utf8mb4")
        if column.charset is None or column.charset == "binary":
            return _binary(binlog.length_size, None)
        return _text(name, binlog.length_size, column.charset)
    if kind == GEOMETRY:
        return _binary(binlog.length_size, None)
    if kind == JSON:
        return _mysql_json(binlog.length_size)
    raise BadValue(name, f"column {name} has binlog type {kind}, which is not supported")


class RowDecoder:
    """Decodes the row images of one table's ROWS events into value tuples.

    An image without NULLs (the usual one) is decoded by a function compiled for the table
    (:func:`_compile_image`); the column readers decode the others, and any image the
    compiled function stumbles on, so that their errors name the column.
    """

    def __init__(self, readers: list[Reader]) -> None:
        self._readers = readers
        self._count = len(readers)
        self._null_bytes = (self._count + 7) // 8
        self._full = _full_bitmap(self._count)
        self._fast = _compile_image(readers)

    def images(self, data: bytes, present: bytes, images_per_row: int) -> list[tuple[Any, ...]]:
        """Every row image in ``data`` (the event body after its column bitmaps), in order.

        ``present`` is the columns-present bitmap; with ``binlog_row_image = FULL`` every
        column is present, which is the only form Replicator accepts (a partial image
        cannot reproduce the row).
        """
        count = self._count
        if present != self._full:
            raise BadValue(
                "",
                "a row event leaves columns out (binlog_row_image is not FULL)",
                "SET GLOBAL binlog_row_image = FULL on the source (and in its configuration)",
            )
        readers = self._readers
        null_bytes = self._null_bytes
        mask = (1 << count) - 1
        out: list[tuple[Any, ...]] = []
        off = 0
        end = len(data)
        while off < end:
            # The bitmap's spare high bits are set: only the columns' own bits count.
            nulls = int.from_bytes(data[off : off + null_bytes], "little") & mask
            off += null_bytes
            if not nulls:
                try:
                    image, next_off = self._fast(data, off)
                except Exception:  # noqa: BLE001 - decoded again below, to name the column
                    image = None
                if image is not None:
                    out.append(image)
                    off = next_off
                    continue
                values = []
                for read in readers:
                    value, off = read(data, off)
                    values.append(value)
            else:
                values = []
                for i in range(count):
                    if nulls >> i & 1:
                        values.append(None)
                    else:
                        value, off = readers[i](data, off)
                        values.append(value)
            out.append(tuple(values))
        if len(out) % images_per_row:
            raise BadValue("", "a row event ended in the middle of a row")
        return out


def _compile_image(readers: list[Reader]) -> Callable[[bytes, int], tuple[Any, int]]:
    """A function decoding one image without NULLs: runs of fixed-width integers and
    floats in one ``struct`` call, short text inline, the rest through its reader.

    Made with ``exec`` (as dataclasses make ``__init__``) because a function call and a
    tuple per value is most of what decoding a row costs; the generated code holds no text
    from the binlog or the table, only positions, codecs and format characters.
    """
    env: dict[str, Any] = {"_nul": "\x00"}
    lines = ["def image(buf, off):"]
    values = []
    i = 0
    count = len(readers)
    while i < count:
        code = getattr(readers[i], "struct_code", None)
        text = getattr(readers[i], "text_codec", None)
        if code is not None:
            j = i
            fmt = "<"
            while j < count and getattr(readers[j], "struct_code", None) is not None:
                fmt += readers[j].struct_code  # type: ignore[attr-defined]
                j += 1
            env[f"_s{i}"] = struct.Struct(fmt).unpack_from
            names = [f"v{k}" for k in range(i, j)]
            lines.append(f"    {', '.join(names)}, = _s{i}(buf, off)")
            lines.append(f"    off += {struct.calcsize(fmt)}")
            values += names
            i = j
            continue
        name = f"v{i}"
        if text is not None and text[0] in (1, 2):
            prefix, codec, errors = text
            size = "buf[off]" if prefix == 1 else "buf[off] | buf[off + 1] << 8"
            lines.append(f"    n = {size}")
            lines.append(f"    at = off + {prefix}")
            lines.append(f"    {name} = buf[at : at + n].decode({codec!r}, {errors!r})")
            lines.append("    off = at + n")
            lines.append(f"    if _nul in {name}: return None, off")
        else:
            env[f"_r{i}"] = readers[i]
            lines.append(f"    {name}, off = _r{i}(buf, off)")
        values.append(name)
        i += 1
    lines.append(f"    return ({', '.join(values)}{',' if len(values) == 1 else ''}), off")
    exec("\n".join(lines), env)  # noqa: S102 - see the docstring
    return env["image"]  # type: ignore[no-any-return]


def _full_bitmap(count: int) -> bytes:
    full, rest = divmod(count, 8)
    return b"\xff" * full + (bytes([(1 << rest) - 1]) if rest else b"")
