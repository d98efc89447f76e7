"""The binlog reader's transactions and reconnects, over a scripted binlog (no server).

The script stands in for a binlog dump connection (same interface as BinlogConnection): it
serves events from a position, and can drop the connection at a chosen event, so that the
reader's resume-and-skip logic is exercised at exact points.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest

from replicator.errors import SourceConnectionError, SourceError
from replicator.events import ChangeEvent, Heartbeat, Op, StreamItem, TableId, TxCommit
from replicator.sources.mysql import tables
from replicator.sources.mysql.binlog import (
    BinlogTable,
    Event,
    Gtid,
    Header,
    Query,
    Rotate,
    Rows,
    Xid,
)
from replicator.sources.mysql.columns import TypeOptions
from replicator.sources.mysql.position import GtidState, MysqlPosition
from replicator.sources.mysql.reader import BinlogReader
from replicator.sources.mysql.rows import LONG, BinlogColumn

TABLE = BinlogTable(
    7,
    "shop",
    "t",
    (BinlogColumn("id", LONG, nullable=False), BinlogColumn("n", LONG)),
    ("id",),
)
OPTIONS = TypeOptions()


def rows_data(*rows: tuple[int, int]) -> bytes:
    """Row images of the (id, n) table: a null bitmap, then two little-endian ints."""
    return b"".join(b"\x00" + struct.pack("<ii", *row) for row in rows)


class ScriptedBinlog:
    """Serves a list of events like a dump connection; drops it before chosen events."""

    def __init__(self, file: str, events: list[Event], cut_before: set[int] | None = None):
        self.file = file
        self.events = events
        self.cut_before = set(cut_before or ())
        self.opened: list[tuple[MysqlPosition, bool]] = []
        self._next: int | None = None

    def open(self, start: MysqlPosition, *, by_gtid: bool, wanted: Any) -> None:
        self.opened.append((start, by_gtid))
        if by_gtid:
            done = {g.strip() for g in (start.gtid or "").split(",") if g.strip()}
            first = next(
                i
                for i, e in enumerate(self.events)
                if isinstance(e, Gtid) and e.gtid not in done and not _seen(e.gtid, done)
            )
        else:
            first = next(i for i, e in enumerate(self.events) if e.header.start >= start.pos)
        self._next = first
        # A dump starts with an artificial rotate naming the file.
        self._pending_rotate = True

    def pending(self) -> bool:
        return False

    def read(self, timeout: float) -> Event | None:
        if self._next is None:
            raise SourceConnectionError("the binlog connection is closed")
        if self._pending_rotate:
            self._pending_rotate = False
            return Rotate(Header(0, 4, 0, 0, 0x20), self.file, 4)
        if self._next in self.cut_before:
            self.cut_before.discard(self._next)
            self._next = None
            raise SourceConnectionError("connection reset")
        if self._next >= len(self.events):
            time.sleep(min(timeout, 0.01))
            return None
        event = self.events[self._next]
        self._next += 1
        return event

    def close(self) -> None:
        self._next = None


def _seen(gtid: str | None, done: set[str]) -> bool:
    """Whether a MariaDB position (one GTID per domain) covers ``gtid``."""
    if gtid is None:
        return False
    domain, server, seq = gtid.split("-")
    for position in done:
        d, _, s = position.split("-")
        if d == domain and int(s) >= int(seq):
            return True
    return False


class Script:
    """Builds a binlog of MariaDB-style transactions with consecutive positions."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.pos = 256
        self.seq = 0

    def _header(self, kind: int, size: int = 50) -> Header:
        self.pos += size
        return Header(1_700_000_000, kind, size, self.pos, 0)

    def transaction(self, *row_events: tuple[str, list[tuple[int, int]]]) -> None:
        self.seq += 1
        self.events.append(Gtid(self._header(0xA2), f"0-1-{self.seq}", True))
        for kind, rows in row_events:
            per_row = [r for pair in rows for r in ([pair] if kind != "update" else [pair, pair])]
            data = rows_data(*per_row)
            self.events.append(Rows(self._header(0x1E, 40 + len(data)), kind, TABLE, b"\x03", data))
        self.events.append(Xid(self._header(0x10, 31)))

    def ddl(self, text: str) -> None:
        self.seq += 1
        self.events.append(Gtid(self._header(0xA2), f"0-1-{self.seq}", False))
        self.events.append(Query(self._header(0x02, 80), "shop", text))


def resolve(table: BinlogTable) -> tables.Decoding:
    return tables.logged_decoding(
        TableId(table.schema, table.name), table.columns, table.key, OPTIONS
    )


def describe(table: TableId) -> tables.Decoding | None:
    return resolve(TABLE)


def read_all(
    binlog: ScriptedBinlog, *, by_gtid: bool, commits: int | None = None, start_pos: int = 256
) -> list[StreamItem]:
    """Run the reader until it delivered ``commits`` transactions (default: one per XID in
    the script); the items it delivered, heartbeats left out."""
    start = MysqlPosition("binlog.000001", start_pos, "" if by_gtid else None)
    binlog.open(start, by_gtid=by_gtid, wanted=None)
    reader = BinlogReader(
        binlog,  # type: ignore[arg-type]
        start,
        by_gtid=by_gtid,
        gtid_state=GtidState(True, ""),
        captures=lambda schema, name: True,
        resolve=resolve,
        describe=describe,
        reconnect_timeout_s=5,
        name="test-reader",
        pipeline="test",
    )
    reader.start()
    items: list[StreamItem] = []
    expected = commits if commits is not None else sum(isinstance(e, Xid) for e in binlog.events)
    try:
        for item in reader.items():
            if isinstance(item, Heartbeat):
                continue
            items.append(item)
            if sum(isinstance(i, TxCommit) for i in items) == expected:
                break
    finally:
        reader.stop()
    return items


def summary(items: list[StreamItem]) -> list[Any]:
    """Changes as (op, id, index) and commits as their offsets."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, ChangeEvent):
            row = item.after or item.before or {}
            out.append((item.op.value, row.get("id"), item.position.index))  # type: ignore[attr-defined]
        elif isinstance(item, TxCommit):
            out.append(("commit", item.position.pos))  # type: ignore[attr-defined]
    return out


def big_transaction_script() -> Script:
    script = Script()
    script.transaction(("insert", [(1, 10)]))
    script.transaction(
        ("insert", [(2, 20), (3, 30)]),
        ("update", [(2, 21)]),
        ("insert", [(4, 40), (5, 50)]),
        ("delete", [(3, 30)]),
    )
    script.transaction(("insert", [(6, 60)]))
    return script


def expected_items(script: Script) -> list[Any]:
    return summary(read_all(ScriptedBinlog("binlog.000001", script.events), by_gtid=False))


@pytest.mark.parametrize("by_gtid", [False, True])
@pytest.mark.parametrize("cut", [2, 3, 4, 5, 6, 7, 8])
def test_a_cut_inside_a_transaction_neither_skips_nor_repeats(by_gtid: bool, cut: int):
    """Whichever event of a multi-event transaction the connection drops before, the reader
    resumes at the transaction's start and delivers each change exactly once, in order."""
    script = big_transaction_script()
    binlog = ScriptedBinlog("binlog.000001", script.events, cut_before={cut})
    items = read_all(binlog, by_gtid=by_gtid)
    assert summary(items) == expected_items(script)
    assert len(binlog.opened) == 2  # reconnected once
    resumed, by = binlog.opened[1]
    assert by is by_gtid
    # It came back at the start of the interrupted transaction, never inside it.
    starts = [e.header.start for e in script.events if isinstance(e, Gtid)]
    if by_gtid:
        assert resumed.gtid in ("", "0-1-1")
    else:
        assert resumed.pos in starts


def test_positions_order_events_between_their_transaction_boundaries():
    """A change's position sorts after the previous commit and before its own."""
    script = big_transaction_script()
    items = read_all(ScriptedBinlog("binlog.000001", script.events), by_gtid=False)
    keys = [i.position.order_key() for i in items if isinstance(i, (ChangeEvent, TxCommit))]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_commits_carry_the_gtid_state_after_the_transaction():
    """Each commit position records the GTID state including its own transaction."""
    script = big_transaction_script()
    items = read_all(ScriptedBinlog("binlog.000001", script.events), by_gtid=True)
    gtids = [i.position.gtid for i in items if isinstance(i, TxCommit)]  # type: ignore[attr-defined]
    assert gtids == ["0-1-1", "0-1-2", "0-1-3"]


def test_truncate_is_a_change_and_other_ddl_is_not():
    """TRUNCATE of a captured table becomes a TRUNCATE event in its own transaction; other
    DDL only moves the position."""
    script = Script()
    script.transaction(("insert", [(1, 10)]))
    script.ddl("CREATE INDEX i ON t (n)")
    script.ddl("/* tool */ TRUNCATE TABLE `shop`.`t`")
    script.transaction(("insert", [(2, 20)]))
    items = read_all(ScriptedBinlog("binlog.000001", script.events), by_gtid=False, commits=3)
    ops = [i.op for i in items if isinstance(i, ChangeEvent)]
    assert ops == [Op.INSERT, Op.TRUNCATE, Op.INSERT]
    assert sum(isinstance(i, TxCommit) for i in items) == 3


def test_an_unfinished_transaction_is_dropped_whole():
    """A transaction the binlog never finished (no XID before the next GTID) is skipped,
    not applied half."""
    script = Script()
    script.transaction(("insert", [(1, 10)]))
    script.transaction(("insert", [(2, 20)]))
    del script.events[-1]  # the server stopped before writing the XID
    script.transaction(("insert", [(3, 30)]))
    items = read_all(ScriptedBinlog("binlog.000001", script.events), by_gtid=False)
    ids = [i.after["id"] for i in items if isinstance(i, ChangeEvent) and i.after]
    assert ids == [1, 3]


def test_a_replayed_transaction_that_differs_is_refused():
    """If the binlog after a reconnect holds another transaction where the interrupted one
    was, the reader fails loudly instead of skipping rows of the wrong one."""
    script = Script()
    script.transaction(("insert", [(1, 10), (2, 20)]), ("insert", [(3, 30)]))
    binlog = ScriptedBinlog("binlog.000001", script.events, cut_before={2})
    original = list(script.events)

    def swapped_open(start: MysqlPosition, *, by_gtid: bool, wanted: Any) -> None:
        ScriptedBinlog.open(binlog, start, by_gtid=by_gtid, wanted=wanted)
        if len(binlog.opened) == 2:
            other = Gtid(original[0].header, "0-2-99", True)
            binlog.events = [other, *original[1:]]

    binlog.open = swapped_open  # type: ignore[method-assign]
    with pytest.raises(SourceError, match="no longer holds the transaction"):
        read_all(binlog, by_gtid=True)
