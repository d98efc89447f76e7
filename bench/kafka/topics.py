"""What the benchmark reads from Kafka: a topic's end offsets over time, and a census of it.

End offsets (high watermarks) are cheap to ask for, so they are polled while a watcher runs;
they count every record, which for a transactional producer includes its commit markers. The
census after the phase reads the topic once (untimed) and says exactly how many change
events it holds, how many distinct keys, and at which offset each partition's last event
ended: the watcher was done when every partition's end offset had reached that one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bench.db import BenchError

_REQUEST_TIMEOUT = 10.0


def _consumer(bootstrap_servers: str, **settings: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "bench-kafka-observer",  # never subscribes or commits
            "enable.auto.commit": False,
            **settings,
        }
    )


class OffsetWatch:
    """Polls the end offset of each partition of one topic."""

    def __init__(self, bootstrap_servers: str, topic: str, partitions: int) -> None:
        """Connect; ``close`` disconnects."""
        self.topic = topic
        self.partitions = partitions
        self.timeline: list[tuple[float, list[int]]] = []  # (seconds, end offsets)
        self._consumer = _consumer(bootstrap_servers)

    def end_offsets(self) -> list[int]:
        """Each partition's end offset (high watermark) now."""
        ends = []
        for partition in range(self.partitions):
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=_REQUEST_TIMEOUT, cached=False
            )
            ends.append(int(high))
        return ends

    def sample(self, elapsed: float) -> list[int]:
        """Read the end offsets and note them in ``timeline`` at ``elapsed`` seconds."""
        ends = self.end_offsets()
        self.timeline.append((round(elapsed, 3), ends))
        return ends

    def reached(self, goal: list[int]) -> float | None:
        """The first sample at which every partition's end offset was at ``goal`` or past it."""
        for elapsed, ends in self.timeline:
            if all(end >= target for end, target in zip(ends, goal, strict=True)):
                return elapsed
        return None

    def totals(self) -> list[tuple[float, int]]:
        """The timeline with the partitions' end offsets summed."""
        return [(elapsed, sum(ends)) for elapsed, ends in self.timeline]

    def close(self) -> None:
        """Disconnect."""
        self._consumer.close()


@dataclass
class Census:
    """What one topic holds, read from its start to its end."""

    topic: str
    records: int = 0  # records delivered to a consumer (control records are not)
    events: int = 0  # records with a value (change events)
    tombstones: int = 0
    distinct_keys: int = 0
    value_bytes: int = 0
    key_bytes: int = 0
    event_ends: list[int] = field(default_factory=list)  # per partition: last event's offset + 1
    end_offsets: list[int] = field(default_factory=list)
    first_value: Any = None

    def to_json(self) -> dict[str, Any]:
        """The census with the average message size."""
        return {
            "topic": self.topic,
            "records": self.records,
            "events": self.events,
            "tombstones": self.tombstones,
            "distinct_keys": self.distinct_keys,
            "avg_value_bytes": round(self.value_bytes / self.events, 1) if self.events else None,
            "avg_key_bytes": round(self.key_bytes / self.records, 1) if self.records else None,
            "event_end_offsets": self.event_ends,
            "end_offsets": self.end_offsets,
            "first_value": self.first_value,
        }


def census(bootstrap_servers: str, topic: str, partitions: int, timeout: float) -> Census:
    """Read every record of ``topic`` once (committed ones only) and count them."""
    consumer = _consumer(
        bootstrap_servers,
        **{"enable.partition.eof": True, "auto.offset.reset": "earliest"},
    )
    result = Census(topic=topic, event_ends=[0] * partitions)
    keys: set[bytes | None] = set()
    try:
        for partition in range(partitions):
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_REQUEST_TIMEOUT, cached=False
            )
            result.end_offsets.append(int(high))
        remaining = {p for p, high in enumerate(result.end_offsets) if high > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(remaining)])
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise BenchError(f"could not read topic {topic} to its end within {timeout:g}s")
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                partition = message.partition() or 0
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(partition)
                        continue
                    raise KafkaException(error)
                offset = message.offset() or 0
                if offset >= result.end_offsets[partition]:
                    remaining.discard(partition)
                    continue
                result.records += 1
                key, value = message.key(), message.value()
                keys.add(key)
                result.key_bytes += len(key or b"")
                if value is None:
                    result.tombstones += 1
                else:
                    result.events += 1
                    result.value_bytes += len(value)
                    result.event_ends[partition] = max(result.event_ends[partition], offset + 1)
                    if result.first_value is None:
                        result.first_value = _parsed(value)
    finally:
        consumer.close()
    result.distinct_keys = len(keys)
    return result


def _parsed(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return value[:2000].decode(errors="replace")


def steady_rate(timeline: list[tuple[float, int]], total: int) -> float | None:
    """Events per second between 10 % and 90 % of ``total`` (start-up and tail left out).

    ``timeline`` holds (seconds, events so far) samples; the crossing times are interpolated
    between samples. None when the timeline does not span that range.
    """

    def crossing(level: float) -> float | None:
        previous: tuple[float, int] | None = None
        for elapsed, count in timeline:
            if count >= level:
                if previous is None or count == previous[1]:
                    return elapsed
                fraction = (level - previous[1]) / (count - previous[1])
                return previous[0] + fraction * (elapsed - previous[0])
            previous = (elapsed, count)
        return None

    if total <= 0:
        return None
    start, end = crossing(0.1 * total), crossing(0.9 * total)
    if start is None or end is None or end <= start:
        return None
    return 0.8 * total / (end - start)
