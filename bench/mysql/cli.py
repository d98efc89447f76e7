"""The command line of the MySQL benchmark: options, the run, the table, the exit code."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pymysql
from tests.mariadb import MariaDbError
from tests.pgcluster import PgClusterError

from bench.db import BenchError
from bench.mysql.chameleon_venv import DEFAULT_VENV
from bench.mysql.report import Results, render
from bench.mysql.runner import Benchmark, loadavg

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
_EXIT_GOALS_NOT_MET = 3


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
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds any one wait may take before the run fails (default 900)",
    )
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
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "mysql-latest.json",
        help="where to write the JSON results (default bench/results/mysql-latest.json)",
    )
    parser.add_argument(
        "--require-goals",
        action="store_true",
        help=f"exit with code {_EXIT_GOALS_NOT_MET} when a goal is not met",
    )
    args = parser.parse_args(argv)
    if min(args.tables, args.table_size, args.duration, args.threads) < 1:
        parser.error("--tables, --table-size, --duration and --threads must be at least 1")
    return args


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; exit 1 when the run failed."""
    args = parse_args(argv)
    results = Results(
        settings={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    )
    results.started_at = _now()
    bench = Benchmark(args, results)
    if loadavg() > 0.5:
        bench.say(
            f"warning: load average is {loadavg()} before the start; other work on this "
            "machine skews the timings"
        )
    try:
        bench.run()
    except BenchError as exc:
        results.errors.append(str(exc))
    except (
        MariaDbError,
        PgClusterError,
        psycopg.Error,
        pymysql.Error,
        subprocess.SubprocessError,
        OSError,
    ) as exc:
        results.errors.append(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        results.errors.append("interrupted")
    finally:
        if results.phases:
            bench.keep_memory(results.phases[-1])
        bench.say("cleaning up (destroying the servers)")
        bench.cleanup()
        results.finished_at = _now()
    for secret in bench.secrets:
        results.errors = [error.replace(secret, "[secure]") for error in results.errors]
    print()
    print(render(results))
    results.write(args.output)
    print(f"\nresults: {args.output}")
    for log in (bench.chameleon_log, bench.ours_log):
        if log.exists():
            print(f"log: {log}")
    if not results.ok:
        return 1
    if args.require_goals and not results.goals()["all_met"]:
        return _EXIT_GOALS_NOT_MET
    return 0
