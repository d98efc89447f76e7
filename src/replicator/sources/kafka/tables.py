"""Which target table a topic's events change, and the table definition they are applied with.

A topic ``shop.public.orders`` is applied to ``public.orders``: the last two dot-separated
parts of its name (so SQL Server's ``prefix.db.schema.table`` works as well), unless the
config maps the topic to a table of its own (``topic_tables``).

The target's own definition wins wherever it exists: Debezium's schema loses detail (a
``varchar(40)`` arrives as a string), so an existing target column keeps its type and the
values are converted by PostgreSQL. Without a target table, an event carrying its schema
creates it from that schema; a schemaless event cannot, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from replicator.config import KafkaSourceConfig
from replicator.debezium.envelope import Change
from replicator.errors import SchemaMismatchError, SourceError
from replicator.events import Column, Row, TableId, TableSchema, quote_ident
from replicator.sinks.postgres.ddl import TargetTable, read_table
from replicator.sources.kafka.values import Decode, value_decoder

Convert = Callable[[Row | None], Row | None]

_RECHECK_S = 1.0  # how often a table the target lacks is looked for again


def _unchanged(row: Row | None) -> Row | None:
    return row


class TableMapper:
    """Resolves topics to tables and events to the TableSchema they are applied with.

    TableSchema objects are cached and reused: the engine re-checks a table against the
    target whenever an event brings a different schema object.
    """

    def __init__(self, config: KafkaSourceConfig, target: Callable[[], psycopg.Connection[Any]]):
        self._config = config
        self._target = target
        self._tables: dict[str, TableId] = {}
        self._targets: dict[TableId, TargetTable | None] = {}
        self._schemas: dict[tuple[Any, ...], tuple[TableSchema, Convert]] = {}
        self._latest: dict[TableId, TableSchema] = {}
        self._from_events: dict[tuple[Any, ...], TableSchema] = {}
        self._provisional: dict[tuple[Any, ...], tuple[float, tuple[TableSchema, Convert]]] = {}
        # One TableSchema per target definition, key and decoding, shared by every shape.
        self._full: dict[tuple[Any, ...], tuple[TargetTable, tuple[TableSchema, Convert]]] = {}

    def table(self, topic: str) -> TableId:
        """The target table of a topic."""
        found = self._tables.get(topic)
        if found is None:
            mapped = self._config.topic_tables.get(topic)
            if mapped is not None:
                schema, _, name = mapped.partition(".")
            else:
                parts = topic.split(".")
                if len(parts) < 2:
                    raise SourceError(
                        f"topic {topic!r} does not name a schema and a table "
                        "(<prefix>.<schema>.<table>)",
                        fix=f"map it to a table in the source's topic_tables, e.g. "
                        f"topic_tables: {{{topic}: public.{topic}}}",
                    )
                schema, name = parts[-2], parts[-1]
            found = self._tables[topic] = TableId(schema, name)
        return found

    def target(self, table: TableId, refresh: bool = False) -> TargetTable | None:
        """The target table's definition (None when it does not exist yet)."""
        if refresh or table not in self._targets:
            conn = self._target()
            try:
                self._targets[table] = read_table(conn, table)
            finally:
                conn.rollback()
        return self._targets[table]

    def resolve(
        self, table: TableId, change: Change, row: Row | None, complete: bool
    ) -> tuple[TableSchema, Convert]:
        """The TableSchema for ``change`` and the function that reads its row images.

        ``row`` is the image whose columns define the shape (``after``, else ``before``);
        ``complete`` when it must hold every column (inserts, updates, snapshot reads; a
        delete's old image may hold the key only).
        """
        names = tuple(row) if row is not None else ()
        # Keyed by the TableId's identity (one object per topic, kept in self._tables):
        # hashing the dataclass per message showed in profiles.
        shape = (id(table), names, change.key_columns, change.columns is None, complete)
        found = self._schemas.get(shape)
        if found is None:
            provisional = self._provisional.get(shape)
            now = time.monotonic()
            if provisional is not None and now - provisional[0] < _RECHECK_S:
                return provisional[1]
            found = self._build(table, change, names, complete)
            if self._targets.get(table) is None:
                # Made from the event's schema, the target table not existing yet: once the
                # sink has created it, its own definition takes over (checked each second).
                self._provisional[shape] = (now, found)
            else:
                self._provisional.pop(shape, None)
                self._schemas[shape] = found
        self._latest[table] = found[0]
        return found

    def full_schema(self, table: TableId) -> TableSchema | None:
        """The table with every target column (for deletes and truncates), if it exists.

        A table this reader resolved but the sink has not created yet (it runs behind the
        reader) has the definition the reader resolved it with.
        """
        target = self.target(table)
        if target is None:
            target = self.target(table, refresh=True)
        if target is None:
            return self._latest.get(table)
        return self._from_target(table, target, target.primary_key, None)[0]

    def _build(
        self, table: TableId, change: Change, names: tuple[str, ...], complete: bool
    ) -> tuple[TableSchema, Convert]:
        # A table found missing before is looked for again: the sink may have made it.
        target = self.target(table, refresh=table in self._targets and not self._targets[table])
        if target is not None and any(n not in target.columns for n in names):
            target = self.target(table, refresh=True)  # altered since we last looked?
        if change.columns is not None:
            if target is None:
                return self._from_event(table, change), _unchanged
            self._check_columns(table, target, names, change)
            key = change.key_columns or target.primary_key
            return self._from_target(
                table, target, key, self._carried(target, names, complete), False
            )
        if target is None:
            raise SourceError(
                f"events for {table} carry no schema (JsonConverter schemas.enable=false), "
                "so the target table must exist to tell their types",
                fix=f"create {table} in the target, or publish the topic with schemas "
                "(Replicator's kafka sink: schemas: true; Kafka Connect: "
                "value.converter.schemas.enable=true)",
            )
        self._check_columns(table, target, names, change)
        key = change.key_columns or target.primary_key
        return self._from_target(table, target, key, self._carried(target, names, complete), True)

    def _from_event(self, table: TableId, change: Change) -> TableSchema:
        """The table as the event's schema describes it (one object per definition)."""
        assert change.columns is not None
        cache_key = (table, change.columns, change.key_columns)
        schema = self._from_events.get(cache_key)
        if schema is None:
            names = {c.name for c in change.columns}
            key = tuple(k for k in change.key_columns if k in names)
            schema = TableSchema(
                table, change.columns, key, order=tuple(c.name for c in change.columns)
            )
            self._from_events[cache_key] = schema
        return schema

    @staticmethod
    def _carried(
        target: TargetTable, names: tuple[str, ...], complete: bool
    ) -> tuple[str, ...] | None:
        """The target columns an event writes; None for all of them.

        One TableSchema per table whenever the events carry every column (and for deletes,
        which only need the key): a new schema object makes the engine re-check the table.
        """
        if not names or (not complete and target.primary_key):
            return None
        columns = [c.name for c in target.columns.values() if not c.generated]
        if set(columns) <= set(names):
            return None
        return tuple(c for c in columns if c in names)

    def _check_columns(
        self,
        table: TableId,
        target: TargetTable,
        names: tuple[str, ...],
        change: Change,
    ) -> None:
        missing = [n for n in names if n not in target.columns]
        if missing:
            types = {c.name: c.type_name for c in change.columns or ()}
            fixes = " ".join(
                f"ALTER TABLE {table.quoted} ADD COLUMN {quote_ident(n)} {types.get(n, '<type>')};"
                for n in missing
            )
            raise SchemaMismatchError(
                f"events for {table} have column(s) {', '.join(missing)} that the target "
                "table lacks",
                fix=f"on the target, run: {fixes} — then restart the pipeline",
            )

    def _from_target(
        self,
        table: TableId,
        target: TargetTable,
        key: tuple[str, ...],
        carried: tuple[str, ...] | None,
        decode: bool = True,
    ) -> tuple[TableSchema, Convert]:
        cache_key = (table, key, carried, decode)
        cached = self._full.get(cache_key)
        if cached is not None and cached[0] is target:
            return cached[1]
        wanted = set(carried) if carried is not None else None
        columns = tuple(
            Column(name=c.name, type_name=c.type_name)
            for c in target.columns.values()
            if not c.generated and (wanted is None or c.name in wanted)
        )
        # Target columns the events do not carry (added to the target before the source's
        # events have them, say) are left as they are: listed as the target's own, like
        # generated columns, so the apply never writes them.
        kept = tuple(
            Column(name=c.name, type_name=c.type_name)
            for c in target.columns.values()
            if not c.generated and wanted is not None and c.name not in wanted
        )
        names = {c.name for c in columns}
        schema = TableSchema(
            table,
            columns,
            tuple(k for k in key if k in names),
            generated=kept,
            order=tuple(target.columns),
        )
        precise = self._config.decimal_handling == "precise"
        if not decode:
            self._full[cache_key] = (target, (schema, _unchanged))
            return schema, _unchanged
        decoders: dict[str, Decode] = {
            c.name: value_decoder(target.columns[c.name].storage_type, c.name, precise)
            for c in columns
        }

        def convert(row: Row | None) -> Row | None:
            if row is None:
                return None
            out: Row = {}
            for name, value in row.items():
                decode_value = decoders.get(name)
                if decode_value is not None:
                    out[name] = decode_value(value)
            return out

        self._full[cache_key] = (target, (schema, convert))
        return schema, convert
