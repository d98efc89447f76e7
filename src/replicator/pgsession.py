"""What every PostgreSQL connection Replicator opens shares: pinned session settings, how a
failure is classified, and the catalog questions both the source and the target answer.

Values travel as text between source and target, so both ends pin the settings that shape
that text. ``search_path`` is pinned to ``pg_catalog`` (as PostgreSQL's own apply worker pins
it to empty): type names, generated-column expressions and domain checks then come out
schema-qualified and identical on both ends, whatever the roles' own search paths, and no
object planted in a user schema can shadow a built-in. The sink also pins
``synchronous_commit = on``, because Replicator acknowledges the source as soon as the
target's COMMIT returns and a lazily-flushed commit could then be lost.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from replicator.errors import SinkConnectionError, SourceConnectionError
from replicator.observability.redaction import redact

TEXT_SETTINGS = {
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}
"""Settings that shape the text form of values."""

SESSION_SETTINGS = {**TEXT_SETTINGS, "search_path": "pg_catalog"}
"""Everything pinned on Replicator's own connections."""


def connection_string(
    dsn: str, application_name: str, settings: dict[str, str] | None = None, **extra: Any
) -> str:
    """``dsn`` plus pinned session settings, an application name, a connect timeout and TCP
    keepalives (each overridable in the DSN).

    The keepalives notice a connection whose network path died while it waits for an answer
    (libpq has no read timeout): after about a minute it fails, and the pipeline retries.
    """
    params = conninfo_to_dict(dsn)
    pinned = dict(SESSION_SETTINGS)
    pinned.update(settings or {})
    forced = " ".join(f"-c {name}={value}" for name, value in pinned.items())
    existing = params.get("options")
    params["options"] = f"{existing} {forced}" if existing else forced
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", 10)
    for name, value in _KEEPALIVES.items():
        params.setdefault(name, value)
    params.update(extra)
    return make_conninfo("", **params)


# Idle 30 s, then a probe every 10 s, 3 unanswered: a dead path fails after about a minute.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

IDENTITY_QUERY = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database()"
)
"""Names a database uniquely: its cluster's system identifier plus the database's name."""

# Class 08 (connection), 57P (operator intervention: shutdown, terminated) and 53 (resources)
# are worth a reconnect; any other SQLSTATE is a real refusal.
TRANSIENT_SQLSTATE_CLASSES = ("08", "57P", "53")
# A statement that lost a race with another session (deadlock, serialization failure):
# running it again will work.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
# The data itself refused: class 22 (a value that does not fit: too long, out of range,
# invalid), 23 (a constraint: unique, check, not null, foreign key), P0001 (a trigger's RAISE).
REJECTED_SQLSTATE_CLASSES = ("22", "23", "P0001")


# What a server says when it refuses a login, as opposed to being unreachable right now: a
# retry cannot cure these (a wrong password, pg_hba.conf, a missing role or database).
_REFUSALS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "does not exist",
    "permission denied",
    "not permitted to log in",
    "must be superuser or replication role",
    "password is required",
    "no password supplied",
)


def login_refused(message: str) -> bool:
    """Whether a failed connection attempt's ``message`` is a refusal (permanent), not an
    outage (a restart, a network fault) that a retry may outlast."""
    text = message.lower()
    return any(refusal in text for refusal in _REFUSALS)


TARGET_FIX = "check the sink DSN (host, port, database, user, password)"

_Unreachable = TypeVar("_Unreachable", SourceConnectionError, SinkConnectionError)


def cannot_connect(
    kind: type[_Unreachable], what: str, exc: psycopg.Error, fix: str | None = None
) -> _Unreachable:
    """The error for a failed connection attempt to ``what``: transient (retried) unless
    the server refused the login."""
    error = kind(f"cannot connect to {what}: {redact(str(exc).strip())}", fix=fix)
    error.transient = not login_refused(str(exc))
    return error


def connection_lost(exc: psycopg.Error) -> bool:
    """Whether ``exc`` means the connection failed rather than the server refusing a statement.

    An OperationalError without a SQLSTATE is libpq itself losing the connection.
    """
    code = exc.sqlstate or ""
    return (isinstance(exc, psycopg.OperationalError) and not code) or code.startswith(
        TRANSIENT_SQLSTATE_CLASSES
    )


def primary_key_columns(conn: psycopg.Connection[Any], relation: str) -> tuple[str, ...]:
    """The primary key's columns in key order; ``relation`` is a quoted name or an OID."""
    row = conn.execute(
        """
        SELECT array_agg(a.attname ORDER BY k.ord)
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s::regclass AND i.indisprimary
        """,
        (relation,),
    ).fetchone()
    return tuple(row[0]) if row and row[0] else ()
