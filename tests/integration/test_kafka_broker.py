"""The test suite's Kafka broker: a real KRaft node from Maven Central's jars, as the Kafka
sink and source tests will use it (produce, consume in a group, restart, crash, leaks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

import tests.localserver
from tests.kafkabroker import REPO_ROOT, KafkaBroker, KafkaError


def produce(broker: KafkaBroker, topic: str, messages: list[tuple[str, str]]) -> None:
    """Send keyed messages with an idempotent producer; every one must be acknowledged."""
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "acks": "all"}
    )
    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert failures == []


def consume(
    broker: KafkaBroker, topic: str, group: str, count: int, timeout: float = 30
) -> list[tuple[int, str, str]]:
    """Read ``count`` messages as a member of ``group``, committing their offsets."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            out.append((message.partition(), message.key().decode(), message.value().decode()))
        if out:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return out


def test_messages_round_trip_in_key_order_across_partitions(
    kafka_broker: KafkaBroker, kafka_topic_prefix: str
) -> None:
    """Keyed messages on a 3-partition topic all arrive; each key's stay in order."""
    topic = f"{kafka_topic_prefix}.orders"
    kafka_broker.create_topic(topic, partitions=3)
    assert topic in kafka_broker.topics()
    sent = [(f"k{i % 7}", f"v{i}") for i in range(300)]
    produce(kafka_broker, topic, sent)
    received = consume(kafka_broker, topic, f"{kafka_topic_prefix}-group", len(sent))
    assert sorted((k, v) for _, k, v in received) == sorted(sent)
    assert len({p for p, _, _ in received}) > 1  # spread over partitions
    for key in {k for k, _ in sent}:
        assert [v for _, k, v in received if k == key] == [v for k, v in sent if k == key]


def test_acknowledged_messages_and_offsets_survive_restart_and_sigkill(tmp_path: Path) -> None:
    """What Kafka acknowledged, and what a group committed, outlive a clean restart and a
    crash: the group resumes after its last committed offset."""
    broker = KafkaBroker.create("crashy")
    try:
        broker.create_topic("t", partitions=2)
        produce(broker, "t", [(f"k{i}", f"first {i}") for i in range(50)])
        assert len(consume(broker, "t", "g", 50)) == 50
        port = broker.port
        broker.restart()
        assert broker.port == port
        produce(broker, "t", [(f"k{i}", f"second {i}") for i in range(50)])
        broker.kill()
        assert not broker.is_running
        broker.start()
        rest = consume(broker, "t", "g", 50)
        assert sorted(v for _, _, v in rest) == sorted(f"second {i}" for i in range(50))
        assert broker.topics() == ["t"]
    finally:
        broker.destroy()
    assert not broker.folder.exists()
    with pytest.raises(KafkaError, match="destroyed"):
        broker.start()


def test_missing_jars_get_the_command_that_fetches_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the cache folder, create() says how to fill it and makes nothing."""
    monkeypatch.setenv("REPLICATOR_KAFKA_CACHE", str(tmp_path / "empty"))
    before = set(Path("/tmp").glob("replicator-kafka-nojars*"))
    with pytest.raises(KafkaError, match=r"scripts/ensure-kafka.sh"):
        KafkaBroker.create("nojars")
    assert set(Path("/tmp").glob("replicator-kafka-nojars*")) == before


_ORPHAN_MAKER = """
import time
from tests.kafkabroker import KafkaBroker
broker = KafkaBroker.create("orphan")
print(broker.folder, flush=True)
time.sleep(600)
"""


@pytest.fixture
def orphan_maker() -> Iterator[subprocess.Popen[str]]:
    """A Python process that creates a broker, prints its folder and waits to be killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_MAKER], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_broker_of_a_killed_process_is_reaped_by_the_next_create(
    orphan_maker: subprocess.Popen[str],
) -> None:
    """A broker left behind by a SIGKILLed process is killed and deleted by create()."""
    assert orphan_maker.stdout is not None
    folder = Path(orphan_maker.stdout.readline().strip())
    pids = tests.localserver.pids_with_arg(str(folder / "server.properties"))
    assert pids
    os.kill(orphan_maker.pid, signal.SIGKILL)
    orphan_maker.wait()
    assert folder.exists()

    KafkaBroker.create("reaper").destroy()

    assert not folder.exists()
    assert not any(tests.localserver.process_alive(pid) for pid in pids)
