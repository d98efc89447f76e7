"""Changes the target refuses go to the dead-letter queue with their reason, their keys wait
behind them, the rest goes on; replay after a fix converges the target to the source."""

from __future__ import annotations

import json

import pytest

from tests.apiclient import Instance, free_port, metric
from tests.support import (
    assert_same_rows,
    connect,
    execute,
    pipeline_dict,
    reap,
    run_cli,
    spawn_run,
    table_rows,
    wait_caught_up,
    wait_for,
    write_config,
)

SCHEMA = "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text)"


def _dlq(config, *args: str) -> list[dict]:
    done = run_cli("dlq", "list", "-c", str(config), "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("store", ["table", "jsonl"])
def test_a_refused_row_is_dead_lettered_its_key_held_and_replayed_after_the_fix(
    source_dsn, target_dsn, tmp_path, store
):
    """A row breaking a CHECK the target has (and the source lacks), among good rows; later
    changes to its key wait behind it; the rest streams on. After dropping the CHECK, a
    replay applies the row and what waited behind it, in order: target == source."""
    execute(source_dsn, SCHEMA)
    dead_letter = {"store": store}
    if store == "jsonl":
        dead_letter["path"] = str(tmp_path / "dlq.jsonl")
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict("poison", source_dsn, target_dsn, dead_letter=dead_letter),
    )
    log = tmp_path / "replicator.log"
    engine = spawn_run(config, log)
    try:
        wait_for(lambda: "streaming" in log.read_text(), 60, "the stream")
        # The target has a rule the source lacks (the copy made the table: add it now).
        execute(target_dsn, "ALTER TABLE items ADD CONSTRAINT items_n_check CHECK (n < 1000)")
        with connect(source_dsn) as conn:
            with conn.transaction():
                for i in range(1, 101):
                    conn.execute(
                        "INSERT INTO items VALUES (%s, %s, 'ok')", (i, 5000 if i == 50 else i)
                    )
            # In a batch of its own (one batch would fold the insert and update into one).
            wait_for(lambda: len(_dlq(config)) == 1, 30, "the refused row's entry")
            conn.execute("UPDATE items SET n = 7, note = 'fixed later' WHERE id = 50")
            conn.execute("UPDATE items SET note = 'moved on' WHERE id = 51")
            conn.execute("INSERT INTO items VALUES (101, 1, 'after')")
        wait_for(lambda: len(table_rows(target_dsn, "items")) == 100, 60, "the good rows")
        wait_for(lambda: "moved on" in "".join(table_rows(target_dsn, "items")), 30, "id 51")
        ids = {r.strip("()").split(",")[0] for r in table_rows(target_dsn, "items")}
        assert "50" not in ids and "101" in ids
        wait_for(lambda: len(_dlq(config)) == 2, 30, "two dead-letter entries")
        held, rejected = _dlq(config)  # newest first
        assert rejected["kind"] == "rejected" and rejected["op"] == "insert"
        assert rejected["sqlstate"] == "23514" and "items_n_check" in rejected["error"]
        assert rejected["key"] == {"id": "50"} and rejected["attempts"] == 2
        assert rejected["event"]["after"]["n"] == "5000" and rejected["position"]
        assert held["kind"] == "held" and held["op"] == "update"
        assert held["held_behind"] and held["event"]["after"]["note"] == "fixed later"
        shown = run_cli("dlq", "show", "-c", str(config), str(rejected["id"]))
        assert shown.returncode == 0 and "items_n_check" in shown.stdout
        assert engine.poll() is None  # the pipeline goes on

        execute(target_dsn, "ALTER TABLE items DROP CONSTRAINT items_n_check")
        done = run_cli("dlq", "replay", "-c", str(config), "--all", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "replayed 2; still open 0" in done.stdout
        wait_caught_up(source_dsn, target_dsn, "poison")
        assert_same_rows(source_dsn, target_dsn, "items")
        assert _dlq(config) == []
        statuses = {e["status"] for e in _dlq(config, "--status", "all")}
        assert statuses == {"replayed"}
    finally:
        reap(engine)


def test_validation_rules_dead_letter_with_the_rule_and_degrade_the_pipeline(
    source_dsn, target_dsn, tmp_path
):
    """Each kind of rule refuses a change with its name and what was wrong; good changes
    and other keys go on; over the error-rate threshold the pipeline says it is degraded
    (readiness, API, metric), and a discard is recorded with who and why."""
    execute(source_dsn, SCHEMA)
    port = free_port()
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict(
            "rules",
            source_dsn,
            target_dsn,
            validation=[
                {
                    "tables": ["public.items"],
                    "required": ["note"],
                    "max_length": {"note": 8},
                    "ranges": {"n": {"min": 0, "max": 1000}},
                    "patterns": {"note": "[a-z ]+"},
                }
            ],
            degraded_errors_per_minute=3,
        ),
        api={"listen": f"127.0.0.1:{port}", "token_env": "REPLICATOR_API_TOKEN"},
    )
    instance = Instance(config, port, tmp_path / "replicator.log")
    try:
        instance.wait_state("rules", "streaming")
        bad = {
            1: (1, None),  # required
            2: (2, "far too long"),  # max_length
            3: (5000, "ok"),  # range
            4: (4, "UPPER"),  # pattern
        }
        with connect(source_dsn) as conn:
            for i, (n, note) in bad.items():
                conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (i, n, note))
            conn.execute("INSERT INTO items VALUES (5, 5, 'fine')")
            conn.execute("UPDATE items SET n = 3, note = 'now fine' WHERE id = 3")  # held
        wait_for(lambda: len(_dlq(config)) == 5, 30, "the dead-letter entries")
        entries = {(e["key"]["id"], e["kind"]): e for e in _dlq(config)}
        assert entries[("1", "invalid")]["rule"] == "public.items.note required"
        assert entries[("2", "invalid")]["rule"] == "public.items.note max_length 8"
        assert "is 12 long" in entries[("2", "invalid")]["error"]
        assert entries[("3", "invalid")]["rule"] == "public.items.n range [0, 1000]"
        assert entries[("4", "invalid")]["rule"].startswith("public.items.note pattern")
        assert ("3", "held") in entries
        assert table_rows(target_dsn, "items") == ["(5,5,fine)"]
        view = instance.pipeline("rules")
        assert view["dead_letters_open"] == 5 and view["degraded"].startswith("degraded: ")
        ready = instance.get("/health/ready").json()["pipelines"]["rules"]
        assert ready["ready"] and "dead-letter queue" in ready["warning"]
        metrics = instance.get("/metrics").body.decode()
        assert metric(metrics, "replicator_pipeline_degraded", pipeline="rules") == 1
        assert metric(metrics, "replicator_dlq_open_entries", pipeline="rules") == 5
        assert (
            metric(metrics, "replicator_dead_lettered_total", pipeline="rules", kind="invalid") == 4
        )

        ids = [str(e["id"]) for e in _dlq(config) if e["key"]["id"] in ("1", "2", "4")]
        done = run_cli(
            "dlq", "discard", "-c", str(config), *ids, "--by", "ops-alice", "--note", "junk"
        )
        assert done.returncode == 0 and "discarded 3 entries" in done.stdout
        gone = _dlq(config, "--status", "discarded")
        assert {e["resolved_by"] for e in gone} == {"ops-alice"}
        assert {e["note"] for e in gone} == {"junk"} and all(e["resolved_at"] for e in gone)
        assert len(_dlq(config)) == 2  # key 3 still waits
    finally:
        instance.kill()


def test_a_watchers_invalid_changes_go_to_a_kafka_topic_dlq(
    source_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """PostgreSQL → Kafka with a validation rule and the DLQ on a Kafka topic: the invalid
    change and the one held behind it are in the topic, the others are published; after the
    rule is relaxed and the watcher restarted, a replay publishes both."""
    execute(source_dsn, SCHEMA)
    dlq_topic = f"{kafka_topic_prefix}.dlq"
    pipeline = {
        "name": "watch-dlq",
        "source": {"type": "postgres", "dsn": source_dsn, "tables": ["public.*"]},
        "sink": {
            "type": "kafka",
            "bootstrap_servers": kafka_broker.bootstrap_servers,
            "topic_prefix": kafka_topic_prefix,
        },
        "checkpoint": {"type": "file", "dir": str(tmp_path / "state")},
        "dead_letter": {"store": "kafka", "topic": dlq_topic},
        "validation": [{"tables": ["public.items"], "ranges": {"n": {"max": 100}}}],
    }
    config = write_config(tmp_path / "replicator.yaml", pipeline)
    log = tmp_path / "replicator.log"
    engine = spawn_run(config, log)
    try:
        wait_for(lambda: "streaming" in log.read_text(), 60, "the stream")
        with connect(source_dsn) as conn:
            conn.execute("INSERT INTO items VALUES (1, 1, 'a'), (2, 500, 'b')")
            conn.execute("UPDATE items SET n = 50, note = 'b2' WHERE id = 2")
        wait_for(lambda: len(_dlq(config)) == 2, 60, "the entries in the DLQ topic")
        held, invalid = _dlq(config)
        assert invalid["kind"] == "invalid" and invalid["rule"] == "public.items.n range [, 100]"
        assert held["kind"] == "held" and held["key"] == {"id": "2"}

        relaxed = {**pipeline, "validation": []}
        write_config(config, relaxed)
        engine.terminate()
        assert engine.wait(60) == 0
        engine = spawn_run(config, log)
        done = run_cli("dlq", "replay", "-c", str(config), "--all", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "replayed 2; still open 0" in done.stdout
    finally:
        reap(engine)


def test_policy_skip_applies_later_changes_and_marks_the_entry_superseded(
    source_dsn, target_dsn, tmp_path
):
    """With dead_letter.policy: skip a later change to a refused key is applied, and the
    refused entry is closed as superseded by it (so a replay cannot put the old one back)."""
    execute(source_dsn, SCHEMA)
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict(
            "skip",
            source_dsn,
            target_dsn,
            dead_letter={"store": "jsonl", "path": str(tmp_path / "dlq.jsonl"), "policy": "skip"},
        ),
    )
    log = tmp_path / "replicator.log"
    engine = spawn_run(config, log)
    try:
        wait_for(lambda: "streaming" in log.read_text(), 60, "the stream")
        execute(target_dsn, "ALTER TABLE items ADD CONSTRAINT items_n_check CHECK (n < 1000)")
        execute(source_dsn, "INSERT INTO items VALUES (1, 5000, 'bad'), (2, 2, 'ok')")
        wait_for(lambda: len(_dlq(config)) == 1, 30, "the refused row's entry")
        execute(source_dsn, "UPDATE items SET n = 1, note = 'good now' WHERE id = 1")
        wait_caught_up(source_dsn, target_dsn, "skip")
        assert_same_rows(source_dsn, target_dsn, "items")
        assert _dlq(config) == []
        (closed,) = _dlq(config, "--status", "superseded")
        assert closed["key"] == {"id": "1"} and "policy skip" in closed["note"]
    finally:
        reap(engine)
