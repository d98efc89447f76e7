"""The test-suite's own MariaDB servers behave as the other tests rely on."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import COMMAND

import tests.localserver
import tests.mariadb
from tests.mariadb import MariaDbError, MariaDbFactory, MariaDbServer, MysqlDatabase, connect

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_server(mariadb_factory: MariaDbFactory) -> MariaDbServer:
    """A server this module may restart and kill."""
    return mariadb_factory("lifecycle")


def query(conn: pymysql.connections.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_session_server_writes_a_row_binlog_with_full_images(mariadb_server: MariaDbServer) -> None:
    """The session server logs binary ROW events with full row images and full metadata."""
    rows = mariadb_server.execute(
        "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata,"
        " @@server_id, @@bind_address, @@port, @@character_set_server, @@max_connections"
    )
    assert rows == [(1, "ROW", "FULL", "FULL", 1, "127.0.0.1", mariadb_server.port, "utf8mb4", 200)]
    assert mariadb_server.binlog_files()[0] == "binlog.000001"
    assert (mariadb_server.datadir / "binlog.000001").exists()


def test_settings_override_the_defaults_and_none_leaves_binary_logging_off(
    mariadb_factory: MariaDbFactory,
) -> None:
    """Settings given to create() win over the defaults, and log_bin=None turns the binlog off."""
    server = mariadb_factory("plain", log_bin=None, max_connections=50, server_id=7)
    assert server.execute("SELECT @@log_bin, @@max_connections, @@server_id") == [(0, 50, 7)]
    assert "log-bin" not in server.settings
    with pytest.raises(MariaDbError, match="log_bin=None"):
        server.binlog_files()


def test_a_bad_setting_raises_with_the_server_output_and_leaves_nothing() -> None:
    """A server that cannot start raises an error quoting mariadbd, and its folder is removed."""
    before = set(Path("/tmp").glob("replicator-mariadb-broken*"))
    with pytest.raises(MariaDbError, match="unknown variable 'no-such-option=1'"):
        MariaDbServer.create("broken", no_such_option=1)
    assert set(Path("/tmp").glob("replicator-mariadb-broken*")) <= before


def test_a_taken_port_is_replaced_by_a_free_one(
    mariadb_factory: MariaDbFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another process holds the port picked for a new server, it starts on another one."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        free_port = tests.mariadb.free_port
        monkeypatch.setattr(tests.mariadb, "free_port", lambda: next(ports, None) or free_port())

        server = mariadb_factory("port_taken")

    assert server.port != taken
    assert "Address already in use" in server.logfile.read_text()
    assert server.execute("SELECT @@port") == [(server.port,)]


def test_tcp_logins_need_the_password(
    mariadb_server: MariaDbServer, mysql_database: MysqlDatabase
) -> None:
    """Over TCP, root and the test user get in with their password only."""
    with connect(mariadb_server.dsn("root", mariadb_server.password)) as conn:
        assert query(conn, "SELECT CURRENT_USER()") == [("root@127.0.0.1",)]
    with connect(mysql_database.dsn) as conn:
        assert query(conn, "SELECT CURRENT_USER(), DATABASE()") == [("repl@%", mysql_database.name)]
    for password in ("", "not-the-password"):
        for user in ("root", "repl"):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                connect(mariadb_server.dsn(user, password))
            assert refused.value.args[0] == 1045  # access denied


def test_a_user_gets_only_the_grants_it_was_created_with(
    mariadb_server: MariaDbServer, mysql_database: MysqlDatabase
) -> None:
    """A user created with only SELECT can read tables but not write them."""
    mysql_database.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    mariadb_server.create_user("reader", "p@ss:w/rd", ["SELECT ON *.*"])
    try:
        with connect(mariadb_server.dsn("reader", "p@ss:w/rd", mysql_database.name)) as conn:
            assert query(conn, "SELECT id FROM t") == [(1,)]
            with pytest.raises(pymysql.err.OperationalError) as denied:
                query(conn, "INSERT INTO t VALUES (2)")
            assert denied.value.args[0] == 1142  # command denied
    finally:
        mariadb_server.execute("DROP USER 'reader'@'%'")


def test_dsn_quotes_every_part() -> None:
    """User, password and database are URL-quoted in a DSN."""
    server = MariaDbServer("dsn", Path("/nonexistent"), 3307, "pw", {}, fixed_port=True)
    assert server.dsn("a@b", "p:w/d", "d b") == "mysql://a%40b:p%3Aw%2Fd@127.0.0.1:3307/d%20b"
    assert server.dsn("u", "") == "mysql://u@127.0.0.1:3307/"


def test_execute_returns_the_rows_of_the_last_statement(mysql_database: MysqlDatabase) -> None:
    """execute() runs several statements at once and returns the last one's rows."""
    rows = mysql_database.execute(
        "CREATE TABLE t (id int, note text); INSERT INTO t VALUES (1, '100%'), (2, NULL);"
        " SELECT id, note FROM t ORDER BY id"
    )
    assert rows == [(1, "100%"), (2, None)]
    assert mysql_database.execute("SELECT note FROM t WHERE id = %s", [1]) == [("100%",)]
    assert mysql_database.execute("DELETE FROM t") == []


def test_fresh_databases_start_empty_and_are_named_after_the_test(
    mysql_database: MysqlDatabase,
) -> None:
    """The fresh database exists, is empty, is named after the test and its DSN points at it."""
    assert mysql_database.name.startswith("t_test_fresh_databases_start_empty")
    assert mysql_database.dsn.endswith(f":{mysql_database.server.port}/{mysql_database.name}")
    assert mysql_database.execute("SHOW TABLES") == []
    databases = [row[0] for row in mysql_database.server.execute("SHOW DATABASES")]
    assert mysql_database.name in databases


def test_drop_database_kills_clients_that_hold_it(
    mariadb_server: MariaDbServer, mysql_database: MysqlDatabase
) -> None:
    """A database is dropped even while a client has a transaction open on one of its tables."""
    mysql_database.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    with connect(mysql_database.dsn) as conn:
        query(conn, "BEGIN")
        assert query(conn, "SELECT id FROM t FOR UPDATE") == [(1,)]

        mariadb_server.drop_database(mysql_database.name)

        databases = [row[0] for row in mariadb_server.execute("SHOW DATABASES")]
        assert mysql_database.name not in databases
        with pytest.raises(pymysql.err.OperationalError):
            query(conn, "SELECT 1")


def test_set_global_changes_a_variable_for_new_sessions(own_server: MariaDbServer) -> None:
    """set_global() sets server variables, and None puts one back to its default."""
    own_server.set_global(max_connections=150, binlog_row_image="MINIMAL")
    assert own_server.execute("SELECT @@max_connections, @@binlog_row_image") == [(150, "MINIMAL")]
    own_server.set_global(binlog_row_image=None, max_connections=200)
    assert own_server.execute("SELECT @@binlog_row_image") == [("FULL",)]


def test_flush_binary_logs_starts_a_new_file(own_server: MariaDbServer) -> None:
    """flush_binary_logs() adds a binlog file, and master_status() moves with each write."""
    files = own_server.binlog_files()
    own_server.flush_binary_logs()
    after = own_server.binlog_files()
    assert after[: len(files)] == files
    assert len(after) == len(files) + 1
    file, position = own_server.master_status()
    assert file == after[-1]

    own_server.execute("CREATE DATABASE IF NOT EXISTS flushed")

    assert own_server.master_status()[0] == file
    assert own_server.master_status()[1] > position


def test_kill_connections_cuts_every_connection_of_a_user(
    mariadb_server: MariaDbServer, mysql_database: MysqlDatabase
) -> None:
    """kill_connections() ends the user's open connections, no one else's; new ones work."""
    mariadb_server.create_user("cut_me", "pw")
    dsn = mariadb_server.dsn("cut_me", "pw", mysql_database.name)
    try:
        with connect(dsn) as first, connect(dsn) as second, connect(mysql_database.dsn) as other:
            assert mariadb_server.kill_connections("cut_me") == 2
            for conn in (first, second):
                with pytest.raises(pymysql.err.OperationalError):
                    query(conn, "SELECT 1")
            assert query(other, "SELECT 1") == [(1,)]
        assert mariadb_server.kill_connections("cut_me") == 0
        with connect(dsn) as conn:
            assert query(conn, "SELECT 1") == [(1,)]
    finally:
        mariadb_server.execute("DROP USER 'cut_me'@'%'")


def _start_binlog_dump(conn: pymysql.connections.Connection[Any], binlog_file: str) -> None:
    """Make `conn` a replica's binlog dump connection (PyMySQL has no public call for it)."""
    query(
        conn,
        "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4",
    )
    payload = struct.pack("<IHI", 4, 0, 4242) + binlog_file.encode()  # pos, flags, server id
    conn._execute_command(COMMAND.COM_BINLOG_DUMP, payload)  # type: ignore[attr-defined]


def test_kill_connections_cuts_a_binlog_dump_waiting_for_events(
    mariadb_server: MariaDbServer, mysql_database: MysqlDatabase
) -> None:
    """kill_connections() ends a binlog dump idling at the end of the log; the client notices."""
    mariadb_server.create_user("dumper", "pw", ["REPLICATION SLAVE, REPLICATION CLIENT ON *.*"])
    dump_threads = (
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
        " WHERE USER = 'dumper' AND COMMAND = 'Binlog Dump'"
    )
    try:
        with connect(mariadb_server.dsn("dumper", "pw"), read_timeout=10) as conn:
            _start_binlog_dump(conn, mariadb_server.binlog_files()[0])
            deadline = time.monotonic() + 10
            while mariadb_server.execute(dump_threads) != [(1,)]:
                assert time.monotonic() < deadline, "the binlog dump did not start"
                time.sleep(0.02)

            assert mariadb_server.kill_connections("dumper") == 1

            assert mariadb_server.execute(dump_threads) == [(0,)]
            with pytest.raises(pymysql.err.OperationalError):
                while True:  # the events sent before the kill, then the end of the stream
                    conn._read_packet()  # type: ignore[no-untyped-call]
    finally:
        mariadb_server.execute("DROP USER 'dumper'@'%'")


def test_restart_keeps_committed_data_and_the_port(own_server: MariaDbServer) -> None:
    """Data committed before a clean restart is there afterwards, on the same port."""
    port = own_server.port
    own_server.execute(
        "CREATE DATABASE kept_on_restart;"
        " CREATE TABLE kept_on_restart.t (id int PRIMARY KEY);"
        " INSERT INTO kept_on_restart.t VALUES (1)"
    )

    own_server.restart()

    assert own_server.is_running
    assert own_server.port == port
    assert own_server.execute("SELECT id FROM kept_on_restart.t") == [(1,)]
    assert "Normal shutdown" in own_server.logfile.read_text()


def test_kill_breaks_connections_and_start_recovers_committed_data(
    own_server: MariaDbServer,
) -> None:
    """After a SIGKILL crash, open connections are broken and start() recovers committed data."""
    own_server.execute(
        "CREATE DATABASE kept_on_crash;"
        " CREATE TABLE kept_on_crash.t (id int PRIMARY KEY);"
        " INSERT INTO kept_on_crash.t VALUES (7)"
    )
    log_size = own_server.logfile.stat().st_size
    with connect(own_server.dsn("root", own_server.password)) as conn:
        own_server.kill()

        assert not own_server.is_running
        with pytest.raises(pymysql.err.OperationalError):
            query(conn, "SELECT 1")

    own_server.start()

    assert own_server.execute("SELECT id FROM kept_on_crash.t") == [(7,)]
    assert "Recovering after a crash" in own_server.logfile.read_text()[log_size:]


def test_stop_shuts_down_cleanly_and_start_brings_it_back(own_server: MariaDbServer) -> None:
    """stop() ends the server (TCP refused), a second stop() does nothing, and start() works."""
    own_server.stop()
    own_server.stop()

    assert not own_server.is_running
    with pytest.raises(pymysql.err.OperationalError):
        connect(own_server.dsn("root", own_server.password))

    own_server.start()
    assert own_server.execute("SELECT 1") == [(1,)]


def test_destroy_kills_the_server_removes_its_folder_and_can_repeat() -> None:
    """destroy() ends the server and deletes its folder, and a second call does nothing."""
    server = MariaDbServer.create("destroyed")
    try:
        assert server.is_running
    finally:
        server.destroy()
    assert not server.folder.exists()
    assert not server.is_running
    with pytest.raises(pymysql.err.OperationalError):
        connect(server.dsn("root", server.password))
    server.destroy()
    with pytest.raises(MariaDbError, match="destroyed"):
        server.start()


_ORPHAN_MAKER = """
import time
from tests.mariadb import MariaDbServer
server = MariaDbServer.create("orphan")
print(server.folder, flush=True)
time.sleep(600)
"""


@pytest.fixture
def orphan_maker() -> Iterator[subprocess.Popen[str]]:
    """A Python process that creates a server, prints its folder and waits to be killed."""
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


@pytest.fixture
def foreign_folders() -> Iterator[list[Path]]:
    """Folders with our prefix the reaper must leave alone: no owner file, or a live owner."""
    unowned = Path("/tmp/replicator-mariadb-unowned-test")
    live = Path("/tmp/replicator-mariadb-live-owner-test")
    folders = [unowned, live]
    for folder in folders:
        folder.mkdir(exist_ok=True)
    (live / "owner").write_text(f"{os.getpid()} {tests.localserver.start_time(os.getpid())}\n")
    yield folders
    for folder in folders:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def test_server_of_a_killed_process_is_reaped_by_the_next_create(
    orphan_maker: subprocess.Popen[str],
    foreign_folders: list[Path],
    mariadb_factory: MariaDbFactory,
) -> None:
    """A server left behind by a SIGKILLed process is killed and deleted by create(), only it."""
    assert orphan_maker.stdout is not None
    folder = Path(orphan_maker.stdout.readline().strip())
    server_pids = tests.localserver.pids_with_arg(f"--datadir={folder / 'data'}")
    assert server_pids
    os.kill(orphan_maker.pid, signal.SIGKILL)
    orphan_maker.wait()
    assert folder.exists()
    assert tests.localserver.pids_with_arg(f"--datadir={folder / 'data'}") == server_pids

    mariadb_factory("reaper")

    assert not folder.exists()
    assert not any(tests.localserver.process_alive(pid) for pid in server_pids)
    assert all(folder.exists() for folder in foreign_folders)
