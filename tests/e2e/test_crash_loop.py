"""The CLI as a user runs it, killed with SIGKILL again and again under a random workload."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.support import (
    assert_same_rows,
    checkpoint_lsn,
    chunks_copied,
    connect,
    execute,
    pipeline_dict,
    reap,
    slot_lsn,
    spawn_run,
    wait_caught_up,
    wait_for,
    write_config,
)
from tests.workload import TABLES, Workload

SLOT = "replicator_crashy"


@pytest.mark.slow
def test_sigkill_at_random_points_never_loses_or_duplicates(source_dsn, target_dsn, tmp_path):
    """Tables that already hold rows (one without a key) are copied and then streamed while a
    workload runs; SIGKILL once mid-snapshot and six times mid-stream, the target still ends
    equal to the source."""
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    print(f"seed={seed}")  # rerun with REPLICATOR_TEST_SEED to reproduce
    Workload.create_schema(source_dsn)
    workload = Workload(source_dsn, seed)
    with connect(source_dsn) as conn:
        for _ in range(300):
            workload.run_transaction(conn)
    # Big enough that the first kill lands mid-copy; the workload does not touch them, so
    # their chunks survive the kill (a keyed one resumes per chunk, a keyless one restarts).
    execute(
        source_dsn,
        "CREATE TABLE sales.bulk (id int PRIMARY KEY, n int NOT NULL, at timestamptz)",
        "INSERT INTO sales.bulk SELECT g, g % 97, now() FROM generate_series(1, 400000) g",
        "CREATE TABLE sales.bulk_log (who text, n int)",
        "ALTER TABLE sales.bulk_log REPLICA IDENTITY FULL",
        "INSERT INTO sales.bulk_log SELECT 'w' || g % 13, g % 5 FROM generate_series(1, 100000) g",
        "ANALYZE",
    )
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict(
            "crashy",
            source_dsn,
            target_dsn,
            ["public.*", "sales.*"],
            batch={"max_events": rnd.choice([50, 500, 5000])},
            source={"snapshot_chunk_rows": 2000, "snapshot_workers": 2},
        ),
    )
    log = tmp_path / "replicator.log"
    engine = spawn_run(config, log)
    workload.start()
    try:
        # First kill: mid-snapshot, with some chunks committed.
        wait_for(lambda: len(chunks_copied(target_dsn)) >= 2, 120, "the snapshot to be under way")
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        engine = spawn_run(config, log)
        wait_for(lambda: checkpoint_lsn(target_dsn, "crashy") > 0, 60, "the slot")
        for _ in range(6):
            time.sleep(rnd.uniform(1.0, 4.0))
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
            # Right after the crash, the slot must not be ahead of what the target holds.
            assert slot_lsn(source_dsn, SLOT) <= checkpoint_lsn(target_dsn, "crashy")
            engine = spawn_run(config, log)
        time.sleep(2)
    finally:
        workload.stop()
    try:
        wait_caught_up(source_dsn, target_dsn, "crashy", timeout=120)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0, log.read_text()[-3000:]
    finally:
        reap(engine)
    assert workload.transactions > 20 and workload.rollbacks > 0
    assert_same_rows(source_dsn, target_dsn, *TABLES, "sales.bulk", "sales.bulk_log")
    assert slot_lsn(source_dsn, SLOT) == checkpoint_lsn(target_dsn, "crashy")
    assert "Traceback" not in log.read_text()
