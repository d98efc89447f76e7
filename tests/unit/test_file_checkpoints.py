"""The file checkpoint store: durable, atomic, single-writer state in ``<folder>/<pipeline>.json``,
with the PostgreSQL store's checkpoint, status and snapshot semantics."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from replicator.checkpoints import file as file_store
from replicator.checkpoints import snapshot_state
from replicator.checkpoints.file import FileCheckpointStore
from replicator.contracts import ApplyStats, Chunk, ChunkState, TablePlan
from replicator.errors import SinkError
from replicator.events import TableId
from replicator.sources.postgres.position import PgPosition

PIPELINE = "shop"
ORDERS = TableId("public", "orders")
USERS = TableId("public", "users")
STATS_KEYS = [
    "source_commit_ts",
    "transactions",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "truncates",
    "updated_at",
]
STATUS_KEYS = [
    "phase",
    "pid",
    "host",
    "started_at",
    "heartbeat_at",
    "lag_seconds",
    "last_error",
    "heartbeat_age_s",
]

_PRELUDE = """
import sys
from replicator.checkpoints.file import FileCheckpointStore
from replicator.errors import ReplicatorError
from replicator.events import TableId
from replicator.sources.postgres.position import PgPosition
store = FileCheckpointStore(sys.argv[1], "shop")
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(folder: Path) -> Iterator[FileCheckpointStore]:
    s = FileCheckpointStore(folder, PIPELINE)
    yield s
    s.close()


def other_process(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``store`` bound to the same pipeline."""
    return subprocess.run(
        [sys.executable, "-c", _PRELUDE + code, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.utcoffset() == timedelta(0)


def plan(chunks: int, rows_estimated: int | None = 1000) -> TablePlan:
    return TablePlan([Chunk(i, i * 10, (i + 1) * 10) for i in range(chunks)], rows_estimated, True)


# --- checkpoint ---------------------------------------------------------------------------------


def test_nothing_stored_reads_as_empty_without_creating_anything(folder: Path) -> None:
    """A pipeline without a state file has no checkpoint, status or tables, and reading it
    creates no folder."""
    store = FileCheckpointStore(folder, PIPELINE)
    assert store.load(PIPELINE) is None
    assert store.read_status(PIPELINE) is None
    assert store.captured_tables(PIPELINE) == []
    assert store.snapshot_tables(PIPELINE) == []
    assert store.load_chunks(PIPELINE, ORDERS) == []
    store.close()
    assert not folder.exists()


def test_save_and_load_round_trip(store: FileCheckpointStore, folder: Path) -> None:
    """A saved position loads back, in a new store, with the PostgreSQL store's stats keys."""
    store.save(PIPELINE, PgPosition(0x16_B374D848))
    store.close()
    loaded = FileCheckpointStore(folder, PIPELINE).load(PIPELINE)
    assert loaded is not None
    assert loaded.position == {"lsn": "16/B374D848"}
    assert list(loaded.stats) == STATS_KEYS
    assert loaded.stats["source_commit_ts"] is None
    assert all(loaded.stats[k] == 0 for k in STATS_KEYS[1:-1])
    assert aware(loaded.stats["updated_at"])


def test_save_commit_accumulates_counters(store: FileCheckpointStore) -> None:
    """Each commit adds its transactions and row counts; a commit time is kept until a newer
    one, and a plain save keeps every counter."""
    ts = datetime.fromisoformat("2025-03-01T12:00:00.123456+02:00")
    store.save_commit(
        PIPELINE, PgPosition(100), commit_ts=ts, transactions=2, stats=ApplyStats(5, 3, 1, 0)
    )
    store.save_commit(
        PIPELINE, PgPosition(200), commit_ts=None, transactions=1, stats=ApplyStats(1, 0, 2, 1)
    )
    store.save(PIPELINE, PgPosition(300))
    loaded = store.load(PIPELINE)
    assert loaded is not None
    assert loaded.position == PgPosition(300).to_json()
    stats = loaded.stats
    assert stats["source_commit_ts"] == ts and aware(stats["source_commit_ts"])
    assert (stats["transactions"], stats["rows_inserted"], stats["rows_updated"]) == (3, 6, 3)
    assert (stats["rows_deleted"], stats["truncates"]) == (3, 1)


def test_delete_removes_the_state(store: FileCheckpointStore) -> None:
    """Delete forgets the checkpoint, status and snapshot state, and says whether a checkpoint
    existed."""
    store.save(PIPELINE, PgPosition(100))
    store.report(PIPELINE, "streaming")
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    assert store.delete(PIPELINE) is True
    assert store.load(PIPELINE) is None
    assert store.read_status(PIPELINE) is None
    assert store.snapshot_tables(PIPELINE) == []
    assert not store.path.exists()
    assert store.delete(PIPELINE) is False


def test_file_is_small_readable_and_private(store: FileCheckpointStore, folder: Path) -> None:
    """The file is indented JSON with sorted keys, ``"format": 1``, ISO times with a UTC offset
    and positions in their JSON form, readable by its owner only, in a 0700 folder."""
    store.save(PIPELINE, PgPosition(100))
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    text = store.path.read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["format"] == 1 and doc["pipeline"] == PIPELINE
    assert doc["checkpoint"]["position"] == {"lsn": "0/64"}
    assert doc["checkpoint"]["updated_at"].endswith("+00:00")
    assert doc["snapshot_tables"][0]["requested_at"].endswith("+00:00")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [".shop.json.lock", "shop.json", "shop.lock"]


def test_store_refuses_another_pipeline(store: FileCheckpointStore) -> None:
    """A store serves the pipeline it was made for and no other."""
    with pytest.raises(ValueError, match="shop"):
        store.save("other", PgPosition(1))


# --- status -------------------------------------------------------------------------------------


def test_report_and_read_status(store: FileCheckpointStore) -> None:
    """Status reads back with the PostgreSQL store's keys; a later report keeps the start time
    and last error, a restart clears the error, and errors are stored redacted."""
    store.report(PIPELINE, "starting", started=True)
    first = store.read_status(PIPELINE)
    assert first is not None and list(first) == STATUS_KEYS
    assert first["pid"] == os.getpid() and first["phase"] == "starting"
    assert aware(first["started_at"]) and aware(first["heartbeat_at"])
    assert 0 <= first["heartbeat_age_s"] < 5

    store.report(PIPELINE, "failed", error="cannot connect to postgresql://u:hunter22@db/x")
    store.report(PIPELINE, "streaming", lag_seconds=1.5)
    later = store.read_status(PIPELINE)
    assert later is not None
    assert later["phase"] == "streaming" and later["lag_seconds"] == 1.5
    assert later["started_at"] == first["started_at"]
    assert later["heartbeat_at"] >= first["heartbeat_at"]
    assert later["last_error"] == "cannot connect to postgresql://u:[secure]@db/x"

    store.report(PIPELINE, "starting", started=True)
    restarted = store.read_status(PIPELINE)
    assert restarted is not None
    assert restarted["last_error"] is None and restarted["started_at"] > first["started_at"]


def test_captured_tables_are_remembered_and_copied_ones(store: FileCheckpointStore) -> None:
    """Captured tables are those remembered as written to plus those with snapshot state."""
    store.remember_tables(PIPELINE, [USERS])
    store.remember_tables(PIPELINE, iter([USERS, TableId("sales", "x.y")]))
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    assert store.captured_tables(PIPELINE) == [ORDERS, USERS, TableId("sales", "x.y")]


# --- atomicity and corruption -------------------------------------------------------------------


def test_failed_rename_keeps_the_old_state(
    store: FileCheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing at the rename raises a SinkError and leaves the old state, and no
    temp file, behind."""
    store.save(PIPELINE, PgPosition(100))

    def fail(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SinkError, match="cannot write the checkpoint file .*shop.json"):
        store.save(PIPELINE, PgPosition(200))
    monkeypatch.undo()
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(100).to_json()
    assert [p.name for p in store.path.parent.glob("*.tmp")] == []


def test_kill_before_rename_keeps_the_old_state(folder: Path) -> None:
    """A process killed (SIGKILL) between writing the temp file and renaming it leaves the old
    state; the stray temp file is never read, and the next write replaces it."""
    result = other_process(
        folder,
        """
import os, signal
store.save("shop", PgPosition(100))
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
store.save("shop", PgPosition(200))
""",
    )
    assert result.returncode == -9, result.stderr
    stray = folder / ".shop.json.tmp"
    assert json.loads(stray.read_text())["checkpoint"]["position"] == PgPosition(200).to_json()
    store = FileCheckpointStore(folder, PIPELINE)
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(100).to_json()
    store.save(PIPELINE, PgPosition(300))  # the dead process's lock went with it
    assert not stray.exists()
    store.close()


def test_stray_temp_file_is_ignored(store: FileCheckpointStore) -> None:
    """A half-written temp file left by a crash neither hides the state nor breaks the next
    write."""
    store.save(PIPELINE, PgPosition(100))
    stray = store.path.parent / ".shop.json.tmp"
    stray.write_text('{"format": 1, "checkp')
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(100).to_json()
    store.save(PIPELINE, PgPosition(200))
    assert not stray.exists()
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(200).to_json()


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "not valid JSON"),
        (b'{"format": 1, "pipeline": "shop", "checkpoint": {"posi', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "should be a JSON object"),
        (b'{"pipeline": "shop"}', "'format' is None"),
        (b'{"format": 1, "pipeline": "cart"}', "belongs to pipeline 'cart'"),
        (
            b'{"format": 1, "pipeline": "shop", "checkpoint": {"position": {"lsn": "0/1"}}}',
            "'transactions' is missing",
        ),
        (
            b'{"format": 1, "pipeline": "shop", "snapshot_tables": [{"schema": "public",'
            b' "table": "t", "state": "half", "rows_copied": 0}]}',
            "'state' is 'half'",
        ),
        (
            b'{"format": 1, "pipeline": "shop", "status": {"phase": "streaming",'
            b' "heartbeat_at": "2025-01-01T00:00:00"}}',
            "no UTC offset",
        ),
    ],
)
def test_corrupt_file_is_a_clear_error(folder: Path, content: bytes, detail: str) -> None:
    """A corrupt state file is a SinkError naming the file, what is wrong and the fix, for
    reads and writes alike: the pipeline never starts over by itself."""
    folder.mkdir()
    (folder / "shop.json").write_bytes(content)
    store = FileCheckpointStore(folder, PIPELINE)
    for attempt in (
        lambda: store.load(PIPELINE),
        lambda: store.save(PIPELINE, PgPosition(1)),
        lambda: store.snapshot_tables(PIPELINE),
    ):
        with pytest.raises(SinkError) as caught:
            attempt()
        message = str(caught.value)
        assert str(folder / "shop.json") in message and detail in message
        assert "corrupt" in message and "Fix: restore it from a backup" in message
    assert (folder / "shop.json").read_bytes() == content
    store.close()


def test_file_from_a_newer_version_is_refused(folder: Path) -> None:
    """A file in a format newer than this version reads is refused, naming the fix."""
    folder.mkdir()
    (folder / "shop.json").write_text('{"format": 2, "pipeline": "shop"}')
    with pytest.raises(SinkError, match="format 2, written by a newer Replicator"):
        FileCheckpointStore(folder, PIPELINE).load(PIPELINE)


def test_delete_removes_a_corrupt_file(folder: Path) -> None:
    """Deleting is how a user starts over from a corrupt file, so it works on one."""
    folder.mkdir()
    (folder / "shop.json").write_text("garbage")
    store = FileCheckpointStore(folder, PIPELINE)
    assert store.delete(PIPELINE) is True
    assert store.load(PIPELINE) is None
    store.close()


# --- one process per pipeline -------------------------------------------------------------------


def test_second_process_cannot_write_while_the_first_runs(
    store: FileCheckpointStore, folder: Path
) -> None:
    """While one process holds the pipeline, another one's write is refused with the holder's
    pid and the fix, yet it can read the checkpoint, status and snapshot state."""
    store.save(PIPELINE, PgPosition(100))
    store.report(PIPELINE, "streaming")
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    for write in (
        'store.save("shop", PgPosition(999))',
        'store.report("shop", "streaming")',
        'store.record_snapshot_progress("shop", {TableId("public", "orders"): 5})',
        'store.delete("shop")',
    ):
        result = other_process(
            folder,
            f"""
try:
    {write}
except ReplicatorError as exc:
    print(exc)
    sys.exit(1)
""",
        )
        assert result.returncode == 1, result.stderr
        assert f"pipeline shop is already running (pid {os.getpid()}, from the lock file" in (
            result.stdout
        )
        assert "Fix: stop the other process first" in result.stdout
    reader = other_process(
        folder,
        """
print(store.load("shop").position["lsn"], store.read_status("shop")["phase"],
      [t.state for t in store.snapshot_tables("shop")], store.captured_tables("shop"))
""",
    )
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.split(maxsplit=2)[:2] == ["0/64", "streaming"]
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(100).to_json()


def test_lock_is_released_on_close(store: FileCheckpointStore, folder: Path) -> None:
    """Once the running process closes its store, another process may run the pipeline."""
    store.save(PIPELINE, PgPosition(100))
    store.close()
    store.close()  # twice is fine
    result = other_process(folder, 'store.save("shop", PgPosition(200)); store.close()')
    assert result.returncode == 0, result.stderr
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(200).to_json()


def test_stores_of_one_process_share_the_pipeline(folder: Path) -> None:
    """Several stores of the same pipeline in one process (engine and copy workers) may all
    write, and the pipeline stays locked for other processes until the last one closes."""
    first = FileCheckpointStore(folder, PIPELINE)
    second = FileCheckpointStore(folder, PIPELINE)
    first.save(PIPELINE, PgPosition(100))
    second.request_snapshot(PIPELINE, [ORDERS], resync=False)
    second.record_snapshot_progress(PIPELINE, {ORDERS: 3})
    first.close()
    blocked = other_process(folder, 'store.save("shop", PgPosition(1))')
    assert blocked.returncode == 1 and "already running" in blocked.stderr
    second.close()
    free = other_process(folder, 'store.save("shop", PgPosition(1))')
    assert free.returncode == 0, free.stderr


def test_snapshot_can_be_requested_while_the_pipeline_runs(
    store: FileCheckpointStore, folder: Path
) -> None:
    """``replicator snapshot`` from another process queues a re-copy while the pipeline runs,
    and the copy in flight then finishes as superseded."""
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    requested_at = store.snapshot_tables(PIPELINE)[0].requested_at
    store.save_plan(PIPELINE, ORDERS, plan(2), None, requested_at)
    result = other_process(
        folder, 'store.request_snapshot("shop", [TableId("public", "orders")], resync=True)'
    )
    assert result.returncode == 0, result.stderr
    assert not store.finish(PIPELINE, ORDERS, PgPosition(1), PgPosition(1), requested_at)
    (state,) = store.snapshot_tables(PIPELINE)
    assert state.state == "requested"
    assert state.shadow == snapshot_state.shadow_name(PIPELINE, ORDERS)


def test_writes_of_two_processes_interleave_without_loss(
    store: FileCheckpointStore, folder: Path
) -> None:
    """Re-copies requested by another process while the pipeline keeps writing are all kept,
    and so is every write of the pipeline."""
    store.save(PIPELINE, PgPosition(1))
    requester = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _PRELUDE
            + """
for i in range(40):
    store.request_snapshot("shop", [TableId("public", f"t{i}")], resync=False)
""",
            str(folder),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    n = 0
    while requester.poll() is None or n < 40:
        n += 1
        store.save(PIPELINE, PgPosition(n))
        store.remember_tables(PIPELINE, [TableId("public", f"w{n}")])
    _, stderr = requester.communicate(timeout=60)
    assert requester.returncode == 0, stderr
    captured = {t.name for t in store.captured_tables(PIPELINE)}
    assert captured == {f"t{i}" for i in range(40)} | {f"w{i}" for i in range(1, n + 1)}
    loaded = store.load(PIPELINE)
    assert loaded is not None and loaded.position == PgPosition(n).to_json()


# --- snapshot bookkeeping -----------------------------------------------------------------------


def test_snapshot_request_copy_finish(store: FileCheckpointStore) -> None:
    """A table goes requested → copying (with its chunk plan) → done, its rows the sum of its
    chunks', its stream starting at ``start``, and its plan then forgotten."""
    store.request_snapshot(PIPELINE, [ORDERS, USERS], resync=False)
    states = store.snapshot_tables(PIPELINE)
    assert [(s.table, s.state, s.shadow, s.rows_copied) for s in states] == [
        (ORDERS, "requested", None, 0),
        (USERS, "requested", None, 0),
    ]
    requested_at = states[0].requested_at
    assert aware(requested_at)

    store.save_plan(PIPELINE, ORDERS, plan(3, rows_estimated=30), None, requested_at)
    (orders, _) = store.snapshot_tables(PIPELINE)
    assert (orders.state, orders.rows_estimated, orders.requested_at) == (
        "copying",
        30,
        requested_at,
    )
    assert aware(orders.started_at) and orders.finished_at is None
    assert store.load_chunks(PIPELINE, ORDERS) == [
        ChunkState(Chunk(i, i * 10, (i + 1) * 10), None, 0) for i in range(3)
    ]

    store.chunk_done(PIPELINE, ORDERS, 2, PgPosition(500), 12)
    store.chunk_done(PIPELINE, ORDERS, 0, PgPosition(400), 10)
    store.chunk_done(PIPELINE, ORDERS, 7, PgPosition(400), 99)  # not planned: ignored
    chunks = store.load_chunks(PIPELINE, ORDERS)
    assert [(c.chunk.number, c.position, c.rows) for c in chunks] == [
        (0, {"lsn": "0/190"}, 10),
        (1, None, 0),
        (2, {"lsn": "0/1F4"}, 12),
    ]
    store.record_snapshot_progress(PIPELINE, {ORDERS: 25, TableId("public", "gone"): 1})
    assert store.snapshot_tables(PIPELINE)[0].rows_copied == 25

    store.chunk_done(PIPELINE, ORDERS, 1, PgPosition(450), 8)
    assert store.finish(PIPELINE, ORDERS, PgPosition(400), PgPosition(500), requested_at)
    (orders, users) = store.snapshot_tables(PIPELINE)
    assert (orders.state, orders.shadow, orders.rows_copied) == ("done", None, 30)
    assert (orders.start, orders.until) == ({"lsn": "0/190"}, {"lsn": "0/1F4"})
    assert aware(orders.finished_at)
    assert store.load_chunks(PIPELINE, ORDERS) == []
    assert users.state == "requested"

    store.record_snapshot_progress(PIPELINE, {ORDERS: 1})
    assert store.snapshot_tables(PIPELINE)[0].rows_copied == 30  # done tables keep theirs


def test_snapshot_requested_again_while_copying(store: FileCheckpointStore) -> None:
    """A table asked for again while being copied drops the old plan, ignores the old copy's
    chunks, is not finished by it and not marked copying by a stale plan: it keeps waiting."""
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    first = store.snapshot_tables(PIPELINE)[0].requested_at
    store.save_plan(PIPELINE, ORDERS, plan(2), None, first)
    store.chunk_done(PIPELINE, ORDERS, 0, PgPosition(100), 5)

    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    (again,) = store.snapshot_tables(PIPELINE)
    assert again.state == "requested" and again.requested_at is not None
    assert first is not None and again.requested_at > first
    assert (again.rows_copied, again.started_at, again.rows_estimated) == (0, None, None)
    assert store.load_chunks(PIPELINE, ORDERS) == []

    store.chunk_done(PIPELINE, ORDERS, 1, PgPosition(100), 5)
    assert store.load_chunks(PIPELINE, ORDERS) == []
    assert not store.finish(PIPELINE, ORDERS, PgPosition(100), PgPosition(100), first)
    store.save_plan(PIPELINE, ORDERS, plan(2), None, first)
    assert store.snapshot_tables(PIPELINE)[0].state == "requested"

    # The next round plans with the new request and finishes.
    store.save_plan(PIPELINE, ORDERS, plan(1), None, again.requested_at)
    store.chunk_done(PIPELINE, ORDERS, 0, PgPosition(200), 7)
    assert store.finish(PIPELINE, ORDERS, PgPosition(200), PgPosition(200), again.requested_at)
    done = store.snapshot_tables(PIPELINE)[0]
    assert (done.state, done.rows_copied) == ("done", 7)


def test_done_table_requested_again_starts_over(store: FileCheckpointStore) -> None:
    """Requesting a copied table again resets it to requested, clearing positions and times."""
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    at = store.snapshot_tables(PIPELINE)[0].requested_at
    store.save_plan(PIPELINE, ORDERS, plan(1), None, at)
    store.chunk_done(PIPELINE, ORDERS, 0, PgPosition(100), 4)
    assert store.finish(PIPELINE, ORDERS, PgPosition(100), PgPosition(100), at)
    store.request_snapshot(PIPELINE, [ORDERS], resync=False)
    (state,) = store.snapshot_tables(PIPELINE)
    assert (state.state, state.start, state.until, state.finished_at, state.rows_copied) == (
        "requested",
        None,
        None,
        None,
        0,
    )


def test_resync_copies_into_a_shadow(store: FileCheckpointStore) -> None:
    """A resync request names the same shadow table as the PostgreSQL store, and finishing
    the copy clears it."""
    store.request_snapshot(PIPELINE, [ORDERS], resync=True)
    (state,) = store.snapshot_tables(PIPELINE)
    assert state.shadow == snapshot_state.shadow_name(PIPELINE, ORDERS)
    store.save_plan(PIPELINE, ORDERS, plan(1), state.shadow, state.requested_at)
    assert store.snapshot_tables(PIPELINE)[0].shadow == state.shadow
    store.chunk_done(PIPELINE, ORDERS, 0, PgPosition(100), 1)
    assert store.finish(PIPELINE, ORDERS, PgPosition(100), PgPosition(100), state.requested_at)
    assert store.snapshot_tables(PIPELINE)[0].shadow is None


def test_requests_in_quick_succession_get_later_times(
    store: FileCheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request of a table gets a later ``requested_at``, even within one clock tick, so
    a copy in flight always sees that it was superseded."""
    frozen = datetime.now(UTC)
    monkeypatch.setattr(file_store, "_now", lambda: frozen)
    times: list[datetime] = []
    for _ in range(5):
        store.request_snapshot(PIPELINE, [ORDERS], resync=False)
        at = store.snapshot_tables(PIPELINE)[0].requested_at
        assert at is not None
        times.append(at)
    assert times == sorted(set(times))


def test_snapshot_state_survives_a_new_store(store: FileCheckpointStore, folder: Path) -> None:
    """Snapshot state and chunk plans read back identically from the file in a new store."""
    store.request_snapshot(PIPELINE, [ORDERS], resync=True)
    at = store.snapshot_tables(PIPELINE)[0].requested_at
    store.save_plan(PIPELINE, ORDERS, TablePlan([Chunk(0, None, None)], None, False), None, at)
    store.chunk_done(PIPELINE, ORDERS, 0, PgPosition(5, 2), 3)
    tables, chunks = store.snapshot_tables(PIPELINE), store.load_chunks(PIPELINE, ORDERS)
    store.close()
    again = FileCheckpointStore(folder, PIPELINE)
    assert again.snapshot_tables(PIPELINE) == tables
    assert again.load_chunks(PIPELINE, ORDERS) == chunks
    assert chunks[0].position == {"lsn": "0/5", "index": 2}
    again.close()


def test_concurrent_chunk_marks_lose_nothing(folder: Path) -> None:
    """Copy workers marking chunks from many threads, through two stores, lose no mark."""
    stores = [FileCheckpointStore(folder, PIPELINE) for _ in range(2)]
    stores[0].request_snapshot(PIPELINE, [ORDERS, USERS], resync=False)
    for table in (ORDERS, USERS):
        at = next(s.requested_at for s in stores[0].snapshot_tables(PIPELINE) if s.table == table)
        stores[0].save_plan(PIPELINE, table, plan(32), None, at)
    failures: list[BaseException] = []

    def mark(worker: int) -> None:
        try:
            for n in range(worker, 32, 8):
                for table in (ORDERS, USERS):
                    stores[worker % 2].chunk_done(PIPELINE, table, n, PgPosition(1000 + n), n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=mark, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for table in (ORDERS, USERS):
        chunks = stores[1].load_chunks(PIPELINE, table)
        assert [(c.position, c.rows) for c in chunks] == [
            (PgPosition(1000 + n).to_json(), n) for n in range(32)
        ]
    for s in stores:
        s.close()
