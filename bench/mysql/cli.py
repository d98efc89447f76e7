"""The command line of the MySQL benchmark: options, the run, the table, the exit code."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pymysql
from tests.mariadb import MariaDbError
from tests.pgcluster import PgClusterError

from bench.entrypoint import (
    add_output_option,
    add_require_goals_option,
    add_timeout_option,
    exit_code,
    now,
    publish,
    run_recording_errors,
    settings_of,
    warn_if_busy,
)
from bench.mysql.chameleon_venv import DEFAULT_VENV
from bench.mysql.report import Results, render
from bench.mysql.runner import Benchmark


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every option has a default so ``make bench-mysql`` needs none."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.mysql",
        description="Replicator vs pg_chameleon, MariaDB -> PostgreSQL, on a sysbench database.",
    )
    parser.add_argument("--tables", type=int, default=4, help="sysbench tables (default 4)")
    parser.add_argument(
        "--table-size", type=int, default=250_000, help="rows per table (default 250000)"
    )
    parser.add_argument(
        "--duration", type=int, default=30, help="seconds of sysbench in phase b (default 30)"
    )
    parser.add_argument("--threads", type=int, default=4, help="sysbench threads (default 4)")
    parser.add_argument(
        "--consumers",
        choices=("both", "chameleon", "ours"),
        default="both",
        help="which consumers to measure (default both; one alone reports no speedup)",
    )
    add_timeout_option(parser)
    parser.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="durable commits on both servers: PostgreSQL fsync and full_page_writes, MariaDB"
        " innodb_flush_log_at_trx_commit=1 and sync_binlog=1 (default on)",
    )
    parser.add_argument(
        "--chameleon-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="pg_chameleon's virtualenv, made on first use (default bench/.chameleon-venv)",
    )
    add_output_option(parser, "mysql-latest.json")
    add_require_goals_option(parser)
    args = parser.parse_args(argv)
    if min(args.tables, args.table_size, args.duration, args.threads) < 1:
        parser.error("--tables, --table-size, --duration and --threads must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; exit 1 when the run failed."""
    args = parse_args(argv)
    results = Results(settings=settings_of(args))
    results.started_at = now()
    bench = Benchmark(args, results)
    warn_if_busy(bench.say)
    try:
        run_recording_errors(
            bench.run,
            results.errors,
            (
                MariaDbError,
                PgClusterError,
                psycopg.Error,
                pymysql.Error,
                subprocess.SubprocessError,
                OSError,
            ),
        )
    finally:
        if results.phases:
            bench.keep_memory(results.phases[-1])
        bench.say("cleaning up (destroying the servers)")
        bench.cleanup()
        results.finished_at = now()
    for secret in bench.secrets:
        results.errors = [error.replace(secret, "[secure]") for error in results.errors]
    publish(render(results), results, args.output)
    for log in (bench.chameleon_log, bench.ours_log):
        if log.exists():
            print(f"log: {log}")
    return exit_code(results, args.require_goals)
