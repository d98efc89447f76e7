"""The PostgreSQL source: publication and slot management around a pgoutput stream.

The stream itself is read by a :class:`~.reader.StreamReader` thread; this module decides
where it starts (creating the slot, or refusing when slot and checkpoint disagree) and
forwards the engine's acknowledgements to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import psycopg

from replicator.config import PipelineConfig, PostgresSourceConfig
from replicator.contracts import Problem, Severity, Source
from replicator.errors import (
    CheckpointMismatchError,
    PreflightError,
    ReplicatorError,
    SourceConnectionError,
    SourceError,
)
from replicator.events import Position, StreamItem, TableId, TableSchema
from replicator.observability.logging import get_logger
from replicator.pgsession import IDENTITY_QUERY, cannot_connect, connection_string
from replicator.sources.postgres import catalog, pgoutput, preflight
from replicator.sources.postgres.decoding import ChangeDecoder
from replicator.sources.postgres.position import PgPosition
from replicator.sources.postgres.reader import StreamReader
from replicator.sources.postgres.replication import ReplicationConnection
from replicator.sources.postgres.snapshot import PgSnapshotSession
from replicator.sources.postgres.values import PgType

_SLOT_BUSY_WAIT = 15.0  # a killed engine's walsender needs a moment to notice and exit

# The walsender of the replication connection each slot's pipeline closed last, by slot. A
# connection given up on (stalled on a dead network path, see ``stall_timeout_s``) leaves a
# walsender that holds the slot until its ``wal_sender_timeout`` fires (60 s by default),
# which can be longer than _SLOT_BUSY_WAIT: the pipeline's next attempt then fails
# transiently, and is retried, instead of failing as if another consumer held the slot. It
# must not terminate that walsender: one blocked sending to a dead peer then hangs writing
# its FATAL message (PostgreSQL 15 tested) and keeps the slot until TCP gives up, long after
# its wal_sender_timeout would have ended it.
_closed_walsenders: dict[str, int] = {}


class PostgresSource(Source):
    """Streams committed changes of the selected tables from a PostgreSQL database."""

    def __init__(self, pipeline: PipelineConfig) -> None:
        self._pipeline = pipeline
        assert isinstance(pipeline.source, PostgresSourceConfig)  # the registry's choice
        self._config = pipeline.source
        self._slot = pipeline.slot_name
        self._publication = pipeline.publication_name
        self._app = f"replicator:{pipeline.name}"[:63]
        self._log = get_logger(pipeline=pipeline.name, source="postgres")
        self._catalog: psycopg.Connection[Any] | None = None
        self._repl: ReplicationConnection | None = None
        self._reader: StreamReader | None = None
        self._encoding = "utf-8"
        self._types: dict[int, PgType] = {}
        self._exported: PgSnapshotSession | None = None
        self._unpublishable: set[TableId] = set()

    # --- connections ----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                connection_string(self._config.dsn.secret(), self._app), autocommit=True
            )
        except psycopg.Error as exc:
            raise cannot_connect(
                SourceConnectionError,
                "the source database",
                exc,
                "check the source DSN (host, port, database, user, password) and that the "
                "server accepts connections from this host",
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
        if preflight.may_replicate(conn)[1]:
            # The role may stream; can it actually open a replication connection (pg_hba)?
            try:
                ReplicationConnection(self._config.dsn.secret(), self._app).close()
            except SourceConnectionError as exc:
                if exc.transient:
                    raise  # the server went away meanwhile: retried
                problems.append(Problem(Severity.ERROR, exc.message, exc.fix))
        return problems

    def sync_tables(
        self, captured: Collection[TableId] = ()
    ) -> tuple[list[TableId], list[TableId]]:
        """Match the patterns and bring the publication up to date (the publication is the
        record of what is captured, so ``captured`` is not needed)."""
        conn = self._catalog_conn()
        tables = catalog.match_tables(conn, self._config.tables)
        if not tables:
            raise PreflightError([f"no table in the source matches {self._config.tables}"])
        published = catalog.publication_tables(conn, self._publication) or set()
        tables = [t for t in tables if t.oid in published or self._may_publish(conn, t)]
        added = catalog.ensure_publication(conn, self._publication, tables)
        return [t.table for t in tables], [t.table for t in added]

    def _may_publish(self, conn: psycopg.Connection[Any], table: catalog.SourceTable) -> bool:
        """Whether a newly matched table can join the publication without harm.

        At start the preflight refuses such tables; a table created while the pipeline runs
        is left out instead, with the fix: publishing a table without a replica identity
        would make PostgreSQL reject its UPDATEs and DELETEs on the source.
        """
        problems = preflight.publish_problems(conn, table)
        if problems and table.table not in self._unpublishable:
            self._unpublishable.add(table.table)
            for problem in problems:
                self._log.warning(
                    "not capturing a new table",
                    table=str(table.table),
                    problem=problem.message,
                    fix=problem.fix,
                )
        return not problems

    def describe(self, tables: list[TableId]) -> dict[TableId, TableSchema]:
        """Definitions of the captured ones among ``tables``, as the stream will describe them."""
        conn = self._catalog_conn()
        wanted = set(tables)
        found = {}
        for table in catalog.match_tables(conn, self._config.tables):
            if table.table in wanted:
                try:
                    found[table.table] = catalog.describe_table(conn, table.oid)
                except LookupError:
                    continue  # dropped since it was matched
        return found

    def prepare(
        self,
        checkpoint: Position | None,
        save_checkpoint: Callable[[Position], None],
        export_snapshot: bool = False,
    ) -> PgPosition:
        """Find or create the slot and settle where to start.

        With ``export_snapshot``, a newly created slot exports its snapshot for
        :meth:`open_snapshot`; it stays usable until streaming starts.
        """
        conn = self._catalog_conn()
        server_encoding = catalog.setting(conn, "server_encoding")
        if server_encoding not in preflight.ENCODINGS:
            raise PreflightError(
                [f"the source database's encoding {server_encoding} is not supported"]
            )
        self._encoding = preflight.ENCODINGS[server_encoding]
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
            lsn, snapshot = self._repl.create_slot(self._slot, export_snapshot=export_snapshot)
            start = PgPosition(lsn)
            save_checkpoint(start)
            if snapshot is not None:
                self._exported = PgSnapshotSession(
                    self._config.dsn.secret(), self._app, start, snapshot, exporter=None
                )
            self._log.info("created replication slot", slot=self._slot, lsn=str(start))
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
            return start
        return pg_checkpoint

    def open_snapshot(self) -> PgSnapshotSession:
        """The new slot's exported snapshot if there is one, else a temporary slot's."""
        exported, self._exported = self._exported, None
        if exported is not None:
            return exported
        return PgSnapshotSession.temporary(self._config.dsn.secret(), self._app, self._slot)

    def stream(self, start: Position) -> Iterator[StreamItem]:
        """Stream from ``start``; yields a Heartbeat whenever nothing is ready right now."""
        # Streaming ends the slot's exported snapshot: it must not be handed out afterwards.
        self._exported = None
        position = _as_pg(start)
        assert position is not None and self._repl is not None
        # Asked before streaming: a replication connection takes no commands during COPY BOTH.
        interval = self._status_interval(self._repl)
        self._repl.start(self._slot, position.lsn, self._publication)
        self._log.info("streaming", slot=self._slot, start=str(position))
        decoder = ChangeDecoder(self._describe, self._lookup_type, self._encoding)
        self._reader = StreamReader(
            self._repl,
            decoder,
            position.lsn,
            interval,
            f"pg-reader-{self._pipeline.name}",
            stall_timeout=self._config.stall_timeout_s,
        )
        self._reader.start()
        return self._reader.items()

    def acknowledge(self, position: Position) -> None:
        """Record that everything up to ``position`` is durable; the reader reports it."""
        lsn = _as_pg(position)
        if lsn is not None and self._reader is not None:
            self._reader.acknowledge(lsn.lsn)

    def close(self) -> None:
        """Stop the reader (it sends a last status update) and close connections."""
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._repl is not None:
            _closed_walsenders[self._slot] = self._repl.backend_pid
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

    def status(self, checkpoint: Position | None = None) -> dict[str, Any]:
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
                _closed_walsenders.pop(self._slot, None)
                return info
            if time.monotonic() > deadline:
                if info.active_pid == _closed_walsenders.get(self._slot):
                    raise SourceConnectionError(
                        f"replication slot {self._slot} is still held by server process "
                        f"{info.active_pid}, the walsender of this pipeline's lost replication "
                        "connection; it lets go by the source's wal_sender_timeout",
                        fix="nothing to do: the pipeline retries until the slot is free",
                    )
                raise SourceError(
                    f"replication slot {self._slot} is in use by server process "
                    f"{info.active_pid}; is this pipeline already running elsewhere?",
                    fix="stop the other consumer, or run SELECT pg_terminate_backend("
                    f"{info.active_pid}); if it is a leftover",
                )
            time.sleep(0.5)

    def _lookup_type(self, oid: int) -> PgType:
        known = self._types.get(oid)
        if known is None:
            known = self._types[oid] = catalog.lookup_type(self._catalog_conn(), oid)
        return known

    def _describe(self, relation: pgoutput.Relation) -> TableSchema:
        return catalog.build_table_schema(self._catalog_conn(), relation)

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


def _refused(error: SourceConnectionError) -> bool:
    """Whether a replication connection failed because the server refuses it (pg_hba, the
    password, the privilege), rather than because it is unreachable right now."""
    message = error.message.lower()
    return any(word in message for word in ("pg_hba", "authentication", "permission", "privilege"))
