"""The binlog reader thread: binlog events → transactions of change events → bounded queue.

It groups events into the transactions the server committed (a GTID or BEGIN opens one; an
XID, COMMIT or a DDL statement closes it) and hands over only whole transactions, except
that a transaction too large for one hand-over streams through in parts (the engine then
applies it in chunks inside one target transaction). Resume points are transaction ends
only (DESIGN invariant 1).

When the connection drops it reconnects by itself, from the start of the transaction it
was reading (by GTID state, or by file and offset), and skips the change events of that
transaction it already delivered: nothing is skipped or repeated (Debezium DBZ-144 keeps
the same pair of coordinates). Reconnecting gives up after ``reconnect_timeout_s``.

Transactions that touch no captured table are not delivered, but their end positions are,
as ``Heartbeat`` items (at most one a second), so a pipeline whose tables are quiet still
checkpoints as the binlog moves on, and its place is never among purged binlogs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import tenacity

from replicator.errors import SourceConnectionError, SourceError
from replicator.events import ChangeEvent, Heartbeat, Op, StreamItem, TableId, TxCommit
from replicator.observability import errorlog
from replicator.observability.logging import get_logger
from replicator.sources.handoff import HANDOFF_BYTES, HANDOFF_ITEMS, Handoff, Stopped
from replicator.sources.mysql.binlog import (
    BinlogConnection,
    BinlogTable,
    Event,
    Gtid,
    Query,
    Rotate,
    Rows,
    Xid,
)
from replicator.sources.mysql.binlog import Heartbeat as ServerHeartbeat
from replicator.sources.mysql.position import GtidState, MysqlPosition
from replicator.sources.mysql.rows import BadValue
from replicator.sources.mysql.tables import Decoding

_READ_TIMEOUT = 0.2
_HEARTBEAT_SPACING = 1.0
_OPS = {"insert": Op.INSERT, "update": Op.UPDATE, "delete": Op.DELETE}
_TRUNCATE = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*TRUNCATE\s+(?:TABLE\s+)?"
    r"(?:(`(?:[^`]|``)+`|[\w$]+)\s*\.\s*)?(`(?:[^`]|``)+`|[\w$]+)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)

Resolve = Callable[[BinlogTable], Decoding]
"""The decoding of a logged table definition (see :mod:`.tables`)."""
Describe = Callable[[TableId], Decoding | None]
"""The current decoding of a table, for events that carry no TABLE_MAP (TRUNCATE)."""


@dataclass
class _Group:
    """The transaction being read."""

    start: MysqlPosition  # where it begins (file, offset, GTID state before it)
    gtid: str | None
    transaction: bool  # BEGIN … COMMIT; otherwise the group is one statement (DDL)
    timestamp: datetime | None
    events: int = 0  # change events taken from it so far
    handed_over: bool = False  # part of it is already in the queue
    replaying: bool = False  # being read again after a reconnect…
    skip: int = 0  # …passing over this many change events already taken
    items: list[StreamItem] = field(default_factory=list)
    size: int = 0


class BinlogReader:
    """Owns the binlog connection on a thread of its own and feeds the engine."""

    def __init__(
        self,
        connection: BinlogConnection,
        start: MysqlPosition,
        *,
        by_gtid: bool,
        gtid_state: GtidState | None,
        captures: Callable[[str, str], bool],
        resolve: Resolve,
        describe: Describe,
        reconnect_timeout_s: float,
        name: str,
        pipeline: str,
    ) -> None:
        self._conn = connection
        self._by_gtid = by_gtid
        self._gtids = gtid_state
        self._captures = captures
        self._resolve = resolve
        self._describe = describe
        self._reconnect_timeout = reconnect_timeout_s
        self._log = get_logger(pipeline=pipeline, source="mysql")
        self._pipeline = pipeline
        self._stopping = threading.Event()
        self._handoff = Handoff(self._stopping)
        self._file = start.file
        self._committed = start  # end of the last transaction read completely
        self._group: _Group | None = None
        self._ready: list[StreamItem] = []  # whole transactions not yet handed over
        self._ready_bytes = 0
        self._last_heartbeat = 0.0
        self._decodings: dict[BinlogTable, Decoding] = {}
        # Whether the server has nothing more to send right now (written by the reader
        # thread, read by the engine's: a plain bool, assigned atomically).
        self._caught_up = True
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Connect (already done by the caller) and start reading."""
        self._thread.start()

    def items(self) -> Iterator[StreamItem]:
        """Queued items in order; a ``Heartbeat()`` whenever none is ready right now (but
        not while the server is still sending: see :meth:`Handoff.items`)."""
        return self._handoff.items(busy=lambda: not self._caught_up)

    def stop(self) -> None:
        """Stop the thread and close the connection."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._conn.close()

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._ready and not self._conn.pending():
                    self._caught_up = True
                    self._hand_over()  # the socket is drained: deliver at once
                try:
                    event = self._conn.read(_READ_TIMEOUT)
                except SourceConnectionError as exc:
                    self._reconnect(exc)
                    continue
                if event is None:
                    self._caught_up = True
                else:
                    self._caught_up = isinstance(event, ServerHeartbeat)
                    self._on_event(event)
        except Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - must reach the engine thread
            failure = exc
        else:
            return
        try:
            self._hand_over()  # whole transactions read before the failure still count
            self._handoff.fail(failure)
        except Stopped:
            pass

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Rows):
            self._rows(event)
        elif isinstance(event, Xid):
            self._commit(event.header.log_pos, event.header.timestamp)
        elif isinstance(event, Gtid):
            self._open(event)
        elif isinstance(event, Query):
            self._query(event)
        elif isinstance(event, Rotate):
            self._file = event.file
        elif isinstance(event, ServerHeartbeat):
            self._file = event.file or self._file
            if self._group is None and event.header.log_pos:
                self._idle(MysqlPosition(self._file, event.header.log_pos, self._gtid_text()))

    def _gtid_text(self) -> str | None:
        return None if self._gtids is None else str(self._gtids)

    # --- transactions -----------------------------------------------------------------------

    def _open(self, event: Gtid | Query) -> None:
        header = event.header
        gtid = event.gtid if isinstance(event, Gtid) else None
        group = self._group
        if group is not None:
            if group.replaying:
                self._check_replay(group, event, gtid)
                return
            self._incomplete(group)
        start = MysqlPosition(self._file, header.start, self._gtid_text())
        timestamp = datetime.fromtimestamp(header.timestamp, UTC) if header.timestamp else None
        transaction = event.transaction if isinstance(event, Gtid) else True
        self._group = _Group(start, gtid, transaction, timestamp)

    def _check_replay(self, group: _Group, event: Gtid | Query, gtid: str | None) -> None:
        """The interrupted transaction is being read again: it must be the same one."""
        group.replaying = False
        if group.gtid is not None:
            same = gtid == group.gtid
        else:
            same = (self._file, event.header.start) == (group.start.file, group.start.pos)
        if not same:
            found = gtid or f"{self._file}:{event.header.start}"
            raise SourceError(
                "after reconnecting, the source's binlog no longer holds the transaction "
                f"that was being read at {group.start} (found {found})",
                fix="the source's binlog changed under the pipeline (a failover to a server "
                "with another history?); re-copy the tables",
            )

    def _incomplete(self, group: _Group) -> None:
        """A transaction the binlog never finished (the server stopped while writing it,
        and its recovery rolled it back): drop it, unless part of it was delivered."""
        self._group = None
        if group.handed_over:
            raise SourceError(
                f"the binlog holds an unfinished transaction at {group.start}, and part of "
                "it was already delivered",
                fix="restart the pipeline: it resumes at its checkpoint, before that "
                "transaction, and skips it whole",
            )
        if group.items:
            self._log.warning(
                "skipping an unfinished transaction in the binlog (the server stopped while "
                "writing it, and rolled it back)",
                position=str(group.start),
            )

    def _query(self, event: Query) -> None:
        word = event.text.lstrip()[:16].upper()
        group = self._group
        if word.startswith("BEGIN"):
            if group is None or group.replaying:
                self._open(event)
            else:
                group.transaction = True
            return
        if word.startswith("XA "):
            raise SourceError(
                "the source ran an XA transaction, which Replicator cannot follow (its rows "
                "are logged at XA PREPARE, before the outcome is known)",
                fix="avoid XA transactions on captured tables",
            )
        ends = word.startswith("COMMIT") or word.startswith("ROLLBACK") and " TO " not in word
        if ends:
            if group is not None and word.startswith("ROLLBACK") and group.events:
                # Only changes to non-transactional tables reach the binlog of a rolled
                # back transaction, and those were not undone.
                self._log.warning(
                    "applying the non-transactional changes of a rolled-back transaction",
                    position=str(group.start),
                )
            self._commit(event.header.log_pos, event.header.timestamp)
            return
        if group is not None and group.transaction:
            return  # SAVEPOINT and the like, inside a transaction
        if group is None:
            self._open(event)
            assert self._group is not None
            self._group.transaction = False
        self._statement(event)
        self._commit(event.header.log_pos, event.header.timestamp)

    def _statement(self, event: Query) -> None:
        """A statement outside any transaction: DDL. Only TRUNCATE changes captured rows;
        other DDL shows up in the next TABLE_MAP of the table."""
        match = _TRUNCATE.match(event.text)
        if match is None:
            return
        schema = _unquote(match.group(1)) if match.group(1) else event.schema
        table = TableId(schema, _unquote(match.group(2)))
        if not self._captures(table.schema, table.name):
            return
        decoding = self._describe(table)
        if decoding is None:
            return  # dropped since: its target table is left as it is
        group = self._group
        assert group is not None
        if group.skip > 0:
            group.skip -= 1
            return
        group.events += 1
        position = MysqlPosition(group.start.file, group.start.pos, None, group.events)
        self._add(
            group,
            ChangeEvent(Op.TRUNCATE, decoding.schema, None, None, None, position, group.timestamp),
            0,
        )

    def _commit(self, log_pos: int, timestamp: int) -> None:
        group = self._group
        if group is None:
            return  # the end of a transaction whose start was before the stream's start
        self._group = None
        if self._gtids is not None and group.gtid is not None:
            self._gtids.add(group.gtid)
        position = MysqlPosition(self._file, log_pos, self._gtid_text())
        self._committed = position
        if not group.items and not group.handed_over:
            self._idle(position)
            return
        commit_ts = datetime.fromtimestamp(timestamp, UTC) if timestamp else group.timestamp
        group.items.append(TxCommit(position, commit_ts))
        self._ready += group.items
        self._ready_bytes += group.size
        if len(self._ready) >= HANDOFF_ITEMS or self._ready_bytes >= HANDOFF_BYTES:
            self._hand_over()

    def _idle(self, position: MysqlPosition) -> None:
        """A resume point with nothing pending before it: let the engine checkpoint it."""
        now = time.monotonic()
        if now - self._last_heartbeat < _HEARTBEAT_SPACING:
            return
        if position.order_key() < self._committed.order_key():
            return
        self._last_heartbeat = now
        self._ready.append(Heartbeat(position))
        self._hand_over()

    # --- rows -------------------------------------------------------------------------------

    def _rows(self, event: Rows) -> None:
        group = self._group
        if group is None:
            raise SourceError(
                f"a row event at {self._file}:{event.header.start} is outside any transaction"
            )
        decoding = self._decodings.get(event.table)
        if decoding is None:
            decoding = self._decodings[event.table] = self._resolve(event.table)
        kind = event.kind
        per_row = 2 if kind == "update" else 1
        try:
            images = decoding.decoder.images(event.data, event.present, per_row)
        except BadValue as exc:
            raise SourceError(
                f"{decoding.schema.table}: {exc.message} (binlog {self._file}:"
                f"{event.header.start})",
                fix=exc.fix,
            ) from exc
        names = decoding.names
        key_of = decoding.key_of
        schema = decoding.schema
        size = len(event.data) // max(1, len(images) // per_row)
        file, pos = group.start.file, group.start.pos
        timestamp = group.timestamp
        op = _OPS[kind]
        # The per-row work of the whole reader: kept to plain construction, no helpers.
        # strict=False: the decoder gives one value per column, and checking costs a third.
        for i in range(0, len(images), per_row):
            if group.skip > 0:
                group.skip -= 1
                continue
            group.events += 1
            position = MysqlPosition(file, pos, None, group.events)
            if op is Op.INSERT:
                after = dict(zip(names, images[i], strict=False))
                change = ChangeEvent(
                    op, schema, key_of(images[i]), None, after, position, timestamp
                )
            elif op is Op.UPDATE:
                before = dict(zip(names, images[i], strict=False))
                after = dict(zip(names, images[i + 1], strict=False))
                keys = key_of(images[i + 1])
                change = ChangeEvent(op, schema, keys, before, after, position, timestamp)
            else:
                before = dict(zip(names, images[i], strict=False))
                change = ChangeEvent(
                    op, schema, key_of(images[i]), before, None, position, timestamp
                )
            change.size = size
            self._add(group, change, size)

    def _add(self, group: _Group, change: ChangeEvent, size: int) -> None:
        group.items.append(change)
        group.size += size
        if len(group.items) >= HANDOFF_ITEMS or group.size >= HANDOFF_BYTES:
            # Too large to wait for its end: stream it through (applied in chunks).
            self._ready += group.items
            self._ready_bytes += group.size
            group.items = []
            group.size = 0
            group.handed_over = True
            self._hand_over()

    # --- hand-over and reconnects -----------------------------------------------------------

    def _hand_over(self) -> None:
        if self._ready:
            items, size = self._ready, self._ready_bytes
            self._ready, self._ready_bytes = [], 0
            self._handoff.put(items, size)

    def _reconnect(self, error: SourceConnectionError) -> None:
        """Reconnect at the start of the interrupted transaction (or after the last one)."""
        group = self._group
        if group is not None:
            group.replaying = True
            group.skip = group.events
            resume = group.start
        else:
            resume = self._committed
        errorlog.record(self._pipeline, error, retried="binlog reconnect")
        self._log.warning(
            "lost the binlog connection; reconnecting",
            error=error.message,
            resume=str(resume),
            events_to_skip=group.skip if group is not None else 0,
        )

        def attempt() -> None:
            if self._stopping.is_set():
                raise Stopped
            self._conn.open(resume, by_gtid=self._by_gtid, wanted=self._captures)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(self._reconnect_timeout),
            wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10),
            retry=tenacity.retry_if_exception_type(SourceConnectionError),
            sleep=self._pause,
            before_sleep=lambda state: self._log.warning(
                "reconnecting failed; trying again",
                attempt=state.attempt_number,
                next_delay_s=round(state.upcoming_sleep, 1),
            ),
            reraise=True,
        )
        retrying(attempt)
        self._file = resume.file
        self.reconnects += 1
        self._log.info("reconnected to the binlog", resume=str(resume))

    def _pause(self, seconds: float) -> None:
        """Wait between reconnect attempts, cut short by a stop."""
        self._stopping.wait(seconds)


def _unquote(name: str) -> str:
    if name.startswith("`"):
        return name[1:-1].replace("``", "`")
    return name
