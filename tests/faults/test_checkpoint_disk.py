"""The file checkpoint store of a PostgreSQL → Kafka watcher under disk faults: its folder on
a 64 KiB tmpfs filled to the last byte while streaming, and a crash between writing the new
state and renaming it over the old one (reliability plan §6, scenario 12).

At-least-once into Kafka: a batch whose checkpoint could not be saved is published again, so
a key's messages may repeat, but only as a replay, and none may be missing.
"""

from __future__ import annotations

import collections
import json
import time

import pytest

from tests.faults.faultkit import (
    RETRY,
    TRANSIENT,
    BackgroundLoad,
    Engines,
    ItemsWorkload,
    assert_slot_not_ahead,
    assert_topic_matches_items,
    file_checkpoint,
    fill,
    seeded,
    source_lsn,
    tiny_tmpfs,
    topic_changes,
)
from tests.support import connect, execute, slot_active, slot_lsn, wait_for, write_config

NAME = "diskfull"
SLOT = f"replicator_{NAME}"


def _copied(state):
    """Whether the state file says every table was copied."""
    path = state / f"{NAME}.json"
    if not path.exists():
        return False
    tables = json.loads(path.read_text())["snapshot_tables"]
    return len(tables) == 2 and all(t["state"] == "done" for t in tables)


def _assert_topics_cover_source(bootstrap, prefix, source_dsn):
    """Every change of the source is in the topics (at least once, replays only)."""
    repeats = assert_topic_matches_items(
        source_dsn, topic_changes(bootstrap, f"{prefix}.public.items")
    )
    published = collections.Counter(
        change.after["line"]
        for _, change in topic_changes(bootstrap, f"{prefix}.public.notes")
        if change.after is not None
    )
    with connect(source_dsn) as conn:
        lines = collections.Counter(r[0] for r in conn.execute("SELECT line FROM notes"))
    assert not lines - published, f"keyless rows never published: {lines - published}"
    print(f"repeated messages (replays): {repeats}")


def _caught_up(load, source_dsn, checkpoint):
    """Pause the load and wait until the state file's checkpoint covers the source's WAL."""
    load.pause()
    goal = source_lsn(source_dsn)
    wait_for(lambda: checkpoint() >= goal, 90, "the watcher to catch up")


@pytest.mark.slow
def test_a_full_checkpoint_disk_is_retried_and_never_acknowledged_past(
    source_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """With the checkpoint folder's disk full, the watcher keeps retrying (ENOSPC is
    transient) and the slot never confirms past the checkpoint on disk; once space is freed
    it goes on, and every source change is in the topics. Killed between writing a new state
    file and renaming it, the old file stays whole and readable and the restart converges."""
    rnd = seeded("checkpoint disk")
    bootstrap = kafka_broker.bootstrap_servers
    prefix = kafka_topic_prefix
    execute(source_dsn, *ItemsWorkload.SCHEMA)
    items = ItemsWorkload(rnd)
    with connect(source_dsn) as conn:
        items.seed_rows(conn, 200)
    kafka_broker.create_topic(f"{prefix}.public.items", partitions=3)
    kafka_broker.create_topic(f"{prefix}.public.notes")
    state = tmp_path / "state"
    checkpoint = file_checkpoint(state, NAME)
    with tiny_tmpfs(state, "64k"), Engines(tmp_path) as engines:
        config = write_config(
            tmp_path / "replicator.yaml",
            {
                "name": NAME,
                "source": {"type": "postgres", "dsn": source_dsn, "tables": ["public.*"]},
                "sink": {"type": "kafka", "bootstrap_servers": bootstrap, "topic_prefix": prefix},
                "checkpoint": {"type": "file", "dir": str(state)},
                "batch": {"max_age_ms": 100, "max_events": rnd.choice([10, 100, 1000])},
                "retry": RETRY,
            },
            shutdown_timeout_s=20,
        )
        load = BackgroundLoad(source_dsn, items)
        engine = engines.spawn(config, label="watcher")
        wait_for(lambda: _copied(state), 60, "the copy")
        load.start()
        for _ in range(3):
            before = checkpoint()
            wait_for(lambda b=before: checkpoint() > b, 30, "checkpoints under load")

        # 1. The disk fills up while streaming.
        filler = fill(state)
        wait_for(lambda: TRANSIENT in engines.text(), 30, "a failure on the full disk")
        full_at = checkpoint()  # no write can be under way any more
        wait_for(lambda: engines.text().count(TRANSIENT) >= 3, 30, "retries on the full disk")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            confirmed = slot_lsn(source_dsn, SLOT)  # read first: the checkpoint only grows
            durable = checkpoint()
            assert confirmed <= durable, f"slot at {confirmed:X}, past the file's {durable:X}"
            time.sleep(0.1)
        assert checkpoint() == full_at, "a checkpoint was written on a full disk?"
        log = engines.text()
        assert "No space left on device" in log, log[-3000:]
        assert engine.alive, engine.tail()

        # 2. Space is freed: it goes on by itself.
        filler.unlink()
        wait_for(lambda: checkpoint() > full_at, 30, "a checkpoint once space is freed")
        _caught_up(load, source_dsn, checkpoint)
        _assert_topics_cover_source(bootstrap, prefix, source_dsn)
        load.resume()
        code, _ = engine.terminate()
        assert code == 0, engine.tail()
        wait_for(lambda: not slot_active(source_dsn, SLOT), 30, "the walsender to exit")
        assert slot_lsn(source_dsn, SLOT) == checkpoint()

        # 3. A crash between writing the new state file and renaming it.
        at = rnd.randint(2, 15)
        engine = engines.spawn(config, f"checkpoint.before_rename=kill@{at}")
        assert engine.wait_killed_by("checkpoint.before_rename", 60).passes == at
        assert (state / f".{NAME}.json.tmp").exists(), "the new state was not written"
        old = checkpoint()  # whole JSON, as the rename keeps it
        assert old > 0
        assert_slot_not_ahead(source_dsn, SLOT, checkpoint, "killed before the rename")
        engine = engines.spawn(config, label="restart after the kill before the rename")
        wait_for(lambda: checkpoint() > old, 30, "a checkpoint after the restart")
        _caught_up(load, source_dsn, checkpoint)
        _assert_topics_cover_source(bootstrap, prefix, source_dsn)
        load.stop()
        code, _ = engine.terminate()
        assert code == 0, engine.tail()
    assert load.transactions > 30, load.transactions
    assert "Traceback" not in engines.text()
