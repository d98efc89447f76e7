"""The dead-letter queue as a JSON Lines file: the store for targets without tables of their
own (Kafka), or when asked for (``dead_letter: {store: jsonl, path: ...}``).

The file is an append-only log: a line is either an entry or a status change of one
(``{"status_of": ENTRY_KEY, ...}``). Each append is fsynced before the engine commits the
data, so an entry is durable before the source moves past its event; a crash in between may
write an entry twice, which reading folds into one (more attempts). Entry numbers are their
order of first appearance in the file. An exclusive lock serialises writers (the pipeline and
the CLI).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from replicator.dlq.entry import PENDING, REPLAY, DeadLetter, Resolution
from replicator.dlq.store import DeadLetterStore
from replicator.errors import SinkError
from replicator.events import TableId

_OPEN = (PENDING, REPLAY)


class JsonlDeadLetterStore(DeadLetterStore):
    """Dead-letter entries in one JSON Lines file per pipeline."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- reading -----------------------------------------------------------------------------

    def _load(self) -> list[DeadLetter]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._failed("read", exc) from exc
        by_key: dict[str, DeadLetter] = {}
        lines = raw.splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                if number == len(lines) and not raw.endswith(b"\n"):
                    break  # a torn last line from a crash mid-append: never acknowledged
                raise SinkError(
                    f"line {number} of the dead-letter file {self.path} is not JSON",
                    fix="repair or remove that line (every other line is an entry or a "
                    "status change)",
                ) from None
            key = doc.get("status_of")
            if key is not None:
                entry = by_key.get(key)
                if entry is not None:
                    entry.status = doc["status"]
                    entry.resolved_by = doc.get("by")
                    entry.note = doc.get("note") or entry.note
                    at = doc.get("at")
                    entry.resolved_at = datetime.fromisoformat(at) if at else None
                    if doc.get("error"):
                        entry.error = doc["error"]
                        entry.attempts += 1
                continue
            entry = DeadLetter.from_dict(doc)
            known = by_key.get(entry.entry_key)
            if known is not None:
                # Written again: the same event failed again (or a crash repeated a write).
                known.attempts += 1
                known.status = PENDING
                known.error = entry.error
                continue
            entry.id = len(by_key) + 1
            by_key[entry.entry_key] = entry
        return list(by_key.values())

    def open_entries(self, pipeline: str) -> list[DeadLetter]:
        """Entries still holding their key, in source order."""
        found = [e for e in self._load() if e.pipeline == pipeline and e.status in _OPEN]
        return sorted(found, key=lambda e: (e.order_key, e.id or 0))

    def entries(
        self,
        pipeline: str,
        *,
        status: str | None = None,
        table: TableId | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Entries, newest first."""
        found = [
            e
            for e in self._load()
            if e.pipeline == pipeline
            and (status is None or e.status == status)
            and (table is None or e.table == table)
        ]
        return list(reversed(found))[:limit]

    def get(self, pipeline: str, entry_id: int) -> DeadLetter | None:
        """One entry by its number."""
        for entry in self._load():
            if entry.pipeline == pipeline and entry.id == entry_id:
                return entry
        return None

    def counts(self, pipeline: str) -> dict[str, int]:
        """Entries per status."""
        counts: dict[str, int] = {}
        for entry in self._load():
            if entry.pipeline == pipeline:
                counts[entry.status] = counts.get(entry.status, 0) + 1
        return counts

    # --- writing -----------------------------------------------------------------------------

    def add(self, entries: Sequence[DeadLetter]) -> None:
        """Append entries, durably."""
        if entries:
            self._append(orjson.dumps(e.as_dict()) for e in entries)

    def mark(
        self, pipeline: str, ids: Sequence[int], status: str, by: str, note: str | None = None
    ) -> list[int]:
        """Append status changes for the open entries among ``ids``."""
        with self._locked():
            chosen = [
                e
                for e in self._load()
                if e.pipeline == pipeline and e.id in set(ids) and e.status in _OPEN
            ]
            now = datetime.now(UTC).isoformat()
            self._append(
                (
                    orjson.dumps(
                        {
                            "status_of": e.entry_key,
                            "status": status,
                            "by": by,
                            "note": note,
                            "at": now,
                        }
                    )
                    for e in chosen
                ),
                lock=False,
            )
        return sorted(e.id for e in chosen if e.id is not None)

    def failed_again(self, entries: Sequence[DeadLetter]) -> None:
        """Replayed entries that failed again: back to pending, with the new error."""
        now = datetime.now(UTC).isoformat()
        self._append(
            orjson.dumps(
                {
                    "status_of": e.entry_key,
                    "status": PENDING,
                    "by": "replay",
                    "error": e.error,
                    "at": now,
                }
            )
            for e in entries
        )

    def resolve(self, pipeline: str, resolutions: Sequence[Resolution]) -> None:
        """Append status changes the pipeline made (replayed, superseded, back to pending)."""
        now = datetime.now(UTC).isoformat()
        by_key = {r.entry_key: r for r in resolutions}
        self._append(
            orjson.dumps(
                {"status_of": k, "status": r.status, "by": "replicator", "at": now, "note": r.note}
            )
            for k, r in by_key.items()
        )

    def close(self) -> None:
        """Nothing stays open between calls."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._make_folder()
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._failed("lock", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _append(self, lines: Any, lock: bool = True) -> None:
        data = b"".join(line + b"\n" for line in lines)
        if not data:
            return
        with self._locked() if lock else contextlib.nullcontext():
            try:
                fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise self._failed("write", exc) from exc

    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._failed("create the folder of", exc) from exc

    def _failed(self, doing: str, exc: OSError) -> SinkError:
        error = SinkError(
            f"cannot {doing} the dead-letter file {self.path}: {exc.strerror or exc}",
            fix=f"make room on the disk of {self.path.parent} and let the user running "
            "Replicator write there",
        )
        error.transient = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return error


def _status(entry: DeadLetter, status: str, by: str, at: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {"status_of": entry.entry_key, "status": status, "by": by, "at": at, **extra}
    )
