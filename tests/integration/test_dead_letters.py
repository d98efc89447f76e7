"""Changes the target refuses go to the dead-letter queue with their reason, their keys wait
behind them, the rest goes on; replay after a fix converges the target to the source."""

from __future__ import annotations

import json

import pytest

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
