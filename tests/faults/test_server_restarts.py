"""The engine, run through its CLI, rides out database servers restarting and crashing under
load: the source, the target in the middle of a commit, a MariaDB source, and a target down
long enough for its circuit to open. Each ends with the target equal to the source row by
row, and proof that the engine itself retried (it never exited)."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from tests import mysql_workload
from tests.apiclient import Instance, free_port, metric
from tests.mariadb import MariaDbFactory, MariaDbServer, MysqlDatabase
from tests.mysql_compare import assert_same_tables
from tests.mysql_helpers import mysql_pipeline_dict
from tests.mysql_helpers import wait_caught_up as mysql_wait_caught_up
from tests.pgcluster import ClusterFactory, PgCluster
from tests.support import (
    assert_same_rows,
    connect,
    pipeline_dict,
    replicator_cmd,
    wait_caught_up,
    wait_for,
    write_config,
)
from tests.workload import TABLES, Workload

# Short delays, so a test waits little between attempts.
FAST_RETRY = {"initial_delay_s": 0.2, "max_delay_s": 1.0}
RETRYING = "transient failure: restarting from the checkpoint"
RECOVERED = "recovered"
STREAMING = "streaming"
JSON_LOGS = {"format": "json"}
PATTERNS = ["public.*", "sales.*"]  # every table of tests.workload


def workload_seed() -> int:
    """A random seed, or REPLICATOR_TEST_SEED's; printed, so a failure can be replayed."""
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed={seed}")
    return seed


class Engine:
    """A running ``replicator run`` (configured with ``logging.format: json``) writing to
    ``log``, which must keep running until the test stops it; as a context manager, killed
    on exit whatever happened."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def tail(self, chars: int = 4000) -> str:
        """The end of the engine's output."""
        return self.log.read_text(errors="replace")[-chars:]

    def entries(self, event: str | None = None) -> list[dict[str, Any]]:
        """The engine's log entries so far (those of one ``event`` when given)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                found.append(entry)
        return found

    def assert_running(self) -> None:
        """Fail the test if the engine exited: a transient fault must never end it."""
        code = self.process.poll()
        assert code is None, f"the engine exited with {code}:\n{self.tail()}"

    def wait_logged(self, event: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until ``event`` was logged ``count`` times (the engine still running)."""

        def logged() -> bool:
            self.assert_running()
            return len(self.entries(event)) >= count

        wait_for(logged, timeout, f"{count} log entries {event!r}")
        return self.entries(event)

    def stop(self) -> None:
        """SIGTERM, which must end the engine cleanly after all the faults (exit code 0)."""
        self.assert_running()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.tail()
        assert "Traceback" not in self.log.read_text(errors="replace"), self.tail()


def fired_text(log: Path) -> str:
    """What the failpoints wrote to their ``REPLICATOR_FAILPOINTS_LOG`` so far."""
    return log.read_text() if log.exists() else ""


def spawn_engine(config: Path, log: Path, env: dict[str, str] | None = None) -> Engine:
    """Start ``replicator run -c config`` in the background, with ``env`` added to ours."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            replicator_cmd("run", "-c", str(config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return Engine(process, log)


@pytest.fixture(scope="module")
def faulty_source(pg_cluster_factory: ClusterFactory) -> PgCluster:
    """A source server of this module's own, which tests restart and kill."""
    return pg_cluster_factory("faulty_source")


@pytest.fixture(scope="module")
def faulty_target(pg_cluster_factory: ClusterFactory) -> PgCluster:
    """A target server of this module's own, which tests restart, kill and stop."""
    return pg_cluster_factory("faulty_target")


def _database_on(cluster: PgCluster) -> Iterator[str]:
    cluster.start()  # a previous test may have left it stopped
    name = f"f_{secrets.token_hex(6)}"
    yield cluster.create_database(name)
    cluster.start()
    cluster.drop_database(name)


@pytest.fixture
def faulty_source_dsn(faulty_source: PgCluster) -> Iterator[str]:
    """A fresh database on the faulty source server."""
    yield from _database_on(faulty_source)


@pytest.fixture
def faulty_target_dsn(faulty_target: PgCluster) -> Iterator[str]:
    """A fresh database on the faulty target server."""
    yield from _database_on(faulty_target)


W = TypeVar("W", bound=Workload)


def warmed_up(workload: W) -> W:
    """``workload`` with its schema created and 100 of its transactions run."""
    Workload.create_schema(workload.dsn)
    with connect(workload.dsn) as conn:
        for _ in range(100):
            workload.run_transaction(conn)
    return workload


def prepared_workload(dsn: str) -> Workload:
    """The workload's schema with some rows in it, and a workload ready to start."""
    return warmed_up(Workload(dsn, workload_seed()))


class ReconnectingWorkload(Workload):
    """The workload, carrying on whenever its server goes away (a restart, a crash): whether
    the transaction in flight committed is the server's to say."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(dsn, seed)
        self.interrupted = 0

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = psycopg.connect(self.dsn, connect_timeout=5)
                    self.run_transaction(conn)
                except psycopg.OperationalError:
                    self.interrupted += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(0.2)
                    continue
                time.sleep(self.rnd.random() * 0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            if conn is not None:
                conn.close()


@pytest.mark.slow
def test_source_restarted_fast_and_immediately_and_crashed_is_ridden_out(
    faulty_source: PgCluster, faulty_source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    """The source restarted with pg_ctl -m fast, then -m immediate, then SIGKILLed and
    started again, each time in the middle of a running workload: the engine restarts the
    pipeline from its checkpoint by itself each time, and the target ends exact."""
    source_dsn = faulty_source_dsn
    workload = warmed_up(ReconnectingWorkload(source_dsn, workload_seed()))
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict("restarts", source_dsn, target_dsn, PATTERNS, retry=FAST_RETRY),
        logging=JSON_LOGS,
    )
    with spawn_engine(config, tmp_path / "replicator.log") as engine:
        engine.wait_logged(STREAMING)
        workload.start()
        try:
            for runs, fault in enumerate(["fast", "immediate", "kill"], start=1):
                # Each fault lands while the pipeline streams, under load.
                engine.wait_logged(STREAMING, runs)
                time.sleep(1.5)
                if fault == "kill":
                    faulty_source.kill()
                    faulty_source.start()
                else:
                    faulty_source.restart(mode=fault)
            engine.wait_logged(STREAMING, 4)
            time.sleep(1)
        finally:
            workload.stop()
        wait_caught_up(source_dsn, target_dsn, "restarts")
        engine.stop()
    assert workload.interrupted >= 3
    assert len(engine.entries(RETRYING)) >= 3
    assert len(engine.entries(RECOVERED)) >= 3
    assert_same_rows(source_dsn, target_dsn, *TABLES)


def tables_written_uncommitted(target: PgCluster, dbname: str, pipeline: str) -> list[str]:
    """The tables the pipeline's target session has written to in a transaction that is
    still open (and idle: waiting for the engine)."""
    rows = target.execute(
        "SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_stat_activity a"
        " JOIN pg_locks l ON l.pid = a.pid AND l.mode = 'RowExclusiveLock'"
        " JOIN pg_class c ON c.oid = l.relation AND c.relkind IN ('r', 'p')"
        " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname IN ('public', 'sales')"
        " WHERE a.datname = %s AND a.application_name = %s"
        " AND a.state = 'idle in transaction'",
        dbname,
        params=[dbname, f"replicator:{pipeline}"],
    )
    return sorted(row[0] for row in rows)


@pytest.mark.parametrize("fault", ["restart", "kill"])
def test_target_lost_between_writing_and_commit_replays_without_duplicates(
    faulty_target: PgCluster,
    source_dsn: str,
    faulty_target_dsn: str,
    tmp_path: Path,
    fault: str,
) -> None:
    """The target restarted (pg_ctl -m fast), or crashed and started, while the engine
    holds a batch written with its checkpoint but not committed (failpoint
    sink.before_commit sleeping): the batch is rolled back, the engine retries from the
    checkpoint, and the target ends exact, without a duplicate in the keyless table."""
    target_dsn = faulty_target_dsn
    dbname = target_dsn.rsplit("/", 1)[1]
    workload = prepared_workload(source_dsn)
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict("midcommit", source_dsn, target_dsn, PATTERNS, retry=FAST_RETRY),
        logging=JSON_LOGS,
    )
    fired = tmp_path / "failpoints.log"
    env = {
        # The 20th commit: the snapshot is done, and the workload streams.
        "REPLICATOR_FAILPOINTS": "sink.before_commit=sleep:3@20",
        "REPLICATOR_FAILPOINTS_LOG": str(fired),
    }
    with spawn_engine(config, tmp_path / "replicator.log", env) as engine:
        engine.wait_logged(STREAMING)
        workload.start()
        try:
            wait_for(lambda: fired_text(fired).endswith("\n"), 60, "the failpoint to fire")
            assert fired_text(fired) == "sink.before_commit sleep 20\n"
            # The fault lands inside a transaction that wrote rows, before COMMIT is sent.
            assert tables_written_uncommitted(faulty_target, dbname, "midcommit")
            if fault == "restart":
                faulty_target.restart(mode="fast")
            else:
                faulty_target.kill()
                faulty_target.start()
            retries = engine.wait_logged(RETRYING)
            assert "committing" in retries[0]["error"], retries
            engine.wait_logged(STREAMING, 2)
            time.sleep(1)
        finally:
            workload.stop()
        wait_caught_up(source_dsn, target_dsn, "midcommit")
        engine.stop()
    assert engine.entries(RECOVERED)
    assert_same_rows(source_dsn, target_dsn, *TABLES)


@pytest.mark.slow
def test_a_target_down_for_a_while_opens_its_circuit_and_both_pipelines_recover(
    source_dsn: str, faulty_target: PgCluster, faulty_target_dsn: str, tmp_path: Path
) -> None:
    """Two pipelines write to one target, which is stopped under load: after
    retry.breaker_failures failures its circuit opens (replicator_target_circuit_open 1),
    the pipelines show "retrying" and wait while probes fail instead of reconnecting on
    their own; once the target is back a probe succeeds, the circuit closes, both pipelines
    recover and the target ends exact."""
    target_dsn = faulty_target_dsn
    workload = prepared_workload(source_dsn)
    port = free_port()
    config = write_config(
        tmp_path / "replicator.yaml",
        pipeline_dict("first", source_dsn, target_dsn, ["public.*"], retry=FAST_RETRY),
        pipeline_dict("second", source_dsn, target_dsn, ["sales.*"], retry=FAST_RETRY),
        api={"listen": f"127.0.0.1:{port}"},
        logging=JSON_LOGS,
    )
    target = f"postgres://127.0.0.1:{faulty_target.port}/{target_dsn.rsplit('/', 1)[1]}"
    instance = Instance(config, port, tmp_path / "replicator.log")
    engine = Engine(instance.process, instance.log)

    def sample(name: str, **labels: str) -> float:
        engine.assert_running()
        found = metric(instance.get("/metrics").body.decode(), name, target=target, **labels)
        return found or 0.0

    with engine:
        for name in ("first", "second"):
            instance.wait_state(name, "streaming")
        workload.start()
        try:
            time.sleep(1)
            faulty_target.stop(mode="fast")
            wait_for(
                lambda: sample("replicator_target_probes_total", result="failed") >= 3,
                30,
                "probes of the stopped target to fail",
            )
            assert sample("replicator_target_circuit_open") == 1
            for name in ("first", "second"):
                view = instance.pipeline(name)
                assert view["state"] == "retrying", view
                assert view["retry"]["attempt"] >= 1 and view["retry"]["error"], view
            # Only the failures that opened the circuit: then the pipelines waited for it.
            outage_failures = len(engine.entries(RETRYING))
            assert 3 <= outage_failures <= 4, engine.entries(RETRYING)
            faulty_target.start()
            wait_for(
                lambda: (
                    {e.get("pipeline") for e in engine.entries(RECOVERED)} >= {"first", "second"}
                ),
                60,
                "both pipelines to recover",
            )
            time.sleep(1)
        finally:
            workload.stop()
        for name in ("first", "second"):
            wait_caught_up(source_dsn, target_dsn, name)
            assert instance.pipeline(name)["state"] == "streaming"
        assert sample("replicator_target_circuit_open") == 0
        assert sample("replicator_target_probes_total", result="ok") >= 1
        engine.stop()
    assert_same_rows(source_dsn, target_dsn, *TABLES)


@pytest.fixture(scope="module")
def faulty_mariadb(mariadb_factory: MariaDbFactory) -> MariaDbServer:
    """A MariaDB server of this module's own, which a test kills."""
    return mariadb_factory("cli_faults")


@pytest.fixture
def faulty_mysql_database(faulty_mariadb: MariaDbServer) -> Iterator[MysqlDatabase]:
    """A fresh database on the faulty MariaDB server, with a DSN for a user allowed
    everything."""
    faulty_mariadb.start()
    password = secrets.token_urlsafe(12)
    faulty_mariadb.create_user("repl", password)
    name = f"f_{secrets.token_hex(6)}"
    faulty_mariadb.create_database(name)
    yield MysqlDatabase(name, faulty_mariadb, faulty_mariadb.dsn("repl", password, name))
    faulty_mariadb.start()
    faulty_mariadb.drop_database(name)
    faulty_mariadb.drop_database(name + "_x")


def test_a_mariadb_source_killed_and_started_again_is_ridden_out_by_the_cli(
    faulty_mysql_database: MysqlDatabase, target_dsn: str, tmp_path: Path
) -> None:
    """mariadbd SIGKILLed mid-stream and started again 3 s later, under the MySQL workload,
    with the engine run as a user runs it: it rides through without exiting and the target
    ends exact."""
    db = faulty_mysql_database
    mysql_workload.Workload.create_schema(db.dsn)
    workload = mysql_workload.Workload(db.dsn, workload_seed(), big_every=60)
    tables = mysql_workload.table_names(db.dsn)
    config = write_config(
        tmp_path / "replicator.yaml",
        {
            **mysql_pipeline_dict(
                "mariadb", db.dsn, target_dsn, mysql_workload.table_patterns(db.dsn)
            ),
            "retry": FAST_RETRY,
        },
        logging=JSON_LOGS,
    )
    with spawn_engine(config, tmp_path / "replicator.log") as engine:
        engine.wait_logged(STREAMING)
        workload.start()
        try:
            time.sleep(2)
            db.server.kill()
            time.sleep(3)
            db.server.start()
            time.sleep(3)
        finally:
            workload.stop()
        mysql_wait_caught_up(db.server, target_dsn, "mariadb")
        engine.stop()
    assert workload.interrupted > 0 and workload.transactions > 50
    faults = engine.entries("lost the binlog connection; reconnecting") + engine.entries(RETRYING)
    assert faults, "the engine never saw the server go"
    assert_same_tables(db.dsn, target_dsn, tables)
