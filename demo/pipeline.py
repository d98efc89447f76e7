"""``replicator run`` as a child process, and ``replicator status --json`` polled beside it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PIPELINE = "shop"
SLOT = "replicator_shop"


def _client_env() -> dict[str, str]:
    """Our environment without PG* variables that could steer the CLI to another server."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def replicator_command(*args: str) -> list[str]:
    """The installed ``replicator`` console script (next to this Python), with ``args``."""
    script = Path(sys.executable).with_name("replicator")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from replicator.cli import main; main()", *args]


def write_config(path: Path, source_dsn: str, target_dsn: str, snapshot: str = "initial") -> Path:
    """Write the demo's pipeline config (readable by us only: it holds passwords)."""
    config: dict[str, Any] = {
        "pipelines": [
            {
                "name": PIPELINE,
                "source": {
                    "type": "postgres",
                    "dsn": source_dsn,
                    "tables": ["shop.*"],
                    "snapshot": snapshot,
                },
                "sink": {"type": "postgres", "dsn": target_dsn},
            }
        ],
        "logging": {"level": "info", "format": "console"},
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class StatusView:
    """The latest ``replicator status --json`` report of the demo's pipeline."""

    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    updated: float = 0.0  # monotonic time of the last successful poll

    @property
    def phase(self) -> str:
        """``snapshotting``, ``streaming``, ... (or ``unknown``)."""
        return str(self.report.get("phase") or "unknown")

    @property
    def snapshot(self) -> list[dict[str, Any]] | None:
        """The per-table snapshot list, or None when this build reports none."""
        tables = self.report.get("snapshot")
        if not isinstance(tables, list):
            return None
        return [t for t in tables if isinstance(t, dict)]

    @property
    def snapshot_done(self) -> bool:
        """Nothing left to copy (true as well when the build reports no snapshot at all)."""
        if self.phase in ("snapshotting", "starting", "not started", "unknown"):
            return False
        tables = self.snapshot
        return tables is None or all(t.get("state") == "done" for t in tables)

    def number(self, key: str) -> int | None:
        """An integer field of the report, when present."""
        value = self.report.get(key)
        return int(value) if isinstance(value, int | float) else None


class ReplicatorProcess:
    """One ``replicator run -c FILE``; output to a log file; status polled in a thread."""

    def __init__(self, config: Path, log: Path) -> None:
        """Prepare (``start`` runs it)."""
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.status = StatusView()
        self._stop_polling = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="status-poller", daemon=True)

    def start(self) -> None:
        """Start the pipeline process and the status poller."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                replicator_command("run", "-c", str(self.config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_client_env(),
            )
        self._poller.start()

    @property
    def exit_code(self) -> int | None:
        """None while it runs."""
        return None if self.process is None else self.process.poll()

    def query_status(self) -> StatusView:
        """Run ``replicator status --json`` once (also records it as the latest view)."""
        result = subprocess.run(
            replicator_command("status", "-c", str(self.config), "--json"),
            capture_output=True,
            text=True,
            timeout=60,
            env=_client_env(),
            check=False,
        )
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            self.status.error = message[-1] if message else f"exit code {result.returncode}"
            return self.status
        try:
            reports = json.loads(result.stdout)
        except json.JSONDecodeError:
            self.status.error = "unreadable output of replicator status --json"
            return self.status
        mine = [r for r in reports if isinstance(r, dict) and r.get("pipeline") == PIPELINE]
        if mine:
            self.status = StatusView(report=mine[0], error=None, updated=time.monotonic())
        return self.status

    def _poll(self) -> None:
        while not self._stop_polling.is_set():
            started = time.monotonic()
            with contextlib.suppress(Exception):  # informational: the display shows staleness
                self.query_status()
            self._stop_polling.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def stop_polling(self) -> None:
        """Stop the status thread (waits for a call in flight)."""
        self._stop_polling.set()
        if self._poller.is_alive():
            self._poller.join(60)

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM (finish the batch, checkpoint, exit 0); SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
                return None
        return self.process.returncode

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the pipeline's output."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
