"""A snapshot round: copy every table waiting for a copy, in parallel, inside one snapshot.

The stream is paused (at a transaction boundary, nothing uncommitted in the sink) while a
round runs, so the rule that joins copy and stream stays simple: a table copied at snapshot
position ``S`` skips stream changes before ``S`` and applies those after it (DESIGN invariant
1: nothing lost, nothing applied twice). The slot keeps every change made meanwhile.

Resume: a chunk's rows and its "copied at S" mark commit together. After a crash, chunks
already copied are kept when the table allows it (:attr:`TablePlan.resumable_by_chunk`); the
rest is copied at a new snapshot ``S'`` and the table's stream start becomes the earliest
chunk position, so the changes between ``S`` and ``S'`` are replayed onto rows that may
already hold them, which a keyed, TOAST-free table absorbs exactly. Other tables start over.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from replicator.config import PipelineConfig
from replicator.contracts import (
    CheckpointStore,
    Chunk,
    Sink,
    SnapshotReader,
    SnapshotSession,
    SnapshotWriter,
    Source,
    TableSnapshot,
)
from replicator.errors import ReplicatorError
from replicator.events import Position, TableId, TableSchema
from replicator.observability import errorlog
from replicator.observability.logging import get_logger

PROGRESS_INTERVAL = 5.0
CHUNK_ATTEMPTS = 5  # for a chunk failing transiently, with a reader that recovers


@dataclass
class TableProgress:
    """One table's copy, as the round tracks it."""

    schema: TableSchema
    shadow: str | None
    requested_at: datetime | None
    rows_estimated: int | None
    chunks_left: int
    positions: list[Position] = field(default_factory=list)
    rows_done: int = 0  # rows in committed chunks
    rows_in_flight: dict[int, int] = field(default_factory=dict)  # chunk -> rows so far
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    @property
    def rows(self) -> int:
        """Rows copied so far, committed or not."""
        return self.rows_done + sum(self.rows_in_flight.values())

    def describe(self) -> dict[str, Any]:
        """Progress for logs: rows, estimate, rate and time left."""
        elapsed = max(time.monotonic() - self.started, 1e-3)
        rate = self.rows / elapsed
        info: dict[str, Any] = {
            "table": str(self.schema.table),
            "rows_copied": self.rows,
            "rows_estimated": self.rows_estimated,
            "rows_per_second": round(rate),
        }
        if self.rows_estimated and rate > 0 and not self.finished:
            info["eta_seconds"] = round(max(0, self.rows_estimated - self.rows) / rate)
        return info


@dataclass(frozen=True)
class _Work:
    table: TableProgress
    chunk: Chunk
    upsert: bool


class SnapshotRound:
    """Copies the given tables; returns once every one of them is copied (or raises)."""

    def __init__(
        self,
        config: PipelineConfig,
        source: Source,
        sink: Sink,
        store: CheckpointStore,
        stop: threading.Event,
        report: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._source = source
        self._sink = sink
        self._store = store
        self._stop = stop
        self._report = report
        self._log = get_logger(pipeline=config.name)
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self.tables: dict[TableId, TableProgress] = {}

    def run(self, pending: list[TableSnapshot], schemas: dict[TableId, TableSchema]) -> None:
        """Copy ``pending`` tables (described by ``schemas``) at one fresh snapshot."""
        session = self._source.open_snapshot()
        readers: list[SnapshotReader] = []
        writers: list[SnapshotWriter] = []
        try:
            planner = self._sink.snapshot_writer(self._config.name)
            writers.append(planner)
            work = self._plan(session, planner, pending, schemas)
            self._log.info(
                "snapshot started",
                position=str(session.position),
                tables=len(self.tables),
                chunks=len(work),
            )
            for table in list(self.tables.values()):
                if table.chunks_left == 0:
                    self._finish(planner, table)  # every chunk committed before a crash
            count = min(self._config.table_source.copy_workers, len(work))
            # Every reader imports the snapshot now, while its exporter is guaranteed idle.
            readers = [session.reader() for _ in range(count)]
            writers += [self._sink.snapshot_writer(self._config.name) for _ in range(count)]
            self._copy(session, work, readers, writers[1:])
        finally:
            for reader in readers:
                reader.close()
            for writer in writers:
                writer.close()
            session.close()
        self._log.info(
            "snapshot finished",
            tables=len(self.tables),
            rows=sum(t.rows_done for t in self.tables.values()),
        )

    # --- planning ---------------------------------------------------------------------------

    def _plan(
        self,
        session: SnapshotSession,
        planner: SnapshotWriter,
        pending: list[TableSnapshot],
        schemas: dict[TableId, TableSchema],
    ) -> list[_Work]:
        work: list[_Work] = []
        chunk_rows = self._config.table_source.snapshot_chunk_rows
        for state in pending:
            schema = schemas[state.table]
            self._sink.ensure_table(schema, replacing=True)
            plan = session.plan(schema, chunk_rows)
            stored = planner.chunks(schema.table) if state.state == "copying" else []
            done = [c for c in stored if c.position is not None]
            if stored and plan.resumable_by_chunk:
                chunks = stored
                self._log.info(
                    "resuming the copy",
                    table=str(schema.table),
                    chunks_copied=len(done),
                    chunks=len(stored),
                )
            else:
                planner.start_table(schema, plan, state.shadow, state.requested_at)
                fresh = TableProgress(
                    schema, state.shadow, state.requested_at, plan.rows_estimated, len(plan.chunks)
                )
                self.tables[schema.table] = fresh
                work += [_Work(fresh, c, upsert=False) for c in plan.chunks]
                continue
            parse = self._source.parse_position
            progress = TableProgress(
                schema,
                state.shadow,
                state.requested_at,
                plan.rows_estimated,
                chunks_left=len(chunks) - len(done),
                positions=[parse(c.position) for c in done if c.position is not None],
                rows_done=sum(c.rows for c in done),
            )
            self.tables[schema.table] = progress
            # Rows of the remaining chunks may already be present (moved there since the
            # earlier snapshot): upsert them.
            work += [_Work(progress, c.chunk, upsert=True) for c in chunks if c.position is None]
        # Big chunks first, so the round does not end waiting on one late large table.
        work.sort(key=lambda w: -(w.table.rows_estimated or 0) // max(1, w.table.chunks_left))
        return work

    # --- copying ----------------------------------------------------------------------------

    def _copy(
        self,
        session: SnapshotSession,
        work: list[_Work],
        readers: list[SnapshotReader],
        writers: list[SnapshotWriter],
    ) -> None:
        todo: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        for item in work:
            todo.put(item)
        threads = [
            threading.Thread(
                target=self._worker,
                args=(session.position, todo, reader, writer),
                name=f"snapshot-{self._config.name}-{i}",
                daemon=True,
            )
            for i, (reader, writer) in enumerate(zip(readers, writers, strict=True))
        ]
        for thread in threads:
            thread.start()
        bar = _ProgressBar(self.tables) if sys.stderr.isatty() else None
        last = time.monotonic()
        try:
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(timeout=0.2)
                if bar is not None:
                    bar.update()
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL:
                    last = now
                    self._progress()
        finally:
            if bar is not None:
                bar.close()
        if self._failure is not None:
            raise self._failure
        if self._stop.is_set() and any(not t.finished for t in self.tables.values()):
            raise Stopped()

    def _worker(
        self,
        position: Position,
        todo: queue.SimpleQueue[_Work],
        reader: SnapshotReader,
        writer: SnapshotWriter,
    ) -> None:
        try:
            while not self._stop.is_set() and self._failure is None:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                self._copy_chunk(position, item, reader, writer)
        except BaseException as exc:  # noqa: BLE001 - handed to the round's thread
            with self._lock:
                if self._failure is None:
                    self._failure = exc
        finally:
            # End the snapshot transaction now: its locks would otherwise hold up a source
            # TRUNCATE, and with it every other worker queued behind that TRUNCATE.
            reader.close()

    def _copy_chunk(
        self, position: Position, item: _Work, reader: SnapshotReader, writer: SnapshotWriter
    ) -> None:
        table = item.table
        number = item.chunk.number

        def progress(rows: int) -> None:
            if self._stop.is_set():
                raise Stopped()
            table.rows_in_flight[number] = rows

        attempt = 0
        while True:
            try:
                with reader.copy(table.schema, item.chunk, writer.formats) as stream:
                    at = stream.position or position  # the chunk's own snapshot, if any
                    rows = writer.copy_chunk(
                        table.schema,
                        item.chunk,
                        stream,
                        at,
                        shadow=table.shadow,
                        upsert=item.upsert,
                        progress=progress,
                    )
                break
            except ReplicatorError as exc:
                # A concurrent TRUNCATE or a deadlock on the source, a dropped connection:
                # the chunk's transaction in the target rolled back, so copy it again.
                attempt += 1
                if not (reader.recovers and exc.transient) or attempt >= CHUNK_ATTEMPTS:
                    raise
                delay = min(5.0, 0.5 * 2**attempt)
                errorlog.record(self._config.name, exc, retried="snapshot chunk")
                self._log.warning(
                    "copying a chunk failed; copying it again",
                    table=str(table.schema.table),
                    chunk=number,
                    error=exc.message,
                    attempt=attempt,
                    next_delay_s=delay,
                )
                table.rows_in_flight.pop(number, None)
                if self._stop.wait(delay):
                    raise Stopped() from exc
        with self._lock:
            table.rows_in_flight.pop(number, None)
            table.rows_done += rows
            table.positions.append(at)
            table.chunks_left -= 1
            last = table.chunks_left == 0
        if last:
            self._finish(writer, table)

    def _finish(self, writer: SnapshotWriter, table: TableProgress) -> None:
        keys = [p.order_key() for p in table.positions]
        start = table.positions[keys.index(min(keys))]
        until = table.positions[keys.index(max(keys))]
        current = writer.finish_table(table.schema, table.shadow, start, until, table.requested_at)
        table.finished = True
        if current:
            self._log.info("table copied", start=str(start), **table.describe())
        else:
            self._log.info(
                "table copied, but a new copy was requested meanwhile", **table.describe()
            )

    def _progress(self) -> None:
        for table in self.tables.values():
            if not table.finished:
                self._log.info("copying", **table.describe())
        try:
            self._store.record_snapshot_progress(
                self._config.name, {t: p.rows for t, p in self.tables.items() if not p.finished}
            )
            if self._report is not None:
                self._report()
        except Exception as exc:  # noqa: BLE001 - progress is informational
            self._log.warning("could not record snapshot progress", error=str(exc))


class Stopped(Exception):
    """The pipeline was asked to stop mid-copy; what committed is kept for the next run."""


class _ProgressBar:
    """A rich progress bar per table, for an interactive ``run``."""

    def __init__(self, tables: dict[TableId, TableProgress]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._tables = tables
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._tasks = {
            name: self._progress.add_task(str(name), total=t.rows_estimated or None)
            for name, t in tables.items()
        }
        self._progress.start()

    def update(self) -> None:
        for name, task in self._tasks.items():
            table = self._tables[name]
            total = table.rows_estimated
            if table.finished:
                total = table.rows
            self._progress.update(task, completed=table.rows, total=total or None)

    def close(self) -> None:
        self.update()
        self._progress.stop()
