"""The CLI's side of the management API: ``status``, ``pause``, ``resume`` and ``reload``
talk to a running instance through it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from replicator.config import ApiConfig
from replicator.errors import ConfigError, ReplicatorError

_PROBE_TIMEOUT = 2.0
_TIMEOUT = 150.0  # a reload may wait a minute for each restarted pipeline's batch


class ApiUnreachable(ReplicatorError):
    """No instance answers at the configured address."""


class ApiRefused(ReplicatorError):
    """The instance answered with an error status."""


class ApiClient:
    """Requests to one instance's API, with its bearer token for the mutating ones."""

    def __init__(self, config: ApiConfig) -> None:
        host = config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        self.address = f"{host}:{config.port}"
        self.base = f"http://{self.address}"
        self._config = config

    def reachable(self) -> bool:
        """Whether an instance answers ``/health/live`` right now."""
        try:
            self._request("GET", "/health/live", None, _PROBE_TIMEOUT)
        except ReplicatorError:
            return False
        return True

    def get(self, path: str) -> Any:
        """GET ``path``; the JSON body."""
        return self._request("GET", path, None, _TIMEOUT)

    def post(self, path: str) -> Any:
        """POST ``path`` with the configured token; the JSON body."""
        token = self._config.token()
        if token is None:
            raise ConfigError(
                "this command needs the API token, and the config names none",
                fix="set api.token_env or api.token_file (the same as the running instance's)",
            )
        return self._request("POST", path, token, _TIMEOUT)

    def _request(self, method: str, path: str, token: str | None, timeout: float) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, data=b"" if method == "POST" else None
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own http URL
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {}
            problems = body.get("problems") or []
            message = body.get("error") or f"HTTP {exc.code}"
            if problems:
                message += ":\n" + "\n".join(f"  - {p}" for p in problems)
            raise ApiRefused(
                f"the instance at {self.address} refused: {message}", fix=body.get("fix")
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(
                f"no Replicator instance answers at {self.address} ({reason})",
                fix="start it with replicator run -c FILE, or check api.listen in the config",
            ) from None
