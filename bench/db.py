"""Small database and process helpers for the benchmark: connections, fingerprints, LSNs,
the PostgreSQL client programs (pgbench, pg_dump, psql) and peak memory from /proc."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from tests.pgcluster import find_bindir

TABLES: tuple[str, ...] = (
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
    "pgbench_accounts",
)
"""The four pgbench tables, smallest first (so a row-count check can stop early)."""

# Identical text output on every connection, so row fingerprints compare across servers.
_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3"


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed and where to look."""


Row = tuple[Any, ...]


def connect(dsn: str, lock_timeout_ms: int = 0) -> psycopg.Connection[Row]:
    """Open an autocommit connection with pinned text settings.

    Polling connections pass ``lock_timeout_ms`` so that a consumer holding a table lock
    (a table being created or swapped) makes a check fail fast instead of blocking it.
    """
    options = f"{_OPTIONS} -c lock_timeout={lock_timeout_ms}"
    return psycopg.connect(dsn, autocommit=True, options=options, connect_timeout=10)


def query(
    dsn: str, statement: LiteralString | sql.Composed, params: Sequence[Any] | None = None
) -> list[Row]:
    """Run one statement on a fresh connection and return its rows (none for DDL)."""
    with connect(dsn) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description is not None else []


def parse_lsn(text: str) -> int:
    """Turn ``16/B374D848`` into an integer."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    """Turn an integer back into PostgreSQL's ``X/Y`` notation."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def current_lsn(dsn: str) -> int:
    """The source's current WAL write position."""
    rows = query(dsn, "SELECT pg_current_wal_lsn()::text")
    return parse_lsn(rows[0][0])


@dataclass(frozen=True)
class SlotState:
    """What ``pg_replication_slots`` says about one slot."""

    exists: bool
    active: bool
    active_pid: int | None
    confirmed_flush: int


def slot_state(conn: psycopg.Connection[Row], slot: str) -> SlotState:
    """Read one slot's state on an open source connection."""
    row = conn.execute(
        "SELECT active, active_pid, confirmed_flush_lsn::text"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return SlotState(exists=False, active=False, active_pid=None, confirmed_flush=0)
    return SlotState(
        exists=True,
        active=bool(row[0]),
        active_pid=row[1],
        confirmed_flush=parse_lsn(row[2]) if row[2] else 0,
    )


def row_counts(conn: psycopg.Connection[Row], tables: Sequence[str] = TABLES) -> dict[str, int]:
    """Exact row counts; a table that does not exist (yet) counts -1."""
    counts: dict[str, int] = {}
    for table in tables:
        try:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            counts[table] = int(row.fetchone()[0])  # type: ignore[index]
        except (psycopg.errors.UndefinedTable, psycopg.errors.LockNotAvailable):
            counts[table] = -1
    return counts


def counts_reached(
    conn: psycopg.Connection[Row], expected: dict[str, int], tables: Sequence[str] = TABLES
) -> bool:
    """Whether every table holds exactly its expected number of rows; stops at the first
    table that does not (smallest tables first, so polling stays cheap while copying)."""
    for table in tables:
        if row_counts(conn, [table])[table] != expected[table]:
            return False
    return True


def fingerprints(dsn: str, tables: Sequence[str] = TABLES) -> dict[str, tuple[int, str]]:
    """Per table: row count and the sum of a 64-bit hash of every row's text.

    The sum is order-independent and counts duplicates, so it compares multisets (the
    history table has no key and may hold identical rows).
    """
    result: dict[str, tuple[int, str]] = {}
    with connect(dsn) as conn:
        for table in tables:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)"
                    " FROM {} t"
                ).format(sql.Identifier(table))
            ).fetchone()
            assert row is not None
            result[table] = (int(row[0]), str(row[1]))
    return result


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    on_poll: Callable[[], None] | None = None,
) -> float:
    """Poll ``condition`` until it holds and return the monotonic time it first held.

    ``on_poll`` runs before every check (sampling memory, checking a process is alive) and
    may raise to abort. Raises ``BenchError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if on_poll is not None:
            on_poll()
        observed = time.monotonic()
        if condition():
            return observed
        if observed > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- client programs ------------------------------------------------------------------------


def client_env() -> dict[str, str]:
    """The environment for client programs: no PG* variables steering them elsewhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def run_program(command: Sequence[str], what: str, timeout: float) -> str:
    """Run a client program to its end; return stdout + stderr, or raise naming it ``what``."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}):\n{output}")
    return output


def run_client(program: str, *args: str, timeout: float = 3600) -> str:
    """Run a PostgreSQL client program from the server's bindir; return stdout + stderr."""
    command = [str(find_bindir() / program), *args]
    return run_program(command, f"{program} {' '.join(args[:3])} ...", timeout)


@dataclass(frozen=True)
class PgbenchResult:
    """What a timed pgbench run did."""

    transactions: int
    failed: int
    tps: float
    seconds: float
    output: str


def run_pgbench(dsn: str, duration: int, clients: int, jobs: int) -> PgbenchResult:
    """Run the TPC-B-like script for ``duration`` seconds (``-n``: no vacuum, no truncate)."""
    started = time.monotonic()
    output = run_client(
        "pgbench", "-n", "-T", str(duration), "-c", str(clients), "-j", str(jobs), dsn
    )
    seconds = time.monotonic() - started
    processed = re.search(r"number of transactions actually processed:\s*(\d+)", output)
    if processed is None:
        raise BenchError(f"cannot read the transaction count from pgbench output:\n{output}")
    failed = re.search(r"number of failed transactions:\s*(\d+)", output)
    tps = re.search(r"tps = ([0-9.]+)", output)
    return PgbenchResult(
        transactions=int(processed.group(1)),
        failed=int(failed.group(1)) if failed else 0,
        tps=float(tps.group(1)) if tps else 0.0,
        seconds=seconds,
        output=output,
    )


def copy_schema(source_dsn: str, target_dsn: str, workdir: Path, name: str) -> None:
    """Create the source's tables (schema only) in the target, as native LR requires."""
    _dump_and_load(source_dsn, target_dsn, workdir / f"schema-{name}.sql", "--schema-only")


def copy_data(source_dsn: str, target_dsn: str, workdir: Path, name: str) -> None:
    """Copy every row of the source into the target's existing tables (pg_dump, data only)."""
    tables = [f"--table=public.{table}" for table in TABLES]
    _dump_and_load(source_dsn, target_dsn, workdir / f"data-{name}.sql", "--data-only", *tables)


def _dump_and_load(source_dsn: str, target_dsn: str, dump: Path, *options: str) -> None:
    """pg_dump the source with ``options`` into ``dump``, then replay it into the target."""
    run_client(
        "pg_dump",
        *options,
        "--no-owner",
        "--no-publications",
        "--no-subscriptions",
        f"--file={dump}",
        f"--dbname={source_dsn}",
    )
    run_client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--file={dump}", target_dsn)
    dump.unlink(missing_ok=True)


# -- processes ------------------------------------------------------------------------------


def peak_memory_kb(pid: int) -> int | None:
    """The process's peak resident set size (VmHWM) in kB, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None
