"""Keep secrets out of everything Replicator prints: logs, errors, status output.

Secrets reach text by many roads (a DSN echoed in a driver error, a password inside a
connection string in a traceback), so besides never formatting them on purpose, every line
we emit passes through :func:`redact`, which masks DSN passwords by pattern and every secret
value the config registered. The registry is process-wide on purpose: it is a safety net that
must cover code paths which never see the config.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

MASK = "[secure]"

_lock = threading.Lock()
_secrets: set[str] = set()

# postgresql://user:secret@host → postgresql://user:[secure]@host
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
# password=secret or password='se cret' in key=value DSNs
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s]+)", re.I)


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 3:  # masking one- or two-letter strings would mangle text
        with _lock:
            _secrets.add(value)
            decoded = unquote(value)
            if decoded != value:
                _secrets.add(decoded)


def redact(text: str) -> str:
    """Mask DSN passwords and registered secrets in ``text``."""
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
