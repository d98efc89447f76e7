"""A paused syncer keeps its consumer-group membership past max.poll.interval.ms."""

from __future__ import annotations

import json
import time

from confluent_kafka import Producer

from replicator.config import PipelineConfig
from tests.support import RunningPipeline, connect, execute, wait_for

ROWS = 40_000  # more than the reader's queue holds (64 hand-overs of 512)


def _count(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM public.items").fetchone()
    assert row is not None
    return int(row[0])


def test_a_pause_outlasts_max_poll_interval(target_dsn, kafka_broker, kafka_topic_prefix, capfd):
    """Paused for 2.5 × max.poll.interval.ms behind a full queue, the member is neither
    revoked nor rebalanced; on resume every event is applied once."""
    prefix = kafka_topic_prefix
    topic = f"{prefix}.public.items"
    execute(target_dsn, "CREATE TABLE public.items (id int PRIMARY KEY, note text)")
    kafka_broker.create_topic(topic)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for i in range(1, ROWS + 1):
        value = {"before": None, "after": {"id": i, "note": f"n{i}"}, "op": "c", "ts_ms": 1}
        producer.produce(topic, key=json.dumps({"id": i}).encode(), value=json.dumps(value))
        if i % 10_000 == 0:
            producer.flush(30)
    assert producer.flush(30) == 0
    config = PipelineConfig.model_validate(
        {
            "name": "paused-syncer",
            "source": {
                "type": "kafka",
                "bootstrap_servers": kafka_broker.bootstrap_servers,
                "topics": [topic],
                "group": f"{prefix}-group",
                # The smallest librdkafka allows with the syncer's 10 s session timeout.
                "kafka": {"max.poll.interval.ms": 10_000},
            },
            "sink": {"type": "postgres", "dsn": target_dsn},
        }
    )
    running = RunningPipeline(config)
    running.pipeline.pause()  # takes effect at the stream's first transaction boundary
    try:
        wait_for(lambda: running.pipeline.state == "paused", 60, "the pause")
        applied = _count(target_dsn)
        assert applied < ROWS
        time.sleep(25)
        assert running.error is None
        assert _count(target_dsn) == applied
        running.pipeline.resume()
        wait_for(lambda: running.error is not None or _count(target_dsn) == ROWS, 60, "all")
        assert running.error is None, running.error
        logged = "".join(capfd.readouterr())  # before the stop, which leaves the group
    finally:
        running.stop()
    assert logged.count("partitions assigned") == 1, logged[-3000:]
    assert "partitions revoked" not in logged
    assert "poll interval" not in logged.lower()
