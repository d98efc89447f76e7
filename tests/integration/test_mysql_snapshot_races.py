"""The MariaDB snapshot racing DDL on the tables it copies."""

from __future__ import annotations

import pytest

from tests.mariadb import MysqlDatabase, connect
from tests.mysql_compare import assert_same_tables
from tests.mysql_helpers import (
    chunks_committed,
    mysql_pipeline_config,
    wait_caught_up,
)
from tests.support import RunningPipeline, snapshot_done, wait_for


def copy_waits_for(db: MysqlDatabase, table: str) -> bool:
    """Whether the copy's SELECT of ``table`` waits for the table's metadata lock."""
    rows = db.server.execute(
        "SELECT INFO FROM information_schema.PROCESSLIST"
        " WHERE STATE = 'Waiting for table metadata lock' AND INFO LIKE 'SELECT CAST(%%'"
        " AND INFO LIKE %s",
        [f"%`{table}`%"],
    )
    return bool(rows)


@pytest.mark.parametrize("position", ["gtid", "file"])
def test_a_truncate_between_a_chunks_snapshot_and_its_read_is_retried(
    mysql_database: MysqlDatabase, target_dsn: str, position: str
):
    """A TRUNCATE that commits after a chunk opened its consistent snapshot but before the
    chunk's SELECT ran (InnoDB then answers 1412 "Table definition has changed, please retry
    transaction") makes the copy retry the chunk in a new snapshot, not fail the pipeline."""
    db = mysql_database
    db.execute("CREATE TABLE a_first (id INT PRIMARY KEY, pad VARCHAR(100))")
    db.execute("INSERT INTO a_first SELECT seq, REPEAT('p', 90) FROM seq_1_to_100000")
    db.execute("ANALYZE TABLE a_first")
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO t SELECT seq, seq FROM seq_1_to_100")
    config = mysql_pipeline_config(
        "race", db.dsn, target_dsn, [f"{db.name}.*"], position, chunk_rows=1000, workers=1
    )
    pipeline = RunningPipeline(config)
    try:
        # Once the copy is under way (the checks before it are done), hold t so that its
        # chunk's SELECT, issued right after the chunk's START TRANSACTION WITH CONSISTENT
        # SNAPSHOT, waits; TRUNCATE t meanwhile, then let the SELECT go.
        wait_for(
            lambda: pipeline.error is not None or chunks_committed(target_dsn, "race") >= 1,
            30,
            "the copy to start",
        )
        with connect(db.dsn) as holder, holder.cursor() as cur:
            cur.execute("LOCK TABLES t WRITE")
            wait_for(
                lambda: pipeline.error is not None or copy_waits_for(db, "t"),
                60,
                "the copy of t to wait for the table",
            )
            cur.execute("TRUNCATE TABLE t")
            cur.execute("INSERT INTO t VALUES (1, 100), (2, 200)")
            cur.execute("UNLOCK TABLES")
        wait_for(
            lambda: pipeline.error is not None or snapshot_done(target_dsn, "race", 2),
            60,
            "the snapshot",
        )
        assert pipeline.error is None, f"the copy failed: {pipeline.error}"
        db.execute("INSERT INTO t VALUES (3, 300)")
        wait_caught_up(db.server, target_dsn, "race", timeout=30)
    finally:
        pipeline.stop_event.set()
        pipeline.thread.join(30)
    assert_same_tables(db.dsn, target_dsn, [f"{db.name}.a_first", f"{db.name}.t"])
