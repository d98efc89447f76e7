"""Pure decoders for the streaming replication protocol and pgoutput (protocol version 1).

No I/O here: everything takes bytes and returns plain dataclasses, so it is unit-tested from
raw bytes. References: PostgreSQL's "Streaming Replication Protocol" and "Logical Streaming
Replication Protocol" message formats.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# PostgreSQL timestamps count microseconds from 2000-01-01 00:00:00 UTC.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_UNIX_MICROS = 946_684_800_000_000

_Q = struct.Struct("!Q")
_q = struct.Struct("!q")
_I = struct.Struct("!I")
_i = struct.Struct("!i")
_H = struct.Struct("!H")
_XLOGDATA = struct.Struct("!QQq")
_KEEPALIVE = struct.Struct("!QqB")
_STATUS = struct.Struct("!cQQQqB")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_COLUMN_TAIL = struct.Struct("!Ii")


class ProtocolError(Exception):
    """A message did not follow the replication protocol."""


def format_lsn(lsn: int) -> str:
    """Render an LSN the way PostgreSQL does (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse PostgreSQL's ``XXX/XXX`` LSN notation."""
    try:
        high, low = text.strip().split("/")
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r} (expected the form 16/B374D848)") from None


def pg_timestamp(micros: int) -> datetime:
    """Convert a protocol timestamp (µs since 2000-01-01 UTC) to an aware datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


def now_pg_micros(unix_seconds: float) -> int:
    """Convert a Unix time to a protocol timestamp."""
    return int(unix_seconds * 1_000_000) - _PG_EPOCH_UNIX_MICROS


# --- streaming replication framing (CopyData payloads) ---------------------------------------
# The per-row message classes are plain (not frozen) slotted dataclasses: constructing a frozen
# one costs several times more, and millions are made per minute.


@dataclass(slots=True)
class XLogData:
    """A chunk of the logical stream: one pgoutput message and its WAL position."""

    data_start: int
    wal_end: int
    send_time: int
    payload: memoryview


@dataclass(slots=True)
class Keepalive:
    """The server's keepalive: its current WAL end and whether it wants a reply now."""

    wal_end: int
    send_time: int
    reply_requested: bool


def decode_copy_data(data: bytes | memoryview) -> XLogData | Keepalive:
    """Decode one CopyData payload from the server during START_REPLICATION."""
    view = memoryview(data)
    kind = view[0:1].tobytes()
    if kind == b"w":
        if len(view) < 25:
            raise ProtocolError("XLogData message shorter than its header")
        start, end, sent = _XLOGDATA.unpack_from(view, 1)
        return XLogData(start, end, sent, view[25:])
    if kind == b"k":
        if len(view) < 18:
            raise ProtocolError("keepalive message shorter than its header")
        end, sent, reply = _KEEPALIVE.unpack_from(view, 1)
        return Keepalive(end, sent, bool(reply))
    raise ProtocolError(f"unexpected replication message type {kind!r}")


def encode_standby_status(
    write_lsn: int, flush_lsn: int, apply_lsn: int, now_micros: int, reply: bool = False
) -> bytes:
    """Encode a Standby Status Update; ``flush_lsn`` is what the slot may advance to."""
    return _STATUS.pack(b"r", write_lsn, flush_lsn, apply_lsn, now_micros, 1 if reply else 0)


# --- pgoutput messages -----------------------------------------------------------------------


@dataclass(slots=True)
class Begin:
    """Start of a transaction; ``final_lsn`` is the LSN of its commit record."""

    final_lsn: int
    commit_ts: int
    xid: int


@dataclass(slots=True)
class Commit:
    """End of a transaction; streaming resumes at ``end_lsn``."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    """The replication origin a transaction came from."""

    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    """A column as pgoutput describes it; ``is_key`` marks replica identity columns."""

    is_key: bool
    name: str
    type_oid: int
    type_modifier: int


@dataclass(frozen=True, slots=True)
class Relation:
    """A table's current shape; sent before its first change and again after DDL."""

    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """A non-built-in type's name, sent before a relation that uses it."""

    type_oid: int
    namespace: str
    name: str


# One tuple column: ('n', None) null, ('u', None) unchanged TOAST, ('t', b'...') text value.
TupleColumn = tuple[str, bytes | None]


@dataclass(slots=True)
class Insert:
    """A new row."""

    relation_id: int
    new: tuple[TupleColumn, ...]


@dataclass(slots=True)
class Update:
    """A changed row; ``old`` is sent only for a key change ('K') or REPLICA IDENTITY FULL."""

    relation_id: int
    old_kind: str | None  # 'K' key columns only, 'O' the whole old row, None when not sent
    old: tuple[TupleColumn, ...] | None
    new: tuple[TupleColumn, ...]


@dataclass(slots=True)
class Delete:
    """A removed row, identified by its key ('K') or whole old row ('O')."""

    relation_id: int
    old_kind: str
    old: tuple[TupleColumn, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    """TRUNCATE of one or more tables in one statement."""

    cascade: bool
    restart_identity: bool
    relation_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """A ``pg_logical_emit_message`` message (only sent when requested)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeInfo
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)


class _Reader:
    """A cursor over one message's bytes."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def byte(self) -> int:
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def char(self) -> str:
        return chr(self.byte())

    def int16(self) -> int:
        (value,) = _H.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        (value,) = _i.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def uint32(self) -> int:
        (value,) = _I.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def uint64(self) -> int:
        (value,) = _Q.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str:
        end = self.pos
        buf = self.buf
        while buf[end] != 0:
            end += 1
        value = bytes(buf[self.pos : end]).decode("utf-8")
        self.pos = end + 1
        return value

    def tuple_data(self) -> tuple[TupleColumn, ...]:
        count = self.int16()
        buf = self.buf
        columns: list[TupleColumn] = []
        append = columns.append
        pos = self.pos
        for _ in range(count):
            kind = buf[pos]
            pos += 1
            if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary
                (length,) = _i.unpack_from(buf, pos)
                pos += 4
                if length < 0 or pos + length > len(buf):
                    raise ProtocolError("tuple value runs past the end of the message")
                append(("t" if kind == 0x74 else "b", bytes(buf[pos : pos + length])))
                pos += length
            elif kind == 0x6E:  # 'n'
                append(("n", None))
            elif kind == 0x75:  # 'u': unchanged TOAST, the value was not sent
                append(("u", None))
            else:
                raise ProtocolError(f"unknown tuple column kind {chr(kind)!r}")
        self.pos = pos
        return tuple(columns)


def decode_message(payload: bytes | memoryview) -> Message:
    """Decode one pgoutput message (protocol version 1)."""
    reader = _Reader(memoryview(payload))
    try:
        return _decode(reader)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"truncated or malformed pgoutput message: {exc}") from exc


def _decode(r: _Reader) -> Message:
    kind = r.char()
    if kind == "B":
        final_lsn, commit_ts, xid = _BEGIN.unpack_from(r.buf, 1)
        return Begin(final_lsn, commit_ts, xid)
    if kind == "C":
        flags, commit_lsn, end_lsn, commit_ts = _COMMIT.unpack_from(r.buf, 1)
        return Commit(flags, commit_lsn, end_lsn, commit_ts)
    if kind == "I":
        relation_id = r.uint32()
        marker = r.char()
        if marker != "N":
            raise ProtocolError(f"insert without a new tuple (got {marker!r})")
        return Insert(relation_id, r.tuple_data())
    if kind == "U":
        relation_id = r.uint32()
        marker = r.char()
        old_kind: str | None = None
        old: tuple[TupleColumn, ...] | None = None
        if marker in ("K", "O"):
            old_kind = marker
            old = r.tuple_data()
            marker = r.char()
        if marker != "N":
            raise ProtocolError(f"update without a new tuple (got {marker!r})")
        return Update(relation_id, old_kind, old, r.tuple_data())
    if kind == "D":
        relation_id = r.uint32()
        marker = r.char()
        if marker not in ("K", "O"):
            raise ProtocolError(f"delete without an old tuple (got {marker!r})")
        return Delete(relation_id, marker, r.tuple_data())
    if kind == "R":
        relation_id = r.uint32()
        namespace = r.string()
        name = r.string()
        identity = r.char()
        count = r.int16()
        columns = []
        for _ in range(count):
            flags = r.byte()
            column_name = r.string()
            type_oid, modifier = _COLUMN_TAIL.unpack_from(r.buf, r.pos)
            r.pos += 8
            columns.append(RelationColumn(bool(flags & 1), column_name, type_oid, modifier))
        return Relation(relation_id, namespace, name, identity, tuple(columns))
    if kind == "T":
        count = r.uint32()
        options = r.byte()
        ids = tuple(r.uint32() for _ in range(count))
        return Truncate(bool(options & 1), bool(options & 2), ids)
    if kind == "Y":
        return TypeInfo(r.uint32(), r.string(), r.string())
    if kind == "O":
        return Origin(r.uint64(), r.string())
    if kind == "M":
        transactional = bool(r.byte())
        lsn = r.uint64()
        prefix = r.string()
        length = r.int32()
        content = bytes(r.buf[r.pos : r.pos + length])
        return LogicalMessage(transactional, lsn, prefix, content)
    raise ProtocolError(f"unknown pgoutput message type {kind!r}")
