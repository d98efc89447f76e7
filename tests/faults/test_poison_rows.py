"""Poison rows among good ones, with the engine killed while it isolates them: nothing is lost,
nothing is silently skipped, every refused change is in the DLQ with its reason, and replay
after the fix converges the target to the source."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.support import (
    assert_same_rows,
    connect,
    execute,
    pipeline_dict,
    reap,
    replicator_cmd,
    run_cli,
    table_rows,
    wait_caught_up,
    wait_for,
    write_config,
)

LIMIT = 1000  # the target's CHECK (n < LIMIT); the source has none
KEYS = 300


def _spawn(config: Path, log: Path, failpoints: str | None, fired: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REPLICATOR_FAILPOINTS_LOG": str(fired)}
    env.pop("REPLICATOR_FAILPOINTS", None)
    if failpoints:
        env["REPLICATOR_FAILPOINTS"] = failpoints
    with log.open("ab") as out:
        return subprocess.Popen(
            replicator_cmd("run", "-c", str(config)), stdout=out, stderr=subprocess.STDOUT, env=env
        )


class _Writer(threading.Thread):
    """Transactions of a few inserts and updates over KEYS keys; about one change in 25 is
    poison (n over the target's limit)."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.rnd = random.Random(seed)
        self.done = threading.Event()
        self.poisoned: set[int] = set()  # keys that ever held a poison value
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.done.is_set():
                    with conn.transaction():
                        for _ in range(self.rnd.randint(1, 6)):
                            key = self.rnd.randrange(KEYS)
                            poison = self.rnd.random() < 0.04
                            n = (
                                self.rnd.randrange(LIMIT, 10 * LIMIT)
                                if poison
                                else self.rnd.randrange(LIMIT)
                            )
                            conn.execute(
                                "INSERT INTO items VALUES (%s, %s, 'w', 0) ON CONFLICT (id)"
                                " DO UPDATE SET n = EXCLUDED.n, v = items.v + 1",
                                (key, n),
                            )
                            if poison:
                                self.poisoned.add(key)
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.slow
def test_poison_rows_under_load_and_kills_are_dead_lettered_exactly(
    source_dsn, target_dsn, tmp_path
):
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    print(f"seed={seed}")  # rerun with REPLICATOR_TEST_SEED to reproduce
    execute(
        source_dsn,
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text, v int DEFAULT 0)",
    )
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict(
            "poison",
            source_dsn,
            target_dsn,
            batch={"max_events": rnd.choice([20, 200])},
            retry={"initial_delay_s": 0.2, "max_delay_s": 1},
        ),
    )
    log, fired = tmp_path / "replicator.log", tmp_path / "failpoints.log"
    engine = _spawn(config, log, None, fired)
    writer = _Writer(source_dsn, seed)
    try:
        wait_for(lambda: "streaming" in log.read_text(), 60, "the stream")
        execute(target_dsn, f"ALTER TABLE items ADD CONSTRAINT items_n_check CHECK (n < {LIMIT})")
        writer.start()
        # Kill at the commit of a batch (poison batches included, mid-isolation's commit),
        # and at random moments.
        for round_ in range(4):
            time.sleep(rnd.uniform(1.0, 2.5))
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
            armed = f"sink.before_commit=kill@{rnd.randint(2, 12)}" if round_ % 2 == 0 else None
            engine = _spawn(config, log, armed, fired)
            if armed:
                assert engine.wait(60) == -signal.SIGKILL  # the failpoint killed it
                engine = _spawn(config, log, None, fired)
        time.sleep(1.0)
        writer.done.set()
        writer.join(30)
        assert writer.error is None, writer.error
        wait_caught_up(source_dsn, target_dsn, "poison", timeout=120)
        assert engine.poll() is None, log.read_text()[-3000:]
        assert fired.read_text().count("sink.before_commit kill") == 2

        # Nothing silently skipped: every key whose source row the target refuses has open
        # entries (refused, or held behind one), each refused one saying why; every other
        # row is exact.
        entries = _entries(config)
        open_keys = {int(e["key"]["id"]) for e in entries}
        with connect(source_dsn) as conn:
            refused = conn.execute(f"SELECT id FROM items WHERE n >= {LIMIT}").fetchall()
        assert {r[0] for r in refused} <= open_keys
        assert writer.poisoned >= {k for k in open_keys if k in writer.poisoned}
        for entry in entries:
            if entry["kind"] == "rejected":
                assert entry["sqlstate"] == "23514" and "items_n_check" in entry["error"]
                assert int(entry["event"]["after"]["n"]) >= LIMIT and entry["position"]
            else:
                assert entry["kind"] == "held" and entry["held_behind"]
        ids = ",".join(str(k) for k in open_keys) or "-1"
        for dsn in (source_dsn, target_dsn):
            execute(dsn, f"CREATE VIEW clean AS SELECT * FROM items WHERE id NOT IN ({ids})")
        assert table_rows(source_dsn, "clean") == table_rows(target_dsn, "clean")
        # Killed mid-way, the same change was never stored twice.
        changes = [(e["key"]["id"], json.dumps(e["position"], sort_keys=True)) for e in entries]
        assert len(changes) == len(set(changes))

        # Replay after the fix converges everything.
        execute(target_dsn, "ALTER TABLE items DROP CONSTRAINT items_n_check")
        done = run_cli("dlq", "replay", "-c", str(config), "--all", timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_caught_up(source_dsn, target_dsn, "poison")
        assert_same_rows(source_dsn, target_dsn, "items")
        assert _entries(config) == []
    finally:
        writer.done.set()
        reap(engine)


def _entries(config: Path) -> list[dict]:
    done = run_cli("dlq", "list", "-c", str(config), "--json", "--limit", "100000")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]
