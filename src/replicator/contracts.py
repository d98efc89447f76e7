"""The three seams every connector plugs into: :class:`Source`, :class:`Sink` and
:class:`CheckpointStore`.

The engine drives them in this order (DESIGN.md, invariant 1)::

    position = source.prepare(checkpoint, save_checkpoint)
    for item in source.stream(position):
        ... batch ...
        durable = sink.apply(batch)          # data (+ checkpoint) committed together
        source.acknowledge(durable)          # only now may the source discard its log
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from replicator.errors import SinkConnectionError, SinkError

if TYPE_CHECKING:
    from replicator.dlq.entry import DeadLetter, Resolution
from replicator.events import ChangeEvent, Position, StreamItem, TableId, TableSchema, TxCommit


class Severity(enum.Enum):
    """How serious a preflight finding is: errors stop ``run``, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """One preflight finding, with the fix to apply."""

    severity: Severity
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    """One table's snapshot state: ``requested``, ``copying`` or ``done``."""

    table: TableId
    state: str
    shadow: str | None
    rows_estimated: int | None
    rows_copied: int
    start: dict[str, Any] | None
    until: dict[str, Any] | None
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One part of a table copied (and committed) in one go.

    ``lo``/``hi`` bound a half-open range of the source's storage (PostgreSQL: heap blocks);
    None on both ends means the whole table, ``hi`` None alone means "to the end".
    """

    number: int
    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True, slots=True)
class ChunkState:
    """A planned chunk and, once copied, the snapshot position it was copied at."""

    chunk: Chunk
    position: dict[str, Any] | None
    rows: int


@dataclass(frozen=True, slots=True)
class TablePlan:
    """How a table will be copied: its chunks, whether chunks copied at one snapshot may be
    kept when the rest is copied at a later one, and a row estimate for progress."""

    chunks: list[Chunk]
    rows_estimated: int | None
    resumable_by_chunk: bool


COPY_POSTGRES_BINARY = "postgres-binary"
"""PostgreSQL's binary COPY format (built-in types only: it names types by OID)."""
COPY_POSTGRES_TEXT = "postgres-text"
"""PostgreSQL's text COPY format, read under Replicator's pinned session settings."""


@dataclass(slots=True)
class CopyStream:
    """Rows of one chunk in a bulk format both ends understand (e.g. ``postgres-binary``).

    ``position`` is where the stream joins these rows when the source took a snapshot of its
    own for this chunk (MySQL); None means the session's position.
    """

    format: str
    columns: tuple[str, ...]
    blocks: Iterator[bytes | bytearray | memoryview]
    position: Position | None = None


class SnapshotReader(ABC):
    """One connection reading inside a snapshot; used by one copy worker at a time."""

    recovers: bool = False
    """True when, after a transient failure (:attr:`ReplicatorError.transient`), the reader
    can copy the chunk again: it reconnects and takes a snapshot of its own by itself."""

    @abstractmethod
    def copy(
        self, schema: TableSchema, chunk: Chunk, formats: frozenset[str]
    ) -> AbstractContextManager[CopyStream]:
        """Open a stream of the chunk's rows as of the snapshot, in one of ``formats``."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call more than once."""


class SnapshotSession(ABC):
    """A consistent view of the source at ``position``: a change the stream delivers is in
    the view exactly when its position is before ``position``.

    A source may instead read each chunk at a position of its own, at or after the
    session's (its :class:`CopyStream` says where); the table's changes are then replayed
    from the earliest chunk's position, which only a keyed table absorbs, so such sources
    chunk keyed tables only.
    """

    position: Position

    @abstractmethod
    def plan(self, schema: TableSchema, chunk_rows: int) -> TablePlan:
        """Split the table into chunks of about ``chunk_rows`` rows."""

    @abstractmethod
    def reader(self) -> SnapshotReader:
        """A new reader bound to this snapshot (open them all before copying starts)."""

    @abstractmethod
    def close(self) -> None:
        """Release the snapshot; safe to call more than once."""


class Source(ABC):
    """Reads committed changes from a database's log, in commit order."""

    @abstractmethod
    def preflight(self, checkpoint: Position | None) -> list[Problem]:
        """Check that the source can serve this pipeline from ``checkpoint``; each problem
        names its fix."""

    @abstractmethod
    def sync_tables(
        self, captured: Collection[TableId] = ()
    ) -> tuple[list[TableId], list[TableId]]:
        """Bring the captured table set up to date with the configured patterns.

        Returns every captured table and the tables added to the capture just now (their
        earlier rows are not in the stream and must be copied). ``captured`` lists the
        tables the pipeline's bookkeeping in the target knows, for sources that keep no
        record of their own (PostgreSQL has its publication).
        """

    @abstractmethod
    def describe(self, tables: list[TableId]) -> dict[TableId, TableSchema]:
        """Current definitions of those ``tables`` that are captured and still exist."""

    @abstractmethod
    def open_snapshot(self) -> SnapshotSession:
        """A consistent snapshot of the source, with the stream position it corresponds to.

        Right after :meth:`prepare` created the pipeline's slot with ``export_snapshot``, this
        is the slot's own snapshot (at the slot's starting point).
        """

    @abstractmethod
    def parse_position(self, data: dict[str, Any]) -> Position:
        """Rebuild a position from its JSON form (as stored in a checkpoint)."""

    @abstractmethod
    def prepare(
        self,
        checkpoint: Position | None,
        save_checkpoint: Callable[[Position], None],
        export_snapshot: bool = False,
    ) -> Position:
        """Get ready to stream and return the position streaming starts from.

        Creates what the source needs (e.g. a replication slot) when it is missing, saving the
        starting checkpoint through ``save_checkpoint`` before anything is streamed. Raises
        :class:`~replicator.errors.CheckpointMismatchError` when the source's state and the
        checkpoint disagree, rather than silently skipping or repeating changes.
        """

    @abstractmethod
    def stream(self, start: Position) -> Iterator[StreamItem]:
        """Yield changes after ``start``: events of a transaction, then its ``TxCommit``.

        Yields ``Heartbeat(None)`` whenever nothing more is ready right now and at least every
        second while idle (so the engine can flush promptly), and ``Heartbeat(position)`` when
        caught up at a resume point the engine may checkpoint.
        """

    @abstractmethod
    def acknowledge(self, position: Position) -> None:
        """Tell the source that everything up to ``position`` is durable in the target."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; safe to call more than once."""

    @abstractmethod
    def status(self, checkpoint: Position | None = None) -> dict[str, Any]:
        """Source-side state for ``replicator status`` (e.g. slot position and lag, measured
        from ``checkpoint`` where the source keeps no position of its own). ``active`` says
        whether a pipeline is reading right now, when the source can tell."""

    @abstractmethod
    def drop(self) -> list[str]:
        """Remove what the pipeline created in the source; return a line per removed object."""

    def identity(self) -> str | None:
        """A string naming the database instance read from, to catch a pipeline whose source
        and target are the same database; None when unknown."""
        return None


@dataclass(frozen=True, slots=True)
class SinkCapabilities:
    """What a sink can do, read by the engine instead of checking classes."""

    transactional_checkpoint: bool
    """True when ``apply`` writes the checkpoint in the same transaction as the data."""
    isolates_rejects: bool = False
    """True when the sink can :meth:`~Sink.isolate` the events its target refuses."""


@dataclass(slots=True)
class Batch:
    """Consecutive stream events handed to a sink in one call.

    ``commit`` is set when the batch ends at a transaction boundary: the sink then makes the
    batch durable, together with every earlier batch it holds open, and ``commit.position``
    becomes the checkpoint. When ``commit`` is None the batch is one chunk of a transaction too
    large to hold in memory: the sink applies it but keeps its target transaction open.
    """

    events: list[ChangeEvent] = field(default_factory=list)
    commit: TxCommit | None = None
    transactions: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    """New dead-letter entries a sink that keeps the DLQ in its target writes in the same
    transaction (``DeadLetterStore.in_target``)."""
    resolved: list[Resolution] = field(default_factory=list)
    """Status changes of dead-letter entries (replayed, superseded) this batch causes, for a
    sink that keeps the DLQ in its target to write in the same transaction."""


@dataclass(slots=True)
class ApplyStats:
    """Counts of what a sink applied, for status and logs."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    truncated: int = 0

    @property
    def rows(self) -> int:
        """Rows changed by inserts, updates and deletes."""
        return self.inserted + self.updated + self.deleted


class Sink(ABC):
    """Applies batches of change events to a target, whole source transactions at a time."""

    capabilities: SinkCapabilities

    @abstractmethod
    def preflight(self) -> list[Problem]:
        """Check that the target can serve this pipeline; each problem names its fix."""

    @abstractmethod
    def ensure_table(self, schema: TableSchema, replacing: bool = False) -> None:
        """Create the target table when missing; raise SchemaMismatchError when incompatible.

        ``replacing``: a snapshot is about to replace the table's rows, so rows left by an
        earlier source table of the same name are no reason to stop.
        """

    @abstractmethod
    def apply(self, batch: Batch, pipeline: str) -> Position | None:
        """Apply a batch; return the position now durable, or None if nothing was committed."""

    @abstractmethod
    def rollback(self) -> None:
        """Abandon an open, uncommitted target transaction (e.g. on shutdown mid-transaction)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; safe to call more than once."""

    def identity(self) -> str | None:
        """A string naming the database instance written to; None when unknown."""
        return None

    def isolate(
        self,
        events: list[ChangeEvent],
        screen: Callable[[list[ChangeEvent]], list[ChangeEvent]],
        reject: Callable[[ChangeEvent, SinkError], None],
    ) -> None:
        """Apply ``events`` in the open target transaction (opening one if none), leaving
        out those the target refuses, each reported to ``reject``; commit nothing.

        Called after :meth:`apply` raised a :class:`SinkError` with ``rejected`` set, which
        left the transaction as it was before that call. ``screen`` is applied to every group
        of events right before it is written and returns those still to apply (an earlier
        refusal may hold later changes to its key).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot isolate refused events")

    def probe(self) -> None:
        """Raise unless the target answers now (how a circuit breaker checks it is back)."""
        errors = [p for p in self.preflight() if p.severity is Severity.ERROR]
        if errors:
            raise SinkConnectionError(f"the target is not ready: {errors[0]}")

    def snapshot_writer(self, pipeline: str) -> SnapshotWriter:
        """A writer with its own connection, for one copy worker."""
        raise NotImplementedError(f"{type(self).__name__} cannot take a snapshot copy")


class SnapshotWriter(ABC):
    """Writes copied rows into the target, each chunk committed with its bookkeeping."""

    formats: frozenset[str]
    """The :class:`CopyStream` formats this writer accepts."""

    @abstractmethod
    def chunks(self, table: TableId) -> list[ChunkState]:
        """The table's stored chunk plan (empty when none)."""

    @abstractmethod
    def start_table(
        self,
        schema: TableSchema,
        plan: TablePlan,
        shadow: str | None,
        requested_at: datetime | None,
    ) -> None:
        """Record the plan and prepare the table (emptied, or an empty shadow created)."""

    @abstractmethod
    def copy_chunk(
        self,
        schema: TableSchema,
        chunk: Chunk,
        stream: CopyStream,
        position: Position,
        *,
        shadow: str | None,
        upsert: bool,
        progress: Callable[[int], None],
    ) -> int:
        """Write the chunk and mark it copied at ``position`` in one transaction; return rows.

        ``upsert`` when rows of this chunk may already be present (copied at an earlier
        snapshot); ``progress`` is called with rows written so far.
        """

    @abstractmethod
    def finish_table(
        self,
        schema: TableSchema,
        shadow: str | None,
        start: Position,
        until: Position,
        requested_at: datetime | None,
    ) -> bool:
        """Mark the table copied (swapping in the shadow's rows first, atomically); False
        when a new copy was requested after ``requested_at`` (the table keeps waiting)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call more than once."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored checkpoint: the position's JSON form plus bookkeeping."""

    position: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)


class CheckpointStore(ABC):
    """Durable storage of each pipeline's resume position."""

    @abstractmethod
    def load(self, pipeline: str) -> Checkpoint | None:
        """Return the pipeline's checkpoint, or None if it has none."""

    @abstractmethod
    def save(self, pipeline: str, position: Position) -> None:
        """Durably store ``position`` as the pipeline's checkpoint."""

    @abstractmethod
    def delete(self, pipeline: str) -> bool:
        """Remove the pipeline's checkpoint; return whether one existed."""

    @abstractmethod
    def report(
        self,
        pipeline: str,
        phase: str,
        *,
        lag_seconds: float | None = None,
        error: str | None = None,
        started: bool = False,
    ) -> None:
        """Record what the running pipeline is doing, where the store can keep it."""

    def read_status(self, pipeline: str) -> dict[str, Any] | None:
        """The status last recorded by :meth:`report`, if the store keeps one."""
        return None

    def captured_tables(self, pipeline: str) -> list[TableId]:
        """Tables the pipeline has written to (or is copying)."""
        return []

    def snapshot_tables(self, pipeline: str) -> list[TableSnapshot]:
        """Snapshot state of every table the pipeline copies or has copied."""
        return []

    def request_snapshot(self, pipeline: str, tables: list[TableId], *, resync: bool) -> None:
        """Ask for ``tables`` to be (re-)copied; ``resync`` copies them beside the live ones."""
        raise NotImplementedError(f"{type(self).__name__} keeps no snapshot state")

    def record_snapshot_progress(self, pipeline: str, rows: dict[TableId, int]) -> None:  # noqa: B027 - optional
        """Store rows copied so far per table, for status."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; safe to call more than once."""


SaveCheckpoint = Callable[[Position], None]
