"""The Kafka sink (watcher): a PostgreSQL source's changes published as Debezium envelopes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from replicator.config import PipelineConfig
from replicator.debezium.envelope import Change, Tombstone, read_message
from replicator.events import Op
from tests.support import RunningPipeline, execute, wait_for, wait_streaming


def _watcher(
    source_dsn: str, bootstrap: str, prefix: str, state: Path, **sink: Any
) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": f"watch-{prefix}"[:50],
            "source": {"type": "postgres", "dsn": source_dsn, "tables": ["public.*"]},
            "sink": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topic_prefix": prefix,
                **sink,
            },
            "checkpoint": {"type": "file", "dir": str(state)},
            "batch": {"max_age_ms": 50},
        }
    )


def _messages(bootstrap: str, topic: str, partitions: int = 1) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{time.time()}",
            "enable.auto.commit": False,
        }
    )
    out: list[Any] = []
    try:
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                message = consumer.poll(5)
                assert message is not None, f"{topic}[{partition}]: ran dry before {high}"
                assert message.error() is None, message.error()
                out.append(message)
                if message.offset() >= high - 1:
                    break
    finally:
        consumer.close()
    return out


def _decoded(bootstrap: str, topic: str, partitions: int = 1) -> list[Any]:
    return [read_message(m.key(), m.value()) for m in _messages(bootstrap, topic, partitions)]


def _count(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "count"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return 0
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_snapshot_and_changes_are_published_as_debezium_events(
    source_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """Existing rows arrive as snapshot reads, then inserts, updates, deletes with tombstones
    and a truncate, keyed by primary key, in order, on <prefix>.<schema>.<table>."""
    bootstrap = kafka_broker.bootstrap_servers
    execute(
        source_dsn,
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2),"
        " seen timestamptz, tags text[])",
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.5, '2024-01-01 00:00+00',"
        " ARRAY['a', 'b'] FROM generate_series(1, 5) g",
    )
    config = _watcher(source_dsn, bootstrap, kafka_topic_prefix, tmp_path / "state")
    running = RunningPipeline(config)
    wait_streaming(running, source_dsn)
    execute(
        source_dsn,
        "INSERT INTO items VALUES (6, 'six', 9.99, now(), '{}')",
        "UPDATE items SET price = 1.01 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "TRUNCATE items",
    )
    topic = f"{kafka_topic_prefix}.public.items"
    wait_for(lambda: _count(bootstrap, topic) >= 10, 60, "the events")
    running.stop()
    events = _decoded(bootstrap, topic)
    ops = [e.op if isinstance(e, Change) else "tombstone" for e in events]
    assert ops == [Op.READ] * 5 + [Op.INSERT, Op.UPDATE, Op.DELETE, "tombstone", Op.TRUNCATE]
    first = events[0]
    assert isinstance(first, Change)
    assert first.key == {"id": 1} and first.after is not None
    assert str(first.after["price"]) == "1.50" and first.after["tags"] == ["a", "b"]
    assert first.source["connector"] == "postgresql" and first.source["table"] == "items"
    update = events[6]
    assert isinstance(update, Change) and str(update.after["price"]) == "1.01"  # type: ignore[index]
    assert isinstance(events[8], Tombstone) and events[8].key == {"id": 2}
    orders = [e.order for e in events if isinstance(e, Change) and e.op is not Op.READ]
    assert orders == sorted(orders)
    state = json.loads((tmp_path / "state" / f"{config.name}.json").read_text())
    assert state["checkpoint"]["position"]["lsn"]


def test_a_restarted_watcher_resumes_without_losing_a_change(
    source_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """Changes made while the watcher is stopped are published when it runs again, from the
    checkpoint in its state file; keyless tables go to partition 0 of multi-partition topics."""
    bootstrap = kafka_broker.bootstrap_servers
    execute(
        source_dsn,
        "CREATE TABLE logs (line text)",
        "ALTER TABLE logs REPLICA IDENTITY FULL",
        "CREATE TABLE counters (id int PRIMARY KEY, n int)",
    )
    config = _watcher(
        source_dsn, bootstrap, kafka_topic_prefix, tmp_path / "state", partitions=3, schemas=False
    )
    running = RunningPipeline(config)
    wait_streaming(running, source_dsn)
    execute(source_dsn, *(f"INSERT INTO counters VALUES ({i}, 0)" for i in range(20)))
    counters = f"{kafka_topic_prefix}.public.counters"
    wait_for(lambda: _count(bootstrap, counters) >= 20, 60, "the first inserts")
    running.stop()
    execute(
        source_dsn,
        *(f"UPDATE counters SET n = n + 1 WHERE id = {i}" for i in range(20)),
        *(f"INSERT INTO logs VALUES ('line {i}')" for i in range(10)),
    )
    running = RunningPipeline(config)
    logs = f"{kafka_topic_prefix}.public.logs"
    wait_for(lambda: _count(bootstrap, counters) >= 40, 60, "the updates")
    wait_for(lambda: _count(bootstrap, logs) >= 10, 60, "the keyless inserts")
    running.stop()
    updates = [
        e for e in _decoded(bootstrap, counters, 3) if isinstance(e, Change) and e.op is Op.UPDATE
    ]
    assert sorted(e.key["id"] for e in updates) == list(range(20))  # type: ignore[index]
    assert all(e.after["n"] == 1 for e in updates)  # type: ignore[index]
    lines = [m.value() for m in _messages(bootstrap, logs, 3)]
    assert len(lines) == 10 and all(m.partition() == 0 for m in _messages(bootstrap, logs, 3))
    assert [json.loads(v)["after"]["line"] for v in lines] == [f"line {i}" for i in range(10)]


def test_unreachable_brokers_are_a_preflight_error_with_the_fix(source_dsn, target_dsn, tmp_path):
    """Neither a watcher nor a syncer starts when no broker answers; both say what to check."""
    from replicator.engine.registry import make_pipeline

    dead = "127.0.0.1:1"
    watch = _watcher(source_dsn, dead, "nowhere", tmp_path / "state")
    sync = PipelineConfig.model_validate(
        {
            "name": "nowhere-sync",
            "source": {"type": "kafka", "bootstrap_servers": dead, "topics": ["t"], "group": "g"},
            "sink": {"type": "postgres", "dsn": target_dsn},
        }
    )
    for config in (watch, sync):
        pipeline = make_pipeline(config, threading.Event())
        try:
            problems = pipeline.check(None)
        finally:
            pipeline.close()
        messages = [str(p) for p in problems]
        assert any(
            "cannot reach Kafka at 127.0.0.1:1" in m and "bootstrap_servers" in m for m in messages
        )
