"""The dead-letter queue as a Kafka topic (``dead_letter: {store: kafka, topic: ...}``).

One record per message (see :mod:`.log`), keyed by the entry, in a topic of one partition so
the log has one order, kept forever (``retention.ms=-1``; not compacted, since a status change
shares its entry's key). Appends wait for every in-sync replica (``acks=all``, idempotent)
before the engine commits the data. Reading consumes the topic from its start to its end,
without a consumer group: a DLQ is small, and is read at start and every few seconds.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from replicator.dlq.log import LogDeadLetterStore
from replicator.errors import SinkConnectionError, SinkError
from replicator.kafkaclient import METADATA_TIMEOUT, kafka_error

_FLUSH_TIMEOUT = 30.0
_READ_TIMEOUT = 30.0


class KafkaDeadLetterStore(LogDeadLetterStore):
    """Dead-letter entries in one Kafka topic."""

    def __init__(self, topic: str, settings: dict[str, Any]) -> None:
        self.topic = topic
        self._settings = settings
        self._producer: Producer | None = None
        self._ready = False

    def _ensure_topic(self) -> None:
        if self._ready:
            return
        admin = AdminClient(self._settings)
        try:
            if self.topic not in admin.list_topics(timeout=METADATA_TIMEOUT).topics:
                futures = admin.create_topics(
                    [NewTopic(self.topic, 1, config={"retention.ms": "-1"})],
                    operation_timeout=METADATA_TIMEOUT,
                )
                try:
                    futures[self.topic].result(timeout=METADATA_TIMEOUT + 5)
                except KafkaException as exc:
                    error, _ = kafka_error(exc)
                    if error is None or error.name() != "TOPIC_ALREADY_EXISTS":
                        raise
        except KafkaException as exc:
            raise self._failed("create the dead-letter topic", exc) from exc
        self._ready = True

    def _records(self) -> list[dict[str, Any]]:
        self._ensure_topic()
        consumer = Consumer(
            {
                **self._settings,
                "group.id": "replicator-dlq-reader",  # required, never committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        records: list[dict[str, Any]] = []
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=METADATA_TIMEOUT
            )
            if high <= low:
                return records
            consumer.assign([TopicPartition(self.topic, 0, low)])
            offset = low
            while offset < high:
                message = consumer.poll(_READ_TIMEOUT)
                if message is None:
                    raise SinkConnectionError(
                        f"the dead-letter topic {self.topic} stopped answering while being read"
                    )
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        break
                    raise SinkError(f"reading the dead-letter topic {self.topic}: {error.str()}")
                offset = (message.offset() or offset) + 1
                value = message.value()
                if value:
                    records.append(orjson.loads(value))
        except KafkaException as exc:
            raise self._failed("read the dead-letter topic", exc) from exc
        finally:
            consumer.close()
        return records

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self._ensure_topic()
        if self._producer is None:
            self._producer = Producer({**self._settings, "enable.idempotence": True, "acks": "all"})
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(error.str())

        try:
            for record in records:
                key = record.get("status_of") or record.get("entry_key")
                self._producer.produce(self.topic, orjson.dumps(record), key, on_delivery=delivered)
            left = self._producer.flush(_FLUSH_TIMEOUT)
        except KafkaException as exc:
            raise self._failed("write to the dead-letter topic", exc) from exc
        if left or failures:
            raise SinkConnectionError(
                f"the dead-letter topic {self.topic} did not acknowledge {left or len(failures)} "
                f"record(s) within {_FLUSH_TIMEOUT:.0f} s"
                + (f": {failures[0]}" if failures else "")
            )

    def close(self) -> None:
        """Flush and drop the producer."""
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

    def _failed(self, doing: str, exc: KafkaException) -> SinkError:
        error, text = kafka_error(exc)
        failure: SinkError = SinkConnectionError(f"cannot {doing} {self.topic}: {text}")
        if error is not None and error.fatal():
            failure = SinkError(f"cannot {doing} {self.topic}: {text}")
        return failure
