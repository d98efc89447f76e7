"""The slot and the checkpoint stay in step; when they disagree, nothing starts."""

from __future__ import annotations

import time

from replicator.errors import CheckpointMismatchError, PreflightError
from replicator.sources.postgres.pgoutput import format_lsn
from tests.support import (
    RunningPipeline,
    assert_same_rows,
    checkpoint_lsn,
    connect,
    current_lsn,
    execute,
    hold_lock,
    pipeline_config,
    slot_lsn,
    wait_caught_up,
    wait_for,
    wait_streaming,
)

SLOT = "replicator_safety"


def start(source_dsn: str, target_dsn: str) -> RunningPipeline:
    pipeline = RunningPipeline(pipeline_config("safety", source_dsn, target_dsn))
    wait_streaming(pipeline, source_dsn)
    return pipeline


def test_idle_pipeline_keeps_the_slot_close_to_the_wal(source_dsn, target_dsn):
    """While captured tables are idle and other WAL grows, the slot keeps up (invariant 6)."""
    execute(source_dsn, "CREATE TABLE captured (id int PRIMARY KEY)", "CREATE SCHEMA other")
    execute(source_dsn, "CREATE TABLE other.noise (id serial, pad text)")
    pipeline = RunningPipeline(pipeline_config("safety", source_dsn, target_dsn, ["public.*"]))
    try:
        wait_for(lambda: slot_lsn(source_dsn, SLOT) > 0, 30, "the slot")
        for _ in range(5):
            execute(
                source_dsn,
                "INSERT INTO other.noise (pad) SELECT repeat('x', 500)"
                " FROM generate_series(1, 2000)",
            )
        goal = current_lsn(source_dsn)
        wait_for(lambda: slot_lsn(source_dsn, SLOT) >= goal, 30, "the slot to pass the noise")
        # The slot never runs ahead of the checkpoint the target holds.
        for _ in range(20):
            assert slot_lsn(source_dsn, SLOT) <= checkpoint_lsn(target_dsn, "safety")
            time.sleep(0.1)
    finally:
        pipeline.stop()
    assert slot_lsn(source_dsn, SLOT) == checkpoint_lsn(target_dsn, "safety")


def test_clean_stop_leaves_slot_equal_to_checkpoint_and_restart_resumes(source_dsn, target_dsn):
    """After a clean stop the slot equals the checkpoint, and a restart loses nothing."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    pipeline = start(source_dsn, target_dsn)
    execute(source_dsn, "INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
    wait_caught_up(source_dsn, target_dsn, "safety")
    pipeline.stop()
    assert slot_lsn(source_dsn, SLOT) == checkpoint_lsn(target_dsn, "safety")
    execute(source_dsn, "UPDATE t SET v = -v WHERE id < 50", "DELETE FROM t WHERE id > 90")
    pipeline = start(source_dsn, target_dsn)
    wait_caught_up(source_dsn, target_dsn, "safety")
    pipeline.stop()
    assert_same_rows(source_dsn, target_dsn, "t")


def refused(source_dsn: str, target_dsn: str) -> BaseException:
    """Start the pipeline again and return the error it refuses to start with."""
    error = RunningPipeline(pipeline_config("safety", source_dsn, target_dsn)).wait_failed()
    assert isinstance(error, CheckpointMismatchError | PreflightError)
    return error


def test_slot_ahead_of_the_checkpoint_refuses_to_start(source_dsn, target_dsn):
    """If something advanced the slot past the checkpoint, the pipeline will not skip ahead."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    start(source_dsn, target_dsn).stop()
    execute(source_dsn, "INSERT INTO t SELECT generate_series(1, 10)")
    goal = current_lsn(source_dsn)
    execute(source_dsn, f"SELECT pg_replication_slot_advance('{SLOT}', '{format_lsn(goal)}')")
    error = refused(source_dsn, target_dsn)
    assert "past the pipeline's checkpoint" in str(error)
    assert "replicator drop" in str(error)


def test_missing_slot_with_a_checkpoint_refuses_to_start(source_dsn, target_dsn):
    """A dropped slot means lost changes: the pipeline says so instead of starting fresh."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    start(source_dsn, target_dsn).stop()
    execute(source_dsn, f"SELECT pg_drop_replication_slot('{SLOT}')")
    error = refused(source_dsn, target_dsn)
    assert "is gone" in str(error)


def test_existing_slot_without_checkpoint_refuses_to_start(source_dsn, target_dsn):
    """A slot with no checkpoint in the target is not adopted blindly."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    start(source_dsn, target_dsn).stop()
    execute(target_dsn, "DELETE FROM _replicator.checkpoints")
    error = refused(source_dsn, target_dsn)
    assert "holds no checkpoint" in str(error)


def test_crash_between_slot_creation_and_first_checkpoint_adopts_the_slot(source_dsn, target_dsn):
    """The 'creating' marker lets a restart adopt the slot it made just before crashing."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    start(source_dsn, target_dsn).stop()
    # Rewind the checkpoint to the marker written before CREATE_REPLICATION_SLOT.
    execute(target_dsn, """UPDATE _replicator.checkpoints SET position = '{"lsn": "0/0"}'""")
    execute(source_dsn, "INSERT INTO t VALUES (1)")
    pipeline = start(source_dsn, target_dsn)
    wait_caught_up(source_dsn, target_dsn, "safety")
    pipeline.stop()
    assert_same_rows(source_dsn, target_dsn, "t")


def test_acknowledged_position_is_always_durable(source_dsn, target_dsn):
    """Under interleaved transactions the slot never confirms past the target's checkpoint."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    pipeline = start(source_dsn, target_dsn)
    try:
        with connect(source_dsn) as long_tx, connect(source_dsn) as other:
            long_tx.execute("BEGIN")
            long_tx.execute("INSERT INTO t VALUES (0, 0)")  # starts before the others commit
            for i in range(1, 200):
                other.execute("INSERT INTO t VALUES (%s, %s)", (i, i))
                assert slot_lsn(source_dsn, SLOT) <= checkpoint_lsn(target_dsn, "safety")
            long_tx.execute("COMMIT")
        wait_caught_up(source_dsn, target_dsn, "safety")
        assert slot_lsn(source_dsn, SLOT) <= checkpoint_lsn(target_dsn, "safety")
    finally:
        pipeline.stop()
    assert_same_rows(source_dsn, target_dsn, "t")


def test_target_stalled_longer_than_wal_sender_timeout(pg_cluster_factory, target_dsn):
    """While the target is blocked, status updates keep the replication connection alive."""
    source = pg_cluster_factory("stall", wal_sender_timeout="2s")
    source_dsn = source.create_database("stall")
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    pipeline = start(source_dsn, target_dsn)
    try:
        execute(source_dsn, "INSERT INTO t SELECT g, 0 FROM generate_series(1, 50000) g")
        wait_caught_up(source_dsn, target_dsn, "safety")
        holder = hold_lock(target_dsn, "t", 7)
        execute(source_dsn, "UPDATE t SET v = v + 1")
        holder.join()
        wait_caught_up(source_dsn, target_dsn, "safety")
    finally:
        pipeline.stop()
    assert "replication timeout" not in source.logfile.read_text()
    assert_same_rows(source_dsn, target_dsn, "t")
