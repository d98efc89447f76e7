"""Shared helpers of the fault tests: engines spawned through the CLI with failpoints armed,
the failpoint log read back, a workload that can be paused to compare, the slot checked
against the checkpoint right after a crash, a tiny filesystem to fill, topics read back.

Every engine a test spawns goes through an :class:`Engines` set, which kills and reaps
whatever still runs when the test ends, passed or failed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from replicator.debezium.envelope import Change, Tombstone, read_message
from replicator.events import Op
from replicator.sources.postgres.pgoutput import parse_lsn
from tests.support import (
    assert_same_rows,
    checkpoint_lsn,
    connect,
    pipeline_dict,
    replicator_cmd,
    slot_active,
    slot_lsn,
    snapshot_done,
    wait_for,
    write_config,
)
from tests.workload import TABLES, Workload

RETRY = {"initial_delay_s": 0.2, "max_delay_s": 2}
"""Short retry delays: a transient fault in these tests is over in well under a second."""

TRANSIENT = "transient failure: restarting from the checkpoint"


def seeded(label: str) -> random.Random:
    """A random generator seeded from ``REPLICATOR_TEST_SEED`` (or at random), seed printed."""
    seed = int(os.environ.get("REPLICATOR_TEST_SEED") or random.randrange(1 << 30))
    print(f"{label}: seed={seed} (rerun with REPLICATOR_TEST_SEED={seed})")
    return random.Random(seed)


# --- engines -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    """One line of the failpoint log: ``name action pass``."""

    name: str
    action: str
    passes: int


class Engine:
    """One ``replicator run`` process, its failpoints and its failpoint log."""

    def __init__(self, proc: subprocess.Popen[bytes], label: str, fplog: Path, log: Path) -> None:
        self.proc = proc
        self.label = label
        self.fplog = fplog
        self.log = log

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def fired(self) -> list[Fired]:
        """What its failpoints recorded, in order."""
        if not self.fplog.exists():
            return []
        out = []
        for line in self.fplog.read_text().splitlines():
            name, action, passes = line.split()
            out.append(Fired(name, action, int(passes)))
        return out

    def wait_fired(self, name: str, timeout: float = 60) -> Fired:
        """Wait until failpoint ``name`` fired; fail early if the engine died without it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [f for f in self.fired() if f.name == name]
            if found:
                return found[0]
            if not self.alive:
                raise AssertionError(
                    f"{self.label}: exited with {self.proc.returncode} before failpoint {name} "
                    f"fired\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}: failpoint {name} did not fire in {timeout}s")
            time.sleep(0.05)

    def wait_killed_by(self, name: str, timeout: float = 60) -> Fired:
        """Wait for the engine to die by the ``kill`` of failpoint ``name``."""
        fired = self.wait_fired(name, timeout)
        assert fired.action == "kill", fired
        code = self.proc.wait(10)
        assert code == -signal.SIGKILL, f"{self.label}: exit code {code}\n{self.tail()}"
        return fired

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL it and collect its status."""
        if self.alive:
            self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM it; its exit code and how many seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.label}: still running {timeout}s after SIGTERM\n{self.tail()}"
            ) from None
        return code, time.monotonic() - started

    def tail(self, chars: int = 4000) -> str:
        """The end of the (shared) engine log."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class Engines:
    """Spawns engines for one test, all logging to ``<folder>/engine.log``; kills and reaps
    every one of them at the end (a context manager)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "engine.log"
        self._all: list[Engine] = []

    def spawn(
        self,
        config: Path,
        failpoints: str | None = None,
        *args: str,
        label: str | None = None,
    ) -> Engine:
        """``replicator run -c config ARGS`` with ``failpoints`` armed (a
        ``REPLICATOR_FAILPOINTS`` spec) and a failpoint log of its own."""
        number = len(self._all) + 1
        label = label or f"engine {number}" + (f" [{failpoints}]" if failpoints else "")
        fplog = self.folder / f"failpoints-{number}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_FAILPOINTS")}
        if failpoints:
            env["REPLICATOR_FAILPOINTS"] = failpoints
            env["REPLICATOR_FAILPOINTS_LOG"] = str(fplog)
        with self.log.open("ab") as out:
            out.write(f"\n===== {label}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                replicator_cmd("run", "-c", str(config), *args),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        engine = Engine(proc, label, fplog, self.log)
        self._all.append(engine)
        return engine

    def text(self) -> str:
        """The whole engine log."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Kill and reap every engine still running."""
        for engine in self._all:
            with contextlib.suppress(Exception):
                engine.kill()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- load on the source ------------------------------------------------------------------------


class BackgroundLoad:
    """Runs ``transaction(conn)`` in a loop on a thread until stopped; can pause between
    transactions, so that a test can let the target catch up and compare."""

    def __init__(
        self,
        dsn: str,
        transaction: Callable[[psycopg.Connection[Any]], None],
        pause_s: float = 0.01,
    ) -> None:
        self._dsn = dsn
        self._transaction = transaction
        self._pause_s = pause_s  # between transactions: a load the engine keeps up with
        self._stop = threading.Event()
        self._running = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.transactions = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start the loop (running)."""
        self._running.set()
        self._thread.start()

    def pause(self) -> None:
        """Return once no transaction is in flight and none will start until :meth:`resume`."""
        self._idle.clear()
        self._running.clear()
        while not self._idle.wait(0.1):
            self._raise()
        self._raise()

    def resume(self) -> None:
        """Start running transactions again."""
        self._idle.clear()
        self._running.set()

    def stop(self) -> None:
        """Stop and wait; re-raise a failure of the load itself."""
        self._stop.set()
        self._running.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise AssertionError("the source workload failed") from self.error

    def _loop(self) -> None:
        try:
            with psycopg.connect(self._dsn) as conn:
                while not self._stop.is_set():
                    if not self._running.is_set():
                        self._idle.set()
                        self._running.wait(0.1)
                        continue
                    self._transaction(conn)
                    self.transactions += 1
                    time.sleep(self._pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by pause() and stop()
            self.error = exc
            self._idle.set()


class ItemsWorkload:
    """Small transactions on ``items (id, v, note)``: inserts of new ids, updates that add 1
    to ``v``, deletes (ids are never reused). Each update is one event, so a key's ``v``
    values on a topic must run 0, 1, 2, ... without a gap: a gap is a lost change."""

    SCHEMA = (
        "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0, note text)",
        "CREATE TABLE notes (line text)",  # keyless: replays are visible as duplicates
        "ALTER TABLE notes REPLICA IDENTITY FULL",
    )

    def __init__(self, rnd: random.Random, keyless: bool = True) -> None:
        self.rnd = rnd
        self.next_id = 1
        self.keyless = keyless  # also insert into ``notes``

    def seed_rows(self, conn: psycopg.Connection[Any], count: int) -> None:
        """Rows present before the engine starts (copied by its snapshot)."""
        with conn.transaction():
            conn.execute(
                "INSERT INTO items (id, note) SELECT g, 'seed ' || g FROM generate_series(1, %s) g",
                (count,),
            )
        self.next_id = count + 1

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        rnd = self.rnd
        with conn.transaction():
            for _ in range(rnd.randint(1, 4)):
                kind = rnd.random()
                if kind < 0.3:
                    conn.execute(
                        "INSERT INTO items (id, note) VALUES (%s, %s)",
                        (self.next_id, f"n{rnd.randrange(10**6)}"),
                    )
                    self.next_id += 1
                elif kind < 0.85:
                    conn.execute(
                        "UPDATE items SET v = v + 1, note = %s WHERE id = %s",
                        (f"u{rnd.randrange(10**6)}", rnd.randint(1, self.next_id)),
                    )
                elif kind < 0.92:
                    conn.execute("DELETE FROM items WHERE id = %s", (rnd.randint(1, self.next_id),))
                elif self.keyless:
                    conn.execute("INSERT INTO notes VALUES (%s)", (f"line {rnd.randrange(100)}",))


def pg_to_pg(
    source_dsn: str,
    target_dsn: str,
    folder: Path,
    rnd: random.Random,
    name: str,
    **top: Any,
) -> tuple[Path, BackgroundLoad]:
    """tests/workload.py's schema with some rows on the source, a PostgreSQL → PostgreSQL
    config (short retry delays, a random batch size; ``top``: top-level settings), and the
    workload as a load, not started."""
    Workload.create_schema(source_dsn)
    workload = Workload(source_dsn, rnd.randrange(1 << 30))
    with connect(source_dsn) as conn:
        for _ in range(60):
            workload.run_transaction(conn)
    config = write_config(
        folder / "replicator.yaml",
        pipeline_dict(
            name,
            source_dsn,
            target_dsn,
            ["public.*", "sales.*"],
            batch={"max_events": rnd.choice([20, 200, 2000]), "max_age_ms": 100},
            retry=RETRY,
        ),
        **top,
    )
    return config, BackgroundLoad(source_dsn, workload.run_transaction)


def first_run(
    engines: Engines,
    config: Path,
    load: BackgroundLoad,
    source_dsn: str,
    target_dsn: str,
    name: str,
) -> None:
    """Copy the tables with a clean engine, start the load, compare once caught up, and stop
    the engine with SIGTERM (exit 0)."""
    engine = engines.spawn(config, label="first run (copy)")
    wait_for(lambda: snapshot_done(target_dsn, name, len(TABLES)), 90, "the copy")
    load.start()
    time.sleep(1)
    converge_and_compare(load, source_dsn, target_dsn, name, TABLES, engine)
    code, _ = engine.terminate()
    assert code == 0, engine.tail()


# --- checks ------------------------------------------------------------------------------------


def assert_slot_not_ahead(
    source_dsn: str, slot: str, checkpoint: Callable[[], int], what: str
) -> tuple[int, int]:
    """Right after a crash, before any restart: once the dead engine's walsender is gone (so
    that whatever it was last told has landed), the slot's confirmed_flush_lsn is not past
    the durable checkpoint. Returns (slot lsn, checkpoint lsn)."""
    wait_for(lambda: not slot_active(source_dsn, slot), 30, f"the walsender of {slot} to exit")
    confirmed = slot_lsn(source_dsn, slot)
    durable = checkpoint()
    assert confirmed <= durable, (
        f"{what}: the slot confirmed {confirmed:X}, past the durable checkpoint {durable:X}"
    )
    return confirmed, durable


def converge_and_compare(
    load: BackgroundLoad | None,
    source_dsn: str,
    target_dsn: str,
    pipeline: str,
    tables: list[str] | tuple[str, ...],
    engine: Engine | None = None,
    timeout: float = 90,
) -> None:
    """Pause the load, wait until the target's checkpoint covers the source's WAL (failing
    at once if ``engine`` dies meanwhile), compare every table row by row (keyless ones as
    multisets), resume the load."""
    if load is not None:
        load.pause()
    goal = source_lsn(source_dsn)

    def caught_up() -> bool:
        if checkpoint_lsn(target_dsn, pipeline) >= goal:
            return True
        if engine is not None and not engine.alive:
            raise AssertionError(
                f"{engine.label} exited with {engine.proc.returncode} before catching up\n"
                f"{engine.tail()}"
            )
        return False

    wait_for(caught_up, timeout, f"pipeline {pipeline} to reach the source's WAL position")
    compare(source_dsn, target_dsn, tables)
    if load is not None:
        load.resume()


def compare(source_dsn: str, target_dsn: str, tables: list[str] | tuple[str, ...]) -> None:
    """Every table equal in source and target, row by row (keyless ones as multisets); the
    message is cut short (rows with TOASTed text are long)."""
    try:
        assert_same_rows(source_dsn, target_dsn, *tables)
    except AssertionError as exc:
        text = str(exc)
        raise AssertionError(text if len(text) < 3000 else text[:3000] + " [...]") from None


def pg_checkpoint(target_dsn: str, pipeline: str) -> Callable[[], int]:
    """Reads the pipeline's checkpoint LSN from the target."""
    return lambda: checkpoint_lsn(target_dsn, pipeline)


def file_checkpoint(state: Path, pipeline: str) -> Callable[[], int]:
    """Reads the pipeline's checkpoint LSN from its state file (0 when none); the file must
    be whole JSON, as the atomic rename promises."""

    def read() -> int:
        path = state / f"{pipeline}.json"
        if not path.exists():
            return 0
        doc = json.loads(path.read_text())
        checkpoint = doc["checkpoint"]
        return parse_lsn(checkpoint["position"]["lsn"]) if checkpoint else 0

    return read


def source_lsn(dsn: str) -> int:
    """The source's current WAL position."""
    with connect(dsn) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


# --- a tiny filesystem -------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (we run as root), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        done = subprocess.run(["umount", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (4096, 512, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


# --- topics ------------------------------------------------------------------------------------


def topic_changes(bootstrap: str, topic: str) -> list[tuple[int, Any]]:
    """Every message of ``topic`` decoded, as (partition, Change or Tombstone), each
    partition in offset order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-read-{time.time_ns()}",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[int, Any]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        for partition in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                message = consumer.poll(10)
                assert message is not None, f"{topic}[{partition}]: ran dry before {high}"
                assert message.error() is None, message.error()
                out.append((partition, read_message(message.key(), message.value())))
                if message.offset() >= high - 1:
                    break
    finally:
        consumer.close()
    return out


def key_histories(changes: list[tuple[int, Any]]) -> dict[int, list[int | None]]:
    """Per ``items`` id, the ``v`` of each message in order (None for a delete or a
    tombstone)."""
    histories: dict[int, list[int | None]] = {}
    for _, change in changes:
        if isinstance(change, Tombstone):
            assert change.key is not None
            histories.setdefault(change.key["id"], []).append(None)
            continue
        assert isinstance(change, Change)
        if change.op is Op.TRUNCATE:
            continue
        key = change.key
        assert key is not None
        row = change.after if change.op is not Op.DELETE else None
        histories.setdefault(key["id"], []).append(None if row is None else row["v"])
    return histories


def assert_topic_matches_items(source_dsn: str, changes: list[tuple[int, Any]]) -> int:
    """The items topic holds every change of the source (at least once): per key the ``v``
    values appear in order from 0 without a gap, a repeat only ever re-plays values already
    seen (a replay from the checkpoint), and the last message is the source's row (or its
    delete). Needs the load to start after the copy. Returns how many messages were repeats."""
    with connect(source_dsn) as conn:
        rows = dict(conn.execute("SELECT id, v FROM items").fetchall())
    histories = key_histories(changes)
    repeats = 0
    problems = []
    for key, history in histories.items():
        values = [v for v in history if v is not None]
        repeats += len(values) - len(set(values))
        # The load starts after the copy, so every key's first v is 0; then each step is +1,
        # or back to a value published before (a replay, which then runs +1 again).
        if values and (
            values[0] != 0 or any(b > a + 1 for a, b in zip(values, values[1:], strict=False))
        ):
            problems.append(f"id {key}: v went {values} (a gap: a change lost)")
        last = history[-1]
        if rows.get(key) != last:
            problems.append(f"id {key}: source has {rows.get(key)}, topic ends with {last}")
    missing = set(rows) - set(histories)
    if missing:
        problems.append(f"ids never published: {sorted(missing)[:10]}")
    assert not problems, f"{len(problems)} problems: {problems[:10]}"
    return repeats
