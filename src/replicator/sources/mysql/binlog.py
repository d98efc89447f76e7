"""One binlog dump connection: ask the server for its binlog from a position, and frame
what it sends into the few events a CDC reader needs.

python-mysql-replication supplies the hard parts (TABLE_MAP metadata, the format
description, MySQL GTID set encoding, binary JSON); this module owns the connection, so that:

* a lost connection is an error the reader sees, never a silent reconnect from the
  library's *initial* position (which repeats or skips events: issue #367 there; the
  reader reconnects itself, from a transaction boundary it knows);
* a TABLE_MAP event, which MySQL writes before every statement's rows, is parsed once per
  distinct definition rather than every time (it was most of the library's CPU time here);
* row images come out as raw bytes for :mod:`.rows` to decode exactly.

Every event is checked against its CRC32 when the server writes checksums.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.protocol import MysqlPacket

from replicator.errors import SourceConnectionError, SourceError
from replicator.sources.mysql import server
from replicator.sources.mysql.position import MysqlPosition
from replicator.sources.mysql.protocol import Packets, is_eof, lenenc
from replicator.sources.mysql.rows import BinlogColumn

QUERY_EVENT = 0x02
STOP_EVENT = 0x03
ROTATE_EVENT = 0x04
FORMAT_DESCRIPTION_EVENT = 0x0F
XID_EVENT = 0x10
TABLE_MAP_EVENT = 0x13
INCIDENT_EVENT = 0x1A
HEARTBEAT_EVENT = 0x1B
GTID_EVENT = 0x21
ANONYMOUS_GTID_EVENT = 0x22
XA_PREPARE_EVENT = 0x26
PARTIAL_UPDATE_ROWS_EVENT = 0x27
TRANSACTION_PAYLOAD_EVENT = 0x28
MARIADB_GTID_EVENT = 0xA2
MARIADB_COMPRESSED_EVENTS = range(0xA5, 0xAC)  # compressed query and rows events

ROWS_EVENTS = {
    0x17: ("insert", False),
    0x18: ("update", False),
    0x19: ("delete", False),
    0x1E: ("insert", True),
    0x1F: ("update", True),
    0x20: ("delete", True),
}

_HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, size, next position, flags
_ARTIFICIAL = 0x20  # LOG_EVENT_ARTIFICIAL_F: made up by the dump thread, not in the file
_MARIADB_STANDALONE = 0x01  # FL_STANDALONE: the group is one statement, no BEGIN/COMMIT
_TABLE_MAP_CACHE = 4096
_COM_BINLOG_DUMP = 0x12
_COM_REGISTER_SLAVE = 0x15
_COM_BINLOG_DUMP_GTID = 0x1E
_MARIADB_SLAVE_CAPABILITY_GTID = 4


@dataclass(slots=True)
class Header:
    """The common event header: when, what, and the position right after the event."""

    timestamp: int
    type: int
    size: int
    log_pos: int
    flags: int

    @property
    def start(self) -> int:
        """Where the event begins in its binlog file."""
        return self.log_pos - self.size


@dataclass(slots=True)
class Rotate:
    """The stream moves on to ``file`` at ``pos`` (also sent first, artificially)."""

    header: Header
    file: str
    pos: int


@dataclass(slots=True)
class Gtid:
    """A transaction group starts; ``gtid`` is None for MySQL's anonymous groups."""

    header: Header
    gtid: str | None
    transaction: bool  # MariaDB says so: BEGIN … COMMIT/XID follow (else one statement)


@dataclass(slots=True)
class Query:
    """A statement: BEGIN, COMMIT, ROLLBACK, XA …, or DDL, in database ``schema``."""

    header: Header
    schema: str
    text: str


@dataclass(slots=True)
class Xid:
    """The commit of a transaction of transactional tables."""

    header: Header


@dataclass(frozen=True, slots=True, eq=False)
class BinlogTable:
    """A TABLE_MAP: which table a table id stands for, with its columns as logged.

    Compared by identity: each distinct definition is parsed once and reused, so a
    dictionary keyed by it costs no hashing of the columns on every row event.
    """

    table_id: int
    schema: str
    name: str
    columns: tuple[BinlogColumn, ...]
    key: tuple[str, ...]


@dataclass(slots=True)
class Rows:
    """Row images of one ROWS event: ``present`` bitmaps, and ``data`` for :mod:`.rows`."""

    header: Header
    kind: str  # insert | update | delete
    table: BinlogTable
    present: bytes
    data: bytes


@dataclass(slots=True)
class Heartbeat:
    """The server is alive and has sent everything up to ``header.log_pos`` of ``file``."""

    header: Header
    file: str


@dataclass(slots=True)
class Other:
    """Any other event (format description, GTID lists, checkpoints, …)."""

    header: Header


Event = Rotate | Gtid | Query | Xid | Rows | Heartbeat | Other


class _ControlConnection:
    """What the library's event classes ask of their control connection."""

    charset = "utf8mb4"

    def __init__(self, mariadb: bool) -> None:
        self._dbms = "mariadb" if mariadb else "mysql"

    def _get_dbms(self) -> str:
        return self._dbms


class BinlogConnection:
    """Streams the binlog from a transaction boundary, by GTID state or file position."""

    def __init__(
        self,
        connect_args: dict[str, Any],
        server_id: int,
        info: server.ServerInfo,
        *,
        heartbeat_s: float,
        read_timeout_s: float,
        reporting_name: str,
    ) -> None:
        self._args = connect_args
        self._server_id = server_id
        self._info = info
        self._heartbeat = heartbeat_s
        self._read_timeout = read_timeout_s
        self._name = reporting_name[:60]
        self._conn: Any = None
        self._packets: Packets | None = None
        self._waiting: deque[bytes] = deque()  # received, not yet framed
        self._checksum = False
        self._control = _ControlConnection(info.mariadb)
        self._mysql_version: tuple[int, ...] = info.version
        self._post_header: tuple[int, ...] | None = None
        self._tables: dict[int, BinlogTable] = {}
        self._parsed: dict[bytes, BinlogTable | None] = {}
        self._wanted: Any = None

    # --- connecting -------------------------------------------------------------------------

    def open(self, start: MysqlPosition, *, by_gtid: bool, wanted: Any) -> None:
        """Connect and ask for the binlog after ``start`` (its GTID state when ``by_gtid``).

        ``wanted(schema, table)`` says which tables' TABLE_MAP events to parse; rows of the
        others are skipped without decoding.
        """
        self.close()
        self._wanted = wanted
        self._tables = {}
        conn = server.connect(self._args, read_timeout=self._read_timeout)
        try:
            self._checksum = self._prepare_session(conn)
            self._register(conn)
            self._dump(conn, start, by_gtid)
        except pymysql.Error as exc:
            conn.close()
            raise server.translate(exc, "starting the binlog stream") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        # From here on the connection only streams: packets are read here rather than by
        # PyMySQL, to know whether more is buffered and to wait with a timeout.
        self._packets = Packets(conn._sock)

    def _prepare_session(self, conn: Any) -> bool:
        checksum = server.variables(conn, "binlog_checksum")["binlog_checksum"]
        with conn.cursor() as cur:
            # Announce that we handle checksums (the server refuses a replica that does
            # not), heartbeats while idle (so a dead connection is noticed, and the reader
            # wakes up to checkpoint), and a long write timeout: a reader held back by a slow
            # target stops reading for a while, which must not make the server hang up.
            cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            cur.execute("SET @master_heartbeat_period = %s", (int(self._heartbeat * 1e9),))
            cur.execute("SET SESSION net_write_timeout = 3600")
            if self._info.mariadb:
                # Without the GTID capability MariaDB rewrites GTID events into BEGIN queries.
                cur.execute("SET @mariadb_slave_capability = %s", (_MARIADB_SLAVE_CAPABILITY_GTID,))
        return (checksum or "NONE").upper() != "NONE"

    def _register(self, conn: Any) -> None:
        """Register as a replica, so ``SHOW SLAVE HOSTS`` names the pipeline."""
        host = self._name.encode()
        packet = (
            struct.pack("<I", self._server_id)
            + bytes([len(host)])
            + host
            + b"\x00\x00"  # user, password: empty
            + struct.pack("<HII", 0, 0, 0)  # port, rank, master id
        )
        conn._execute_command(_COM_REGISTER_SLAVE, packet)
        conn._read_packet()

    def _dump(self, conn: Any, start: MysqlPosition, by_gtid: bool) -> None:
        flags = 0  # blocking: wait for new events instead of ending the stream
        if by_gtid and self._info.mariadb:
            with conn.cursor() as cur:
                cur.execute("SET @slave_connect_state = %s", (start.gtid or "",))
                cur.execute("SET @slave_gtid_strict_mode = 1")
                cur.execute("SET @slave_gtid_ignore_duplicates = 0")
            packet = struct.pack("<IHI", 4, flags, self._server_id)
        elif by_gtid:
            from pymysqlreplication.gtid import GtidSet

            gtids = GtidSet(start.gtid or None)
            data = gtids.encoded()
            flags |= 0x04  # BINLOG_THROUGH_GTID
            packet = (
                struct.pack("<HII", flags, self._server_id, 0)
                + struct.pack("<QI", 4, len(data))
                + data
            )
            conn._execute_command(_COM_BINLOG_DUMP_GTID, packet)
            return
        else:
            packet = struct.pack("<IHI", start.pos, flags, self._server_id) + start.file.encode()
        conn._execute_command(_COM_BINLOG_DUMP, packet)

    def close(self) -> None:
        """Drop the connection; safe to call more than once."""
        conn, self._conn = self._conn, None
        self._packets = None
        self._waiting.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a dump connection often is already broken
                pass

    # --- reading ----------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether an event can be read without waiting."""
        return bool(self._waiting) or self._packets is not None and self._packets.ready()

    def read(self, timeout: float) -> Event | None:
        """The next event, or None when none arrived within ``timeout`` seconds.

        Raises SourceConnectionError when the connection is lost (or silent for longer
        than the read timeout, despite heartbeats) and SourceError when the server refuses
        to go on.
        """
        packets = self._packets
        if packets is None:
            raise SourceConnectionError("the binlog connection is closed")
        deadline = time.monotonic() + timeout
        waiting = self._waiting
        while True:
            if not waiting:
                try:
                    waiting.extend(packets.read_all(max(0.0, deadline - time.monotonic())))
                except pymysql.Error as exc:
                    self.close()
                    raise self._refusal(exc) from exc
                except OSError as exc:
                    self.close()
                    raise SourceConnectionError(f"lost the binlog connection: {exc}") from exc
                if not waiting:
                    if packets.silent_for() > self._read_timeout:
                        self.close()
                        raise SourceConnectionError(
                            f"the binlog connection was silent for {self._read_timeout:g} s "
                            "despite heartbeats"
                        )
                    return None
            data = waiting.popleft()
            if data[5] == TABLE_MAP_EVENT and self._known_table_map(data):
                continue
            if is_eof(data):
                self.close()
                raise SourceConnectionError("the server ended the binlog stream")
            event = self._frame(data)
            if event is not None:
                return event

    def _known_table_map(self, data: bytes) -> bool:
        """Handle a TABLE_MAP identical to one already parsed; False for any other.

        MySQL writes one before every statement's rows, so this is every other event. Its
        checksum is not needed: a corrupted body would not equal a known one.
        """
        body = data[20 : len(data) - 4 if self._checksum else len(data)]
        known = self._parsed.get(body, _UNKNOWN)
        if known is _UNKNOWN:
            return False
        table_id = int.from_bytes(body[:6], "little")
        if known is None:
            self._tables.pop(table_id, None)  # ids are reused: forget the old meaning
        else:
            self._tables[table_id] = known
        return True

    def _refusal(self, exc: pymysql.Error) -> SourceError:
        code = exc.args[0] if exc.args else None
        if code == 1236:  # ER_MASTER_FATAL_ERROR_READING_BINLOG: purged, or unknown GTID
            return SourceError(
                f"the source cannot send its binlog from the pipeline's position: "
                f"{exc.args[1] if len(exc.args) > 1 else exc}",
                fix="the binlogs the pipeline still needed were purged; re-copy the tables: "
                "replicator drop -c FILE --pipeline NAME, then start the pipeline again "
                "(and keep binlogs longer: binlog_expire_logs_seconds)",
            )
        return server.translate(exc, "reading the binlog")

    def _frame(self, data: bytes) -> Event | None:
        timestamp, kind, _, size, log_pos, flags = _HEADER.unpack_from(data, 1)
        end = len(data)
        if self._checksum:
            end -= 4
            stored = int.from_bytes(data[end : end + 4], "little")
            if zlib.crc32(memoryview(data)[1:end]) != stored:
                raise SourceError(
                    f"a binlog event failed its checksum (type {kind}, ending at {log_pos})",
                    fix="check the source's binlog files and the network; restart to re-read",
                )
        # Row events and the TABLE_MAPs before them are most of the stream: no copy of
        # their bodies, and no header object for a TABLE_MAP.
        rows = ROWS_EVENTS.get(kind)
        if rows is not None:
            return self._rows(Header(timestamp, kind, size, log_pos, flags), rows, data, end)
        if kind == TABLE_MAP_EVENT:
            self._table_map(data, data[20:end])
            return None
        header = Header(timestamp, kind, size, log_pos, flags)
        body = data[20:end]
        if kind == XID_EVENT:
            return Xid(header)
        if kind == MARIADB_GTID_EVENT:
            seq, domain, gflags = struct.unpack_from("<QIB", body)
            server_id = struct.unpack_from("<I", data, 6)[0]
            standalone = bool(gflags & _MARIADB_STANDALONE)
            return Gtid(header, f"{domain}-{server_id}-{seq}", not standalone)
        if kind == GTID_EVENT:
            sid = body[1:17].hex()
            gno = struct.unpack_from("<Q", body, 17)[0]
            uuid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}"
            return Gtid(header, f"{uuid}:{gno}", False)
        if kind == ANONYMOUS_GTID_EVENT:
            return Gtid(header, None, False)
        if kind == QUERY_EVENT:
            return self._query(header, body)
        if kind == ROTATE_EVENT:
            pos = struct.unpack_from("<Q", body)[0]
            return Rotate(header, body[8:].decode(), pos)
        if kind == HEARTBEAT_EVENT:
            return Heartbeat(header, body.decode())
        if kind == FORMAT_DESCRIPTION_EVENT:
            self._format_description(data)
            return Other(header)
        self._refuse_unsupported(kind, log_pos)
        return Other(header)

    def _refuse_unsupported(self, kind: int, log_pos: int) -> None:
        if kind == INCIDENT_EVENT:
            raise SourceError(
                f"the source's binlog holds an incident event at {log_pos}: the server "
                "recorded that changes may be missing from its binlog",
                fix="re-copy the tables (replicator drop, then start the pipeline again)",
            )
        if kind == PARTIAL_UPDATE_ROWS_EVENT:
            raise SourceError(
                "the source logs partial JSON updates (binlog_row_value_options = "
                "PARTIAL_JSON), which cannot reproduce the row",
                fix="SET GLOBAL binlog_row_value_options = ''",
            )
        if kind == TRANSACTION_PAYLOAD_EVENT:
            raise SourceError(
                "the source compresses binlog transactions (binlog_transaction_compression)",
                fix="SET GLOBAL binlog_transaction_compression = OFF",
            )
        if kind in MARIADB_COMPRESSED_EVENTS:
            raise SourceError(
                "the source compresses its binlog events (log_bin_compress)",
                fix="SET GLOBAL log_bin_compress = OFF",
            )
        if kind == XA_PREPARE_EVENT:
            raise SourceError(
                "the source ran an XA transaction, which Replicator cannot follow (its rows "
                "are logged at XA PREPARE, before the outcome is known)",
                fix="avoid XA transactions on captured tables",
            )

    def _post_header_len(self, kind: int, default: int) -> int:
        lengths = self._post_header
        if lengths is None or kind - 1 >= len(lengths):
            return default
        return lengths[kind - 1]

    def _format_description(self, data: bytes) -> None:
        from pymysqlreplication.event import FormatDescriptionEvent

        wrapper = self._wrap(data, FormatDescriptionEvent)
        event = wrapper.event
        if event is not None:
            self._mysql_version = event.mysql_version
            self._post_header = tuple(event.post_header_len)

    def _wrap(self, data: bytes, event_class: Any) -> Any:
        """The library's parse of one event (only where its parsing is worth having)."""
        from pymysqlreplication.packet import BinLogPacketWrapper

        return BinLogPacketWrapper(
            MysqlPacket(data, "utf8"),
            {},
            self._control,
            self._mysql_version,
            self._checksum,
            frozenset({event_class}),
            only_tables=None,
            ignored_tables=None,
            only_schemas=None,
            ignored_schemas=None,
            freeze_schema=False,
            ignore_decode_errors=False,
            verify_checksum=False,  # checked in _frame
            optional_meta_data=True,  # column names from binlog_row_metadata = FULL
            enable_logging=False,
            use_column_name_cache=False,
            post_header_lengths=self._post_header,
        )

    def _query(self, header: Header, body: bytes) -> Query:
        post = self._post_header_len(QUERY_EVENT, 13)
        schema_length = body[8]
        status_length = struct.unpack_from("<H", body, 11)[0]
        start = post + status_length
        schema = body[start : start + schema_length].decode("utf-8", "replace")
        text = body[start + schema_length + 1 :].decode("utf-8", "replace")
        return Query(header, schema, text)

    def _table_map(self, data: bytes, body: bytes) -> None:
        table_id = int.from_bytes(body[:6], "little")
        self._tables.pop(table_id, None)  # ids are reused: forget the old meaning first
        known = self._parsed.get(body)
        if known is None and body not in self._parsed:
            known = self._parse_table_map(data, body)
            if len(self._parsed) >= _TABLE_MAP_CACHE:
                self._parsed.clear()
            self._parsed[body] = known
        if known is not None:
            self._tables[table_id] = known

    def _parse_table_map(self, data: bytes, body: bytes) -> BinlogTable | None:
        post = self._post_header_len(TABLE_MAP_EVENT, 8)
        schema_length = body[post]
        schema = body[post + 1 : post + 1 + schema_length].decode()
        at = post + 2 + schema_length
        name = body[at + 1 : at + 1 + body[at]].decode()
        if not self._wanted(schema, name):
            return None
        from pymysqlreplication.row_event import TableMapEvent

        event = self._wrap(data, TableMapEvent).event
        if event is None:
            return None
        return _binlog_table(event)

    def _rows(self, header: Header, rows: tuple[str, bool], data: bytes, end: int) -> Rows | None:
        """A ROWS event of a captured table; ``data`` is the whole packet, the body starts
        at 20 and ends at ``end`` (before the checksum)."""
        kind, v2 = rows
        table = self._tables.get(int.from_bytes(data[20:26], "little"))
        if table is None:
            return None  # a table the pipeline does not capture
        at = self._post_header_len(header.type, 10 if v2 else 8)
        if v2:
            extra = _U16(data, 28)[0]
            at = max(at, 8 + extra)
        count, at = lenenc(data, 20 + at)
        width = (count + 7) // 8
        present = data[at : at + width]
        at += width
        if kind == "update":
            if data[at : at + width] != present:
                raise SourceError(
                    f"an update of {table.schema}.{table.name} logs different columns before "
                    "and after (binlog_row_image is not FULL)",
                    fix="SET GLOBAL binlog_row_image = FULL on the source",
                )
            at += width
        return Rows(header, kind, table, present, data[at:end])


_U16 = struct.Struct("<H").unpack_from
_UNKNOWN: Any = object()  # not in the TABLE_MAP cache


def _binlog_table(event: Any) -> BinlogTable:
    """Our view of the library's parsed TABLE_MAP."""
    nulls = event.null_bitmask
    columns = []
    for i, column in enumerate(event.columns):
        labels = column.set_values or (column.enum_values or [""])[1:]
        # Collations are named after their character set (latin1_swedish_ci, binary), and
        # no character set name has an underscore in it.
        charset = column.collation_name.split("_")[0] if column.collation_name else None
        columns.append(
            BinlogColumn(
                name=column.name or f"column_{i + 1}",
                type=column.type,
                unsigned=bool(column.unsigned),
                max_length=getattr(column, "max_length", 0),
                length_size=getattr(column, "length_size", 0),
                precision=getattr(column, "precision", 0),
                decimals=getattr(column, "decimals", 0),
                fsp=getattr(column, "fsp", 0),
                bits=getattr(column, "bits", 0),
                size=getattr(column, "size", 0),
                charset=charset,
                labels=tuple(labels),
                nullable=bool(nulls[i // 8] >> (i % 8) & 1),
            )
        )
    key = tuple(c.name for c in event.columns if c.is_primary)
    return BinlogTable(event.table_id, event.schema, event.table, tuple(columns), key)
