"""The consumers under test: a native subscription, Replicator's watcher and syncer (two
``replicator run -p`` processes of one config), and Debezium's PostgreSQL connector in Kafka
Connect standalone.

Each has a replication slot on the source, made before the load so that it retains the
same WAL: the subscription is created disabled (which creates its slot), the watcher runs
once on the empty table with ``snapshot: never`` (it creates its slot and publication, then
stops), and Debezium runs once the same way with ``snapshot.mode = no_data``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from tests.fixtures.debezium.capture import (
    JSON_CONVERTER,
    CaptureError,
    ConnectWorker,
    debezium_version,
)
from tests.localserver import pids_with_arg

from bench.consumers import MemoryPeak, NativeConsumer, ReplicatorProcess, tree_memory_kb
from bench.db import BenchError, client_env, connect, query, slot_state, wait_until
from bench.kafka.usage import cpu_seconds
from bench.kafka.workload import TABLE

WATCH = "bench-watch"
"""The watcher pipeline: the source table to Kafka topics ``bench.<schema>.<table>``."""

SYNC = "bench-sync"
"""The syncer pipeline: those topics to the ``ours`` target database."""

TOPIC_PREFIX = "bench"
OURS_TOPIC = f"{TOPIC_PREFIX}.{TABLE}"
"""The topic the watcher writes (its sink's default ``{prefix}.{schema}.{table}``)."""

WATCH_SLOT = "replicator_bench_watch"
"""The watcher's slot, as Replicator names it after the pipeline."""

SOLO = "bench-watch-solo"
"""A second watcher of the same table, timed alone (as Debezium is) to its own topic."""

SOLO_PREFIX = "solo"
SOLO_TOPIC = f"{SOLO_PREFIX}.{TABLE}"
SOLO_SLOT = "replicator_bench_watch_solo"

DEBEZIUM_PREFIX = "dbz"
DEBEZIUM_TOPIC = f"{DEBEZIUM_PREFIX}.{TABLE}"
"""The topic Debezium writes (``topic.prefix`` + schema + table)."""

_STATE_CHECK_SPACING = 1.0  # seconds between Kafka Connect REST status checks


class NativeEvents(NativeConsumer):
    """A publication of ``public.events`` and a subscription to it, created disabled.

    ``bench.consumers.NativeConsumer`` with what differs here: the publication names this
    benchmark's table, and the subscription copies nothing (the table is empty) and starts
    disabled, so it only creates its slot until ``resume`` (ENABLE).
    """

    def prepare(self) -> None:
        """Create the publication of ``public.events`` on the source."""
        query(
            self.source_dsn,
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(self.publication), sql.Identifier(*TABLE.split("."))
            ),
        )

    def create(self) -> None:
        """CREATE SUBSCRIPTION, disabled and without copy: the slot exists from now on."""
        query(
            self.target_dsn,
            sql.SQL(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}"
                " WITH (copy_data = false, enabled = false)"
            ).format(
                sql.Identifier(self.subscription),
                sql.Literal(self.source_dsn),
                sql.Identifier(self.publication),
            ),
        )


class PipelineProcess(ReplicatorProcess):
    """``replicator run -c CONFIG -p NAME``: one pipeline of a shared config in its own process.

    Besides the memory peaks, every sample notes the process's CPU seconds so far
    (``cpu_seconds``, the last value read while it was alive).
    """

    def __init__(
        self,
        config: dict[str, Any],
        config_path: Path,
        log_path: Path,
        pipeline: str,
        label: str,
    ) -> None:
        """Write ``config`` to ``config_path``; ``start`` runs the pipeline ``pipeline``."""
        super().__init__(config, config_path, log_path, pipeline=pipeline)
        self.label = label
        self.cpu_seconds: float | None = None

    def start(self) -> None:
        """Start ``replicator run -p NAME``; its output is appended to the log file."""
        if self.process is not None and self.process.poll() is None:
            raise BenchError(f"{self.label} is already running")
        self.cpu_seconds = None
        with self.log_path.open("ab") as log:
            log.write(f"\n===== replicator run started at {time.ctime()} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self._command("run", "-c", str(self.config_path), "-p", self.pipeline),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=client_env(),
            )

    def sample(self, force: bool = False) -> None:
        """Sample peak memory and CPU seconds (spaced like the memory samples)."""
        due = force or self.memory.due()
        super().sample(force)
        pid = self.pid
        if due and pid is not None:
            used = cpu_seconds(pid)
            if used is not None:
                self.cpu_seconds = used

    def check_pipeline(self) -> tuple[int, str]:
        """``replicator check -c CONFIG -p NAME``: its exit code and output."""
        result = subprocess.run(
            self._command("check", "-c", str(self.config_path), "-p", self.pipeline),
            capture_output=True,
            text=True,
            timeout=300,
            env=client_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode, (result.stdout + result.stderr).strip()


def _watch_pipeline(
    name: str, prefix: str, source_dsn: str, bootstrap_servers: str, partitions: int, state: Path
) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "postgres", "dsn": source_dsn, "tables": [TABLE], "snapshot": "never"},
        "sink": {
            "type": "kafka",
            "bootstrap_servers": bootstrap_servers,
            "topic_prefix": prefix,
            "schemas": False,
            "partitions": partitions,
        },
        "checkpoint": {"type": "file", "dir": str(state)},
    }


def pipelines_config(
    source_dsn: str,
    target_dsn: str,
    bootstrap_servers: str,
    partitions: int,
    state_dir: Path,
    watch_batch: dict[str, int],
    sync_batch: dict[str, int],
    solo: bool,
) -> dict[str, Any]:
    """The config file every process runs: the watcher and the syncer pipeline, and with
    ``solo`` the watcher timed alone (same settings, its own slot, topic and state folder).

    JSON envelopes without the schema part (``schemas: false``), so the syncer applies to the
    table made beforehand in the target. ``*_batch``: Replicator's batch settings to
    override (none: its defaults).
    """
    watch = _watch_pipeline(
        WATCH, TOPIC_PREFIX, source_dsn, bootstrap_servers, partitions, state_dir / "watch"
    )
    sync: dict[str, Any] = {
        "name": SYNC,
        "source": {
            "type": "kafka",
            "bootstrap_servers": bootstrap_servers,
            "topics": f"^{TOPIC_PREFIX}\\..*",
            "group": SYNC,
        },
        "sink": {"type": "postgres", "dsn": target_dsn},
    }
    pipelines = [watch, sync]
    if solo:
        pipelines.append(
            _watch_pipeline(
                SOLO, SOLO_PREFIX, source_dsn, bootstrap_servers, partitions, state_dir / "solo"
            )
        )
    for pipeline in pipelines:
        batch = sync_batch if pipeline is sync else watch_batch
        if batch:
            pipeline["batch"] = dict(batch)
    return {"pipelines": pipelines, "logging": {"level": "info", "format": "console"}}


class DebeziumWatcher:
    """Debezium's PostgreSQL connector in a Kafka Connect standalone worker (one JVM).

    The worker is ``tests.fixtures.debezium.capture.ConnectWorker`` (the jars come from
    Maven Central, as for the fixtures). Everything is Debezium's default apart from what
    this setup needs: pgoutput, its own slot and publication (made here), the one table,
    ``snapshot.mode = no_data`` (stream only) and JSON without schemas, as for Replicator.
    """

    label = "debezium"
    slot = "bench_debezium"
    publication = "bench_debezium"
    topic = DEBEZIUM_TOPIC

    def __init__(
        self,
        folder: Path,
        bootstrap_servers: str,
        source_dsn: str,
    ) -> None:
        """Describe the worker; ``prepare`` makes the publication, ``start`` runs it."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.source_dsn = source_dsn
        source = conninfo_to_dict(source_dsn)
        self.settings = {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "database.hostname": str(source["host"]),
            "database.port": str(source["port"]),
            "database.user": str(source["user"]),
            "database.password": str(source["password"]),
            "database.dbname": str(source["dbname"]),
            "topic.prefix": DEBEZIUM_PREFIX,
            "plugin.name": "pgoutput",
            "slot.name": self.slot,
            "publication.name": self.publication,
            "publication.autocreate.mode": "disabled",
            "table.include.list": TABLE,
            "snapshot.mode": "no_data",
            "key.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": "false",
            "value.converter": JSON_CONVERTER,
            "value.converter.schemas.enable": "false",
        }
        self.worker = ConnectWorker(folder, bootstrap_servers, {"bench-debezium": self.settings})
        self.memory = MemoryPeak()
        self.cpu_seconds: float | None = None
        self.pid: int | None = None
        self._last_state_check = 0.0

    @property
    def version(self) -> str:
        """The Debezium version the jars are."""
        return debezium_version()

    @property
    def logfile(self) -> Path:
        """What the worker logged."""
        return self.worker.logfile

    def prepare(self) -> None:
        """Create Debezium's publication of the table on the source."""
        query(
            self.source_dsn,
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(self.publication), sql.Identifier(*TABLE.split("."))
            ),
        )

    def start(self) -> None:
        """Start the JVM; returns once the connector and its task are RUNNING."""
        self.cpu_seconds = None
        try:
            self.worker.start()
        except CaptureError as exc:
            raise BenchError(f"Kafka Connect with Debezium did not start: {exc}") from None
        pids = pids_with_arg(str(self.folder / "worker.properties"))
        self.pid = pids[0] if pids else None

    def prime(self, timeout: float) -> None:
        """Run once on the empty table so that the connector creates its slot, then stop."""
        self.start()
        with connect(self.source_dsn) as conn:
            wait_until(
                lambda: slot_state(conn, self.slot).active,
                timeout,
                f"Debezium's slot {self.slot} to become active",
                on_poll=self.poll,
            )
        self.stop(timeout)

    def poll(self) -> None:
        """Called on every poll of a wait: the connector must be running; samples memory."""
        if time.monotonic() - self._last_state_check >= _STATE_CHECK_SPACING:
            self._last_state_check = time.monotonic()
            try:
                self.worker.states()
            except CaptureError as exc:
                raise BenchError(f"Debezium: {exc}") from None
        self.sample()

    def sample(self, force: bool = False) -> None:
        """Sample the JVM's peak memory and CPU seconds."""
        if self.pid is None or (not force and not self.memory.due()):
            return
        self.memory.add(*tree_memory_kb(self.pid))
        used = cpu_seconds(self.pid)
        if used is not None:
            self.cpu_seconds = used

    def stop(self, timeout: float) -> None:
        """Stop the worker (SIGTERM, SIGKILL after 30 s) and wait until the slot is free."""
        self.sample(force=True)
        self.worker.stop()
        self.pid = None
        with connect(self.source_dsn) as conn:
            wait_until(
                lambda: not slot_state(conn, self.slot).active,
                timeout,
                f"Debezium's slot {self.slot} to become inactive after the worker stopped",
            )

    def kill(self) -> None:
        """Stop the worker if it still runs (cleanup after a failure)."""
        self.worker.stop()
