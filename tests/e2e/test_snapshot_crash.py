"""The snapshot as a user meets it: killed mid-copy and resumed, and re-copied on demand."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from tests.support import (
    assert_same_rows,
    chunks_copied,
    connect,
    execute,
    pipeline_dict,
    reap,
    run_cli,
    spawn_run,
    table_rows,
    table_state,
    wait_caught_up,
    wait_for,
    write_config,
)


class Writer:
    """Keeps changing the source (inserts, updates, deletes, key changes) in a thread."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.count = 0

    def run(self) -> None:
        with connect(self.dsn) as conn:
            i = 0
            while not self.stop_event.is_set():
                i += 1
                conn.execute("UPDATE nums SET v = v + 1 WHERE id = %s", (i * 7919 % 300_000,))
                conn.execute("DELETE FROM nums WHERE id = %s", (i * 104729 % 300_000,))
                conn.execute(
                    "INSERT INTO nums VALUES (%s, 0, now()) ON CONFLICT (id) DO NOTHING",
                    (300_000 + i,),
                )
                conn.execute(
                    "UPDATE nums SET id = -id WHERE id = %s AND NOT EXISTS"
                    " (SELECT 1 FROM nums WHERE id = -%s)",
                    (i * 31 % 300_000, i * 31 % 300_000),
                )
                conn.execute("UPDATE notes SET body = body || 'x' WHERE id = %s", (i % 2000,))
                self.count += 1
                time.sleep(0.002)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)


def test_sigkill_mid_snapshot_resumes_without_recopying(source_dsn, target_dsn, tmp_path: Path):
    """Killed mid-copy, a restart keeps the chunks already committed (a keyed table without
    TOAST), re-copies a TOAST table whole, and still ends exactly equal to the source."""
    execute(
        source_dsn,
        "CREATE TABLE nums (id int PRIMARY KEY, v int NOT NULL, at timestamptz)",
        "INSERT INTO nums SELECT g, 0, now() FROM generate_series(1, 300000) g",
        "CREATE TABLE notes (id int PRIMARY KEY, body text)",
        "INSERT INTO notes SELECT g, repeat('note ', g % 50) FROM generate_series(1, 2000) g",
        "ANALYZE",
    )
    config = write_config(
        tmp_path / "c.yaml",
        pipeline_dict(
            "resume",
            source_dsn,
            target_dsn,
            source={"snapshot_chunk_rows": 10_000, "snapshot_workers": 1},
        ),
    )
    log = tmp_path / "run.log"
    with Writer(source_dsn) as writer:
        engine = spawn_run(config, log)
        try:
            wait_for(lambda: len(chunks_copied(target_dsn, "nums")) >= 3, 120, "some chunks")
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
            kept = chunks_copied(target_dsn, "nums")
            assert 3 <= len(kept) < 30, kept
            engine = spawn_run(config, log)
            wait_for(
                lambda: (
                    table_state(target_dsn, "nums")[0] == "done"
                    and table_state(target_dsn, "notes")[0] == "done"
                ),
                180,
                "the resumed snapshot",
            )
            time.sleep(1)
        finally:
            if engine.poll() is None and writer.count == 0:
                engine.kill()
    assert writer.count > 0
    try:
        wait_caught_up(source_dsn, target_dsn, "resume", timeout=120)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0
    finally:
        reap(engine)
    assert_same_rows(source_dsn, target_dsn, "nums", "notes")
    # The chunks copied before the kill were kept: the table's stream starts at their
    # (earlier) snapshot, while the rest was copied at a later one.
    state, start, until = table_state(target_dsn, "nums")
    assert start == min(kept) and until is not None and until > start
    text = log.read_text()
    assert "resuming the copy" in text and "Traceback" not in text


def test_resync_replaces_the_rows_while_streaming_continues(source_dsn, target_dsn, tmp_path):
    """replicator snapshot re-copies a table: rows the target should not have disappear,
    changes keep flowing, and the target ends equal to the source."""
    execute(
        source_dsn,
        "CREATE TABLE nums (id int PRIMARY KEY, v int NOT NULL, at timestamptz)",
        "INSERT INTO nums SELECT g, 0, now() FROM generate_series(1, 300000) g",
        "CREATE TABLE notes (id int PRIMARY KEY, body text)",
        "INSERT INTO notes SELECT g, 'n' FROM generate_series(1, 2000) g",
    )
    config = write_config(tmp_path / "c.yaml", pipeline_dict("again", source_dsn, target_dsn))
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    try:
        wait_for(
            lambda: (
                table_state(target_dsn, "notes")[0] == "done"
                and table_state(target_dsn, "nums")[0] == "done"
            ),
            120,
            "the first copy",
        )
        # Damage the target copy the way drift would: a stray row, a lost row, a wrong value.
        execute(
            target_dsn,
            "INSERT INTO nums VALUES (-999999, 1, now())",
            "DELETE FROM nums WHERE id = 5",
            "UPDATE notes SET body = 'wrong' WHERE id = 7",
        )
        with Writer(source_dsn):
            result = run_cli("snapshot", "-c", str(config), "-p", "again", "-t", "public.*")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "re-copy done" in result.stdout
        wait_caught_up(source_dsn, target_dsn, "again", timeout=120)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0
    finally:
        reap(engine)
    assert_same_rows(source_dsn, target_dsn, "nums", "notes")
    assert table_rows(target_dsn, "notes")[6] != "(7,wrong)"
    with connect(target_dsn) as conn:
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '_replicator'"
            " AND tablename LIKE 'resync%'"
        ).fetchone()
    assert leftovers == (0,)


def test_snapshot_command_rejects_unknown_tables(source_dsn, target_dsn, tmp_path):
    """A pattern that matches no captured table is a usage error naming the fix."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    config = write_config(tmp_path / "c.yaml", pipeline_dict("none", source_dsn, target_dsn))
    result = run_cli("snapshot", "-c", str(config), "-p", "none", "-t", "public.nope")
    assert result.returncode == 2
    assert "no table captured by pipeline none matches public.nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_mid_snapshot_exits_cleanly_and_the_next_run_finishes(
    source_dsn, target_dsn, tmp_path: Path
):
    """SIGTERM during the copy stops within seconds with exit 0; the next run completes it."""
    execute(
        source_dsn,
        "CREATE TABLE nums (id int PRIMARY KEY, v int NOT NULL, at timestamptz)",
        "INSERT INTO nums SELECT g, 0, now() FROM generate_series(1, 400000) g",
        "ANALYZE",
    )
    config = write_config(
        tmp_path / "c.yaml",
        pipeline_dict(
            "term",
            source_dsn,
            target_dsn,
            source={"snapshot_chunk_rows": 5000, "snapshot_workers": 1},
        ),
    )
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    try:
        wait_for(lambda: len(chunks_copied(target_dsn, "nums")) >= 2, 120, "some chunks")
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(30) == 0, log.read_text()[-2000:]
        assert table_state(target_dsn, "nums")[0] == "copying"
        engine = spawn_run(config, log)
        wait_for(lambda: table_state(target_dsn, "nums")[0] == "done", 120, "copy")
        execute(source_dsn, "UPDATE nums SET v = 1 WHERE id % 100 = 0")
        wait_caught_up(source_dsn, target_dsn, "term", timeout=120)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0
    finally:
        reap(engine)
    assert_same_rows(source_dsn, target_dsn, "nums")
    assert "stopped during the snapshot" in log.read_text()
