"""The dead-letter queue as a JSON Lines file: the store for targets without tables of their
own (Kafka), or when asked for (``dead_letter: {store: jsonl, path: ...}``).

One record per line (see :mod:`.log`). Each append is fsynced before the engine commits the
data, so an entry is durable before the source moves past its change. An exclusive lock
serialises writers (the pipeline and the CLI); a torn last line (a crash mid-append, never
acknowledged) is ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from replicator.dlq.log import LogDeadLetterStore
from replicator.errors import SinkError, disk_full


class JsonlDeadLetterStore(LogDeadLetterStore):
    """Dead-letter entries in one JSON Lines file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._held_lock = False

    def _records(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._failed("read", exc) from exc
        records = []
        lines = raw.splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                if number == len(lines) and not raw.endswith(b"\n"):
                    break  # a torn last line from a crash mid-append: never acknowledged
                raise SinkError(
                    f"line {number} of the dead-letter file {self.path} is not JSON",
                    fix="repair or remove that line (every other line is an entry or a "
                    "status change)",
                ) from None
        return records

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with contextlib.nullcontext() if self._held_lock else self._locked():
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                fd = os.open(self.path, flags, 0o600)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise self._failed("write", exc) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                self.path.with_name(self.path.name + ".lock"),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            raise self._failed("lock", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held_lock = True
            yield
        finally:
            self._held_lock = False
            os.close(fd)

    def close(self) -> None:
        """Nothing stays open between calls."""

    def _failed(self, doing: str, exc: OSError) -> SinkError:
        error = SinkError(
            f"cannot {doing} the dead-letter file {self.path}: {exc.strerror or exc}",
            fix=f"make room on the disk of {self.path.parent} and let the user running "
            "Replicator write there",
        )
        error.transient = disk_full(exc)
        return error
