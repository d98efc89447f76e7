"""sysbench's OLTP tables and workload against the MariaDB source.

``oltp_write_only`` with its default mix: each transaction updates an indexed column
(``k = k + 1``), updates a non-indexed one (``c``), deletes a row and inserts it again, all
by primary key, so it writes 4 row changes, each statement exactly one row.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from bench.db import BenchError, run_program

WORKLOAD = "oltp_write_only"
CHANGES_PER_TRANSACTION = 4


@dataclass(frozen=True)
class SysbenchTarget:
    """Where sysbench connects and what it creates: ``tables`` × ``table_size`` rows."""

    host: str
    port: int
    user: str
    password: str
    database: str
    tables: int
    table_size: int

    def options(self) -> list[str]:
        """The connection and table options every sysbench command takes."""
        return [
            "--db-driver=mysql",
            f"--mysql-host={self.host}",
            f"--mysql-port={self.port}",
            f"--mysql-user={self.user}",
            f"--mysql-password={self.password}",
            f"--mysql-db={self.database}",
            f"--tables={self.tables}",
            f"--table-size={self.table_size}",
        ]


@dataclass(frozen=True)
class SysbenchResult:
    """What a timed run did, from sysbench's statistics."""

    transactions: int
    writes: int
    ignored_errors: int
    tps: float
    seconds: float


def _sysbench() -> str:
    found = shutil.which("sysbench")
    if found is None:
        raise BenchError(
            "sysbench is not installed.\n    Fix: make bench-tools (or apt-get install sysbench)"
        )
    return found


def _run(target: SysbenchTarget, *args: str, timeout: float) -> str:
    # The command line holds a password: errors name the step only, never the command.
    command = [_sysbench(), WORKLOAD, *target.options(), *args]
    return run_program(command, f"sysbench {WORKLOAD} {args[-1]}", timeout)


def prepare(target: SysbenchTarget, threads: int, timeout: float = 3600) -> float:
    """Create and fill the tables (``sysbench … prepare``); return the seconds it took."""
    started = time.monotonic()
    _run(target, f"--threads={max(1, min(threads, target.tables))}", "prepare", timeout=timeout)
    return time.monotonic() - started


def run(target: SysbenchTarget, duration: int, threads: int) -> SysbenchResult:
    """Run the workload for ``duration`` seconds with ``threads`` client threads."""
    started = time.monotonic()
    output = _run(
        target,
        f"--threads={threads}",
        f"--time={duration}",
        "--events=0",
        "--report-interval=0",
        "run",
        timeout=duration + 600,
    )
    seconds = time.monotonic() - started
    transactions = re.search(r"transactions:\s+(\d+)\s+\(([0-9.]+) per sec", output)
    writes = re.search(r"write:\s+(\d+)", output)
    ignored = re.search(r"ignored errors:\s+(\d+)", output)
    if transactions is None or writes is None:
        raise BenchError(f"cannot read the statistics from sysbench's output:\n{output}")
    return SysbenchResult(
        transactions=int(transactions.group(1)),
        writes=int(writes.group(1)),
        ignored_errors=int(ignored.group(1)) if ignored else 0,
        tps=float(transactions.group(2)),
        seconds=seconds,
    )


def version() -> str:
    """``sysbench --version`` (e.g. ``sysbench 1.0.20``)."""
    result = subprocess.run(
        [_sysbench(), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip()
