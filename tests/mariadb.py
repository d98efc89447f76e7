"""Throw-away MariaDB servers for tests, e2e scripts and benchmarks.

A `MariaDbServer` is a real server made with the Debian binaries (`mariadb-install-db` +
`mariadbd`) in its own folder under /tmp, listening on 127.0.0.1 on a free port, writing a
ROW-format binary log with full row images and metadata, as a CDC source needs::

    server = MariaDbServer.create("source")
    server.create_database("app")
    server.create_user("repl", "secret", ["SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.*"])
    server.execute("CREATE TABLE t (id int PRIMARY KEY)", database="app")
    dsn = server.dsn("repl", "secret", "app")  # mysql://repl:secret@127.0.0.1:PORT/app
    ...
    server.destroy()

Every setting goes on the mariadbd command line (after `--no-defaults`, so no my.cnf on the
machine leaks in); `MariaDbServer.create("plain", log_bin=None)` leaves binary logging off.
`root` has a random password (`server.password`) on the unix socket and over TCP; the helper
methods use the socket.

mariadbd refuses to run as root, so when this process is root the server programs run as the
`mysql` OS user (via `runuser`) and the folder belongs to that user. Servers still alive when
the process exits are destroyed by an atexit hook; folders left behind by a process that died
without running it (SIGKILL) are reaped by the next `MariaDbServer.create`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT, CR, ER

from tests.localserver import (
    ChildProcessServer,
    OsAccount,
    child_pids,
    destroy_at_exit,
    free_port,
    kill_processes_with_arg,
    log_tail,
    log_text,
    reap_orphans,
    server_env,
    wait_until,
)

__all__ = [
    "connect",
    "MariaDbError",
    "MariaDbFactory",
    "MariaDbServer",
    "MysqlDatabase",
    "SettingValue",
]

SettingValue = str | int | bool

_FOLDER_PREFIX = "replicator-mariadb-"
_LOG_TAIL_LINES = 40
_START_ATTEMPTS = 3
_START_TIMEOUT = 60.0
# A developer's MYSQL_UNIX_PORT, MYSQL_HOME, ... must not steer the server programs.
_ENV_PREFIXES = ("MYSQL", "MARIADB")
# Client errors meaning "no server there (yet)" or "it hung up during the handshake".
_NOT_LISTENING = (
    CR.CR_CONNECTION_ERROR,
    CR.CR_CONN_HOST_ERROR,
    CR.CR_SERVER_GONE_ERROR,
    CR.CR_SERVER_LOST,
)


class MariaDbError(RuntimeError):
    """A test server could not be created, started or stopped; the message says why."""


class MariaDbFactory(Protocol):
    """Make a dedicated server: `factory("plain", log_bin=None)`."""

    def __call__(self, name: str, /, **settings: SettingValue | None) -> MariaDbServer: ...


class MysqlDatabase(NamedTuple):
    """An empty database on a test server, with a DSN for a user allowed everything."""

    name: str
    server: MariaDbServer
    dsn: str

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run `sql` in this database as root (see `MariaDbServer.execute`)."""
        return self.server.execute(sql, params, database=self.name)


def connect(dsn: str, **options: Any) -> pymysql.connections.Connection[Any]:
    """Open an autocommit PyMySQL connection to a `mysql://user:password@host:port/db` DSN.

    `options` go to `pymysql.connect` (e.g. `read_timeout=5`).
    """
    url = urlsplit(dsn)
    if url.scheme != "mysql":
        raise ValueError(f"{dsn!r} is not a mysql:// DSN.")
    settings: dict[str, Any] = {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 3306,
        "user": unquote(url.username or ""),
        "password": unquote(url.password or ""),
        "database": unquote(url.path.lstrip("/")) or None,
        "autocommit": True,
        "charset": "utf8mb4",
        "connect_timeout": 10,
    }
    return pymysql.connect(**{**settings, **options})


def _default_settings(folder: Path) -> dict[str, SettingValue]:
    datadir = folder / "data"
    return {
        "bind-address": "127.0.0.1",
        "socket": str(folder / "mariadbd.sock"),
        "pid-file": str(folder / "mariadbd.pid"),
        "log-error": str(folder / "mariadb.log"),
        "log-bin": str(datadir / "binlog"),
        "binlog-format": "ROW",
        "binlog-row-image": "FULL",
        "binlog-row-metadata": "FULL",
        "server-id": 1,
        "innodb-buffer-pool-size": "128M",
        # Durability against an OS crash is irrelevant for throw-away servers, and skipping the
        # fsync per commit keeps them fast on small CI machines. Committed data still survives
        # `kill()`: with these two, InnoDB's redo log and the binary log are written to the OS
        # at every commit, and a killed process does not lose what the OS already holds.
        "innodb-flush-log-at-trx-commit": 2,
        "sync-binlog": 0,
        # Clients come from 127.0.0.1 only; no DNS lookups, and accounts match '%' or an IP.
        "skip-name-resolve": True,
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_general_ci",
        "max-connections": 200,
    }


# Settings the server is controlled through: leaving them out would point mariadbd at the
# machine's own socket or port 3306.
_REQUIRED_SETTINGS = ("socket", "port")


def _setting_name(name: str) -> str:
    # mariadbd treats `-` and `_` in option names alike; one spelling lets `log_bin=None`
    # (a Python keyword argument) override the default `log-bin`.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise ValueError(f"{name!r} is not a mariadbd option name.")
    return name.replace("_", "-")


def _option(name: str, value: SettingValue) -> str:
    if value is True:
        return f"--{name}"
    if value is False:
        return f"--{name}=OFF"
    return f"--{name}={value}"


def _variable_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"{name!r} is not a MariaDB system variable name.")
    return name


def _identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _sql_string(text: str) -> str:
    # For SQL written to a file, where no client library quotes for us; the default sql_mode
    # treats a backslash as an escape character.
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@functools.cache
def _find_program(name: str) -> str:
    # mariadbd lives in /usr/sbin, which the PATH of a normal user often lacks.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise MariaDbError(
            f"No `{name}` found on PATH or in /usr/sbin.\n"
            "  Fix: run `make servers` (or `apt-get install mariadb-server`)."
        )
    return found


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    wait_until(condition, timeout, what, MariaDbError)


_ACCOUNT = OsAccount("mysql", "mariadb-server", "mariadbd", MariaDbError)


class MariaDbServer(ChildProcessServer):
    """A throw-away MariaDB server in its own folder under /tmp.

    Make one with `MariaDbServer.create`; it is running when returned. Its folder holds
    `data/` (the data directory, with the binary log `binlog.*`), `mariadb.log` (everything
    the server logged) and the unix socket `mariadbd.sock`.
    """

    host = "127.0.0.1"
    superuser = "root"

    def __init__(
        self,
        name: str,
        folder: Path,
        port: int,
        password: str,
        settings: dict[str, SettingValue],
        *,
        fixed_port: bool,
    ) -> None:
        """Describe a server folder; use `MariaDbServer.create` to make one."""
        super().__init__(folder)
        self.name = name
        self.port = port
        self.password = password
        self._settings = settings
        self._fixed_port = fixed_port

    def __repr__(self) -> str:
        return f"MariaDbServer(name={self.name!r}, port={self.port}, folder={str(self.folder)!r})"

    @property
    def datadir(self) -> Path:
        """The data directory (`--datadir`)."""
        return self.folder / "data"

    @property
    def socket(self) -> Path:
        """The unix socket root connects through."""
        return Path(str(self._settings["socket"]))

    @property
    def logfile(self) -> Path:
        """The server's error log, appended to on every start (unless `log-error` is moved)."""
        return self.folder / "mariadb.log"

    @property
    def settings(self) -> dict[str, SettingValue]:
        """The options mariadbd runs with (names spelt with `-`), without `port`."""
        return dict(self._settings)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, /, **settings: SettingValue | None) -> MariaDbServer:
        """Make, configure and start a new server; `settings` override the defaults.

        A setting of None leaves the option out: `MariaDbServer.create("plain", log_bin=None)`
        starts a server without binary logging. Underscores and dashes in names are alike.
        """
        reap_orphans(_FOLDER_PREFIX, _kill_orphan)
        install_db = _find_program("mariadb-install-db")
        _find_program("mariadbd")  # fail before making anything when it is missing
        requested = {_setting_name(key): value for key, value in settings.items()}
        if "datadir" in requested:
            raise ValueError("The data directory is always <folder>/data; do not pass datadir.")
        for key in _REQUIRED_SETTINGS:
            if key in requested and requested[key] is None:
                raise ValueError(f"{key} cannot be left out: the test harness talks to it.")
        safe_name = re.sub(r"[^A-Za-z0-9_]", "_", name)[:20]
        folder = _ACCOUNT.new_folder(f"{_FOLDER_PREFIX}{safe_name}-")
        try:
            merged = {**_default_settings(folder), **requested}
            port_setting = merged.pop("port", None)
            server_settings = {key: value for key, value in merged.items() if value is not None}
            port = free_port() if port_setting is None else int(port_setting)
            server = cls(
                name,
                folder,
                port,
                secrets.token_urlsafe(18),
                server_settings,
                fixed_port=port_setting is not None,
            )
            cls.live.add(server)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            server._write_file(server.logfile, "")
            server._install_db(install_db)
            server._start(_START_TIMEOUT, pick_new_port=not server._fixed_port)
        except BaseException:
            server.destroy()
            raise
        return server

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections (after crash recovery)."""
        self._start(timeout, pick_new_port=False)

    def stop(self, timeout: float = 60) -> None:
        """Shut the server down cleanly (SIGTERM) and wait; a stopped server is left alone."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        pid = self._server_pid()
        if pid is None:
            # Not even exec'd yet: nothing to shut down cleanly.
            self.kill()
            return
        # Signal mariadbd itself, never runuser: runuser answers SIGTERM by passing it on and
        # sending SIGKILL two seconds later, which would turn a slow clean shutdown into a crash.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise MariaDbError(
                f"{self} did not shut down within {timeout:g}s.\n"
                f"  Fix: call kill() to crash it instead.\n"
                f"Last lines of {self.logfile}:\n{self.log_tail()}"
            ) from None

    def restart(self, timeout: float = 60) -> None:
        """Shut the server down cleanly and start it again on the same port."""
        self.stop(timeout)
        self.start(timeout)

    def kill(self, timeout: float = 30) -> None:
        """Crash the server: SIGKILL mariadbd.

        Open connections break mid-flight, as on a machine crash. Committed data survives
        (the OS still holds it), and `start()` afterwards runs crash recovery.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        pid = self._server_pid()
        with contextlib.suppress(ProcessLookupError):
            if pid is not None:
                # runuser, mariadbd's parent, reaps it and exits; no zombie is left behind.
                os.kill(pid, signal.SIGKILL)
            else:
                # The process group of runuser (started in its own session) and its child.
                os.killpg(process.pid, signal.SIGKILL)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise MariaDbError(f"{self} did not die within {timeout:g}s of SIGKILL.") from None

    # -- SQL -------------------------------------------------------------------------------

    def dsn(self, user: str, password: str, database: str = "") -> str:
        """Return `mysql://user:password@127.0.0.1:PORT/database`, each part URL-quoted."""
        credentials = quote(user, safe="")
        if password:
            credentials += ":" + quote(password, safe="")
        return f"mysql://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    def execute(
        self, sql: str, params: Sequence[Any] | None = None, database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run `sql` as root over the unix socket in autocommit mode; return the rows.

        Without `params`, `sql` may hold several statements separated by `;` and is sent as
        is (a `%` needs no escaping); the rows are those of the last statement, an empty list
        when it returns none. With `params`, placeholders are `%s`.
        """
        with (
            self._connect(database, multi_statements=params is None) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(sql, params)
            while True:
                rows = list(cur.fetchall()) if cur.description is not None else []
                if not cur.nextset():
                    return rows

    def create_database(self, name: str) -> None:
        """Create an empty database."""
        self.execute(f"CREATE DATABASE {_identifier(name)}")

    def drop_database(self, name: str) -> None:
        """Drop a database even while clients use it; one that does not exist is ignored.

        Connections whose current database it is are killed first: an open transaction on one
        of its tables would make DROP DATABASE wait for its metadata lock.
        """
        self._kill_where("DB = %s", name)
        # Still bounded if a connection elsewhere holds a lock on one of its tables.
        self.execute(
            f"SET SESSION lock_wait_timeout = 30; DROP DATABASE IF EXISTS {_identifier(name)}"
        )

    def create_user(
        self, user: str, password: str, grants: Sequence[str] = ("ALL PRIVILEGES ON *.*",)
    ) -> None:
        """Create (or re-create) `user`@'%' with `password` and the given GRANT clauses.

        Each clause is what goes between GRANT and TO, e.g. `"SELECT ON *.*"` or
        `"REPLICATION SLAVE, REPLICATION CLIENT ON *.*"`.
        """
        self.execute("CREATE OR REPLACE USER %s@'%%' IDENTIFIED BY %s", [user, password])
        for clause in grants:
            self.execute(f"GRANT {clause} TO %s@'%%'", [user])

    def set_global(self, **variables: SettingValue | None) -> None:
        """SET GLOBAL each variable; None means DEFAULT. New sessions see the new values."""
        for name, value in variables.items():
            if value is None:
                self.execute(f"SET GLOBAL {_variable_name(name)} = DEFAULT")
            else:
                self.execute(f"SET GLOBAL {_variable_name(name)} = %s", [value])

    # -- binary log ------------------------------------------------------------------------

    def flush_binary_logs(self) -> None:
        """Close the current binary log file and start the next one."""
        self._require_binlog()
        self.execute("FLUSH BINARY LOGS")

    def binlog_files(self) -> list[str]:
        """Return the names of the binary log files, oldest first (e.g. `binlog.000001`)."""
        self._require_binlog()
        return [str(row[0]) for row in self.execute("SHOW BINARY LOGS")]

    def master_status(self) -> tuple[str, int]:
        """Return the binary log file and position the next event will be written at."""
        self._require_binlog()
        rows = self.execute("SHOW MASTER STATUS")
        return str(rows[0][0]), int(rows[0][1])

    def _require_binlog(self) -> None:
        if not self.execute("SELECT @@log_bin")[0][0]:
            raise MariaDbError(
                f"{self} writes no binary log.\n  Fix: create it without log_bin=None to have one."
            )

    # -- connections -----------------------------------------------------------------------

    def kill_connections(self, user: str, timeout: float = 10) -> int:
        """Kill every connection of `user` (e.g. a binlog dump) and wait until they are gone.

        Returns how many were killed.
        """
        return self._kill_where("USER = %s", user, timeout)

    def _kill_where(self, condition: str, value: str, timeout: float = 10) -> int:
        query = (
            "SELECT ID FROM information_schema.PROCESSLIST"
            f" WHERE {condition} AND ID <> CONNECTION_ID()"
        )
        ids = [int(row[0]) for row in self.execute(query, [value])]
        for connection_id in ids:
            try:
                self.execute(f"KILL CONNECTION {connection_id}")
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != ER.NO_SUCH_THREAD:  # it ended by itself meanwhile
                    raise
        if ids:
            # KILL only flags the thread; it notices at its next check and then disconnects.
            _wait_until(
                lambda: not self._connections_alive(ids),
                timeout,
                f"the killed connections of {self} to end",
            )
        return len(ids)

    def _connections_alive(self, ids: list[int]) -> bool:
        placeholders = ", ".join(["%s"] * len(ids))
        query = f"SELECT 1 FROM information_schema.PROCESSLIST WHERE ID IN ({placeholders})"
        return bool(self.execute(query, ids))

    def _connect(
        self, database: str | None = None, *, multi_statements: bool = False, timeout: float = 10
    ) -> pymysql.connections.Connection[Any]:
        conn = pymysql.connect(
            unix_socket=str(self.socket),
            user=self.superuser,
            password=self.password,
            database=database or None,
            autocommit=True,
            charset="utf8mb4",
            client_flag=CLIENT.MULTI_STATEMENTS if multi_statements else 0,
            connect_timeout=timeout,
            defer_connect=True,
        )
        # PyMySQL leaks its unix socket when the connect() itself fails (no server yet), which
        # pytest's filterwarnings=error turns into a failure: connect it here instead.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
        except OSError as exc:
            sock.close()
            raise pymysql.err.OperationalError(
                CR.CR_CONNECTION_ERROR, f"Can't connect to {self} through {self.socket} ({exc})"
            ) from exc
        conn.connect(sock)
        return conn

    # -- internals -------------------------------------------------------------------------

    def _write_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        _ACCOUNT.write_file(path, text, mode)

    def _install_db(self, install_db: str) -> None:
        # Run by mariadb-install-db after it made the system tables. It leaves root without a
        # password on localhost, 127.0.0.1, ::1 and the host name: keep the socket and the
        # 127.0.0.1 account, with the random password, and drop the rest.
        password = _sql_string(self.password)
        extra_sql = self.folder / "accounts.sql"
        self._write_file(
            extra_sql,
            "DELETE FROM mysql.global_priv"
            " WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1');\n"
            "DELETE FROM mysql.proxies_priv"
            " WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1');\n"
            "FLUSH PRIVILEGES;\n"
            f"ALTER USER root@localhost IDENTIFIED BY {password};\n"
            f"ALTER USER root@'127.0.0.1' IDENTIFIED BY {password};\n",
        )
        # Settings that shape the files made here (innodb-page-size, lower-case-table-names,
        # ...) must be given now too. Not the error log: install-db's output is the diagnosis.
        options = [
            _option(key, value)
            for key, value in self._settings.items()
            if key not in ("log-error", "log-bin")
        ]
        try:
            result = self._run(
                install_db,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                f"--extra-file={extra_sql}",
                *options,
                timeout=120,
            )
        finally:
            extra_sql.unlink(missing_ok=True)
        if result.returncode != 0:
            raise MariaDbError(
                f"mariadb-install-db failed for {self} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_ACCOUNT.command_prefix(), *args],
            cwd=self.folder,  # the mysql user may not be allowed into our working directory
            env=server_env(*_ENV_PREFIXES),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _command(self) -> list[str]:
        return [
            *_ACCOUNT.command_prefix(),
            _find_program("mariadbd"),
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            *(_option(key, value) for key, value in self._settings.items()),
        ]

    def _start(self, timeout: float, pick_new_port: bool) -> None:
        if self._destroyed:
            raise MariaDbError(f"{self} was destroyed.")
        if self.is_running:
            return
        for attempt in range(1, _START_ATTEMPTS + 1):
            log_offset = self.logfile.stat().st_size
            with self.logfile.open("ab") as log:
                # Errors mariadbd meets before it opens its error log (a bad option) go to
                # stderr: into the same file, so `log_tail()` shows them too.
                self._process = subprocess.Popen(
                    self._command(),
                    cwd=self.folder,
                    env=server_env(*_ENV_PREFIXES),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Out of the terminal's process group: Ctrl-C stops pytest, which then
                    # tears the servers down, rather than the servers under a running test.
                    start_new_session=True,
                )
            if self._wait_until_ready(timeout):
                return
            returncode = self._process.returncode
            port_taken = "Address already in use" in log_text(self.logfile, log_offset)
            if port_taken and pick_new_port and attempt < _START_ATTEMPTS:
                self.port = free_port()
                continue
            fix = (
                f"\n  Fix: port {self.port} is taken; pass another port, or none for a free one."
                if port_taken
                else ""
            )
            raise MariaDbError(
                f"{self} did not start (mariadbd exit {returncode}).{fix}\n"
                f"Last lines of {self.logfile}:\n{self.log_tail()}"
            )

    def _wait_until_ready(self, timeout: float) -> bool:
        """Wait until root can log in over the socket; False if mariadbd exited instead."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                return False
            try:
                with self._connect(timeout=2) as conn:
                    conn.ping()
                return True
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in _NOT_LISTENING:
                    self.kill()
                    raise MariaDbError(
                        f"{self} is up, but root cannot log in over {self.socket}: {exc}\n"
                        f"Last lines of {self.logfile}:\n{self.log_tail()}"
                    ) from exc
            if time.monotonic() > deadline:
                self.kill()
                raise MariaDbError(
                    f"{self} did not accept connections within {timeout:g}s (killed it).\n"
                    f"  Fix: pass a longer timeout to start() if crash recovery is slow.\n"
                    f"Last lines of {self.logfile}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _server_pid(self) -> int | None:
        """Return the pid of mariadbd, a child of runuser when we are root."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        if not _ACCOUNT.command_prefix():
            return process.pid
        children = child_pids(process.pid)
        return children[0] if children else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines of the server log, for error messages."""
        return log_tail(self.logfile, lines)


# -- leak protection -----------------------------------------------------------------------

MariaDbServer.live = set()
destroy_at_exit(MariaDbServer.live)


def _kill_orphan(folder: Path) -> None:
    # mariadbd and, when it was started as root, runuser above it.
    kill_processes_with_arg(
        f"--datadir={folder / 'data'}", f"the processes of {folder} to die", MariaDbError
    )
