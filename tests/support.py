"""Helpers shared by integration and end-to-end tests: configs, waiting, comparing tables."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

from replicator.config import PipelineConfig
from replicator.engine.registry import make_pipeline
from replicator.pgsession import TEXT_SETTINGS
from replicator.sources.postgres.pgoutput import parse_lsn

OPTIONS = " ".join(f"-c {k}={v}" for k, v in TEXT_SETTINGS.items())


def connect(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection with the text settings both ends of a pipeline use."""
    return psycopg.connect(dsn, autocommit=True, options=OPTIONS)


def execute(dsn: str, *statements: str) -> None:
    """Run statements, each in its own transaction."""
    with connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def pipeline_dict(
    name: str,
    source_dsn: str,
    target_dsn: str,
    tables: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A pipeline config as it appears in YAML."""
    data: dict[str, Any] = {
        "name": name,
        "source": {"type": "postgres", "dsn": source_dsn, "tables": tables or ["public.*"]},
        "sink": {"type": "postgres", "dsn": target_dsn},
    }
    for key, value in extra.items():
        if key == "source":
            data["source"].update(value)
        else:
            data[key] = value
    return data


def pipeline_config(*args: Any, **kwargs: Any) -> PipelineConfig:
    """A validated pipeline config."""
    return PipelineConfig.model_validate(pipeline_dict(*args, **kwargs))


def write_config(path: Path, *pipelines: dict[str, Any], **top: Any) -> Path:
    """Write a YAML config file with the given pipelines."""
    path.write_text(yaml.safe_dump({"pipelines": list(pipelines), **top}, sort_keys=False))
    return path


class RunningPipeline:
    """A pipeline running in a thread of the test process."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.pipeline = make_pipeline(config, self.stop_event)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()/wait_failed()
            self.error = exc

    def stop(self, timeout: float = 30) -> None:
        """Ask the pipeline to stop, wait for it, and raise what it failed with."""
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not stop"
        if self.error is not None:
            raise self.error

    def wait_failed(self, timeout: float = 30) -> BaseException:
        """Wait for the pipeline to fail and return its error."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline is still running"
        assert self.error is not None, "pipeline stopped without an error"
        return self.error


@contextmanager
def in_process(config: PipelineConfig) -> Iterator[RunningPipeline]:
    """Run the pipeline in this process; stop it (raising its error) at the end."""
    pipeline = RunningPipeline(config)
    try:
        yield pipeline
    except BaseException:
        pipeline.stop_event.set()  # the test's failure is the one to report
        pipeline.thread.join(60)
        raise
    pipeline.stop(60)


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll until ``predicate()`` holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def current_lsn(dsn: str) -> int:
    """The source's current WAL position."""
    with connect(dsn) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return parse_lsn(row[0])


def checkpoint_lsn(target_dsn: str, pipeline: str) -> int:
    """The pipeline's checkpoint LSN in the target (0 when none)."""
    with connect(target_dsn) as conn:
        try:
            row = conn.execute(
                "SELECT position->>'lsn' FROM _replicator.checkpoints WHERE pipeline = %s",
                (pipeline,),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return parse_lsn(row[0]) if row else 0


def slot_lsn(source_dsn: str, slot: str) -> int:
    """The slot's confirmed_flush_lsn (0 when the slot does not exist)."""
    with connect(source_dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    return parse_lsn(row[0]) if row and row[0] else 0


def hold_lock(dsn: str, table: str, seconds: float) -> threading.Thread:
    """Lock ``table`` exclusively for ``seconds`` from another thread (a stalled target);
    returns once the lock is held. Join the thread to wait for its release."""
    locked = threading.Event()

    def hold() -> None:
        with connect(dsn) as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # type: ignore[arg-type]
            locked.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(30), f"could not lock {table}"
    return holder


def slot_active(source_dsn: str, slot: str) -> bool:
    """Whether a walsender is streaming from the slot right now."""
    with connect(source_dsn) as conn:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return bool(row and row[0])


def wait_streaming(pipeline: RunningPipeline, source_dsn: str, timeout: float = 30) -> None:
    """Wait until the pipeline streams (its publication is in place), or raise its error."""
    slot = pipeline.config.slot_name
    wait_for(
        lambda: pipeline.error is not None or slot_active(source_dsn, slot),
        timeout,
        f"slot {slot} to become active",
    )
    if pipeline.error is not None:
        raise pipeline.error


def wait_caught_up(source_dsn: str, target_dsn: str, pipeline: str, timeout: float = 60) -> None:
    """Wait until the target's checkpoint covers everything the source has written so far."""
    goal = current_lsn(source_dsn)
    wait_for(
        lambda: checkpoint_lsn(target_dsn, pipeline) >= goal,
        timeout,
        f"pipeline {pipeline} to reach the source's WAL position",
    )


def table_rows(dsn: str, table: str) -> list[str]:
    """Every row of ``table`` as text, sorted: a multiset comparison that handles duplicates."""
    with connect(dsn) as conn:
        rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()  # type: ignore[arg-type]
    return sorted(r[0] for r in rows)


def assert_same_rows(source_dsn: str, target_dsn: str, *tables: str) -> None:
    """Source and target tables hold exactly the same rows (duplicates counted)."""
    for table in tables:
        source = table_rows(source_dsn, table)
        target = table_rows(target_dsn, table)
        if source != target:
            missing = collections.Counter(source) - collections.Counter(target)
            extra = collections.Counter(target) - collections.Counter(source)
            raise AssertionError(
                f"{table}: {len(source)} source rows, {len(target)} target rows; "
                f"missing in target: {list(missing.elements())[:5]}; "
                f"unexpected in target: {list(extra.elements())[:5]}"
            )


def replicator_cmd(*args: str) -> list[str]:
    """The command line of the installed ``replicator`` CLI."""
    return [str(Path(sys.executable).with_name("replicator")), *args]


def spawn_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``replicator run -c config`` in the background, appending its output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            replicator_cmd("run", "-c", str(config)), stdout=out, stderr=subprocess.STDOUT
        )


def reap(engine: subprocess.Popen[bytes]) -> None:
    """Kill a spawned engine that is still running and collect its exit status."""
    if engine.poll() is None:
        engine.kill()
    engine.wait(10)


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion and capture its output."""
    return subprocess.run(
        replicator_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _bookkeeping(target_dsn: str, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows of a query on the target's snapshot bookkeeping; none before it exists."""
    try:
        with connect(target_dsn) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
    except psycopg.errors.UndefinedTable:
        return []


def snapshot_states(target_dsn: str, pipeline: str) -> dict[str, str]:
    """Each table's snapshot state (``requested``, ``copying``, ``done``) by ``schema.table``."""
    rows = _bookkeeping(
        target_dsn,
        "SELECT schema_name || '.' || table_name, state FROM _replicator.snapshot_tables"
        " WHERE pipeline = %s",
        (pipeline,),
    )
    return {r[0]: r[1] for r in rows}


def snapshot_done(target_dsn: str, pipeline: str, count: int) -> bool:
    """Whether at least ``count`` tables have snapshot state and all of it is ``done``."""
    states = snapshot_states(target_dsn, pipeline)
    return len(states) >= count and all(s == "done" for s in states.values())


def table_state(target_dsn: str, table: str) -> tuple[str, str | None, str | None]:
    """(state, start lsn, until lsn) of a table's snapshot; state "" when it has none."""
    rows = _bookkeeping(
        target_dsn,
        "SELECT state, start_position->>'lsn', until_position->>'lsn'"
        " FROM _replicator.snapshot_tables WHERE table_name = %s",
        (table,),
    )
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else ("", None, None)


def chunks_copied(target_dsn: str, table: str | None = None) -> list[str]:
    """Snapshot positions of the chunks committed so far (of one table, or of all)."""
    rows = _bookkeeping(
        target_dsn,
        "SELECT position->>'lsn' FROM _replicator.snapshot_chunks"
        " WHERE position IS NOT NULL AND (%s::text IS NULL OR table_name = %s)",
        (table, table),
    )
    return [r[0] for r in rows]
