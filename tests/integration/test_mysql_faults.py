"""A MariaDB pipeline through source faults: a crashed server, rotated and purged binlogs,
connections cut or killed in the middle of a transaction."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.mariadb import MariaDbFactory, MariaDbServer, MysqlDatabase
from tests.mysql_compare import assert_same_tables
from tests.mysql_helpers import (
    binlog_order,
    checkpoint_order,
    mysql_pipeline_config,
    mysql_pipeline_dict,
    wait_caught_up,
)
from tests.mysql_workload import Workload, table_names, table_patterns
from tests.support import (
    RunningPipeline,
    in_process,
    reap,
    run_cli,
    snapshot_done,
    spawn_run,
    wait_for,
    write_config,
)
from tests.tcpproxy import TcpProxy

POSITIONS = ["gtid", "file"]
RECONNECTING = "lost the binlog connection; reconnecting"


@pytest.fixture(scope="module")
def faulty_server(mariadb_factory: MariaDbFactory) -> MariaDbServer:
    """A server of this module's own, which tests kill, restart and purge."""
    return mariadb_factory("faults")


@pytest.fixture
def faulty_database(
    faulty_server: MariaDbServer, request: pytest.FixtureRequest
) -> Iterator[MysqlDatabase]:
    """A fresh database on the faulty server with a DSN for a user allowed everything."""
    faulty_server.start()  # a previous test may have left it stopped
    password = secrets.token_urlsafe(12)
    faulty_server.create_user("repl", password)
    stem = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    name = f"f_{stem}_{secrets.token_hex(4)}"
    faulty_server.create_database(name)
    yield MysqlDatabase(name, faulty_server, faulty_server.dsn("repl", password, name))
    faulty_server.start()
    faulty_server.drop_database(name)
    faulty_server.drop_database(name + "_x")


def prepared_workload(dsn: str, seed: int, warmup: int = 100) -> Workload:
    """The workload's schema with some rows, and a workload ready to start."""
    Workload.create_schema(dsn)
    workload = Workload(dsn, seed, big_every=60)
    workload.populate_bulk(5000, 1000)
    conn = workload.connect()
    try:
        for _ in range(warmup):
            workload.run_transaction(conn)
    finally:
        conn.close()
    return workload


def wait_snapshot(pipeline: RunningPipeline, target_dsn: str, tables: int) -> None:
    """Wait until the initial copy is done, or raise the pipeline's error."""
    name = pipeline.config.name
    wait_for(
        lambda: pipeline.error is not None or snapshot_done(target_dsn, name, tables),
        60,
        "the snapshot",
    )
    if pipeline.error is not None:
        raise pipeline.error


def purge_binlogs_before(server: MariaDbServer, file: str) -> None:
    """PURGE BINARY LOGS TO ``file`` until it took: the server keeps a file that a dump
    thread still reads or crash recovery may still need, with only a warning."""

    def purged() -> bool:
        server.execute(f"PURGE BINARY LOGS TO '{file}'")
        return server.binlog_files()[0] == file

    wait_for(purged, 30, f"the binlogs before {file} to be purged")


def reconnects(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reader's reconnect warnings among captured log entries."""
    return [entry for entry in logs if entry.get("event") == RECONNECTING]


@pytest.mark.parametrize("position", POSITIONS)
def test_a_killed_and_restarted_server_is_ridden_out(
    faulty_database: MysqlDatabase, target_dsn: str, position: str
):
    """mariadbd killed with SIGKILL mid-stream and started again: the pipeline reconnects by
    itself and the target converges exactly to the source."""
    db = faulty_database
    workload = prepared_workload(db.dsn, seed=11)
    tables = table_names(db.dsn)
    # Table discovery every second, so that it runs during the outage too, as it does with
    # the default interval (10 s) whenever the server is down for longer than that.
    config = mysql_pipeline_config(
        "crashsrc", db.dsn, target_dsn, table_patterns(db.dsn), position, discover_interval_s=1
    )
    with capture_logs() as logs, in_process(config) as pipeline:
        wait_snapshot(pipeline, target_dsn, len(tables))
        workload.start()
        try:
            time.sleep(3)
            db.server.kill()
            time.sleep(3)
            db.server.start()
            time.sleep(4)
        finally:
            workload.stop()
        assert pipeline.error is None, pipeline.error
        wait_caught_up(db.server, target_dsn, "crashsrc")
    assert workload.interrupted > 0 and workload.transactions > 50
    assert reconnects(logs), "the reader never saw the connection go"
    assert_same_tables(db.dsn, target_dsn, tables)


def test_a_source_outage_spanning_a_table_discovery_is_ridden_out(
    faulty_database: MysqlDatabase, target_dsn: str
):
    """The server down for 3 s while the pipeline streams and looks for new tables every
    second: the pipeline waits for it (up to source.reconnect_timeout_s) instead of failing,
    and the rows written after the restart arrive."""
    db = faulty_database
    db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    config = mysql_pipeline_config(
        "outage", db.dsn, target_dsn, [f"{db.name}.*"], discover_interval_s=1
    )
    with in_process(config) as pipeline:
        wait_snapshot(pipeline, target_dsn, 1)
        db.execute("INSERT INTO t VALUES (1)")
        wait_caught_up(db.server, target_dsn, "outage")
        db.server.kill()
        time.sleep(3)
        db.server.start()
        db.execute("INSERT INTO t VALUES (2)")
        wait_for(
            lambda: (
                pipeline.error is not None
                or checkpoint_order(target_dsn, "outage")
                >= binlog_order(*db.server.master_status())
            ),
            30,
            "the pipeline to catch up after the restart",
        )
        assert pipeline.error is None, f"the pipeline failed during the outage: {pipeline.error}"
    assert_same_tables(db.dsn, target_dsn, [f"{db.name}.t"])


@pytest.mark.parametrize("position", POSITIONS)
def test_binlog_rotation_while_streaming_is_exact(
    mysql_database: MysqlDatabase, target_dsn: str, position: str
):
    """FLUSH BINARY LOGS five times while the workload runs: every change arrives once, and
    the checkpoint follows into the newest binlog file."""
    db = mysql_database
    workload = prepared_workload(db.dsn, seed=12)
    tables = table_names(db.dsn)
    config = mysql_pipeline_config("rotate", db.dsn, target_dsn, table_patterns(db.dsn), position)
    try:
        with in_process(config) as pipeline:
            wait_snapshot(pipeline, target_dsn, len(tables))
            first = db.server.master_status()[0]
            workload.start()
            try:
                for _ in range(5):
                    time.sleep(1)
                    db.server.flush_binary_logs()
                time.sleep(1)
            finally:
                workload.stop()
            goal = wait_caught_up(db.server, target_dsn, "rotate")
        assert goal[0] >= int(first.rsplit(".", 1)[1]) + 5
        assert_same_tables(db.dsn, target_dsn, tables)
    finally:
        Workload.drop_other_database(db.dsn)


@pytest.mark.parametrize("cut_at", [20_000, 300_000], ids=["early", "after-hand-over"])
@pytest.mark.parametrize("position", POSITIONS)
def test_a_cut_inside_a_transaction_resumes_without_gaps_or_repeats(
    mysql_database: MysqlDatabase, target_dsn: str, position: str, cut_at: int
):
    """The binlog connection cut a few KB (or, after part of it was handed to the engine,
    300 KB) into a transaction of thousands of rows in many ROWS events: the reader
    reconnects at the transaction's start, skips the events it already took, and a keyless
    target table ends with every row exactly once."""
    db = mysql_database
    db.execute("CREATE TABLE log (n INT, label VARCHAR(20), pad VARCHAR(200))")  # no key
    db.execute("CREATE TABLE tally (id INT PRIMARY KEY, v INT NOT NULL)")
    with TcpProxy("127.0.0.1", db.server.port) as proxy:
        dsn = db.dsn.replace(f":{db.server.port}/", f":{proxy.port}/")
        config = mysql_pipeline_config("cut", dsn, target_dsn, [f"{db.name}.*"], position)
        with capture_logs() as logs, in_process(config) as pipeline:
            wait_snapshot(pipeline, target_dsn, 2)
            db.execute("INSERT INTO tally VALUES (1, 0)")  # the tables' TABLE_MAPs are known
            db.execute("INSERT INTO log VALUES (0, 'warm-up', '')")
            wait_caught_up(db.server, target_dsn, "cut")
            # An insert, then an update of every row: one transaction each, ~600 KB of rows.
            for statement in (
                "INSERT INTO log SELECT seq, CONCAT('row-', seq), REPEAT('x', 100)"
                " FROM seq_1_to_5000",
                "UPDATE log SET pad = REPEAT('y', 90), n = n + 1",
            ):
                cuts = proxy.cuts
                proxy.cut_after(cut_at)
                db.execute(f"BEGIN; {statement}; UPDATE tally SET v = v + 1 WHERE id = 1; COMMIT")
                wait_for(lambda cuts=cuts: proxy.cuts > cuts, 30, "the cut")
                wait_caught_up(db.server, target_dsn, "cut", timeout=60)
            assert pipeline.error is None, pipeline.error
    assert_same_tables(db.dsn, target_dsn, [f"{db.name}.log", f"{db.name}.tally"])
    warnings = reconnects(logs)
    assert len(warnings) >= 2, warnings
    skipped = [w["events_to_skip"] for w in warnings[:2]]
    assert min(skipped) > 0, warnings
    if cut_at > 100_000:
        # Beyond the reader's hand-over size (512 events): part of the transaction had
        # already gone to the engine when the connection broke.
        assert min(skipped) > 512, skipped


@pytest.mark.parametrize("position", POSITIONS)
def test_a_killed_dump_connection_is_reconnected(
    mysql_database: MysqlDatabase, target_dsn: str, position: str
):
    """KILL of the pipeline's connections (the binlog dump among them), three times under the
    workload: the reader reconnects each time and the target is exact."""
    db = mysql_database
    user = f"pipe_{position}"
    password = secrets.token_urlsafe(12)
    db.server.create_user(user, password)
    workload = prepared_workload(db.dsn, seed=14)
    tables = table_names(db.dsn)
    dsn = db.server.dsn(user, password, db.name)
    config = mysql_pipeline_config("killed", dsn, target_dsn, table_patterns(db.dsn), position)
    try:
        with capture_logs() as logs, in_process(config) as pipeline:
            wait_snapshot(pipeline, target_dsn, len(tables))
            workload.start()
            try:
                killed = 0
                for _ in range(3):
                    time.sleep(1.5)
                    killed += db.server.kill_connections(user)
                time.sleep(1)
            finally:
                workload.stop()
            wait_caught_up(db.server, target_dsn, "killed")
            assert pipeline.error is None, pipeline.error
        assert killed >= 3
        assert len(reconnects(logs)) >= 3, reconnects(logs)
        assert_same_tables(db.dsn, target_dsn, tables)
    finally:
        Workload.drop_other_database(db.dsn)
        db.server.execute("DROP USER IF EXISTS %s@'%%'", [user])


@pytest.mark.parametrize("position", POSITIONS)
def test_purged_binlogs_past_the_checkpoint_stop_the_start_loudly(
    faulty_database: MysqlDatabase, target_dsn: str, tmp_path, position: str
):
    """Binlogs the stopped pipeline still needed are purged: the next start fails with exit
    code 1 and an error naming the purge and the fix, without a traceback."""
    db = faulty_database
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO t VALUES (1, 1)")
    config = write_config(
        tmp_path / "c.yaml",
        mysql_pipeline_dict("purged", db.dsn, target_dsn, [f"{db.name}.*"], position),
    )
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    try:
        wait_for(lambda: snapshot_done(target_dsn, "purged", 1), 60, "the snapshot")
        db.execute("INSERT INTO t VALUES (2, 2)")
        wait_caught_up(db.server, target_dsn, "purged")
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0, log.read_text()[-3000:]
    finally:
        reap(engine)
    stopped_at = checkpoint_order(target_dsn, "purged")
    # While it is stopped: changes it has not read, then their binlog goes.
    db.execute("INSERT INTO t VALUES (3, 3)")
    db.server.flush_binary_logs()
    purge_binlogs_before(db.server, db.server.master_status()[0])
    assert stopped_at[0] < int(db.server.binlog_files()[0].rsplit(".", 1)[1])
    result = run_cli("run", "-c", str(config), timeout=90)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "purged" in output, output
    assert "fix" in output.lower() and "replicator drop" in output, output
