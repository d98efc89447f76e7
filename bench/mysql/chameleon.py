"""pg_chameleon as a consumer: its configuration, its commands, and how to tell it is done.

Everything pg_chameleon reads lives under a private ``HOME`` (``~/.pg_chameleon/configuration/
bench.yml``, its pid file, the CSV files of the copy), never the user's. It logs to stdout
(``log_dest: stdout``), which also keeps every command in the foreground: with a log file it
would daemonize. The long commands (``init_replica``, ``start_replica``) run as child
processes in their own session; ``stop`` sends SIGINT, exactly what ``chameleon stop_replica``
sends to the pid in its pid file, and waits for the exit.

Completion signals, from its catalogue ``sch_chameleon`` in the target database:

- initial copy: the ``init_replica`` process has exited and ``t_sources.enm_status`` is
  ``initialised`` (its exit code is 0 even when the copy failed; the status says ``error``);
- caught up with the source: ``t_replica_batch`` holds one row per batch of binlog, keyed by
  the position the batch *starts* at; the reader closes a batch once it has read to the end of
  the binlog (or a batch is full), writes the next batch's start (= the end of the last rows
  event it read) and marks the closed one processed; the replay function then applies it and
  sets ``b_replayed``. Everything up to the goal is applied when the newest batch starts at or
  after the goal's last rows event and every older batch is replayed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from bench.consumers import LOG_TAIL_LINES, ChildProcess
from bench.db import BenchError, Row
from bench.mysql.binlog import BinlogPosition
from bench.mysql.chameleon_venv import RunAs

CONFIG_NAME = "bench"
SOURCE_NAME = "mysql"


@dataclass(frozen=True)
class Endpoint:
    """Where pg_chameleon connects: host, port, user, password (and database for PostgreSQL)."""

    host: str
    port: int
    user: str
    password: str
    database: str = ""


@dataclass(frozen=True)
class BatchProgress:
    """How far pg_chameleon's reader and replay are, from ``t_replica_batch``."""

    status: str
    read_to: BinlogPosition | None
    unreplayed_batches: int
    replayed_rows: int

    def applied(self, goal: BinlogPosition) -> bool:
        """Whether every change up to ``goal`` (a rows event's end) is applied."""
        return self.read(goal) and self.unreplayed_batches == 0

    def read(self, goal: BinlogPosition) -> bool:
        """Whether the reader has read (and closed its batch) up to ``goal``."""
        return self.read_to is not None and self.read_to.reached(goal)


def _settings(mysql: Endpoint, target: Endpoint, schema: str, home: Path) -> dict[str, Any]:
    """The configuration file: pg_chameleon's example values, with our servers.

    Every tuning value (batch sizes, copy memory, copy mode, sleep loop) is the one in
    pg_chameleon's own configuration/config-example.yml. Errors stop the replica
    (``on_error_*: exit``) instead of excluding a table from it: the run must fail loudly.
    """
    chameleon_dir = home / ".pg_chameleon"
    return {
        "pid_dir": str(chameleon_dir / "pid"),
        "log_dir": str(chameleon_dir / "logs"),
        "log_dest": "stdout",
        "log_level": "info",
        "log_days_keep": 1,
        "rollbar_key": "",
        "rollbar_env": "",
        "pg_conn": {
            "host": target.host,
            "port": str(target.port),
            "user": target.user,
            "password": target.password,
            "database": target.database,
            "charset": "utf8",
        },
        "sources": {
            SOURCE_NAME: {
                "db_conn": {
                    "host": mysql.host,
                    "port": str(mysql.port),
                    "user": mysql.user,
                    "password": mysql.password,
                    "charset": "utf8",
                    "connect_timeout": 10,
                },
                "schema_mappings": {schema: schema},
                "limit_tables": None,
                "skip_tables": None,
                "grant_select_to": None,
                "lock_timeout": "120s",
                "my_server_id": 100,
                "replica_batch_size": 10000,
                "replay_max_rows": 10000,
                "batch_retention": "1 day",
                "copy_max_memory": "300M",
                "copy_mode": "file",
                "out_dir": str(home / "out"),
                "sleep_loop": 1,
                "on_error_replay": "exit",
                "on_error_read": "exit",
                "auto_maintenance": "disabled",
                "gtid_enable": False,
                "type": "mysql",
                "skip_events": {"insert": None, "delete": None, "update": None},
                "keep_existing_schema": False,
                "net_read_timeout": 600,
            }
        },
    }


class ChameleonConsumer(ChildProcess):
    """One pg_chameleon source (``mysql``) replicating schema ``schema`` into ``target``."""

    label = "chameleon"

    def __init__(
        self,
        chameleon: Path,
        run_as: RunAs,
        home: Path,
        mysql: Endpoint,
        target: Endpoint,
        schema: str,
        log_path: Path,
        secrets: list[str],
    ) -> None:
        """Lay out the private HOME and write the configuration file (mode 0600)."""
        super().__init__(log_path)
        self.chameleon = chameleon
        self.run_as = run_as
        self.home = home
        self.schema = schema
        self.secrets = secrets
        self._command_name = ""
        chameleon_dir = home / ".pg_chameleon"
        subfolders = ("configuration", "logs", "pid")
        for folder in (home, chameleon_dir, *(chameleon_dir / s for s in subfolders), home / "out"):
            folder.mkdir(mode=0o700, exist_ok=True)
            run_as.chown(folder)
        config = chameleon_dir / "configuration" / f"{CONFIG_NAME}.yml"
        config.touch(mode=0o600)
        config.write_text(yaml.safe_dump(_settings(mysql, target, schema, home), sort_keys=False))
        run_as.chown(config)

    # -- processes ---------------------------------------------------------------------------

    def _argv(self, command: str, with_source: bool = True) -> list[str]:
        argv = [str(self.chameleon), command, "--config", CONFIG_NAME]
        return [*argv, "--source", SOURCE_NAME] if with_source else argv

    def _env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "PATH": f"{self.chameleon.parent}:/usr/bin:/bin",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }

    def _banner(self, command: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== chameleon {command} at {time.ctime()} =====\n".encode())

    def run(self, command: str, with_source: bool = True, timeout: float = 300) -> str:
        """Run a short command to its end (``create_replica_schema``, ``add_source``)."""
        self._banner(command)
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                self._argv(command, with_source),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                cwd=self.home,
                timeout=timeout,
                check=False,
                **self.run_as.popen_options(),
            )
        if result.returncode != 0:
            raise BenchError(
                f"chameleon {command} exited with code {result.returncode}; last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            )
        return self.log_tail()

    def _start(self, command: str) -> None:
        if self.process is not None and self.process.poll() is None:
            raise BenchError(f"chameleon {self._command_name} is still running")
        self._banner(command)
        self._command_name = command
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._argv(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                cwd=self.home,
                start_new_session=True,  # its own process group: killed as a whole on failure
                **self.run_as.popen_options(),
            )

    def start_init(self) -> None:
        """Start ``chameleon init_replica``: the initial copy begins now."""
        self._start("init_replica")

    def start_replica(self) -> None:
        """Start ``chameleon start_replica``: the reader and replay processes catch up."""
        self._start("start_replica")

    def poll(self) -> None:
        """Called on every poll of a wait: ``start_replica`` must be alive; samples memory."""
        if self._command_name == "start_replica":
            self.check_alive()
        self.sample()

    def check_alive(self) -> None:
        """Raise with the end of the log when the running command has exited."""
        if self.process is None:
            raise BenchError("chameleon was never started")
        code = self.process.poll()
        if code is not None:
            raise BenchError(
                f"chameleon {self._command_name} exited with code {code}; last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float) -> None:
        """SIGINT (what ``chameleon stop_replica`` sends), wait for the exit, check the status.

        On SIGINT pg_chameleon terminates its read and replay processes, sets the source's
        status to ``stopped`` and exits; the next ``start_replica`` discards the batch the
        reader had not closed yet and reads it again.
        """
        self.check_alive()
        assert self.process is not None
        self.sample(force=True)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"chameleon {self._command_name} did not exit within {timeout:g}s of SIGINT;"
                f" last lines of {self.log_path}:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """Kill the running command and its children (cleanup after a failure)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of pg_chameleon's output, passwords replaced by ``[secure]``."""
        tail = super().log_tail(lines)
        for secret in self.secrets:
            tail = tail.replace(secret, "[secure]")
        return tail

    # -- catalogue ---------------------------------------------------------------------------

    def source_status(self, conn: psycopg.Connection[Row]) -> str | None:
        """``t_sources.enm_status`` of our source (ready, initialising, initialised, running,
        stopped, error), or None before ``add_source``."""
        try:
            row = conn.execute(
                "SELECT enm_status::text FROM sch_chameleon.t_sources WHERE t_source = %s",
                (SOURCE_NAME,),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return None if row is None else str(row[0])

    def init_done(self, conn: psycopg.Connection[Row]) -> bool:
        """Whether ``init_replica`` has exited with the source ``initialised``.

        Raises when it exited otherwise: pg_chameleon exits 0 even after a failed copy, so the
        status is the real verdict.
        """
        if self.process is None or self.process.poll() is None:
            return False
        status = self.source_status(conn)
        if self.process.returncode != 0 or status != "initialised":
            raise BenchError(
                f"chameleon init_replica exited with code {self.process.returncode} and the"
                f" source's status is {status!r}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )
        return True

    def progress(self, conn: psycopg.Connection[Row]) -> BatchProgress:
        """Read the batches of our source from ``t_replica_batch``."""
        rows = conn.execute(
            "SELECT s.enm_status::text, b.t_binlog_name, b.i_binlog_position, b.b_replayed,"
            " coalesce(b.i_replayed, 0)"
            " FROM sch_chameleon.t_sources s"
            " LEFT JOIN sch_chameleon.t_replica_batch b ON b.i_id_source = s.i_id_source"
            " WHERE s.t_source = %s ORDER BY b.i_id_batch",
            (SOURCE_NAME,),
        ).fetchall()
        if not rows:
            raise BenchError(f"pg_chameleon's catalogue has no source {SOURCE_NAME!r}")
        status = str(rows[0][0])
        batches = [row for row in rows if row[1] is not None]
        newest = batches[-1] if batches else None
        return BatchProgress(
            status=status,
            read_to=None if newest is None else BinlogPosition(str(newest[1]), int(newest[2])),
            # The newest batch is the one the reader fills; every older one must be replayed.
            unreplayed_batches=sum(1 for row in batches[:-1] if not row[3]),
            replayed_rows=sum(int(row[4]) for row in batches),
        )
