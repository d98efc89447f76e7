"""The event model every source produces and every sink consumes.

A source's stream is a sequence of :data:`StreamItem`: the :class:`ChangeEvent` rows of one
source transaction followed by its :class:`TxCommit`, transaction after transaction in commit
order, with a :class:`Heartbeat` now and then. Resuming is only ever done at a ``TxCommit``
(a transaction boundary), never inside a transaction.

Values are plain Python values with one defined mapping per source type (see the README's type
table). Two values need their own types because ``None`` or a standard type would be wrong:
:data:`UNCHANGED` (PostgreSQL did not send an unchanged TOASTed value, so the target must keep
what it has) and :class:`RawValue` (a value Python cannot hold, such as ``infinity`` dates,
kept as the source's exact text).
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable


class Op(enum.Enum):
    """What a change event does to its row."""

    INSERT = "c"
    UPDATE = "u"
    DELETE = "d"
    TRUNCATE = "t"
    READ = "r"  # a row copied by a snapshot


class _Unchanged:
    """Type of :data:`UNCHANGED`; a singleton that is never equal to a real value."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
"""A column value the source did not send because it did not change (PostgreSQL TOAST)."""


@dataclass(frozen=True, slots=True)
class RawValue:
    """A value kept as its exact source text because no Python type can hold it faithfully.

    Examples: ``infinity`` timestamps, dates before year 1 or after 9999, ``24:00:00``.
    """

    text: str


@dataclass(frozen=True, slots=True)
class Interval:
    """A PostgreSQL interval: months, days and microseconds are independent quantities.

    ``timedelta`` would fold months into days (a month is not 30 days), so it is not used.
    """

    months: int = 0
    days: int = 0
    microseconds: int = 0

    def isoformat(self) -> str:
        """Render as ISO 8601 with designators, which PostgreSQL reads back exactly."""
        years, months = divmod(abs(self.months), 12)
        sign = -1 if self.months < 0 else 1
        parts = ["P"]
        if years:
            parts.append(f"{sign * years}Y")
        if months:
            parts.append(f"{sign * months}M")
        if self.days:
            parts.append(f"{self.days}D")
        micros = self.microseconds
        if micros or len(parts) == 1:
            neg = micros < 0
            hours, rest = divmod(abs(micros), 3_600_000_000)
            minutes, rest = divmod(rest, 60_000_000)
            seconds, frac = divmod(rest, 1_000_000)
            s = "-" if neg else ""
            parts.append("T")
            if hours:
                parts.append(f"{s}{hours}H")
            if minutes:
                parts.append(f"{s}{minutes}M")
            if seconds or frac or (not hours and not minutes):
                sec = f"{seconds}.{frac:06d}".rstrip("0").rstrip(".") if frac else f"{seconds}"
                parts.append(f"{s}{sec}S")
        return "".join(parts)


_IDENT_SAFE = re.compile(r"^[a-z_][a-z0-9_$]*$")
# Keywords PostgreSQL's quote_ident quotes (pg_get_keywords() with catcode <> 'U', PG 15, plus
# those PG 16-17 added): quoting one more than needed is harmless, one fewer is a syntax error.
_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary bit
    boolean both case cast char character check coalesce collate collation column concurrently
    constraint create cross current_catalog current_date current_role current_schema
    current_time current_timestamp current_user dec decimal default deferrable desc distinct do
    else end except exists extract false fetch float for foreign freeze from full grant greatest
    group grouping having ilike in initially inner inout int integer intersect interval into is
    isnull join json json_array json_arrayagg json_exists json_object json_objectagg json_query
    json_scalar json_serialize json_table json_value lateral leading least left like limit
    localtime localtimestamp merge_action national natural nchar none normalize not notnull null
    nullif numeric offset on only or order out outer overlaps overlay placing position precision
    primary real references returning right row select session_user setof similar smallint some
    substring symmetric system_user table tablesample then time timestamp to trailing treat trim
    true union unique user using values varchar variadic verbose when where window with
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot
    xmlserialize xmltable
    """.split()
)


@dataclass(frozen=True, slots=True, order=True)
class TableId:
    """A schema-qualified table name."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def quoted(self) -> str:
        """The name as a safely quoted SQL identifier pair."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def matches(self, pattern: str) -> bool:
        """Whether a ``schema.table`` glob (``sales.*``) selects this table; case-sensitive,
        and a pattern without a dot selects every table of that schema."""
        schema, _, name = pattern.partition(".")
        return fnmatch.fnmatchcase(self.schema, schema) and fnmatch.fnmatchcase(
            self.name, name or "*"
        )


def quote_ident(name: str) -> str:
    """Quote an SQL identifier the way PostgreSQL's ``quote_ident`` does."""
    if _IDENT_SAFE.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table as the source defines it."""

    name: str
    type_name: str  # the source's own spelling, e.g. "numeric(10,2)" or "public.mood"
    type_oid: int | None = None
    nullable: bool = True
    generated: str | None = None  # generation expression of a generated column


@dataclass(frozen=True, slots=True)
class TypeDefinition:
    """A user-defined type a table depends on, so a sink can recreate it."""

    schema: str
    name: str
    kind: str  # "enum" | "domain" | "composite"
    labels: tuple[str, ...] = ()  # enum labels, in order
    base_type: str | None = None  # domain base type
    not_null: bool = False  # domain NOT NULL
    checks: tuple[str, ...] = ()  # domain CHECK constraint definitions
    attributes: tuple[tuple[str, str], ...] = ()  # composite (name, type)

    @property
    def qualified(self) -> str:
        """The quoted, schema-qualified type name."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table's definition: columns in order, key columns and the types they need.

    ``columns`` lists the columns the source sends values for; ``generated`` lists columns the
    target computes itself. ``key`` is empty for a table without a primary key (or other
    replica identity key), whose rows are then matched on all columns.
    """

    table: TableId
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    generated: tuple[Column, ...] = ()
    types: tuple[TypeDefinition, ...] = ()
    order: tuple[str, ...] = ()  # all column names (generated included) in source order
    source_id: str | None = None  # the table's stable identity in the source (PostgreSQL: OID)
    dialect: str = "postgres"

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of the columns that carry values, in order."""
        return tuple(c.name for c in self.columns)


@runtime_checkable
class Position(Protocol):
    """A place in a source's log: totally ordered within its source, serialisable to JSON."""

    def order_key(self) -> tuple[int, ...]:
        """A key whose order is the source's commit order."""
        ...

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form that the source can parse back."""
        ...


Row: TypeAlias = dict[str, Any]


@dataclass(slots=True)
class ChangeEvent:
    """One change to one row (or, for TRUNCATE, to a whole table).

    ``position`` orders the event within its source (for PostgreSQL: commit LSN and the
    event's index in its transaction); it is not a resume point, a :class:`TxCommit` is.
    ``size`` is the approximate payload size in bytes, used to bound memory.
    """

    op: Op
    schema: TableSchema
    key: Row | None
    before: Row | None
    after: Row | None
    position: Position
    commit_ts: datetime | None = None
    txid: int | None = None
    size: int = 0

    @property
    def table(self) -> TableId:
        """The schema-qualified table this event changes."""
        return self.schema.table


@dataclass(frozen=True, slots=True)
class TxCommit:
    """The end of a source transaction: everything before it may be made durable together.

    ``position`` is where streaming resumes after this transaction.
    """

    position: Position
    commit_ts: datetime | None = None
    txid: int | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A sign of life from an idle source.

    ``position``, when set, is a transaction boundary with nothing pending before it that the
    source has not already delivered, so a caught-up pipeline may checkpoint there (keeping
    the source's log from growing); ``None`` only says the source is alive.
    """

    position: Position | None = None


StreamItem: TypeAlias = ChangeEvent | TxCommit | Heartbeat
