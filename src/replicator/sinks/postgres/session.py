"""How the PostgreSQL sink's connections are opened, and how their failures are reported."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from replicator.config import PipelineConfig
from replicator.errors import SinkConnectionError, SinkError
from replicator.events import ChangeEvent
from replicator.observability.redaction import redact
from replicator.pgsession import (
    CONFLICT_SQLSTATES,
    REJECTED_SQLSTATE_CLASSES,
    TARGET_FIX,
    cannot_connect,
    connection_lost,
    connection_string,
)


def connect(pipeline: PipelineConfig, *, synchronous_commit: bool) -> psycopg.Connection[Any]:
    """A target session without statement or idle-in-transaction timeouts.

    A chunked source transaction keeps its target transaction open (and idle) while the
    source decodes the rest, and a bulk upsert or copy can legitimately run long: role-level
    timeouts must not cut either short. ``synchronous_commit`` must be on wherever the source
    is acknowledged as soon as COMMIT returns.
    """
    settings = {
        "synchronous_commit": "on" if synchronous_commit else "off",
        "statement_timeout": "0",
        "idle_in_transaction_session_timeout": "0",
    }
    app = f"replicator:{pipeline.name}"[:63]
    try:
        return psycopg.connect(connection_string(pipeline.target_dsn.secret(), app, settings))
    except psycopg.Error as exc:
        raise cannot_connect(SinkConnectionError, "the target database", exc, TARGET_FIX) from exc


def translate(
    exc: psycopg.Error, doing: str, events: Sequence[ChangeEvent] | None = None
) -> SinkError:
    """A sink error naming what failed (and the source positions involved), secrets redacted."""
    message = redact(str(exc).strip())
    if connection_lost(exc):
        lost = SinkConnectionError(f"lost the connection to the target while {doing}: {message}")
        lost.sqlstate = exc.sqlstate or ""
        return lost
    where = ""
    if events:
        where = f" (source positions {events[0].position} to {events[-1].position})"
    error = SinkError(f"{doing} failed{where}: {message}")
    error.sqlstate = exc.sqlstate or ""
    error.conflict = error.transient = error.sqlstate in CONFLICT_SQLSTATES
    error.rejected = error.sqlstate.startswith(REJECTED_SQLSTATE_CLASSES)
    return error
