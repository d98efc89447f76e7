"""`replicator check` against misconfigured MariaDB servers: every problem with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mariadb import MariaDbFactory, MariaDbServer, MysqlDatabase
from tests.support import run_cli, write_config


def mysql_pipeline(dsn: str, target_dsn: str, tables: list[str], **source: object) -> dict:
    """A pipeline with a MySQL source, as it appears in YAML."""
    return {
        "name": "shop",
        "source": {"type": "mysql", "dsn": dsn, "tables": tables, **source},
        "sink": {"type": "postgres", "dsn": target_dsn},
    }


def check(tmp_path: Path, pipeline: dict) -> tuple[int, str]:
    """Run `replicator check`; return its exit code and everything it printed."""
    config = write_config(tmp_path / "replicator.yaml", pipeline)
    result = run_cli("check", "-c", str(config))
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def misconfigured(mariadb_factory: MariaDbFactory) -> MariaDbServer:
    """A server logging statements, minimal row images and metadata, for 12 hours."""
    server = mariadb_factory(
        "misconfigured",
        binlog_format="STATEMENT",
        binlog_row_image="MINIMAL",
        binlog_row_metadata="MINIMAL",
        expire_logs_days=0.5,
    )
    server.create_database("shop")
    server.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, total DECIMAL(8,2))")
    server.create_user("repl", "s3cret-pw")
    return server


def test_a_ready_server_passes(tmp_path: Path, mysql_database: MysqlDatabase, target_dsn: str):
    """A ROW-logging server, a privileged user and plain tables: check says ready, exit 0."""
    mysql_database.execute("CREATE TABLE orders (id INT PRIMARY KEY, note TEXT)")
    code, output = check(
        tmp_path, mysql_pipeline(mysql_database.dsn, target_dsn, [f"{mysql_database.name}.*"])
    )
    assert code == 0, output
    assert "ok: ready to run" in output


def test_binlog_settings_are_named_with_their_fixes(
    tmp_path: Path, misconfigured: MariaDbServer, target_dsn: str
):
    """STATEMENT format, MINIMAL images and metadata each get an error with the SET to run,
    short binlog retention a warning; the password never shows."""
    dsn = misconfigured.dsn("repl", "s3cret-pw")
    code, output = check(tmp_path, mysql_pipeline(dsn, target_dsn, ["shop.*"]))
    assert code == 1
    assert "binlog_format is STATEMENT" in output
    assert "SET GLOBAL binlog_format = ROW" in output
    assert "binlog_row_image is MINIMAL" in output
    assert "SET GLOBAL binlog_row_image = FULL" in output
    assert "binlog_row_metadata is MINIMAL" in output
    assert "SET GLOBAL binlog_row_metadata = FULL" in output
    assert "WARNING" in output and "binary logs for only 12.0 hours" in output
    assert "s3cret-pw" not in output
    assert "Traceback" not in output


def test_run_refuses_a_misconfigured_server(
    tmp_path: Path, misconfigured: MariaDbServer, target_dsn: str
):
    """`replicator run` stops before streaming, exit 1, naming the setting and no traceback."""
    config = write_config(
        tmp_path / "replicator.yaml",
        mysql_pipeline(misconfigured.dsn("repl", "s3cret-pw"), target_dsn, ["shop.*"]),
    )
    result = run_cli("run", "-c", str(config), timeout=60)
    assert result.returncode == 1
    assert "binlog_format is STATEMENT" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_binary_logging_off_is_one_clear_error(
    tmp_path: Path, mariadb_factory: MariaDbFactory, target_dsn: str
):
    """Without log_bin the check says so once, with the settings to start the server with."""
    server = mariadb_factory("nobinlog", log_bin=None)
    server.create_database("shop")
    server.execute("CREATE TABLE shop.t (id INT PRIMARY KEY)")
    server.create_user("repl", "pw")
    code, output = check(tmp_path, mysql_pipeline(server.dsn("repl", "pw"), target_dsn, ["shop.*"]))
    assert code == 1
    assert "binary logging is off" in output
    assert "log_bin = ON" in output
    assert "binlog_format is" not in output  # nothing else to say before log_bin is on


def test_missing_privileges_are_named_with_the_grant(
    tmp_path: Path, mysql_database: MysqlDatabase, target_dsn: str
):
    """A user with only SELECT on another database is told each GRANT it needs."""
    server = mysql_database.server
    mysql_database.execute("CREATE TABLE orders (id INT PRIMARY KEY)")
    server.create_user("weak", "pw", ["SELECT ON mysql.*"])
    code, output = check(
        tmp_path,
        mysql_pipeline(server.dsn("weak", "pw"), target_dsn, [f"{mysql_database.name}.*"]),
    )
    assert code == 1
    assert "lacks the REPLICATION SLAVE privilege" in output
    assert "GRANT REPLICATION SLAVE ON *.* TO 'weak'@'%';" in output
    assert "lacks the REPLICATION CLIENT privilege" in output
    # It cannot even see the table, so no table matches for it.
    assert "no table in the source matches" in output


def test_unreadable_table_names_the_select_grant(
    tmp_path: Path, mysql_database: MysqlDatabase, target_dsn: str
):
    """A table the user may see but not read is named with the GRANT SELECT to run."""
    server = mysql_database.server
    db = mysql_database.name
    mysql_database.execute("CREATE TABLE orders (id INT PRIMARY KEY, secret TEXT)")
    server.create_user(
        "peek", "pw", ["REPLICATION SLAVE, REPLICATION CLIENT ON *.*", f"INSERT ON `{db}`.*"]
    )
    code, output = check(
        tmp_path, mysql_pipeline(server.dsn("peek", "pw"), target_dsn, [f"{db}.*"])
    )
    assert code == 1
    assert f"cannot read table {db}.orders" in output
    assert f"GRANT SELECT ON `{db}`.* TO 'peek'@'%';" in output


def test_server_id_clash_and_unsupported_types_are_errors(
    tmp_path: Path, mysql_database: MysqlDatabase, target_dsn: str
):
    """Reusing the server's own server_id, and a column type with no mapping, are errors
    naming the table and column; a MyISAM table without a key is a warning."""
    db = mysql_database.name
    mysql_database.execute("CREATE TABLE ids (id INT PRIMARY KEY, token UUID)")
    mysql_database.execute("CREATE TABLE legacy (note TEXT) ENGINE = MyISAM")
    code, output = check(
        tmp_path,
        mysql_pipeline(mysql_database.dsn, target_dsn, [f"{db}.*"], server_id=1),
    )
    assert code == 1
    assert "server_id 1 is the source server's own server_id" in output
    assert f"table {db}.ids: column token has MySQL type uuid" in output
    assert f"table {db}.legacy uses the MyISAM engine" in output
    assert f"ALTER TABLE {db}.legacy ENGINE = InnoDB;" in output


def test_gtid_position_needs_nothing_more_on_mariadb(
    tmp_path: Path, mysql_database: MysqlDatabase, target_dsn: str
):
    """MariaDB writes GTIDs always, so position: gtid is accepted as it is."""
    mysql_database.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    code, output = check(
        tmp_path,
        mysql_pipeline(
            mysql_database.dsn, target_dsn, [f"{mysql_database.name}.*"], position="gtid"
        ),
    )
    assert code == 0, output
