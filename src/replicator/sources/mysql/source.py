"""The MySQL / MariaDB source: where the binlog stream starts, the tables it captures, and
the reader thread that turns the binlog into transactions.

MySQL keeps no per-consumer state (no slot): the pipeline's checkpoint, stored in the
target with the data, is the only record of where it is, and the server keeps binlogs for
``binlog_expire_logs_seconds`` whatever the pipeline does. A new pipeline starts at the
server's current binlog position, saved before anything is copied or streamed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from functools import partial
from typing import Any, TypeVar

import tenacity

from replicator.config import MysqlSourceConfig, PipelineConfig
from replicator.contracts import Problem, Source
from replicator.errors import (
    CheckpointMismatchError,
    PreflightError,
    SourceConnectionError,
    SourceError,
)
from replicator.events import Position, StreamItem, TableId, TableSchema
from replicator.observability import errorlog
from replicator.observability.logging import get_logger
from replicator.sources.mysql import catalog, preflight, server, tables
from replicator.sources.mysql.binlog import BinlogConnection, BinlogTable
from replicator.sources.mysql.columns import TypeOptions
from replicator.sources.mysql.position import GtidState, MysqlPosition, file_number
from replicator.sources.mysql.reader import BinlogReader
from replicator.sources.mysql.rows import RowDecoder
from replicator.sources.mysql.snapshot import MysqlSnapshotSession, binlog_position

T = TypeVar("T")

HEARTBEAT_S = 1.0  # the server's heartbeat while idle: the reader wakes up at least this often
READ_TIMEOUT_S = 30.0  # no byte for this long despite heartbeats: the connection is dead
_REPLICA_GONE_WAIT = 10.0  # a killed pipeline's dump thread lingers until its next heartbeat


class MysqlSource(Source):
    """Streams committed row changes of the selected tables from a MySQL or MariaDB binlog."""

    def __init__(self, pipeline: PipelineConfig) -> None:
        assert isinstance(pipeline.source, MysqlSourceConfig)  # the registry's choice
        self._pipeline = pipeline
        self._config = pipeline.source
        self._args = pipeline.source.dsn.connect_args()
        self._server_id = pipeline.server_id
        self._options = TypeOptions(
            zero_dates_null=self._config.zero_dates == "null",
            tinyint1_as_boolean=self._config.tinyint1_as_boolean,
        )
        self._log = get_logger(pipeline=pipeline.name, source="mysql")
        self._conn: Any = None
        self._reader_conn: Any = None  # the reader thread's own: connections are not shared
        self._info: server.ServerInfo | None = None
        self._reader: BinlogReader | None = None
        self._captured: dict[tuple[str, str], bool] = {}
        self._described: dict[TableId, catalog.TableInfo | None] = {}
        self._decodings: dict[TableId, tables.Decoding] = {}

    # --- connections ------------------------------------------------------------------------

    def _catalog(self) -> Any:
        if self._conn is None or not self._conn.open:
            self._conn = server.connect(self._args)
        return self._conn

    def _server(self) -> server.ServerInfo:
        if self._info is None:
            self._info = server.server_info(self._catalog())
        return self._info

    def _query_catalog(self, work: Callable[[Any], T]) -> T:
        """Run catalog work, reconnecting while the source is unreachable (a restart), for
        as long as the binlog reader would (``reconnect_timeout_s``)."""

        def attempt() -> T:
            try:
                return work(self._catalog())
            except SourceConnectionError:
                self._conn = None
                raise

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(self._config.reconnect_timeout_s),
            wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10),
            retry=tenacity.retry_if_exception_type(SourceConnectionError),
            before_sleep=self._retrying,
            reraise=True,
        )
        return retrying(attempt)

    def _retrying(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if error is not None:
            errorlog.record(self._pipeline.name, error, retried="source reconnect")
        self._log.warning(
            "the source is unreachable; trying again",
            attempt=state.attempt_number,
            next_delay_s=round(state.upcoming_sleep, 1),
        )

    def _query_for_reader(self, work: Callable[[Any], T]) -> T:
        """Catalog work of the reader thread, on its own connection."""
        for attempt in (1, 2):
            if self._reader_conn is None or not self._reader_conn.open:
                self._reader_conn = server.connect(self._args)
            try:
                return work(self._reader_conn)
            except SourceConnectionError:
                self._reader_conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # --- Source contract --------------------------------------------------------------------

    def parse_position(self, data: dict[str, Any]) -> MysqlPosition:
        """Parse a stored checkpoint."""
        return MysqlPosition.from_json(data)

    def preflight(self, checkpoint: Position | None = None) -> list[Problem]:
        """Binlog settings, privileges, server id, tables and whether the checkpoint's binlog
        is still there."""
        start = _as_mysql(checkpoint)
        info = self._server()
        problems = preflight.check_source(
            self._catalog(),
            info,
            patterns=self._config.tables,
            server_id=self._server_id,
            position_mode=self._config.position,
            options=self._options,
            checkpoint=start,
            by_gtid=start is not None and self._by_gtid(start),
            pipeline=self._pipeline.name,
        )
        return problems

    def _by_gtid(self, start: MysqlPosition) -> bool:
        """Whether to resume by GTID state rather than by file and offset."""
        mode = self._config.position
        if mode == "file":
            return False
        return self._server().gtid_mode and (mode == "gtid" or start.gtid is not None)

    def _captures(self, schema: str, name: str) -> bool:
        known = self._captured.get((schema, name))
        if known is None:
            table = TableId(schema, name)
            known = self._captured[schema, name] = any(
                table.matches(p) for p in self._config.tables
            )
        return known

    def sync_tables(
        self, captured: Collection[TableId] = ()
    ) -> tuple[list[TableId], list[TableId]]:
        """Match the patterns; tables the pipeline's bookkeeping does not know yet are new."""
        found = self._query_catalog(lambda c: catalog.match_tables(c, self._config.tables))
        if not found:
            raise PreflightError([f"no table in the source matches {self._config.tables}"])
        known = set(captured)
        names = [t.table for t in found]
        return names, [t for t in names if t not in known]

    def describe(self, tables_: list[TableId]) -> dict[TableId, TableSchema]:
        """Current definitions of those ``tables_`` that exist and match the patterns."""
        found = {}
        for table in tables_:
            if not self._captures(table.schema, table.name):
                continue
            info = self._query_catalog(partial(catalog.describe, table=table))
            if info is not None:
                found[table] = tables.table_schema(table, info.columns, info.key, self._options)
        return found

    def open_snapshot(self) -> MysqlSnapshotSession:
        """A snapshot session; each chunk is read at a consistent snapshot of its own."""
        return MysqlSnapshotSession(self._args, self._server(), self._options)

    def prepare(
        self,
        checkpoint: Position | None,
        save_checkpoint: Callable[[Position], None],
        export_snapshot: bool = False,
    ) -> MysqlPosition:
        """Start at the checkpoint, or for a new pipeline at the current binlog position
        (saved first, so every later copy and change is after it)."""
        start = _as_mysql(checkpoint)
        self._wait_for_previous_reader()
        if start is None:
            start = self._query_catalog(lambda c: binlog_position(c, self._server()))
            save_checkpoint(start)
            self._log.info("starting at the current binlog position", position=str(start))
            return start
        problems = preflight.checkpoint_problems(
            self._catalog(), self._server(), start, by_gtid=self._by_gtid(start)
        )
        if problems:
            raise CheckpointMismatchError(problems[0].message, fix=problems[0].fix)
        if self._server().mariadb and start.gtid is None:
            # A checkpoint written without GTIDs: MariaDB can say what they were there.
            gtid = server.query(
                self._catalog(), "SELECT BINLOG_GTID_POS(%s, %s)", (start.file, start.pos)
            )[0][0]
            start = MysqlPosition(start.file, start.pos, None if gtid is None else str(gtid))
        return start

    def _wait_for_previous_reader(self) -> None:
        """A pipeline killed a moment ago is still registered until the server notices; a
        pipeline still registered after that is running elsewhere."""
        name = preflight.reporting_name(self._pipeline.name)
        statement = server.replica_hosts_statement(self._server())
        deadline = time.monotonic() + _REPLICA_GONE_WAIT
        while True:
            try:
                rows = server.query(self._catalog(), statement, doing="listing replicas")
            except SourceConnectionError:
                raise
            except SourceError:
                return  # no privilege to look: the server itself replaces a stale reader
            if not any(int(r[0]) == self._server_id and str(r[1]) == name for r in rows):
                return
            if time.monotonic() > deadline:
                raise SourceError(
                    f"a binlog reader with this pipeline's server_id ({self._server_id}) is "
                    "still connected to the source; is the pipeline already running elsewhere?",
                    fix="stop the other instance first (each pipeline runs once)",
                )
            time.sleep(0.5)

    def stream(self, start: Position) -> Iterator[StreamItem]:
        """Stream from ``start`` on the reader thread."""
        position = _as_mysql(start)
        assert position is not None
        info = self._server()
        by_gtid = self._by_gtid(position)
        gtids = None
        if info.gtid_mode and (position.gtid is not None or not info.mariadb):
            gtids = GtidState(info.mariadb, position.gtid or "")
        connection = BinlogConnection(
            self._args,
            self._server_id,
            info,
            heartbeat_s=HEARTBEAT_S,
            read_timeout_s=READ_TIMEOUT_S,
            reporting_name=preflight.reporting_name(self._pipeline.name),
        )
        connection.open(position, by_gtid=by_gtid, wanted=self._captures)
        self._reader = BinlogReader(
            connection,
            position,
            by_gtid=by_gtid,
            gtid_state=gtids,
            captures=self._captures,
            resolve=self._resolve,
            describe=self._current_schema,
            reconnect_timeout_s=self._config.reconnect_timeout_s,
            name=f"mysql-reader-{self._pipeline.name}",
            pipeline=self._pipeline.name,
        )
        self._reader.start()
        self._log.info(
            "streaming", start=str(position), by=("GTID" if by_gtid else "file and offset")
        )
        return self._reader.items()

    def acknowledge(self, position: Position) -> None:
        """Nothing to tell the server: MySQL keeps no per-reader position."""

    def close(self) -> None:
        """Stop the reader and close connections."""
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        for conn in (self._conn, self._reader_conn):
            if conn is not None and conn.open:
                conn.close()
        self._conn = self._reader_conn = None

    # --- decoding (called on the reader thread) ---------------------------------------------

    def _resolve(self, logged: BinlogTable) -> tables.Decoding:
        """The decoding of a logged definition: the catalog's where it is the same one."""
        table = TableId(logged.schema, logged.name)
        decoding = None
        if table in self._described:
            decoding = tables.decoding(
                table, logged.columns, logged.key, self._described[table], self._options
            )
        if decoding is None:
            info = self._query_for_reader(lambda c: catalog.describe(c, table))
            self._described[table] = info
            decoding = tables.decoding(table, logged.columns, logged.key, info, self._options)
        if decoding is None:
            self._log.warning(
                "the table's definition in the binlog differs from its current one; decoding "
                "with the binlog's",
                table=str(table),
            )
            decoding = tables.logged_decoding(table, logged.columns, logged.key, self._options)
        previous = self._decodings.get(table)
        if previous is not None and previous.schema == decoding.schema:
            decoding = previous  # the same definition: keep its schema object
        self._decodings[table] = decoding
        return decoding

    def _current_schema(self, table: TableId) -> tables.Decoding | None:
        known = self._decodings.get(table)
        if known is not None:
            return known
        info = self._query_for_reader(lambda c: catalog.describe(c, table))
        if info is None:
            return None
        schema = tables.table_schema(table, info.columns, info.key, self._options)
        names = schema.column_names
        key_of = tables.key_getter(names, info.key)
        return tables.Decoding(schema, RowDecoder([]), names, info.key, key_of)

    # --- maintenance (CLI) ------------------------------------------------------------------

    def status(self, checkpoint: Position | None = None) -> dict[str, Any]:
        """The server's binlog position, how far the checkpoint trails it, and whether the
        pipeline's reader is connected."""
        conn = self._catalog()
        info = self._server()
        current = binlog_position(conn, info)
        report: dict[str, Any] = {
            "source": info.name,
            "source_binlog": f"{current.file}:{current.pos}",
            "source_gtid": current.gtid or None,
            "server_id": self._server_id,
        }
        start = _as_mysql(checkpoint)
        if start is not None:
            logs = server.query(conn, "SHOW BINARY LOGS", doing="listing the binary logs")
            report["lag_bytes"] = _bytes_between(start, current, logs)
            oldest = min((str(r[0]) for r in logs), key=file_number, default=None)
            report["oldest_binlog"] = oldest
        try:
            rows = server.query(conn, server.replica_hosts_statement(info), doing="replicas")
            name = preflight.reporting_name(self._pipeline.name)
            report["active"] = any(int(r[0]) == self._server_id and str(r[1]) == name for r in rows)
        except SourceError:
            pass
        return report

    def drop(self) -> list[str]:
        """Nothing to remove: the pipeline creates nothing in a MySQL source."""
        return []


def _as_mysql(position: Position | None) -> MysqlPosition | None:
    if position is None or isinstance(position, MysqlPosition):
        return position
    raise SourceError(f"not a MySQL position: {position!r}")


def _bytes_between(start: MysqlPosition, end: MysqlPosition, logs: list[tuple[Any, ...]]) -> int:
    """Binlog bytes from ``start`` to ``end``, from SHOW BINARY LOGS' file sizes."""
    sizes = {str(r[0]): int(r[1]) for r in logs}
    first, last = file_number(start.file), file_number(end.file)
    if first == last:
        return max(0, end.pos - start.pos)
    total = max(0, sizes.get(start.file, start.pos) - start.pos) + end.pos
    for name, size in sizes.items():
        if first < file_number(name) < last:
            total += size
    return total
