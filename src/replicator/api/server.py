"""The management HTTP API and the status page, served by ``replicator run``.

Read-only endpoints (health, metrics, pipelines, the page) are open: they carry no secret,
since every message is redacted before it is stored. Mutating ones need ``Authorization:
Bearer TOKEN``, compared in constant time; with no token configured they are refused. The
routes and their JSON are described by ``openapi.json`` beside this module, served at
``/openapi.json``.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from replicator.config import ApiConfig
from replicator.engine.supervisor import Conflict, NoSuchPipeline, Supervisor
from replicator.errors import ConfigError, ReplicatorError
from replicator.observability.logging import get_logger
from replicator.observability.metrics import render
from replicator.observability.redaction import redact

_MAX_BODY = 64 * 1024
# The text format render() writes. Not prometheus_client's CONTENT_TYPE_LATEST: since 0.22 that
# says version=1.0.0, a format whose escaping is negotiated through the Accept header.
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
_PIPELINE_ACTION = re.compile(r"^/pipelines/([^/]+)/(pause|resume|restart)$")
_PIPELINE = re.compile(r"^/pipelines/([^/]+)$")
_GET_ROUTES = frozenset(
    {"/health/live", "/health/ready", "/metrics", "/pipelines", "/openapi.json", "/", "/index.html"}
)
# The page's own script and style only: messages shown on it can hold anything.
_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


class ApiError(Exception):
    """A request answered with an error status and a JSON body."""

    def __init__(
        self,
        status: HTTPStatus,
        error: str,
        fix: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(error)
        self.status = status
        self.headers = headers or {}
        self.body: dict[str, Any] = {"error": redact(error), **extra}
        if fix:
            self.body["fix"] = redact(fix)


Response = tuple[HTTPStatus, dict[str, Any]]


class ManagementApi:
    """Routes requests to the supervisor; owns the HTTP server and its thread."""

    def __init__(self, config: ApiConfig, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._token = config.token()
        self._log = get_logger(component="api")
        self._static = resources.files("replicator.api").joinpath("static")
        handler = _handler(self)
        try:
            self._server = ThreadingHTTPServer((config.host, config.port), handler)
        except OSError as exc:
            raise ConfigError(
                f"the management API cannot listen on {config.listen}: {exc.strerror}",
                fix="choose a free port in api.listen (or stop what holds this one)",
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="management-api", daemon=True
        )

    @property
    def address(self) -> str:
        """host:port the API listens on (the port chosen, when configured as 0)."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Serve on a thread of its own."""
        self._thread.start()
        self._log.info(
            "management API listening",
            url=f"http://{self.address}/",
            mutating="enabled" if self._token else "disabled (no api token configured)",
        )

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever, which must be running
        self._server.server_close()

    # --- routing -----------------------------------------------------------------------------

    def get(self, path: str) -> Response | tuple[HTTPStatus, bytes, str]:
        """Answer a GET."""
        sup = self._supervisor
        if path == "/health/live":
            return HTTPStatus.OK, {"status": "alive"}
        if path == "/health/ready":
            ready, pipelines = sup.ready()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return status, {"ready": ready, "pipelines": pipelines}
        if path == "/metrics":
            return HTTPStatus.OK, render(), _METRICS_TYPE
        if path == "/pipelines":
            return HTTPStatus.OK, {"pipelines": [r.view() for r in sup.runners()]}
        match = _PIPELINE.match(path)
        if match:
            return HTTPStatus.OK, self._runner(match.group(1)).view()
        if path == "/openapi.json":
            spec = resources.files("replicator.api").joinpath("openapi.json").read_bytes()
            return HTTPStatus.OK, spec, "application/json"
        if path in ("/", "/index.html"):
            return self._static_file("index.html")
        if path.startswith("/static/"):
            return self._static_file(path.removeprefix("/static/"))
        raise _no_route("GET", path)

    def post(self, path: str, authorization: str | None) -> Response:
        """Answer a POST (every one of them changes something: the token is required)."""
        if _allowed_methods(path) != "POST":
            raise _no_route("POST", path)
        self._authorize(authorization)
        sup = self._supervisor
        if path == "/config/reload":
            try:
                result = sup.reload()
            except ConfigError as exc:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    "the new configuration is invalid; the running one stays",
                    "fix the file and reload again",
                    problems=[redact(line) for line in _problems(exc)],
                ) from None
            return HTTPStatus.OK, result.as_dict()
        match = _PIPELINE_ACTION.match(path)
        assert match is not None
        name, action = match.groups()
        actions: dict[str, Callable[[str], Any]] = {
            "pause": sup.pause,
            "resume": sup.resume,
            "restart": sup.restart,
        }
        try:
            runner = actions[action](name)
        except NoSuchPipeline as exc:
            raise ApiError(HTTPStatus.NOT_FOUND, exc.message) from None
        except Conflict as exc:
            raise ApiError(HTTPStatus.CONFLICT, exc.message, exc.fix) from None
        return HTTPStatus.OK, {
            "pipeline": name,
            "state": runner.state,
            "pause_requested": runner.pause_requested,
        }

    def _runner(self, name: str) -> Any:
        try:
            return self._supervisor.runner(name)
        except NoSuchPipeline as exc:
            raise ApiError(HTTPStatus.NOT_FOUND, exc.message) from None

    def _authorize(self, authorization: str | None) -> None:
        if self._token is None:
            raise ApiError(
                HTTPStatus.FORBIDDEN,
                "mutating endpoints are disabled: no API token is configured",
                "set api.token_env (an environment variable holding the token) or "
                "api.token_file in the config, then restart",
            )
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest takes time independent of where the strings differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token.encode()
        ):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong API token" if authorization else "missing API token",
                "send the header 'Authorization: Bearer TOKEN' with the configured token",
            )

    def _static_file(self, name: str) -> tuple[HTTPStatus, bytes, str]:
        # Only plain names of files shipped in the folder: no path ever reaches the disk.
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in _STATIC_TYPES:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        item = self._static.joinpath(name)
        if not item.is_file():
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        return HTTPStatus.OK, item.read_bytes(), _STATIC_TYPES[suffix]


_SEE_SPEC = "see GET /openapi.json for the endpoints"


def _allowed_methods(path: str) -> str | None:
    """The methods ``path`` is served for, as a 405's Allow header says them; None when no
    route matches it."""
    if path == "/config/reload" or _PIPELINE_ACTION.match(path):
        return "POST"
    if path in _GET_ROUTES or _PIPELINE.match(path) or path.startswith("/static/"):
        return "GET, HEAD"
    return None


def _no_route(method: str, path: str) -> ApiError:
    """405 naming the methods when the path is served for others, else 404."""
    allowed = _allowed_methods(path)
    if allowed is None:
        return ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {method} {path}", _SEE_SPEC)
    return ApiError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"{method} is not supported on {path}",
        f"use {allowed}; {_SEE_SPEC}",
        headers={"Allow": allowed},
    )


def _problems(exc: ConfigError) -> list[str]:
    """The config error as a list: one entry per problem."""
    text = exc.message
    head, _, rest = text.partition(" problems:\n")
    if rest:
        return [line.strip().removeprefix("- ") for line in rest.splitlines() if line.strip()]
    return [text]


def _handler(api: ManagementApi) -> type[BaseHTTPRequestHandler]:
    log = get_logger(component="api")

    class Handler(BaseHTTPRequestHandler):
        server_version = "replicator"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self._drop_body():
                self._answer(lambda path: api.get(path))

        def do_HEAD(self) -> None:  # noqa: N802
            if self._drop_body():
                self._answer(lambda path: api.get(path), head=True)

        def do_POST(self) -> None:  # noqa: N802
            if self._drop_body():
                self._answer(lambda path: api.post(path, self.headers.get("Authorization")))

        def _drop_body(self) -> bool:
            """Read and drop the request's body (no endpoint takes one); False when it was
            refused, with an answer sent."""
            # Bytes of a body left unread would be parsed as the next request on this
            # connection: whatever is not read exactly ends the connection after the answer.
            raw = (self.headers.get("Content-Length") or "0").strip()
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
            if not raw.isdigit():
                self.close_connection = True
                self._send(HTTPStatus.BAD_REQUEST, {"error": "Content-Length is not a length"})
                return False
            length = int(raw)
            if length > _MAX_BODY:
                self.close_connection = True
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return False
            if length:
                self.rfile.read(length)
            return True

        def _method_not_allowed(self) -> None:
            if not self._drop_body():
                return
            path = self.path.split("?", 1)[0]
            error = _no_route(self.command, path)
            self._send(error.status, error.body, extra=error.headers)

        # Known methods no route takes; http.server answers any other 501, through send_error.
        do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815
        do_OPTIONS = do_TRACE = do_QUERY = do_CONNECT = _method_not_allowed  # noqa: N815

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # http.server's own refusals (an unknown method, a malformed request line, headers
            # too long) answer in JSON like the API's errors, not with its HTML page.
            self.close_connection = True
            status = HTTPStatus(code)
            self._send(
                status,
                {"error": redact(message or status.phrase)},
                extra={"Connection": "close"},
                head=getattr(self, "command", None) == "HEAD",
            )

        def _answer(self, route: Callable[[str], Any], head: bool = False) -> None:
            path = self.path.split("?", 1)[0]
            try:
                result = route(path)
            except ApiError as exc:
                extra = dict(exc.headers)
                if exc.status is HTTPStatus.UNAUTHORIZED:
                    extra["WWW-Authenticate"] = 'Bearer realm="replicator"'
                self._send(exc.status, exc.body, extra=extra, head=head)
                return
            except ReplicatorError as exc:
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {"error": redact(exc.message), "fix": redact(exc.fix or "")},
                    head=head,
                )
                return
            except Exception as exc:  # noqa: BLE001 - a bug: answer, and keep serving
                log.error("API request failed", path=path, error=redact(str(exc)))
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {"error": f"internal error: {type(exc).__name__}"},
                    head=head,
                )
                return
            if len(result) == 3:
                status, body, content_type = result
                self._send_bytes(status, body, content_type, head=head)
            else:
                self._send(result[0], result[1], head=head)

        def _send(
            self,
            status: HTTPStatus,
            body: dict[str, Any],
            extra: dict[str, str] | None = None,
            head: bool = False,
        ) -> None:
            data = json.dumps(body, default=str).encode()
            self._send_bytes(status, data, "application/json", extra, head)

        def _send_bytes(
            self,
            status: HTTPStatus,
            data: bytes,
            content_type: str,
            extra: dict[str, str] | None = None,
            head: bool = False,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if content_type.startswith("text/html"):
                self.send_header("Content-Security-Policy", _CSP)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            # Method, path and status only: never a header (the token travels in one).
            status = str(args[1]) if len(args) > 1 else None
            log.debug("api request", request=redact(self.requestline), status=status)

        def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("api request error", detail=redact(format % args))

    return Handler
