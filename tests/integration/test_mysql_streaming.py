"""A MariaDB source streamed into PostgreSQL: transactions, schema changes, new tables."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.errors import SchemaMismatchError
from tests.mariadb import MysqlDatabase
from tests.mysql_helpers import (
    checkpoint_order,
    mysql_pipeline_config,
    source_order,
    target_rows,
    wait_caught_up,
)
from tests.support import RunningPipeline, execute, snapshot_done, wait_for

POSITIONS = ["gtid", "file"]


def start(db: MysqlDatabase, target_dsn: str, **extra: Any) -> RunningPipeline:
    """Run a pipeline over every table of ``db`` in this process; wait until it streams."""
    config = mysql_pipeline_config("shop", db.dsn, target_dsn, [f"{db.name}.*"], **extra)
    pipeline = RunningPipeline(config)
    # Streaming, not just checkpointed: changes made while the tables are still being copied
    # land in the copy, and tests counting streamed changes would miss them.
    wait_for(
        lambda: (
            pipeline.error is not None
            or (
                checkpoint_order(target_dsn, "shop") > (0, 0)
                and pipeline.pipeline.state == "streaming"
            )
        ),
        30,
        "the pipeline to stream",
    )
    if pipeline.error is not None:
        raise pipeline.error
    return pipeline


@pytest.mark.parametrize("position", POSITIONS)
def test_transactions_arrive_whole_and_rollbacks_never(
    mysql_database: MysqlDatabase, target_dsn: str, position: str
):
    """Committed multi-statement transactions are applied, rolled-back ones and a rolled-back
    savepoint's changes never appear, and every change to a key lands in commit order."""
    db = mysql_database
    db.execute("CREATE TABLE accounts (id INT PRIMARY KEY, owner VARCHAR(20), balance INT)")
    db.execute("CREATE TABLE moves (id INT AUTO_INCREMENT PRIMARY KEY, amount INT)")
    pipeline = start(db, target_dsn, position=position)
    try:
        db.execute(
            "BEGIN; INSERT INTO accounts VALUES (1, 'ann', 100), (2, 'bob', 50);"
            " INSERT INTO moves (amount) VALUES (100), (50); COMMIT"
        )
        db.execute(
            "BEGIN; UPDATE accounts SET balance = 0; INSERT INTO moves (amount) VALUES (-1);"
            " ROLLBACK"
        )
        db.execute(
            "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1;"
            " SAVEPOINT s; UPDATE accounts SET balance = 999 WHERE id = 2; ROLLBACK TO s;"
            " UPDATE accounts SET balance = balance + 10 WHERE id = 2; COMMIT"
        )
        for i in range(20):
            db.execute(f"UPDATE accounts SET owner = 'ann{i}' WHERE id = 1")
        db.execute("UPDATE accounts SET id = 3 WHERE id = 2")  # a key change
        wait_caught_up(db.server, target_dsn, "shop")
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT * FROM {db.name}.accounts ORDER BY id") == [
        (1, "ann19", 90),
        (3, "bob", 60),
    ]
    assert target_rows(target_dsn, f"SELECT amount FROM {db.name}.moves ORDER BY id") == [
        (100,),
        (50,),
    ]


def test_a_large_transaction_is_applied_in_chunks_and_committed_once(
    mysql_database: MysqlDatabase, target_dsn: str
):
    """A 30,000-row transaction (many row events) streams through in chunks and is exact,
    with the checkpoint only at its end."""
    db = mysql_database
    db.execute("CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(40), n INT)")
    pipeline = start(db, target_dsn, max_events=1000)
    try:
        db.execute(
            "INSERT INTO items SELECT seq, CONCAT('item-', seq), seq % 7 FROM seq_1_to_30000"
        )
        db.execute("UPDATE items SET n = n + 1 WHERE id % 2 = 0")
        wait_caught_up(db.server, target_dsn, "shop", timeout=120)
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT count(*), sum(n) FROM {db.name}.items") == [
        (30000, sum(i % 7 for i in range(1, 30001)) + 15000)
    ]
    counters = pipeline.pipeline.counters
    assert counters.transactions >= 2 and counters.updated == 15000


def test_keyless_tables_change_exactly_one_of_identical_rows(
    mysql_database: MysqlDatabase, target_dsn: str
):
    """Without a key, an UPDATE or DELETE of one of several identical rows changes one."""
    db = mysql_database
    db.execute("CREATE TABLE log (who VARCHAR(10), n INT)")
    pipeline = start(db, target_dsn)
    try:
        db.execute("INSERT INTO log VALUES ('a', 1), ('a', 1), ('a', 1), ('b', 2)")
        db.execute("DELETE FROM log WHERE who = 'a' LIMIT 1")
        db.execute("UPDATE log SET n = 5 WHERE who = 'a' LIMIT 1")
        wait_caught_up(db.server, target_dsn, "shop")
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT who, n FROM {db.name}.log ORDER BY who, n") == [
        ("a", 1),
        ("a", 5),
        ("b", 2),
    ]


def test_truncate_empties_the_target_table(mysql_database: MysqlDatabase, target_dsn: str):
    """TRUNCATE TABLE (a statement in the binlog) empties the target; later rows arrive."""
    db = mysql_database
    db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    pipeline = start(db, target_dsn)
    try:
        db.execute("INSERT INTO t VALUES (3)")
        db.execute(f"TRUNCATE TABLE `{db.name}`.t")
        db.execute("INSERT INTO t VALUES (4)")
        wait_caught_up(db.server, target_dsn, "shop")
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT id FROM {db.name}.t") == [(4,)]


def test_an_added_column_stops_the_pipeline_after_the_earlier_rows(
    mysql_database: MysqlDatabase, target_dsn: str
):
    """ALTER TABLE ADD COLUMN mid-stream: rows before it are applied, then the pipeline stops
    with the ALTER to run on the target; after it, a restart resumes with the new column."""
    db = mysql_database
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, a INT)")
    config = mysql_pipeline_config("shop", db.dsn, target_dsn, [f"{db.name}.*"])
    pipeline = RunningPipeline(config)
    # Not while the table is copied (that fails the copy, to start over with the new column).
    wait_for(lambda: snapshot_done(target_dsn, "shop", 1), 30, "the snapshot")
    db.execute("INSERT INTO t VALUES (1, 10)")
    db.execute("ALTER TABLE t ADD COLUMN b VARCHAR(5) DEFAULT 'x'")
    db.execute("INSERT INTO t VALUES (2, 20, 'y')")
    error = pipeline.wait_failed(60)
    assert isinstance(error, SchemaMismatchError)
    assert "column b (character varying(5)) exists in the source but not in the target" in str(
        error
    )
    assert f"ALTER TABLE {db.name}.t ADD COLUMN b character varying(5);" in str(error)
    assert target_rows(target_dsn, f"SELECT * FROM {db.name}.t") == [(1, 10)]
    execute(target_dsn, f"ALTER TABLE {db.name}.t ADD COLUMN b character varying(5)")
    pipeline = RunningPipeline(config)
    try:
        wait_caught_up(db.server, target_dsn, "shop")
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT * FROM {db.name}.t ORDER BY id") == [
        (1, 10, None),
        (2, 20, "y"),
    ]


def test_rows_are_decoded_with_the_definition_they_were_logged_with(
    mysql_database: MysqlDatabase, target_dsn: str
):
    """Rows written before a DROP COLUMN that the pipeline reads after it are still matched
    to their own columns (from the binlog's metadata), never shifted onto others."""
    db = mysql_database
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, a INT, b VARCHAR(10), c INT)")
    config = mysql_pipeline_config("shop", db.dsn, target_dsn, [f"{db.name}.*"])
    pipeline = RunningPipeline(config)
    wait_for(lambda: checkpoint_order(target_dsn, "shop") > (0, 0), 30, "the start")
    db.execute("INSERT INTO t VALUES (1, 10, 'one', 100)")
    wait_caught_up(db.server, target_dsn, "shop")
    pipeline.stop()
    # While the pipeline is stopped: a row with all columns, then the column goes.
    db.execute("INSERT INTO t VALUES (2, 20, 'two', 200)")
    db.execute("ALTER TABLE t DROP COLUMN b")
    db.execute("INSERT INTO t VALUES (3, 30, 300)")
    pipeline = RunningPipeline(config)
    error = pipeline.wait_failed(60)
    assert isinstance(error, SchemaMismatchError)
    assert "column b exists in the target but no longer in the source" in str(error)
    assert f"ALTER TABLE {db.name}.t DROP COLUMN b;" in str(error)
    # Row 2 was logged with column b and applied with it, shifted nowhere.
    assert target_rows(target_dsn, f"SELECT * FROM {db.name}.t ORDER BY id") == [
        (1, 10, "one", 100),
        (2, 20, "two", 200),
    ]
    execute(target_dsn, f"ALTER TABLE {db.name}.t DROP COLUMN b")
    pipeline = RunningPipeline(config)
    try:
        wait_caught_up(db.server, target_dsn, "shop")
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT * FROM {db.name}.t ORDER BY id") == [
        (1, 10, 100),
        (2, 20, 200),
        (3, 30, 300),
    ]


def test_a_table_created_while_streaming_is_captured(
    mysql_database: MysqlDatabase, target_dsn: str
):
    """A new table matching the patterns is copied and streamed without a restart."""
    db = mysql_database
    db.execute("CREATE TABLE first (id INT PRIMARY KEY)")
    pipeline = start(db, target_dsn, discover_interval_s=1)
    try:
        db.execute("CREATE TABLE later (id INT PRIMARY KEY, v INT)")
        for i in range(50):
            db.execute(f"INSERT INTO later VALUES ({i}, {i})")
        db.execute("UPDATE later SET v = v * 2")
        wait_for(
            lambda: (
                target_rows(target_dsn, f"SELECT sum(v) FROM {db.name}.later")
                == [(2 * sum(range(50)),)]
            ),
            60,
            "the new table's rows",
        )
    finally:
        pipeline.stop()


def test_a_quiet_pipeline_checkpoints_while_other_tables_change(
    mysql_database: MysqlDatabase, target_dsn: str
):
    """Transactions on tables outside the patterns move the checkpoint on, so the pipeline's
    place stays among the binlogs the server keeps."""
    db = mysql_database
    db.execute("CREATE TABLE captured (id INT PRIMARY KEY)")
    db.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    config = mysql_pipeline_config("shop", db.dsn, target_dsn, [f"{db.name}.captured"])
    pipeline = RunningPipeline(config)
    try:
        wait_for(lambda: checkpoint_order(target_dsn, "shop") > (0, 0), 30, "the start")
        for i in range(20):
            db.execute(f"INSERT INTO other VALUES ({i})")
        goal = source_order(db.server)
        wait_for(lambda: checkpoint_order(target_dsn, "shop") >= goal, 30, "the checkpoint")
    finally:
        pipeline.stop()
    assert target_rows(target_dsn, f"SELECT count(*) FROM {db.name}.captured") == [(0,)]
    assert target_rows(target_dsn, f"SELECT count(*) FROM {db.name}.other") == []
