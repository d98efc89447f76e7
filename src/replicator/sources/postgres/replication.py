"""A walsender connection speaking PostgreSQL's streaming replication protocol through libpq.

Why libpq (via ``psycopg.pq``) rather than psycopg2's ``ReplicationCursor``: psycopg2 moves
the confirmed flush position forward by itself when a keepalive arrives after the client's
last confirmation (``pq_read_replication_message`` in its ``pqpath.c``; psycopg/psycopg2#940).
Replicator must confirm only positions that are durable in the target *and* in the
checkpoint (invariants 1 and 6: the slot never runs ahead of the checkpoint, so a slot found
ahead at start-up proves that something else consumed it). Driving the protocol ourselves
makes every Standby Status Update one we wrote.
"""

from __future__ import annotations

import select
import time

from psycopg import OperationalError, pq
from psycopg.pq.abc import PGresult

from replicator.errors import SourceConnectionError, SourceError
from replicator.observability.redaction import redact
from replicator.pgsession import TRANSIENT_SQLSTATE_CLASSES, connection_string, login_refused
from replicator.sources.postgres import pgoutput


class ReplicationConnection:
    """One ``replication=database`` connection: commands, then the COPY BOTH stream."""

    def __init__(self, dsn: str, application_name: str) -> None:
        conninfo = connection_string(dsn, application_name, replication="database")
        self._pg = pq.PGconn.connect(conninfo.encode())
        if self._pg.status != pq.ConnStatus.OK:
            message = _text(self._pg.error_message)
            self._pg.finish()
            error = SourceConnectionError(
                f"cannot open a replication connection to the source: {redact(message)}",
                fix="check the source DSN, that the server accepts replication connections "
                "(pg_hba.conf 'replication' or 'all' database entry) and the role's "
                "REPLICATION privilege",
            )
            error.transient = not login_refused(message)
            raise error
        self._streaming = False

    @property
    def backend_pid(self) -> int:
        """The process id of this connection's walsender on the server."""
        return int(self._pg.backend_pid)

    # --- commands -------------------------------------------------------------------------

    def command(self, command: str) -> list[tuple[str | None, ...]]:
        """Run a replication command and return its rows as text."""
        try:
            result = self._pg.exec_(command.encode())
        except OperationalError as exc:
            raise SourceConnectionError(f"source connection lost: {redact(str(exc))}") from exc
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise _result_error(result, command.split(" ", 1)[0])
        return [
            tuple(
                None if (v := result.get_value(r, c)) is None else v.decode()
                for c in range(result.nfields)
            )
            for r in range(result.ntuples)
        ]

    def identify_system(self) -> tuple[str, int, int, str]:
        """(system identifier, timeline, current WAL flush position, database)."""
        row = self.command("IDENTIFY_SYSTEM")[0]
        return (str(row[0]), int(row[1] or 0), pgoutput.parse_lsn(row[2] or "0/0"), str(row[3]))

    def create_slot(
        self, slot: str, *, temporary: bool = False, export_snapshot: bool = False
    ) -> tuple[int, str | None]:
        """Create a logical slot for pgoutput; return its consistent point and, when asked
        for, the name of a snapshot that sees exactly what committed before that point.

        The snapshot stays importable (``SET TRANSACTION SNAPSHOT``) only until this
        connection runs its next command or closes; a temporary slot goes with the session.
        """
        kind = " TEMPORARY" if temporary else ""
        export = "EXPORT_SNAPSHOT" if export_snapshot else "NOEXPORT_SNAPSHOT"
        rows = self.command(f'CREATE_REPLICATION_SLOT "{slot}"{kind} LOGICAL pgoutput {export}')
        return pgoutput.parse_lsn(rows[0][1] or "0/0"), rows[0][2] if export_snapshot else None

    def show(self, setting: str) -> str:
        """A server setting, as the walsender sees it."""
        return str(self.command(f"SHOW {setting}")[0][0])

    # --- streaming ------------------------------------------------------------------------

    def start(self, slot: str, lsn: int, publication: str) -> None:
        """Start streaming the slot from ``lsn`` (a transaction boundary)."""
        pub = publication.replace('"', '""').replace("'", "''")
        command = (
            f'START_REPLICATION SLOT "{slot}" LOGICAL {pgoutput.format_lsn(lsn)} '
            f"(proto_version '1', publication_names '\"{pub}\"')"
        )
        try:
            self._pg.send_query(command.encode())
            result = self._pg.get_result()
        except OperationalError as exc:
            raise SourceConnectionError(f"source connection lost: {redact(str(exc))}") from exc
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
                raise _result_error(result, "START_REPLICATION")
            raise SourceError("the source did not enter replication streaming mode")
        self._pg.nonblocking = 1
        self._streaming = True

    def read(self, timeout: float) -> pgoutput.XLogData | pgoutput.Keepalive | None:
        """The next stream message, or None if none arrived within ``timeout`` seconds."""
        try:
            nbytes, data = self._pg.get_copy_data(1)
            if nbytes == 0:
                if not self._wait(select.POLLIN, timeout):
                    return None
                self._pg.consume_input()
                nbytes, data = self._pg.get_copy_data(1)
                if nbytes == 0:
                    return None
        except OperationalError as exc:
            raise SourceConnectionError(
                f"lost the replication connection to the source: {redact(str(exc))}"
            ) from exc
        if nbytes == -1:
            raise self._stream_end_error()
        return pgoutput.decode_copy_data(data)

    def send_status(self, write_lsn: int, flush_lsn: int, reply: bool = False) -> None:
        """Send a Standby Status Update; ``flush_lsn`` must be durable in the target."""
        message = pgoutput.encode_standby_status(
            write_lsn, flush_lsn, flush_lsn, pgoutput.now_pg_micros(time.time()), reply
        )
        deadline = time.monotonic() + 30
        try:
            # Non-blocking libpq: 0 means "not queued, buffer full"; flush() 1 means "some
            # bytes still pending". Either way wait for the socket to drain, within reason.
            while self._pg.put_copy_data(message) == 0:
                self._drain(deadline)
            while self._pg.flush() == 1:
                self._drain(deadline)
        except OperationalError as exc:
            raise SourceConnectionError(
                f"lost the replication connection to the source: {redact(str(exc))}"
            ) from exc

    def end_stream(self, timeout: float) -> bool:
        """End the stream with CopyDone, then read (and drop) what the server still sends
        until its own CopyDone; True if that came within ``timeout`` seconds.

        The walsender reads our messages in order, so its CopyDone proves that it processed
        every status update sent before. Closing right after a status update can lose it:
        with stream data unread in our socket, closing sends a TCP reset, and a walsender
        that meets the reset while writing exits without reading what arrived before it.
        """
        deadline = time.monotonic() + timeout
        try:
            while self._pg.put_copy_end() == 0:
                self._drain(deadline)
            while self._pg.flush() == 1:
                self._drain(deadline)
            while True:
                nbytes, _ = self._pg.get_copy_data(1)
                if nbytes == -1:
                    return True
                if nbytes == 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    if self._wait(select.POLLIN, remaining):
                        self._pg.consume_input()
        except OperationalError as exc:
            raise SourceConnectionError(
                f"lost the replication connection to the source: {redact(str(exc))}"
            ) from exc

    def close(self) -> None:
        """Close the connection (the walsender ends its session); idempotent."""
        self._pg.finish()

    def _drain(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise SourceConnectionError("the source stopped reading our status updates")
        self._wait(select.POLLOUT, 1.0)

    def _wait(self, event: int, timeout: float) -> bool:
        poller = select.poll()
        poller.register(self._pg.socket, event)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    def _stream_end_error(self) -> SourceError:
        result = self._pg.get_result()
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            return _result_error(result, "replication stream")
        return SourceConnectionError("the source ended the replication stream")


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace").strip()


def _result_error(result: PGresult, what: str) -> SourceError:
    message = redact(_text(result.error_message))
    code = _text(result.error_field(pq.DiagnosticField.SQLSTATE))
    if code.startswith(TRANSIENT_SQLSTATE_CLASSES):
        return SourceConnectionError(f"{what} failed: {message}")
    error = SourceError(f"{what} failed: {message}")
    error.sqlstate = code
    return error
