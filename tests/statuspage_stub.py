"""A stand-in for Replicator's management API, for testing the status page in a browser.

It serves the real page from ``replicator/api/static`` the way ``replicator run`` does
(``/`` and ``/static/<file>``) and canned JSON shaped as ``replicator/api/openapi.json``
says (a test checks that): ``/pipelines``, ``/pipelines/{name}``, ``/health/live``,
``/health/ready``, and the bearer-token ``POST /pipelines/{name}/pause|resume``. Each
``GET /pipelines`` is one step of a live instance: streaming pipelines apply events, and a
requested pause or resume takes effect (as the engine does, at a transaction boundary
after the POST has answered). ``stop()`` closes the port (the page must show that the
instance is unreachable); ``start()`` opens it again.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import replicator

STATIC = Path(replicator.__file__).parent / "api" / "static"
PAUSABLE = ("starting", "snapshotting", "streaming")


def now_iso() -> str:
    """The current time as the API writes it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def pipeline_doc(name: str, **fields: Any) -> dict[str, Any]:
    """A PIPELINE document of the API, streaming and error-free unless ``fields`` say else."""
    doc: dict[str, Any] = {
        "name": name,
        "state": "streaming",
        "source_type": "postgres",
        "sink_type": "postgres",
        "position": "0/16B3748",
        "lag_seconds": 0.12,
        "source_lag_bytes": 1234,
        "retained_bytes": 5678,
        "consumer_lag_messages": None,
        "events_per_second": 0.0,
        "counters": {
            "transactions": 0,
            "events": 0,
            "inserted": 0,
            "updated": 0,
            "deleted": 0,
            "truncated": 0,
        },
        "last_error": None,
        "errors": [],
        "snapshot": [],
        "started_at": now_iso(),
        "paused_at": None,
        "pause_requested": False,
        "dead_letters_open": 0,
        "degraded": None,
        "retry": None,
    }
    doc.update(fields)
    return doc


class StatusStub:
    """The stub API on 127.0.0.1, serving ``pipelines`` (documents by name) in a thread."""

    def __init__(self, pipelines: list[dict[str, Any]], token: str) -> None:
        self.pipelines = {p["name"]: p for p in pipelines}
        self.token = token
        # (method, path with query, Authorization header) of every request, for assertions.
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Listen (on the same port as before, after a ``stop()``) and serve in a thread."""
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port: from now on the page's requests are refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(10)
        self._server = None

    def __enter__(self) -> StatusStub:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def advance(self) -> None:
        """One poll interval of a live instance: pauses and resumes asked for take effect,
        streaming pipelines apply events."""
        for doc in self.pipelines.values():
            if doc["pause_requested"] and doc["state"] in PAUSABLE:
                doc["state"], doc["paused_at"] = "paused", now_iso()
                doc["events_per_second"] = 0.0
            elif not doc["pause_requested"] and doc["state"] == "paused":
                doc["state"], doc["paused_at"] = "streaming", None
            if doc["state"] != "streaming":
                continue
            counters = doc["counters"]
            counters["transactions"] += 5
            counters["events"] += 60
            counters["inserted"] += 50
            counters["updated"] += 10
            doc["events_per_second"] = 40.0 + counters["transactions"] % 35
            doc["lag_seconds"] = 0.05 + (counters["transactions"] % 7) / 10

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """The /health/ready answer: ready while no pipeline has failed or stopped."""
        states = {
            name: {"ready": doc["state"] in (*PAUSABLE, "paused"), "state": doc["state"]}
            for name, doc in self.pipelines.items()
        }
        for state in states.values():
            state["reason"] = None if state["ready"] else f"pipeline is {state['state']}"
            state["warning"] = None
        ready = all(s["ready"] for s in states.values())
        return (200 if ready else 503), {"ready": ready, "pipelines": states}

    def act(self, name: str, action: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """POST /pipelines/{name}/pause or /resume."""
        if authorization != f"Bearer {self.token}":
            return 401, {
                "error": "missing or wrong API token",
                "fix": "send the header Authorization: Bearer <token>, the value of api.token_env",
            }
        doc = self.pipelines.get(name)
        if doc is None:
            return 404, {"error": f"no pipeline named {name!r}", "fix": "GET /pipelines"}
        if doc["state"] in ("failed", "stopped", "stopping"):
            return 409, {
                "error": f"pipeline {name} is {doc['state']}; only a running one can be {action}d",
                "fix": f"restart it first: POST /pipelines/{name}/restart",
            }
        # Only asked for: the state changes at the next step, as the engine's does.
        doc["pause_requested"] = action == "pause"
        return 200, {"pipeline": name, "state": doc["state"], "pause_requested": action == "pause"}


class _Handler(BaseHTTPRequestHandler):
    owner: StatusStub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows the test's own output only

    def do_GET(self) -> None:
        stub = self.owner
        path = urlsplit(self.path).path
        with stub.lock:
            stub.requests.append(("GET", self.path, self.headers.get("Authorization")))
            if path == "/":
                self._send_file(STATIC / "index.html")
            elif path.startswith("/static/"):
                name = path.removeprefix("/static/")
                target = STATIC / name
                if "/" in name or name.startswith(".") or not target.is_file():
                    self._send_json(404, {"error": f"no file {name!r}", "fix": ""})
                else:
                    self._send_file(target)
            elif path == "/pipelines":
                stub.advance()
                self._send_json(200, {"pipelines": copy.deepcopy(list(stub.pipelines.values()))})
            elif path.startswith("/pipelines/"):
                doc = stub.pipelines.get(unquote(path.removeprefix("/pipelines/")))
                if doc is None:
                    self._send_json(404, {"error": "no such pipeline", "fix": "GET /pipelines"})
                else:
                    self._send_json(200, doc)
            elif path == "/health/live":
                self._send_json(200, {"status": "alive"})
            elif path == "/health/ready":
                self._send_json(*stub.readiness())
            else:
                self._send_json(404, {"error": f"no endpoint {path}", "fix": ""})

    def do_POST(self) -> None:
        stub = self.owner
        path = urlsplit(self.path).path
        authorization = self.headers.get("Authorization")
        with stub.lock:
            stub.requests.append(("POST", self.path, authorization))
            parts = path.split("/")
            if len(parts) == 4 and parts[1] == "pipelines" and parts[3] in ("pause", "resume"):
                self._send_json(*stub.act(unquote(parts[2]), parts[3], authorization))
            else:
                self._send_json(404, {"error": f"no endpoint POST {path}", "fix": ""})

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send_file(self, path: Path) -> None:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        self._send(200, kind, path.read_bytes())

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
