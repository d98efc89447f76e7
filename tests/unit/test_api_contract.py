"""The management API keeps its OpenAPI contract for requests schemathesis generates from the
spec: no server errors, and a documented status, content type and body for every answer.

The API runs in-process over one pipeline whose DSNs point at 127.0.0.1:1, so it fails at once
and stays failed (the supervisor isolates failures when the API is on): no database server.
Reloads and restarts re-read the same file and fail the pipeline again, which is fine here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from replicator.api.server import ManagementApi
from replicator.config import load_config
from replicator.engine.supervisor import Supervisor
from tests.support import wait_for

SPEC = Path(__file__).parents[2] / "src/replicator/api/openapi.json"
TOKEN_ENV = "REPLICATOR_CONTRACT_TOKEN"
TOKEN = "contract-token-0123456789"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = f"""
pipelines:
  - name: contract
    source:
      {{type: postgres, dsn: "postgresql://repl:s3cret-pw@127.0.0.1:1/shop", tables: [public.*]}}
    sink: {{type: postgres, dsn: "postgresql://w:s3cret-pw@127.0.0.1:1/wh"}}
api: {{listen: '127.0.0.1:0', token_env: {TOKEN_ENV}}}
"""
CONTRACT = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _load(phases: dict[str, Any]) -> schemathesis.BaseSchema:
    """The spec, with generation settings that send the same few requests on every run."""
    config = schemathesis.Config.from_dict(
        {
            "seed": 20240611,  # with no example database, the same seed means the same requests
            "generation": {
                "max-examples": 30,
                "database": "none",
                # The tests send the Authorization header themselves, or leave it out.
                "with-security-parameters": False,
            },
            "phases": phases,
            # Random names only ever meet "no such pipeline": mix in the one that runs.
            "dictionaries": {"pipelines": {"values": ["contract"]}},
            "parameters": {"path.name": {"dictionary": "pipelines", "probability": 0.3}},
            "operations": [
                {
                    # 503 is readiness answering "not ready", as documented: no server error.
                    "include-path": "/health/ready",
                    "checks": {
                        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}
                    },
                }
            ],
        }
    )
    return schemathesis.openapi.from_path(SPEC, config=config)


# Coverage and fuzzing of every operation; undeclared methods have tests of their own below.
schema = _load({"coverage": {"unexpected-methods": []}})
# Only the coverage phase: it sends each method a path does not declare, once per path.
undeclared = _load({"examples": {"enabled": False}, "fuzzing": {"enabled": False}})


@dataclass
class _Api:
    url: str
    session: requests.Session


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Api]:
    """The management API on a free port, its token from an environment variable."""
    path = tmp_path_factory.mktemp("contract") / "replicator.yaml"
    path.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as env, requests.Session() as session:
        env.setenv(TOKEN_ENV, TOKEN)
        config = load_config(path)
        assert config.api is not None
        supervisor = Supervisor(config, path, None, isolate_failures=True)
        server = ManagementApi(config.api, supervisor)
        server.start()
        supervisor.start()  # the pipeline retries at once: nothing listens on port 1
        url = f"http://{server.address}"

        def failed() -> bool:
            return bool(_get(session, url, "/pipelines/contract")["state"] == "retrying")

        try:
            wait_for(failed, 30, "the pipeline to retry")
            yield _Api(url, session)
        finally:
            supervisor.shutdown_async()
            supervisor.join(10)
            server.stop()


def _get(session: requests.Session, url: str, path: str) -> Any:
    response = session.get(url + path, timeout=10)
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def test_the_served_spec_is_the_one_tested(api: _Api):
    """GET /openapi.json serves the file these tests generate their requests from."""
    assert _get(api.session, api.url, "/openapi.json") == json.loads(SPEC.read_text())


@schema.parametrize()
def test_every_operation_answers_as_the_spec_says(case: schemathesis.Case, api: _Api):
    """Any request for an operation, sent with the token, gets a documented status, content
    type and body, never a server error, and is never refused as unauthorized."""
    response = case.call_and_validate(
        base_url=api.url, session=api.session, headers=AUTHORIZED, checks=CONTRACT
    )
    assert response.status_code not in (401, 403)


# exclude(), not include(method="POST"): with an [[operations]] entry in its config,
# schemathesis 4.32 makes the loaded schema's filter a catch-all include, so that a further
# include() matches every operation.
@schema.exclude(method="GET").parametrize()
@settings(max_examples=10)
def test_mutations_without_the_token_are_refused(case: schemathesis.Case, api: _Api):
    """Every POST sent without a token is answered 401 with the spec's error body."""
    assert case.method == "POST"
    response = case.call_and_validate(base_url=api.url, session=api.session, checks=CONTRACT)
    assert response.status_code == 401


# Both found by schemathesis: http.server answered OPTIONS/TRACE with its 501 HTML page, and a
# known route with the wrong method with 404.
@undeclared.parametrize()
def test_methods_the_api_does_not_serve_are_refused_with_405(case: schemathesis.Case, api: _Api):
    """A method no route serves (PUT, OPTIONS, TRACE...) is refused with 405, an Allow header
    and a JSON error, never a server error."""
    if case.method in ("GET", "POST"):
        return  # the operation's own request, or the next test's
    response = case.call_and_validate(
        base_url=api.url,
        session=api.session,
        headers=AUTHORIZED,
        checks=[not_a_server_error, unsupported_method],
    )
    assert response.status_code == 405
    assert response.headers["content-type"] == ["application/json"]


@undeclared.parametrize()
def test_the_wrong_method_on_a_route_is_refused_with_405(case: schemathesis.Case, api: _Api):
    """POST to a GET route, or GET from a POST route, is refused with 405 and an Allow header
    that names the route's own method."""
    if case.method not in ("GET", "POST") or case.method == case.operation.method.upper():
        return  # the operation's own request, or the previous test's
    response = case.call_and_validate(
        base_url=api.url, session=api.session, headers=AUTHORIZED, checks=[unsupported_method]
    )
    assert response.status_code == 405
    allowed = {method.strip() for method in response.headers["allow"][0].split(",")}
    assert case.operation.method.upper() in allowed and case.method not in allowed
