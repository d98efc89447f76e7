"""Checkpoints, status and snapshot state in a local folder: the embedded default for sinks
that are not a database (a Kafka "watcher").

Each pipeline has one small JSON file, ``<folder>/<pipeline>.json``, rewritten whole on every
change: written to a temporary file in the same folder, flushed and fsynced, renamed over the
old one, and the folder fsynced. A crash at any point leaves the old file or the new one, never
a mix (DESIGN invariant 1: a torn checkpoint would skip or repeat changes).

Files of a pipeline ``shop`` in the folder:

- ``shop.json``: the state (indented, sorted keys, ``"format": 1``).
- ``shop.lock``: ``flock``-ed by the one process running the pipeline, from its first write
  until :meth:`FileCheckpointStore.close`; holds that process's pid.
- ``.shop.json.lock``: ``flock``-ed for the moment of one read-modify-write, so that a re-copy
  requested by ``replicator snapshot`` from another process is never lost.
- ``.shop.json.tmp``: the next state while it is written; one left by a crash is never read,
  and the next write replaces it.

Reading (``replicator status``) takes no lock: a rename is atomic, so a reader always sees a
whole file. Pipeline names start with a letter or digit, so these names never collide.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from replicator import failpoints
from replicator.contracts import (
    ApplyStats,
    Checkpoint,
    CheckpointStore,
    Chunk,
    ChunkState,
    TablePlan,
    TableSnapshot,
)
from replicator.errors import SinkError, disk_full
from replicator.events import Position, TableId
from replicator.observability.redaction import redact

FORMAT = 1
"""The version of the file layout this module writes (and the only one it reads)."""

_COUNTERS = ("transactions", "rows_inserted", "rows_updated", "rows_deleted", "truncates")
_STATES = frozenset({"requested", "copying", "done"})


class FileCheckpointStore(CheckpointStore):
    """One pipeline's checkpoint, status and snapshot bookkeeping in ``<folder>/<pipeline>.json``.

    Safe to share between threads. Several instances for the same pipeline in one process
    (the engine's and its copy workers') share the pipeline's lock; a second process gets a
    :class:`~replicator.errors.SinkError` as soon as it writes.
    """

    def __init__(self, folder: str | Path, pipeline: str) -> None:
        if not pipeline or pipeline.startswith(".") or "/" in pipeline or "\0" in pipeline:
            raise ValueError(f"not a pipeline name: {pipeline!r}")
        self._folder = Path(os.path.abspath(os.path.expanduser(folder)))
        self._pipeline = pipeline
        self.path = self._folder / f"{pipeline}.json"
        self._lock_path = self._folder / f"{pipeline}.lock"
        self._write_lock_path = self._folder / f".{pipeline}.json.lock"
        self._temp_path = self._folder / f".{pipeline}.json.tmp"
        self._mutex = threading.Lock()  # one read-modify-write at a time per instance
        self._write_lock: int | None = None  # fd of the write lock file
        self._owned: str | None = None  # key of the pipeline lock in _pipeline_locks
        self._remembered: set[TableId] = set()

    # --- checkpoint -------------------------------------------------------------------------

    def load(self, pipeline: str) -> Checkpoint | None:
        """The stored checkpoint with its counters, or None (no lock needed)."""
        self._check(pipeline)
        return self._read().checkpoint

    def save(self, pipeline: str, position: Position) -> None:
        """Durably store ``position``, keeping the counters."""
        self.save_commit(pipeline, position)

    def save_commit(
        self,
        pipeline: str,
        position: Position,
        *,
        commit_ts: datetime | None = None,
        transactions: int = 0,
        stats: ApplyStats | None = None,
    ) -> None:
        """Durably store ``position`` and add what was applied up to it to the counters."""
        self._check(pipeline)
        s = stats or ApplyStats()
        added = (transactions, s.inserted, s.updated, s.deleted, s.truncated)
        with self._changing() as state:
            old = state.checkpoint.stats if state.checkpoint is not None else {}
            counters = {k: old.get(k, 0) + n for k, n in zip(_COUNTERS, added, strict=True)}
            state.checkpoint = Checkpoint(
                position=dict(position.to_json()),
                stats={
                    "source_commit_ts": _utc(commit_ts)
                    if commit_ts is not None
                    else old.get("source_commit_ts"),
                    **counters,
                    "updated_at": _now(),
                },
            )

    def delete(self, pipeline: str) -> bool:
        """Remove the pipeline's file (refused while another process runs the pipeline);
        return whether it held a checkpoint. A corrupt file counts as one and goes too."""
        self._check(pipeline)
        if not self._folder.exists():
            return False
        with self._mutex:
            self._own()
            with self._locked():
                try:
                    existed = self._decode(self._read_text()).checkpoint is not None
                except SinkError:
                    existed = True  # removing a corrupt file is how a user starts over
                try:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._temp_path)
                    self._fsync_folder()
                except OSError as exc:
                    raise self._write_failed(exc) from exc
                self._remembered.clear()
                return existed

    # --- status -----------------------------------------------------------------------------

    def report(
        self,
        pipeline: str,
        phase: str,
        *,
        lag_seconds: float | None = None,
        error: str | None = None,
        started: bool = False,
    ) -> None:
        """Record what the running pipeline is doing, for ``replicator status``."""
        self._check(pipeline)
        with self._changing() as state:
            now = _now()
            # As the PostgreSQL store's upsert: a (re)start resets the start time and the
            # last error, any other report keeps them unless it brings an error of its own.
            old = None if started else state.status
            state.status = {
                "phase": phase,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": now if old is None else old["started_at"],
                "heartbeat_at": now,
                "lag_seconds": lag_seconds,
                "last_error": redact(error)
                if error
                else (None if old is None else old["last_error"]),
            }

    def read_status(self, pipeline: str) -> dict[str, Any] | None:
        """The last status reported, with ``heartbeat_age_s`` (no lock needed)."""
        self._check(pipeline)
        status = self._read().status
        if status is None:
            return None
        age = (_now() - status["heartbeat_at"]).total_seconds()
        return {**status, "heartbeat_age_s": age}

    # --- tables -----------------------------------------------------------------------------

    def captured_tables(self, pipeline: str) -> list[TableId]:
        """Tables the pipeline has written to, or is copying or has copied."""
        self._check(pipeline)
        state = self._read()
        return sorted(state.tables | state.snapshots.keys(), key=_order)

    def remember_tables(self, pipeline: str, tables: Iterable[TableId]) -> None:
        """Add ``tables`` to the tables the pipeline has written to (a write only when one
        is new)."""
        self._check(pipeline)
        new = set(tables) - self._remembered
        if not new:
            return
        with self._changing() as state:
            state.tables |= new
            known = set(state.tables)
        self._remembered = known

    # --- snapshot bookkeeping (the semantics of checkpoints/snapshot_state.py) --------------

    def snapshot_tables(self, pipeline: str) -> list[TableSnapshot]:
        """Snapshot state of the pipeline's tables, by name (no lock needed)."""
        self._check(pipeline)
        snapshots = self._read().snapshots
        return [snapshots[t] for t in sorted(snapshots, key=_order)]

    def request_snapshot(self, pipeline: str, tables: list[TableId], *, resync: bool) -> None:
        """Ask for a (re-)copy of ``tables``, forgetting any earlier plan.

        Works while another process runs the pipeline (``replicator snapshot``): a table
        being copied keeps waiting, since its copy's ``requested_at`` no longer matches.
        """
        self._check(pipeline)
        with self._changing(own=False) as state:
            for table in tables:
                state.chunks.pop(table, None)
                at = _now()
                old = state.snapshots.get(table)
                if old is not None and old.requested_at is not None and at <= old.requested_at:
                    # A copy in flight must see that it was asked for again (as with
                    # PostgreSQL's clock_timestamp(), every request gets a later time).
                    at = old.requested_at + timedelta(microseconds=1)
                shadow = _shadow_name(pipeline, table) if resync else None
                state.snapshots[table] = TableSnapshot(
                    table, "requested", shadow, None, 0, None, None, at, None, None
                )

    def record_snapshot_progress(self, pipeline: str, rows: dict[TableId, int]) -> None:
        """Rows copied so far per table not yet done, for ``replicator status``."""
        self._check(pipeline)
        with self._changing() as state:
            for table, count in rows.items():
                entry = state.snapshots.get(table)
                if entry is not None and entry.state != "done":
                    state.snapshots[table] = replace(entry, rows_copied=count)

    def load_chunks(self, pipeline: str, table: TableId) -> list[ChunkState]:
        """The table's chunk plan, in chunk order (empty when not planned yet)."""
        self._check(pipeline)
        return sorted(self._read().chunks.get(table, []), key=lambda c: c.chunk.number)

    def save_plan(
        self,
        pipeline: str,
        table: TableId,
        plan: TablePlan,
        shadow: str | None,
        requested_at: datetime | None,
    ) -> None:
        """Replace the table's chunk plan and mark it ``copying``, unless it was requested
        again since ``requested_at`` (that request must stay visible).

        ``shadow`` is the one :meth:`request_snapshot` chose and stored already; it is taken
        so that a writer can hand its ``start_table`` arguments straight on.
        """
        self._check(pipeline)
        with self._changing() as state:
            state.chunks.pop(table, None)
            if plan.chunks:
                state.chunks[table] = [ChunkState(c, None, 0) for c in plan.chunks]
            entry = state.snapshots.get(table)
            if entry is not None and entry.requested_at == requested_at:
                state.snapshots[table] = replace(
                    entry,
                    state="copying",
                    rows_estimated=plan.rows_estimated,
                    rows_copied=0,
                    started_at=_now(),
                )

    def chunk_done(
        self, pipeline: str, table: TableId, chunk_number: int, position: Position, rows: int
    ) -> None:
        """Mark a planned chunk copied at ``position``; a chunk no longer planned (the table
        was requested again meanwhile) is left alone."""
        self._check(pipeline)
        with self._changing() as state:
            plan = state.chunks.get(table, [])
            for i, done in enumerate(plan):
                if done.chunk.number == chunk_number:
                    plan[i] = ChunkState(done.chunk, dict(position.to_json()), rows)

    def finish(
        self,
        pipeline: str,
        table: TableId,
        start: Position,
        until: Position,
        requested_at: datetime | None,
    ) -> bool:
        """Mark the table copied, the stream applying its changes from ``start``.

        Returns False, leaving the table waiting, when a new copy was requested since this
        one was planned: that request is served by the next round instead of being lost.
        """
        self._check(pipeline)
        with self._changing() as state:
            entry = state.snapshots.get(table)
            if entry is None or entry.requested_at != requested_at:
                return False
            rows = sum(c.rows for c in state.chunks.pop(table, []))
            state.snapshots[table] = replace(
                entry,
                state="done",
                shadow=None,
                start=dict(start.to_json()),
                until=dict(until.to_json()),
                finished_at=_now(),
                rows_copied=rows,
            )
            return True

    def close(self) -> None:
        """Release the pipeline's lock; safe to call more than once."""
        with self._mutex:
            if self._owned is not None:
                _release(self._owned)
                self._owned = None
            if self._write_lock is not None:
                os.close(self._write_lock)
                self._write_lock = None

    # --- file handling ----------------------------------------------------------------------

    def _check(self, pipeline: str) -> None:
        if pipeline != self._pipeline:
            raise ValueError(f"this store keeps pipeline {self._pipeline}, not {pipeline}")

    def _read(self) -> _State:
        return self._decode(self._read_text())

    def _read_text(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise self._corrupt(f"not UTF-8 text ({exc.reason})") from exc
        except OSError as exc:
            raise SinkError(
                f"cannot read the checkpoint file {self.path}: {exc.strerror or exc}",
                fix=f"let the user running Replicator read and write {self._folder}",
            ) from exc

    def _decode(self, text: str | None) -> _State:
        if text is None:
            return _State()
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise self._corrupt(f"not valid JSON: {exc}") from exc
        if isinstance(doc, dict) and isinstance(doc.get("format"), int) and doc["format"] > 1:
            raise SinkError(
                f"the checkpoint file {self.path} has format {doc['format']}, written by a newer "
                "Replicator than this one (which reads format 1)",
                fix="run the Replicator version that wrote it, or a newer one",
            )
        try:
            return _parse_state(doc, self._pipeline)
        except (ValueError, TypeError, KeyError) as exc:
            raise self._corrupt(str(exc)) from exc

    def _corrupt(self, detail: str) -> SinkError:
        # Never start over silently: that would copy every table again, or skip changes.
        return SinkError(
            f"the checkpoint file {self.path} is corrupt: {detail}",
            fix=f"restore it from a backup; or, to start pipeline {self._pipeline} over (every "
            f"table copied again), remove it with `replicator drop -p {self._pipeline}`",
        )

    @contextlib.contextmanager
    def _changing(self, *, own: bool = True) -> Iterator[_State]:
        """Read the state, let the caller change it, and write it back if it changed.

        ``own``: the change is the running pipeline's, so it takes the pipeline's lock.
        """
        with self._mutex:
            if own:
                self._own()
            else:
                self._make_folder()
            with self._locked():
                before = self._read_text()
                state = self._decode(before)
                yield state
                after = _format_state(state, self._pipeline)
                if after != before:
                    self._write(after)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the write lock (across processes) for one read-modify-write."""
        if self._write_lock is None:
            try:
                self._write_lock = os.open(
                    self._write_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                raise self._write_failed(exc, self._write_lock_path) from exc
        fd = self._write_lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise _lock_failed(self._write_lock_path, exc) from exc
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _write(self, text: str) -> None:
        """Replace the file atomically and durably: temp file, fsync, rename, fsync folder."""
        try:
            with open(self._temp_path, "w", encoding="utf-8", opener=_private) as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            failpoints.fail("checkpoint.before_rename")
            os.replace(self._temp_path, self.path)
            self._fsync_folder()
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self._temp_path)
            raise self._write_failed(exc) from exc

    def _write_failed(self, exc: OSError, path: Path | None = None) -> SinkError:
        error = SinkError(
            f"cannot write the checkpoint file {path or self.path}: {exc.strerror or exc}",
            fix=f"make room on the disk of {self._folder} and let the user running Replicator "
            "write there",
        )
        # A full disk may be freed: the pipeline retries from the last checkpoint, which the
        # failed write left in place (a new temporary file each time, never the same fd).
        error.transient = disk_full(exc)
        return error

    def _fsync_folder(self) -> None:
        fd = os.open(self._folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _make_folder(self) -> None:
        if self._folder.is_dir():
            return
        try:
            self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The folder's own entry must be durable before files in it are relied upon.
            fd = os.open(self._folder.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SinkError(
                f"cannot create the checkpoint folder {self._folder}: {exc.strerror or exc}",
                fix="create it, or set the pipeline's checkpoint.dir to a folder Replicator "
                "may write",
            ) from exc

    def _own(self) -> None:
        """Take the pipeline's lock, held until :meth:`close` (caller holds ``_mutex``)."""
        if self._owned is None:
            self._make_folder()
            self._owned = _acquire(self._lock_path, self._pipeline)


# --- the pipeline lock, shared by the instances of one process --------------------------------


@dataclass
class _PipelineLock:
    fd: int
    pid: int  # a child forked by this process inherits the table, not the ownership
    users: int = 1


# flock belongs to an open file description, so a second open in this process would lock us
# out of our own pipeline: instances for the same pipeline share one description instead.
_pipeline_locks: dict[str, _PipelineLock] = {}
_pipeline_locks_guard = threading.Lock()


def _acquire(path: Path, pipeline: str) -> str:
    """Take the lock file ``path`` for this process; return the key to release it by."""
    key = os.path.realpath(path)
    with _pipeline_locks_guard:
        held = _pipeline_locks.get(key)
        if held is not None and held.pid == os.getpid():
            held.users += 1
            return key
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SinkError(
                f"cannot open the lock file {path}: {exc.strerror or exc}",
                fix=f"let the user running Replicator read and write {path.parent}",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _pid_in(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SinkError(
                    f"pipeline {pipeline} is already running (pid {pid}, from the lock file "
                    f"{path})",
                    fix="stop the other process first: one process at a time runs a pipeline",
                ) from exc
            raise _lock_failed(path, exc) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid only makes the other process's message friendlier
        _pipeline_locks[key] = _PipelineLock(fd, os.getpid())
        return key


def _release(key: str) -> None:
    with _pipeline_locks_guard:
        held = _pipeline_locks[key]
        held.users -= 1
        if held.users == 0:
            del _pipeline_locks[key]
            with contextlib.suppress(OSError):
                os.ftruncate(held.fd, 0)
            os.close(held.fd)  # releases the flock


def _pid_in(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _lock_failed(path: Path, exc: OSError) -> SinkError:
    return SinkError(
        f"cannot lock {path}: {exc.strerror or exc}",
        fix="keep the pipeline's checkpoint.dir on a local filesystem that supports flock",
    )


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


# --- the file's contents -----------------------------------------------------------------------


@dataclass
class _State:
    """The decoded file: what the PostgreSQL store keeps in its ``_replicator`` tables."""

    checkpoint: Checkpoint | None = None
    status: dict[str, Any] | None = None
    tables: set[TableId] = field(default_factory=set)
    snapshots: dict[TableId, TableSnapshot] = field(default_factory=dict)
    chunks: dict[TableId, list[ChunkState]] = field(default_factory=dict)


def _format_state(state: _State, pipeline: str) -> str:
    checkpoint: dict[str, Any] | None = None
    if state.checkpoint is not None:
        stats = state.checkpoint.stats
        checkpoint = {
            "position": state.checkpoint.position,
            "source_commit_ts": _iso(stats["source_commit_ts"]),
            **{k: stats[k] for k in _COUNTERS},
            "updated_at": _iso(stats["updated_at"]),
        }
    status: dict[str, Any] | None = None
    if state.status is not None:
        status = dict(state.status)
        for key in ("started_at", "heartbeat_at"):
            status[key] = _iso(status[key])
    doc = {
        "format": FORMAT,
        "pipeline": pipeline,
        "checkpoint": checkpoint,
        "status": status,
        "captured_tables": [_table_json(t) for t in sorted(state.tables, key=_order)],
        "snapshot_tables": [
            {
                **_table_json(t),
                "state": s.state,
                "shadow": s.shadow,
                "rows_estimated": s.rows_estimated,
                "rows_copied": s.rows_copied,
                "start_position": s.start,
                "until_position": s.until,
                "requested_at": _iso(s.requested_at),
                "started_at": _iso(s.started_at),
                "finished_at": _iso(s.finished_at),
            }
            for t, s in sorted(state.snapshots.items(), key=lambda item: _order(item[0]))
        ],
        "snapshot_chunks": [
            {
                **_table_json(t),
                "chunks": [
                    {
                        "chunk": c.chunk.number,
                        "lo": c.chunk.lo,
                        "hi": c.chunk.hi,
                        "position": c.position,
                        "rows": c.rows,
                    }
                    for c in sorted(plan, key=lambda c: c.chunk.number)
                ],
            }
            for t, plan in sorted(state.chunks.items(), key=lambda item: _order(item[0]))
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _parse_state(doc: Any, pipeline: str) -> _State:
    """The state in ``doc``; ValueError (or TypeError, KeyError) naming what is wrong."""
    doc = _object(doc, "the file")
    if doc.get("format") != FORMAT:
        raise ValueError(f"'format' is {doc.get('format')!r}, not {FORMAT}")
    if doc.get("pipeline") != pipeline:
        raise ValueError(f"it belongs to pipeline {doc.get('pipeline')!r}, not {pipeline!r}")
    state = _State()
    if (raw := doc.get("checkpoint")) is not None:
        cp = _object(raw, "checkpoint")
        state.checkpoint = Checkpoint(
            position=_object(cp.get("position"), "checkpoint.position"),
            stats={
                "source_commit_ts": _time(cp, "source_commit_ts", "checkpoint", nullable=True),
                **{k: _need(cp, k, int, "checkpoint") for k in _COUNTERS},
                "updated_at": _time(cp, "updated_at", "checkpoint"),
            },
        )
    if (raw := doc.get("status")) is not None:
        st = _object(raw, "status")
        lag = _maybe(st, "lag_seconds", (int, float), "status")
        state.status = {
            "phase": _need(st, "phase", str, "status"),
            "pid": _maybe(st, "pid", int, "status"),
            "host": _maybe(st, "host", str, "status"),
            "started_at": _time(st, "started_at", "status", nullable=True),
            "heartbeat_at": _time(st, "heartbeat_at", "status"),
            "lag_seconds": None if lag is None else float(lag),
            "last_error": _maybe(st, "last_error", str, "status"),
        }
    for i, raw in enumerate(_list(doc, "captured_tables")):
        state.tables.add(_table(_object(raw, f"captured_tables[{i}]"), f"captured_tables[{i}]"))
    for i, raw in enumerate(_list(doc, "snapshot_tables")):
        where = f"snapshot_tables[{i}]"
        row = _object(raw, where)
        table = _table(row, where)
        status = _need(row, "state", str, where)
        if status not in _STATES:
            raise ValueError(f"{where}: 'state' is {status!r}, not one of {sorted(_STATES)}")
        start = row.get("start_position")
        until = row.get("until_position")
        state.snapshots[table] = TableSnapshot(
            table,
            status,
            _maybe(row, "shadow", str, where),
            _maybe(row, "rows_estimated", int, where),
            _need(row, "rows_copied", int, where),
            None if start is None else _object(start, f"{where}.start_position"),
            None if until is None else _object(until, f"{where}.until_position"),
            _time(row, "requested_at", where, nullable=True),
            _time(row, "started_at", where, nullable=True),
            _time(row, "finished_at", where, nullable=True),
        )
    for i, raw in enumerate(_list(doc, "snapshot_chunks")):
        where = f"snapshot_chunks[{i}]"
        row = _object(raw, where)
        plan: list[ChunkState] = []
        for j, item in enumerate(_list(row, "chunks", where)):
            at = f"{where}.chunks[{j}]"
            c = _object(item, at)
            position = c.get("position")
            plan.append(
                ChunkState(
                    Chunk(
                        _need(c, "chunk", int, at),
                        _maybe(c, "lo", int, at),
                        _maybe(c, "hi", int, at),
                    ),
                    None if position is None else _object(position, f"{at}.position"),
                    _need(c, "rows", int, at),
                )
            )
        state.chunks[_table(row, where)] = plan
    return state


_T = TypeVar("_T")


def _maybe(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{where}: {key!r} should be {names}, not {value!r}")
    return value


def _need(obj: dict[str, Any], key: str, kind: type[_T], where: str) -> _T:
    value = _maybe(obj, key, kind, where)
    if value is None:
        raise ValueError(f"{where}: {key!r} is missing")
    assert isinstance(value, kind)
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} should be a JSON object, not {value!r}")
    return value


def _list(obj: dict[str, Any], key: str, where: str = "the file") -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key!r} should be a list, not {value!r}")
    return value


def _time(obj: dict[str, Any], key: str, where: str, *, nullable: bool = False) -> Any:
    text = _maybe(obj, key, str, where) if nullable else _need(obj, key, str, where)
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{where}: {key!r} has no UTC offset: {text!r}")
    return value


def _table(obj: dict[str, Any], where: str) -> TableId:
    return TableId(_need(obj, "schema", str, where), _need(obj, "table", str, where))


def _table_json(table: TableId) -> dict[str, str]:
    return {"schema": table.schema, "table": table.name}


def _order(table: TableId) -> tuple[str, str]:
    return (table.schema, table.name)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat(timespec="microseconds")


def _shadow_name(pipeline: str, table: TableId) -> str:
    # The name checkpoints.snapshot_state.shadow_name gives, without importing psycopg.
    digest = hashlib.sha1(f"{pipeline}\0{table.schema}\0{table.name}".encode()).hexdigest()
    return f"resync_{digest[:20]}"
