"""Kafka delivering everything again to a PostgreSQL target: PostgreSQL → watcher → Kafka →
syncer → PostgreSQL through the CLI, then the syncer's stored offsets deleted so that it
re-reads every topic from the start (DESIGN invariant 2; reliability plan §6, scenario 19).

The staleness guard must refuse every redelivered change the target already reflects (and
say how many), a trigger on the target proves no row ever went back to an older ``v``, and
the target still equals the source.
"""

from __future__ import annotations

import re
import time

import pytest

from replicator.debezium.envelope import Change
from tests.faults.faultkit import (
    RETRY,
    BackgroundLoad,
    Engines,
    ItemsWorkload,
    compare,
    file_checkpoint,
    seeded,
    source_lsn,
    topic_changes,
)
from tests.support import connect, execute, wait_for, write_config

WATCHER = "redeliver-watch"
SYNCER = "redeliver-sync"
PARTITIONS = 3

# Every change the syncer makes to the target's items, to prove none went back in time.
AUDIT = (
    "CREATE TABLE public.faults_applied (id bigint, old_v int, new_v int, op text)",
    """CREATE FUNCTION public.faults_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.faults_applied VALUES (
            coalesce(NEW.id, OLD.id),
            CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.v END,
            CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.v END,
            TG_OP);
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER faults_audit AFTER INSERT OR UPDATE OR DELETE ON public.items"
    " FOR EACH ROW EXECUTE FUNCTION public.faults_audit()",
)


def _config(tmp_path, source_dsn, target_dsn, bootstrap, prefix, rnd):
    return write_config(
        tmp_path / "replicator.yaml",
        {
            "name": WATCHER,
            "source": {"type": "postgres", "dsn": source_dsn, "tables": ["public.*"]},
            "sink": {"type": "kafka", "bootstrap_servers": bootstrap, "topic_prefix": prefix},
            "checkpoint": {"type": "file", "dir": str(tmp_path / "state")},
            "batch": {"max_age_ms": 100},
            "retry": RETRY,
        },
        {
            "name": SYNCER,
            "source": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topics": f"^{re.escape(prefix)}\\.public\\.items$",
                "group": f"{prefix}-sync",
            },
            "sink": {"type": "postgres", "dsn": target_dsn},
            "batch": {"max_age_ms": 100, "max_events": rnd.choice([10, 100, 1000])},
            "retry": RETRY,
        },
        shutdown_timeout_s=20,
    )


def _stored_offsets(target_dsn):
    with connect(target_dsn) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM _replicator.kafka_offsets WHERE pipeline = %s",
            (SYNCER,),
        ).fetchall()
    return dict(rows)


def _end_offsets(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def _settle(load, source_dsn, target_dsn, bootstrap, topic, state):
    """Pause the load; wait until the watcher published all of it and the syncer applied
    every message of the topic; compare."""
    load.pause()
    goal = source_lsn(source_dsn)
    checkpoint = file_checkpoint(state, WATCHER)
    wait_for(lambda: checkpoint() >= goal, 90, "the watcher to catch up")
    ends = {p: n for p, n in _end_offsets(bootstrap, topic).items() if n}
    wait_for(
        lambda: all(_stored_offsets(target_dsn).get(p, 0) >= n for p, n in ends.items()),
        90,
        f"the syncer to apply every message up to {ends}",
    )
    compare(source_dsn, target_dsn, ["public.items"])


def _counters(target_dsn):
    with connect(target_dsn) as conn:
        row = conn.execute(
            "SELECT rows_inserted, rows_updated, rows_deleted FROM _replicator.checkpoints"
            " WHERE pipeline = %s",
            (SYNCER,),
        ).fetchone()
    return row


def _stale_logged(text):
    """Stale changes the syncer's log says it refused."""
    return sum(
        int(n)
        for n in re.findall(r"refused stale changes: the target already .*?events=(\d+)", text)
    )


def _regressions(target_dsn):
    with connect(target_dsn) as conn:
        return conn.execute(
            "SELECT id, old_v, new_v, op FROM public.faults_applied WHERE new_v < old_v"
        ).fetchall()


def _audit_count(target_dsn):
    with connect(target_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM public.faults_applied").fetchone()
    return row[0]


def _forget_offsets(engines, syncer, target_dsn):
    """Stop the syncer and delete its stored offsets: it re-reads every topic from the start."""
    code, _ = syncer.terminate()
    assert code == 0, syncer.tail()
    execute(target_dsn, f"DELETE FROM _replicator.kafka_offsets WHERE pipeline = '{SYNCER}'")
    assert _stored_offsets(target_dsn) == {}


@pytest.mark.slow
def test_a_full_redelivery_from_kafka_is_refused_as_stale(
    source_dsn, target_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """After the syncer's offsets are deleted, Kafka redelivers every message: quiet, not one
    row of the target changes and the guard counts every redelivered change as stale; under
    load, no row ever goes back to an older version; the target equals the source."""
    rnd = seeded("kafka redelivery")
    bootstrap = kafka_broker.bootstrap_servers
    topic = f"{kafka_topic_prefix}.public.items"
    execute(source_dsn, ItemsWorkload.SCHEMA[0])
    items = ItemsWorkload(rnd, keyless=False)  # a keyless table cannot be guarded
    with connect(source_dsn) as conn:
        items.seed_rows(conn, 300)
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    config = _config(tmp_path, source_dsn, target_dsn, bootstrap, kafka_topic_prefix, rnd)
    state = tmp_path / "state"
    load = BackgroundLoad(source_dsn, items)
    with Engines(tmp_path) as engines:
        engines.spawn(config, None, "-p", WATCHER, label="watcher")
        syncer = engines.spawn(config, None, "-p", SYNCER, label="syncer")
        load.start()
        time.sleep(3)
        _settle(load, source_dsn, target_dsn, bootstrap, topic, state)
        execute(target_dsn, *AUDIT)

        # 1. Everything again, with the source quiet: nothing may change.
        messages = [c for _, c in topic_changes(bootstrap, topic) if isinstance(c, Change)]
        counters = _counters(target_dsn)
        _forget_offsets(engines, syncer, target_dsn)
        stale_before = _stale_logged(engines.text())
        syncer = engines.spawn(config, None, "-p", SYNCER, label="syncer, offsets deleted")
        _settle(load, source_dsn, target_dsn, bootstrap, topic, state)
        assert _audit_count(target_dsn) == 0, "a redelivered change was applied again"
        assert _counters(target_dsn) == counters
        stale = _stale_logged(engines.text()) - stale_before
        print(f"redelivered {len(messages)} change events, {stale} refused as stale")
        assert stale == len(messages), (stale, len(messages))

        # 2. Everything again while the source keeps changing.
        load.resume()
        time.sleep(1)
        _forget_offsets(engines, syncer, target_dsn)
        syncer = engines.spawn(config, None, "-p", SYNCER, label="syncer, offsets deleted again")
        time.sleep(3)
        _settle(load, source_dsn, target_dsn, bootstrap, topic, state)
        assert _audit_count(target_dsn) > 0, "the changes under load were not applied"
        assert _regressions(target_dsn) == [], "a row went back to an older version"
        load.stop()
        code, _ = syncer.terminate()
        assert code == 0, syncer.tail()
        assert _stale_logged(engines.text()) > stale_before + stale
    assert load.transactions > 30, load.transactions
    assert "Traceback" not in engines.text()
