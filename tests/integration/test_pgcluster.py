"""The test-suite's own PostgreSQL clusters behave as the other tests rely on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.pgcluster import ClusterFactory, PgCluster, PgClusterError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_cluster(pg_cluster_factory: ClusterFactory) -> PgCluster:
    """A cluster this module may restart, kill and reconfigure."""
    return pg_cluster_factory("lifecycle")


def _dbname(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


def _user_tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return [row[0] for row in rows]


def _slots(cluster: PgCluster) -> list[tuple[str, str, bool]]:
    return [
        (row[0], row[1], row[2])
        for row in cluster.execute(
            "SELECT slot_name, database, active FROM pg_replication_slots ORDER BY slot_name"
        )
    ]


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_session_clusters_are_separate_servers_with_logical_wal(
    source_cluster: PgCluster, target_cluster: PgCluster
) -> None:
    """The source and target clusters are two running servers with wal_level=logical."""
    assert source_cluster.port != target_cluster.port
    assert source_cluster.datadir != target_cluster.datadir
    for cluster in (source_cluster, target_cluster):
        assert cluster.execute("SHOW wal_level") == [("logical",)]
        assert cluster.execute("SHOW listen_addresses") == [("127.0.0.1",)]
        assert cluster.execute("SHOW server_version_num")[0][0].startswith(str(cluster.version))


def test_test_databases_start_empty_and_are_isolated(
    source_cluster: PgCluster, source_dsn: str, target_dsn: str
) -> None:
    """Each test database starts empty, and a table made in one is absent from the others."""
    assert _user_tables(source_dsn) == []
    assert _user_tables(target_dsn) == []
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (id int PRIMARY KEY)")
    sibling_dsn = source_cluster.create_database("sibling_of_" + _dbname(source_dsn)[:40])
    try:
        assert _user_tables(source_dsn) == ["only_here"]
        assert _user_tables(sibling_dsn) == []
        assert _user_tables(target_dsn) == []
    finally:
        source_cluster.drop_database(_dbname(sibling_dsn))


def test_dropping_a_database_drops_its_inactive_slot(
    source_cluster: PgCluster, source_dsn: str
) -> None:
    """Dropping a test database also drops the logical slots created in it."""
    dbname = _dbname(source_dsn)
    source_cluster.execute(
        "SELECT pg_create_logical_replication_slot('idle_slot', 'pgoutput')", dbname
    )
    assert ("idle_slot", dbname, False) in _slots(source_cluster)

    source_cluster.drop_database(dbname)

    assert [slot for slot in _slots(source_cluster) if slot[1] == dbname] == []
    assert (
        source_cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=[dbname])
        == []
    )


def test_dropping_a_database_drops_a_slot_a_client_is_streaming_from(
    source_cluster: PgCluster, source_dsn: str
) -> None:
    """A slot held active by a streaming pg_recvlogical is dropped along with its database."""
    dbname = _dbname(source_dsn)
    source_cluster.execute("CREATE PUBLICATION everything FOR ALL TABLES", dbname)
    source_cluster.execute(
        "SELECT pg_create_logical_replication_slot('busy_slot', 'pgoutput')", dbname
    )
    receiver = subprocess.Popen(
        [
            str(source_cluster.bindir / "pg_recvlogical"),
            f"--dbname={source_dsn}",
            "--slot=busy_slot",
            "--start",
            "--no-loop",  # exit when the server ends the stream instead of reconnecting
            "--file=-",
            "--option=proto_version=1",
            "--option=publication_names=everything",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(
            lambda: ("busy_slot", dbname, True) in _slots(source_cluster),
            "pg_recvlogical to hold the slot",
        )

        source_cluster.drop_database(dbname)

        assert [slot for slot in _slots(source_cluster) if slot[1] == dbname] == []
        _, stderr = receiver.communicate(timeout=15)
        assert receiver.returncode != 0, stderr
    finally:
        if receiver.poll() is None:
            receiver.kill()
        receiver.communicate()


def test_restart_keeps_committed_data(own_cluster: PgCluster) -> None:
    """Data committed before a fast restart is there afterwards, on the same port."""
    port = own_cluster.port
    own_cluster.execute(
        "CREATE TABLE kept_on_restart (id int); INSERT INTO kept_on_restart VALUES (1)"
    )

    own_cluster.restart()

    assert own_cluster.port == port
    assert own_cluster.execute("SELECT id FROM kept_on_restart") == [(1,)]


def test_kill_breaks_connections_and_start_recovers_committed_data(own_cluster: PgCluster) -> None:
    """After a SIGKILL crash, open connections are broken and start() recovers committed data."""
    own_cluster.execute("CREATE TABLE kept_on_crash (id int); INSERT INTO kept_on_crash VALUES (7)")
    with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
        own_cluster.kill()

        assert not own_cluster.is_running
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")

    own_cluster.start()

    assert own_cluster.execute("SELECT id FROM kept_on_crash") == [(7,)]
    assert "database system was interrupted" in own_cluster.logfile.read_text()


def test_wrong_or_missing_password_is_rejected(source_cluster: PgCluster) -> None:
    """TCP logins need the SCRAM password: a wrong or missing one is refused."""
    (stored,) = source_cluster.execute(
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"
    )
    assert stored[0].startswith("SCRAM-SHA-256$")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(source_cluster.dsn(password="not-the-password"), connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(source_cluster.dsn(password=""), connect_timeout=10)


def test_set_settings_reloads_and_refuses_start_only_settings_without_restart(
    own_cluster: PgCluster,
) -> None:
    """A reloadable setting applies at once; a start-only one needs restart=True."""
    own_cluster.set_settings(work_mem="7MB")
    assert own_cluster.execute("SHOW work_mem") == [("7MB",)]

    with pytest.raises(PgClusterError, match="restart=True"):
        own_cluster.set_settings(max_connections=150)
    assert own_cluster.execute("SHOW max_connections") == [("200",)]

    own_cluster.set_settings(max_connections=150, restart=True)
    assert own_cluster.execute("SHOW max_connections") == [("150",)]


def test_factory_settings_override_the_defaults(pg_cluster_factory: ClusterFactory) -> None:
    """A dedicated cluster made with wal_level=replica runs with it."""
    cluster = pg_cluster_factory("replica", wal_level="replica")
    assert cluster.execute("SHOW wal_level") == [("replica",)]
    assert cluster.execute("SHOW max_replication_slots") == [("40",)]


def test_failed_start_raises_with_the_server_log_and_leaves_nothing() -> None:
    """A server that cannot start raises an error quoting its log, and its folder is removed."""
    before = set(Path("/tmp").glob("replicator-test-broken*"))
    with pytest.raises(PgClusterError, match='invalid value for parameter "shared_buffers"'):
        PgCluster.create("broken", shared_buffers="plenty")
    assert set(Path("/tmp").glob("replicator-test-broken*")) <= before


def test_destroy_stops_the_server_removes_its_folder_and_can_repeat() -> None:
    """destroy() stops the server and deletes its folder, and a second call does nothing."""
    cluster = PgCluster.create("destroyed")
    try:
        assert cluster.is_running
    finally:
        cluster.destroy()
    assert not cluster.folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.dsn(), connect_timeout=5)
    cluster.destroy()


_ORPHAN_MAKER = """
import time
from tests.pgcluster import PgCluster
cluster = PgCluster.create("orphan")
print(cluster.folder, flush=True)
time.sleep(600)
"""


@pytest.fixture
def orphan_maker() -> Iterator[subprocess.Popen[str]]:
    """A Python process that creates a cluster, prints its folder and waits to be killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_MAKER],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_cluster_of_a_killed_process_is_reaped_by_the_next_create(
    orphan_maker: subprocess.Popen[str], pg_cluster_factory: ClusterFactory
) -> None:
    """A cluster left behind by a SIGKILLed test process is stopped and deleted by create()."""
    assert orphan_maker.stdout is not None
    folder = Path(orphan_maker.stdout.readline().strip())
    postmaster_pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
    os.kill(orphan_maker.pid, signal.SIGKILL)
    orphan_maker.wait()
    assert folder.exists()

    pg_cluster_factory("reaper")

    assert not folder.exists()
    stat = Path(f"/proc/{postmaster_pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
