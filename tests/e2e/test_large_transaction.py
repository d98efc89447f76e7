"""A source transaction larger than memory, applied while the target is slower than
wal_sender_timeout: bounded memory, a connection that survives, and an exact result."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from tests.support import (
    assert_same_rows,
    checkpoint_lsn,
    hold_lock,
    pipeline_dict,
    reap,
    slot_lsn,
    spawn_run,
    wait_caught_up,
    wait_for,
    write_config,
)

ROWS = 2_000_000
RSS_LIMIT_KB = 512 * 1024


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM line")


@pytest.mark.slow
def test_two_million_row_update_with_a_stalled_target(pg_cluster_factory, target_dsn, tmp_path):
    """A 2M-row UPDATE stays under 512 MB RSS and survives a target stalled past the timeout."""
    source = pg_cluster_factory("bigtx", wal_sender_timeout="5s")
    source_dsn = source.create_database("big")
    source.execute("CREATE TABLE big (id int PRIMARY KEY, v int, pad text)", dbname="big")
    config = write_config(tmp_path / "c.yaml", pipeline_dict("big", source_dsn, target_dsn))
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    try:
        wait_for(lambda: checkpoint_lsn(target_dsn, "big") > 0, 30, "the slot")
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO big SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g"
            )
        wait_caught_up(source_dsn, target_dsn, "big", timeout=600)
        # Stall the target: hold a lock on the table for three times wal_sender_timeout while
        # the source streams one UPDATE of every row.
        holder = hold_lock(target_dsn, "big", 15)
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("UPDATE big SET v = v + 1")
        holder.join()
        wait_caught_up(source_dsn, target_dsn, "big", timeout=900)
        rss = peak_rss_kb(engine.pid)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0
    finally:
        reap(engine)
    text = log.read_text()
    print(f"peak RSS {rss / 1024:.0f} MB")
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss / 1024:.0f} MB"
    assert "terminating walsender" not in source.logfile.read_text()
    assert "Traceback" not in text and "failed" not in text
    with psycopg.connect(target_dsn) as conn:
        assert conn.execute("SELECT count(*), min(v), max(v) FROM big").fetchone() == (ROWS, 1, 1)
    assert_same_rows(source_dsn, target_dsn, "big")
    assert slot_lsn(source_dsn, "replicator_big") == checkpoint_lsn(target_dsn, "big")
