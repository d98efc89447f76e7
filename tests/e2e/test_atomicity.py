"""Source transactions are never half-visible in the target, even across crashes and chunks."""

from __future__ import annotations

import random
import signal
import threading
import time

import psycopg
import pytest

from tests.support import (
    assert_same_rows,
    checkpoint_lsn,
    pipeline_dict,
    slot_lsn,
    spawn_run,
    wait_caught_up,
    wait_for,
    write_config,
)

ACCOUNTS = 200
TOTAL = ACCOUNTS * 1000


class Sampler(threading.Thread):
    """Reads the target again and again; every snapshot must keep the source's invariant."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                exists = conn.execute("SELECT to_regclass('order_lines') IS NOT NULL").fetchone()
                if not (exists and exists[0]):
                    time.sleep(0.05)  # the target tables appear with their first change
                    continue
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    row = conn.execute(
                        "SELECT count(*), coalesce(sum(balance), 0) FROM accounts"
                    ).fetchone()
                    lines = conn.execute(
                        "SELECT o.id, o.line_count, count(l.*) FROM orders o"
                        " LEFT JOIN order_lines l ON l.order_id = o.id"
                        " GROUP BY o.id, o.line_count HAVING o.line_count <> count(l.*)"
                    ).fetchall()
                assert row is not None
                if row[0] and (row[0] != ACCOUNTS or row[1] != TOTAL):
                    self.violations.append(f"accounts: {row}")
                if lines:
                    self.violations.append(f"orders with missing lines: {lines[:3]}")
                self.samples += 1


@pytest.mark.slow
def test_no_half_transaction_is_ever_visible(source_dsn, target_dsn, tmp_path):
    """Transfers keep the total and orders keep their line count in every target snapshot."""
    rnd = random.Random(7)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, line_count int NOT NULL)")
        conn.execute(
            "CREATE TABLE order_lines (order_id int, line int, PRIMARY KEY (order_id, line))"
        )
        conn.execute("CREATE TABLE events (what text)")  # keyless: duplicates would show
        conn.execute("ALTER TABLE events REPLICA IDENTITY FULL")
    config = write_config(
        tmp_path / "c.yaml",
        pipeline_dict("atomic", source_dsn, target_dsn, batch={"max_events": 300}),
    )
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    wait_for(lambda: checkpoint_lsn(target_dsn, "atomic") > 0, 30, "the slot")
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g")
    wait_caught_up(source_dsn, target_dsn, "atomic")
    sampler = Sampler(target_dsn)
    sampler.start()
    kills = 0
    next_kill = time.monotonic() + rnd.uniform(1, 3)
    try:
        deadline = time.monotonic() + 10
        order = 0
        with psycopg.connect(source_dsn) as conn:
            while time.monotonic() < deadline:
                order += 1
                with conn.transaction():
                    for _ in range(rnd.randint(1, 10)):
                        a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
                        amount = rnd.randint(1, 50)
                        conn.execute(
                            "UPDATE accounts SET balance = balance + %s WHERE id = %s",
                            (amount, a),
                        )
                        conn.execute(
                            "UPDATE accounts SET balance = balance - %s WHERE id = %s",
                            (amount, b),
                        )
                    # Some orders are larger than a batch (300 events): applied in chunks.
                    lines = rnd.choice([1, 5, 50, 800])
                    conn.execute("INSERT INTO orders VALUES (%s, %s)", (order, lines))
                    conn.execute(
                        "INSERT INTO order_lines SELECT %s, g FROM generate_series(1, %s) g",
                        (order, lines),
                    )
                    conn.execute("INSERT INTO events VALUES ('order placed')")
                if time.monotonic() > next_kill and kills < 5:
                    engine.send_signal(signal.SIGKILL)
                    engine.wait(10)
                    assert slot_lsn(source_dsn, "replicator_atomic") <= checkpoint_lsn(
                        target_dsn, "atomic"
                    )
                    kills += 1
                    engine = spawn_run(config, log)
                    next_kill = time.monotonic() + rnd.uniform(1, 3)
        wait_caught_up(source_dsn, target_dsn, "atomic", timeout=120)
    finally:
        sampler.stop.set()
        sampler.join(10)
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
            assert engine.wait(60) == 0
    assert kills >= 3
    assert sampler.samples > 20
    assert not sampler.violations, sampler.violations[:5]
    assert_same_rows(source_dsn, target_dsn, "accounts", "orders", "order_lines", "events")
