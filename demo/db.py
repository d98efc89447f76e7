"""Small database helpers: connections with pinned text settings, WAL positions, row dumps."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import psycopg

# The same session settings on both ends, so a value prints the same text on both servers.
_TEXT_SETTINGS = {
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}
_OPTIONS = " ".join(f"-c {name}={value}" for name, value in _TEXT_SETTINGS.items())

Conn = psycopg.Connection[tuple[Any, ...]]


def connect(dsn: str) -> Conn:
    """An autocommit connection with the demo's pinned text settings."""
    return psycopg.connect(dsn, autocommit=True, options=_OPTIONS, connect_timeout=10)


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> an integer position."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(value: int) -> str:
    """An integer position -> ``'16/B374D848'``."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def current_lsn(conn: Conn) -> int:
    """The server's current WAL write position."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


@dataclass(frozen=True)
class SlotState:
    """What ``pg_replication_slots`` says about one slot."""

    exists: bool
    active: bool
    confirmed_flush: int
    lag_bytes: int


def slot_state(conn: Conn, slot: str) -> SlotState:
    """The slot's confirmed position and how far the server's WAL is ahead of it."""
    row = conn.execute(
        "SELECT active, confirmed_flush_lsn::text,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return SlotState(exists=False, active=False, confirmed_flush=0, lag_bytes=0)
    active, confirmed, lag = row
    return SlotState(
        exists=True,
        active=bool(active),
        confirmed_flush=parse_lsn(confirmed) if confirmed else 0,
        lag_bytes=int(lag or 0),
    )


def table_rows(conn: Conn, table: str) -> list[str]:
    """Every row of ``table`` (all columns, generated ones included) as text, sorted."""
    rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()
    return sorted(row[0] for row in rows)


@dataclass(frozen=True)
class TableComparison:
    """The outcome of comparing one table row by row."""

    table: str
    source_rows: int
    target_rows: int
    missing: list[str]  # in the source, not in the target (a few examples)
    unexpected: list[str]  # in the target, not in the source (a few examples)
    missing_count: int
    unexpected_count: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The target holds exactly the source's rows."""
        return self.error is None and self.missing_count == 0 and self.unexpected_count == 0


def compare_table(source: Conn, target: Conn, table: str, examples: int = 3) -> TableComparison:
    """Compare ``table`` on both sides as multisets of row texts."""
    source_rows = table_rows(source, table)
    try:
        target_rows = table_rows(target, table)
    except psycopg.Error as exc:
        return TableComparison(
            table, len(source_rows), 0, [], [], len(source_rows), 0, error=str(exc).strip()
        )
    if source_rows == target_rows:
        return TableComparison(table, len(source_rows), len(target_rows), [], [], 0, 0)
    missing = collections.Counter(source_rows) - collections.Counter(target_rows)
    unexpected = collections.Counter(target_rows) - collections.Counter(source_rows)
    return TableComparison(
        table,
        len(source_rows),
        len(target_rows),
        sorted(missing.elements())[:examples],
        sorted(unexpected.elements())[:examples],
        sum(missing.values()),
        sum(unexpected.values()),
    )
