"""One Kafka message → the ChangeEvent it asks for (or nothing: tombstones, markers, DDL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from replicator.config import KafkaSourceConfig
from replicator.debezium.envelope import Change, TransactionMarker, read_message
from replicator.errors import SourceError
from replicator.events import ChangeEvent, Op, Row
from replicator.observability.logging import get_logger
from replicator.sources.kafka.position import SNAPSHOT_PHASE, STREAM_PHASE, KafkaPosition
from replicator.sources.kafka.tables import TableMapper
from replicator.sources.kafka.transactions import TransactionTracker


class MessageConverter:
    """Decodes Debezium envelopes and resolves them to target tables.

    ``partitions`` tells how many partitions a topic has: a truncate without a source
    position can only be ordered against the rest of its table when there is one.
    """

    def __init__(
        self,
        config: KafkaSourceConfig,
        mapper: TableMapper,
        partitions: Callable[[str], int],
        pipeline: str,
    ) -> None:
        self._config = config
        self._mapper = mapper
        self._partitions = partitions
        self._log = get_logger(pipeline=pipeline, source="kafka")
        self._warned: set[str] = set()
        self._last_timestamp: tuple[Any, datetime | None] = (None, None)
        self.transactions = TransactionTracker()
        self.grouping = False  # transaction metadata seen: commit points wait for whole ones

    def convert(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> ChangeEvent | None:
        """The change a message carries; None for a message that changes no row."""
        try:
            message = read_message(key, value)
            if not isinstance(message, Change):
                if isinstance(message, TransactionMarker):
                    self.grouping = True
                    self.transactions.marker(message)
                return None  # tombstones follow deletes; markers and DDL change no row
            if message.transaction is not None and self.grouping:
                self.transactions.change(message.transaction.key)
            size = len(value or b"") + len(key or b"")
            return self._event(message, topic, partition, offset, size)
        except SourceError as exc:
            raise SourceError(
                f"{topic} partition {partition} offset {offset}: {exc.message}", fix=exc.fix
            ) from exc

    def _event(
        self, change: Change, topic: str, partition: int, offset: int, size: int
    ) -> ChangeEvent | None:
        table = self._mapper.table(topic)
        op = change.op
        if op is Op.READ:
            order: tuple[int, ...] = (SNAPSHOT_PHASE, offset)
        elif change.order is not None:
            order = (STREAM_PHASE, *change.order, offset)
        else:
            order = (STREAM_PHASE, offset)
        commit_ts = self._timestamp(change.source.get("ts_ms") or change.ts_ms)
        position = KafkaPosition(order=order)
        if op is Op.TRUNCATE:
            return self._truncate(change, table, topic, position, commit_ts)
        if op is Op.DELETE:
            image = change.before if change.before else change.key
            schema, convert = self._mapper.resolve(table, change, image, complete=False)
            before = convert(change.before)
            key = _key(schema.key, convert(change.key), before)
            if schema.key and key is None:
                raise SourceError(
                    f"a delete on {table} names no key", fix="check the topic's message keys"
                )
            return ChangeEvent(op, schema, key, before, None, position, commit_ts, None, size)
        if change.after is None:
            raise SourceError(
                f"a Debezium {op.name.lower()} event on {table} carries no `after` row",
                fix="check the producer: create, update and read events must carry the row",
            )
        schema, convert = self._mapper.resolve(table, change, change.after, complete=True)
        after = convert(change.after)
        before = convert(change.before)
        key = _key(schema.key, convert(change.key), after)
        return ChangeEvent(op, schema, key, before, after, position, commit_ts, None, size)

    def _timestamp(self, ms: Any) -> datetime | None:
        if ms == self._last_timestamp[0]:
            return self._last_timestamp[1]  # a source transaction's events share their time
        found: datetime | None = None
        if isinstance(ms, int | float) and not isinstance(ms, bool):
            try:
                found = datetime.fromtimestamp(ms / 1000, UTC)
            except (ValueError, OverflowError, OSError):
                pass  # not milliseconds after all (the docs' Cassandra sample): no time
        self._last_timestamp = (ms, found)
        return found

    def _truncate(
        self,
        change: Change,
        table: Any,
        topic: str,
        position: KafkaPosition,
        commit_ts: datetime | None,
    ) -> ChangeEvent | None:
        if change.order is None and self._partitions(topic) > 1:
            # Without a source position, a truncate read from one partition cannot be placed
            # among the other partitions' changes: some came before it in the source, some
            # after, and nothing here tells which (invariant 4).
            if self._config.unordered_truncate == "skip":
                if topic not in self._warned:
                    self._warned.add(topic)
                    self._log.warning(
                        "skipping a truncate that cannot be ordered against the other "
                        "partitions of its topic (unordered_truncate: skip)",
                        topic=topic,
                        table=str(table),
                    )
                return None
            raise SourceError(
                f"a truncate of {table} arrived on {topic}, which has "
                f"{self._partitions(topic)} partitions, and carries no source position to "
                "order it against the changes in the other partitions",
                fix="publish the table to a topic with one partition, or set "
                "unordered_truncate: skip in the kafka source to ignore such truncates",
            )
        schema = self._mapper.full_schema(table)
        if schema is None:
            return None  # nothing to empty: the target table does not exist yet
        return ChangeEvent(Op.TRUNCATE, schema, None, None, None, position, commit_ts)


def _key(names: tuple[str, ...], key: Row | None, row: Row | None) -> Row | None:
    if not names:
        return None
    if key is not None:
        try:
            return {n: key[n] for n in names}
        except KeyError:
            pass  # the message key names other columns: read the key from the row
    if row is None:
        return None
    return {n: row.get(n) for n in names}
