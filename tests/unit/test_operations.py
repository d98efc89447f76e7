"""Operations pieces that need no server: API config and tokens, redaction of configured
columns, the throughput window, the error log, and the API's answers on a real socket."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from replicator.api.server import ManagementApi
from replicator.config import ApiConfig, load_config
from replicator.engine.progress import RateWindow
from replicator.engine.supervisor import Supervisor
from replicator.errors import ConfigError, SinkError
from replicator.observability import errorlog
from replicator.observability.redaction import MASK, configure_redaction, redact
from tests.support import wait_for

PIPELINE = """
pipelines:
  - name: ops
    source:
      {type: postgres, dsn: "postgresql://repl:s3cret-pw@127.0.0.1:1/shop", tables: [public.*]}
    sink: {type: postgres, dsn: "postgresql://w:s3cret-pw@127.0.0.1:1/wh"}
    retry: {initial_delay_s: 0.2, max_delay_s: 0.5, give_up_after_s: 3}
"""


def _config(tmp_path: Path, api: str) -> Path:
    path = tmp_path / "replicator.yaml"
    path.write_text(PIPELINE + api + "\n")
    return path


def test_api_token_from_env_file_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "token").write_text("  file-token-0123456789\n")
    by_file = load_config(_config(tmp_path, "api: {listen: '127.0.0.1:0', token_file: token}"))
    assert by_file.api is not None
    assert by_file.api.token() == "file-token-0123456789"  # relative to the config file
    assert redact("x file-token-0123456789 y") == f"x {MASK} y"

    monkeypatch.setenv("OPS_TOKEN", "env-token-0123456789abc")
    by_env = load_config(_config(tmp_path, "api: {token_env: OPS_TOKEN}"))
    assert by_env.api is not None and by_env.api.token() == "env-token-0123456789abc"
    assert by_env.api.listen == "127.0.0.1:8080"  # loopback unless configured otherwise
    assert load_config(_config(tmp_path, "api: {}")).api.token() is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        ("api: {token_env: UNSET_TOKEN_VAR}", "UNSET_TOKEN_VAR, which is not set"),
        ("api: {token_file: missing}", "cannot read api.token_file"),
        ("api: {token_env: SHORT_TOKEN}", "shorter than 16 characters"),
    ],
)
def test_api_token_mistakes_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str, expected: str
):
    monkeypatch.setenv("SHORT_TOKEN", "short")
    monkeypatch.delenv("UNSET_TOKEN_VAR", raising=False)
    config = load_config(_config(tmp_path, api)).api
    assert config is not None
    with pytest.raises(ConfigError, match=expected) as raised:
        config.token()
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        ("api: {listen: localhost}", "use host:port"),
        ("api: {token_env: 'not a name'}", "name an environment variable"),
        ("api: {token_env: A, token_file: b}", "not both"),
        ("observability: {otlp_endpoint: 'collector:4318'}", "OTLP/HTTP URL"),
        ("api: {auth: none}", "unknown key 'auth'"),
    ],
)
def test_api_config_mistakes_are_named(tmp_path: Path, api: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        load_config(_config(tmp_path, api))


def test_configured_columns_are_masked_in_server_messages():
    configure_redaction(["public.users.email", "ssn"])
    try:
        detail = 'duplicate key value violates unique constraint "u_email"\n'
        assert redact(detail + "DETAIL:  Key (email)=(ann@example.com) already exists.") == (
            detail + f"DETAIL:  Key (email)=({MASK}) already exists."
        )
        assert "ann@example.com" not in redact("Key (tenant, email)=(7, ann@example.com) is not")
        assert redact("Key (id)=(5) already exists.") == "Key (id)=(5) already exists."
        failing = redact("Failing row contains (1, 123-45-6789, x).")
        assert "123-45" not in failing and MASK in failing
    finally:
        configure_redaction([])
    assert redact("Key (email)=(ann@example.com) already exists.").count("ann@") == 1


def test_rate_window_spans_the_last_seconds():
    window = RateWindow(window=10)
    assert window.rate(0, now=0) == 0
    for second in range(31):
        window.add(second * 100, now=second)
    assert window.rate(3000, now=30) == pytest.approx(100)
    # Idle for a minute: the rate falls to zero instead of keeping the last figure.
    assert window.rate(3000, now=90) == 0


def test_error_log_keeps_the_last_redacted_errors():
    for i in range(errorlog.KEEP + 5):
        errorlog.record("unit-errors", SinkError(f"failed {i} at postgresql://u:pw-{i}x@h/db"))
    recent = errorlog.recent("unit-errors")
    assert len(recent) == errorlog.KEEP
    assert recent[-1].message == f"failed {errorlog.KEEP + 4} at postgresql://u:{MASK}@h/db"
    assert recent[-1].kind == "SinkError"
    errorlog.forget("unit-errors")
    assert errorlog.recent("unit-errors") == []


# --- the API on a real socket, with pipelines that never started -----------------------------


def _spec() -> dict[str, Any]:
    path = Path(__file__).parents[2] / "src/replicator/api/openapi.json"
    return dict(json.loads(path.read_text()))


def _call(base: str, path: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        base + path, method=method, data=b"" if method == "POST" else None
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _body(response.read(), response.headers["Content-Type"])
    except urllib.error.HTTPError as exc:
        return exc.code, _body(exc.read(), exc.headers["Content-Type"])


def _body(data: bytes, content_type: str) -> Any:
    return json.loads(data) if content_type == "application/json" else data.decode()


def _check(spec: dict[str, Any], route: str, method: str, status: int, body: Any) -> None:
    """``body`` matches the spec's schema for the route's response ``status``."""
    responses = spec["paths"][route][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {route} answered {status}, not in the spec"
    content = responses[str(status)].get("content", {})
    schema = (content.get("application/json") or {}).get("schema")
    if schema is not None:
        resolver = {"components": spec["components"], **schema}
        jsonschema.validate(body, resolver, cls=jsonschema.Draft202012Validator)


def test_api_answers_match_the_openapi_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every route answers as the spec says, including its errors; no answer holds the
    DSN password; the spec lists exactly the routes served."""
    monkeypatch.setenv("OPS_TOKEN", "unit-token-0123456789")
    path = _config(tmp_path, "api: {listen: '127.0.0.1:0', token_env: OPS_TOKEN}")
    config = load_config(path)
    assert config.api is not None
    supervisor = Supervisor(config, path, None, isolate_failures=True)
    api = ManagementApi(config.api, supervisor)
    api.start()
    supervisor.start()  # nothing listens on port 1: the pipeline retries, then gives up
    base = f"http://{api.address}"
    spec = _spec()
    token = "unit-token-0123456789"
    try:
        wait_for(lambda: _call(base, "/pipelines/ops")[1]["retry"] is not None, 30, "a retry")
        status, view = _call(base, "/pipelines/ops")
        _check(spec, "/pipelines/{name}", "GET", status, view)
        assert view["state"] == "retrying" and view["retry"]["attempt"] >= 1
        assert "Connection refused" in view["retry"]["error"]
        status, ready = _call(base, "/health/ready")
        assert status == 503 and ready["pipelines"]["ops"]["reason"].startswith("retrying (")
        wait_for(lambda: _call(base, "/pipelines/ops")[1]["state"] == "failed", 30, "failure")
        assert "gave up after" in _call(base, "/pipelines/ops")[1]["last_error"]["message"]
        answers = [
            ("/health/live", "GET", None, 200),
            ("/health/ready", "GET", None, 503),
            ("/pipelines", "GET", None, 200),
            ("/pipelines/{name}", "GET", None, 200),
            ("/openapi.json", "GET", None, 200),
            ("/pipelines/{name}/pause", "POST", None, 401),
            ("/pipelines/{name}/pause", "POST", "wrong-token-0123456789", 401),
            ("/pipelines/{name}/pause", "POST", token, 409),  # a failed pipeline
            ("/pipelines/{name}/resume", "POST", token, 409),
            ("/config/reload", "POST", None, 401),
        ]
        seen = b""
        for route, method, given, expected in answers:
            status, body = _call(base, route.replace("{name}", "ops"), method, given)
            assert status == expected, (route, method, body)
            _check(spec, route, method, status, body)
            seen += json.dumps(body).encode()
        ready = _call(base, "/health/ready")[1]
        assert ready["pipelines"]["ops"]["reason"].startswith("failed: ")
        view = _call(base, "/pipelines/ops")[1]
        assert view["last_error"]["kind"] and view["errors"]
        status, body = _call(base, "/pipelines/nope/pause", "POST", token)
        assert status == 404 and "ops" in body["error"]
        _check(spec, "/pipelines/{name}/pause", "POST", status, body)
        status, metrics = _call(base, "/metrics")
        assert (
            status == 200
            and 'replicator_pipeline_state{pipeline="ops",state="failed"} 1.0' in metrics
        )
        assert _call(base, "/nowhere")[0] == 404
        assert _call(base, "/static/../server.py")[0] == 404
        status, page = _call(base, "/")
        assert status == 200 and "<html" in page.lower()

        # Reload: broken file → 400 with each problem; fixed (same) file → 200.
        good = path.read_text()
        path.write_text(good + "bogus: 1\n")
        status, body = _call(base, "/config/reload", "POST", token)
        assert status == 400 and any("bogus" in p for p in body["problems"])
        _check(spec, "/config/reload", "POST", status, body)
        path.write_text(good)
        status, body = _call(base, "/config/reload", "POST", token)
        assert status == 200 and body["restarted"] == ["ops"]  # failed ones are retried
        _check(spec, "/config/reload", "POST", status, body)
        seen += json.dumps(body).encode() + metrics.encode()
        assert b"s3cret-pw" not in seen
    finally:
        supervisor.shutdown_async()
        supervisor.join(10)
        api.stop()
    served = {
        "/health/live",
        "/health/ready",
        "/metrics",
        "/pipelines",
        "/pipelines/{name}",
        "/pipelines/{name}/pause",
        "/pipelines/{name}/resume",
        "/pipelines/{name}/restart",
        "/config/reload",
        "/openapi.json",
        "/",
    }
    assert set(spec["paths"]) == served


@contextmanager
def _idle_api(tmp_path: Path, *, serving: bool = True) -> Iterator[ManagementApi]:
    """The API on a free port, with no token and pipelines never started."""
    path = _config(tmp_path, "api: {listen: '127.0.0.1:0'}")
    config = load_config(path)
    assert config.api is not None
    api = ManagementApi(config.api, Supervisor(config, path, None, isolate_failures=True))
    if serving:
        api.start()
    try:
        yield api
    finally:
        api.stop()


def test_mutating_endpoints_are_refused_without_a_configured_token(tmp_path: Path):
    with _idle_api(tmp_path) as api:
        status, body = _call(
            f"http://{api.address}", "/config/reload", "POST", "anything-at-all-123"
        )
        assert status == 403 and "no API token is configured" in body["error"]


def test_a_busy_port_is_a_config_error(tmp_path: Path):
    with _idle_api(tmp_path, serving=False) as first:
        taken = ApiConfig(listen=first.address)
        config = load_config(tmp_path / "replicator.yaml")
        with pytest.raises(ConfigError, match="cannot listen on"):
            path = tmp_path / "replicator.yaml"
            ManagementApi(taken, Supervisor(config, path, None, isolate_failures=True))


def _raw(address: str, request: bytes) -> bytes:
    """Send raw bytes on one connection; everything answered until the server closes it."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_request_bodies_are_never_read_as_requests(tmp_path: Path):
    """A body the API does not take is drained or the connection closed: it can never be
    parsed as a second request (request smuggling behind a proxy); a bad length is a 400."""
    with _idle_api(tmp_path) as api:
        inner = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        for method in (b"PUT", b"POST", b"DELETE", b"GET"):
            smuggled = _raw(
                api.address,
                method + b" /config/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Length: " + str(len(inner)).encode() + b"\r\n\r\n" + inner,
            )
            assert smuggled.count(b"HTTP/1.") == 1, smuggled
            assert b'"alive"' not in smuggled
        bad = _raw(
            api.address, b"POST /config/reload HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"
        )
        assert bad.startswith(b"HTTP/1.1 400") and b"Content-Length" in bad
        options = _raw(api.address, b"OPTIONS /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert options.startswith(b"HTTP/1.1 405") and b"application/json" in options
