"""Orchestration: servers, the sysbench load, the two timed phases, verification, results.

Layout: one MariaDB source (database ``sbtest``) and one PostgreSQL cluster with a database
per consumer, ``chameleon`` (pg_chameleon) and ``ours`` (Replicator), so both write to the
same server with the same settings. The consumers are timed one after the other, never at
the same time, because they share the machine's CPUs: pg_chameleon first, then Replicator.

Phases:

a. initial copy of the freshly prepared sysbench tables;
b. catch-up after a timed sysbench run during which both consumers were stopped.

After each phase both targets must equal the source (row count and fingerprint per table).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.cpu import CpuMeter
from bench.db import BenchError, Row, connect, wait_until
from bench.harness import Harness, loadavg, machine, replicator_version
from bench.model import Measurement
from bench.mysql import sysbench
from bench.mysql.binlog import BinlogPosition, master_position, scan
from bench.mysql.chameleon import ChameleonConsumer, Endpoint
from bench.mysql.chameleon_venv import (
    PG_CHAMELEON_VERSION,
    PINS,
    RunAs,
    ensure_chameleon_venv,
)
from bench.mysql.fingerprint import (
    counts_reached,
    differences,
    source_columns,
    source_row_counts,
    target_row_counts,
)
from bench.mysql.ours import OursConsumer
from bench.mysql.report import INITIAL_COPY_GOAL, STREAMING_GOAL, Phase, Results
from bench.mysql.servers import Servers

DATABASE = "sbtest"
"""The sysbench database in MariaDB; both consumers write it to a PostgreSQL schema of this
name (pg_chameleon by its schema_mappings, Replicator by default)."""

_INITIAL_POLL = 0.2  # seconds between completion checks of an initial copy
_CATCHUP_POLL = 0.05  # seconds between checks of a consumer's progress

# What each consumer's MariaDB account may do. pg_chameleon locks each table with FLUSH
# TABLES … WITH READ LOCK while it notes the binlog position (RELOAD, LOCK TABLES);
# Replicator's `check` says what it needs: SELECT on the tables and the two replication ones.
_CHAMELEON_GRANTS = (
    f"SELECT, LOCK TABLES ON `{DATABASE}`.*",
    "RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.*",
)
_OURS_GRANTS = (f"SELECT ON `{DATABASE}`.*", "REPLICATION SLAVE, REPLICATION CLIENT ON *.*")


class Benchmark(Harness):
    """One run: owns the servers, the consumers and the results."""

    def __init__(self, args: argparse.Namespace, results: Results) -> None:
        """Prepare an empty run; ``run`` does the work and ``cleanup`` always follows."""
        super().__init__(results.warnings)
        self.args = args
        self.results = results
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-bench-mysql-"))
        self.chameleon_log = args.output.with_suffix(".chameleon.log")
        self.ours_log = args.output.with_suffix(".replicator.log")
        self.tables = [f"sbtest{n}" for n in range(1, args.tables + 1)]
        self.servers: Servers | None = None
        self.chameleon: ChameleonConsumer | None = None
        self.ours: OursConsumer | None = None
        self.chameleon_home: Path | None = None  # pg_chameleon's private HOME

    @property
    def measure_chameleon(self) -> bool:
        """Whether pg_chameleon is measured in this run."""
        return self.args.consumers in ("both", "chameleon")

    @property
    def measure_ours(self) -> bool:
        """Whether Replicator is measured in this run."""
        return self.args.consumers in ("both", "ours")

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def secrets(self) -> list[str]:
        """Every password of the run, to be replaced by ``[secure]`` in messages."""
        return [] if self.servers is None else self.servers.secrets

    def cleanup(self) -> None:
        """Kill consumers still running, destroy the servers, remove the work folders."""
        for consumer in (self.chameleon, self.ours):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.kill()
        if self.servers is not None:
            self.servers.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.chameleon_home is not None:
            shutil.rmtree(self.chameleon_home, ignore_errors=True)

    @property
    def _servers(self) -> Servers:
        assert self.servers is not None, "setup() starts the servers"
        return self.servers

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Start the servers, prepare sysbench, create both consumers."""
        chameleon_script: Path | None = None
        run_as = RunAs.for_chameleon()
        if self.measure_chameleon:
            chameleon_script = ensure_chameleon_venv(self.args.chameleon_venv, run_as, self.say)

        self.say("creating the MariaDB source and the PostgreSQL target")
        self.servers = servers = Servers.create(durable=self.args.fsync)
        self.cpu = CpuMeter([servers.postmaster_pid()])
        source = servers.source
        source.create_database(DATABASE)
        sbtest_password = servers.account("sbtest", [f"ALL PRIVILEGES ON `{DATABASE}`.*"])
        self.workload = sysbench.SysbenchTarget(
            host=source.host,
            port=source.port,
            user="sbtest",
            password=sbtest_password,
            database=DATABASE,
            tables=self.args.tables,
            table_size=self.args.table_size,
        )
        self.say(
            f"sysbench {sysbench.WORKLOAD} prepare: {self.args.tables} tables x"
            f" {self.args.table_size:,} rows"
        )
        prepare_seconds = sysbench.prepare(self.workload, self.args.threads)
        with servers.mysql() as conn:
            self.results.source_rows = source_row_counts(conn, DATABASE, self.tables)
            self.columns = {t: source_columns(conn, DATABASE, t) for t in self.tables}
        self.say(f"prepared in {prepare_seconds:.1f}s: {sum(self.results.source_rows.values()):,}")

        if self.measure_ours:
            servers.target.create_database("ours")
            password = servers.account("replicator", list(_OURS_GRANTS))
            self.ours = OursConsumer(
                source.dsn("replicator", password),
                servers.target_dsn("ours"),
                DATABASE,
                self.workdir,
                self.ours_log,
            )
            self.ours_log.parent.mkdir(parents=True, exist_ok=True)
            self.ours_log.unlink(missing_ok=True)
            self.say("replicator check (the MySQL pipeline must be accepted before timing)")
            self.ours.preflight()
        if chameleon_script is not None:
            servers.target.create_database("chameleon")
            password = servers.account("chameleon", list(_CHAMELEON_GRANTS))
            pg = conninfo_to_dict(servers.target_dsn("chameleon"))
            self.chameleon_home = Path(tempfile.mkdtemp(prefix="replicator-bench-chameleon-"))
            self.chameleon_log.parent.mkdir(parents=True, exist_ok=True)
            self.chameleon_log.unlink(missing_ok=True)
            self.chameleon = ChameleonConsumer(
                chameleon_script,
                run_as,
                self.chameleon_home,
                Endpoint(source.host, source.port, "chameleon", password),
                Endpoint(
                    str(pg["host"]),
                    int(str(pg["port"])),
                    str(pg["user"]),
                    str(pg["password"]),
                    str(pg["dbname"]),
                ),
                DATABASE,
                self.chameleon_log,
                self.secrets,
            )
            self.say("chameleon create_replica_schema, add_source (setup, not timed)")
            self.chameleon.run("create_replica_schema", with_source=False)
            self.chameleon.run("add_source")
            self._require_status("ready", "add_source")
        self.results.environment = self._environment(prepare_seconds)

    def _environment(self, prepare_seconds: float) -> dict[str, Any]:
        """Machine, versions and server settings, for the results file."""
        return {
            **machine(),
            **self._servers.settings(),
            "sysbench": sysbench.version(),
            "sysbench_workload": sysbench.WORKLOAD,
            "sysbench_prepare_seconds": round(prepare_seconds, 2),
            "pg_chameleon": PG_CHAMELEON_VERSION,
            "pg_chameleon_pins": list(PINS),
            "replicator": replicator_version(),
            "load_average_at_start": loadavg(),
            "layout": "MariaDB source `sbtest`; one PostgreSQL cluster with databases"
            " `chameleon` and `ours`, schema `sbtest` in each",
            "chameleon_config": "pg_chameleon's example values (replica_batch_size 10000,"
            " replay_max_rows 10000, copy_max_memory 300M, copy_mode file, sleep_loop 1),"
            " log_dest stdout (foreground), on_error_read/replay exit",
            "replicator_config": "batch: Replicator defaults; logging: info",
        }

    # -- phases ------------------------------------------------------------------------------

    def run(self) -> None:
        """Set up, then run both phases in order; any failure ends the run."""
        self.setup()
        initial = self.phase_initial_copy()
        catchup = self.phase_catchup(previous=initial)
        self.say("stopping the consumers")
        self.stop_consumers(catchup)

    def _phase(self, key: str, title: str, goal: float) -> Phase:
        phase = Phase(key=key, title=title, goal=goal)
        phase.info["load_average_before"] = loadavg()
        for consumer, measurement in (("chameleon", phase.chameleon), ("ours", phase.ours)):
            if not getattr(self, f"measure_{consumer}"):
                measurement.skipped = f"--consumers {self.args.consumers}"
        self.results.phases.append(phase)
        return phase

    def stop_consumers(self, previous: Phase) -> None:
        """Stop whatever still runs; memory peaks so far belong to ``previous``."""
        if self.chameleon is not None and self.chameleon.pid is not None:
            self.chameleon.stop(self.args.timeout)
            self._require_stopped()
        if self.ours is not None and self.ours.pid is not None:
            self.ours.stop(self.args.timeout)
        self.keep_memory(previous)

    def keep_memory(self, phase: Phase) -> None:
        """Credit the memory peaks sampled so far to ``phase`` and start afresh."""
        for consumer, measurement in ((self.chameleon, phase.chameleon), (self.ours, phase.ours)):
            if consumer is not None and consumer.memory.vmhwm_kb is not None:
                measurement.peak_memory_kb = consumer.memory.vmhwm_kb
                measurement.peak_rss_anon_kb = consumer.memory.rss_anon_kb
                consumer.memory.reset()

    def _require_stopped(self) -> None:
        """pg_chameleon's source must say ``stopped`` after its process exited on SIGINT."""
        self._require_status("stopped", "SIGINT")

    def _require_status(self, expected: str, after: str) -> None:
        """pg_chameleon's source must be in status ``expected`` after step ``after``."""
        assert self.chameleon is not None
        with connect(self._servers.target_dsn("chameleon")) as conn:
            status = self.chameleon.source_status(conn)
        if status != expected:
            raise BenchError(
                f"after {after} pg_chameleon's source is {status!r}, not {expected!r}; last"
                f" lines of {self.chameleon_log}:\n{self.chameleon.log_tail()}"
            )

    def before_timing(self, measurement: Measurement, label: str) -> None:
        """Flush both servers' dirty pages before each timed step."""
        flush_seconds, dirty = self._servers.flush()
        measurement.detail["servers_flushed_before_seconds"] = round(flush_seconds, 2)
        if dirty:
            self.warn(f"{label}: MariaDB still had {dirty} dirty pages after 60 s of flushing")

    def phase_initial_copy(self) -> Phase:
        """(a) Copy the prepared sysbench tables: ``init_replica`` vs Replicator's snapshot."""
        phase = self._phase("initial_copy", "a. initial copy", INITIAL_COPY_GOAL)
        expected = self.results.source_rows
        phase.rows = sum(expected.values())
        phase.rows_meaning = "rows copied"
        self.say(f"phase {phase.title}: {phase.rows:,} rows (load average {loadavg()})")
        timeout = self.args.timeout

        if self.chameleon is not None:
            chameleon = self.chameleon

            def wait_chameleon(started: float) -> float:
                with connect(self._servers.target_dsn("chameleon"), lock_timeout_ms=100) as conn:
                    return wait_until(
                        lambda: (
                            chameleon.init_done(conn) and counts_reached(conn, DATABASE, expected)
                        ),
                        timeout,
                        "chameleon init_replica to exit with the source 'initialised' and the"
                        " source's row counts",
                        interval=_INITIAL_POLL,
                        on_poll=chameleon.poll,
                    )

            self.measure(
                phase.chameleon, "chameleon initial copy", chameleon.start_init, wait_chameleon
            )

        if self.ours is not None:
            ours = self.ours

            def wait_ours(started: float) -> float:
                with connect(self._servers.target_dsn("ours"), lock_timeout_ms=100) as conn:
                    try:
                        finished = wait_until(
                            lambda: (
                                counts_reached(conn, DATABASE, expected) and ours.snapshot_done()
                            ),
                            timeout,
                            "the target's row counts to equal the source's and "
                            "`replicator status` to report the snapshot done",
                            interval=_INITIAL_POLL,
                            on_poll=ours.poll,
                        )
                    except BenchError as exc:
                        counts = target_row_counts(conn, DATABASE, self.tables)
                        raise BenchError(
                            f"{exc}\n    target rows now: {counts}\n    source rows: {expected}"
                            f"\n    last status: {ours.last_status}"
                        ) from None
                phase.ours.detail["status"] = ours.last_status
                return finished

            self.measure(phase.ours, "ours initial copy", ours.start, wait_ours)

        phase.info["target_column_types"] = self._column_types()
        self.verify(phase)
        return phase

    def _column_types(self) -> dict[str, dict[str, str]]:
        """How each consumer typed the first table's columns in PostgreSQL (for the record)."""
        types: dict[str, dict[str, str]] = {}
        for label in ("chameleon", "ours"):
            if getattr(self, label) is None:
                continue
            with connect(self._servers.target_dsn(label)) as conn:
                rows = conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                    " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
                    " ORDER BY attnum",
                    (f'"{DATABASE}"."{self.tables[0]}"',),
                ).fetchall()
            types[label] = {str(name): str(kind) for name, kind in rows}
        return types

    def phase_catchup(self, previous: Phase) -> Phase:
        """(b) Both stopped during a timed sysbench run, then each catches up alone."""
        args = self.args
        phase = self._phase(
            "sysbench_catchup", f"b. catch-up after sysbench {args.duration}s", STREAMING_GOAL
        )
        self.say(f"phase {phase.title} (load average {loadavg()}): stopping the consumers")
        self.stop_consumers(previous)
        with self._servers.mysql() as conn:
            before = master_position(conn)
        self.say(f"  sysbench {sysbench.WORKLOAD} run: {args.duration}s, {args.threads} threads")
        result = sysbench.run(self.workload, args.duration, args.threads)
        with self._servers.mysql() as conn:
            goal = master_position(conn)
            scanned = scan(conn, before, goal)
        if scanned.last_row_event_end is None:
            raise BenchError(f"sysbench wrote no row events between {before} and {goal}")
        phase.rows = result.writes
        phase.rows_meaning = (
            f"row changes ({sysbench.CHANGES_PER_TRANSACTION} per {sysbench.WORKLOAD}"
            " transaction, one row per statement)"
        )
        phase.info.update(
            sysbench_transactions=result.transactions,
            sysbench_writes=result.writes,
            sysbench_ignored_errors=result.ignored_errors,
            sysbench_tps=result.tps,
            binlog_row_events=scanned.row_events,
            binlog_events=scanned.events,
            binlog_start=str(before),
            goal=str(goal),
            goal_last_rows_event_end=str(scanned.last_row_event_end),
        )
        if scanned.row_events != result.writes:
            self.warn(
                f"{phase.title}: sysbench reports {result.writes:,} writes but the binlog holds"
                f" {scanned.row_events:,} row events"
            )
        self.say(
            f"  {result.transactions:,} transactions ({result.tps:.0f} tps), {result.writes:,}"
            f" row changes, binlog {before} -> {goal}"
        )
        if self.chameleon is not None:
            self._catch_up_chameleon(phase, scanned.last_row_event_end)
        if self.ours is not None:
            self._catch_up_ours(phase, goal)
        self.verify(phase)
        return phase

    def _catch_up_chameleon(self, phase: Phase, last_rows_event: BinlogPosition) -> None:
        """Time ``start_replica`` until every change up to ``last_rows_event`` is replayed.

        pg_chameleon records a position as the end of the last rows event it read, not the
        end of the transaction, so its goal is the end of the last rows event before the
        source's position (the sysbench transactions end with a 31-byte XID event after it).
        """
        chameleon = self.chameleon
        assert chameleon is not None
        marks: dict[str, float] = {}

        def wait(started: float) -> float:
            def applied(conn: psycopg.Connection[Row]) -> bool:
                progress = chameleon.progress(conn)
                if progress.status == "error":
                    raise BenchError(
                        f"pg_chameleon's source went to 'error'; last lines of"
                        f" {self.chameleon_log}:\n{chameleon.log_tail()}"
                    )
                if "read" not in marks and progress.read(last_rows_event):
                    marks["read"] = time.monotonic() - started
                marks["replayed_rows"] = progress.replayed_rows
                return progress.applied(last_rows_event)

            return self._wait_for_target(
                "chameleon",
                applied,
                f"pg_chameleon to read and replay the binlog up to {last_rows_event}",
                chameleon.poll,
            )

        self.measure(phase.chameleon, "chameleon catch-up", chameleon.start_replica, wait)
        if "read" in marks:
            phase.chameleon.detail["read_done_seconds"] = round(marks["read"], 3)
        phase.chameleon.detail["replayed_rows_in_catalogue"] = int(marks.get("replayed_rows", 0))
        # Stopped before Replicator is timed, so the idle reader costs it nothing.
        self.say("  stopping chameleon (not timed)")
        chameleon.stop(self.args.timeout)
        self._require_stopped()

    def _catch_up_ours(self, phase: Phase, goal: BinlogPosition) -> None:
        """Time ``replicator run`` until its checkpoint is at or after ``goal``."""
        ours = self.ours
        assert ours is not None

        def wait(started: float) -> float:
            def applied(conn: psycopg.Connection[Row]) -> bool:
                position = ours.checkpoint(conn)
                return position is not None and position.reached(goal)

            return self._wait_for_target(
                "ours", applied, f"Replicator's checkpoint to reach {goal}", ours.poll
            )

        self.measure(phase.ours, "ours catch-up", ours.start, wait)

    def _wait_for_target(
        self,
        label: str,
        applied: Callable[[psycopg.Connection[Row]], bool],
        what: str,
        on_poll: Callable[[], None],
    ) -> float:
        """Poll ``applied`` on a connection to consumer ``label``'s target until it holds."""
        with connect(self._servers.target_dsn(label)) as conn:
            return wait_until(
                lambda: applied(conn),
                self.args.timeout,
                what,
                interval=_CATCHUP_POLL,
                on_poll=on_poll,
            )

    # -- verification ------------------------------------------------------------------------

    def verify(self, phase: Phase) -> None:
        """Each target must hold exactly the source's rows (count + fingerprint per table)."""
        phase.info["load_average_after"] = loadavg()
        self.say(f"  verifying the targets against the source after {phase.title}")
        targets = {
            label: self._servers.target_dsn(label)
            for label in ("chameleon", "ours")
            if getattr(self, label) is not None
        }
        with self._servers.mysql() as conn:
            problems = differences(conn, targets, DATABASE, self.columns)
        phase.verified = not problems
        if problems:
            raise BenchError(
                f"after {phase.title} the targets differ from the source:\n    "
                + "\n    ".join(problems)
            )
