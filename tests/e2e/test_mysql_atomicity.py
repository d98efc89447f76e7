"""MariaDB transactions are never half-visible in the target, across crashes and chunks."""

from __future__ import annotations

import random
import signal
import threading
import time

import psycopg
import pytest

from tests.mariadb import MysqlDatabase, connect
from tests.mysql_compare import assert_same_tables
from tests.mysql_helpers import mysql_pipeline_dict, wait_caught_up
from tests.support import snapshot_done, spawn_run, wait_for, write_config

ACCOUNTS = 200
TOTAL = ACCOUNTS * 1000


class Sampler(threading.Thread):
    """Reads the target again and again; every snapshot must keep the source's invariants:
    the balances' total, each order's line count, one event per order."""

    def __init__(self, dsn: str, main: str, other: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.main = main
        self.other = other
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._sample_until_stopped()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _sample_until_stopped(self) -> None:
        main, other = self.main, self.other
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                exists = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL"
                    " AND to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                    (
                        f'"{main}".accounts',
                        f'"{main}".order_lines',
                        f'"{main}".events',
                        f'"{other}".orders',
                    ),
                ).fetchone()
                if not (exists and exists[0]):
                    time.sleep(0.05)  # the target tables appear with the snapshot
                    continue
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    balances = conn.execute(
                        f'SELECT count(*), coalesce(sum(balance), 0) FROM "{main}".accounts'
                    ).fetchone()
                    short = conn.execute(
                        f'SELECT o.id, o.line_count, count(l.*) FROM "{other}".orders o'
                        f' LEFT JOIN "{main}".order_lines l ON l.order_id = o.id'
                        " GROUP BY o.id, o.line_count HAVING o.line_count <> count(l.*)"
                    ).fetchall()
                    stray = conn.execute(
                        f'SELECT count(*) FROM "{main}".order_lines l WHERE NOT EXISTS'
                        f' (SELECT 1 FROM "{other}".orders o WHERE o.id = l.order_id)'
                    ).fetchone()
                    counts = conn.execute(
                        f'SELECT (SELECT count(*) FROM "{other}".orders),'
                        f' (SELECT count(*) FROM "{main}".events)'
                    ).fetchone()
                assert balances is not None and stray is not None and counts is not None
                if balances[0] and (balances[0] != ACCOUNTS or balances[1] != TOTAL):
                    self.violations.append(f"accounts (count, sum): {balances}")
                if short:
                    self.violations.append(f"orders with missing lines: {short[:3]}")
                if stray[0]:
                    self.violations.append(f"{stray[0]} order lines without their order")
                if counts[0] != counts[1]:
                    self.violations.append(f"orders {counts[0]} but order events {counts[1]}")
                self.samples += 1


@pytest.mark.slow
@pytest.mark.parametrize("position", ["gtid", "file"])
def test_no_half_transaction_is_ever_visible(
    mysql_database: MysqlDatabase, target_dsn: str, tmp_path, position: str
):
    """Transfers keep the total, orders (in another database) keep their line count and one
    event each, in every target snapshot, while the engine is killed and restarted."""
    rnd = random.Random(7)
    db = mysql_database
    main, other = db.name, db.name + "_x"
    db.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
    db.execute("CREATE TABLE order_lines (order_id INT, line INT, PRIMARY KEY (order_id, line))")
    db.execute("CREATE TABLE events (what VARCHAR(20))")  # keyless: duplicates would show
    db.execute(f"CREATE DATABASE `{other}`")
    try:
        db.execute(f"CREATE TABLE `{other}`.orders (id INT PRIMARY KEY, line_count INT NOT NULL)")
        db.execute(f"INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_{ACCOUNTS}")
        config = write_config(
            tmp_path / "c.yaml",
            mysql_pipeline_dict(
                "atomic", db.dsn, target_dsn, [f"{main}.*", f"{other}.*"], position, max_events=300
            ),
        )
        log = tmp_path / "run.log"
        engine = spawn_run(config, log)
        sampler = Sampler(target_dsn, main, other)
        sampler.start()
        kills = 0
        try:
            wait_for(lambda: snapshot_done(target_dsn, "atomic", 4), 60, "the snapshot")
            next_kill = time.monotonic() + rnd.uniform(1, 3)
            deadline = time.monotonic() + 20
            order = 0
            with connect(db.dsn, autocommit=False) as conn, conn.cursor() as cur:
                while time.monotonic() < deadline:
                    order += 1
                    for _ in range(rnd.randint(1, 10)):
                        a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
                        amount = rnd.randint(1, 50)
                        cur.execute(
                            "UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, a)
                        )
                        cur.execute(
                            "UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, b)
                        )
                    # Some orders are larger than a batch (300 events): applied in chunks.
                    lines = rnd.choices([1, 5, 50, 800, 3000], [30, 30, 25, 10, 5])[0]
                    cur.execute(f"INSERT INTO `{other}`.orders VALUES (%s, %s)", (order, lines))
                    cur.execute(
                        f"INSERT INTO order_lines SELECT %s, seq FROM seq_1_to_{lines}", (order,)
                    )
                    cur.execute("INSERT INTO events VALUES ('order placed')")
                    if rnd.random() < 0.1:
                        conn.rollback()  # never visible
                    else:
                        conn.commit()
                    time.sleep(0.02)
                    if time.monotonic() > next_kill and kills < 5:
                        engine.send_signal(signal.SIGKILL)
                        engine.wait(10)
                        kills += 1
                        engine = spawn_run(config, log)
                        next_kill = time.monotonic() + rnd.uniform(1, 3)
            wait_caught_up(db.server, target_dsn, "atomic", timeout=120)
        finally:
            sampler.stop.set()
            sampler.join(10)
            if engine.poll() is None:
                engine.send_signal(signal.SIGTERM)
                assert engine.wait(60) == 0, log.read_text()[-3000:]
        assert sampler.error is None, sampler.error
        assert kills >= 3
        assert sampler.samples > 20
        assert not sampler.violations, sampler.violations[:5]
        assert_same_tables(
            db.dsn,
            target_dsn,
            [f"{main}.accounts", f"{main}.order_lines", f"{main}.events", f"{other}.orders"],
        )
        assert "Traceback" not in log.read_text()
    finally:
        db.execute(f"DROP DATABASE IF EXISTS `{other}`")
