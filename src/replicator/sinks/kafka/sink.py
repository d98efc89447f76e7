"""The Kafka sink (a watcher): each change published as a Debezium JSON envelope.

One topic per table (``<prefix>.<schema>.<table>``), keyed by the primary key so that one
key's changes stay in one partition, in order; a table without a key, and every truncate,
goes to partition 0, the one place its changes keep their order. The producer is idempotent
(``enable.idempotence``, ``acks=all``): retries never duplicate or reorder within a
partition. Kafka has no transaction to share with the checkpoint, so the order is what keeps
invariant 1: a batch is produced, every message of it acknowledged by the brokers, and only
then is the checkpoint saved (atomic rename + fsync) and the source acknowledged. A crash in
between re-publishes the messages after the checkpoint: consumers see them twice (Debezium's
at-least-once), which a syncer's staleness guard absorbs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from replicator import failpoints
from replicator.checkpoints.file import FileCheckpointStore
from replicator.config import KafkaSinkConfig, PipelineConfig
from replicator.contracts import ApplyStats, Batch, Problem, Sink, SinkCapabilities
from replicator.debezium.encoder import EnvelopeEncoder
from replicator.errors import SinkConnectionError, SinkError
from replicator.events import UNCHANGED, ChangeEvent, Op, Position, TableId, TableSchema
from replicator.kafkaclient import METADATA_TIMEOUT, cluster_topics, kafka_error
from replicator.observability.logging import get_logger
from replicator.observability.redaction import redact
from replicator.observability.tracing import step

_POLL_EVERY = 1000  # serve delivery reports every this many messages

# Defaults a user may override under `kafka:`; the owned settings are set after them.
_DEFAULTS: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    # The Java client's partitioner: a key lands in the partition Debezium would pick.
    "partitioner": "murmur2_random",
}


class KafkaSink(Sink):
    """Publishes changes to Kafka, one topic per table."""

    capabilities = SinkCapabilities(transactional_checkpoint=False)

    def __init__(self, pipeline: PipelineConfig, store: FileCheckpointStore) -> None:
        assert isinstance(pipeline.sink, KafkaSinkConfig)  # the registry's choice
        self._pipeline = pipeline
        self._config = pipeline.sink
        self._store = store
        self._log = get_logger(pipeline=pipeline.name, sink="kafka")
        self._encoder = EnvelopeEncoder(
            server_name=self._config.topic_prefix,
            database=_database(pipeline),
            schemas=self._config.schemas,
            decimal_handling=self._config.decimal_handling,
        )
        self._producer: Producer | None = None
        self._lock = threading.Lock()  # copy workers share the producer and the error list
        self._errors: list[str] = []
        self._fatal: str | None = None
        self._topics: dict[TableId, str] = {}
        self._known_topics: set[str] | None = None
        self._open_stats = ApplyStats()
        self._open_transactions = 0

    # --- Kafka clients -----------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        settings = {**_DEFAULTS, **self._config.kafka}
        settings.update(
            {
                "bootstrap.servers": self._config.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "client.id": f"replicator-{self._pipeline.name}",
            }
        )
        settings.setdefault("message.timeout.ms", int(self._config.ack_timeout_s * 1000))
        return settings

    def producer(self) -> Producer:
        """The idempotent producer (made on first use)."""
        if self._producer is None:
            settings = self._settings()
            settings["on_delivery"] = self._delivered
            settings["delivery.report.only.error"] = True
            settings["error_cb"] = self._client_error
            self._producer = Producer(settings)
        return self._producer

    def _admin(self) -> AdminClient:
        producer_only = {
            "linger.ms",
            "batch.num.messages",
            "batch.size",
            "compression.type",
            "queue.buffering.max.messages",
            "queue.buffering.max.kbytes",
            "partitioner",
            "enable.idempotence",
            "acks",
            "message.timeout.ms",
        }
        return AdminClient({k: v for k, v in self._settings().items() if k not in producer_only})

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            with self._lock:
                if len(self._errors) < 10:
                    self._errors.append(f"{message.topic()}: {error.str()}")

    def _client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error.str()
        elif error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._log.warning("Kafka is not reachable; retrying", error=redact(error.str()))

    # --- Sink contract -----------------------------------------------------------------------

    def preflight(self) -> list[Problem]:
        """The brokers answer."""
        topics, problems = cluster_topics(self._admin(), self._config.bootstrap_servers)
        if not problems:
            self._known_topics = topics
        return problems

    def topic(self, table: TableId) -> str:
        """The topic of a table's changes."""
        found = self._topics.get(table)
        if found is None:
            found = self._topics[table] = self._config.topic_for(table.schema, table.name)
        return found

    def ensure_table(self, schema: TableSchema, replacing: bool = False) -> None:
        """Create the table's topic when missing (with the configured partitions)."""
        topic = self.topic(schema.table)
        if self._known_topics is None or topic not in self._known_topics:
            self._create_topic(topic)
        self._store.remember_tables(self._pipeline.name, [schema.table])

    def _create_topic(self, topic: str) -> None:
        admin = self._admin()
        try:
            metadata = admin.list_topics(timeout=METADATA_TIMEOUT)
            self._known_topics = set(metadata.topics)
            if topic in self._known_topics:
                return
            futures = admin.create_topics(
                [NewTopic(topic, self._config.partitions, self._config.replication_factor)],
                operation_timeout=METADATA_TIMEOUT,
            )
            futures[topic].result(timeout=METADATA_TIMEOUT + 5)
            self._log.info("created topic", topic=topic, partitions=self._config.partitions)
        except KafkaException as exc:
            error, _ = kafka_error(exc)
            if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                pass
            else:
                raise _translate(exc, f"creating topic {topic}") from exc
        if self._known_topics is None:
            self._known_topics = set()
        self._known_topics.add(topic)

    def apply(self, batch: Batch, pipeline: str) -> Position | None:
        """Publish the batch; at a transaction boundary wait for every acknowledgement, then
        save the checkpoint."""
        with step("apply"):
            self.publish(batch.events, count=True)
            self._open_transactions += batch.transactions
            if batch.commit is None:
                return None
            self.wait_for_acks()
        position = batch.commit.position
        failpoints.fail("sink.before_commit")
        with step("checkpoint"):
            self._store.save_commit(
                pipeline,
                position,
                commit_ts=batch.commit.commit_ts,
                transactions=self._open_transactions,
                stats=self._open_stats,
            )
        self._open_stats = ApplyStats()
        self._open_transactions = 0
        return position

    def publish(self, events: list[ChangeEvent], count: bool = False) -> int:
        """Queue the events' messages in the producer; return how many were queued.

        ``count``: add them to the counters saved with the next checkpoint (stream changes,
        not snapshot rows).
        """
        producer = self.producer()
        produce = producer.produce
        encode = self._encoder.encode
        tombstones = self._config.tombstones
        stats = self._open_stats if count else ApplyStats()
        topics = self._topics
        queued = 0
        for event in events:
            op = event.op
            if op is Op.UPDATE and event.before is not None and _moves_key(event):
                # As Debezium does: a delete (and tombstone) under the old key, then a create
                # under the new one, each in its key's partition.
                queued += self.publish(_split_key_change(event), count=False)
                stats.updated += 1
                continue
            table = event.schema.table
            topic = topics.get(table) or self.topic(table)
            key, value = encode(event)
            try:
                if key is None:
                    # Keyless rows and truncates have no key to place them: partition 0
                    # keeps their order against each other.
                    produce(topic, value, None, partition=0)
                else:
                    produce(topic, value, key)
            except BufferError:
                self._produce(produce, topic, key, value, key is None)
            except KafkaException as exc:
                raise _translate(exc, f"publishing to {topic}") from exc
            queued += 1
            if op is Op.INSERT or op is Op.READ:
                stats.inserted += 1
            elif op is Op.UPDATE:
                stats.updated += 1
            elif op is Op.DELETE:
                stats.deleted += 1
                if tombstones and key is not None:
                    self._produce(produce, topic, key, None, False)
                    queued += 1
            else:
                stats.truncated += 1
            if queued % _POLL_EVERY < 2:
                producer.poll(0)
        return queued

    def _produce(
        self, produce: Any, topic: str, key: bytes | None, value: bytes | None, pinned: bool
    ) -> None:
        while True:
            try:
                if pinned:
                    produce(topic, value, key, partition=0)
                else:
                    produce(topic, value, key)
                return
            except BufferError:
                # The producer's queue is full: let the brokers catch up.
                self.producer().poll(0.05)
            except KafkaException as exc:
                raise _translate(exc, f"publishing to {topic}") from exc

    def wait_for_acks(self) -> None:
        """Block until the brokers acknowledged every queued message; fail if one was lost."""
        producer = self.producer()
        deadline = time.monotonic() + self._config.ack_timeout_s + 5
        remaining = producer.flush(self._config.ack_timeout_s + 5)
        while remaining and time.monotonic() < deadline:
            remaining = producer.flush(max(0.1, deadline - time.monotonic()))
        with self._lock:
            errors, self._errors = self._errors, []
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            self._reset()
            raise SinkError(f"the Kafka producer failed: {redact(fatal)}")
        if errors:
            self._reset()
            raise SinkConnectionError(
                f"Kafka did not accept {len(errors)} message(s): {redact('; '.join(errors))}",
                fix="check the brokers and the topics (the batch is published again from the "
                "last checkpoint on restart)",
            )
        if remaining:
            self._reset()
            raise SinkConnectionError(
                f"Kafka did not acknowledge {remaining} message(s) within "
                f"{self._config.ack_timeout_s:g} s",
                fix="check that the brokers are up and reachable (ack_timeout_s sets the wait)",
            )

    def _reset(self) -> None:
        # Messages still queued belong to a batch that will be published again.
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def rollback(self) -> None:
        """Forget the open batch's counters: what was published stays published (it is
        published again, and absorbed downstream, when the pipeline resumes)."""
        self._open_stats = ApplyStats()
        self._open_transactions = 0

    def close(self) -> None:
        """Deliver what is queued (briefly) and release the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(5)

    def snapshot_writer(self, pipeline: str) -> Any:
        """A copy worker that publishes rows as snapshot reads."""
        from replicator.sinks.kafka.snapshot_writer import KafkaSnapshotWriter

        return KafkaSnapshotWriter(self, self._store, pipeline)


def _moves_key(event: ChangeEvent) -> bool:
    before, after = event.before, event.after
    assert before is not None and after is not None
    if any(value is UNCHANGED for value in after.values()):
        # The new row's unchanged TOASTed values live in the old row: only an update that
        # names both keys lets a consumer carry them over.
        return False
    return any(name in before and before[name] != after.get(name) for name in event.schema.key)


def _split_key_change(event: ChangeEvent) -> list[ChangeEvent]:
    before = event.before
    assert before is not None
    old_key = {name: before[name] for name in event.schema.key}
    new_key = {name: event.after[name] for name in event.schema.key} if event.after else None
    return [
        replace(event, op=Op.DELETE, key=old_key, after=None),
        replace(event, op=Op.INSERT, key=new_key, before=None),
    ]


def _database(pipeline: PipelineConfig) -> str:
    """The source database's name, for the envelope's ``source.db``."""
    source = pipeline.source
    if source.type == "postgres":
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(source.dsn.secret())
        return str(params.get("dbname") or params.get("user") or "postgres")
    return ""


def _translate(exc: KafkaException, doing: str) -> SinkError:
    error, text = kafka_error(exc)
    if error is not None and error.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    ):
        return SinkError(
            f"Kafka refused {doing}: {text}",
            fix="grant the watcher's principal CREATE and WRITE on the topics (or create the "
            "topics beforehand)",
        )
    if error is not None and error.retriable():
        return SinkConnectionError(f"{doing} failed: {text}")
    return SinkError(f"{doing} failed: {text}")
