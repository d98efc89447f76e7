"""Preflight checks for a MySQL or MariaDB source; every problem comes with its fix.

``replicator check`` prints them all; ``replicator run`` refuses to start on any error.
"""

from __future__ import annotations

import re
from typing import Any

from replicator.contracts import Problem, Severity
from replicator.errors import SourceError
from replicator.events import TableId
from replicator.sources.mysql import catalog, server
from replicator.sources.mysql.columns import TypeOptions, pg_type, supported_charset
from replicator.sources.mysql.position import GtidState, MysqlPosition, file_number

RETENTION_WARNING_S = 3 * 86400  # shorter binlog retention leaves little time to recover
_REPLICATION_SLAVE = ("REPLICATION SLAVE", "ALL PRIVILEGES")
_REPLICATION_CLIENT = ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER", "ALL PRIVILEGES")


def _error(message: str, fix: str | None = None) -> Problem:
    return Problem(Severity.ERROR, message, fix)


def _warning(message: str, fix: str | None = None) -> Problem:
    return Problem(Severity.WARNING, message, fix)


def settings_problems(info: server.ServerInfo, settings: dict[str, str | None]) -> list[Problem]:
    """What the server's binlog settings lack (pure: given the variables' values)."""
    too_old = server.minimum_version_problem(info)
    if too_old:
        return [_error(too_old, "upgrade the source server")]

    def value(name: str) -> str:
        return (settings.get(name) or "").upper()

    persist = "(and in the server's configuration file, so it survives a restart)"
    if value("log_bin") not in ("ON", "1"):
        return [
            _error(
                "binary logging is off on the source (log_bin)",
                "start the server with log_bin = ON, binlog_format = ROW, binlog_row_image = "
                "FULL and binlog_row_metadata = FULL (restart needed)",
            )
        ]
    problems = []
    required = (
        ("binlog_format", "ROW", "row changes are logged as statements, which cannot be replayed"),
        ("binlog_row_image", "FULL", "row events leave out the columns that did not change"),
        (
            "binlog_row_metadata",
            "FULL",
            "row events do not name their columns, so an ALTER TABLE could misalign them",
        ),
    )
    for name, wanted, why in required:
        if value(name) != wanted:
            problems.append(
                _error(
                    f"{name} is {settings.get(name) or 'unset'} on the source: {why}",
                    f"SET GLOBAL {name} = {wanted}; {persist}",
                )
            )
    if "PARTIAL_JSON" in value("binlog_row_value_options"):
        problems.append(
            _error(
                "binlog_row_value_options = PARTIAL_JSON logs only the changed part of JSON values",
                f"SET GLOBAL binlog_row_value_options = ''; {persist}",
            )
        )
    if value("binlog_transaction_compression") in ("ON", "1"):
        problems.append(
            _error(
                "binlog_transaction_compression is on; compressed transactions cannot be read",
                f"SET GLOBAL binlog_transaction_compression = OFF; {persist}",
            )
        )
    if value("log_bin_compress") in ("ON", "1"):
        problems.append(
            _error(
                "log_bin_compress is on; compressed binlog events cannot be read",
                f"SET GLOBAL log_bin_compress = OFF; {persist}",
            )
        )
    problems += _retention_problems(settings)
    return problems


def _retention_problems(settings: dict[str, str | None]) -> list[Problem]:
    seconds = None
    raw = settings.get("binlog_expire_logs_seconds")
    if raw not in (None, "", "0"):
        seconds = float(raw)
    else:
        days = settings.get("expire_logs_days")
        if days not in (None, "", "0", "0.000000"):
            seconds = float(days) * 86400
    if seconds is None or seconds <= 0 or seconds >= RETENTION_WARNING_S:
        return []
    return [
        _warning(
            f"the source keeps binary logs for only {seconds / 3600:.1f} hours: a pipeline "
            "stopped for longer must copy its tables again",
            "SET GLOBAL binlog_expire_logs_seconds = 259200; (3 days, or as long as an outage "
            "may last) and put it in the server's configuration file",
        )
    ]


def grants_problems(grants: list[str], user: str, *, needs_reload: bool) -> list[Problem]:
    """Missing global privileges of ``user``, from its ``SHOW GRANTS`` lines (pure)."""
    granted: set[str] = set()
    for line in grants:
        match = re.match(r"GRANT (.+?) ON \*\.\* TO", line, re.IGNORECASE)
        if match:
            granted.update(p.strip().upper() for p in match.group(1).split(","))
    problems = []
    if not granted & set(_REPLICATION_SLAVE):
        problems.append(
            _error(
                "the source user lacks the REPLICATION SLAVE privilege (needed to read the binlog)",
                f"GRANT REPLICATION SLAVE ON *.* TO {user};",
            )
        )
    if not granted & set(_REPLICATION_CLIENT):
        problems.append(
            _error(
                "the source user lacks the REPLICATION CLIENT privilege (BINLOG MONITOR on "
                "MariaDB), needed to read the binlog position",
                f"GRANT REPLICATION CLIENT ON *.* TO {user};",
            )
        )
    if needs_reload and not granted & {"RELOAD", "ALL PRIVILEGES"}:
        problems.append(
            _error(
                "the source user lacks the RELOAD privilege: MySQL reports a consistent "
                "snapshot's binlog position only under a brief FLUSH TABLES WITH READ LOCK",
                f"GRANT RELOAD ON *.* TO {user};",
            )
        )
    return problems


def check_source(
    conn: Any,
    info: server.ServerInfo,
    *,
    patterns: list[str],
    server_id: int,
    position_mode: str,
    options: TypeOptions,
    checkpoint: MysqlPosition | None,
    by_gtid: bool,
    pipeline: str,
) -> list[Problem]:
    """Every problem of the server, the user and the captured tables."""
    names = (
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "binlog_row_value_options",
        "binlog_transaction_compression",
        "log_bin_compress",
        "binlog_expire_logs_seconds",
        "expire_logs_days",
        "server_id",
    )
    settings = server.variables(conn, *names)
    problems = settings_problems(info, settings)
    if problems and problems[0].message.startswith(("the source runs", "binary logging")):
        return problems
    if str(server_id) == (settings.get("server_id") or ""):
        problems.append(
            _error(
                f"the pipeline's server_id {server_id} is the source server's own server_id",
                "set source.server_id to a number no server or replica uses",
            )
        )
    if position_mode == "gtid" and not info.gtid_mode:
        problems.append(
            _error(
                "source.position is gtid, but gtid_mode is not ON on the source",
                "turn GTIDs on (gtid_mode = ON, enforce_gtid_consistency = ON), or set "
                "source.position: auto",
            )
        )
    lock_free = bool(
        server.query(conn, "SHOW STATUS LIKE 'binlog_snapshot_file'", doing="probing snapshots")
    )
    grants = [str(r[0]) for r in server.query(conn, "SHOW GRANTS", doing="reading the grants")]
    user = current_user(conn)
    problems += grants_problems(grants, user, needs_reload=not lock_free)
    problems += replica_problems(conn, info, server_id, pipeline)
    problems += _table_problems(conn, patterns, options, user)
    if checkpoint is not None:
        problems += checkpoint_problems(conn, info, checkpoint, by_gtid=by_gtid)
    return problems


def replica_problems(
    conn: Any, info: server.ServerInfo, server_id: int, pipeline: str
) -> list[Problem]:
    """A replica of another name registered with the pipeline's server_id."""
    try:
        rows = server.query(conn, server.replica_hosts_statement(info), doing="listing replicas")
    except SourceError:
        return []  # needs REPLICATION MASTER ADMIN on MariaDB; the check is a courtesy
    for row in rows:
        if int(row[0]) == server_id and str(row[1]) != reporting_name(pipeline):
            return [
                _error(
                    f"a replica ({row[1] or 'unnamed'}) is connected with the pipeline's "
                    f"server_id {server_id}; the server would disconnect one of them",
                    "set source.server_id to a number no server or replica uses",
                )
            ]
    return []


def reporting_name(pipeline: str) -> str:
    """The host name the binlog reader registers under (shown by ``SHOW SLAVE HOSTS``)."""
    return f"replicator-{pipeline}"[:60]


def current_user(conn: Any) -> str:
    """The account the source DSN logs in as, quoted as GRANT takes it ('repl'@'%')."""
    account = str(server.query(conn, "SELECT CURRENT_USER()", doing="reading the user")[0][0])
    user, _, host = account.rpartition("@")
    return f"'{user}'@'{host}'"


def _table_problems(
    conn: Any, patterns: list[str], options: TypeOptions, user: str
) -> list[Problem]:
    tables = catalog.match_tables(conn, patterns)
    if not tables:
        return [
            _error(
                f"no table in the source matches {patterns}",
                "check source.tables (database.table patterns, case-sensitive)",
            )
        ]
    problems = []
    for found in tables:
        info = catalog.describe(conn, found.table)
        if info is None:
            continue
        problems += _columns_problems(info, options)
        if not info.transactional:
            problems.append(
                _warning(
                    f"table {info.table} uses the {info.engine} engine, which has no "
                    "consistent snapshots: its copy may see changes made during it"
                    + ("" if info.key else ", and as it has no key they may be applied twice"),
                    f"ALTER TABLE {info.table} ENGINE = InnoDB;",
                )
            )
        problems += _select_problem(conn, info.table, user)
    return problems


def _columns_problems(info: catalog.TableInfo, options: TypeOptions) -> list[Problem]:
    problems = []
    for column in info.columns:
        try:
            pg_type(column, options)
        except SourceError as exc:
            problems.append(_error(f"table {info.table}: {exc.message}", exc.fix))
        if column.charset and not supported_charset(column.charset):
            problems.append(
                _error(
                    f"table {info.table}, column {column.name}: the character set "
                    f"{column.charset} is not supported",
                    f"ALTER TABLE {info.table} CONVERT TO CHARACTER SET utf8mb4;",
                )
            )
    return problems


def _select_problem(conn: Any, table: TableId, user: str) -> list[Problem]:
    try:
        server.query(
            conn,
            f"SELECT 1 FROM `{table.schema.replace('`', '``')}`.`{table.name.replace('`', '``')}`"
            " LIMIT 0",
            doing=f"reading {table}",
        )
    except SourceError as exc:
        return [
            _error(
                f"the source user cannot read table {table}: {exc.message}",
                f"GRANT SELECT ON `{table.schema}`.* TO {user};",
            )
        ]
    return []


def checkpoint_problems(
    conn: Any, info: server.ServerInfo, checkpoint: MysqlPosition, *, by_gtid: bool
) -> list[Problem]:
    """Whether the binlogs after the checkpoint are still on the server."""
    rows = server.query(conn, "SHOW BINARY LOGS", doing="listing the binary logs")
    files = [str(r[0]) for r in rows]
    if not files:
        return []
    purged = _error(
        f"the pipeline's checkpoint ({checkpoint}) is older than the oldest binlog the source "
        f"still has ({min(files, key=file_number)}): the changes since were purged and cannot "
        "be read",
        "re-copy the tables: replicator drop -c FILE --pipeline NAME, then start the pipeline "
        "again; keep binlogs longer (binlog_expire_logs_seconds)",
    )
    if by_gtid:
        return [purged] if _gtids_purged(conn, info, checkpoint, files) else []
    if checkpoint.file in files:
        return []
    if file_number(checkpoint.file) < min(file_number(f) for f in files):
        return [purged]
    if file_number(checkpoint.file) > max(file_number(f) for f in files):
        return [
            _error(
                f"the pipeline's checkpoint is in binlog {checkpoint.file}, which the source "
                "has not written yet: this is not the server the pipeline read from (or its "
                "binlogs were reset)",
                "point source.dsn at the right server, or re-copy the tables (replicator drop, "
                "then start again)",
            )
        ]
    return []


def _gtids_purged(
    conn: Any, info: server.ServerInfo, checkpoint: MysqlPosition, files: list[str]
) -> bool:
    """Whether transactions after the checkpoint's GTID state are gone from the binlogs."""
    if not info.mariadb:
        row = server.query(
            conn,
            "SELECT GTID_SUBSET(@@global.gtid_purged, %s)",
            (checkpoint.gtid or "",),
            doing="comparing GTID sets",
        )
        return not int(row[0][0])
    oldest = min(files, key=file_number)
    # The GTID position just before the oldest binlog: what was purged ends there.
    before = server.query(
        conn, "SELECT BINLOG_GTID_POS(%s, 4)", (oldest,), doing="reading the oldest GTIDs"
    )[0][0]
    have = GtidState(True, checkpoint.gtid or "").sequences()
    for domain, seq in GtidState(True, str(before or "")).sequences().items():
        if domain in have and have[domain] < seq:
            return True
    return False
