"""Turn decoded pgoutput messages into Replicator stream items.

Pure apart from two injected lookups (table description and type information), so the whole
message-to-event logic is unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from replicator.events import (
    UNCHANGED,
    ChangeEvent,
    Op,
    Row,
    StreamItem,
    TableSchema,
    TxCommit,
)
from replicator.sources.postgres import pgoutput
from replicator.sources.postgres.position import PgPosition
from replicator.sources.postgres.values import Decoder, PgType, decoder_for

_COLUMN_OVERHEAD = 16  # rough bytes of Python bookkeeping per value, for memory bounds


@dataclass(slots=True)
class _RelationState:
    relation: pgoutput.Relation
    schema: TableSchema
    names: tuple[str, ...]
    decoders: tuple[Decoder, ...]


def _same_shape(a: pgoutput.Relation, b: pgoutput.Relation) -> bool:
    return (
        a.namespace == b.namespace
        and a.name == b.name
        and a.replica_identity == b.replica_identity
        and a.columns == b.columns
    )


class ChangeDecoder:
    """Stateful translator: relation cache, current transaction, index within it.

    pgoutput re-sends a Relation message after any relcache invalidation, so an identical one
    keeps the existing :class:`TableSchema` object; a changed one produces a new object, which
    is how the engine notices a schema change (the sink then compares it with the target).
    """

    def __init__(
        self,
        describe: Callable[[pgoutput.Relation], TableSchema],
        lookup_type: Callable[[int], PgType],
        encoding: str = "utf-8",
    ) -> None:
        self._describe = describe
        self._lookup_type = lookup_type
        self._encoding = encoding
        self._relations: dict[int, _RelationState] = {}
        self._commit_lsn = 0
        self._commit_ts: datetime | None = None
        self._commit_micros: int | None = None
        self._xid: int | None = None
        self._index = 0
        self.in_transaction = False

    def feed(self, message: pgoutput.Message) -> list[StreamItem]:
        """Process one message; return the stream items it produces (possibly none)."""
        if isinstance(message, pgoutput.Begin):
            self._commit_lsn = message.final_lsn
            self._commit_micros = message.commit_ts
            self._commit_ts = pgoutput.pg_timestamp(message.commit_ts)
            self._xid = message.xid
            self._index = 0
            self.in_transaction = True
            return []
        if isinstance(message, pgoutput.Commit):
            self.in_transaction = False
            return [
                TxCommit(
                    position=PgPosition(message.end_lsn),
                    # BEGIN carries the same commit time: one datetime per transaction.
                    commit_ts=self._commit_ts
                    if message.commit_ts == self._commit_micros
                    else pgoutput.pg_timestamp(message.commit_ts),
                    txid=self._xid,
                )
            ]
        if isinstance(message, pgoutput.Relation):
            self._relation(message)
            return []
        if isinstance(message, pgoutput.Insert):
            return [self._insert(message)]
        if isinstance(message, pgoutput.Update):
            return [self._update(message)]
        if isinstance(message, pgoutput.Delete):
            return [self._delete(message)]
        if isinstance(message, pgoutput.Truncate):
            return [self._truncate(relid) for relid in message.relation_ids]
        # Origin, Type and logical messages carry nothing to apply: types are resolved
        # through the catalog, and origins do not change what a change means.
        return []

    # --- messages --------------------------------------------------------------------------

    def _relation(self, relation: pgoutput.Relation) -> None:
        known = self._relations.get(relation.relation_id)
        if known is not None and _same_shape(known.relation, relation):
            known.relation = relation
            return
        schema = self._describe(relation)
        decoders = tuple(decoder_for(c.type_oid, self._lookup_type) for c in relation.columns)
        self._relations[relation.relation_id] = _RelationState(
            relation=relation,
            schema=schema,
            names=tuple(c.name for c in relation.columns),
            decoders=decoders,
        )

    def _state(self, relation_id: int) -> _RelationState:
        try:
            return self._relations[relation_id]
        except KeyError:
            raise pgoutput.ProtocolError(
                f"change for relation {relation_id} arrived before its Relation message"
            ) from None

    def _next_position(self) -> PgPosition:
        self._index += 1
        return PgPosition(self._commit_lsn, self._index)

    def _row(
        self, state: _RelationState, data: tuple[pgoutput.TupleColumn, ...]
    ) -> tuple[Row, int]:
        if len(data) != len(state.names):
            raise pgoutput.ProtocolError(
                f"{state.schema.table}: tuple has {len(data)} columns, relation has "
                f"{len(state.names)}"
            )
        row: Row = {}
        size = 0
        encoding = self._encoding
        for (kind, raw), name, decode in zip(data, state.names, state.decoders, strict=True):
            if kind == "t":
                assert raw is not None
                size += len(raw) + _COLUMN_OVERHEAD
                row[name] = decode(raw.decode(encoding))
            elif kind == "n":
                size += _COLUMN_OVERHEAD
                row[name] = None
            elif kind == "u":
                size += _COLUMN_OVERHEAD
                row[name] = UNCHANGED
            else:
                raise pgoutput.ProtocolError(f"unexpected binary tuple value in {name}")
        return row, size

    def _key(self, schema: TableSchema, row: Row) -> Row | None:
        if not schema.key:
            return None
        return {k: row[k] for k in schema.key}

    def _event(
        self,
        op: Op,
        schema: TableSchema,
        key: Row | None,
        before: Row | None,
        after: Row | None,
        size: int,
    ) -> ChangeEvent:
        return ChangeEvent(
            op=op,
            schema=schema,
            key=key,
            before=before,
            after=after,
            position=self._next_position(),
            commit_ts=self._commit_ts,
            txid=self._xid,
            size=size,
        )

    def _insert(self, message: pgoutput.Insert) -> ChangeEvent:
        state = self._state(message.relation_id)
        row, size = self._row(state, message.new)
        return self._event(Op.INSERT, state.schema, self._key(state.schema, row), None, row, size)

    def _update(self, message: pgoutput.Update) -> ChangeEvent:
        state = self._state(message.relation_id)
        new, size = self._row(state, message.new)
        before: Row | None = None
        if message.old is not None:
            old, old_size = self._row(state, message.old)
            size += old_size
            if message.old_kind == "O":
                before = old
                # With REPLICA IDENTITY FULL the old row is sent whole (PostgreSQL detoasts
                # it), so a value left out of the new row as unchanged is known after all.
                for name, value in new.items():
                    if value is UNCHANGED and old[name] is not UNCHANGED:
                        new[name] = old[name]
            else:
                # 'K': only key columns are meaningful; the others arrive as NULLs.
                before = {k: old[k] for k in state.schema.key}
        key = self._key(state.schema, new)
        return self._event(Op.UPDATE, state.schema, key, before, new, size)

    def _delete(self, message: pgoutput.Delete) -> ChangeEvent:
        state = self._state(message.relation_id)
        old, size = self._row(state, message.old)
        if message.old_kind == "K":
            old = {k: old[k] for k in state.schema.key}
        return self._event(Op.DELETE, state.schema, self._key(state.schema, old), old, None, size)

    def _truncate(self, relation_id: int) -> ChangeEvent:
        state = self._state(relation_id)
        return self._event(Op.TRUNCATE, state.schema, None, None, None, _COLUMN_OVERHEAD)
