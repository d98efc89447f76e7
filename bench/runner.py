"""Orchestration: clusters, the pgbench load, the three timed phases, verification, results.

Layout: one source cluster (database ``bench``) and one target cluster with two databases,
``native`` (a subscription) and ``ours`` (Replicator's sink), so both consumers write to the
same server with the same settings. Consumers are timed one after the other, never at the
same time, because they share the machine's CPUs: native first, then Replicator.

Phases:

a. initial copy of the freshly loaded pgbench database;
b. catch-up after a timed pgbench run during which both consumers were stopped;
c. catch-up after one transaction that updated every ``pgbench_accounts`` row.

After each phase both targets must equal the source (count and hash of every row).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from tests.pgcluster import PgCluster, PgClusterError, SettingValue

from bench.consumers import Consumer, NativeConsumer, ReplicatorConsumer
from bench.cpu import CpuMeter
from bench.db import (
    TABLES,
    BenchError,
    connect,
    copy_data,
    copy_schema,
    counts_reached,
    current_lsn,
    fingerprints,
    format_lsn,
    query,
    row_counts,
    run_client,
    run_pgbench,
    slot_state,
    wait_until,
)
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
from bench.harness import Harness, loadavg, machine, replicator_version
from bench.model import Measurement
from bench.report import Phase, Results, render

_INITIAL_POLL = 0.2  # seconds between completion checks of an initial copy (row counts)
_CATCHUP_POLL = 0.05  # seconds between checks of a slot's confirmed_flush_lsn


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every option has a default so ``make bench`` needs none."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Replicator vs PostgreSQL native logical replication on a pgbench database.",
    )
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (default 10)")
    parser.add_argument(
        "--duration", type=int, default=30, help="seconds of pgbench in phase b (default 30)"
    )
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    parser.add_argument("--jobs", type=int, default=2, help="pgbench -j (default 2)")
    add_timeout_option(parser)
    parser.add_argument(
        "--ours-initial",
        choices=("snapshot", "dump"),
        default="snapshot",
        help=(
            "how Replicator's target gets the initial rows: its own snapshot (timed, the "
            "default), or - for development only - pg_dump --data-only with `snapshot: never`, "
            "which skips Replicator's side of phase a"
        ),
    )
    parser.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fsync and full_page_writes on both clusters (default on, as in production)",
    )
    add_output_option(parser, "latest.json")
    add_require_goals_option(parser)
    args = parser.parse_args(argv)
    if args.scale < 1 or args.duration < 1 or args.clients < 1 or args.jobs < 1:
        parser.error("--scale, --duration, --clients and --jobs must be at least 1")
    if args.clients % args.jobs:
        parser.error("--clients must be a multiple of --jobs (a pgbench rule)")
    return args


class Benchmark(Harness):
    """One run: owns the clusters, the consumers and the results."""

    def __init__(self, args: argparse.Namespace, results: Results) -> None:
        """Prepare an empty run; ``run`` does the work and ``cleanup`` always follows."""
        super().__init__(results.warnings)
        self.args = args
        self.results = results
        self.clusters: list[PgCluster] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-bench-"))
        self.log_path = args.output.with_suffix(".replicator.log")
        self.ours: ReplicatorConsumer | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Kill a Replicator still running, destroy the clusters, remove the work folder."""
        if self.ours is not None:
            self._keep_partial_memory()
            self.ours.kill()
        for cluster in self.clusters:
            with contextlib.suppress(Exception):
                cluster.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _keep_partial_memory(self) -> None:
        """After a failure, credit the peaks sampled so far to the phase that failed."""
        if not self.results.phases or self.ours is None:
            return
        last = self.results.phases[-1]
        with contextlib.suppress(Exception):
            self.ours.sample(force=True)
        with contextlib.suppress(Exception):
            self.native.sample(force=True)
        for consumer, measurement in ((self.native, last.native), (self.ours, last.ours)):
            if measurement.peak_memory_kb is None:
                measurement.peak_memory_kb = consumer.memory.vmhwm_kb
                measurement.peak_rss_anon_kb = consumer.memory.rss_anon_kb

    def _postmaster_pids(self) -> list[int]:
        pids = []
        for cluster in self.clusters:
            first_line = (cluster.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            pids.append(int(first_line))
        return pids

    def checkpoint(self) -> None:
        """CHECKPOINT both clusters, so no consumer pays for another one's dirty buffers."""
        for cluster in self.clusters:
            cluster.execute("CHECKPOINT")

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Start the clusters, load pgbench, create both consumers."""
        settings: dict[str, SettingValue] = {
            "fsync": self.args.fsync,
            "full_page_writes": self.args.fsync,
        }
        self.say("creating the source and target clusters")
        self.source = PgCluster.create("bench-source", **settings)
        self.clusters.append(self.source)
        self.target = PgCluster.create("bench-target", **settings)
        self.clusters.append(self.target)
        self.cpu = CpuMeter(self._postmaster_pids())
        self.source_dsn = self.source.create_database("bench")
        self.native_dsn = self.target.create_database("native")
        self.ours_dsn = self.target.create_database("ours")

        self.say(f"loading pgbench -i -s {self.args.scale}")
        started = time.monotonic()
        run_client("pgbench", "-i", "-q", "-s", str(self.args.scale), self.source_dsn)
        load_seconds = time.monotonic() - started
        # Replicator needs a key or REPLICA IDENTITY FULL; pgbench_history has no key.
        query(self.source_dsn, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        with connect(self.source_dsn) as conn:
            self.results.source_rows = row_counts(conn)
        self.say(f"loaded in {load_seconds:.1f}s: {self.results.source_rows}")

        self.native = NativeConsumer(self.source_dsn, self.native_dsn)
        self.native.prepare()
        copy_schema(self.source_dsn, self.native_dsn, self.workdir, "native")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.unlink(missing_ok=True)
        snapshot = "initial" if self.args.ours_initial == "snapshot" else "never"
        self.ours = ReplicatorConsumer(
            self.source_dsn, self.ours_dsn, self.workdir, self.log_path, snapshot
        )
        self.results.environment = self._environment(load_seconds)

    def _environment(self, load_seconds: float) -> dict[str, Any]:
        settings = {
            name: self.source.execute(f"SHOW {name}")[0][0]
            for name in (
                "fsync",
                "full_page_writes",
                "synchronous_commit",
                "shared_buffers",
                "max_wal_size",
                "logical_decoding_work_mem",
                "max_sync_workers_per_subscription",
            )
        }
        return {
            **machine(),
            "postgresql": self.source.execute("SHOW server_version")[0][0],
            "replicator": replicator_version(),
            "cluster_settings": settings,
            "pgbench_init_seconds": round(load_seconds, 2),
            "load_average_at_start": loadavg(),
            "layout": "source cluster; target cluster with databases `native` and `ours`",
            "replicator_config": "batch: Replicator defaults; logging: info",
        }

    # -- phases ------------------------------------------------------------------------------

    def run(self) -> None:
        """Set up, then run the three phases in order; any failure ends the run."""
        self.setup()
        initial = self.phase_initial_copy()
        pgbench = self.phase_pgbench_catchup(previous=initial)
        update = self.phase_big_update_catchup(previous=pgbench)
        self.say("stopping both consumers")
        self.stop_consumers(update)

    def _phase(self, key: str, title: str) -> Phase:
        phase = Phase(key=key, title=title)
        phase.info["load_average_before"] = loadavg()
        self.results.phases.append(phase)
        return phase

    def stop_consumers(self, previous: Phase) -> None:
        """Stop both consumers; their memory peaks so far belong to ``previous``."""
        assert self.ours is not None
        self.native.stop(self.args.timeout)
        self.ours.stop(self.args.timeout)
        for consumer, measurement in (
            (self.native, previous.native),
            (self.ours, previous.ours),
        ):
            measurement.peak_memory_kb = consumer.memory.vmhwm_kb
            measurement.peak_rss_anon_kb = consumer.memory.rss_anon_kb
            consumer.memory.reset()

    def before_timing(self, measurement: Measurement, label: str) -> None:
        """CHECKPOINT both clusters before each timed step."""
        self.checkpoint()

    def phase_initial_copy(self) -> Phase:
        """(a) Copy the loaded pgbench database: a subscription vs Replicator's snapshot."""
        assert self.ours is not None
        ours = self.ours
        phase = self._phase("initial_copy", "a. initial copy")
        expected = self.results.source_rows
        phase.rows = sum(expected.values())
        phase.rows_meaning = "rows copied"
        self.say(f"phase {phase.title}: {phase.rows:,} rows (load average {loadavg()})")
        timeout = self.args.timeout

        def wait_native(started: float) -> float:
            with connect(self.native_dsn, lock_timeout_ms=100) as conn:
                return wait_until(
                    lambda: counts_reached(conn, expected) and self.native.initial_copy_done(conn),
                    timeout,
                    "every table of the subscription to be ready (srsubstate 'r') with the "
                    "source's row counts",
                    interval=_INITIAL_POLL,
                    on_poll=self.native.poll,
                )

        self.measure(phase.native, "native initial copy", self.native.create, wait_native)
        phase.native.detail["subscription"] = self.native.options()

        if self.args.ours_initial == "dump":
            phase.ours.skipped = (
                "--ours-initial dump (development only): rows copied with pg_dump --data-only,"
                " pipeline started with `snapshot: never`"
            )
            self.say("  ours: copying the rows with pg_dump (development mode, not timed)")
            copy_schema(self.source_dsn, self.ours_dsn, self.workdir, "ours")
            copy_data(self.source_dsn, self.ours_dsn, self.workdir, "ours")
            ours.start()
            with connect(self.source_dsn) as conn:
                wait_until(
                    lambda: slot_state(conn, ours.slot).active,
                    timeout,
                    f"Replicator's slot {ours.slot} to become active",
                    on_poll=ours.poll,
                )
        else:

            def wait_ours(started: float) -> float:
                with connect(self.ours_dsn, lock_timeout_ms=100) as conn:
                    try:
                        finished = wait_until(
                            lambda: counts_reached(conn, expected) and ours.snapshot_done(),
                            timeout,
                            "the target's row counts to equal the source's and "
                            "`replicator status` to report the snapshot done",
                            interval=_INITIAL_POLL,
                            on_poll=ours.poll,
                        )
                    except BenchError as exc:
                        counts = row_counts(conn)
                        raise BenchError(
                            f"{exc}\n    target rows now: {counts}\n    source rows: {expected}"
                            f"\n    last status: {ours.last_status}\n    Replicator's side of "
                            "phase a needs its initial snapshot; to run phases b and c without"
                            " it (development only), pass --ours-initial dump"
                        ) from None
                phase.ours.detail["status_confirmed_seconds"] = round(time.monotonic() - started, 3)
                phase.ours.detail["status"] = ours.last_status
                return finished

            self.measure(phase.ours, "ours initial copy", ours.start, wait_ours)

        self.verify(phase)
        return phase

    def _catch_up(self, phase: Phase, goal: int) -> None:
        """Time native, then Replicator, until each one's slot has confirmed ``goal``.

        Besides the slot (the primary measure), every poll also reads the LSN each target
        says it applied (native: its replication origin, ours: its checkpoint). Once native
        is done, its last applied LSN is the source's last commit; the first time each
        target reached it is recorded as ``applied_seconds``: the apply work without the
        delay of telling the source.
        """
        assert self.ours is not None
        timelines: dict[str, list[tuple[float, int | None]]] = {}
        started_at: dict[str, float] = {}
        for consumer, measurement, label in (
            (self.native, phase.native, "native catch-up"),
            (self.ours, phase.ours, "ours catch-up"),
        ):
            if isinstance(consumer, NativeConsumer):
                start = consumer.resume
                delay = consumer.launcher_throttle()
                if delay > 0:
                    self.say(f"  waiting {delay:.1f}s (untimed) for the launcher's retry interval")
                    phase.info["native_enable_deferred_seconds"] = round(delay, 2)
                    time.sleep(delay)
            else:
                start = consumer.start
            timeline = timelines.setdefault(consumer.label, [])

            def wait(
                started: float,
                consumer: Consumer = consumer,
                timeline: list[tuple[float, int | None]] = timeline,
            ) -> float:
                started_at[consumer.label] = started
                with (
                    connect(self.source_dsn) as source,
                    connect(consumer.target_dsn) as target,
                ):

                    def confirmed() -> bool:
                        timeline.append((time.monotonic(), consumer.applied_lsn(target)))
                        return slot_state(source, consumer.slot).confirmed_flush >= goal

                    return wait_until(
                        confirmed,
                        self.args.timeout,
                        f"slot {consumer.slot} to confirm {format_lsn(goal)}",
                        interval=_CATCHUP_POLL,
                        on_poll=consumer.poll,
                    )

            self.measure(measurement, label, start, wait)

        applied = [lsn for _, lsn in timelines["native"] if lsn is not None]
        if not applied:
            return
        last_commit = max(applied)
        phase.info["last_commit_lsn"] = format_lsn(last_commit)
        for label, measurement in (("native", phase.native), ("ours", phase.ours)):
            reached = [t for t, lsn in timelines[label] if lsn is not None and lsn >= last_commit]
            if reached:
                measurement.detail["applied_seconds"] = round(reached[0] - started_at[label], 3)

    def phase_pgbench_catchup(self, previous: Phase) -> Phase:
        """(b) Both stopped during a timed pgbench run, then each catches up alone."""
        phase = self._phase("pgbench_catchup", f"b. catch-up after pgbench -T {self.args.duration}")
        self.say(f"phase {phase.title} (load average {loadavg()}): stopping both consumers")
        self.stop_consumers(previous)
        before = current_lsn(self.source_dsn)
        self.say(f"  pgbench -n -T {self.args.duration} -c {self.args.clients} -j {self.args.jobs}")
        result = run_pgbench(self.source_dsn, self.args.duration, self.args.clients, self.args.jobs)
        goal = current_lsn(self.source_dsn)
        # TPC-B-like: 3 updates + 1 insert per transaction; failed ones changed nothing.
        phase.rows = 4 * result.transactions
        phase.rows_meaning = "row changes (4 per pgbench transaction)"
        phase.info.update(
            pgbench_transactions=result.transactions,
            pgbench_failed=result.failed,
            pgbench_tps=result.tps,
            wal_bytes=goal - before,
            goal_lsn=format_lsn(goal),
        )
        self.say(
            f"  {result.transactions:,} transactions ({result.tps:.0f} tps), "
            f"{(goal - before) / 2**20:.0f} MB of WAL; catching up to {format_lsn(goal)}"
        )
        self._catch_up(phase, goal)
        self.verify(phase)
        return phase

    def phase_big_update_catchup(self, previous: Phase) -> Phase:
        """(c) Both stopped during one UPDATE of every pgbench_accounts row."""
        phase = self._phase("big_update_catchup", "c. catch-up after 1 UPDATE of all accounts")
        self.say(f"phase {phase.title} (load average {loadavg()}): stopping both consumers")
        self.stop_consumers(previous)
        before = current_lsn(self.source_dsn)
        started = time.monotonic()
        with connect(self.source_dsn) as conn:
            updated = conn.execute("UPDATE pgbench_accounts SET abalance = abalance + 1").rowcount
        update_seconds = time.monotonic() - started
        goal = current_lsn(self.source_dsn)
        phase.rows = updated
        phase.rows_meaning = "rows updated in one transaction"
        phase.info.update(
            update_seconds=round(update_seconds, 2),
            wal_bytes=goal - before,
            goal_lsn=format_lsn(goal),
        )
        self.say(
            f"  updated {updated:,} rows in {update_seconds:.1f}s, "
            f"{(goal - before) / 2**20:.0f} MB of WAL; catching up to {format_lsn(goal)}"
        )
        self._catch_up(phase, goal)
        self.verify(phase)
        return phase

    # -- verification ------------------------------------------------------------------------

    def verify(self, phase: Phase) -> None:
        """Both targets must hold exactly the source's rows (count + hash sum per table)."""
        phase.info["load_average_after"] = loadavg()
        self.say(f"  verifying both targets against the source after {phase.title}")
        expected = fingerprints(self.source_dsn)
        problems: list[str] = []
        for label, dsn in (("native", self.native_dsn), ("ours", self.ours_dsn)):
            try:
                actual = fingerprints(dsn)
            except psycopg.Error as exc:
                problems.append(f"{label}: cannot read the target: {exc}")
                continue
            for table in TABLES:
                if actual[table] != expected[table]:
                    problems.append(
                        f"{label}: {table} has {actual[table][0]} rows (hash {actual[table][1]}),"
                        f" source {expected[table][0]} rows (hash {expected[table][1]})"
                    )
        phase.verified = not problems
        if problems:
            raise BenchError(
                f"after {phase.title} the targets differ from the source:\n    "
                + "\n    ".join(problems)
            )


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
            (PgClusterError, psycopg.Error, subprocess.SubprocessError, OSError),
        )
    finally:
        bench.say("cleaning up (destroying the clusters)")
        bench.cleanup()
        results.finished_at = now()
    publish(render(results), results, args.output)
    if bench.log_path.exists():
        print(f"Replicator's log: {bench.log_path}")
    return exit_code(results, args.require_goals)
