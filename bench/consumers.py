"""The two consumers under test: a native subscription and a ``replicator run`` process.

Both expose the same few operations the phases need: stop (and wait until the source's slot
is released), resume, the slot name to watch, and memory sampling. ``ReplicatorProcess`` is
the part of the second that does not depend on the source (start, SIGTERM, status, memory),
shared with the MySQL benchmark (``bench.mysql``); its base ``ChildProcess`` (pid, memory,
log tail) also serves that benchmark's pg_chameleon consumer.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import psycopg
import yaml
from psycopg import sql

from bench.db import (
    TABLES,
    BenchError,
    Row,
    client_env,
    connect,
    parse_lsn,
    peak_memory_kb,
    query,
    slot_state,
    wait_until,
)

_SAMPLE_SPACING = 0.25  # seconds between memory samples while polling
LOG_TAIL_LINES = 30
"""How many lines of a consumer's output an error message quotes."""


def _rss_anon_kb(pid: int) -> int | None:
    """The process's current private resident memory (RssAnon) in kB, or None when gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return None


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Replicator uses threads today, but count processes too)."""
    parents: dict[int, list[int]] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat_path.parent.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def tree_memory_kb(pid: int) -> tuple[int | None, int | None]:
    """Peak RSS (VmHWM) and current RssAnon of ``pid`` plus all its descendants, in kB.

    Both are None when the process is gone. Summing VmHWM over processes is an upper bound of
    the tree's peak: the processes may not all have peaked at the same moment.
    """
    vmhwm = peak_memory_kb(pid)
    anon = _rss_anon_kb(pid)
    if vmhwm is None:
        return None, None
    for child in _children(pid):
        vmhwm += peak_memory_kb(child) or 0
        anon = (anon or 0) + (_rss_anon_kb(child) or 0)
    return vmhwm, anon


class MemoryPeak:
    """The running maximum of peak RSS samples, reset at the start of each phase."""

    def __init__(self) -> None:
        """Start with nothing sampled."""
        self.vmhwm_kb: int | None = None
        self.rss_anon_kb: int | None = None
        self._last_sample = 0.0

    def reset(self) -> None:
        """Forget previous samples (a new phase starts)."""
        self.vmhwm_kb = None
        self.rss_anon_kb = None
        self._last_sample = 0.0

    def due(self) -> bool:
        """Whether enough time passed since the last sample (sampling has a small cost)."""
        return time.monotonic() - self._last_sample >= _SAMPLE_SPACING

    def add(self, vmhwm_kb: int | None, rss_anon_kb: int | None) -> None:
        """Fold one sample into the maxima."""
        self._last_sample = time.monotonic()
        if vmhwm_kb is not None:
            self.vmhwm_kb = max(self.vmhwm_kb or 0, vmhwm_kb)
        if rss_anon_kb is not None:
            self.rss_anon_kb = max(self.rss_anon_kb or 0, rss_anon_kb)


class ChildProcess:
    """A consumer's process, started by a subclass: its pid, its memory, its log's tail."""

    def __init__(self, log_path: Path) -> None:
        """Nothing runs yet; the process's output goes to ``log_path``."""
        self.log_path = log_path
        self.memory = MemoryPeak()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running process's pid, or None."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def sample(self, force: bool = False) -> None:
        """Sample the process's peak RSS (VmHWM, plus any child processes')."""
        pid = self.pid
        if pid is None or (not force and not self.memory.due()):
            return
        self.memory.add(*tree_memory_kb(pid))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Consumer(Protocol):
    """What a catch-up phase needs from either consumer."""

    label: str
    slot: str
    target_dsn: str
    memory: MemoryPeak

    def poll(self) -> None:
        """Called on every poll of a wait (sampling memory, checking liveness)."""

    def applied_lsn(self, conn: psycopg.Connection[Row]) -> int | None:
        """End LSN of the last source transaction applied in the target, if known."""


class NativeConsumer:
    """A PostgreSQL publication on the source and a subscription in the native target."""

    label = "native"

    def __init__(self, source_dsn: str, target_dsn: str) -> None:
        """Describe the subscription; ``prepare`` and ``create`` make it."""
        self.source_dsn = source_dsn
        self.target_dsn = target_dsn
        self.publication = "bench_native_pub"
        self.subscription = "bench_native"
        self.slot = "bench_native"  # CREATE SUBSCRIPTION names the slot after itself
        self.memory = MemoryPeak()
        self._last_launch = 0.0

    def prepare(self) -> None:
        """Create the publication of the four pgbench tables on the source."""
        query(
            self.source_dsn,
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(self.publication),
                sql.SQL(", ").join(sql.Identifier("public", table) for table in TABLES),
            ),
        )

    def create(self) -> None:
        """CREATE SUBSCRIPTION with ``copy_data = true``: the initial copy starts now."""
        query(
            self.target_dsn,
            sql.SQL(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = true)"
            ).format(
                sql.Identifier(self.subscription),
                sql.Literal(self.source_dsn),
                sql.Identifier(self.publication),
            ),
        )
        self._last_launch = time.monotonic()

    def launcher_throttle(self) -> float:
        """Seconds to wait before an ENABLE gets its apply worker started at once.

        PostgreSQL 15's logical replication launcher starts workers at most once per
        ``wal_retrieve_retry_interval`` (5 s): an ENABLE sooner than that after the last
        start sleeps a whole interval before the worker starts. A real outage lasts longer,
        so the benchmark waits this out untimed instead of charging it to native.
        """
        rows = query(
            self.target_dsn,
            "SELECT setting::int FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'",
        )
        interval = rows[0][0] / 1000 if rows else 5.0
        return max(0.0, self._last_launch + interval + 0.5 - time.monotonic())

    def options(self) -> dict[str, Any]:
        """The subscription's effective options, for the results file."""
        rows = query(
            self.target_dsn,
            "SELECT substream::text, subbinary, subsynccommit FROM pg_subscription"
            " WHERE subname = %s",
            (self.subscription,),
        )
        if not rows:
            return {}
        stream, binary, sync_commit = rows[0]
        return {"streaming": stream, "binary": binary, "synchronous_commit": sync_commit}

    def initial_copy_done(self, conn: psycopg.Connection[Row]) -> bool:
        """Every table of the subscription is in state 'r' (ready) in pg_subscription_rel."""
        rows = conn.execute(
            "SELECT r.srsubstate FROM pg_subscription_rel r"
            " JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
            (self.subscription,),
        ).fetchall()
        return len(rows) == len(TABLES) and all(state == "r" for (state,) in rows)

    def worker_pids(self) -> list[int]:
        """The pids of the subscription's apply and table-sync workers running now."""
        rows = query(
            self.target_dsn,
            "SELECT pid FROM pg_stat_subscription WHERE subname = %s AND pid IS NOT NULL",
            (self.subscription,),
        )
        return [int(pid) for (pid,) in rows]

    def sample(self, force: bool = False) -> None:
        """Sample the workers' peak memory (VmHWM includes the shared buffers they touched)."""
        if not force and not self.memory.due():
            return
        for pid in self.worker_pids():
            self.memory.add(peak_memory_kb(pid), _rss_anon_kb(pid))

    def stop(self, timeout: float) -> None:
        """ALTER SUBSCRIPTION … DISABLE and wait until the source's slot is inactive."""
        self.sample(force=True)
        query(
            self.target_dsn,
            sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(self.subscription)),
        )
        with connect(self.source_dsn) as conn:
            wait_until(
                lambda: not slot_state(conn, self.slot).active,
                timeout,
                f"slot {self.slot} to become inactive after DISABLE",
            )

    def resume(self) -> None:
        """ALTER SUBSCRIPTION … ENABLE: the apply worker starts and catches up."""
        query(
            self.target_dsn,
            sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(self.subscription)),
        )
        self._last_launch = time.monotonic()

    def poll(self) -> None:
        """Called on every poll of a wait: samples memory now and then."""
        self.sample()

    def applied_lsn(self, conn: psycopg.Connection[Row]) -> int | None:
        """The subscription's replication origin: end LSN of the last applied commit."""
        row = conn.execute(
            "SELECT os.remote_lsn::text FROM pg_replication_origin_status os"
            " JOIN pg_subscription s ON os.external_id = 'pg_' || s.oid::text"
            " WHERE s.subname = %s",
            (self.subscription,),
        ).fetchone()
        return parse_lsn(row[0]) if row and row[0] else None


class ReplicatorProcess(ChildProcess):
    """``replicator run -c config.yaml`` as a child process, whatever the pipeline's source.

    Writes the config (mode 0600: it holds passwords), starts and stops the process, samples
    its memory, and asks ``replicator status --json`` whether the initial snapshot is over.
    """

    label = "ours"

    def __init__(
        self,
        config: dict[str, Any],
        config_path: Path,
        log_path: Path,
        pipeline: str = "bench",
    ) -> None:
        """Write ``config`` to ``config_path``; ``start`` runs it."""
        super().__init__(log_path)
        self.pipeline = pipeline
        self.config = config
        self.config_path = config_path
        self._last_status_call = 0.0
        self.last_status: dict[str, Any] | None = None
        # Private before the first byte: the file holds the source's and target's passwords.
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _command(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("replicator")), *args]

    def start(self) -> None:
        """Start ``replicator run``; its output is appended to the log file."""
        if self.process is not None and self.process.poll() is None:
            raise BenchError("replicator is already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n===== replicator run started at {time.ctime()} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self._command("run", "-c", str(self.config_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=client_env(),
            )

    def check_alive(self) -> None:
        """Raise with the end of the log when the process has exited."""
        if self.process is None:
            raise BenchError("replicator was never started")
        code = self.process.poll()
        if code is not None:
            raise BenchError(
                f"replicator run exited with code {code}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    def poll(self) -> None:
        """Called on every poll of a wait: the process must be alive; samples memory."""
        self.check_alive()
        self.sample()

    def stop(self, timeout: float) -> None:
        """SIGTERM (finish the batch, checkpoint, confirm) and wait for exit code 0."""
        self.check_alive()
        assert self.process is not None
        self.sample(force=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"replicator did not exit within {timeout:g}s of SIGTERM; last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            ) from None
        if code != 0:
            raise BenchError(
                f"replicator exited with code {code} after SIGTERM; last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """Kill the process if it still runs (cleanup after a failure)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)

    def status(self) -> list[dict[str, Any]]:
        """``replicator status -c config --json``: one report per pipeline."""
        result = subprocess.run(
            self._command("status", "-c", str(self.config_path), "--json"),
            capture_output=True,
            text=True,
            timeout=120,
            env=client_env(),
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"replicator status failed ({result.returncode}):\n{result.stderr}")
        reports = json.loads(result.stdout)
        if not isinstance(reports, list):
            raise BenchError(f"unexpected replicator status output: {result.stdout[:500]}")
        return reports

    def snapshot_done(self, min_spacing: float = 1.0) -> bool:
        """Whether ``replicator status`` says the initial snapshot is over.

        Each report may carry ``phase`` ("snapshotting", then "streaming") and ``snapshot``
        (a list of tables with ``state`` pending | copying | done). A build that reports
        neither is judged by the row counts alone. Calls are spaced ``min_spacing`` seconds
        apart: the CLI is a Python process competing for the same CPUs.
        """
        if time.monotonic() - self._last_status_call < min_spacing:
            return False
        self._last_status_call = time.monotonic()
        reports = [r for r in self.status() if r.get("pipeline") == self.pipeline]
        if not reports:
            raise BenchError(f"replicator status has no pipeline {self.pipeline!r}")
        report = reports[0]
        self.last_status = report
        if report.get("phase") == "snapshotting":
            return False
        tables = report.get("snapshot")
        if isinstance(tables, list):
            return all(isinstance(t, dict) and t.get("state") == "done" for t in tables)
        return True

    def check(self) -> tuple[int, str]:
        """``replicator check -c config``: its exit code and output (stdout + stderr)."""
        result = subprocess.run(
            self._command("check", "-c", str(self.config_path)),
            capture_output=True,
            text=True,
            timeout=300,
            env=client_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode, (result.stdout + result.stderr).strip()


class ReplicatorConsumer(ReplicatorProcess):
    """Replicator with one pipeline ``bench`` from the pgbench source database."""

    def __init__(
        self,
        source_dsn: str,
        target_dsn: str,
        workdir: Path,
        log_path: Path,
        snapshot: str,
    ) -> None:
        """Write the pipeline's config file; ``start`` runs it."""
        self.source_dsn = source_dsn
        self.target_dsn = target_dsn
        self.slot = "replicator_bench"
        config: dict[str, Any] = {
            "pipelines": [
                {
                    "name": "bench",
                    "source": {
                        "type": "postgres",
                        "dsn": source_dsn,
                        "tables": [f"public.{table}" for table in TABLES],
                        "snapshot": snapshot,
                    },
                    "sink": {"type": "postgres", "dsn": target_dsn},
                    # batch: Replicator's defaults (max_events, max_bytes, max_age_ms).
                }
            ],
            "logging": {"level": "info", "format": "console"},
        }
        super().__init__(config, workdir / "replicator.yaml", log_path, pipeline="bench")

    def applied_lsn(self, conn: psycopg.Connection[Row]) -> int | None:
        """Replicator's checkpoint in the target (``_replicator.checkpoints``), if readable.

        Best effort: it is an internal table, so any error just means "unknown".
        """
        try:
            row = conn.execute(
                "SELECT position->>'lsn' FROM _replicator.checkpoints WHERE pipeline = %s",
                (self.pipeline,),
            ).fetchone()
            return parse_lsn(row[0]) if row and row[0] else None
        except (psycopg.Error, ValueError):
            return None

    def stop(self, timeout: float) -> None:
        """SIGTERM, exit code 0, then wait until the source's slot is released."""
        super().stop(timeout)
        with connect(self.source_dsn) as conn:
            wait_until(
                lambda: not slot_state(conn, self.slot).active,
                timeout,
                f"slot {self.slot} to become inactive after replicator exited",
            )
