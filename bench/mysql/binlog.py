"""Binlog coordinates on the MariaDB source: where it is now, and what lies between two points.

A position is (file, offset) as ``SHOW MASTER STATUS`` prints it; positions order by the
file's sequence number (``binlog.000003`` → 3), then the offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

_FILE_NUMBER = re.compile(r"\.(\d+)$")
_ROW_EVENTS = ("Write_rows", "Update_rows", "Delete_rows")  # _v1, _compressed_v1, ... too


def file_number(name: str) -> int:
    """The sequence number of a binlog file name (``binlog.000042`` → 42)."""
    match = _FILE_NUMBER.search(name)
    if match is None:
        raise ValueError(f"not a binlog file name: {name!r}")
    return int(match.group(1))


@dataclass(frozen=True)
class BinlogPosition:
    """A point in the source's binary log."""

    file: str
    pos: int

    @property
    def key(self) -> tuple[int, int]:
        """What positions are ordered by: (file number, offset)."""
        return file_number(self.file), self.pos

    def reached(self, goal: BinlogPosition) -> bool:
        """Whether this position is at or after ``goal``."""
        return self.key >= goal.key

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


def master_position(conn: pymysql.connections.Connection[Any]) -> BinlogPosition:
    """``SHOW MASTER STATUS``: where the next event will be written."""
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    if row is None:
        raise ValueError("SHOW MASTER STATUS returned nothing: the server writes no binlog")
    return BinlogPosition(str(row[0]), int(row[1]))


@dataclass(frozen=True)
class BinlogRange:
    """What the binlog holds between two positions."""

    row_events: int
    """Write/Update/Delete rows events (sysbench changes one row per statement)."""
    last_row_event_end: BinlogPosition | None
    """Where the last rows event ends: the start of its transaction's final XID event."""
    events: int


def scan(
    conn: pymysql.connections.Connection[Any], start: BinlogPosition, end: BinlogPosition
) -> BinlogRange:
    """Walk ``SHOW BINLOG EVENTS`` from ``start`` (an event boundary) up to ``end``.

    Unbuffered: the rows stream through, so a few million events need no memory.
    """
    with conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        files = [str(row[0]) for row in cur.fetchall()]
    files = [
        name
        for name in files
        if file_number(start.file) <= file_number(name) <= file_number(end.file)
    ]
    row_events = 0
    events = 0
    last: BinlogPosition | None = None
    for name in files:
        offset = start.pos if name == start.file else 4
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute("SHOW BINLOG EVENTS IN %s FROM %s", (name, offset))
            # Log_name, Pos, Event_type, Server_id, End_log_pos, Info
            for _log, _pos, event_type, _server, end_pos, _info in cur:
                if name == end.file and int(end_pos) > end.pos:
                    continue  # written after `end`: drain the cursor, do not count it
                events += 1
                if str(event_type).startswith(_ROW_EVENTS):
                    row_events += 1
                    last = BinlogPosition(name, int(end_pos))
    return BinlogRange(row_events=row_events, last_row_event_end=last, events=events)
