"""One pipeline's runtime: read the source's stream, batch it, apply it, acknowledge it.

Ordering is the whole point (DESIGN invariants 1, 3 and 6):

* the sink commits data and checkpoint together, and only then is the source acknowledged;
* a commit only ever ends at a source transaction boundary; a transaction too large for one
  batch is applied in chunks inside one open target transaction;
* an idle pipeline checkpoints the source's keepalive position *before* acknowledging it, so
  the source never confirms more than the checkpoint holds.

Batches close when they reach ``max_events`` or ``max_bytes``, when the source has nothing
more ready right now (so a quiet pipeline applies each transaction at once), or when the
oldest change has waited ``max_age_ms`` (so a busy one still commits regularly).

A pause takes effect at the next transaction boundary: what is complete is committed, then
nothing is applied or acknowledged until resumed. The source's reader stops reading once its
queue is full but keeps its connection alive (PostgreSQL status updates with the last durable
position, Kafka polls with fetching paused), so a pause can outlast the server's timeouts. A
MySQL server waits on the binlog connection for its session ``net_write_timeout`` (set to an
hour); a longer pause costs one reconnect on resume, from the interrupted transaction.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from replicator import failpoints
from replicator.config import PipelineConfig
from replicator.contracts import Batch, Checkpoint, CheckpointStore, Problem, Severity, Sink, Source
from replicator.dlq.store import DeadLetterStore
from replicator.engine.deadletters import DeadLetterQueue, replay
from replicator.engine.progress import RateWindow
from replicator.engine.recovery import is_transient
from replicator.engine.snapshot import SnapshotRound, Stopped
from replicator.engine.validation import Validator
from replicator.errors import PreflightError, ReplicatorError, SchemaMismatchError, SinkError
from replicator.events import ChangeEvent, Heartbeat, Op, Position, TableId, TableSchema, TxCommit
from replicator.observability import errorlog, tracing
from replicator.observability.logging import get_logger
from replicator.observability.metrics import PipelineMetrics
from replicator.sequences import SequenceSync

IDLE_CHECKPOINT_INTERVAL = 1.0  # seconds between checkpoints of an idle pipeline
STATUS_INTERVAL = 5.0
SUMMARY_INTERVAL = 30.0
_PAUSE_POLL = 0.2  # seconds between checks for a resume or a stop while paused
_CONFLICT_ATTEMPTS = 5  # for a batch racing another writer on the target
_JITTER = random.Random()  # noqa: S311 - of its own: the process-wide generator is left alone


@dataclass
class PipelineCounters:
    """What a pipeline has done since it started."""

    transactions: int = 0
    events: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    truncated: int = 0


class Pipeline:
    """Runs one pipeline until stopped or failed."""

    def __init__(
        self,
        config: PipelineConfig,
        source: Source,
        sink: Sink,
        store: CheckpointStore,
        stop: threading.Event,
        dead_letters: DeadLetterStore | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._source = source
        self._sink = sink
        self._store = store
        self._stop = stop
        self._log = get_logger(pipeline=config.name)
        self.counters = PipelineCounters()
        # Pending work: events since the last flush, and the last transaction boundary in it.
        self._pending: list[ChangeEvent] = []
        self._pending_bytes = 0
        self._boundary = 0  # number of pending events up to the last TxCommit
        self._last_commit: TxCommit | None = None
        self._transactions = 0  # complete transactions among the pending events
        self._chunk_open = False  # the sink holds an uncommitted chunk of a transaction
        # Operations in chunks applied but not yet committed, counted when they commit.
        self._chunked_ops: Counter[tuple[TableId, Op]] = Counter()
        self._oldest = 0.0  # monotonic time the oldest pending item arrived
        self._durable: Position | None = None
        self._schemas: dict[TableId, TableSchema] = {}
        self._last_idle_checkpoint = 0.0
        # Where each copied table's changes start: stream events before it are in the copy.
        self._starts: dict[TableId, tuple[int, ...]] = {}
        self._snapshot_wanted = False
        self._last_discovery = time.monotonic()
        self._sequences: SequenceSync | None = None
        self._last_sequence_sync = 0.0
        self._last_status = 0.0
        self._last_summary = time.monotonic()
        # What operators see (the API, metrics): read from other threads, written only here.
        self.metrics = PipelineMetrics(config.name)
        self.state = "starting"
        self.metrics.state("starting")
        self.started_at: datetime | None = None
        self.paused_at: datetime | None = None
        self._pause_wanted = threading.Event()
        self._rate = RateWindow()
        self._applied_lag = 0.0  # end-to-end lag of the last commit
        self._read_started_ns = 0  # wall clock of the oldest pending change, for tracing
        self._debug = self._log.is_enabled_for(logging.DEBUG)  # once: flushes are hot
        self.on_working: Callable[[bool], None] | None = None
        """Called when the pipeline starts streaming (False), and at its first commit (True)."""
        self._told_committed = False
        self.streaming_since: float | None = None  # monotonic time streaming began
        self.retrying = False  # set by the supervisor when this run retries a fault
        self._dlq = DeadLetterQueue(config, dead_letters) if dead_letters is not None else None
        self._validator = Validator(config.validation)
        self._last_dlq_check = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    def load_checkpoint(self) -> Position | None:
        """The stored checkpoint, parsed by the source."""
        stored: Checkpoint | None = self._store.load(self.name)
        if stored is None:
            return None
        return self._source.parse_position(stored.position)

    def check(self, checkpoint: Position | None) -> list[Problem]:
        """Every preflight finding of the source and the sink, starting from ``checkpoint``."""
        problems = self._source.preflight(checkpoint) + self._sink.preflight()
        source_id = self._source.identity()
        if source_id is not None and source_id == self._sink.identity():
            problems.append(
                Problem(
                    Severity.ERROR,
                    "the source and the sink are the same database: the pipeline would copy "
                    "tables onto themselves",
                    "point the sink DSN at another database",
                )
            )
        return problems

    def run(self) -> None:
        """Check, prepare, then stream until the stop event is set or something fails."""
        try:
            checkpoint = self.load_checkpoint()
            problems = self.check(checkpoint)
            for problem in problems:
                if problem.severity is Severity.WARNING:
                    self._log.warning(problem.message, fix=problem.fix)
            errors = [str(p) for p in problems if p.severity is Severity.ERROR]
            if errors:
                raise PreflightError(errors)
            self._sync_tables(new_pipeline=checkpoint is None)
            start = self._source.prepare(
                checkpoint,
                lambda position: self._store.save(self.name, position),
                export_snapshot=checkpoint is None and self._snapshots_enabled,
            )
            self._durable = start
            if self._dlq is not None:
                self._dlq.load()
            self.started_at = datetime.now(UTC)
            self._phase("starting", started=True)
            self._run_snapshots()
            self._phase("streaming")
            self._stream(start)
        except Stopped:
            self.report_state("stopped")
            self._log.info("stopped during the snapshot; the next run resumes it")
        except BaseException as exc:
            self._sink.rollback()
            # A transient failure is retried by the supervisor, from the checkpoint.
            self.report_state("retrying" if is_transient(exc) else "failed", error=str(exc))
            raise
        else:
            self.report_state("stopped")
            self._log.info("stopped", checkpoint=str(self._durable), **self._summary())
        finally:
            self.paused_at = None
            self.close()

    def close(self) -> None:
        """Close the source, sink and checkpoint store connections; idempotent."""
        if self._sequences is not None:
            self._sequences.close()
            self._sequences = None
        self._source.close()
        self._sink.close()
        self._store.close()
        if self._dlq is not None:
            self._dlq.store.close()

    # --- snapshots --------------------------------------------------------------------------

    @property
    def _snapshots_enabled(self) -> bool:
        return self.config.source.snapshot == "initial"

    def _sync_tables(self, new_pipeline: bool) -> None:
        """Update the captured table set; ask for a copy of tables whose rows the stream lacks."""
        tables, added = self._source.sync_tables(self._store.captured_tables(self.name))
        self._last_discovery = time.monotonic()
        wanted = tables if new_pipeline else added
        if wanted and self._snapshots_enabled:
            self._store.request_snapshot(self.name, wanted, resync=False)
        elif wanted:
            self._log.info(
                "existing rows are not copied (snapshot: never); streaming changes only",
                tables=", ".join(str(t) for t in wanted),
            )
        self._snapshot_wanted = bool(wanted) and self._snapshots_enabled

    def _run_snapshots(self) -> None:
        """Copy every table waiting for a copy, then load where each table's stream starts."""
        self._snapshot_wanted = False
        states = self._store.snapshot_tables(self.name)
        # Tables asked for again while being copied are still waiting: copy them again now.
        for _ in range(3):
            pending = [t for t in states if t.state != "done"]
            if not pending:
                break
            schemas = self._source.describe([t.table for t in pending])
            gone = [t for t in pending if t.table not in schemas]
            if gone:
                self._log.warning(
                    "not copying tables that are no longer captured (dropped, or no longer "
                    "matching the patterns)",
                    tables=", ".join(str(t.table) for t in gone),
                )
            copy = [t for t in pending if t.table in schemas]
            if not copy:
                break
            self._phase("snapshotting")
            SnapshotRound(
                self.config,
                self._source,
                self._sink,
                self._store,
                self._stop,
                report=lambda: self._store.report(self.name, "snapshotting"),
            ).run(copy, schemas)
            states = self._store.snapshot_tables(self.name)
        parse = self._source.parse_position
        # Only starts the stream has not reached yet matter: the changes before them are in
        # the copy. Older ones are left out, since positions are only comparable on one
        # server, and a MySQL source resumed by GTID on another must not skip by them.
        durable = self._durable.order_key() if self._durable is not None else None
        self._starts = {}
        for state in states:
            if state.state == "done" and state.start is not None:
                key = parse(state.start).order_key()
                if durable is None or key > durable:
                    self._starts[state.table] = key

    def _between_transactions(self, now: float) -> None:
        """At a clean point (nothing pending, nothing open in the sink): discover new tables
        and run requested copies."""
        interval = self.config.source.discover_interval_s
        if interval and now - self._last_discovery >= interval:
            self._sync_tables(new_pipeline=False)
        if self._snapshot_wanted:
            self._run_snapshots()
            self._phase("streaming")
        every = self.config.sync_sequences_interval_s
        if every and now - self._last_sequence_sync >= every:
            self._sync_sequences(now)
        dlq = self._dlq
        if dlq is not None and now - self._last_dlq_check >= STATUS_INTERVAL:
            # Operators replay or discard entries from outside (replicator dlq).
            self._last_dlq_check = now
            dlq.load()
            if dlq.replay_wanted:
                self._replay()

    def _sync_sequences(self, now: float) -> None:
        """Keep target sequences at or above the source's (continuous cutover readiness)."""
        self._last_sequence_sync = now
        if self._sequences is None:
            self._sequences = SequenceSync(self.config)
        try:
            results = self._sequences.run()
        except ReplicatorError as exc:
            # Sequences are a convenience next to the data: a failure here must not stop it.
            self._log.warning("could not synchronise sequences", error=exc.message)
            self._sequences.close()
            self._sequences = None
            return
        for result in results:
            if result.failed:
                self._log.warning("sequence not synchronised", detail=result.summary())

    def _phase(self, phase: str, started: bool = False) -> None:
        """Enter ``phase``: for operators (API, metrics) and in the store (``status``)."""
        self.state = phase
        self.metrics.state(self._shown(phase))
        self._store.report(self.name, phase, started=started)
        if phase == "streaming" and self.streaming_since is None:
            self.streaming_since = time.monotonic()
            if self.on_working is not None:
                self.on_working(False)

    def _shown(self, phase: str) -> str:
        # A pipeline restarted after a transient fault is still retrying until it is under
        # way (the supervisor's view, which metrics follow).
        return "retrying" if phase == "starting" and self.retrying else phase

    def report_state(self, phase: str, error: str | None = None) -> None:
        """Enter ``phase`` where operators see it, never failing (it is informational)."""
        self.state = phase
        self.metrics.state(self._shown(phase))
        try:
            self._store.report(self.name, phase, error=error)
        except Exception as exc:  # noqa: BLE001 - status is informational; keep the real error
            # While retrying, the target being down is the news already logged.
            level = self._log.debug if phase == "retrying" else self._log.warning
            level("could not record the pipeline's status", error=str(exc))

    # --- the loop ---------------------------------------------------------------------------

    def _stream(self, start: Position) -> None:
        batch = self.config.batch
        max_age = batch.max_age_ms / 1000
        stream = iter(self._source.stream(start))
        while True:
            try:
                item = next(stream)
            except StopIteration:
                return
            except BaseException:
                # The source failed: every transaction read completely is still good to keep.
                self._keep_complete()
                raise
            now = time.monotonic()
            if isinstance(item, ChangeEvent):
                self._add_event(item, now)
                if self._full(batch.max_events, batch.max_bytes):
                    if self._last_commit is not None:
                        self._flush()
                    if self._full(batch.max_events, batch.max_bytes):
                        self._flush_chunk()
            elif isinstance(item, TxCommit):
                self._last_commit = item
                self._boundary = len(self._pending)
                self._transactions += 1
                if not self._oldest:
                    self._oldest = now
            elif item.position is None:
                # The source has nothing more ready: apply what is complete right away.
                if self._last_commit is not None:
                    self._flush()
            else:
                self._idle_position(item, now)
            if self._last_commit is not None and now - self._oldest >= max_age:
                self._flush()
            if self._pause_wanted.is_set() and not self._chunk_open:
                if self._last_commit is not None:
                    self._flush()
                self._hold()
            if self._stop.is_set():
                if self._last_commit is not None:
                    self._flush()
                if self._pending or self._chunk_open:
                    # Part of a transaction was read but it did not end yet: leave it for
                    # the next run, which resumes at the last checkpoint.
                    self._sink.rollback()
                return
            if now - self._last_status >= STATUS_INTERVAL:
                self._report(now)
            if not self._pending and not self._chunk_open:
                self._between_transactions(now)

    # --- pause and resume -------------------------------------------------------------------

    def pause(self) -> None:
        """Ask the pipeline to pause at the next transaction boundary (from any thread)."""
        self._pause_wanted.set()

    def resume(self) -> None:
        """Undo :meth:`pause` (from any thread); the stream goes on exactly where it stopped."""
        self._pause_wanted.clear()

    @property
    def pause_requested(self) -> bool:
        """Whether a pause was asked for and not undone."""
        return self._pause_wanted.is_set()

    def _hold(self) -> None:
        """Apply and acknowledge nothing until resumed or stopped.

        Changes of a transaction not yet complete stay pending in memory; the source's reader
        fills its queue, then keeps its connection alive without reading further.
        """
        self.paused_at = datetime.now(UTC)
        self._phase("paused")
        self._log.info("paused", checkpoint=str(self._durable))
        last_report = time.monotonic()
        while self._pause_wanted.is_set() and not self._stop.wait(_PAUSE_POLL):
            now = time.monotonic()
            if now - last_report >= STATUS_INTERVAL:
                last_report = now
                # The store's heartbeat tells ``replicator status`` the pipeline is alive.
                self._store.report(self.name, "paused", lag_seconds=self.lag_seconds())
        self.paused_at = None
        if not self._stop.is_set():
            self._phase("streaming")
            self._log.info("resumed", checkpoint=str(self._durable))

    # --- the loop helpers -------------------------------------------------------------------

    def _full(self, max_events: int, max_bytes: int) -> bool:
        return len(self._pending) >= max_events or self._pending_bytes >= max_bytes

    def _keep_complete(self) -> None:
        if self._last_commit is None:
            return
        try:
            self._flush()
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to report
            self._log.warning("could not commit the complete transactions", error=str(exc))

    def _add_event(self, event: ChangeEvent, now: float) -> None:
        start = self._starts.get(event.table)
        if start is not None and event.position.order_key() < start:
            return  # committed before the table's copy was taken: the copy holds it
        known = self._schemas.get(event.table)
        if known is not event.schema:
            if (
                known is not None
                and self._last_commit is not None
                and self._boundary == len(self._pending)
                and any(e.schema is known for e in self._pending)
            ):
                # Changes read with the table's previous definition are applied with it.
                self._flush()
            try:
                self._sink.ensure_table(event.schema)
            except SchemaMismatchError:
                # Keep every complete transaction before the change, then stop loudly.
                self._keep_complete()
                raise
            self._schemas[event.table] = event.schema
        if not self._pending:
            if not self._oldest:
                self._oldest = now
            self._read_started_ns = time.time_ns()
        self._pending.append(event)
        self._pending_bytes += event.size

    def _idle_position(self, heartbeat: Heartbeat, now: float) -> None:
        """Checkpoint a caught-up pipeline at the source's keepalive position (invariant 6)."""
        position = heartbeat.position
        assert position is not None
        at_boundary = len(self._pending) == self._boundary and not self._chunk_open
        if not at_boundary or now - self._last_idle_checkpoint < IDLE_CHECKPOINT_INTERVAL:
            return
        reference = self._last_commit.position if self._last_commit else self._durable
        if reference is not None and position.order_key() <= reference.order_key():
            return
        last = self._last_commit
        self._last_commit = TxCommit(position, last.commit_ts if last else None)
        self._boundary = len(self._pending)
        self._last_idle_checkpoint = now
        self._flush()

    def _flush(self) -> None:
        """Commit everything up to the last transaction boundary, then acknowledge it."""
        commit = self._last_commit
        assert commit is not None
        cut = self._boundary
        events = self._pending[:cut]
        started = time.monotonic()
        with tracing.batch(
            self.name,
            read_started_ns=self._read_started_ns if events else None,
            events=len(events),
            transactions=self._transactions,
        ):
            failpoints.fail("pipeline.before_apply")
            dlq = self._dlq
            if dlq is not None:
                events = self._admit(events, dlq)
            durable = self._apply_isolating(
                Batch(events=events, commit=commit, transactions=self._transactions)
            )
            assert durable is not None
            failpoints.fail("pipeline.after_commit")
            # Only now, with data and checkpoint committed together, may the source let go.
            with tracing.step("acknowledge"):
                self._source.acknowledge(durable)
            failpoints.fail("pipeline.after_acknowledge")
            if self._debug:
                self._log.debug(
                    "batch committed",
                    events=len(events),
                    transactions=self._transactions,
                    checkpoint=str(durable),
                    seconds=round(time.monotonic() - started, 4),
                )
        self._durable = durable
        if not self._told_committed:
            self._told_committed = True
            if self.on_working is not None:
                self.on_working(True)
        if dlq is not None:
            events = dlq.applied(events)
            dlq.committed()
        tally = self._chunked_ops + Counter((e.table, e.op) for e in events)
        self._count(tally, commit, time.monotonic() - started)
        self._chunked_ops = Counter()
        self.counters.transactions += self._transactions
        rest = self._pending[cut:]
        self._pending = rest
        self._pending_bytes = sum(e.size for e in rest)
        self._boundary = 0
        self._last_commit = None
        self._transactions = 0
        self._chunk_open = False
        self._oldest = time.monotonic() if rest else 0.0
        if rest:
            self._read_started_ns = time.time_ns()

    def _admit(self, events: list[ChangeEvent], dlq: DeadLetterQueue) -> list[ChangeEvent]:
        """The events to apply: those breaking a validation rule, and those of held keys,
        go to the dead-letter queue instead."""
        validator = self._validator
        if validator:
            kept = []
            for event in events:
                problem = validator.problem(event)
                if problem is None:
                    kept.append(event)
                else:
                    dlq.invalid(event, *problem)
            events = kept
        return dlq.screen(events) if dlq.active else events

    def _apply_isolating(self, batch: Batch) -> Position | None:
        """Apply a batch; when the target refuses some of its changes, apply the rest and
        dead-letter those (DESIGN invariant 7), all in the one target transaction."""
        dlq = self._dlq
        if dlq is not None:
            dlq.attach(batch)
        try:
            return self._apply(batch)
        except SinkError as exc:
            if not exc.rejected or dlq is None or not self._sink.capabilities.isolates_rejects:
                raise
            self._log.info(
                "the target refused part of a batch: applying the rest, dead-lettering the "
                "refused changes",
                events=len(batch.events),
                error=exc.message,
            )
            self._sink.isolate(batch.events, dlq.screen, dlq.reject)
        rest = Batch(events=[], commit=batch.commit, transactions=batch.transactions)
        dlq.attach(rest)
        return self._sink.apply(rest, self.name)

    def _replay(self) -> None:
        """Apply the dead-letter entries an operator asked to replay (at a clean point)."""
        assert self._dlq is not None and self._durable is not None
        applied = replay(self._dlq, self._sink, self._source, self._schemas, self._durable)
        if applied:
            tally = Counter((e.table, e.op) for e in applied)
            self._count(tally, TxCommit(self._durable, None), 0.0)

    def _apply(self, batch: Batch) -> Position | None:
        """Apply a batch; a deadlock or serialization failure on the target (another writer
        in the way) is retried in place, since nothing of the batch was committed.

        Only a batch that is the whole target transaction can be retried here: after a
        chunk of a large transaction, the rolled-back chunks are no longer in memory, and the
        supervisor restarts from the checkpoint instead.
        """
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                return self._sink.apply(batch, self.name)
            except SinkError as exc:
                if not exc.conflict or self._chunk_open:
                    raise
                if attempt == _CONFLICT_ATTEMPTS or self._stop.is_set():
                    raise
                errorlog.record(self.name, exc, retried="batch re-applied")
                delay = min(0.05 * 2**attempt, 2.0) * _JITTER.uniform(0.5, 1.5)
                self._log.warning(
                    "the target refused the batch over a conflict with another writer; "
                    "applying it again",
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=exc.message,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _flush_chunk(self) -> None:
        """Apply part of a transaction too large for one batch; its commit comes later."""
        # Only ever the unfinished transaction: complete ones were committed just before.
        assert self._last_commit is None
        events = self._pending
        dlq = self._dlq
        if dlq is not None:
            events = self._admit(events, dlq)
        self._apply_isolating(Batch(events=events, commit=None))
        if dlq is not None:
            events = dlq.applied(events)
        self._chunked_ops.update((e.table, e.op) for e in events)
        self._chunk_open = True
        self._pending = []
        self._pending_bytes = 0
        self._boundary = 0

    def _count(self, tally: Counter[tuple[TableId, Op]], commit: TxCommit, seconds: float) -> None:
        ops: Counter[Op] = Counter()
        for (_, op), count in tally.items():
            ops[op] += count
        counters = self.counters
        counters.events += ops.total()
        counters.inserted += ops[Op.INSERT] + ops[Op.READ]
        counters.updated += ops[Op.UPDATE]
        counters.deleted += ops[Op.DELETE]
        counters.truncated += ops[Op.TRUNCATE]
        ts = commit.commit_ts
        # A keepalive checkpoint carries no commit time: the pipeline is caught up.
        self._applied_lag = max(0.0, time.time() - ts.timestamp()) if ts else 0.0
        self.metrics.committed(tally, self._transactions, seconds, ops.total(), ts)
        self.metrics.lag(self._applied_lag)
        self._rate.add(counters.events)

    def lag_seconds(self) -> float:
        """End-to-end lag: the age of the oldest change read but not committed to the target,
        else that of the last change committed (0 once a keepalive showed it caught up)."""
        pending = self._pending  # read once: other threads ask, the engine replaces the list
        if pending:
            ts = pending[0].commit_ts
            if ts is not None:
                return max(0.0, time.time() - ts.timestamp())
        return self._applied_lag

    def events_per_second(self) -> float:
        """Change events committed per second over the last few seconds."""
        return self._rate.rate(self.counters.events)

    @property
    def dead_letters_open(self) -> int:
        """Open entries in the pipeline's dead-letter queue (each holds its key)."""
        return self._dlq.open_count if self._dlq is not None else 0

    @property
    def durable_position(self) -> Position | None:
        """The last position committed to the target with its checkpoint."""
        return self._durable

    def _report(self, now: float) -> None:
        self._last_status = now
        lag = self.lag_seconds()
        self.metrics.lag(lag)
        self._store.report(self.name, "streaming", lag_seconds=lag)
        # Copies asked for from outside (replicator snapshot) while the pipeline runs.
        if any(t.state != "done" for t in self._store.snapshot_tables(self.name)):
            self._snapshot_wanted = True
        if now - self._last_summary >= SUMMARY_INTERVAL:
            self._last_summary = now
            self._log.info("progress", checkpoint=str(self._durable), **self._summary())

    def _summary(self) -> dict[str, Any]:
        c = self.counters
        return {
            "transactions": c.transactions,
            "inserted": c.inserted,
            "updated": c.updated,
            "deleted": c.deleted,
            "truncated": c.truncated,
        }
