"""The last errors of each pipeline, for the API and the status page, counted in metrics.

Failures, retried faults and recovered ones alike land here, from whichever thread met them
(a reader reconnecting, a snapshot worker re-reading a chunk). Messages are redacted on the
way in: the log may be served to anyone who can read the API.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from replicator.errors import ReplicatorError
from replicator.observability.metrics import ERRORS, RETRIES
from replicator.observability.redaction import redact

KEEP = 20  # errors kept per pipeline


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One error: its class, its (redacted) message and when it happened."""

    kind: str
    message: str
    at: datetime
    retried: str | None = None  # the operation retried after it, if any

    def as_dict(self) -> dict[str, str | None]:
        """The JSON shape the API serves."""
        return {
            "kind": self.kind,
            "message": self.message,
            "at": self.at.isoformat(),
            "retried": self.retried,
        }


_lock = threading.Lock()
_recent: dict[str, deque[ErrorRecord]] = {}
_times: dict[str, deque[float]] = {}  # monotonic times of errors and dead-lettered changes
RATE_WINDOW = 60.0


def _describe(error: BaseException) -> str:
    if isinstance(error, ReplicatorError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def record(pipeline: str, error: BaseException, *, retried: str | None = None) -> ErrorRecord:
    """Remember ``error`` for ``pipeline`` and count it (and its retry, if one follows)."""
    entry = ErrorRecord(type(error).__name__, redact(_describe(error)), datetime.now(UTC), retried)
    with _lock:
        _recent.setdefault(pipeline, deque(maxlen=KEEP)).append(entry)
        _times.setdefault(pipeline, deque()).append(time.monotonic())
    ERRORS.labels(pipeline, entry.kind).inc()
    if retried is not None:
        RETRIES.labels(pipeline, retried).inc()
    return entry


def dead_lettered(pipeline: str, count: int) -> None:
    """Count ``count`` changes put in the dead-letter queue towards the error rate."""
    if count:
        now = time.monotonic()
        with _lock:
            _times.setdefault(pipeline, deque()).extend([now] * count)


def per_minute(pipeline: str) -> float:
    """Errors and dead-lettered changes of the pipeline in the last minute."""
    cutoff = time.monotonic() - RATE_WINDOW
    with _lock:
        times = _times.get(pipeline)
        if not times:
            return 0.0
        while times and times[0] < cutoff:
            times.popleft()
        return float(len(times)) * 60.0 / RATE_WINDOW


def recent(pipeline: str) -> list[ErrorRecord]:
    """The pipeline's last errors, oldest first."""
    with _lock:
        return list(_recent.get(pipeline, ()))


def forget(pipeline: str) -> None:
    """Drop a removed pipeline's errors."""
    with _lock:
        _recent.pop(pipeline, None)
        _times.pop(pipeline, None)
