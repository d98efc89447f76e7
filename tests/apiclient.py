"""A small HTTP client for the management API, and a running instance to point it at."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import replicator_cmd, wait_for

TOKEN = "t0ken-for-tests-0123456789abcdef"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    """An HTTP response: status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def call(url: str, method: str = "GET", token: str | None = None, timeout: float = 90) -> Reply:
    """One request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


class Instance:
    """``replicator run -c CONFIG`` in the background, with the API at ``base``."""

    def __init__(self, config: Path, port: int, log: Path, env: dict[str, str] | None = None):
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.config = config
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                replicator_cmd("run", "-c", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "REPLICATOR_API_TOKEN": TOKEN, **(env or {})},
            )
        wait_for(self._listening, timeout=60, what="the management API to listen")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"replicator run exited early:\n{self.log.read_text()}")
        try:
            return call(self.base + "/health/live", timeout=2).status == 200
        except OSError:
            return False

    def get(self, path: str) -> Reply:
        """GET ``path``."""
        return call(self.base + path)

    def post(self, path: str, token: str | None = TOKEN) -> Reply:
        """POST ``path`` with the token (or ``token``)."""
        return call(self.base + path, "POST", token)

    def pipeline(self, name: str) -> dict[str, Any]:
        """GET /pipelines/NAME as JSON."""
        reply = self.get(f"/pipelines/{name}")
        assert reply.status == 200, reply.body
        return dict(reply.json())

    def wait_state(self, name: str, state: str, timeout: float = 60) -> None:
        """Wait until the pipeline reports ``state``."""
        wait_for(
            lambda: self.pipeline(name)["state"] == state, timeout=timeout, what=f"{name} {state}"
        )

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if still running."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, None when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        head, _, rest = series.partition("{")
        if head != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        found = {k: v.strip('"') for k, v in found.items()}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None
