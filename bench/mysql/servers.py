"""The run's two servers: a throw-away MariaDB source and one PostgreSQL cluster for both
targets, with an account per client and the passwords kept out of every message."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from tests.mariadb import MariaDbServer
from tests.mariadb import connect as mysql_connect
from tests.pgcluster import PgCluster

_FLUSH_LIMIT = 60.0  # seconds MariaDB may take to write its dirty pages before a timed step

_MARIADB_SETTINGS = (
    "version",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_checksum",
    "innodb_flush_log_at_trx_commit",
    "sync_binlog",
    "innodb_buffer_pool_size",
    "character_set_server",
)
_POSTGRES_SETTINGS = (
    "server_version",
    "fsync",
    "full_page_writes",
    "synchronous_commit",
    "shared_buffers",
    "max_wal_size",
)


class Servers:
    """MariaDB (``source``) and PostgreSQL (``target``), created and destroyed together."""

    def __init__(self, source: MariaDbServer, target: PgCluster) -> None:
        """Wrap two running servers; use ``Servers.create``."""
        self.source = source
        self.target = target
        self.secrets: list[str] = [source.password, target.password]

    @classmethod
    def create(cls, durable: bool) -> Servers:
        """Start both. ``durable``: fsync on every commit, on both (as in production)."""
        source = MariaDbServer.create(
            "bench-mysql-source",
            innodb_flush_log_at_trx_commit=1 if durable else 2,
            sync_binlog=1 if durable else 0,
        )
        try:
            target = PgCluster.create("bench-mysql-target", fsync=durable, full_page_writes=durable)
        except BaseException:
            source.destroy()
            raise
        return cls(source, target)

    def destroy(self) -> None:
        """Destroy both servers (their folders too); errors are ignored."""
        for server in (self.source, self.target):
            with contextlib.suppress(Exception):
                server.destroy()

    def account(self, user: str, grants: list[str]) -> str:
        """Create a MariaDB account with a random password and ``grants``; return the password."""
        password = secrets.token_urlsafe(18)
        self.secrets.append(password)
        self.source.create_user(user, password, grants)
        return password

    def mysql(self) -> Any:
        """A new root connection to the source, for the benchmark's own untimed reads."""
        return mysql_connect(self.source.dsn("root", self.source.password))

    def target_dsn(self, database: str) -> str:
        """The superuser's DSN for a database of the target cluster."""
        return self.target.dsn(database)

    def postmaster_pid(self) -> int:
        """The target cluster's postmaster (MariaDB is our child already, via runuser)."""
        return int((self.target.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def flush(self) -> tuple[float, int]:
        """Write out dirty pages on both servers, so no consumer pays for earlier writes.

        PostgreSQL: CHECKPOINT. MariaDB has no such statement; with innodb_max_dirty_pages_pct
        at 0 its page cleaner writes every dirty page, which is waited for (at most 60 s).
        Returns the seconds it took and the InnoDB pages still dirty at the end.
        """
        started = time.monotonic()
        self.target.execute("CHECKPOINT")
        dirty = 0
        with self.mysql() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            try:
                while True:
                    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                    row = cur.fetchone()
                    dirty = 0 if row is None else int(row[1])
                    if dirty == 0 or time.monotonic() - started > _FLUSH_LIMIT:
                        break
                    time.sleep(0.1)
            finally:
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = DEFAULT")
        return time.monotonic() - started, dirty

    def settings(self) -> dict[str, dict[str, str]]:
        """The server settings that shape the results, for the results file."""
        mariadb = {
            name: str(self.source.execute(f"SELECT @@global.{name}")[0][0])
            for name in _MARIADB_SETTINGS
        }
        postgres = {
            name: str(self.target.execute(f"SHOW {name}")[0][0]) for name in _POSTGRES_SETTINGS
        }
        return {"mariadb": mariadb, "postgresql": postgres}
