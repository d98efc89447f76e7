"""The CLI on a MariaDB source, killed with SIGKILL again and again under a random workload."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.mariadb import MysqlDatabase
from tests.mysql_compare import assert_same_tables
from tests.mysql_helpers import (
    checkpoint_order,
    chunks_committed,
    mysql_pipeline_dict,
    wait_caught_up,
)
from tests.mysql_workload import Workload, table_names, table_patterns
from tests.support import reap, snapshot_done, snapshot_states, spawn_run, wait_for, write_config

BULK_ROWS = 200_000
BULK_LOG_ROWS = 20_000


def streaming_runs(log: Path) -> int:
    """How many runs logged that they stream (after their snapshot, if any)."""
    return log.read_text().count("[info     ] streaming ")


@pytest.fixture
def workload_dsn(mysql_database: MysqlDatabase):
    """The fixture database with the workload's schema (and its second database)."""
    Workload.create_schema(mysql_database.dsn)
    yield mysql_database.dsn
    Workload.drop_other_database(mysql_database.dsn)


@pytest.mark.slow
@pytest.mark.parametrize("position", ["gtid", "file"])
def test_sigkill_at_random_points_never_loses_or_duplicates(
    mysql_database: MysqlDatabase, workload_dsn: str, target_dsn: str, tmp_path, position: str
):
    """Tables that already hold rows (a 200k-row one chunked, one without a key) are copied
    and then streamed under a random workload; SIGKILL once mid-snapshot and five times
    mid-stream, the target still ends equal to the source and the checkpoint never moves
    back."""
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    print(f"seed={seed}")  # rerun with REPLICATOR_TEST_SEED to reproduce
    server = mysql_database.server
    workload = Workload(workload_dsn, seed)
    workload.populate_bulk(BULK_ROWS, BULK_LOG_ROWS)
    conn = workload.connect()
    try:
        for _ in range(300):
            workload.run_transaction(conn)
    finally:
        conn.close()
    tables = table_names(workload_dsn)
    config = write_config(
        tmp_path / "replicator.yaml",
        mysql_pipeline_dict(
            "crashy",
            workload_dsn,
            target_dsn,
            table_patterns(workload_dsn),
            position,
            max_events=rnd.choice([100, 500, 2000]),
        ),
    )
    log = tmp_path / "replicator.log"
    engine = spawn_run(config, log)
    workload.start()
    checkpoints = []
    runs = 1  # runs that reached the stream, counted in the log
    try:
        # First kill: mid-snapshot, with some chunks committed.
        wait_for(lambda: chunks_committed(target_dsn, "crashy") >= 2, 120, "chunks to commit")
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        states = snapshot_states(target_dsn, "crashy")
        assert any(s != "done" for s in states.values()), f"the snapshot was over: {states}"
        checkpoints.append(checkpoint_order(target_dsn, "crashy"))
        engine = spawn_run(config, log)
        wait_for(lambda: snapshot_done(target_dsn, "crashy", len(tables)), 120, "the snapshot")
        for _ in range(5):
            # Mid-stream: once this run streams, at a random moment.
            wait_for(lambda n=runs: streaming_runs(log) >= n, 60, "the restarted run to stream")
            time.sleep(rnd.uniform(0.5, 3.0))
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
            checkpoints.append(checkpoint_order(target_dsn, "crashy"))
            runs = streaming_runs(log) + 1
            engine = spawn_run(config, log)
        time.sleep(2)
    finally:
        workload.stop()
    try:
        goal = wait_caught_up(server, target_dsn, "crashy", timeout=120)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0, log.read_text()[-3000:]
    finally:
        reap(engine)
    print(
        f"transactions={workload.transactions} rollbacks={workload.rollbacks}"
        f" big={workload.big_transactions} truncates={workload.truncates}"
        f" checkpoints={checkpoints} goal={goal}"
    )
    assert workload.transactions > 100 and workload.rollbacks > 0
    assert workload.big_transactions > 0
    assert checkpoints == sorted(checkpoints), "the checkpoint moved back"
    assert_same_tables(workload_dsn, target_dsn, tables)
    text = log.read_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]
