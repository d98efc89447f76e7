"""Connections to a MySQL or MariaDB server, what kind of server it is, and the statements
that differ between the kinds.

MySQL 8.4 removed ``SHOW MASTER STATUS`` (``SHOW BINARY LOG STATUS`` replaces it from 8.2),
MariaDB keeps it; MySQL numbers GTIDs as ``uuid:N`` sets, MariaDB as ``domain-server-seq``
positions. Each such difference is decided here, from :class:`ServerInfo`, by a pure
function the unit tests cover for every kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pymysql

from replicator.errors import SourceConnectionError, SourceError
from replicator.observability.redaction import redact

# Client errors meaning the connection itself failed (CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR,
# CR_SERVER_LOST, …) and server errors meaning it is going away (ER_SERVER_SHUTDOWN, killed).
_LOST = {2002, 2003, 2006, 2013, 2055, 1053, 1927, 1317, 1152, 1158, 1159, 1160, 1161}
# Worth doing again: ER_TABLE_DEF_CHANGED (a TRUNCATE or ALTER committed after a snapshot
# opened), ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT.
_RETRY = {1412, 1213, 1205}
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The server's kind and version, and whether it writes GTIDs."""

    mariadb: bool
    version: tuple[int, int, int]
    version_text: str
    gtid_mode: bool  # MySQL: gtid_mode = ON; MariaDB: always (every group has a GTID)

    @property
    def name(self) -> str:
        """``MariaDB 10.11.19`` or ``MySQL 8.4.2``."""
        return f"{'MariaDB' if self.mariadb else 'MySQL'} {'.'.join(map(str, self.version))}"


def parse_version(text: str) -> tuple[int, int, int]:
    """``10.11.19-MariaDB-0+deb12u1-log`` → (10, 11, 19)."""
    match = _VERSION.match(text)
    if match is None:
        raise SourceError(f"cannot read the server version from {text!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def binlog_status_statement(info: ServerInfo) -> str:
    """The statement showing the current binlog file and position (and GTIDs on MySQL)."""
    if not info.mariadb and info.version >= (8, 2, 0):
        return "SHOW BINARY LOG STATUS"  # SHOW MASTER STATUS is gone in 8.4
    return "SHOW MASTER STATUS"


def replica_hosts_statement(info: ServerInfo) -> str:
    """The statement listing the replicas registered with the server."""
    if info.mariadb:
        return "SHOW SLAVE HOSTS"
    return "SHOW REPLICAS" if info.version >= (8, 0, 22) else "SHOW SLAVE HOSTS"


def gtid_position_statement(info: ServerInfo) -> str | None:
    """A query for the GTID state written to the binlog so far; None without GTIDs."""
    if info.mariadb:
        return "SELECT @@global.gtid_binlog_pos"
    return "SELECT @@global.gtid_executed" if info.gtid_mode else None


def minimum_version_problem(info: ServerInfo) -> str | None:
    """Why the server is too old for Replicator, or None.

    Column names (``binlog_row_metadata = FULL``) arrived in MariaDB 10.5 and MySQL 8.0.14;
    without them a row event cannot be matched to its columns after an ALTER TABLE.
    """
    needed = (10, 5, 0) if info.mariadb else (8, 0, 14)
    if info.version < needed:
        return (
            f"the source runs {info.name}; Replicator needs "
            f"{'MariaDB 10.5' if info.mariadb else 'MySQL 8.0.14'} or newer "
            "(binlog_row_metadata = FULL names the columns of every row event)"
        )
    return None


def connect(args: dict[str, Any], *, database: str | None = None, **extra: Any) -> Any:
    """A PyMySQL connection in utf8mb4 with UTC session time, autocommit, short timeouts.

    Session time zone UTC makes TIMESTAMP columns read as UTC, like the binlog's values.
    """
    settings = dict(args)
    if database is not None:
        settings["database"] = database
    settings.setdefault("connect_timeout", 10)
    settings.update(
        charset="utf8mb4",
        autocommit=True,
        init_command="SET time_zone = '+00:00'",
        **extra,
    )
    try:
        return pymysql.connect(**settings)
    except pymysql.Error as exc:
        raise translate(
            exc,
            "connecting to the source",
            fix="check the source DSN (host, port, user, password) and that the server "
            "accepts connections from this host",
        ) from exc


def lost(exc: BaseException) -> bool:
    """Whether a PyMySQL error means the connection failed rather than a refusal."""
    if isinstance(exc, (pymysql.err.InterfaceError, ConnectionError, TimeoutError)):
        return True
    code = exc.args[0] if isinstance(exc, pymysql.Error) and exc.args else None
    return isinstance(code, int) and code in _LOST


def translate(exc: BaseException, doing: str, fix: str | None = None) -> SourceError:
    """A source error naming what failed, secrets redacted; transient when the connection
    was lost."""
    message = redact(_message(exc))
    if lost(exc):
        return SourceConnectionError(
            f"lost the connection to the source while {doing}: {message}", fix=fix
        )
    error = SourceError(f"{doing} failed: {message}", fix=fix)
    if isinstance(exc, pymysql.Error) and exc.args and isinstance(exc.args[0], int):
        error.sqlstate = str(exc.args[0])
        error.transient = exc.args[0] in _RETRY
    return error


def _message(exc: BaseException) -> str:
    if isinstance(exc, pymysql.Error) and len(exc.args) >= 2:
        return f"({exc.args[0]}) {exc.args[1]}"
    return str(exc) or type(exc).__name__


def query(conn: Any, statement: str, params: Any = None, doing: str = "") -> list[tuple[Any, ...]]:
    """Run one statement and return its rows, with errors translated."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())
    except pymysql.Error as exc:
        raise translate(exc, doing or f"running {statement.split()[0]}") from exc


def server_info(conn: Any) -> ServerInfo:
    """What kind of server ``conn`` talks to."""
    rows = query(conn, "SELECT VERSION(), @@version_comment", doing="reading the server version")
    text, comment = str(rows[0][0]), str(rows[0][1] or "")
    mariadb = "mariadb" in text.lower() or "mariadb" in comment.lower()
    gtid = True
    if not mariadb:
        mode = query(conn, "SELECT @@global.gtid_mode", doing="reading gtid_mode")
        gtid = str(mode[0][0]).upper() == "ON"
    return ServerInfo(mariadb, parse_version(text), text, gtid)


def variables(conn: Any, *names: str) -> dict[str, str | None]:
    """Global variables by lower-case name; None for those the server does not have."""
    # SHOW works on both kinds (MySQL 8 has no information_schema.GLOBAL_VARIABLES).
    rows = query(
        conn,
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ", ".join(["%s"] * len(names)) + ")",
        [n.lower() for n in names],
        doing="reading server variables",
    )
    found: dict[str, str | None] = {n.lower(): None for n in names}
    found.update({str(r[0]).lower(): None if r[1] is None else str(r[1]) for r in rows})
    return found
