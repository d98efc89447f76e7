"""The consumer thread of a syncer: group membership, partition assignment, decoding.

On every assignment the partitions are sought to the offsets stored in the target (written
in the same transaction as the data they follow): the target, not Kafka's committed offsets,
says what was applied. Offsets are committed to Kafka too, after the target committed, for
tools that watch consumer lag. A partition revoked while some of its changes still wait in
the queue may see them applied late, and its new owner apply them again: the sink's
staleness guard and its never-backwards offsets make both harmless (invariant 2).

While the engine takes nothing (a slow target, a pause), the thread keeps polling with
fetching paused, so that ``max.poll.interval.ms`` never drops the member from the group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from replicator.errors import ReplicatorError, SourceConnectionError, SourceError
from replicator.events import StreamItem, TableSchema, TxCommit
from replicator.kafkaclient import kafka_error
from replicator.observability.logging import get_logger
from replicator.observability.redaction import redact
from replicator.sources.handoff import HANDOFF_ITEMS, Handoff, Stopped
from replicator.sources.kafka.convert import MessageConverter
from replicator.sources.kafka.position import KafkaPosition, Partition

_CONSUME_TIMEOUT = 0.05  # consume() waits this long for a full hand-over when data trickles
_CLOSE_COMMIT_TIMEOUT = 5.0


class GroupReader:
    """Owns one group member's consumer on a thread of its own."""

    def __init__(
        self,
        settings: dict[str, Any],
        subscription: list[str],
        converter: MessageConverter,
        load_offsets: Callable[[list[Partition]], dict[Partition, int]],
        name: str,
        pipeline: str,
    ) -> None:
        self._settings = settings
        self._subscription = subscription
        self._converter = converter
        self._load_offsets = load_offsets
        self._log = get_logger(pipeline=pipeline, source="kafka")
        self._stopping = threading.Event()
        self._handoff = Handoff(self._stopping, while_full=self._keep_membership)
        self._fetch_paused: set[Partition] = set()
        self._consumer: Consumer | None = None
        self._assigned: set[Partition] = set()
        self._next: dict[Partition, int] = {}
        # Written by the engine thread (a plain reference: assignment is atomic); only this
        # thread talks to the consumer.
        self._acked: KafkaPosition | None = None
        self._committed: KafkaPosition | None = None
        self._callback_error: BaseException | None = None
        self._partition_counts: dict[str, int] = {}
        self._given_up = 0
        # Each table's latest definition, by the identity of its TableId (see above).
        self._schemas: dict[int, TableSchema] = {}
        self._withheld = False  # a commit point is held back for an incomplete transaction
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # --- the engine's side -------------------------------------------------------------------

    def start(self) -> None:
        """Join the group and start consuming."""
        self._consumer = Consumer(self._settings)
        self._thread.start()

    def items(self) -> Iterator[StreamItem]:
        """Decoded changes, each hand-over closed by a TxCommit with the offsets after it."""
        return self._handoff.items()

    def acknowledge(self, position: KafkaPosition) -> None:
        """The target holds everything up to ``position``: commit it to Kafka as well."""
        self._acked = position

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (asked of the broker once per topic)."""
        count = self._partition_counts.get(topic)
        if count is None:
            assert self._consumer is not None
            metadata = self._consumer.list_topics(topic, timeout=10)
            count = len(metadata.topics[topic].partitions) if topic in metadata.topics else 1
            self._partition_counts[topic] = count
        return count

    def close(self) -> None:
        """Stop consuming, commit what the target holds, and leave the group."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            self._commit(consumer, asynchronous=False)
        except (KafkaException, ReplicatorError) as exc:
            self._log.debug("could not commit offsets on close", error=str(exc))
        try:
            consumer.close()  # leaves the group now, so the others take over at once
        except (KafkaException, RuntimeError) as exc:
            self._log.debug("could not leave the consumer group cleanly", error=str(exc))

    # --- the reader thread -------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            consumer.subscribe(
                self._subscription,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self._stopping.is_set():
                if self._fetch_paused:
                    self._resume_fetching(consumer)
                self._commit(consumer, asynchronous=True)
                messages = consumer.consume(num_messages=HANDOFF_ITEMS, timeout=_CONSUME_TIMEOUT)
                if self._callback_error is not None:
                    raise self._callback_error
                if messages or self._withheld:
                    self._hand_over(messages)
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - crosses to the engine thread
            try:
                self._handoff.fail(_translate(exc))
            except Stopped:
                pass

    def _hand_over(self, messages: list[Any]) -> None:
        items: list[StreamItem] = []
        size = 0
        consumed = False
        convert = self._converter.convert
        assigned = self._assigned
        schemas = self._schemas
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            where = (topic, partition)
            if where not in assigned:
                continue  # fetched before its partition was revoked: its new owner reads it
            event = convert(topic, partition, offset, message.key(), message.value())
            if event is not None:
                schema = event.schema
                seen = schemas.get(id(schema.table))  # one TableId object per topic
                if seen is not schema:
                    if seen is not None and consumed and not self._withheld:
                        # A table's definition changed (a column added, say): what came
                        # before is applied first, with the definition it was read with.
                        items.append(TxCommit(KafkaPosition(dict(self._next))))
                    schemas[id(schema.table)] = schema
                items.append(event)
                size += event.size
            self._next[where] = offset + 1
            consumed = True
        if consumed:
            # Without transaction metadata every message is a transaction of its own through
            # Kafka (the docs say so); applying several in one target transaction keeps each
            # whole. With it, the commit point waits until no transaction is partly read.
            grouping = self._converter
            self._withheld = grouping.grouping and not grouping.transactions.at_boundary()
            if not self._withheld:
                items.append(TxCommit(KafkaPosition(dict(self._next))))
            self._report_given_up()
            self._handoff.put(items, size)
        elif self._withheld and self._converter.transactions.at_boundary():
            self._withheld = False
            self._report_given_up()
            self._handoff.put([TxCommit(KafkaPosition(dict(self._next)))], 0)

    def _keep_membership(self) -> None:
        """Poll without fetching while the queue is full: the group keeps this member.

        Pausing drops what librdkafka prefetched and resumes at the next offset not handed
        over; a message still delivered meanwhile (a partition assigned by a rebalance in
        this very poll) is sought back to, so nothing is skipped.
        """
        consumer = self._consumer
        if consumer is None or self._callback_error is not None:
            return  # a failure waits for the queue to drain, then reaches the engine
        try:
            self._pause_fetching(consumer)
            messages = consumer.consume(num_messages=HANDOFF_ITEMS, timeout=0)
            first: dict[Partition, int] = {}
            for message in messages:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if message.error() is None and topic is not None and partition is not None:
                    first.setdefault((topic, partition), offset if offset is not None else 0)
            for (topic, partition), offset in first.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            self._pause_fetching(consumer)
        except BaseException as exc:  # noqa: BLE001 - raised by the consuming loop
            self._callback_error = exc

    def _pause_fetching(self, consumer: Consumer) -> None:
        new = [
            tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in self._fetch_paused
        ]
        if new:
            consumer.pause(new)
            self._fetch_paused.update((tp.topic, tp.partition) for tp in new)

    def _resume_fetching(self, consumer: Consumer) -> None:
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        paused = [TopicPartition(t, p) for t, p in self._fetch_paused if (t, p) in assigned]
        self._fetch_paused = set()
        if paused:
            consumer.resume(paused)

    def _report_given_up(self) -> None:
        tracker = self._converter.transactions
        if tracker.gave_up > self._given_up:
            self._given_up = tracker.gave_up
            self._log.warning(
                "applying changes without their source transaction: its other changes did not "
                "arrive here (on partitions another group member owns?)",
                transactions=tracker.gave_up,
            )

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal() or error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
        ):
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and not error.fatal():
                self._log.warning("a subscribed topic does not exist (yet)", error=error.str())
                return
            raise KafkaException(error)
        self._log.warning("Kafka consumer error; retrying", error=redact(error.str()))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions added to a topic cause a rebalance: count them again from now on.
        self._partition_counts.clear()
        try:
            wanted = [(tp.topic, tp.partition) for tp in partitions]
            stored = self._load_offsets(wanted) if wanted else {}
            for tp in partitions:
                where = (tp.topic, tp.partition)
                tp.offset = stored.get(where, OFFSET_BEGINNING)
                if where in stored:
                    self._next[where] = stored[where]
            consumer.assign(partitions)
            self._assigned = set(wanted)
            if wanted:
                self._log.info(
                    "partitions assigned",
                    partitions=_describe(partitions),
                )
        except BaseException as exc:  # noqa: BLE001 - raised after consume() returns
            self._callback_error = exc

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        try:
            self._commit(consumer, asynchronous=True)
        except KafkaException:
            pass
        self._assigned = self._assigned - gone
        for where in gone:
            self._next.pop(where, None)
        if gone:
            self._log.info("partitions revoked", partitions=_describe(partitions))

    def _commit(self, consumer: Consumer, asynchronous: bool) -> None:
        acked = self._acked
        if acked is None or acked is self._committed:
            return
        offsets = [
            TopicPartition(t, p, o)
            for (t, p), o in acked.offsets.items()
            if (t, p) in self._assigned
        ]
        self._committed = acked
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Advisory only: the target holds the offsets that count. A commit refused
            # during a rebalance is retried with the next acknowledgement.
            self._log.debug("offset commit to Kafka refused", error=str(exc))


def _describe(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{t}[{','.join(map(str, sorted(p)))}]" for t, p in sorted(by_topic.items()))


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, KafkaException):
        error, text = kafka_error(exc)
        if error is not None and error.code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
        ):
            return SourceError(
                f"Kafka refused access: {text}",
                fix="grant the syncer's principal READ on the topics and the consumer group",
            )
        return SourceConnectionError(f"the Kafka consumer failed: {text}")
    return exc
