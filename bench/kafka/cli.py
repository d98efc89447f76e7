"""The command line of the Kafka benchmark: options, the run, the tables, the exit code."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Sequence

import psycopg
from confluent_kafka import KafkaException
from tests.fixtures.debezium.capture import CaptureError
from tests.kafkabroker import KafkaError
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
from bench.kafka.report import Results, render
from bench.kafka.runner import Benchmark

CONSUMERS = ("native", "debezium", "watcher", "ours")
_BATCH_KEYS = ("max_events", "max_bytes", "max_age_ms")


def _consumers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONSUMERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown consumer(s) {', '.join(unknown) or '(none)'}; choose from"
            f" {', '.join(CONSUMERS)}"
        )
    return names


def _batch_setting(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or key not in _BATCH_KEYS or not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: use KEY=INTEGER with KEY one of {', '.join(_BATCH_KEYS)}"
        )
    return key, int(value)


def _batch_option(parser: argparse.ArgumentParser, flag: str, which: str) -> None:
    parser.add_argument(
        flag,
        type=_batch_setting,
        action="append",
        default=[],
        metavar="KEY=N",
        help=f"a `batch:` setting of {which} (repeatable; default: Replicator's)",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every option has a default so ``make bench-kafka`` needs none."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.kafka",
        description="PostgreSQL -> Kafka -> PostgreSQL: Replicator's watcher and syncer vs"
        " native logical replication (and Debezium's PostgreSQL connector as a watcher).",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="single-row INSERT transactions of the catch-up (default 1000000)",
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of each topic (default 1)"
    )
    parser.add_argument(
        "--live-rate", type=float, default=20_000, help="rows/s of the live phase (default 20000)"
    )
    parser.add_argument(
        "--live-seconds",
        type=float,
        default=30,
        help="seconds of the live phase; 0 skips it (default 30)",
    )
    parser.add_argument(
        "--lag-interval",
        type=float,
        default=0.1,
        help="seconds between lag samples in the live phase (default 0.1)",
    )
    parser.add_argument(
        "--consumers",
        type=_consumers,
        default=list(CONSUMERS),
        help="comma-separated, in any order: native (subscription), debezium (Kafka Connect,"
        " PG -> Kafka), watcher (Replicator's watcher alone, PG -> Kafka), ours (watcher +"
        f" syncer end to end); default {','.join(CONSUMERS)}",
    )
    _batch_option(parser, "--batch", "both the watchers and the syncer")
    _batch_option(parser, "--watch-batch", "the watchers (after --batch)")
    _batch_option(parser, "--sync-batch", "the syncer (after --batch)")
    add_timeout_option(parser)
    parser.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fsync and full_page_writes on both clusters (default on, as in production)",
    )
    add_output_option(parser, "kafka-latest.json")
    add_require_goals_option(parser)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.partitions < 1:
        parser.error("--rows and --partitions must be at least 1")
    if args.live_rate <= 0 or args.live_seconds < 0 or args.lag_interval <= 0:
        parser.error("--live-rate and --lag-interval must be positive, --live-seconds >= 0")
    for name in ("batch", "watch_batch", "sync_batch"):
        setattr(args, name, dict(getattr(args, name)))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON; exit 1 when the run failed."""
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
                PgClusterError,
                KafkaError,
                CaptureError,
                KafkaException,
                psycopg.Error,
                subprocess.SubprocessError,
                OSError,
            ),
        )
    finally:
        bench.say("cleaning up (destroying the servers)")
        bench.cleanup()
        results.finished_at = now()
    for secret in bench.secrets:
        results.errors = [error.replace(secret, "[secure]") for error in results.errors]
    publish(render(results), results, args.output)
    for log in bench.logs.values():
        if log.exists():
            print(f"log: {log}")
    return exit_code(results, args.require_goals)
