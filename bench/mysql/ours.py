"""Replicator as a consumer of the MariaDB source: one pipeline ``bench``, ``snapshot: initial``.

The process handling (start, SIGTERM with exit 0, memory, ``replicator status --json``) is
``bench.consumers.ReplicatorProcess``, shared with the PostgreSQL benchmark. What is MySQL
specific: the source block of the config, and how far the pipeline got, read from its
checkpoint in the target (``_replicator.checkpoints.position``, e.g. ``{"file":
"binlog.000003", "pos": 123456, "gtid": "0-1-5780"}``: the end of the last transaction it
applied and checkpointed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from bench.consumers import ReplicatorProcess
from bench.db import BenchError, Row
from bench.mysql.binlog import BinlogPosition


class OursConsumer(ReplicatorProcess):
    """``replicator run`` copying ``database.*`` from MariaDB into the ``ours`` database."""

    def __init__(
        self,
        source_dsn: str,
        target_dsn: str,
        database: str,
        workdir: Path,
        log_path: Path,
    ) -> None:
        """Write the pipeline's config file; ``start`` runs it."""
        self.target_dsn = target_dsn
        config: dict[str, Any] = {
            "pipelines": [
                {
                    "name": "bench",
                    "source": {
                        "type": "mysql",
                        "dsn": source_dsn,
                        "tables": [f"{database}.*"],
                        "snapshot": "initial",
                    },
                    "sink": {"type": "postgres", "dsn": target_dsn},
                    # batch: Replicator's defaults (max_events, max_bytes, max_age_ms).
                }
            ],
            "logging": {"level": "info", "format": "console"},
        }
        super().__init__(config, workdir / "replicator-mysql.yaml", log_path, pipeline="bench")

    def preflight(self) -> None:
        """``replicator check`` must accept the pipeline before anything is timed.

        A build without the MySQL source rejects ``type: mysql`` here, in a second, rather
        than after pg_chameleon's phases.
        """
        code, output = self.check()
        if code == 0:
            return
        hint = (
            "this build of Replicator does not seem to have the MySQL source"
            if "source.type" in output
            else "it says"
        )
        raise BenchError(
            f"`replicator check` rejected the MySQL pipeline (exit {code}); {hint}:\n"
            + "\n".join(f"    {line}" for line in output.splitlines()[-25:])
            + "\n    Fix: repair what it says, or pass --consumers chameleon to measure"
            " pg_chameleon alone"
        )

    def checkpoint(self, conn: psycopg.Connection[Row]) -> BinlogPosition | None:
        """The binlog position of the pipeline's checkpoint, or None before the first one.

        Best effort: it is an internal table, so any error just means "not yet".
        """
        try:
            row = conn.execute(
                "SELECT position->>'file', position->>'pos' FROM _replicator.checkpoints"
                " WHERE pipeline = %s",
                (self.pipeline,),
            ).fetchone()
        except psycopg.Error:
            return None
        if row is None or row[0] is None or row[1] is None:
            return None
        try:
            return BinlogPosition(str(row[0]), int(row[1]))
        except ValueError:
            return None
