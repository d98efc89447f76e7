"""A seeded random workload over a varied schema, for crash tests and benchmarks.

The schema covers every type the PostgreSQL source promises to decode, composite keys, wide
rows with TOASTed text, a table without a primary key (REPLICA IDENTITY FULL, duplicates
allowed), two schemas and a partitioned table. Transactions mix inserts, updates (some of
TOASTed rows' other columns only), primary-key changes, deletes, truncates and rollbacks.
Every row carries ``v``, incremented on each update, so regressions would show.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS sales;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'très content');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    owner text NOT NULL,
    balance numeric(14, 2),
    v bigint NOT NULL DEFAULT 0,
    active boolean,
    ratio double precision,
    small real,
    tiny smallint,
    feeling mood,
    rank positive_int,
    tags text[],
    scores integer[],
    moods mood[],
    meta jsonb,
    raw json,
    token uuid,
    blob bytea,
    born date,
    alarm time,
    alarm_tz timetz,
    seen timestamp,
    seen_tz timestamptz,
    span interval,
    code char(4),
    label varchar(40),
    bio text
);
ALTER TABLE accounts ALTER COLUMN bio SET STORAGE EXTERNAL;
CREATE TABLE sales.order_lines (
    order_id int,
    line int,
    sku text,
    price numeric,
    v bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE audit_log (who text, what text, n int);
ALTER TABLE audit_log REPLICA IDENTITY FULL;
CREATE TABLE sales.readings (id int, day date, value float8, v bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE sales.readings_a PARTITION OF sales.readings
    FOR VALUES FROM ('2000-01-01') TO ('2025-01-01');
CREATE TABLE sales.readings_b PARTITION OF sales.readings
    FOR VALUES FROM ('2025-01-01') TO ('2100-01-01');
"""

TABLES = ["accounts", "sales.order_lines", "audit_log", "sales.readings"]

_SPECIAL_FLOATS = ["'NaN'", "'Infinity'", "'-Infinity'", "0.1", "-0.0", "1e300", "3.14159"]
_REALS = ["1.5", "NULL", "'NaN'", "'-Infinity'"]
_SPECIAL_NUMERIC = ["'NaN'", "0.01", "-12345678901.99", "0", "NULL"]
_TIMESTAMPS = [
    "'infinity'",
    "'-infinity'",
    "'2024-02-29 12:34:56.789012'",
    "'0044-03-15 12:00:00 BC'",
    "'9999-12-31 23:59:59'",
    "now()",
    "NULL",
]
_DATES = ["'infinity'", "'2000-01-01'", "'0001-01-01 BC'", "'2024-02-29'", "NULL"]
_INTERVALS = ["'1 year 2 mons -3 days 04:05:06.789'", "'-1 mons'", "'0'", "'P1M'", "NULL"]


def _value_sql(rnd: random.Random, account: int) -> str:
    """The VALUES tuple of a random accounts row (as SQL literals)."""
    bio = "NULL" if rnd.random() < 0.2 else f"repeat('bio{account} ', {rnd.randint(1, 6000)})"
    return (
        f"({account}, 'owner {account} ünïcødé ''q''', {rnd.choice(_SPECIAL_NUMERIC)}, 0,"
        f" {rnd.choice(['true', 'false', 'NULL'])}, {rnd.choice(_SPECIAL_FLOATS)},"
        f" {rnd.choice(_REALS)}::real, {rnd.randint(-32768, 32767)},"
        f" {rnd.choice(['sad', 'ok', 'happy', 'très content'])!r}, {rnd.randint(1, 99)},"
        f" ARRAY['a', 'b c', NULL, 'q\"uote', 'back\\\\slash']::text[],"
        f" '{{{{1,2}},{{3,NULL}}}}'::int[], ARRAY['ok', 'sad']::mood[],"
        f' \'{{"k": [1, 2.50, null], "s": "tab\\\\t"}}\'::jsonb,'
        f' \'{{ "spacing" :  1 , "dup": 1, "dup": 2}}\'::json, gen_random_uuid(),'
        f" '\\x00ff10'::bytea, {rnd.choice(_DATES)}, '24:00:00', '12:00:00+05:30',"
        f" {rnd.choice(_TIMESTAMPS)}, {rnd.choice(_TIMESTAMPS)}, {rnd.choice(_INTERVALS)},"
        f" 'ab', 'label {account}', {bio})"
    )


class Workload:
    """Runs random transactions against the source until stopped; seeded for replay."""

    def __init__(self, dsn: str, seed: int) -> None:
        self.dsn = dsn
        self.rnd = random.Random(seed)
        self.seed = seed
        self.next_id = 1
        self.transactions = 0
        self.rollbacks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @staticmethod
    def create_schema(dsn: str) -> None:
        """Create the workload's tables."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)

    def start(self) -> None:
        """Run transactions in a background thread."""
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait; re-raise a failure of the workload itself."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                while not self._stop.is_set():
                    self.run_transaction(conn)
                    time.sleep(self.rnd.random() * 0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def run_transaction(self, conn: psycopg.Connection[Any]) -> None:
        """One random transaction of 1-8 statements; about 5% roll back."""
        rnd = self.rnd
        try:
            with conn.transaction():
                for _ in range(rnd.randint(1, 8)):
                    self._statement(conn)
                if rnd.random() < 0.05:
                    raise _Rollback
            self.transactions += 1
        except _Rollback:
            self.rollbacks += 1

    def _statement(self, conn: psycopg.Connection[Any]) -> None:
        rnd = self.rnd
        choice = rnd.random()
        hi = max(self.next_id, 2)
        if choice < 0.25:
            ids = range(self.next_id, self.next_id + rnd.randint(1, 20))
            self.next_id = ids.stop
            conn.execute(
                "INSERT INTO accounts VALUES " + ", ".join(_value_sql(rnd, i) for i in ids)  # type: ignore[arg-type]
            )
        elif choice < 0.40:
            # Touches non-TOASTed columns only: bio is not sent and must survive.
            lo = rnd.randint(1, hi)
            conn.execute(
                "UPDATE accounts SET v = v + 1, balance = coalesce(balance, 0) + 1,"
                " tiny = (tiny + 1) %% 1000 WHERE id BETWEEN %s AND %s",
                (lo, lo + rnd.randint(0, 30)),
            )
        elif choice < 0.47:
            key = rnd.randint(1, hi)
            conn.execute(
                "UPDATE accounts SET id = id + 1000000, v = v + 1 WHERE id = %s"
                " AND NOT EXISTS (SELECT 1 FROM accounts WHERE id = %s + 1000000)",
                (key, key),
            )
        elif choice < 0.52:
            lo = rnd.randint(1, hi)
            conn.execute("DELETE FROM accounts WHERE id BETWEEN %s AND %s", (lo, lo + 3))
        elif choice < 0.62:
            order = rnd.randint(1, 200)
            conn.execute(
                "INSERT INTO sales.order_lines (order_id, line, sku, price)"
                " SELECT %s, l, 'sku-' || l, l * 1.25 FROM generate_series(1, %s) l"
                " ON CONFLICT (order_id, line) DO UPDATE SET v = sales.order_lines.v + 1,"
                " price = EXCLUDED.price + 1",
                (order, rnd.randint(1, 5)),
            )
        elif choice < 0.67:
            order = rnd.randint(1, 200)
            conn.execute(
                "UPDATE sales.order_lines SET line = line + 100, v = v + 1"
                " WHERE order_id = %s AND line < 100",
                (order,),
            )
        elif choice < 0.70:
            conn.execute(
                "DELETE FROM sales.order_lines WHERE order_id = %s", (rnd.randint(1, 200),)
            )
        elif choice < 0.80:
            who = rnd.choice(["alice", "bob", "carol"])
            conn.execute(
                "INSERT INTO audit_log SELECT %s, 'did a thing', %s FROM generate_series(1, %s)",
                (who, rnd.randint(1, 3), rnd.randint(1, 3)),
            )
        elif choice < 0.85:
            conn.execute(
                "UPDATE audit_log SET n = n + 1 WHERE ctid = (SELECT ctid FROM audit_log"
                " WHERE who = %s LIMIT 1)",
                (rnd.choice(["alice", "bob", "carol"]),),
            )
        elif choice < 0.88:
            conn.execute(
                "DELETE FROM audit_log WHERE ctid = (SELECT ctid FROM audit_log WHERE n = %s"
                " LIMIT 1)",
                (rnd.randint(1, 4),),
            )
        elif choice < 0.97:
            rid = rnd.randint(1, 300)
            day = rnd.choice(["2024-06-01", "2025-06-01"])
            conn.execute(
                "INSERT INTO sales.readings VALUES (%s, %s, %s) ON CONFLICT (id, day)"
                " DO UPDATE SET value = EXCLUDED.value, v = sales.readings.v + 1",
                (rid, day, rnd.random()),
            )
            if rnd.random() < 0.2:
                # Moves the row to the other partition (published as delete + insert).
                conn.execute(
                    "UPDATE sales.readings SET day = '2025-07-01', v = v + 1 WHERE id = %s"
                    " AND day = '2024-06-01' AND NOT EXISTS (SELECT 1 FROM sales.readings"
                    " WHERE id = %s AND day = '2025-07-01')",
                    (rid, rid),
                )
        elif choice < 0.985:
            conn.execute("TRUNCATE audit_log")
        else:
            conn.execute("TRUNCATE sales.order_lines")


class _Rollback(Exception):
    pass
