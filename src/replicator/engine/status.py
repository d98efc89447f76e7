"""Progress figures shared by ``replicator status`` and the management API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from replicator.contracts import TableSnapshot


def table_progress(table: TableSnapshot) -> dict[str, Any]:
    """One table's copy: rows so far, estimate, rate and time left."""
    state = {"requested": "pending", "copying": "copying", "done": "done"}[table.state]
    rate = None
    eta = None
    if table.started_at is not None:
        end = table.finished_at or datetime.now(UTC)
        seconds = max((end - table.started_at).total_seconds(), 1e-3)
        rate = round(table.rows_copied / seconds)
        if state == "copying" and table.rows_estimated and rate:
            eta = round(max(0, table.rows_estimated - table.rows_copied) / rate)
    return {
        "table": str(table.table),
        "state": state,
        "rows_copied": table.rows_copied,
        "rows_estimated": table.rows_estimated,
        "rows_per_second": rate,
        "eta_seconds": eta,
    }
