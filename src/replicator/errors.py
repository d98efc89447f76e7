"""Replicator's exceptions.

Every error a user can meet derives from :class:`ReplicatorError`, whose message names the
problem and, where one exists, the fix. Driver exceptions (psycopg, libpq) are translated into
this tree in one place per connector and re-raised ``from`` the original.

::

    ReplicatorError                 exit code 1 unless stated
    ├── ConfigError                 exit code 2: the config file is missing, unreadable or invalid
    ├── PreflightError              a source or target is not ready (``check`` lists the problems)
    ├── CheckpointMismatchError     slot and checkpoint disagree; streaming would skip or repeat
    ├── SchemaMismatchError         source and target table definitions differ
    ├── SourceError                 the source failed while reading
    │   └── SourceConnectionError   the source could not be reached or dropped the connection
    └── SinkError                   the target failed while applying
        └── SinkConnectionError     the target could not be reached or dropped the connection

``transient`` marks errors that a retry may cure (a lost connection); the rest are terminal.
"""

from __future__ import annotations

import errno


class ReplicatorError(Exception):
    """Root of every error Replicator reports to its user."""

    exit_code: int = 1
    transient: bool = False

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\n  Fix: {self.fix}"
        return self.message


class ConfigError(ReplicatorError):
    """The configuration is missing, unreadable or invalid."""

    exit_code = 2


class PreflightError(ReplicatorError):
    """A source or target is not ready for the pipeline; each problem carries its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the pipeline cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


class CheckpointMismatchError(ReplicatorError):
    """The source's replication state and the stored checkpoint disagree."""


class SchemaMismatchError(ReplicatorError):
    """A source table's definition no longer matches the target table."""


class SourceError(ReplicatorError):
    """The source failed while reading changes."""

    sqlstate: str = ""  # the server's SQLSTATE, when the server reported the failure


class SourceConnectionError(SourceError):
    """The source could not be reached, or the connection to it was lost."""

    transient = True


class SinkError(ReplicatorError):
    """The target failed while applying changes."""

    sqlstate: str = ""  # the server's SQLSTATE, when the server reported the failure
    # The target rolled the batch back over a race with another writer (a deadlock, a
    # serialization failure): applying the same batch again will work.
    conflict: bool = False
    # The target refused the data itself (a constraint, a value that does not fit): applying
    # it again will fail the same way, so the event goes to the dead-letter queue.
    rejected: bool = False


class SinkConnectionError(SinkError):
    """The target could not be reached, or the connection to it was lost."""

    transient = True


def disk_full(exc: OSError) -> bool:
    """Whether a failed write ran out of space (or quota): room may be freed, so a retry,
    with a new file rather than the failed one, may succeed."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
