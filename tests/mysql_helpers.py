"""Helpers for tests of MySQL / MariaDB pipelines: configs, checkpoints, catching up.

Binlog positions compare as ``(file number, offset)`` tuples, ``(0, 0)`` before any.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from replicator.config import PipelineConfig
from tests.mariadb import MariaDbServer
from tests.support import connect, wait_for

_FILE_NUMBER = re.compile(r"\.(\d+)$")


def mysql_pipeline_dict(
    name: str,
    mysql_dsn: str,
    target_dsn: str,
    tables: list[str],
    position: str = "gtid",
    *,
    chunk_rows: int = 2000,
    workers: int = 2,
    max_events: int = 500,
    **source: Any,
) -> dict[str, Any]:
    """A MySQL → PostgreSQL pipeline as it appears in YAML."""
    return {
        "name": name,
        "source": {
            "type": "mysql",
            "dsn": mysql_dsn,
            "tables": tables,
            "position": position,
            "snapshot_chunk_rows": chunk_rows,
            "snapshot_workers": workers,
            **source,
        },
        "sink": {"type": "postgres", "dsn": target_dsn},
        "batch": {"max_events": max_events},
    }


def mysql_pipeline_config(*args: Any, **kwargs: Any) -> PipelineConfig:
    """A validated MySQL pipeline config."""
    return PipelineConfig.model_validate(mysql_pipeline_dict(*args, **kwargs))


def binlog_order(file: str, pos: int) -> tuple[int, int]:
    """Binlog coordinates in order: file sequence number, then offset."""
    match = _FILE_NUMBER.search(file)
    assert match is not None, file
    return int(match.group(1)), pos


def checkpoint(target_dsn: str, pipeline: str) -> dict[str, Any] | None:
    """The pipeline's checkpoint position (``{"file", "pos", "gtid"}``), None before one."""
    with connect(target_dsn) as conn:
        try:
            row = conn.execute(
                "SELECT position FROM _replicator.checkpoints WHERE pipeline = %s", (pipeline,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def checkpoint_order(target_dsn: str, pipeline: str) -> tuple[int, int]:
    """The checkpoint's binlog coordinates in order; (0, 0) before one."""
    position = checkpoint(target_dsn, pipeline)
    if position is None:
        return (0, 0)
    return binlog_order(position["file"], int(position["pos"]))


def source_order(server: MariaDbServer) -> tuple[int, int]:
    """Where the server's binlog ends right now (SHOW MASTER STATUS), in order."""
    return binlog_order(*server.master_status())


def wait_caught_up(
    server: MariaDbServer, target_dsn: str, pipeline: str, timeout: float = 90
) -> tuple[int, int]:
    """Wait until the checkpoint covers the source's current SHOW MASTER STATUS position;
    return that position."""
    goal = source_order(server)
    wait_for(
        lambda: checkpoint_order(target_dsn, pipeline) >= goal,
        timeout,
        f"pipeline {pipeline} to reach the source's binlog position {goal}",
    )
    return goal


def chunks_committed(target_dsn: str, pipeline: str) -> int:
    """Snapshot chunks whose rows are committed in the target."""
    with connect(target_dsn) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM _replicator.snapshot_chunks"
                " WHERE pipeline = %s AND position IS NOT NULL",
                (pipeline,),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    assert row is not None
    return int(row[0])


def replica_registered(server: MariaDbServer, name_part: str) -> bool:
    """Whether a binlog reader whose reported host contains ``name_part`` is connected."""
    return any(name_part in str(r[1]) for r in server.execute("SHOW SLAVE HOSTS"))


def target_rows(target_dsn: str, query: str) -> list[tuple[Any, ...]]:
    """The rows of a query on the target; none while its table does not exist."""
    with connect(target_dsn) as conn:
        try:
            return conn.execute(query).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            return []
