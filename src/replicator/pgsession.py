"""Connection settings shared by every PostgreSQL connection Replicator opens.

Values travel as text between source and target, so both ends pin the settings that shape
that text. ``search_path`` is pinned to ``pg_catalog`` (as PostgreSQL's own apply worker pins
it to empty): type names, generated-column expressions and domain checks then come out
schema-qualified and identical on both ends, whatever the roles' own search paths, and no
object planted in a user schema can shadow a built-in. The sink also pins
``synchronous_commit = on``, because Replicator acknowledges the source as soon as the
target's COMMIT returns and a lazily-flushed commit could then be lost.
"""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
    """``dsn`` plus pinned session settings, an application name and a connect timeout."""
    params = conninfo_to_dict(dsn)
    pinned = dict(SESSION_SETTINGS)
    pinned.update(settings or {})
    forced = " ".join(f"-c {name}={value}" for name, value in pinned.items())
    existing = params.get("options")
    params["options"] = f"{existing} {forced}" if existing else forced
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", 10)
    params.update(extra)
    return make_conninfo("", **params)


IDENTITY_QUERY = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database()"
)
"""Names a database uniquely: its cluster's system identifier plus the database's name."""
