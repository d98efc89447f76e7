"""PostgreSQL → watcher → Kafka → a group of syncers → PostgreSQL, as a user runs it, with a
syncer and the watcher killed with SIGKILL mid-stream."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import (
    assert_same_rows,
    connect,
    execute,
    reap,
    run_cli,
    wait_for,
    write_config,
)

TABLES = ("public.orders", "public.lines")
SCHEMA = (
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12,2),"
    " note text, v int NOT NULL DEFAULT 0, updated timestamptz DEFAULT now())",
    "CREATE TABLE lines (order_id bigint, line_no int, qty int, sku text,"
    " PRIMARY KEY (order_id, line_no))",
)


class ShopWorkload:
    """Random inserts, updates, key changes and deletes in small transactions."""

    def __init__(self, dsn: str, seed: int) -> None:
        self._dsn = dsn
        self._rnd = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.transactions = 0
        self.error: BaseException | None = None

    def seed_rows(self, count: int) -> None:
        """Rows present before the watcher starts (copied by its snapshot)."""
        execute(
            self._dsn,
            "INSERT INTO orders (id, customer, amount, note)"
            f" SELECT g, g % 50, g * 1.25, 'order ' || g FROM generate_series(1, {count}) g",
            "INSERT INTO lines SELECT g, l, l * 2, 'sku-' || l"
            f" FROM generate_series(1, {count}) g, generate_series(1, 2) l",
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        try:
            with connect(self._dsn) as conn:
                while not self._stop.is_set():
                    with conn.transaction():
                        for _ in range(self._rnd.randint(1, 5)):
                            self._statement(conn)
                    self.transactions += 1
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def _statement(self, conn: psycopg.Connection[Any]) -> None:
        rnd = self._rnd
        order = rnd.randint(1, 3000)
        kind = rnd.random()
        if kind < 0.35:
            conn.execute(
                "INSERT INTO orders (id, customer, amount, note) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET v = orders.v + 1",
                (order, rnd.randint(1, 50), rnd.randint(1, 10**6) / 100, f"n{rnd.random()}"),
            )
        elif kind < 0.7:
            conn.execute(
                "UPDATE orders SET v = v + 1, amount = %s, updated = now() WHERE id = %s",
                (rnd.randint(1, 10**6) / 100, order),
            )
        elif kind < 0.8:
            conn.execute("DELETE FROM orders WHERE id = %s", (order,))
        elif kind < 0.9:
            conn.execute(
                "INSERT INTO lines VALUES (%s, %s, %s, 'x') ON CONFLICT DO NOTHING",
                (order, rnd.randint(1, 4), rnd.randint(1, 9)),
            )
        elif kind < 0.95:
            # A primary-key change: Debezium's delete, tombstone, create.
            conn.execute(
                "UPDATE lines SET line_no = -line_no WHERE order_id = %s AND NOT EXISTS"
                " (SELECT 1 FROM lines o WHERE o.order_id = lines.order_id"
                " AND o.line_no = -lines.line_no)",
                (order,),
            )
        else:
            conn.execute("DELETE FROM lines WHERE order_id = %s", (order,))


def _config(tmp_path: Path, source_dsn: str, target_dsn: str, bootstrap: str, prefix: str) -> Path:
    return write_config(
        tmp_path / "replicator.yaml",
        {
            "name": "shop-watch",
            "source": {"type": "postgres", "dsn": source_dsn, "tables": ["public.*"]},
            "sink": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topic_prefix": prefix,
                "partitions": 3,
            },
            "checkpoint": {"type": "file", "dir": str(tmp_path / "state")},
            "batch": {"max_age_ms": 100},
        },
        {
            "name": "shop-sync",
            "source": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topics": f"^{prefix}\\..*",
                "group": f"{prefix}-sync",
            },
            "sink": {"type": "postgres", "dsn": target_dsn},
            "batch": {"max_age_ms": 100},
        },
    )


def _spawn(config: Path, pipeline: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*_cmd(), "run", "-c", str(config), "-p", pipeline], stdout=out, stderr=out
        )


def _cmd() -> list[str]:
    from tests.support import replicator_cmd

    return replicator_cmd()


def _converged(source_dsn: str, target_dsn: str) -> bool:
    try:
        assert_same_rows(source_dsn, target_dsn, *TABLES)
    except (AssertionError, psycopg.errors.UndefinedTable):
        return False
    return True


@pytest.mark.slow
def test_watcher_and_syncer_group_survive_sigkill(
    source_dsn, target_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """Existing rows are copied, then streamed under load through Kafka to two syncers of one
    group; SIGKILL one syncer and then the watcher mid-stream, restart the watcher, and the
    target still ends equal to the source, row by row; SIGTERM then leaves cleanly."""
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed={seed}")
    execute(source_dsn, *SCHEMA)
    workload = ShopWorkload(source_dsn, seed)
    workload.seed_rows(1500)
    config = _config(
        tmp_path, source_dsn, target_dsn, kafka_broker.bootstrap_servers, kafka_topic_prefix
    )
    log = tmp_path / "engines.log"
    watcher = _spawn(config, "shop-watch", log)
    syncers = [_spawn(config, "shop-sync", log) for _ in range(2)]
    engines = [watcher, *syncers]
    try:
        workload.start()
        time.sleep(6)
        syncers[0].send_signal(signal.SIGKILL)  # its partitions move to the other syncer
        syncers[0].wait(10)
        time.sleep(4)
        watcher.send_signal(signal.SIGKILL)  # resumes from its last acknowledged checkpoint
        watcher.wait(10)
        time.sleep(1)
        watcher = _spawn(config, "shop-watch", log)
        engines.append(watcher)
        time.sleep(5)
        workload.stop()
        assert workload.transactions > 100
        try:
            wait_for(
                lambda: _converged(source_dsn, target_dsn),
                timeout=120,
                what="the target to equal the source",
            )
        finally:
            print(log.read_text()[-6000:])
        assert_same_rows(source_dsn, target_dsn, *TABLES)
        for engine in (watcher, syncers[1]):
            assert engine.poll() is None, log.read_text()[-3000:]
        started = time.monotonic()
        for engine in (watcher, syncers[1]):
            engine.send_signal(signal.SIGTERM)
        for engine in (watcher, syncers[1]):
            assert engine.wait(30) == 0, log.read_text()[-3000:]
        assert time.monotonic() - started < 20
        status = run_cli("status", "-c", str(config), "--json")
        assert status.returncode == 0, status.stderr
        reports = {r["pipeline"]: r for r in json.loads(status.stdout)}
        assert reports["shop-sync"]["lag_messages"] == 0
        assert reports["shop-watch"]["checkpoint"] and reports["shop-sync"]["rows_inserted"]
        assert "password" not in status.stdout
    finally:
        for engine in engines:
            reap(engine)
