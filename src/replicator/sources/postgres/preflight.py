"""Preflight checks for a PostgreSQL source: every problem comes with the statement that fixes it.

``replicator check`` prints them all; ``replicator run`` refuses to start on any error.
"""

from __future__ import annotations

from typing import Any

import psycopg

from replicator.contracts import Problem, Severity
from replicator.events import quote_ident
from replicator.sources.postgres import catalog
from replicator.sources.postgres.pgoutput import format_lsn
from replicator.sources.postgres.position import PgPosition

# Server encodings we can decode losslessly, mapped to Python codecs.
ENCODINGS = {
    "UTF8": "utf-8",
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8_r",
    "KOI8U": "koi8_u",
    "EUC_JP": "euc_jp",
    "EUC_KR": "euc_kr",
    "EUC_CN": "gb2312",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
}

MIN_SERVER_VERSION = 130000  # publish_via_partition_root and pg_partition_root


def _error(message: str, fix: str | None = None) -> Problem:
    return Problem(Severity.ERROR, message, fix)


def _warning(message: str, fix: str | None = None) -> Problem:
    return Problem(Severity.WARNING, message, fix)


def check_source(
    conn: psycopg.Connection[Any],
    *,
    tables: list[str],
    slot: str,
    publication: str,
    checkpoint: PgPosition | None,
) -> list[Problem]:
    """Check server settings, privileges, tables and slot state for one pipeline."""
    problems: list[Problem] = []
    version = int(catalog.setting(conn, "server_version_num"))
    if version < MIN_SERVER_VERSION:
        return [
            _error(
                f"the source runs PostgreSQL {catalog.setting(conn, 'server_version')}; "
                "Replicator needs PostgreSQL 13 or newer",
                "upgrade the source server",
            )
        ]
    problems += _check_settings(conn)
    problems += _check_role(conn)
    selected = catalog.match_tables(conn, tables)
    if not selected:
        problems.append(
            _error(
                f"no table in the source matches {', '.join(tables)}",
                "check the 'tables' patterns (schema-qualified globs like 'public.*') and that "
                "the tables exist in the database the DSN names",
            )
        )
    problems += _check_replica_identity(conn, selected)
    problems += _check_publication(conn, publication, selected)
    problems += check_slot(conn, slot, checkpoint)
    return problems


def _check_settings(conn: psycopg.Connection[Any]) -> list[Problem]:
    problems = []
    wal_level = catalog.setting(conn, "wal_level")
    if wal_level != "logical":
        problems.append(
            _error(
                f"wal_level is '{wal_level}'; logical replication needs 'logical'",
                "run ALTER SYSTEM SET wal_level = logical; then restart the source server",
            )
        )
    encoding = catalog.setting(conn, "server_encoding")
    if encoding not in ENCODINGS:
        problems.append(
            _error(
                f"the source database's encoding {encoding} is not supported",
                "use a UTF8 database (or one of: " + ", ".join(sorted(ENCODINGS)) + ")",
            )
        )
    keep = catalog.setting(conn, "max_slot_wal_keep_size")
    if keep.strip() in ("-1", "-1MB"):
        problems.append(
            _warning(
                "max_slot_wal_keep_size is unlimited: a stopped or abandoned pipeline's slot "
                "keeps all WAL and can fill the source's disk",
                "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf(); "
                "(size it to the outage you want to survive)",
            )
        )
    timeout = catalog.setting(conn, "wal_sender_timeout")
    if timeout.strip() in ("0", "0ms"):
        problems.append(
            _warning(
                "wal_sender_timeout is 0: dead replication connections are never noticed",
                "ALTER SYSTEM SET wal_sender_timeout = '60s'; SELECT pg_reload_conf();",
            )
        )
    row = conn.execute(
        "SELECT current_setting('max_replication_slots')::int,"
        " (SELECT count(*) FROM pg_replication_slots),"
        " current_setting('max_wal_senders')::int,"
        " (SELECT count(*) FROM pg_stat_replication)"
    ).fetchone()
    assert row is not None
    max_slots, slots, max_senders, senders = row
    if max_slots == 0:
        problems.append(
            _error(
                "max_replication_slots is 0",
                "ALTER SYSTEM SET max_replication_slots = 10; then restart the source server",
            )
        )
    if max_senders == 0 or senders >= max_senders:
        problems.append(
            _error(
                f"all {max_senders} WAL sender slots are in use (max_wal_senders)",
                "ALTER SYSTEM SET max_wal_senders = 20; then restart the source server",
            )
        )
    if max_slots and slots >= max_slots:
        problems.append(
            _warning(
                f"all {max_slots} replication slots exist (max_replication_slots); "
                "a new pipeline cannot create its slot",
                "drop unused slots, or raise max_replication_slots and restart the server",
            )
        )
    return problems


def may_replicate(conn: psycopg.Connection[Any]) -> tuple[str, bool]:
    """The current role, and whether it may stream (superuser, REPLICATION or rds_replication)."""
    row = conn.execute(
        "SELECT current_user, rolsuper OR rolreplication"
        " OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'rds_replication'"
        "            AND pg_has_role(current_user, r.oid, 'MEMBER'))"
        " FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    return str(row[0]), bool(row[1])


def _check_role(conn: psycopg.Connection[Any]) -> list[Problem]:
    user, allowed = may_replicate(conn)
    if allowed:
        return []
    return [
        _error(
            f"role {user} lacks the REPLICATION privilege needed to stream changes",
            f"as a superuser: ALTER ROLE {quote_ident(user)} REPLICATION;",
        )
    ]


def _check_replica_identity(
    conn: psycopg.Connection[Any], tables: list[catalog.SourceTable]
) -> list[Problem]:
    problems = []
    checked: list[tuple[str, str, bool]] = []  # (name, identity, has pk)
    for table in tables:
        if table.kind == "p":
            # Replica identity belongs to each partition, not to the partitioned root.
            for r in conn.execute(
                """
                SELECT format('%%I.%%I', n.nspname, c.relname), c.relreplident,
                       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                               AND i.indisprimary)
                FROM pg_partition_tree(%s) p JOIN pg_class c ON c.oid = p.relid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE p.isleaf ORDER BY 1
                """,
                (table.oid,),
            ):
                checked.append((r[0], r[1], r[2]))
        else:
            checked.append((table.table.quoted, table.replica_identity, table.has_primary_key))
    for name, identity, has_pk in checked:
        if identity == "n" or (identity == "d" and not has_pk):
            why = "REPLICA IDENTITY NOTHING" if identity == "n" else "no primary key"
            problems.append(
                _error(
                    f"table {name} has {why}: PostgreSQL cannot publish its updates and deletes "
                    "(and rejects them on the source once the table is in a publication)",
                    f"ALTER TABLE {name} REPLICA IDENTITY FULL; (or add a primary key)",
                )
            )
    return problems


def publish_problems(conn: psycopg.Connection[Any], table: catalog.SourceTable) -> list[Problem]:
    """Why ``table`` cannot be added to the publication now (empty when it can)."""
    problems = _check_replica_identity(conn, [table])
    if not table.owned:
        problems.append(
            _error(
                f"only a table's owner can add it to a publication, and this role does not own "
                f"{table.table.quoted}",
                "make this role the table's owner, then restart the pipeline",
            )
        )
    return problems


def _check_publication(
    conn: psycopg.Connection[Any], publication: str, tables: list[catalog.SourceTable]
) -> list[Problem]:
    row = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (publication,)
    ).fetchone()
    if row is not None and row[0]:
        return [
            _error(
                f"publication {publication} exists and is defined FOR ALL TABLES; Replicator "
                "manages its publication's table list",
                "set 'publication:' in the source config to a name of its own",
            )
        ]
    members = catalog.publication_tables(conn, publication) or set()
    missing = [t for t in tables if t.oid not in members]
    problems = []
    if row is None:
        allowed = conn.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE'), current_user,"
            " current_database()"
        ).fetchone()
        assert allowed is not None
        if not allowed[0]:
            problems.append(
                _error(
                    f"role {allowed[1]} may not create the publication {publication}",
                    f"GRANT CREATE ON DATABASE {quote_ident(allowed[2])} TO "
                    f"{quote_ident(allowed[1])};",
                )
            )
    not_owned = [t for t in missing if not t.owned]
    if not_owned:
        names = ", ".join(t.table.quoted for t in not_owned)
        problems.append(
            _error(
                f"only a table's owner can add it to a publication, and this role does not own "
                f"{names}",
                f"as a superuser: CREATE PUBLICATION {publication} FOR TABLE {names} "
                "WITH (publish_via_partition_root = true); or make this role the tables' owner",
            )
        )
    return problems


def check_slot(
    conn: psycopg.Connection[Any], slot: str, checkpoint: PgPosition | None
) -> list[Problem]:
    info = catalog.slot_info(conn, slot)
    current_db = conn.execute("SELECT current_database()").fetchone()
    assert current_db is not None
    recreate = "replicator drop -c FILE --pipeline NAME, then start the pipeline again"
    if info is None:
        if checkpoint is not None and checkpoint.lsn != 0:
            return [
                _error(
                    f"replication slot {slot} is gone, but the pipeline's checkpoint is at "
                    f"{format_lsn(checkpoint.lsn)}: changes made since then can no longer be "
                    "streamed",
                    f"re-copy the tables: {recreate}",
                )
            ]
        return []
    problems = []
    if info.slot_type != "logical" or info.plugin != "pgoutput":
        problems.append(
            _error(
                f"slot {slot} exists but is a {info.slot_type} slot for plugin {info.plugin}",
                "drop it (SELECT pg_drop_replication_slot(...)) or set 'slot:' to another name",
            )
        )
    elif info.database != current_db[0]:
        problems.append(
            _error(
                f"slot {slot} belongs to database {info.database}, not {current_db[0]}",
                "set 'slot:' to another name, or point the DSN at the slot's database",
            )
        )
    if info.wal_status == "lost":
        problems.append(
            _error(
                f"slot {slot} was invalidated (the WAL it needed was removed, see "
                "max_slot_wal_keep_size): changes since the checkpoint are lost",
                f"re-copy the tables: {recreate}",
            )
        )
    elif info.wal_status == "unreserved":
        problems.append(
            _warning(
                f"slot {slot} is about to be invalidated: its WAL exceeds max_slot_wal_keep_size",
                "start the pipeline now so it catches up, or raise max_slot_wal_keep_size",
            )
        )
    if info.active:
        problems.append(
            _warning(
                f"slot {slot} is in use by server process {info.active_pid} "
                "(is this pipeline already running?)",
                "stop the other consumer before starting this pipeline",
            )
        )
    if checkpoint is None:
        problems.append(
            _error(
                f"slot {slot} exists but the target holds no checkpoint for this pipeline, so "
                "where to resume is unknown (was the target reset, or is another tool using "
                "the slot?)",
                recreate,
            )
        )
    elif (
        checkpoint.lsn != 0
        and info.confirmed_flush_lsn is not None
        and info.confirmed_flush_lsn > checkpoint.lsn
    ):
        problems.append(
            _error(
                f"slot {slot} has confirmed up to {format_lsn(info.confirmed_flush_lsn)}, past "
                f"the pipeline's checkpoint {format_lsn(checkpoint.lsn)}: something else "
                "consumed it, and the changes in between were never applied",
                f"re-copy the tables: {recreate}",
            )
        )
    return problems
