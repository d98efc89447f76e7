"""The PostgreSQL source: a pgoutput logical replication stream read by a reader thread.

The reader thread owns the replication connection. It decodes messages into events and puts
them on a queue bounded by count and bytes; when the queue is full it stops *reading* but keeps
sending status updates, so a slow target never lets ``wal_sender_timeout`` drop the
connection. It reports as flushed only what the engine acknowledged (durable in the target
together with its checkpoint): invariant 1. While caught up it passes the server's keepalive
position to the engine as a :class:`Heartbeat`, which the engine checkpoints before
acknowledging, so an idle slot keeps up with the WAL without ever running ahead of the
checkpoint: invariant 6.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.config import PipelineConfig
from replicator.contracts import Problem, Severity, Source
from replicator.engine.queue import BoundedQueue
from replicator.errors import (
    CheckpointMismatchError,
    PreflightError,
    ReplicatorError,
    SourceConnectionError,
    SourceError,
)
from replicator.events import ChangeEvent, Heartbeat, Position, StreamItem, TableSchema
from replicator.observability.logging import get_logger
from replicator.observability.redaction import redact
from replicator.pgsession import IDENTITY_QUERY, connection_string
from replicator.sources.postgres import catalog, pgoutput, preflight
from replicator.sources.postgres.decoding import ChangeDecoder
from replicator.sources.postgres.position import PgPosition
from replicator.sources.postgres.replication import ReplicationConnection
from replicator.sources.postgres.values import PgType

QUEUE_BATCHES = 64  # lists of up to _HANDOFF_ITEMS items each
QUEUE_BYTES = 64 * 1024 * 1024
_HANDOFF_ITEMS = 512
_HANDOFF_BYTES = 1024 * 1024
_READ_TIMEOUT = 0.2
_ACK_SPACING = 0.1  # at most ten status updates a second for acknowledgements
_HEARTBEAT_SPACING = 1.0
_SLOT_BUSY_WAIT = 15.0  # a killed engine's walsender needs a moment to notice and exit


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class PostgresSource(Source):
    """Streams committed changes of the selected tables from a PostgreSQL database."""

    def __init__(self, pipeline: PipelineConfig) -> None:
        self._pipeline = pipeline
        self._config = pipeline.source
        self._slot = pipeline.slot_name
        self._publication = pipeline.publication_name
        self._app = f"replicator:{pipeline.name}"[:63]
        self._log = get_logger(pipeline=pipeline.name, source="postgres")
        self._catalog: psycopg.Connection[Any] | None = None
        self._repl: ReplicationConnection | None = None
        self._queue: BoundedQueue[list[StreamItem] | list[_Failure]] = BoundedQueue(
            QUEUE_BATCHES, QUEUE_BYTES
        )
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._acked = 0  # highest LSN durable in the target; written by the engine thread
        self._sent_flush = 0
        self._received = 0
        self._last_status = 0.0
        self._status_every = pipeline.source.status_interval_s
        self._encoding = "utf-8"
        self._types: dict[int, PgType] = {}

    # --- connections ----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                connection_string(self._config.dsn.secret(), self._app), autocommit=True
            )
        except psycopg.Error as exc:
            raise SourceConnectionError(
                f"cannot connect to the source database: {redact(str(exc).strip())}",
                fix="check the source DSN (host, port, database, user, password) and that "
                "the server accepts connections from this host",
            ) from exc

    def _catalog_conn(self) -> psycopg.Connection[Any]:
        if self._catalog is None or self._catalog.closed:
            self._catalog = self._connect()
        return self._catalog

    # --- Source contract --------------------------------------------------------------------

    def parse_position(self, data: dict[str, Any]) -> PgPosition:
        """Parse a stored checkpoint."""
        return PgPosition.from_json(data)

    def preflight(self, checkpoint: Position | None = None) -> list[Problem]:
        """Settings, privileges, replica identities, publication and slot state."""
        conn = self._catalog_conn()
        problems = preflight.check_source(
            conn,
            tables=self._config.tables,
            slot=self._slot,
            publication=self._publication,
            checkpoint=_as_pg(checkpoint),
        )
        if not any(preflight.NO_REPLICATION_PRIVILEGE in p.message for p in problems):
            # The role may stream; can it actually open a replication connection (pg_hba)?
            try:
                ReplicationConnection(self._config.dsn.secret(), self._app).close()
            except SourceConnectionError as exc:
                problems.append(Problem(Severity.ERROR, exc.message, exc.fix))
        return problems

    def prepare(
        self, checkpoint: Position | None, save_checkpoint: Callable[[Position], None]
    ) -> PgPosition:
        """Sync the publication, find or create the slot, and settle where to start."""
        conn = self._catalog_conn()
        server_encoding = catalog.setting(conn, "server_encoding")
        if server_encoding not in preflight.ENCODINGS:
            raise PreflightError(
                [f"the source database's encoding {server_encoding} is not supported"]
            )
        self._encoding = preflight.ENCODINGS[server_encoding]
        tables = catalog.match_tables(conn, self._config.tables)
        if not tables:
            raise PreflightError([f"no table in the source matches {self._config.tables}"])
        added = catalog.ensure_publication(conn, self._publication, tables)
        pg_checkpoint = _as_pg(checkpoint)
        slot = self._wait_until_slot_free(conn)
        self._repl = ReplicationConnection(self._config.dsn.secret(), self._app)
        if slot is None:
            if pg_checkpoint is not None and pg_checkpoint.lsn != 0:
                raise CheckpointMismatchError(
                    f"replication slot {self._slot} is gone, but the pipeline's checkpoint is "
                    f"at {pg_checkpoint}: changes made since then cannot be streamed any more",
                    fix="re-copy the tables: replicator drop -c FILE --pipeline "
                    f"{self._pipeline.name}, then start the pipeline again",
                )
            # Mark the slot as being created first: if we crash before the real checkpoint is
            # saved, the next start knows the slot is ours and unused (see below).
            save_checkpoint(PgPosition(0))
            lsn = self._repl.create_slot(self._slot)
            start = PgPosition(lsn)
            save_checkpoint(start)
            self._log.info("created replication slot", slot=self._slot, lsn=str(start))
            self._report_uncopied(conn, tables, new_pipeline=True)
            return start
        problems = preflight.check_slot(conn, self._slot, pg_checkpoint)
        errors = [p for p in problems if p.severity is Severity.ERROR]
        if errors:
            raise CheckpointMismatchError(errors[0].message, fix=errors[0].fix)
        assert pg_checkpoint is not None
        if pg_checkpoint.lsn == 0:
            # Created by us just before a crash, never streamed: adopt its starting point.
            start = PgPosition(slot.confirmed_flush_lsn or 0)
            save_checkpoint(start)
            self._report_uncopied(conn, tables, new_pipeline=True)
            return start
        if added:
            self._report_uncopied(conn, added, new_pipeline=False)
        return pg_checkpoint

    def stream(self, start: Position) -> Iterator[StreamItem]:
        """Stream from ``start``; yields a Heartbeat whenever nothing is ready right now."""
        position = _as_pg(start)
        assert position is not None and self._repl is not None
        # Asked before streaming: a replication connection takes no commands during COPY BOTH.
        self._status_every = self._status_interval(self._repl)
        self._repl.start(self._slot, position.lsn, self._publication)
        self._acked = self._sent_flush = self._received = position.lsn
        self._log.info("streaming", slot=self._slot, start=str(position))
        self._stopping.clear()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"pg-reader-{self._pipeline.name}", daemon=True
        )
        self._reader.start()
        queue = self._queue
        while True:
            items = queue.get_nowait()
            if items is None:
                yield Heartbeat()
                items = queue.get(timeout=1.0)
                if items is None:
                    continue
            for item in items:
                if isinstance(item, _Failure):
                    raise item.error
                yield item

    def acknowledge(self, position: Position) -> None:
        """Record that everything up to ``position`` is durable; the reader reports it."""
        lsn = _as_pg(position)
        if lsn is not None and lsn.lsn > self._acked:
            self._acked = lsn.lsn

    def close(self) -> None:
        """Stop the reader (it sends a last status update) and close connections."""
        self._stopping.set()
        reader = self._reader
        if reader is not None and reader.is_alive():
            reader.join(timeout=10)
        self._reader = None
        if self._repl is not None:
            try:
                if self._acked > self._sent_flush:
                    self._repl.send_status(self._received, self._acked)
            except ReplicatorError:
                pass  # the server keeps the slot at the last confirmed position: safe
            self._repl.close()
            self._repl = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def identity(self) -> str | None:
        """Cluster system identifier and database name."""
        row = self._catalog_conn().execute(IDENTITY_QUERY).fetchone()
        return str(row[0]) if row else None

    # --- maintenance (CLI) ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Slot state and how far it trails the source's WAL."""
        conn = self._catalog_conn()
        info = catalog.slot_info(conn, self._slot)
        current = catalog.current_wal_lsn(conn)
        if info is None:
            return {
                "slot": self._slot,
                "slot_exists": False,
                "source_wal_lsn": pgoutput.format_lsn(current),
            }
        confirmed = info.confirmed_flush_lsn or 0
        return {
            "slot": self._slot,
            "slot_exists": True,
            "slot_active": info.active,
            "slot_wal_status": info.wal_status,
            "confirmed_flush_lsn": pgoutput.format_lsn(confirmed),
            "source_wal_lsn": pgoutput.format_lsn(current),
            "lag_bytes": max(0, current - confirmed),
            "retained_wal_bytes": max(0, current - (info.restart_lsn or current)),
        }

    def drop(self) -> list[str]:
        """Remove the slot and the publication; return what was removed."""
        conn = self._catalog_conn()
        removed = []
        info = catalog.slot_info(conn, self._slot)
        if info is not None:
            if info.active:
                raise SourceError(
                    f"slot {self._slot} is in use by server process {info.active_pid}",
                    fix="stop the running pipeline first (SIGTERM), then drop it",
                )
            conn.execute("SELECT pg_drop_replication_slot(%s)", (self._slot,))
            removed.append(f"replication slot {self._slot}")
        if catalog.publication_tables(conn, self._publication) is not None:
            conn.execute(
                psycopg.sql.SQL("DROP PUBLICATION {}").format(
                    psycopg.sql.Identifier(self._publication)
                )
            )
            removed.append(f"publication {self._publication}")
        return removed

    # --- internals --------------------------------------------------------------------------

    def _wait_until_slot_free(self, conn: psycopg.Connection[Any]) -> catalog.SlotInfo | None:
        deadline = time.monotonic() + _SLOT_BUSY_WAIT
        while True:
            info = catalog.slot_info(conn, self._slot)
            if info is None or not info.active:
                return info
            if time.monotonic() > deadline:
                raise SourceError(
                    f"replication slot {self._slot} is in use by server process "
                    f"{info.active_pid}; is this pipeline already running elsewhere?",
                    fix="stop the other consumer, or run SELECT pg_terminate_backend("
                    f"{info.active_pid}); if it is a leftover",
                )
            time.sleep(0.5)

    def _report_uncopied(
        self, conn: psycopg.Connection[Any], tables: list[catalog.SourceTable], new_pipeline: bool
    ) -> None:
        holding, unreadable = catalog.tables_with_rows(conn, tables)
        if unreadable:
            self._log.warning(
                "cannot tell whether these tables already hold rows (no SELECT privilege); "
                "rows that existed before the pipeline started are not copied",
                tables=", ".join(str(t) for t in unreadable),
            )
        if not holding:
            return
        names = ", ".join(str(t) for t in holding)
        if self._config.snapshot == "never":
            self._log.info(
                "existing rows are not copied (snapshot: never); streaming changes only",
                tables=names,
            )
        else:
            self._log.warning(
                "these tables already hold rows that are NOT copied to the target: the initial "
                "snapshot is not implemented yet, so only changes from now on are replicated",
                tables=names,
                new_pipeline=new_pipeline,
            )

    def _lookup_type(self, oid: int) -> PgType:
        known = self._types.get(oid)
        if known is None:
            known = self._types[oid] = catalog.lookup_type(self._catalog_conn(), oid)
        return known

    def _describe(self, relation: pgoutput.Relation) -> TableSchema:
        return catalog.build_table_schema(self._catalog_conn(), relation)

    def _read_loop(self) -> None:
        """Reader thread: socket → decoder → queue, plus status updates to the server.

        Items are handed over in lists (up to ``_HANDOFF_ITEMS``), and whenever the socket has
        nothing more to read right now, so the queue's locking costs little per row while a
        quiet stream still reaches the engine at once.
        """
        repl = self._repl
        assert repl is not None
        decoder = ChangeDecoder(self._describe, self._lookup_type, self._encoding)
        status_interval = self._status_every
        last_commit_end = self._acked
        last_heartbeat = 0.0
        buffer: list[StreamItem] = []
        buffered = 0

        def hand_over() -> None:
            nonlocal buffer, buffered
            if buffer:
                self._put(buffer, buffered, status_interval)
                buffer = []
                buffered = 0

        try:
            while not self._stopping.is_set():
                self._send_status(repl, status_interval)
                message = repl.read(0 if buffer else _READ_TIMEOUT)
                if message is None:
                    hand_over()
                    continue
                if isinstance(message, pgoutput.Keepalive):
                    self._received = max(self._received, message.wal_end)
                    if message.reply_requested:
                        self._send_status(repl, status_interval, force=True)
                    now = time.monotonic()
                    if (
                        not decoder.in_transaction
                        and message.wal_end > last_commit_end
                        and now - last_heartbeat >= _HEARTBEAT_SPACING
                    ):
                        # Everything that committed before wal_end was sent before this
                        # keepalive and is already queued, so it is a safe resume point.
                        buffer.append(Heartbeat(PgPosition(message.wal_end)))
                        hand_over()
                        last_heartbeat = now
                    continue
                self._received = max(self._received, message.wal_end)
                decoded = pgoutput.decode_message(message.payload)
                for item in decoder.feed(decoded):
                    buffer.append(item)
                    if isinstance(item, ChangeEvent):
                        buffered += item.size
                if isinstance(decoded, pgoutput.Commit):
                    last_commit_end = decoded.end_lsn
                if len(buffer) >= _HANDOFF_ITEMS or buffered >= _HANDOFF_BYTES:
                    hand_over()
        except _Stopped:
            return
        except ReplicatorError as exc:
            failure = _Failure(exc)
        except pgoutput.ProtocolError as exc:
            failure = _Failure(SourceError(f"unexpected replication data: {exc}"))
        except psycopg.Error as exc:
            failure = _Failure(
                SourceConnectionError(f"source catalog query failed: {redact(str(exc))}")
            )
        except BaseException as exc:  # noqa: BLE001 - must reach the engine thread
            failure = _Failure(exc)
        else:
            return
        # Complete transactions read before the failure are still worth applying.
        try:
            hand_over()
            self._put([failure], 0, status_interval)
        except (_Stopped, ReplicatorError):
            pass

    def _put(self, items: list[StreamItem] | list[_Failure], size: int, interval: float) -> None:
        repl = self._repl
        assert repl is not None
        # Backpressure: stop reading, but keep talking so the server does not time us out.
        while not self._queue.put(items, size, timeout=_READ_TIMEOUT):
            if self._stopping.is_set():
                raise _Stopped
            self._send_status(repl, interval)

    def _send_status(
        self, repl: ReplicationConnection, interval: float, force: bool = False
    ) -> None:
        now = time.monotonic()
        acked = self._acked
        due = now - self._last_status >= interval
        advanced = acked > self._sent_flush and now - self._last_status >= _ACK_SPACING
        if force or due or advanced:
            # flush_lsn is only ever a position durable in the target with its checkpoint.
            repl.send_status(max(self._received, acked), acked)
            self._sent_flush = acked
            self._last_status = now

    def _status_interval(self, repl: ReplicationConnection) -> float:
        """Send status well within wal_sender_timeout, and at most every status_interval_s."""
        interval = self._config.status_interval_s
        try:
            timeout_ms = _parse_ms(repl.show("wal_sender_timeout"))
        except ReplicatorError:
            return interval
        if timeout_ms > 0:
            interval = min(interval, timeout_ms / 1000 / 4)
        return max(0.2, interval)


class _Stopped(Exception):
    """The engine asked the reader to stop while it waited for queue space."""


def _as_pg(position: Position | None) -> PgPosition | None:
    if position is None or isinstance(position, PgPosition):
        return position
    raise SourceError(f"not a PostgreSQL position: {position!r}")


def _parse_ms(text: str) -> float:
    """Parse a time setting as SHOW prints it (``60s``, ``500ms``, ``1min``, ``0``)."""
    text = text.strip()
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    for unit in ("ms", "min", "s", "h", "d"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text) * 1000 if text else 0.0
