"""The table, the load that fills it, and what the benchmark reads back from each target.

One table, ``public.events``: a ``bigint`` key from a sequence, the row's insert time
(``clock_timestamp()``, so every row has its own) and 160 characters of text, ~200 bytes a
row. Rows are written by PL/pgSQL procedures in the source, one INSERT and one COMMIT per
row, so the WAL holds one transaction per row without a client round trip per row; the load
sessions use ``synchronous_commit = off`` (the WAL is flushed by the WAL writer, and by a
CHECKPOINT before anything is timed). A single session writes them, so the keys are in
commit order: the newest row of a target by key is the newest one it applied.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.db import BenchError, Row, connect, parse_lsn

TABLE = "public.events"
"""The one table, schema-qualified as Replicator's config and the topics name it."""

_SOURCE_DDL = """
CREATE SEQUENCE public.events_id_seq;
CREATE TABLE public.events (
    id bigint PRIMARY KEY DEFAULT nextval('public.events_id_seq'),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload text NOT NULL
);
ALTER SEQUENCE public.events_id_seq OWNED BY public.events.id;

-- n single-row transactions, as fast as one session goes.
CREATE PROCEDURE public.bench_load(n bigint) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO public.events (payload) VALUES (repeat(md5(random()::text), 5));
        COMMIT;
    END LOOP;
END $$;

-- n single-row transactions at `rate` per second: every 50 rows it sleeps as long as it is
-- ahead of the schedule (a row it falls behind on is written as soon as it can be).
CREATE PROCEDURE public.bench_live(n bigint, rate double precision) LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    ahead double precision;
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO public.events (payload) VALUES (repeat(md5(random()::text), 5));
        COMMIT;
        IF i % 50 = 0 THEN
            ahead := i / rate - extract(epoch FROM clock_timestamp() - started);
            IF ahead > 0.001 THEN
                PERFORM pg_sleep(ahead);
            END IF;
        END IF;
    END LOOP;
END $$;
"""

# The same columns without the defaults: targets get every value from the source.
_TARGET_DDL = """
CREATE TABLE public.events (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    payload text NOT NULL
)
"""


def prepare_source(dsn: str) -> None:
    """Create the table, its sequence and the two load procedures in the source."""
    with connect(dsn) as conn:
        conn.execute(_SOURCE_DDL)


def prepare_target(dsn: str) -> None:
    """Create the table in a target (a syncer without schemas, and a subscription, need it)."""
    with connect(dsn) as conn:
        conn.execute(_TARGET_DDL)


def _load_session(dsn: str) -> psycopg.Connection[Row]:
    conn = connect(dsn)
    conn.execute("SET synchronous_commit = off")
    return conn


@dataclass(frozen=True)
class LoadResult:
    """What a load wrote: transactions (from the transaction ids it used) and WAL."""

    rows: int
    seconds: float
    transactions: int
    wal_bytes: int
    end_lsn: int

    @property
    def rate(self) -> float:
        """Rows (= transactions) per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def load(dsn: str, rows: int) -> LoadResult:
    """Write ``rows`` single-row transactions in one session, as fast as it goes."""
    with _load_session(dsn) as conn:
        xid_before, lsn_before = _xid_and_lsn(conn)
        started = time.monotonic()
        conn.execute("CALL public.bench_load(%s)", (rows,))
        seconds = time.monotonic() - started
        xid_after, lsn_after = _xid_and_lsn(conn)
    return LoadResult(
        rows=rows,
        seconds=seconds,
        transactions=xid_after - xid_before - 1,  # the second reading used one id itself
        wal_bytes=lsn_after - lsn_before,
        end_lsn=lsn_after,
    )


def _xid_and_lsn(conn: psycopg.Connection[Row]) -> tuple[int, int]:
    row = conn.execute("SELECT pg_current_xact_id()::text::bigint, pg_current_wal_lsn()::text")
    xid, lsn = row.fetchone() or (0, "0/0")
    return int(xid), parse_lsn(str(lsn))


class LiveLoad:
    """``bench_live`` in a thread: ``rows`` single-row transactions at ``rate`` per second."""

    def __init__(self, dsn: str, rows: int, rate: float) -> None:
        """Describe the load; ``start`` runs it."""
        self.dsn = dsn
        self.rows = rows
        self.rate = rate
        self.started_at = datetime.now(UTC)
        self.seconds: float | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-live-load", daemon=True)

    def start(self) -> None:
        """Start writing; ``started_at`` is the wall-clock time just before the first row."""
        self.started_at = datetime.now(UTC)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether rows are still being written."""
        return self._thread.is_alive()

    def join(self, timeout: float) -> float:
        """Wait for the end; return the seconds the load took (raise if it failed)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BenchError(f"the live load did not end within {timeout:g}s")
        if self._error is not None:
            raise BenchError(f"the live load failed: {self._error}")
        assert self.seconds is not None
        return self.seconds

    def _run(self) -> None:
        try:
            with _load_session(self.dsn) as conn:
                started = time.monotonic()
                conn.execute("CALL public.bench_live(%s, %s)", (self.rows, self.rate))
                self.seconds = time.monotonic() - started
        except BaseException as exc:  # reported by join(), in the main thread
            self._error = exc


@dataclass(frozen=True)
class Fingerprint:
    """A table's row count, the sum of a 64-bit hash of every row's text, and its top key."""

    rows: int
    hash_sum: str
    max_id: int


def fingerprint(dsn: str) -> Fingerprint:
    """The table's fingerprint; two tables with the same one hold the same rows (the
    connection pins DateStyle and TimeZone, so a row's text is the same on every server)."""
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0),"
            " coalesce(max(id), 0) FROM public.events t"
        ).fetchone()
    assert row is not None
    return Fingerprint(rows=int(row[0]), hash_sum=str(row[1]), max_id=int(row[2]))


def row_size(dsn: str) -> float:
    """Average bytes per row as stored (``pg_column_size`` of the whole row)."""
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(avg(pg_column_size(t.*)), 0) FROM"
            " (SELECT * FROM public.events LIMIT 10000) t"
        ).fetchone()
    return round(float(row[0]) if row else 0.0, 1)


class TargetProgress:
    """Whether a target holds every source row, checked cheaply while it is far from it.

    The keys come from a sequence in commit order, so the target's top key (one index
    lookup) is polled until it reaches the source's; only then is ``count(*)`` run (a scan
    of the table), at most every ``count_spacing`` seconds, until it equals the source's.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Row],
        rows: int,
        max_id: int,
        count_spacing: float = 0.2,
    ) -> None:
        """``conn``: an open connection to the target; ``rows``, ``max_id``: the source's."""
        self.conn = conn
        self.rows = rows
        self.max_id = max_id
        self.count_spacing = count_spacing
        self.timeline: list[tuple[float, int]] = []  # (seconds, top key) every sample
        self._top_reached = False
        self._last_count = 0.0
        self._last_sample = 0.0
        # A scan per count would otherwise start parallel workers on two cores.
        conn.execute("SET max_parallel_workers_per_gather = 0")

    def top_key(self) -> int:
        """The target's highest key (0 while it is empty)."""
        row = self.conn.execute("SELECT coalesce(max(id), 0) FROM public.events").fetchone()
        return int(row[0]) if row else 0

    def sample(self, elapsed: float, spacing: float = 0.5) -> None:
        """Note the top key in ``timeline`` (for the rate over time), every ``spacing`` s."""
        if not self.timeline or elapsed - self._last_sample >= spacing:
            self._last_sample = elapsed
            self.timeline.append((round(elapsed, 3), self.top_key()))

    def complete(self) -> bool:
        """Whether the target holds exactly the source's number of rows."""
        if not self._top_reached:
            self._top_reached = self.top_key() >= self.max_id
            if not self._top_reached:
                return False
        if time.monotonic() - self._last_count < self.count_spacing:
            return False
        self._last_count = time.monotonic()
        row = self.conn.execute("SELECT count(*) FROM public.events").fetchone()
        return row is not None and int(row[0]) >= self.rows


def lag_seconds(conn: psycopg.Connection[Row], since: datetime) -> float | None:
    """How far a target trails now: now minus the insert time of its newest row.

    ``since`` is when the live load began: before its first row arrives, the target trails
    by the time since then (its newest row is older, but it was not waiting for anything).
    """
    row = conn.execute(
        "SELECT extract(epoch FROM clock_timestamp() - greatest(created_at, %s))::float8"
        " FROM public.events ORDER BY id DESC LIMIT 1",
        (since,),
    ).fetchone()
    return None if row is None else float(row[0])


def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of ``values`` (linear between the two nearest), or None."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def lag_summary(samples: list[float]) -> dict[str, Any]:
    """p50, p95, p99 and the maximum of lag samples, in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "samples": len(samples),
        "p50_ms": ms(percentile(samples, 0.50)),
        "p95_ms": ms(percentile(samples, 0.95)),
        "p99_ms": ms(percentile(samples, 0.99)),
        "max_ms": ms(max(samples) if samples else None),
    }
