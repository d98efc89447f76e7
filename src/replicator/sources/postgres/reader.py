"""The reader thread: replication socket → decoded events → bounded queue, plus the status
updates that tell the server what it may discard.

It reports as flushed only what the engine acknowledged (durable in the target together with
its checkpoint): invariant 1. When the queue is full it stops *reading* but keeps sending
status updates, so a slow target never lets ``wal_sender_timeout`` drop the connection. While
caught up it passes the server's keepalive position on as a :class:`Heartbeat`, which the
engine checkpoints before acknowledging: an idle slot keeps up with the WAL without ever
running ahead of the checkpoint (invariant 6).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg

from replicator.errors import ReplicatorError, SourceConnectionError, SourceError
from replicator.events import ChangeEvent, Heartbeat, StreamItem
from replicator.observability.redaction import redact
from replicator.sources.handoff import HANDOFF_BYTES, HANDOFF_ITEMS, Handoff, Stopped
from replicator.sources.postgres import pgoutput
from replicator.sources.postgres.decoding import ChangeDecoder
from replicator.sources.postgres.position import PgPosition
from replicator.sources.postgres.replication import ReplicationConnection

_READ_TIMEOUT = 0.2
_ACK_SPACING = 0.1  # at most ten status updates a second for acknowledgements
_HEARTBEAT_SPACING = 1.0
_END_TIMEOUT = 2.0  # seconds a stopping reader waits for the walsender to read its last status


class StreamReader:
    """Owns a streaming replication connection on a thread of its own."""

    def __init__(
        self,
        repl: ReplicationConnection,
        decoder: ChangeDecoder,
        start_lsn: int,
        status_interval: float,
        name: str,
        stall_timeout: float = 60.0,
    ) -> None:
        self._repl = repl
        self._stall_timeout = stall_timeout
        self._decoder = decoder
        self._interval = status_interval
        self._stopping = threading.Event()
        # Backpressure: while the queue is full, keep talking so the server does not time
        # us out.
        self._handoff = Handoff(self._stopping, while_full=self._send_status)
        # The engine thread writes _acked (a plain int: assignment is atomic); only this
        # thread talks to the connection.
        self._acked = start_lsn
        self._sent_flush = start_lsn
        self._received = start_lsn
        self._last_status = 0.0
        self._failed = False  # the thread ended on an error: the connection is not usable
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def items(self) -> Iterator[StreamItem]:
        """Queued items in order; a ``Heartbeat()`` whenever none is ready right now."""
        return self._handoff.items()

    def acknowledge(self, lsn: int) -> None:
        """Everything up to ``lsn`` is durable in the target: the server may be told so."""
        if lsn > self._acked:
            self._acked = lsn

    def stop(self) -> None:
        """Stop the thread, send a last status update with the acknowledged position, and
        end the stream cleanly, so that a stopped pipeline's slot is at its checkpoint."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            if self._acked > self._sent_flush:
                self._repl.send_status(self._received, self._acked)
            if not self._failed and not self._thread.is_alive():
                # Closing with stream data unread can lose the last status update sent,
                # ours or the thread's (see ReplicationConnection.end_stream).
                self._repl.end_stream(_END_TIMEOUT)
        except ReplicatorError:
            pass  # the slot stays at the last position confirmed: safe, only replayed

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """Items are handed over in lists (up to ``HANDOFF_ITEMS``), and whenever the socket
        has nothing more right now, so queue locking costs little per row while a quiet
        stream still reaches the engine at once."""
        repl = self._repl
        decoder = self._decoder
        last_commit_end = self._acked
        last_heartbeat = 0.0
        buffer: list[StreamItem] = []
        buffered = 0
        # Seconds spent waiting on the socket for nothing since the last message; time spent
        # handing over to a full queue does not count (we were not listening then).
        silent = 0.0
        pinged = False

        def hand_over() -> None:
            nonlocal buffer, buffered
            if buffer:
                self._handoff.put(buffer, buffered)
                buffer = []
                buffered = 0

        try:
            while not self._stopping.is_set():
                self._send_status()
                waited = time.monotonic()
                message = repl.read(0 if buffer else _READ_TIMEOUT)
                if message is None:
                    silent += time.monotonic() - waited
                    if silent >= self._stall_timeout:
                        raise SourceConnectionError(
                            f"the source sent nothing for {silent:.0f} s, not even an answer "
                            "to a keepalive request: the replication connection is stalled"
                        )
                    if silent >= self._stall_timeout / 2 and not pinged:
                        self._send_status(force=True, reply=True)
                        pinged = True
                    hand_over()
                    continue
                silent = 0.0
                pinged = False
                self._received = max(self._received, message.wal_end)
                if isinstance(message, pgoutput.Keepalive):
                    if message.reply_requested:
                        self._send_status(force=True)
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
                decoded = pgoutput.decode_message(message.payload)
                for item in decoder.feed(decoded):
                    buffer.append(item)
                    if isinstance(item, ChangeEvent):
                        buffered += item.size
                if isinstance(decoded, pgoutput.Commit):
                    last_commit_end = decoded.end_lsn
                if len(buffer) >= HANDOFF_ITEMS or buffered >= HANDOFF_BYTES:
                    hand_over()
        except Stopped:
            return
        except ReplicatorError as exc:
            failure: BaseException = exc
        except pgoutput.ProtocolError as exc:
            failure = SourceError(f"unexpected replication data: {exc}")
        except psycopg.Error as exc:
            failure = SourceConnectionError(f"source catalog query failed: {redact(str(exc))}")
        except BaseException as exc:  # noqa: BLE001 - must reach the engine thread
            failure = exc
        else:
            return
        self._failed = True
        # Complete transactions read before the failure are still worth applying.
        try:
            hand_over()
            self._handoff.fail(failure)
        except (Stopped, ReplicatorError):
            pass

    def _send_status(self, force: bool = False, reply: bool = False) -> None:
        now = time.monotonic()
        acked = self._acked
        due = now - self._last_status >= self._interval
        advanced = acked > self._sent_flush and now - self._last_status >= _ACK_SPACING
        if force or due or advanced:
            # flush_lsn is only ever a position durable in the target with its checkpoint.
            self._repl.send_status(max(self._received, acked), acked, reply)
            self._sent_flush = acked
            self._last_status = now
