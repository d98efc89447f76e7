"""Debezium's change-event envelope, as JsonConverter writes it to Kafka, read into changes.

A message on a table's topic is one of: a change event (``op`` c/u/d/r/t with ``before``,
``after`` and ``source``), a tombstone (a null value after a delete, for log compaction),
or, on the MySQL connector's schema-change topic, a DDL record. A message on the
transaction topic (``provide.transaction.metadata``) marks a source transaction's BEGIN or
END. :func:`read_message` tells them apart and decodes a change's row images with the
decoders of :mod:`.logical` when the event carries its schema; without one
(``schemas.enable=false``) the values stay as JSON gave them.

A change's :attr:`Change.order` is the source's own position where the connector writes one
(PostgreSQL ``lsn``; MySQL binlog file, offset and row; SQL Server commit and change LSN and
event serial number; MongoDB timestamp and ordinal), so that changes to one key can be
ordered whatever Kafka partition or offset they arrive at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from replicator.debezium.logical import Decode, FieldType, decoder, field_type, pg_type
from replicator.errors import SourceError
from replicator.events import Column, Op, Row

_OPS = {op.value: op for op in Op}
_CACHE_LIMIT = 256


_PG_TRANSACTION = re.compile(r"^(\d+):\d+$")


def transaction_key(transaction_id: str) -> str:
    """What identifies a source transaction in Debezium's transaction ids.

    Debezium's PostgreSQL connector writes ``txid:lsn`` with the LSN of the *event*: the
    events of one transaction, its BEGIN and its END carry different ids, and only the txid
    part names the transaction. Other connectors' ids (GTIDs, SQL Server commit LSNs) are
    the same for all of a transaction's records.
    """
    match = _PG_TRANSACTION.match(transaction_id)
    return match.group(1) if match else transaction_id


@dataclass(frozen=True, slots=True)
class TransactionRef:
    """The source transaction a change belongs to (``provide.transaction.metadata``)."""

    id: str
    total_order: int
    data_collection_order: int

    @property
    def key(self) -> str:
        """The transaction's identity (see :func:`transaction_key`)."""
        return transaction_key(self.id)


@dataclass(frozen=True, slots=True)
class Change:
    """One decoded change event."""

    op: Op
    key: Row | None
    before: Row | None
    after: Row | None
    columns: tuple[Column, ...] | None  # None when the event carries no schema
    key_columns: tuple[str, ...]
    order: tuple[int, ...] | None  # the source's position, when the connector gives one
    source: Mapping[str, Any]
    ts_ms: int | None
    transaction: TransactionRef | None


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The null value Debezium writes after a delete, so compaction can drop the key."""

    key: Row | None


@dataclass(frozen=True, slots=True)
class TransactionMarker:
    """A BEGIN or END record of the transaction topic."""

    status: str  # "BEGIN" | "END"
    id: str
    event_count: int | None
    data_collections: Mapping[str, int]  # on END: events per table (``schema.table``)
    ts_ms: int | None

    @property
    def key(self) -> str:
        """The transaction's identity (see :func:`transaction_key`)."""
        return transaction_key(self.id)


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """A record of the MySQL connector's schema-change topic."""

    database: str | None
    ddl: str


Message = Change | Tombstone | TransactionMarker | SchemaChange


def read_message(key: bytes | None, value: bytes | None) -> Message:
    """Decode one Kafka message (key and value as the JSON converter wrote them)."""
    key_json = _parse(key, "key")
    value_json = _parse(value, "value")
    key_row = _key_row(key_json)
    if value_json is None:
        return Tombstone(key_row)
    schema, payload = _split(value_json)
    if not isinstance(payload, Mapping):
        raise SourceError(f"a Debezium message value is not an object: {value_json!r:.200}")
    if "op" in payload:
        return _change(schema, payload, key_row, key_json)
    if "status" in payload and "id" in payload:
        return _marker(payload)
    if "ddl" in payload:
        return SchemaChange(payload.get("databaseName"), str(payload["ddl"]))
    raise SourceError(
        f"not a Debezium change event: a value without `op` ({sorted(payload)[:8]})",
        fix="check that the topics hold Debezium's JSON envelopes (the JsonConverter), "
        "not the ExtractNewRecordState transform's flattened rows or Avro",
    )


def _parse(data: bytes | None, part: str) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise SourceError(
            f"a Kafka message {part} is not JSON: {exc}",
            fix="consume topics written with Kafka Connect's JsonConverter",
        ) from exc


def _split(message: Any) -> tuple[Mapping[str, Any] | None, Any]:
    """The schema (or None) and the payload of a converter record."""
    if isinstance(message, Mapping) and "payload" in message and "schema" in message:
        return message["schema"], message["payload"]
    return None, message


def _key_row(key_json: Any) -> Row | None:
    schema, payload = _split(key_json)
    if payload is None:
        return None
    if not isinstance(payload, Mapping):
        # MongoDB without schemas: {"id": "..."}; a bare scalar key has no column name.
        return {"id": payload}
    if schema is None:
        return dict(payload)
    decoders = _struct_decoders(schema)
    return {name: decode(payload.get(name)) for name, decode in decoders}


def _change(
    schema: Mapping[str, Any] | None,
    payload: Mapping[str, Any],
    key_row: Row | None,
    key_json: Any,
) -> Change:
    op = _OPS.get(str(payload["op"]))
    if op is None:
        raise SourceError(f"a Debezium event with an unknown op {payload['op']!r}")
    source = payload.get("source") or {}
    columns: tuple[Column, ...] | None = None
    before = payload.get("before")
    after = payload.get("after")
    if source.get("connector") == "mongodb":
        before, after = _mongo_document(before), _mongo_document(after)
    elif schema is not None:
        row = _row_schema(schema)
        if row is not None:
            decoders, columns = row
            before = _decoded(decoders, before)
            after = _decoded(decoders, after)
    key_schema, _ = _split(key_json)
    if key_schema is not None:
        key_columns = tuple(str(f["field"]) for f in key_schema.get("fields") or ())
    else:
        key_columns = tuple(key_row) if key_row else ()
    transaction = payload.get("transaction")
    return Change(
        op=op,
        key=key_row,
        before=before,
        after=after,
        columns=columns,
        key_columns=key_columns,
        order=source_order(source),
        source=source,
        ts_ms=payload.get("ts_ms"),
        transaction=(
            TransactionRef(
                str(transaction["id"]),
                int(transaction["total_order"]),
                int(transaction["data_collection_order"]),
            )
            if transaction
            else None
        ),
    )


def _decoded(decoders: list[tuple[str, Decode]], row: Any) -> Row | None:
    if row is None:
        return None
    return {name: decode(row.get(name)) for name, decode in decoders}


def _marker(payload: Mapping[str, Any]) -> TransactionMarker:
    collections = payload.get("data_collections") or ()
    return TransactionMarker(
        status=str(payload["status"]),
        id=str(payload["id"]),
        event_count=payload.get("event_count"),
        data_collections={str(c["data_collection"]): int(c["event_count"]) for c in collections},
        ts_ms=payload.get("ts_ms"),
    )


def _mongo_document(value: Any) -> Row | None:
    # MongoDB's connector writes the document as a string of extended JSON.
    if value is None:
        return None
    document = json.loads(value) if isinstance(value, str) else value
    if not isinstance(document, Mapping):
        raise SourceError(f"a MongoDB event's document is not an object: {value!r:.120}")
    return dict(document)


# -- schemas, compiled once per shape ------------------------------------------------------

_RowSchema = tuple[list[tuple[str, Decode]], tuple[Column, ...]]
_row_cache: dict[str, _RowSchema | None] = {}
_struct_cache: dict[str, list[tuple[str, Decode]]] = {}


def _row_schema(envelope: Mapping[str, Any]) -> _RowSchema | None:
    """Decoders and target columns of the envelope's row struct (``after``/``before``)."""
    node = next(
        (f for f in envelope.get("fields") or () if f.get("field") in ("after", "before")),
        None,
    )
    if node is None:
        return None
    cache_key = json.dumps(node, sort_keys=True)
    if cache_key not in _row_cache:
        struct = field_type(node)
        decoders = [(name, decoder(ft, name)) for name, ft in struct.fields]
        columns = tuple(_column(name, ft) for name, ft in struct.fields)
        _remember(_row_cache, cache_key, (decoders, columns))
    return _row_cache[cache_key]


def _struct_decoders(node: Mapping[str, Any]) -> list[tuple[str, Decode]]:
    cache_key = json.dumps(node, sort_keys=True)
    found = _struct_cache.get(cache_key)
    if found is None:
        struct = field_type(node)
        found = [(name, decoder(ft, name)) for name, ft in struct.fields]
        _remember(_struct_cache, cache_key, found)
    return found


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()  # schemas change rarely: a full cache means churn, start over
    cache[key] = value


def _column(name: str, ft: FieldType) -> Column:
    return Column(name=name, type_name=pg_type(ft), nullable=ft.optional)


# -- source positions ----------------------------------------------------------------------

_BINLOG_NUMBER = re.compile(r"\.(\d+)$")
_SQLSERVER_LSN = re.compile(r"^([0-9a-fA-F]{8}):([0-9a-fA-F]{8}):([0-9a-fA-F]{4})$")


def _postgres(source: Mapping[str, Any]) -> tuple[int, ...] | None:
    lsn = source.get("lsn")
    return (int(lsn),) if lsn is not None else None


def _mysql(source: Mapping[str, Any]) -> tuple[int, ...] | None:
    match = _BINLOG_NUMBER.search(str(source.get("file") or ""))
    if match is None or source.get("pos") is None:
        return None
    return (int(match.group(1)), int(source["pos"]), int(source.get("row") or 0))


def _lsn(text: Any) -> int | None:
    match = _SQLSERVER_LSN.match(str(text or ""))
    if match is None:
        return None
    high, middle, low = (int(part, 16) for part in match.groups())
    return (high << 48) | (middle << 16) | low


def _sqlserver(source: Mapping[str, Any]) -> tuple[int, ...] | None:
    commit, change = _lsn(source.get("commit_lsn")), _lsn(source.get("change_lsn"))
    if commit is None or change is None:
        return None
    return (commit, change, int(source.get("event_serial_no") or 0))


def _mongodb(source: Mapping[str, Any]) -> tuple[int, ...] | None:
    if source.get("ts_ms") is None or source.get("ord") is None:
        return None
    # The cluster time is (seconds, ordinal); ts_ms holds its seconds times 1000.
    return (int(source["ts_ms"]) // 1000, int(source["ord"]))


_ORDERS: dict[str, Callable[[Mapping[str, Any]], tuple[int, ...] | None]] = {
    "postgresql": _postgres,
    "mysql": _mysql,
    "mariadb": _mysql,
    "sqlserver": _sqlserver,
    "mongodb": _mongodb,
}


def source_order(source: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The event's place in its source's log, comparable between events of one source; None
    when the connector writes no such position (the Kafka offset must order it then)."""
    order = _ORDERS.get(str(source.get("connector")))
    try:
        return order(source) if order is not None else None
    except (TypeError, ValueError):
        return None
