"""The Kafka source (a syncer): Debezium change events consumed by a consumer group.

Several ``replicator run`` processes with the same config share the topics' partitions;
Kafka's group protocol moves a dead member's partitions to the others. What each member
applied is checkpointed in the target per (pipeline, topic, partition), in the same
transaction as the data, and read back whenever a partition is assigned, so a takeover
resumes exactly where the target stands. There is nothing to create in the source and no
snapshot to take: a topic's history is its snapshot.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection, Iterator
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from replicator.config import KafkaSourceConfig, PipelineConfig
from replicator.contracts import Problem, Severity, SnapshotSession, Source
from replicator.errors import SourceError
from replicator.events import Position, StreamItem, TableId, TableSchema
from replicator.kafkaclient import METADATA_TIMEOUT, cluster_topics, kafka_error
from replicator.observability.logging import get_logger
from replicator.observability.redaction import redact
from replicator.sinks.postgres.session import connect
from replicator.sources.kafka.convert import MessageConverter
from replicator.sources.kafka.position import KafkaPosition, Partition
from replicator.sources.kafka.reader import GroupReader
from replicator.sources.kafka.tables import TableMapper

# Defaults a user may override under `kafka:`; the owned settings are set after them.
_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    # Spread single-partition topics over the members (range would give them all to one).
    "partition.assignment.strategy": "roundrobin",
    # A killed member's partitions move on after this long without its heartbeat.
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 2_000,
    "topic.metadata.refresh.interval.ms": 10_000,  # new topics matching a pattern
    "enable.partition.eof": False,
}


class KafkaSource(Source):
    """Consumes Debezium change events from Kafka topics as one member of a consumer group."""

    def __init__(self, pipeline: PipelineConfig) -> None:
        assert isinstance(pipeline.source, KafkaSourceConfig)  # the registry's choice
        self._pipeline = pipeline
        self._config = pipeline.source
        self._log = get_logger(pipeline=pipeline.name, source="kafka")
        self._target_conn: psycopg.Connection[Any] | None = None
        self._reader: GroupReader | None = None
        self._tables_ready = False

    # --- connections -------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        settings = {**_DEFAULTS, **self._config.kafka}
        settings.update(
            {
                "bootstrap.servers": self._config.bootstrap_servers,
                "group.id": self._config.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "client.id": f"replicator-{self._pipeline.name}-{socket.gethostname()}-"
                f"{os.getpid()}",
            }
        )
        return settings

    def _target(self) -> psycopg.Connection[Any]:
        """A connection to the target: where the offsets and table definitions live."""
        if self._target_conn is None or self._target_conn.closed:
            # Reads only: nothing committed here is acknowledged anywhere.
            self._target_conn = connect(self._pipeline, synchronous_commit=False)
        return self._target_conn

    def _load_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        from replicator.checkpoints.postgres import ensure_tables, load_offsets

        conn = self._target()
        try:
            if not self._tables_ready:
                ensure_tables(conn)  # a new target: the offsets table may not exist yet
                self._tables_ready = True
            return load_offsets(conn, self._pipeline.name, partitions)
        except psycopg.Error as exc:
            conn.close()
            raise SourceError(
                f"cannot read the stored Kafka offsets from the target: {redact(str(exc))}"
            ) from exc
        finally:
            if not conn.closed:
                conn.rollback()

    def _admin(self) -> AdminClient:
        settings = {k: v for k, v in self._settings().items() if k not in _CONSUMER_ONLY}
        return AdminClient(settings)

    # --- Source contract ---------------------------------------------------------------------

    def preflight(self, checkpoint: Position | None = None) -> list[Problem]:
        """The brokers answer, and some topic matches the subscription."""
        names, problems = cluster_topics(self._admin(), self._config.bootstrap_servers)
        if problems:
            return problems
        topics = [t for t in names if self._subscribed(t)]
        if not topics:
            return [
                Problem(
                    Severity.WARNING,
                    f"no topic matches {self._config.topics!r} yet; the syncer waits for one",
                    "check the topics setting against the watcher's topic names",
                )
            ]
        return []

    def _subscribed(self, topic: str) -> bool:
        import re

        if isinstance(self._config.topics, str):
            return re.search(self._config.topics, topic) is not None
        return topic in self._config.topics

    def sync_tables(
        self, captured: Collection[TableId] = ()
    ) -> tuple[list[TableId], list[TableId]]:
        """Tables come and go with the topics: there is no table set to keep."""
        return [], []

    def describe(self, tables: list[TableId]) -> dict[TableId, TableSchema]:
        """Nothing to describe: every event carries (or finds in the target) its table."""
        return {}

    def open_snapshot(self) -> SnapshotSession:
        """A topic's history is its snapshot: a syncer takes none."""
        raise SourceError("a kafka source takes no snapshot (snapshot: never)")

    def parse_position(self, data: dict[str, Any]) -> KafkaPosition:
        """Offsets stored in the checkpoint row."""
        return KafkaPosition.from_json(data)

    def prepare(
        self,
        checkpoint: Position | None,
        save_checkpoint: Callable[[Position], None],
        export_snapshot: bool = False,
    ) -> Position:
        """Nothing to create: partitions are sought to their stored offsets on assignment."""
        return KafkaPosition()

    def stream(self, start: Position) -> Iterator[StreamItem]:
        """Join the group and yield the assigned partitions' changes."""
        mapper = TableMapper(self._config, self._target)
        holder: list[GroupReader] = []
        converter = MessageConverter(
            self._config, mapper, lambda topic: holder[0].partitions(topic), self._pipeline.name
        )
        reader = GroupReader(
            self._settings(),
            self._config.subscription,
            converter,
            self._load_offsets,
            name=f"kafka-{self._pipeline.name}",
            pipeline=self._pipeline.name,
        )
        holder.append(reader)
        self._reader = reader
        reader.start()
        yield from reader.items()

    def acknowledge(self, position: Position) -> None:
        """Commit the offsets the target now holds to Kafka too (for lag monitoring)."""
        if self._reader is not None and isinstance(position, KafkaPosition):
            self._reader.acknowledge(position)

    def close(self) -> None:
        """Leave the group and close the target connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if self._target_conn is not None:
            self._target_conn.close()
            self._target_conn = None

    def status(self, checkpoint: Position | None = None) -> dict[str, Any]:
        """Messages not yet applied per topic: end offsets minus the offsets in the target."""
        consumer = Consumer({**self._settings(), "group.id": self._config.group})
        try:
            metadata = consumer.list_topics(timeout=METADATA_TIMEOUT)
            partitions = [
                (name, p)
                for name, topic in metadata.topics.items()
                if self._subscribed(name)
                for p in topic.partitions
            ]
            stored = self._load_offsets(partitions) if partitions else {}
            lag = 0
            for name, p in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=METADATA_TIMEOUT
                )
                lag += max(0, high - max(low, stored.get((name, p), low)))
        except KafkaException as exc:
            raise SourceError(f"cannot read the topics' end offsets: {redact(str(exc))}") from exc
        finally:
            consumer.close()
            if self._target_conn is not None:
                self._target_conn.close()
                self._target_conn = None
        return {
            "group": self._config.group,
            "topics": len({t for t, _ in partitions}),
            "partitions": len(partitions),
            "lag_messages": lag,
        }

    def drop(self) -> list[str]:
        """Delete the consumer group's committed offsets (the target's go with the checkpoint)."""
        try:
            futures = self._admin().delete_consumer_groups([self._config.group])
            for future in futures.values():
                future.result(timeout=METADATA_TIMEOUT)
        except KafkaException as exc:
            error, text = kafka_error(exc)
            if error is not None and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return []
            raise SourceError(
                f"cannot delete consumer group {self._config.group}: {text}",
                fix="stop every syncer of the group first (a group with members cannot be deleted)",
            ) from exc
        return [f"consumer group {self._config.group}"]


_CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "enable.partition.eof",
    }
)
