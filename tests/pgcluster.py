"""Throw-away PostgreSQL clusters for tests, e2e scripts and benchmarks.

A `PgCluster` is a real server made with the Debian binaries (`initdb` + `pg_ctl`) in its own
folder under /tmp, listening on 127.0.0.1 on a free port, with SCRAM password authentication
and `wal_level=logical`::

    cluster = PgCluster.create("source")
    cluster.execute("CREATE TABLE t (id int PRIMARY KEY)")
    dsn = cluster.create_database("app")
    ...
    cluster.destroy()

initdb refuses to run as root, so when this process is root the server programs run as the
`postgres` OS user and the folder belongs to that user. Clusters still alive when the process
exits are destroyed by an atexit hook; folders left behind by a process that died without
running it (SIGKILL) are reaped by the next `PgCluster.create`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, LiteralString, Protocol
from urllib.parse import quote

import psycopg
from psycopg import sql

from tests.localserver import (
    OsAccount,
    cmdline_has,
    destroy_at_exit,
    free_port,
    group_alive,
    log_tail,
    log_text,
    process_alive,
    reap_orphans,
    server_env,
    wait_until,
)

__all__ = ["ClusterFactory", "PgCluster", "PgClusterError", "SettingValue", "find_bindir"]

SettingValue = str | int | bool

_FOLDER_PREFIX = "replicator-test-"
_LOG_TAIL_LINES = 40
_START_ATTEMPTS = 3
_START_TIMEOUT = 60.0

_DEFAULT_SETTINGS: dict[str, SettingValue] = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": 40,
    "max_wal_senders": 40,
    # Durability against an OS crash is irrelevant for throw-away clusters, and skipping
    # fsync keeps them fast on small CI machines. Committed data still survives `kill()`:
    # a killed process does not lose what it already handed to the OS page cache.
    "fsync": False,
    "full_page_writes": False,
    "shared_buffers": "128MB",
    "max_connections": 200,
    # pg_ctl sends the server's stderr to `logfile`, outside the data directory.
    "logging_collector": False,
}


class PgClusterError(RuntimeError):
    """A test cluster could not be created, started or stopped; the message says why."""


class ClusterFactory(Protocol):
    """Make a dedicated cluster: `factory("preflight", wal_level="replica")`."""

    def __call__(self, name: str, /, **settings: SettingValue) -> PgCluster: ...


@functools.cache
def find_bindir() -> Path:
    """Return the bin folder of the newest PostgreSQL installed under /usr/lib/postgresql.

    `REPLICATOR_PG_BINDIR` overrides the search (e.g. to test against an older major version).
    """
    override = os.environ.get("REPLICATOR_PG_BINDIR")
    if override:
        bindir = Path(override)
        if not (bindir / "initdb").exists():
            raise PgClusterError(f"REPLICATOR_PG_BINDIR={override} has no initdb in it.")
        return bindir
    candidates = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.parent.parent.name.isdigit()
    ]
    if not candidates:
        raise PgClusterError(
            "No PostgreSQL server binaries found under /usr/lib/postgresql/*/bin.\n"
            "  Fix: run `make servers` (or `apt-get install postgresql`), "
            "or set REPLICATOR_PG_BINDIR."
        )
    # Numeric sort: "9" must not beat "15".
    return max(candidates, key=lambda bindir: int(bindir.parent.name))


@functools.cache
def _server_version(bindir: Path) -> int:
    output = subprocess.run(
        [str(bindir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if match is None:
        raise PgClusterError(f"Cannot read the major version from {output!r}.")
    return int(match.group(1))


def _format_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _conf_line(name: str, value: SettingValue) -> str:
    text = _format_value(value).replace("'", "''")
    return f"{name} = '{text}'\n"


def _setting_identifier(name: str) -> sql.Composable:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", name):
        raise ValueError(f"{name!r} is not a PostgreSQL setting name.")
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def _postmaster_pid(lock_file: Path) -> int | None:
    """Return the pid on the first line of a postmaster lock file, if there is one."""
    try:
        first_line = lock_file.read_text().split("\n", 1)[0]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    wait_until(condition, timeout, what, PgClusterError)


_ACCOUNT = OsAccount("postgres", "postgresql", "initdb", PgClusterError)


class PgCluster:
    """A throw-away PostgreSQL server in its own folder under /tmp.

    Make one with `PgCluster.create`; it is running when returned. Its folder holds `data/`
    (the data directory), `postgresql.log` (everything the server logged) and the unix socket.
    The superuser `postgres` logs in over TCP with `password` (SCRAM-SHA-256).
    """

    host = "127.0.0.1"
    superuser = "postgres"

    def __init__(
        self,
        name: str,
        folder: Path,
        port: int,
        password: str,
        bindir: Path,
        settings: dict[str, SettingValue],
    ) -> None:
        """Describe a cluster folder; use `PgCluster.create` to make one."""
        self.name = name
        self.folder = folder
        self.port = port
        self.password = password
        self.bindir = bindir
        self._settings = settings
        self.version = _server_version(bindir)
        self._destroyed = False

    def __repr__(self) -> str:
        return f"PgCluster(name={self.name!r}, port={self.port}, folder={str(self.folder)!r})"

    @property
    def datadir(self) -> Path:
        """The data directory (`PGDATA`)."""
        return self.folder / "data"

    @property
    def logfile(self) -> Path:
        """The server log; `pg_ctl` appends to it on every start."""
        return self.folder / "postgresql.log"

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, /, **settings: SettingValue) -> PgCluster:
        """Make, configure and start a new cluster; `settings` override the defaults.

        Example: `PgCluster.create("preflight", wal_level="replica")`.
        """
        reap_orphans(_FOLDER_PREFIX, _kill_orphan)
        bindir = find_bindir()
        safe_name = re.sub(r"[^A-Za-z0-9_]", "_", name)[:20]
        folder = _ACCOUNT.new_folder(f"{_FOLDER_PREFIX}{safe_name}-")
        try:
            cluster_settings = {
                **_DEFAULT_SETTINGS,
                "unix_socket_directories": str(folder),
                **settings,
            }
            password = secrets.token_urlsafe(18)
            cluster = cls(name, folder, free_port(), password, bindir, cluster_settings)
            _live_clusters.add(cluster)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            cluster._initdb()
            cluster._write_config()
            cluster._start(_START_TIMEOUT, pick_new_port=True)
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections (after crash recovery)."""
        self._start(timeout, pick_new_port=False)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server (`mode`: smart, fast or immediate); a stopped server is left alone."""
        if not self.is_running:
            return
        self._pg_ctl("stop", "-m", mode, "-t", str(int(timeout)), timeout=timeout)

    def restart(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server with `mode` and start it again on the same port."""
        self.stop(mode, timeout)
        self.start(timeout)

    def kill(self, timeout: float = 30) -> None:
        """Crash the server: SIGKILL the postmaster and all its processes at once.

        Open connections break mid-flight, as on a machine crash. Committed data survives
        (the OS still holds it), and `start()` afterwards runs crash recovery.
        """
        pid = _postmaster_pid(self.datadir / "postmaster.pid")
        if pid is None or not process_alive(pid):
            return
        # pg_ctl makes the postmaster a process-group leader. Killing only the postmaster would
        # leave its backends running for a while, holding the shared memory a new postmaster
        # refuses to start next to.
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
                _wait_until(lambda: not group_alive(pid), timeout, f"{self}'s processes to die")
            else:
                os.kill(pid, signal.SIGKILL)
                _wait_until(lambda: not process_alive(pid), timeout, f"{self} to die")

    def destroy(self) -> None:
        """Stop the server (immediately) and delete its folder; calling it again does nothing."""
        if self._destroyed:
            return
        try:
            if self.is_running:
                try:
                    self.stop("immediate", timeout=30)
                except PgClusterError:
                    self.kill()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._destroyed = True
            _live_clusters.discard(self)

    @property
    def is_running(self) -> bool:
        """Tell whether the postmaster of this cluster is alive."""
        pid = _postmaster_pid(self.datadir / "postmaster.pid")
        return pid is not None and process_alive(pid)

    # -- settings --------------------------------------------------------------------------

    def set_settings(self, *, restart: bool = False, **settings: SettingValue) -> None:
        """Change settings with ALTER SYSTEM and apply them by reloading (or restarting).

        A setting that only takes effect at server start needs `restart=True`; without it
        this raises instead of leaving the change silently pending. On return, new
        connections see the new values.
        """
        if not settings:
            return
        if not restart:
            rows = self._query(
                "SELECT name FROM pg_settings WHERE name = ANY(%s) AND context = 'postmaster'",
                [list(settings)],
            )
            if rows:
                names = ", ".join(sorted(row[0] for row in rows))
                raise PgClusterError(f"{names} only change at server start: pass restart=True.")
        for name, value in settings.items():
            self._query(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    _setting_identifier(name), sql.Literal(_format_value(value))
                )
            )
        if restart:
            self.restart()
        else:
            self._reload()

    def _reload(self, timeout: float = 10) -> None:
        # pg_reload_conf() only signals the postmaster, which rereads the files a moment
        # later; new backends inherit its load time, so wait until one sees a newer one.
        (before,) = self._query("SELECT pg_conf_load_time()")[0]
        self._query("SELECT pg_reload_conf()")
        _wait_until(
            lambda: self._query("SELECT pg_conf_load_time()")[0][0] > before,
            timeout,
            f"{self} to reload its configuration",
        )

    # -- SQL -------------------------------------------------------------------------------

    def dsn(
        self, dbname: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        """Return a libpq URI for `dbname`, as the superuser unless `user` is given.

        `password` defaults to the superuser's password only when `user` is the superuser;
        pass `password=""` for a URI without one.
        """
        user = self.superuser if user is None else user
        if password is None:
            password = self.password if user == self.superuser else ""
        credentials = quote(user, safe="")
        if password:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def execute(
        self, query: str, dbname: str = "postgres", *, params: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run `query` as the superuser in autocommit mode and return the rows it returned.

        `query` may hold several statements when `params` is not given; the rows are those of
        the last statement, an empty list when it returns none (DDL, INSERT without RETURNING).
        """
        return self._query(query, params, dbname)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its DSN."""
        self._query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str, timeout: float = 30) -> None:
        """Drop a database with its logical replication slots, even while they are in use.

        Walsenders streaming from the slots are terminated first, prepared transactions are
        rolled back; a database that does not exist is ignored.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._release_database(name)
            try:
                self._query(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
                return
            except psycopg.errors.ObjectInUse:
                # A client re-acquired a slot (e.g. pg_recvlogical reconnecting) between the
                # release and the drop; release again.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _release_database(self, name: str) -> None:
        slots = self._query(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", [name]
        )
        for slot_name, active_pid in slots:
            if active_pid is not None:
                # With a timeout, pg_terminate_backend waits until the walsender has exited
                # and released the slot.
                self._query("SELECT pg_terminate_backend(%s, 5000)", [active_pid])
            with contextlib.suppress(psycopg.errors.UndefinedObject, psycopg.errors.ObjectInUse):
                self._query("SELECT pg_drop_replication_slot(%s)", [slot_name])
        # Prepared transactions block DROP DATABASE even WITH (FORCE), and can only be rolled
        # back from inside their own database.
        prepared = self._query("SELECT gid FROM pg_prepared_xacts WHERE database = %s", [name])
        for (gid,) in prepared:
            with contextlib.suppress(psycopg.errors.UndefinedObject):
                self._query(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), dbname=name)

    def _query(
        self,
        query: LiteralString | sql.SQL | sql.Composed,
        params: Sequence[Any] | None = None,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        with (
            psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(query, params)
            rows: list[tuple[Any, ...]] = []
            while True:
                rows = cur.fetchall() if cur.description is not None else []
                if not cur.nextset():
                    return rows

    # -- internals -------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_ACCOUNT.command_prefix(), *args],
            cwd=self.folder,  # the postgres user may not be allowed into our working directory
            env=server_env("PG"),  # PGDATA, PGPORT, ... must not steer the programs
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _write_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        _ACCOUNT.write_file(path, text, mode)

    def _initdb(self) -> None:
        pwfile = self.folder / "pwfile"
        self._write_file(pwfile, self.password + "\n")
        try:
            result = self._run(
                str(self.bindir / "initdb"),
                f"--pgdata={self.datadir}",
                f"--username={self.superuser}",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster need not survive an OS crash
                "--no-instructions",
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PgClusterError(f"initdb failed for {self}:\n{result.stdout}{result.stderr}")

    def _write_config(self) -> None:
        conf = self.datadir / "postgresql.conf"
        base = conf.read_text().split("\n# -- replicator test settings --\n")[0]
        lines = [_conf_line(name, value) for name, value in self._settings.items()]
        lines.append(_conf_line("port", self.port))
        self._write_file(conf, f"{base}\n# -- replicator test settings --\n{''.join(lines)}")
        # The socket folder is private to the server's OS user, so local trust lets only that
        # user (and root) in; everyone else must use TCP with a password.
        self._write_file(
            self.datadir / "pg_hba.conf",
            "local all all trust\n"
            "local replication all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n",
        )

    def _start(self, timeout: float, pick_new_port: bool) -> None:
        if self._destroyed:
            raise PgClusterError(f"{self} was destroyed.")
        if self.is_running:
            return
        self._remove_stale_lock_files()
        for attempt in range(1, _START_ATTEMPTS + 1):
            log_offset = self.logfile.stat().st_size if self.logfile.exists() else 0
            result = self._pg_ctl(
                "start",
                f"--log={self.logfile}",
                "-t",
                str(int(timeout)),
                timeout=timeout,
                check=False,
            )
            if result.returncode == 0:
                return
            new_log = log_text(self.logfile, log_offset)
            port_taken = "Address already in use" in new_log
            if port_taken and pick_new_port and attempt < _START_ATTEMPTS:
                self.port = free_port()
                self._write_config()
                continue
            raise PgClusterError(
                f"{self} did not start (pg_ctl exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n"
                f"Last lines of {self.logfile}:\n{self.log_tail()}"
            )

    def _remove_stale_lock_files(self) -> None:
        # After a crash the lock files name a dead postmaster. PostgreSQL itself ignores them
        # once that pid is gone, but a killed process stays a zombie until the container's
        # init reaps it, and the server takes a zombie's pid for a live postmaster.
        for lock_file in (
            self.datadir / "postmaster.pid",
            self.folder / f".s.PGSQL.{self.port}.lock",
        ):
            pid = _postmaster_pid(lock_file)
            if pid is not None and not process_alive(pid):
                lock_file.unlink(missing_ok=True)

    def _pg_ctl(
        self, action: str, *args: str, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = self._run(
            str(self.bindir / "pg_ctl"),
            action,
            f"--pgdata={self.datadir}",
            "--wait",
            "--silent",
            *args,
            # pg_ctl enforces `timeout` itself; this margin only guards against a hung pg_ctl.
            timeout=timeout + 30,
        )
        if check and result.returncode != 0:
            raise PgClusterError(
                f"pg_ctl {action} failed for {self} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n"
                f"Last lines of {self.logfile}:\n{self.log_tail()}"
            )
        return result

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines of the server log, for error messages."""
        return log_tail(self.logfile, lines)


# -- leak protection -----------------------------------------------------------------------

_live_clusters: set[PgCluster] = set()
destroy_at_exit(_live_clusters)


def _kill_orphan(folder: Path) -> None:
    datadir = folder / "data"
    pid = _postmaster_pid(datadir / "postmaster.pid")
    # Only kill the pid when it is still the postmaster of this very data directory.
    if pid is not None and process_alive(pid) and cmdline_has(pid, str(datadir)):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
