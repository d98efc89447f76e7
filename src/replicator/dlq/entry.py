"""A dead-letter entry: one change event the target would not take (or a validation rule
refused), or one held behind such an event, with everything needed to explain and replay it.

The event is kept as JSON with every value in its PostgreSQL text form (what the sink would
have written), so ``replicator dlq show`` reads naturally and a replay writes exactly the
values the source sent, as :class:`~replicator.events.RawValue`.

Entries are identified by a key derived from the pipeline, the event's position, table and
key, so writing one twice (a crash between the DLQ write and the checkpoint) keeps one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from replicator.events import (
    UNCHANGED,
    ChangeEvent,
    Column,
    Op,
    RawValue,
    Row,
    TableId,
    TableSchema,
)
from replicator.sinks.postgres.copy_format import format_value

REJECTED = "rejected"  # the target refused it (a constraint, a value that does not fit)
INVALID = "invalid"  # a validation rule refused it
HELD = "held"  # an earlier change to its key is dead-lettered: it waits behind that one

PENDING = "pending"
REPLAY = "replay"  # replay asked for: the running pipeline applies it at its next clean point
REPLAYED = "replayed"
DISCARDED = "discarded"
SUPERSEDED = "superseded"  # policy skip: a later change to its key was applied over it
STATUSES = (PENDING, REPLAY, REPLAYED, DISCARDED, SUPERSEDED)
OPEN = (PENDING, REPLAY)  # entries that still hold their key


@dataclass(frozen=True, slots=True)
class Resolution:
    """A status change of an entry, committed with the data that caused it."""

    entry_key: str
    status: str
    note: str | None = None


_UNCHANGED_JSON = {"unchanged": True}

# How a key is recognised across events: table plus the key values' text forms.
KeyId = tuple[TableId, tuple[str | None, ...]]


@dataclass
class DeadLetter:
    """One entry of the dead-letter queue."""

    pipeline: str
    kind: str
    table: TableId
    op: Op
    key: dict[str, str | None] | None
    event: dict[str, Any]
    error: str
    position: dict[str, Any]
    order_key: tuple[int, ...]
    attempts: int = 1
    sqlstate: str | None = None
    rule: str | None = None
    held_behind: str | None = None  # entry_key of the entry it waits behind
    status: str = PENDING
    id: int | None = None  # the store's number for it, once stored
    created_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None
    entry_key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.entry_key:
            self.entry_key = entry_key(self.pipeline, self.position, self.table, self.key, self.op)

    @property
    def key_id(self) -> KeyId:
        """The key it holds: its table and key values."""
        return key_id_of(self.table, self.key)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape ``dlq show --json`` and the JSONL store use."""
        return {
            "id": self.id,
            "entry_key": self.entry_key,
            "pipeline": self.pipeline,
            "status": self.status,
            "kind": self.kind,
            "table": str(self.table),
            "op": self.op.name.lower(),
            "key": self.key,
            "error": self.error,
            "sqlstate": self.sqlstate,
            "rule": self.rule,
            "attempts": self.attempts,
            "position": self.position,
            "order_key": list(self.order_key),
            "held_behind": self.held_behind,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolved_by": self.resolved_by,
            "note": self.note,
            "event": self.event,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DeadLetter:
        """Read back :meth:`as_dict`."""
        schema, _, name = doc["table"].partition(".")
        return cls(
            pipeline=doc["pipeline"],
            kind=doc["kind"],
            table=TableId(schema, name),
            op=Op[doc["op"].upper()],
            key=doc.get("key"),
            event=doc["event"],
            error=doc["error"],
            position=doc["position"],
            order_key=tuple(doc["order_key"]),
            attempts=doc.get("attempts", 1),
            sqlstate=doc.get("sqlstate"),
            rule=doc.get("rule"),
            held_behind=doc.get("held_behind"),
            status=doc.get("status", PENDING),
            id=doc.get("id"),
            created_at=_time(doc.get("created_at")),
            resolved_at=_time(doc.get("resolved_at")),
            resolved_by=doc.get("resolved_by"),
            note=doc.get("note"),
            entry_key=doc.get("entry_key", ""),
        )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def entry_key(pipeline: str, position: dict[str, Any], table: TableId, key: Any, op: Op) -> str:
    """A stable name for an event's entry: the same event always gets the same one."""
    raw = orjson.dumps(
        [pipeline, position, table.schema, table.name, key, op.name], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def key_id_of(table: TableId, key: dict[str, str | None] | None) -> KeyId:
    """The :data:`KeyId` of a key given as column → text."""
    return (table, tuple(key.values()) if key else ())


def _text(value: Any) -> Any:
    if value is UNCHANGED:
        return _UNCHANGED_JSON
    try:
        return format_value(value)
    except (TypeError, ValueError):
        return repr(value)


def row_text(row: Row | None) -> dict[str, Any] | None:
    """A row with each value in its PostgreSQL text form (None stays SQL NULL)."""
    if row is None:
        return None
    return {column: _text(value) for column, value in row.items()}


def event_key(event: ChangeEvent) -> dict[str, str | None] | None:
    """The event's key as text: the key columns of the row it changes (the old row of an
    update or delete), or for a keyless table the whole row image it matches."""
    schema = event.schema
    old = event.op in (Op.UPDATE, Op.DELETE)
    if schema.key:
        row = event.after
        if old:
            before = event.before
            full = before is not None and all(k in before for k in schema.key)
            row = before if full else (event.key or event.after)
        if row is None:
            return None
        return {k: _text(row.get(k)) for k in schema.key}
    image = event.before if old else event.after
    return row_text(image) if image is not None else None


def event_keys(event: ChangeEvent) -> list[KeyId]:
    """Every key the event touches: an update that changes the key touches two."""
    table = event.schema.table
    keys = [key_id_of(table, event_key(event))]
    schema = event.schema
    if event.op is Op.UPDATE and schema.key and event.after is not None:
        after = {k: _text(event.after.get(k)) for k in schema.key}
        if key_id_of(table, after) != keys[0]:
            keys.append(key_id_of(table, after))
    if event.op is Op.UPDATE and not schema.key and event.after is not None:
        keys.append(key_id_of(table, row_text(event.after)))
    return keys


def event_document(event: ChangeEvent) -> dict[str, Any]:
    """The event as JSON: op, table, columns with their source types, key, rows as text."""
    schema = event.schema
    return {
        "op": event.op.name.lower(),
        "table": str(schema.table),
        "columns": [[c.name, c.type_name] for c in schema.columns],
        "key_columns": list(schema.key),
        "before": row_text(event.before),
        "after": row_text(event.after),
        "commit_ts": event.commit_ts.isoformat() if event.commit_ts else None,
        "txid": event.txid,
    }


def dead_letter(
    pipeline: str,
    event: ChangeEvent,
    kind: str,
    error: str,
    *,
    sqlstate: str | None = None,
    rule: str | None = None,
    attempts: int = 1,
    held_behind: str | None = None,
) -> DeadLetter:
    """The entry for ``event``."""
    return DeadLetter(
        pipeline=pipeline,
        kind=kind,
        table=event.schema.table,
        op=event.op,
        key=event_key(event),
        event=event_document(event),
        error=error,
        position=dict(event.position.to_json()),
        order_key=tuple(event.position.order_key()),
        attempts=attempts,
        sqlstate=sqlstate,
        rule=rule,
        held_behind=held_behind,
    )


@dataclass(frozen=True, slots=True)
class StoredPosition:
    """The position of a replayed event: its original order, for the staleness guard."""

    key: tuple[int, ...]
    data: dict[str, Any]

    def order_key(self) -> tuple[int, ...]:
        """The original event's order key."""
        return self.key

    def to_json(self) -> dict[str, Any]:
        """The original event's position."""
        return self.data

    def __str__(self) -> str:
        return orjson.dumps(self.data).decode()


def replay_event(entry: DeadLetter, schema: TableSchema | None = None) -> ChangeEvent:
    """Rebuild the entry's event, its values as :class:`RawValue` text (or UNCHANGED).

    ``schema`` is the table's definition to apply it with; by default one made from the
    event's own columns, which is what the target table had to match.
    """
    doc = entry.event
    if schema is None:
        schema = TableSchema(
            table=entry.table,
            columns=tuple(Column(name, type_name) for name, type_name in doc["columns"]),
            key=tuple(doc["key_columns"]),
        )

    def row(values: dict[str, Any] | None) -> Row | None:
        if values is None:
            return None
        return {
            c: UNCHANGED if v == _UNCHANGED_JSON else (None if v is None else RawValue(v))
            for c, v in values.items()
        }

    before, after = row(doc.get("before")), row(doc.get("after"))
    key = None
    if schema.key and entry.key is not None:
        key = {k: None if v is None else RawValue(v) for k, v in entry.key.items()}
    commit_ts = doc.get("commit_ts")
    return ChangeEvent(
        op=entry.op,
        schema=schema,
        key=key,
        before=before,
        after=after,
        position=StoredPosition(entry.order_key, entry.position),
        commit_ts=datetime.fromisoformat(commit_ts) if commit_ts else None,
        txid=doc.get("txid"),
        size=len(orjson.dumps(doc)),
    )
