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
_pii_columns: frozenset[str] = frozenset()

# postgresql://user:secret@host → postgresql://user:[secure]@host
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
# password=secret or password='se cret' in key=value DSNs
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s]+)", re.I)


# PostgreSQL quotes row values in constraint errors: "Key (email)=(a@b.c) already exists",
# "Failing row contains (1, a@b.c, ...)"; the values sit between balanced-enough parentheses.
_KEY_VALUES = re.compile(
    r"Key \((?P<cols>[^)]*)\)=\((?P<vals>.*?)\)(?= already| is not| conflicts|$|\.)"
)
_FAILING_ROW = re.compile(r"(?P<head>Failing row contains )\((?P<vals>.*)\)")


def configure_redaction(columns: list[str]) -> None:
    """Mask the values of ``columns`` (``column``, ``table.column`` or
    ``schema.table.column``) wherever a server's message quotes them."""
    global _pii_columns
    with _lock:
        _pii_columns = frozenset(c.rsplit(".", 1)[-1].strip('"').lower() for c in columns)


def _mask_row_values(text: str) -> str:
    columns = _pii_columns
    if not columns or ("Key (" not in text and "Failing row" not in text):
        return text

    def key(match: re.Match[str]) -> str:
        named = {c.strip().strip('"').lower() for c in match.group("cols").split(",")}
        if named & columns:
            return f"Key ({match.group('cols')})=({MASK})"
        return match.group(0)

    text = _KEY_VALUES.sub(key, text)
    # A failing row lists values without their column names: mask the whole row.
    return _FAILING_ROW.sub(lambda m: f"{m.group('head')}({MASK})", text)


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 3:  # masking one- or two-letter strings would mangle text
        with _lock:
            _secrets.add(value)
            decoded = unquote(value)
            if decoded != value:
                _secrets.add(decoded)


def redact(text: str) -> str:
    """Mask DSN passwords, registered secrets and configured columns' values in ``text``."""
    text = _mask_row_values(text)
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
