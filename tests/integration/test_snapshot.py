"""The initial snapshot against real servers: copy, then stream, with no gap and no repeat."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.support import (
    RunningPipeline,
    assert_same_rows,
    connect,
    execute,
    pipeline_config,
    snapshot_done,
    snapshot_states,
    table_rows,
    wait_caught_up,
    wait_for,
)
from tests.workload import TABLES, Workload


@pytest.fixture
def running():
    """Pipelines started by a test; stopped (and their errors raised) at teardown."""
    started: list[RunningPipeline] = []
    yield started
    for pipeline in started:
        if pipeline.thread.is_alive():
            pipeline.stop()


def test_existing_rows_are_copied_and_changes_during_the_copy_stream_exactly(
    running, source_dsn, target_dsn
):
    """Rows that predate the pipeline are copied; changes made while the copy runs are
    neither lost nor applied twice, for every kind of table (keyless, partitioned, TOAST)."""
    Workload.create_schema(source_dsn)
    workload = Workload(source_dsn, seed=7)
    with connect(source_dsn) as conn:
        for _ in range(400):
            workload.run_transaction(conn)
    execute(
        source_dsn,
        "INSERT INTO audit_log SELECT 'preload', 'x', g % 7 FROM generate_series(1, 20000) g",
    )
    execute(source_dsn, "ANALYZE")
    workload.start()  # keeps changing every table while the copy runs
    try:
        config = pipeline_config(
            "snap",
            source_dsn,
            target_dsn,
            ["public.*", "sales.*"],
            source={"snapshot_chunk_rows": 1000, "snapshot_workers": 3},
        )
        running.append(RunningPipeline(config))
        wait_for(lambda: snapshot_done(target_dsn, "snap", len(TABLES)), 120, "the snapshot")
    finally:
        workload.stop()
    wait_caught_up(source_dsn, target_dsn, "snap")
    assert_same_rows(source_dsn, target_dsn, *TABLES)


def test_a_table_created_later_is_copied_and_streamed_without_a_restart(
    running, source_dsn, target_dsn
):
    """A new table matching the patterns is picked up while the pipeline runs."""
    execute(
        source_dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)", "INSERT INTO a VALUES (1, 'x')"
    )
    config = pipeline_config("late", source_dsn, target_dsn, source={"discover_interval_s": 0.5})
    running.append(RunningPipeline(config))
    wait_for(lambda: snapshot_done(target_dsn, "late", 1), 60, "the first snapshot")
    # Rows committed before the pipeline notices the table, and changes after.
    execute(
        source_dsn,
        "CREATE TABLE b (id int PRIMARY KEY, v text)",
        "INSERT INTO b SELECT g, 'row ' || g FROM generate_series(1, 5000) g",
    )
    stop = threading.Event()

    def writes() -> None:
        rnd = random.Random(3)
        with connect(source_dsn) as conn:
            while not stop.is_set():
                key = rnd.randint(1, 6000)
                conn.execute(
                    "INSERT INTO b VALUES (%s, 'w') ON CONFLICT (id) DO UPDATE SET v = b.v || '+'",
                    (key,),
                )
                conn.execute("DELETE FROM b WHERE id = %s", (rnd.randint(1, 6000),))
                conn.execute("UPDATE a SET v = v || '.'")

    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    try:
        wait_for(lambda: snapshot_done(target_dsn, "late", 2), 60, "the new table's copy")
    finally:
        stop.set()
        writer.join(10)
    wait_caught_up(source_dsn, target_dsn, "late")
    assert_same_rows(source_dsn, target_dsn, "a", "b")
    assert len(table_rows(target_dsn, "b")) > 1000


def test_a_resync_asked_for_during_a_copy_is_not_lost(running, source_dsn, target_dsn):
    """A re-copy requested while the table is being copied runs after that copy ends."""
    from replicator.checkpoints.postgres import PostgresCheckpointStore
    from replicator.events import TableId

    execute(
        source_dsn,
        "CREATE TABLE big (id int PRIMARY KEY, v int)",
        "INSERT INTO big SELECT g, g FROM generate_series(1, 200000) g",
    )
    config = pipeline_config(
        "twice",
        source_dsn,
        target_dsn,
        source={"snapshot_chunk_rows": 5000, "snapshot_workers": 1},
    )
    running.append(RunningPipeline(config))
    wait_for(lambda: snapshot_states(target_dsn, "twice").get("public.big") == "copying", 60)
    store = PostgresCheckpointStore(target_dsn)
    try:
        store.request_snapshot("twice", [TableId("public", "big")], resync=True)
        asked = time.time()
    finally:
        store.close()
    wait_for(lambda: snapshot_done(target_dsn, "twice", 1), 120, "both copies")
    with connect(target_dsn) as conn:
        row = conn.execute(
            "SELECT started_at >= requested_at, extract(epoch FROM finished_at), shadow"
            " FROM _replicator.snapshot_tables WHERE table_name = 'big'"
        ).fetchone()
    # The copy that finished was planned after the request: the request was served.
    assert row is not None and row[0] is True and float(row[1]) > asked and row[2] is None
    execute(source_dsn, "UPDATE big SET v = -v WHERE id % 1000 = 0")
    wait_caught_up(source_dsn, target_dsn, "twice")
    assert_same_rows(source_dsn, target_dsn, "big")


def test_a_new_table_without_replica_identity_is_left_out_until_fixed(
    running, source_dsn, target_dsn
):
    """Publishing it would make the source reject its updates: it waits for the fix instead."""
    execute(source_dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    config = pipeline_config("keyless", source_dsn, target_dsn, source={"discover_interval_s": 0.3})
    running.append(RunningPipeline(config))
    wait_for(lambda: snapshot_done(target_dsn, "keyless", 1), 60, "the first snapshot")
    execute(source_dsn, "CREATE TABLE loose (v int)", "INSERT INTO loose VALUES (1), (1), (2)")
    time.sleep(1.5)  # several discovery rounds
    execute(source_dsn, "UPDATE loose SET v = 3 WHERE v = 2")  # still allowed on the source
    assert "public.loose" not in snapshot_states(target_dsn, "keyless")
    execute(source_dsn, "ALTER TABLE loose REPLICA IDENTITY FULL")
    wait_for(lambda: snapshot_done(target_dsn, "keyless", 2), 60, "the fixed table's copy")
    execute(source_dsn, "DELETE FROM loose WHERE v = 1")
    wait_caught_up(source_dsn, target_dsn, "keyless")
    assert_same_rows(source_dsn, target_dsn, "loose")
