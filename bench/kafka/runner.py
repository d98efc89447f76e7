"""Orchestration: servers, slots, the load, the catch-up and live phases, verification.

Layout: a source cluster (database ``bench``), a target cluster with a database per
consumer that writes PostgreSQL (``native``: a subscription; ``ours``: Replicator's syncer),
and one Kafka broker. Every consumer's slot is made before the load, so all of them read the
same WAL; they are timed one after the other, never at the same time, because they share the
machine's two cores: native, Debezium, Replicator's watcher alone, then Replicator's watcher
and syncer together (end to end).

Phases:

catch-up. ``--rows`` single-row INSERT transactions are written while every consumer is
    stopped; then each one in turn is started and timed until its target holds every row
    (native, end to end) or its topic every event (the watchers alone).
live. Rows arrive at ``--live-rate`` per second for ``--live-seconds`` while one consumer
    runs (Replicator's pair, then native), its lag sampled all along.

Every PostgreSQL target must then equal the source (count, hash of every row, top key) and
every topic must hold one event per row.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.fixtures.debezium.capture import connect_version

from bench.cpu import CpuMeter
from bench.db import BenchError, connect, format_lsn, query, slot_state, wait_until
from bench.harness import FOREIGN_CPU_WARNING, Harness, loadavg, machine, replicator_version
from bench.kafka import workload
from bench.kafka.consumers import (
    DEBEZIUM_TOPIC,
    OURS_TOPIC,
    SOLO,
    SOLO_SLOT,
    SOLO_TOPIC,
    SYNC,
    WATCH,
    WATCH_SLOT,
    DebeziumWatcher,
    NativeEvents,
    PipelineProcess,
    pipelines_config,
)
from bench.kafka.report import Phase, Results
from bench.kafka.servers import Servers
from bench.kafka.topics import Census, OffsetWatch, census, steady_rate
from bench.kafka.usage import ProcessTable, Role, cpu_by_role, process_table
from bench.model import Measurement

_POLL = 0.05  # seconds between completion checks
_TOPIC_SPACING = 0.1  # seconds between end-offset samples
_PROGRESS_SPACING = 0.25  # seconds between samples of a target's top key


class Benchmark(Harness):
    """One run: owns the servers, the consumers and the results."""

    def __init__(self, args: argparse.Namespace, results: Results) -> None:
        """Prepare an empty run; ``run`` does the work and ``cleanup`` always follows."""
        super().__init__(results.warnings)
        self.args = args
        self.results = results
        self.consumers: set[str] = set(args.consumers)
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-bench-kafka-"))
        self.logs = {
            name: args.output.with_suffix(f".{name}.log")
            for name in ("watcher", "syncer", "solo", "debezium")
        }
        self.servers: Servers | None = None
        self.native: NativeEvents | None = None
        self.debezium: DebeziumWatcher | None = None
        self.watcher: PipelineProcess | None = None
        self.syncer: PipelineProcess | None = None
        self.solo: PipelineProcess | None = None
        self.source_dsn = self.native_dsn = self.ours_dsn = ""
        self.goal_lsn = 0
        self.expected = workload.Fingerprint(0, "0", 0)

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def _servers(self) -> Servers:
        assert self.servers is not None, "setup() starts the servers"
        return self.servers

    @property
    def secrets(self) -> list[str]:
        """Every password of the run, replaced by ``[secure]`` in messages and copied logs."""
        return [] if self.servers is None else self.servers.secrets

    @property
    def bootstrap(self) -> str:
        """The broker's bootstrap servers."""
        return self._servers.broker.bootstrap_servers

    def cleanup(self) -> None:
        """Stop every consumer still running, destroy the servers, remove the work folder."""
        for process in (self.watcher, self.syncer, self.solo):
            if process is not None:
                with contextlib.suppress(Exception):
                    process.kill()
        if self.debezium is not None:
            with contextlib.suppress(Exception):
                self.debezium.kill()
            self._keep_debezium_log()
        if self.servers is not None:
            self.servers.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _keep_debezium_log(self) -> None:
        assert self.debezium is not None
        with contextlib.suppress(OSError):
            text = self.debezium.logfile.read_text(errors="replace")
            for secret in self.secrets:
                text = text.replace(secret, "[secure]")
            self.logs["debezium"].write_text(text)

    def before_timing(self, measurement: Measurement, label: str) -> None:
        """CHECKPOINT both clusters before each timed step."""
        self._servers.checkpoint()

    def _roles(self) -> dict[str, Role]:
        """The processes whose CPU is reported one by one."""
        servers = self._servers
        roles = {
            "source postgres": Role(servers.postmaster_pid(servers.source)),
            "target postgres": Role(servers.postmaster_pid(servers.target)),
        }
        broker = servers.broker_pid()
        if broker is not None:
            roles["kafka broker"] = Role(broker)
        for process in (self.watcher, self.solo, self.syncer):
            if process is not None and process.pid is not None:
                roles[f"replicator {process.label}"] = Role(process.pid)
        if self.debezium is not None and self.debezium.pid is not None:
            roles["kafka connect"] = Role(self.debezium.pid)
        roles["harness"] = Role(os.getpid(), tree=False)
        return roles

    def _timed(
        self,
        measurement: Measurement,
        label: str,
        start: Callable[[], None],
        wait: Callable[[float], float],
    ) -> None:
        """``Harness.measure``, plus the CPU seconds of each process while it ran."""
        before = process_table()
        self.measure(measurement, label, start, wait)
        measurement.detail["cpu_seconds_by_process"] = cpu_by_role(
            before, process_table(), self._roles()
        )

    def _phase(self, key: str, title: str) -> Phase:
        phase = Phase(key=key, title=title)
        phase.info["load_average_before"] = loadavg()
        self.results.phases.append(phase)
        return phase

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Start the servers, make the table, the topics and every consumer's slot."""
        args = self.args
        self.say("creating the source and target clusters and the Kafka broker")
        self.servers = servers = Servers.create(durable=args.fsync)
        self.cpu = CpuMeter(
            [servers.postmaster_pid(servers.source), servers.postmaster_pid(servers.target)]
        )
        self.source_dsn = servers.source.create_database("bench")
        workload.prepare_source(self.source_dsn)
        if "native" in self.consumers:
            self.native_dsn = servers.target.create_database("native")
            workload.prepare_target(self.native_dsn)
        if "ours" in self.consumers:
            self.ours_dsn = servers.target.create_database("ours")
            workload.prepare_target(self.ours_dsn)
        topics = [
            topic
            for consumer, topic in (
                ("ours", OURS_TOPIC),
                ("watcher", SOLO_TOPIC),
                ("debezium", DEBEZIUM_TOPIC),
            )
            if consumer in self.consumers
        ]
        for topic in topics:
            servers.broker.create_topic(topic, partitions=args.partitions)
        self.say(f"topics {', '.join(topics) or '(none)'}, {args.partitions} partition(s) each")

        if self.consumers & {"ours", "watcher"}:
            self._prepare_replicator()
        if "native" in self.consumers:
            self.say("native: publication, and the subscription created disabled (its slot)")
            self.native = NativeEvents(self.source_dsn, self.native_dsn)
            self.native.prepare()
            self.native.create()
        if "debezium" in self.consumers:
            self.say("debezium: publication, and one run of Kafka Connect to create its slot")
            self.debezium = DebeziumWatcher(
                self.workdir / "debezium", self.bootstrap, self.source_dsn
            )
            self.debezium.prepare()
            self.debezium.prime(args.timeout)
        self.results.environment = self._environment()

    def _prepare_replicator(self) -> None:
        """Write the config, check the pipelines, and run each watcher once for its slot."""
        args = self.args
        config = pipelines_config(
            self.source_dsn,
            self.ours_dsn or self._servers.target.dsn("postgres"),
            self.bootstrap,
            args.partitions,
            self.workdir / "state",
            {**args.batch, **args.watch_batch},
            {**args.batch, **args.sync_batch},
            solo="watcher" in self.consumers,
        )
        config_path = self.workdir / "replicator.yaml"
        for log in self.logs.values():
            log.parent.mkdir(parents=True, exist_ok=True)
            log.unlink(missing_ok=True)
        primed: list[tuple[PipelineProcess, str]] = []
        if "ours" in self.consumers:
            self.watcher = PipelineProcess(
                config, config_path, self.logs["watcher"], WATCH, "watcher"
            )
            self.syncer = PipelineProcess(config, config_path, self.logs["syncer"], SYNC, "syncer")
            primed.append((self.watcher, WATCH_SLOT))
        if "watcher" in self.consumers:
            self.solo = PipelineProcess(config, config_path, self.logs["solo"], SOLO, "watcher")
            primed.append((self.solo, SOLO_SLOT))
        processes = [p for p in (self.watcher, self.syncer, self.solo) if p is not None]
        for process in processes:
            self.say(f"replicator check -p {process.pipeline}")
            code, output = process.check_pipeline()
            if code != 0:
                raise BenchError(
                    f"`replicator check` rejected pipeline {process.pipeline} (exit {code}):\n"
                    + "\n".join(f"    {line}" for line in output.splitlines()[-25:])
                    + "\n    Fix: repair what it says, or leave Replicator out with"
                    " --consumers native,debezium"
                )
        for process, slot in primed:
            self.say(f"{process.pipeline}: one run on the empty table to create slot {slot}")
            process.start()
            self._wait_slot(
                slot, active=True, what=f"after {process.pipeline} started", poll=process.poll
            )
            self._stop_watcher(process, slot)

    def _stop_watcher(self, process: PipelineProcess, slot: str) -> None:
        """SIGTERM (exit 0), then wait until its slot is released."""
        process.stop(self.args.timeout)
        self._wait_slot(slot, active=False, what=f"after {process.pipeline} exited")

    def _wait_slot(
        self, slot: str, active: bool, what: str, poll: Callable[[], None] | None = None
    ) -> None:
        """Wait until the source's ``slot`` is in use (``active``) or released."""
        with connect(self.source_dsn) as conn:
            wait_until(
                lambda: slot_state(conn, slot).active == active,
                self.args.timeout,
                f"slot {slot} to become {'active' if active else 'inactive'} {what}",
                on_poll=poll,
            )

    def _environment(self) -> dict[str, Any]:
        args = self.args
        debezium = {}
        if self.debezium is not None:
            debezium = {
                "debezium": self.debezium.version,
                "kafka_connect": connect_version(),
                "debezium_connector": {
                    k: ("[secure]" if "password" in k else v)
                    for k, v in self.debezium.settings.items()
                },
            }
        return {
            **machine(),
            **self._servers.settings(),
            **debezium,
            "replicator": replicator_version(),
            "confluent_kafka": importlib.metadata.version("confluent-kafka"),
            "load_average_at_start": loadavg(),
            "layout": "source cluster `bench`; target cluster with databases `native` and"
            " `ours`; one Kafka broker",
            "replicator_config": {
                "schemas": False,
                "partitions": args.partitions,
                "watcher_batch": {**args.batch, **args.watch_batch} or "Replicator defaults",
                "syncer_batch": {**args.batch, **args.sync_batch} or "Replicator defaults",
                "logging": "info",
            },
        }

    # -- phases ------------------------------------------------------------------------------

    def run(self) -> None:
        """Set up, then run both phases; any failure ends the run."""
        self.setup()
        self.phase_catchup()
        if self.args.live_seconds > 0 and self.consumers & {"native", "ours"}:
            self.phase_live()
        self._stop_all()

    def _stop_all(self) -> None:
        if self.watcher is not None and self.watcher.pid is not None:
            self._stop_watcher(self.watcher, WATCH_SLOT)
        if self.syncer is not None and self.syncer.pid is not None:
            self.syncer.stop(self.args.timeout)

    def phase_catchup(self) -> None:
        """Load while everything is stopped, then time each consumer alone catching up."""
        args = self.args
        phase = self._phase("catchup", "catch-up")
        self.say(f"loading {args.rows:,} single-row INSERT transactions (every consumer stopped)")
        load = workload.load(self.source_dsn, args.rows)
        self._servers.checkpoint()  # also flushes the WAL of the asynchronous commits
        self.goal_lsn = load.end_lsn
        self.expected = workload.fingerprint(self.source_dsn)
        phase.rows = self.expected.rows
        phase.rows_meaning = "rows inserted, one transaction each (= change events)"
        phase.info.update(
            load_seconds=round(load.seconds, 2),
            load_rows_per_second=round(load.rate),
            transactions=load.transactions,
            wal_bytes=load.wal_bytes,
            goal_lsn=format_lsn(load.end_lsn),
            avg_row_bytes=workload.row_size(self.source_dsn),
        )
        self.say(
            f"  {load.rows:,} rows in {load.seconds:.1f}s ({load.rate:,.0f}/s),"
            f" {load.transactions:,} transactions, {load.wal_bytes / 2**20:.0f} MB of WAL"
        )
        if load.transactions != args.rows or self.expected.rows != args.rows:
            raise BenchError(
                f"the load wrote {self.expected.rows:,} rows in {load.transactions:,}"
                f" transactions; expected {args.rows:,} of each"
            )
        if self.native is not None:
            self._catchup_native(phase)
        if self.debezium is not None:
            self._catchup_debezium(phase)
        if self.solo is not None:
            self._catchup_solo(phase)
        if self.watcher is not None:
            self._catchup_ours(phase)
        phase.info["load_average_after"] = loadavg()

    def _catchup_native(self, phase: Phase) -> None:
        """ENABLE the subscription; done when the native target holds every row."""
        native = self.native
        assert native is not None
        measurement = phase.measurement("native")
        delay = native.launcher_throttle()
        if delay > 0:
            self.say(f"  waiting {delay:.1f}s (untimed) for the launcher's retry interval")
            time.sleep(delay)
        progress = self._until_complete(
            measurement,
            "native catch-up",
            native.resume,
            self.native_dsn,
            [],  # its apply worker confirms about once a second when idle: not telling
            native.poll,
        )
        native.stop(self.args.timeout)
        self._keep_memory(measurement, native.memory.vmhwm_kb, native.memory.rss_anon_kb)
        native.memory.reset()
        self._steady(measurement, progress.timeline, phase.rows)
        measurement.detail["subscription"] = native.options()
        self._verify(measurement, "native", self.native_dsn)

    def _catchup_ours(self, phase: Phase) -> None:
        """Start the watcher and the syncer together; done when ``ours`` holds every row."""
        watcher, syncer = self.watcher, self.syncer
        assert watcher is not None and syncer is not None
        measurement = phase.measurement("ours")
        watch = OffsetWatch(self.bootstrap, OURS_TOPIC, self.args.partitions)

        def start() -> None:
            watcher.start()
            syncer.start()

        def poll() -> None:
            watcher.poll()
            syncer.poll()

        try:
            progress = self._until_complete(
                measurement,
                "ours catch-up (watcher + syncer, end to end)",
                start,
                self.ours_dsn,
                [(WATCH_SLOT, "watcher_slot_confirmed_seconds")],
                poll,
                watch,
            )
        finally:
            watch.close()
        for process in (watcher, syncer):
            process.sample(force=True)
        measurement.detail["processes"] = self._processes({"watcher": watcher, "syncer": syncer})
        self._keep_memory(
            measurement,
            (watcher.memory.vmhwm_kb or 0) + (syncer.memory.vmhwm_kb or 0),
            (watcher.memory.rss_anon_kb or 0) + (syncer.memory.rss_anon_kb or 0),
        )
        self._steady(measurement, progress.timeline, phase.rows)
        self._verify(measurement, "ours", self.ours_dsn)
        # The watcher's share of it: when its topic held every event (syncer alongside).
        inside = phase.measurement("ours_watcher")
        inside.peak_memory_kb = watcher.memory.vmhwm_kb
        inside.peak_rss_anon_kb = watcher.memory.rss_anon_kb
        inside.detail["slot_confirmed_seconds"] = measurement.detail.get(
            "watcher_slot_confirmed_seconds"
        )
        self._watcher_result(inside, "ours watcher", OURS_TOPIC, watch, phase.rows)

    def _catchup_solo(self, phase: Phase) -> None:
        """Replicator's watcher alone; done when its slot confirmed the load's end."""
        solo = self.solo
        assert solo is not None
        measurement = phase.measurement("watcher")
        watch = self._watcher_alone(
            measurement,
            "watcher alone",
            SOLO_TOPIC,
            solo.start,
            solo.poll,
            lambda source, watch: slot_state(source, SOLO_SLOT).confirmed_flush >= self.goal_lsn,
        )
        solo.sample(force=True)
        measurement.detail["processes"] = self._processes({"watcher": solo})
        self._keep_memory(measurement, solo.memory.vmhwm_kb, solo.memory.rss_anon_kb)
        self._stop_watcher(solo, SOLO_SLOT)
        self._drop_slot(SOLO_SLOT)
        self._watcher_result(measurement, "watcher alone", SOLO_TOPIC, watch, phase.rows)

    def _catchup_debezium(self, phase: Phase) -> None:
        """Kafka Connect with Debezium alone; done when its topic holds every event."""
        debezium = self.debezium
        assert debezium is not None
        measurement = phase.measurement("debezium")
        rows = phase.rows
        watch = self._watcher_alone(
            measurement,
            "debezium",
            DEBEZIUM_TOPIC,
            debezium.start,
            debezium.poll,
            lambda source, watch: sum(watch.timeline[-1][1]) >= rows,
        )
        debezium.stop(self.args.timeout)
        self._keep_memory(measurement, debezium.memory.vmhwm_kb, debezium.memory.rss_anon_kb)
        measurement.detail["jvm_cpu_seconds"] = debezium.cpu_seconds
        self._drop_slot(debezium.slot)
        self._watcher_result(measurement, "debezium", DEBEZIUM_TOPIC, watch, rows)

    # -- timing helpers ----------------------------------------------------------------------

    def _until_complete(
        self,
        measurement: Measurement,
        label: str,
        start: Callable[[], None],
        target_dsn: str,
        slots: Sequence[tuple[str, str]],
        poll: Callable[[], None],
        watch: OffsetWatch | None = None,
    ) -> workload.TargetProgress:
        """Time a consumer from ``start`` until ``target_dsn`` holds every source row.

        Meanwhile notes when each of ``slots`` confirmed the load's end (detail key given
        with it), the target's top key over time and, with ``watch``, the topic's end offsets.
        """
        timeout = self.args.timeout
        marks: dict[str, float] = {}
        holder: list[workload.TargetProgress] = []

        def wait(started: float) -> float:
            with connect(self.source_dsn) as source, connect(target_dsn) as target:
                progress = workload.TargetProgress(target, self.expected.rows, self.expected.max_id)
                holder.append(progress)

                def done() -> bool:
                    elapsed = time.monotonic() - started
                    if watch is not None and elapsed - marks.get("topic", -1.0) >= _TOPIC_SPACING:
                        marks["topic"] = elapsed
                        watch.sample(elapsed)
                    progress.sample(elapsed, _PROGRESS_SPACING)
                    for slot, key in slots:
                        if key not in marks and (
                            slot_state(source, slot).confirmed_flush >= self.goal_lsn
                        ):
                            marks[key] = elapsed
                    return progress.complete()

                try:
                    finished = wait_until(
                        done,
                        timeout,
                        "the target to hold every source row",
                        interval=_POLL,
                        on_poll=poll,
                    )
                except BenchError as exc:
                    raise BenchError(
                        f"{exc} (target's top key {progress.top_key():,},"
                        f" source's {self.expected.max_id:,})"
                    ) from None
                if watch is not None:
                    watch.sample(finished - started)
                progress.timeline.append((round(finished - started, 3), self.expected.max_id))
            return finished

        self._timed(measurement, label, start, wait)
        for _, key in slots:
            measurement.detail[key] = round(marks[key], 3) if key in marks else None
        return holder[0]

    def _watcher_alone(
        self,
        measurement: Measurement,
        label: str,
        topic: str,
        start: Callable[[], None],
        poll: Callable[[], None],
        finished: Callable[[Any, OffsetWatch], bool],
    ) -> OffsetWatch:
        """Time a watcher from ``start`` until ``finished`` (its topic's offsets noted all
        along); ``_watcher_result`` then tells from the topic when it really was done."""
        watch = OffsetWatch(self.bootstrap, topic, self.args.partitions)
        marks: dict[str, float] = {}

        def timed_start() -> None:
            start()
            marks["running_at"] = time.monotonic()

        def wait(started: float) -> float:
            measurement.detail["start_returned_seconds"] = round(marks["running_at"] - started, 3)
            with connect(self.source_dsn) as source:

                def done() -> bool:
                    watch.sample(time.monotonic() - started)
                    return finished(source, watch)

                end = wait_until(
                    done,
                    self.args.timeout,
                    f"{label} to write every event to {topic}",
                    interval=_TOPIC_SPACING,
                    on_poll=poll,
                )
            watch.sample(end - started)
            return end

        try:
            self._timed(measurement, f"{label} catch-up (PG -> Kafka)", timed_start, wait)
        finally:
            watch.close()
        measurement.detail["offsets_timeline"] = watch.totals()
        return watch

    def _watcher_result(
        self,
        measurement: Measurement,
        label: str,
        topic: str,
        watch: OffsetWatch,
        rows: int,
    ) -> None:
        """Read the topic once (untimed): every row must be one event on it; the watcher's
        time is the first sample at which each partition held its last event."""
        self.say(f"  reading {topic} to count its events (not timed)")
        counted = census(self.bootstrap, topic, self.args.partitions, self.args.timeout)
        measurement.detail["topic"] = counted.to_json()
        done = watch.reached(counted.event_ends)
        timed = measurement.seconds
        if done is not None:
            measurement.detail["stopped_polling_seconds"] = timed
            measurement.seconds = done
        self._steady_topic(measurement, watch, counted)
        measurement.detail["verified"] = self._check_topic(label, counted, rows)
        if not measurement.detail["verified"]:
            raise BenchError(
                f"{label}: topic {topic} holds {counted.events:,} events with"
                f" {counted.distinct_keys:,} distinct keys for {rows:,} rows"
            )

    def _check_topic(self, label: str, counted: Census, rows: int) -> bool:
        """Every row is on the topic; extra copies (at-least-once) are a warning."""
        if counted.distinct_keys < rows or counted.events < rows:
            return False
        if counted.events > rows:
            self.warn(f"{label}: {counted.events - rows:,} events on {counted.topic} are copies")
        return True

    def _steady(
        self, measurement: Measurement, timeline: list[tuple[float, int]], rows: int
    ) -> None:
        base = timeline[0][1] if timeline else 0
        progress = [(t, top - base) for t, top in timeline]
        rate = steady_rate(progress, rows)
        measurement.detail["steady_events_per_second"] = None if rate is None else round(rate)
        measurement.detail["first_event_seconds"] = next((t for t, n in progress if n > 0), None)
        measurement.detail["progress_timeline"] = timeline

    def _steady_topic(self, measurement: Measurement, watch: OffsetWatch, counted: Census) -> None:
        """Events/s between 10 % and 90 % of the topic, by its end offsets (which count a
        transactional producer's commit markers too: scaled by events per offset)."""
        offsets = sum(counted.event_ends)
        totals = watch.totals()
        rate = steady_rate(totals, offsets)
        if rate is not None and offsets:
            rate *= counted.events / offsets
        measurement.detail["steady_events_per_second"] = None if rate is None else round(rate)
        first = next((elapsed for elapsed, total in totals if total > 0), None)
        measurement.detail["first_event_seconds"] = first
        seconds = measurement.seconds
        if first is not None and seconds is not None and seconds > first:
            measurement.detail["events_per_second_after_first_event"] = round(
                counted.events / (seconds - first)
            )

    def _keep_memory(self, measurement: Measurement, vmhwm: int | None, anon: int | None) -> None:
        measurement.peak_memory_kb = vmhwm or None
        measurement.peak_rss_anon_kb = anon or None

    def _processes(
        self, processes: dict[str, PipelineProcess], cpu_before: dict[str, float] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Each Replicator process's peak memory and CPU seconds (since ``cpu_before``)."""
        out = {}
        for name, process in processes.items():
            used = process.cpu_seconds
            if used is not None and cpu_before is not None:
                used -= cpu_before.get(name, 0.0)
            out[name] = {
                "pid": process.process.pid if process.process is not None else None,
                "peak_rss_kb": process.memory.vmhwm_kb,
                "peak_rss_anon_kb": process.memory.rss_anon_kb,
                "cpu_seconds": None if used is None else round(used, 2),
            }
        return out

    def _drop_slot(self, slot: str) -> None:
        """Drop a slot whose consumer is done, so it stops retaining WAL."""
        query(self.source_dsn, "SELECT pg_drop_replication_slot(%s)", (slot,))

    # -- live --------------------------------------------------------------------------------

    def phase_live(self) -> None:
        """Rows at a steady rate while one consumer runs (Replicator's pair, then native)."""
        args = self.args
        rows = round(args.live_rate * args.live_seconds)
        phase = self._phase(
            "live", f"live: {args.live_rate:,.0f} rows/s for {args.live_seconds:g}s"
        )
        phase.rows = rows
        phase.rows_meaning = "rows inserted during the live load, one transaction each"
        phase.info["lag_interval_seconds"] = args.lag_interval
        if self.watcher is not None and self.syncer is not None:
            watcher, syncer = self.watcher, self.syncer
            measurement = phase.measurement("ours")
            for process in (watcher, syncer):
                process.sample(force=True)
                process.memory.reset()
            cpu_before = {
                "watcher": watcher.cpu_seconds or 0.0,
                "syncer": syncer.cpu_seconds or 0.0,
            }

            def poll() -> None:
                watcher.poll()
                syncer.poll()

            self._live(measurement, "ours live", self.ours_dsn, poll, rows)
            for process in (watcher, syncer):
                process.sample(force=True)
            measurement.detail["processes"] = self._processes(
                {"watcher": watcher, "syncer": syncer}, cpu_before
            )
            self._keep_memory(
                measurement,
                (watcher.memory.vmhwm_kb or 0) + (syncer.memory.vmhwm_kb or 0),
                (watcher.memory.rss_anon_kb or 0) + (syncer.memory.rss_anon_kb or 0),
            )
            self._verify(measurement, "ours", self.ours_dsn)
            self.say("  stopping Replicator's watcher and syncer")
            self._stop_all()
        if self.native is not None:
            native = self.native
            measurement = phase.measurement("native")
            delay = native.launcher_throttle()
            if delay > 0:
                time.sleep(delay)
            self.say("  native: catching up on the rows written meanwhile (not timed)")
            native.resume()
            source = workload.fingerprint(self.source_dsn)
            with connect(self.native_dsn) as conn:
                progress = workload.TargetProgress(conn, source.rows, source.max_id)
                wait_until(
                    progress.complete,
                    args.timeout,
                    "the native target to catch up before its live phase",
                    interval=_POLL,
                    on_poll=native.poll,
                )
            native.memory.reset()
            self._live(measurement, "native live", self.native_dsn, native.poll, rows)
            native.stop(args.timeout)
            self._keep_memory(measurement, native.memory.vmhwm_kb, native.memory.rss_anon_kb)
            self._verify(measurement, "native", self.native_dsn)
        phase.info["load_average_after"] = loadavg()

    def _live(
        self,
        measurement: Measurement,
        label: str,
        target_dsn: str,
        poll: Callable[[], None],
        rows: int,
    ) -> None:
        """Insert ``rows`` at the live rate, sampling the target's lag; then wait until the
        target holds every row (the drain)."""
        args = self.args
        self._servers.checkpoint()
        before = workload.fingerprint(self.source_dsn)
        self.say(f"  {label}: {rows:,} rows at {args.live_rate:,.0f}/s")
        cpu_start = self.cpu.sample()
        table_start: ProcessTable = process_table()
        loader = workload.LiveLoad(self.source_dsn, rows, args.live_rate)
        samples: list[float] = []
        timeline: list[tuple[float, float]] = []
        try:
            with connect(target_dsn) as conn:
                started = time.monotonic()
                loader.start()
                while loader.running:
                    tick = time.monotonic()
                    poll()
                    lag = workload.lag_seconds(conn, loader.started_at)
                    if lag is not None:
                        samples.append(lag)
                        timeline.append(
                            (round(time.monotonic() - started, 2), round(lag * 1000, 1))
                        )
                    time.sleep(max(0.0, args.lag_interval - (time.monotonic() - tick)))
                load_seconds = loader.join(args.timeout)
                load_end = time.monotonic()
                progress = workload.TargetProgress(
                    conn, before.rows + rows, before.max_id + rows, count_spacing=0.05
                )
                drained = wait_until(
                    progress.complete,
                    args.timeout,
                    f"{label}: the target to hold every row after the live load",
                    interval=0.02,
                    on_poll=poll,
                )
        except BenchError as exc:
            measurement.error = str(exc)
            raise BenchError(f"{label}: {exc}") from None
        usage = self.cpu.since(cpu_start)
        wall = drained - started
        summary = workload.lag_summary(samples)
        measurement.detail.update(
            rows=rows,
            load_seconds=round(load_seconds, 2),
            achieved_rows_per_second=round(rows / load_seconds) if load_seconds > 0 else None,
            lag=summary,
            drain_seconds=round(drained - load_end, 3),
            wall_seconds=round(wall, 2),
            cpu_seconds=round(usage.own_seconds, 2),
            foreign_cpu_seconds=round(usage.foreign_seconds, 2),
            cpu_seconds_by_process=cpu_by_role(table_start, process_table(), self._roles()),
            lag_timeline_ms=timeline,
        )
        self.say(
            f"  {label}: {rows / load_seconds:,.0f} rows/s written; lag p50 {summary['p50_ms']} ms,"
            f" p95 {summary['p95_ms']} ms, max {summary['max_ms']} ms; drained"
            f" {drained - load_end:.2f}s after the last row"
        )
        if rows / load_seconds < 0.95 * args.live_rate:
            self.warn(
                f"{label}: the load reached only {rows / load_seconds:,.0f} of the"
                f" {args.live_rate:,.0f} rows/s asked for (the machine is saturated)"
            )
        capacity = wall * (os.cpu_count() or 1)
        if usage.foreign_seconds > FOREIGN_CPU_WARNING * capacity:
            self.warn(
                f"{label}: other processes on this machine used {usage.foreign_seconds:.1f}"
                f" CPU-s during the {wall:.1f}s measured; this timing is skewed (busiest: "
                + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in usage.top_foreign)
                + ")"
            )

    # -- verification ------------------------------------------------------------------------

    def _verify(self, measurement: Measurement, label: str, target_dsn: str) -> None:
        """The target must hold exactly the source's rows (count, hash sum, top key)."""
        self.say(f"  verifying {label}'s target against the source")
        expected = workload.fingerprint(self.source_dsn)
        actual = workload.fingerprint(target_dsn)
        measurement.detail["verified"] = actual == expected
        if actual != expected:
            raise BenchError(
                f"{label}'s target differs from the source: {actual.rows:,} rows (hash"
                f" {actual.hash_sum}, top key {actual.max_id:,}), source {expected.rows:,} rows"
                f" (hash {expected.hash_sum}, top key {expected.max_id:,})"
            )
