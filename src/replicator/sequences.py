"""Sequence synchronisation: bring the target's sequences level with the source's, for cutover.

Logical replication carries no sequence changes, so a target promoted after a migration would
hand out ids the source already used. :class:`SequenceSync` copies each sequence's state
(``last_value``, ``is_called``) from the source onto the target, so that the target's next
``nextval()`` returns a value the source has not handed out yet. Rules:

- The sequences are those owned by a captured table's column (``serial``, ``identity``:
  ``pg_depend`` types ``a`` and ``i``), those a captured table's column defaults reference
  (``nextval('…')``), and standalone sequences whose name matches the table patterns.
- ``last_value`` already counts values that source sessions hold in their caches, because a
  session advances the sequence by its whole cache when it fetches one.
- A target sequence is never moved backwards: if it is ahead it is left alone and reported.
  Sequences are not transactional, so this is a read, a comparison and a ``setval``; run it
  while nothing calls ``nextval()`` on the target (which is the case before cutover).
- An identity or serial column of a target table already has its own sequence, possibly with
  another name (``orders_id_seq1``); that one is set (``pg_get_serial_sequence``).
- A sequence missing on the target is created with the source's definition (type, increment,
  bounds, start, cache, cycle). Target tables and their defaults are left untouched.

One sequence failing (a missing privilege, a different increment direction) is reported with
its fix and the others still run; a lost connection raises, so a periodic caller can retry.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.config import PipelineConfig
from replicator.errors import SinkConnectionError, SourceConnectionError, SourceError
from replicator.events import TableId, quote_ident
from replicator.observability.logging import get_logger
from replicator.observability.redaction import redact
from replicator.pgsession import connection_lost, connection_string
from replicator.sources.postgres import catalog

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


@dataclass(frozen=True, slots=True)
class SequenceState:
    """A sequence's position: what ``SELECT last_value, is_called FROM seq`` returns."""

    last_value: int
    is_called: bool

    def next_value(self, increment: int) -> int:
        """What the next ``nextval()`` would return (ignoring bounds)."""
        return self.last_value + increment if self.is_called else self.last_value

    def __str__(self) -> str:
        return str(self.last_value) if self.is_called else f"unused (next {self.last_value})"


class Outcome(enum.StrEnum):
    """What :class:`SequenceSync` did with one sequence."""

    SET = "set"
    CREATED = "created"
    AHEAD = "already ahead"
    IN_SYNC = "in sync"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SequenceResult:
    """One sequence: the source's position, the target's before and after, or why it failed."""

    sequence: TableId  # the source sequence
    target: TableId  # the target sequence that was compared and set
    outcome: Outcome
    source_value: SequenceState | None = None
    target_before: SequenceState | None = None  # None: the target had no such sequence
    target_after: SequenceState | None = None
    error: str | None = None
    fix: str | None = None

    @property
    def failed(self) -> bool:
        """Whether this sequence could not be brought level with the source."""
        return self.outcome is Outcome.FAILED

    def summary(self) -> str:
        """One line for people: ``public.t_id_seq: source 42, target 7 -> 42``."""
        name = str(self.sequence)
        if self.target != self.sequence:
            name += f" (target {self.target})"
        if self.outcome is Outcome.FAILED:
            return f"{name}: FAILED: {self.error}"
        source = f"source {self.source_value}"
        if self.outcome is Outcome.CREATED:
            return f"{name}: {source}, target missing -> {self.target_after} (created)"
        if self.outcome is Outcome.SET:
            return f"{name}: {source}, target {self.target_before} -> {self.target_after}"
        return f"{name}: {source}, target {self.target_before} ({self.outcome})"


@dataclass(frozen=True, slots=True)
class _SourceSequence:
    name: TableId
    type_name: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    owner: TableId | None  # the table whose column owns it (serial, identity)
    owner_column: str | None


class SequenceSync:
    """Sets a pipeline's target sequences at or above the source's; call :meth:`run` as often
    as needed (it keeps its two connections open between calls), then :meth:`close`."""

    def __init__(self, pipeline: PipelineConfig) -> None:
        self._pipeline = pipeline
        self._app = f"replicator:{pipeline.name}:sequences"[:63]
        self._source: psycopg.Connection[Any] | None = None
        self._target: psycopg.Connection[Any] | None = None
        self._log = get_logger(pipeline=pipeline.name, component="sequences")

    def run(self) -> list[SequenceResult]:
        """Synchronise every selected sequence once; one result per sequence, by name."""
        source = self._source_conn()
        target = self._target_conn()
        try:
            sequences = self._select(source)
            source_role = _current_user(source)
        except psycopg.Error as exc:
            self._drop_broken()
            if connection_lost(exc):
                raise SourceConnectionError(
                    f"lost the connection to the source while listing sequences: {_text(exc)}"
                ) from exc
            raise SourceError(f"cannot list the source's sequences: {_text(exc)}") from exc
        try:
            sink_role = _current_user(target)
        except psycopg.Error as exc:
            self._drop_broken()
            raise SinkConnectionError(f"lost the connection to the target: {_text(exc)}") from exc
        results = []
        for seq in sequences:
            try:
                result = self._sync_one(source, target, seq, (source_role, sink_role))
            except (SourceConnectionError, SinkConnectionError):
                self._drop_broken()
                raise
            if result.outcome in (Outcome.SET, Outcome.CREATED):
                self._log.info(
                    "sequence advanced",
                    sequence=str(seq.name),
                    target=str(result.target),
                    value=str(result.target_after),
                    outcome=str(result.outcome),
                )
            elif result.failed:
                self._log.warning(
                    "sequence not synchronised", sequence=str(seq.name), error=result.error
                )
            results.append(result)
        return results

    def close(self) -> None:
        """Close both connections."""
        for conn in (self._source, self._target):
            if conn is not None and not conn.closed:
                conn.close()
        self._source = self._target = None

    # --- connections ----------------------------------------------------------------------

    def _source_conn(self) -> psycopg.Connection[Any]:
        if self._source is None or self._source.closed:
            try:
                self._source = psycopg.connect(
                    connection_string(self._pipeline.table_source.dsn.secret(), self._app),
                    autocommit=True,
                )
            except psycopg.Error as exc:
                raise SourceConnectionError(
                    f"cannot connect to the source database: {_text(exc)}",
                    fix="check the source DSN (host, port, database, user, password) and that "
                    "the server accepts connections from this host",
                ) from exc
        return self._source

    def _target_conn(self) -> psycopg.Connection[Any]:
        if self._target is None or self._target.closed:
            try:
                self._target = psycopg.connect(
                    connection_string(self._pipeline.target_dsn.secret(), self._app),
                    autocommit=True,
                )
            except psycopg.Error as exc:
                raise SinkConnectionError(
                    f"cannot connect to the target database: {_text(exc)}",
                    fix="check the sink DSN (host, port, database, user, password)",
                ) from exc
        return self._target

    def _drop_broken(self) -> None:
        for conn in (self._source, self._target):
            if conn is not None and conn.broken:
                conn.close()

    # --- which sequences --------------------------------------------------------------------

    def _select(self, conn: psycopg.Connection[Any]) -> list[_SourceSequence]:
        patterns = self._pipeline.table_source.tables
        tables = [t.oid for t in catalog.match_tables(conn, patterns)]
        rows = conn.execute(
            r"""
            WITH captured AS (
                -- match_tables folds partitions into their root; their columns count too.
                -- (pg_partition_tree lists nothing for a table that is not partitioned).
                SELECT t.oid FROM unnest(%(tables)s::oid[]) AS t(oid)
                UNION
                SELECT pt.relid
                FROM unnest(%(tables)s::oid[]) AS t(oid), LATERAL pg_partition_tree(t.oid) AS pt
            ), owned AS (
                SELECT d.objid AS seq, d.refobjid AS tbl, d.refobjsubid AS col
                FROM pg_depend d
                WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                  AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
            ), linked AS (
                SELECT o.seq FROM owned o JOIN captured c ON c.oid = o.tbl
                UNION
                SELECT d.refobjid FROM pg_attrdef ad
                JOIN captured c ON c.oid = ad.adrelid
                JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                                AND d.refclassid = 'pg_class'::regclass
            )
            SELECT s.oid, n.nspname, s.relname, format_type(q.seqtypid, NULL), q.seqstart,
                   q.seqincrement, q.seqmin, q.seqmax, q.seqcache, q.seqcycle,
                   tn.nspname, t.relname, a.attname,
                   s.oid IN (SELECT seq FROM linked)
            FROM pg_class s
            JOIN pg_namespace n ON n.oid = s.relnamespace
            JOIN pg_sequence q ON q.seqrelid = s.oid
            LEFT JOIN owned o ON o.seq = s.oid
            LEFT JOIN pg_class t ON t.oid = o.tbl
            LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
            LEFT JOIN pg_attribute a ON a.attrelid = o.tbl AND a.attnum = o.col
            WHERE s.relkind = 'S' AND s.relpersistence <> 't'
              AND n.nspname <> ALL (%(system)s) AND n.nspname NOT LIKE 'pg\_temp\_%%'
              AND n.nspname NOT LIKE 'pg\_toast\_temp\_%%'
            ORDER BY n.nspname, s.relname
            """,
            {"tables": tables, "system": list(_SYSTEM_SCHEMAS)},
        ).fetchall()
        chosen = []
        for r in rows:
            owner = TableId(r[10], r[11]) if r[10] is not None else None
            # A sequence owned by a table the pipeline does not capture belongs to that table,
            # even when its own name happens to match a pattern.
            standalone = owner is None and any(TableId(r[1], r[2]).matches(p) for p in patterns)
            if not (r[13] or standalone):
                continue
            chosen.append(
                _SourceSequence(
                    name=TableId(r[1], r[2]),
                    type_name=r[3],
                    start=r[4],
                    increment=r[5],
                    minimum=r[6],
                    maximum=r[7],
                    cache=r[8],
                    cycle=r[9],
                    owner=owner,
                    owner_column=r[12],
                )
            )
        return chosen

    # --- one sequence -------------------------------------------------------------------------

    def _sync_one(
        self,
        source: psycopg.Connection[Any],
        target: psycopg.Connection[Any],
        seq: _SourceSequence,
        roles: tuple[str, str],
    ) -> SequenceResult:
        """Bring one sequence level; server refusals become FAILED results, a lost
        connection raises."""
        name = seq.name
        source_role, sink_role = roles
        try:
            source_state = _read_state(source, name)
        except psycopg.errors.InsufficientPrivilege as exc:
            return SequenceResult(
                name,
                name,
                Outcome.FAILED,
                error=f"the source role {source_role} may not read it: {_text(exc)}",
                fix=f"on the source: GRANT SELECT ON SEQUENCE {name.quoted} TO "
                f"{quote_ident(source_role)};",
            )
        except psycopg.Error as exc:
            if connection_lost(exc):
                raise SourceConnectionError(
                    f"lost the connection to the source while reading sequence {name}: {_text(exc)}"
                ) from exc
            return SequenceResult(
                name, name, Outcome.FAILED, error=f"cannot read it on the source: {_text(exc)}"
            )
        target_name = name
        try:
            target_name = _target_sequence(target, seq)
            return self._apply(target, seq, target_name, source_state)
        except psycopg.Error as exc:
            if connection_lost(exc):
                raise SinkConnectionError(
                    f"lost the connection to the target while setting sequence {target_name}: "
                    f"{_text(exc)}"
                ) from exc
            return SequenceResult(
                name,
                target_name,
                Outcome.FAILED,
                source_value=source_state,
                error=f"cannot set it on the target: {_text(exc)}",
                fix=_target_fix(exc, seq, target_name, sink_role),
            )

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        seq: _SourceSequence,
        target_name: TableId,
        source_state: SequenceState,
    ) -> SequenceResult:
        row = conn.execute(
            "SELECT c.relkind, q.seqincrement FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_sequence q ON q.seqrelid = c.oid"
            " WHERE n.nspname = %s AND c.relname = %s",
            (target_name.schema, target_name.name),
        ).fetchone()
        result = functools.partial(SequenceResult, seq.name, target_name, source_value=source_state)
        if row is None:
            with conn.transaction():
                _create(conn, seq)
                after = _set(conn, target_name, source_state)
            return result(Outcome.CREATED, target_after=after)
        kind, target_increment = row
        if kind != "S":
            return result(
                Outcome.FAILED,
                error=f"the target has a relation {target_name} that is not a sequence",
                fix=f"rename or drop {target_name.quoted} in the target, then run this again",
            )
        before = _read_state(conn, target_name)
        if (target_increment > 0) != (seq.increment > 0):
            return result(
                Outcome.FAILED,
                target_before=before,
                error=f"it counts {'up' if seq.increment > 0 else 'down'} in the source "
                f"(INCREMENT BY {seq.increment}) but the other way in the target "
                f"(INCREMENT BY {target_increment})",
                fix=f"on the target: ALTER SEQUENCE {target_name.quoted} "
                f"INCREMENT BY {seq.increment};",
            )
        # How far each would go next, in the direction it counts; the target must not be behind.
        direction = 1 if seq.increment > 0 else -1
        gap = (
            before.next_value(target_increment) - source_state.next_value(seq.increment)
        ) * direction
        if gap >= 0:
            outcome = Outcome.IN_SYNC if gap == 0 else Outcome.AHEAD
            return result(outcome, target_before=before, target_after=before)
        after = _set(conn, target_name, source_state)
        return result(Outcome.SET, target_before=before, target_after=after)


def _target_sequence(conn: psycopg.Connection[Any], seq: _SourceSequence) -> TableId:
    """The target's own sequence for the owning column if it has one, else the same name."""
    if seq.owner is None or seq.owner_column is None:
        return seq.name
    row = conn.execute(
        """
        SELECT n.nspname, c.relname
        FROM pg_attribute a
        JOIN pg_class c
          ON c.oid = pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)::regclass
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND a.attnum > 0
          AND NOT a.attisdropped
        """,
        (seq.owner.quoted, seq.owner_column),
    ).fetchone()
    return TableId(row[0], row[1]) if row else seq.name


def _read_state(conn: psycopg.Connection[Any], name: TableId) -> SequenceState:
    # The sequence itself rather than pg_sequences, which shows NULL both for a sequence never
    # called and for one the role may not read, and leaves out is_called.
    row = conn.execute(
        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(*_parts(name)))
    ).fetchone()
    assert row is not None
    return SequenceState(int(row[0]), bool(row[1]))


def _set(conn: psycopg.Connection[Any], name: TableId, state: SequenceState) -> SequenceState:
    conn.execute(
        "SELECT setval(%s::regclass, %s, %s)", (name.quoted, state.last_value, state.is_called)
    )
    return _read_state(conn, name)


def _create(conn: psycopg.Connection[Any], seq: _SourceSequence) -> None:
    schema = seq.name.schema
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE SEQUENCE {} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {}"
            " CACHE {} {}"
        ).format(
            sql.Identifier(*_parts(seq.name)),
            sql.SQL(seq.type_name),  # format_type() of smallint, integer or bigint
            sql.Literal(seq.increment),
            sql.Literal(seq.minimum),
            sql.Literal(seq.maximum),
            sql.Literal(seq.start),
            sql.Literal(seq.cache),
            sql.SQL("CYCLE" if seq.cycle else "NO CYCLE"),
        )
    )


def _target_fix(exc: psycopg.Error, seq: _SourceSequence, name: TableId, role: str) -> str:
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        grantee = quote_ident(role)
        return (
            f"on the target: GRANT SELECT, UPDATE ON SEQUENCE {name.quoted} TO {grantee}; "
            f"(if it is missing: GRANT CREATE ON SCHEMA {quote_ident(name.schema)} TO {grantee};)"
        )
    if exc.sqlstate == "22003":  # numeric_value_out_of_range: the target's bounds are narrower
        return (
            f"on the target: ALTER SEQUENCE {name.quoted} AS {seq.type_name} "
            f"MINVALUE {seq.minimum} MAXVALUE {seq.maximum}; then run this again"
        )
    return f"make {name.quoted} in the target match the source's definition, then run this again"


def _parts(name: TableId) -> tuple[str, str]:
    return (name.schema, name.name)


def _current_user(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def _text(exc: psycopg.Error) -> str:
    return redact(str(exc).strip())


__all__ = ["Outcome", "SequenceResult", "SequenceState", "SequenceSync"]
