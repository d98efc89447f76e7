"""The pipeline's side of the dead-letter queue: which keys are held, the entries a batch
adds, and replays the operator asked for.

With ``policy: hold_key`` (the default) a key with an open entry is *held*: every later
change to it becomes an entry too (kind ``held``, behind the first), so the target never
shows a newer version of a row over a missing older one. The held changes are persisted with
the entry, so the source is still acknowledged and nothing pins its log while a key waits.
With ``policy: skip`` later changes are applied, and the open entries of their key are marked
``superseded``.

A replay (``replicator dlq replay``) marks entries ``replay``; the pipeline applies them at its
next clean point, with every open entry of the same keys behind them, in source order.
"""

from __future__ import annotations

from collections.abc import Callable

from replicator.config import PipelineConfig
from replicator.contracts import Batch, Sink, Source
from replicator.dlq.entry import (
    HELD,
    INVALID,
    REJECTED,
    REPLAY,
    REPLAYED,
    SUPERSEDED,
    DeadLetter,
    KeyId,
    Resolution,
    dead_letter,
    event_keys,
    replay_event,
)
from replicator.dlq.store import DeadLetterStore
from replicator.errors import ReplicatorError, SinkError
from replicator.events import ChangeEvent, Position, TableId, TableSchema, TxCommit
from replicator.observability import errorlog
from replicator.observability.logging import get_logger
from replicator.observability.metrics import DEAD_LETTERED, DLQ_OPEN


class DeadLetterQueue:
    """What one pipeline's DLQ holds, and the entries and resolutions of the open batch."""

    def __init__(self, config: PipelineConfig, store: DeadLetterStore) -> None:
        self.store = store
        self.pipeline = config.name
        self._hold = config.dead_letter.policy == "hold_key"
        self.log = get_logger(pipeline=config.name)
        # Key → the entry holding it (hold_key), or the entries it may supersede (skip).
        self._held: dict[KeyId, str] = {}
        self._skipped: dict[KeyId, list[str]] = {}
        self.open_count = 0
        self.replay_wanted = False
        # The open target transaction's additions, committed with it.
        self.entries: list[DeadLetter] = []
        self.resolved: list[Resolution] = []
        self._replaying: set[str] = set()  # entry keys of the replay in the open transaction
        self._taken: set[int] = set()  # ids of the events dead-lettered in it
        self._stored: list[DeadLetter] = []  # its entries already in a store not in the target
        self._stored_resolved: list[Resolution] = []
        self._gauge = DLQ_OPEN.labels(config.name)
        self._counters = {
            k: DEAD_LETTERED.labels(config.name, k) for k in (REJECTED, INVALID, HELD)
        }

    # --- state -------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the open entries: which keys they hold, whether a replay is asked for."""
        entries = self.store.open_entries(self.pipeline)
        self._held = {}
        self._skipped = {}
        for entry in entries:
            if self._hold:
                self._held.setdefault(entry.key_id, entry.entry_key)
            else:
                self._skipped.setdefault(entry.key_id, []).append(entry.entry_key)
        self.open_count = len(entries)
        self._gauge.set(self.open_count)
        self.replay_wanted = any(e.status == REPLAY for e in entries)

    @property
    def active(self) -> bool:
        """Whether events must be screened (some key is held, or may be superseded)."""
        return bool(self._held or self._skipped)

    # --- a batch -----------------------------------------------------------------------------

    def screen(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """The events to apply; those of held keys become ``held`` entries instead."""
        if not self._held and not self._skipped:
            return events
        kept: list[ChangeEvent] = []
        for event in events:
            keys = event_keys(event)
            behind = next((self._held[k] for k in keys if k in self._held), None)
            if behind is None:
                kept.append(event)
                for k in keys:
                    for superseded in self._skipped.pop(k, ()):
                        self.resolved.append(
                            Resolution(
                                superseded,
                                SUPERSEDED,
                                f"a later change to the key (at {event.position}) was applied "
                                "over it (policy skip)",
                            )
                        )
                continue
            entry = dead_letter(
                self.pipeline,
                event,
                HELD,
                f"held behind dead-letter entry {behind}: an earlier change to this key was "
                "not applied",
                held_behind=behind,
            )
            self._add(entry, keys, event)
        return kept

    def reject(self, event: ChangeEvent, error: SinkError) -> None:
        """The target refused ``event`` even alone: dead-letter it, hold its key."""
        entry = dead_letter(
            self.pipeline,
            event,
            REJECTED,
            error.message,
            sqlstate=error.sqlstate or None,
            attempts=2,  # with its batch, then alone
        )
        self.log.warning(
            "the target refused a change: dead-lettered",
            table=str(event.table),
            position=str(event.position),
            entry=entry.entry_key,
            error=error.message,
        )
        self._add(entry, event_keys(event), event)

    def invalid(self, event: ChangeEvent, rule: str, message: str) -> None:
        """A validation rule refused ``event``: dead-letter it, hold its key."""
        entry = dead_letter(self.pipeline, event, INVALID, message, rule=rule, attempts=1)
        self.log.warning(
            "a change failed a validation rule: dead-lettered",
            table=str(event.table),
            position=str(event.position),
            rule=rule,
            entry=entry.entry_key,
        )
        self._add(entry, event_keys(event), event)

    def applied(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """``events`` without those this transaction dead-lettered."""
        if not self._taken:
            return events
        return [e for e in events if id(e) not in self._taken]

    def _add(self, entry: DeadLetter, keys: list[KeyId], event: ChangeEvent) -> None:
        self._taken.add(id(event))
        self.entries.append(entry)
        for k in keys:
            if self._hold:
                self._held.setdefault(k, entry.entry_key)
            elif entry.kind != HELD:
                self._skipped.setdefault(k, []).append(entry.entry_key)

    def attach(self, batch: Batch) -> None:
        """Hand the open transaction's entries to the batch that commits it (stores in the
        target), or store them now, durably, before it commits (other stores)."""
        if not self.entries and not self.resolved:
            return
        if self.store.in_target:
            batch.dead_letters = self.entries
            batch.resolved = self.resolved
        else:
            self.store.add(self.entries)
            self.store.resolve(self.pipeline, self.resolved)
            self._stored.extend(self.entries)
            self._stored_resolved.extend(self.resolved)
            self.entries = []
            self.resolved = []

    def committed(self) -> None:
        """The batch with the entries committed: count them."""
        entries = self._stored + self.entries
        new = [e for e in entries if e.entry_key not in self._replaying]
        for entry in new:
            self._counters[entry.kind].inc()
        errorlog.dead_lettered(self.pipeline, sum(1 for e in new if e.kind != HELD))
        resolved = self._stored_resolved + self.resolved
        closed = sum(1 for r in resolved if r.status in (REPLAYED, SUPERSEDED))
        self.open_count = max(0, self.open_count + len(new) - closed)
        self._gauge.set(self.open_count)
        self._forget_open()

    def _forget_open(self) -> None:
        self.entries = []
        self.resolved = []
        self._stored = []
        self._stored_resolved = []
        self._replaying = set()
        self._taken = set()

    def discard_open(self) -> None:
        """The open transaction rolled back: forget its entries (they come back on replay of
        the stream) and re-read what is held."""
        self._forget_open()
        self.load()

    # --- replays -----------------------------------------------------------------------------

    def replay_batch(
        self, schema_of: Callable[[TableId], TableSchema | None]
    ) -> list[ChangeEvent] | None:
        """The events of the entries to replay (those asked for, and every open entry of the
        same keys behind them, in source order), or None when nothing is asked for.

        Replayed events pass :meth:`screen` and :meth:`reject` like any other: one refused
        again is stored again (one more attempt, its new error) and holds those behind it,
        which are stored again as held. Each keeps its entry, since the entry key is made
        from the event.
        """
        entries = self.store.open_entries(self.pipeline)
        keys = {e.key_id for e in entries if e.status == REPLAY}
        self.replay_wanted = False
        if not keys:
            return None
        chosen = [e for e in entries if e.key_id in keys]
        self._replaying = {e.entry_key for e in chosen}
        # These keys are being replayed: nothing holds them unless a replayed event fails.
        for k in keys:
            self._held.pop(k, None)
            self._skipped.pop(k, None)
        return [replay_event(entry, schema_of(entry.table)) for entry in chosen]

    def replayed(self, applied: list[ChangeEvent]) -> None:
        """Mark the entries of the replayed events that were applied."""
        for event in applied:
            key = dead_letter(self.pipeline, event, HELD, "").entry_key
            self.resolved.append(Resolution(key, REPLAYED))


def replay(
    dlq: DeadLetterQueue,
    sink: Sink,
    source: Source,
    schemas: dict[TableId, TableSchema],
    durable: Position,
) -> list[ChangeEvent]:
    """Apply the entries asked to be replayed, in one target transaction that rewrites the
    checkpoint where it is; the events applied (the others stay open, with their error)."""
    try:
        events = dlq.replay_batch(lambda table: _schema(table, sink, source, schemas))
    except ReplicatorError as exc:
        dlq.log.warning("could not read the dead-letter entries to replay", error=exc.message)
        return []
    if not events:
        return []
    events = [e for e in events if _replayable(e, dlq, schemas)]
    commit = TxCommit(durable, None)
    if sink.capabilities.isolates_rejects:
        sink.isolate(events, dlq.screen, dlq.reject)
        applied = dlq.applied(events)
        batch = Batch(events=[], commit=commit)
    else:
        applied = dlq.applied(dlq.screen(events))
        batch = Batch(events=applied, commit=commit)
    dlq.replayed(applied)
    dlq.attach(batch)
    sink.apply(batch, dlq.pipeline)
    dlq.committed()
    dlq.log.info(
        "replayed dead-letter entries", applied=len(applied), refused=len(events) - len(applied)
    )
    return applied


def _schema(
    table: TableId, sink: Sink, source: Source, schemas: dict[TableId, TableSchema]
) -> TableSchema | None:
    """The table's definition to replay its entries with: the stream's current one."""
    known = schemas.get(table)
    if known is None:
        found = source.describe([table]).get(table)
        if found is not None:
            sink.ensure_table(found)
            schemas[table] = known = found
    return known


def _replayable(
    event: ChangeEvent, dlq: DeadLetterQueue, schemas: dict[TableId, TableSchema]
) -> bool:
    """Whether the entry's table is still captured, and its event has a value for every
    column the table has now; if not, the entry stays open saying why."""
    if event.table not in schemas:
        dlq.reject(
            event,
            SinkError(
                f"cannot replay: {event.table} is no longer captured by the pipeline",
                fix="apply the change by hand if it is still wanted, then discard the entry",
            ),
        )
        return False
    rows = (event.after, event.before if not event.schema.key else None)
    missing = {
        c for row in rows if row is not None for c in event.schema.column_names if c not in row
    }
    if not missing:
        return True
    dlq.reject(
        event,
        SinkError(
            f"cannot replay: {event.table} has columns the entry's event lacks "
            f"({', '.join(sorted(missing))}); the table changed since",
            fix="apply the change by hand, then discard the entry",
        ),
    )
    return False
