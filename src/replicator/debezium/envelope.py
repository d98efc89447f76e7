"""Debezium's change-event envelope, as JsonConverter writes it to Kafka, read into changes.

A message on a table's topic is one of: a change event (``op`` c/u/d/r/t with ``before``,
``after`` and ``source``), a tombstone (a null value after a delete, for log compaction),
or, on the MySQL and SQL Server connectors' schema-change topic, a schema-change record. A
message on the transaction topic (``provide.transaction.metadata``) marks a source
transaction's BEGIN or END. :func:`read_message` tells them apart and decodes a change's row
images with the decoders of :mod:`.logical` when the event carries its schema; without one
(``schemas.enable=false``) the values stay as JSON gave them.

Two connectors write row images that are not rows, and are read into rows here:

- **MongoDB** writes a document as a string of MongoDB extended JSON. A collection is applied
  to a table of two columns: ``_id text``, its key, and ``document jsonb``, the whole
  document as MongoDB's *relaxed* extended JSON (numbers and dates become plain JSON;
  ObjectIds, decimals, binaries and non-finite doubles keep their ``$`` wrappers, so nothing
  is lost). ``_id`` is an ObjectId's 24 lower-case hex digits, and for any other id its
  relaxed JSON text, compact (``1004``, ``"1234"``, ``{"hi":"kafka"}``), the same whether it
  is read from the event's key or from the document. An update that carries only what
  changed (``updateDescription``, or the old oplog ``patch``) and not the whole document
  cannot be applied exactly, so it is refused (with the connector setting that fixes it)
  rather than guessed at.
- **Cassandra** writes each column as a cell ``{"value", "deletion_ts", "set"}``, and only
  the cells the write touched: a Cassandra write (INSERT or UPDATE alike) is an upsert of
  some columns, which leaves the row's other columns as they were. A column the event does
  not carry (a null cell, or ``set: false``) is therefore
  :data:`~replicator.events.UNCHANGED`; a cell set to null is ``None``. Applied to
  PostgreSQL, ``c`` and ``u`` are both upserts of the carried columns, and a row the target
  does not have yet gets NULL in the others (what Cassandra reads for a never-written cell):
  unlike PostgreSQL's unchanged TOAST values, a missing row is no sign of divergence there.
  A delete carries the primary key cells; a delete of a whole partition or of a clustering
  range names no single row and is refused.

A change's :attr:`Change.order` is the source's own position where the connector writes one
(PostgreSQL ``lsn``; MySQL binlog file, offset and row; SQL Server commit and change LSN and
event serial number; MongoDB timestamp and ordinal), so that changes to one key can be
ordered whatever Kafka partition or offset they arrive at. Cassandra writes none that is
comparable between its nodes (see ``_ORDERS``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from replicator.debezium.logical import Decode, FieldType, decoder, field_type, pg_type
from replicator.errors import SourceError
from replicator.events import UNCHANGED, Column, Op, Row

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
    """A record of a connector's schema-change topic (MySQL, SQL Server)."""

    database: str | None
    ddl: str  # "" from SQL Server, which writes no DDL (its ``tableChanges`` describe it)


Message = Change | Tombstone | TransactionMarker | SchemaChange


def read_message(key: bytes | None, value: bytes | None) -> Message:
    """Decode one Kafka message (key and value as the JSON converter wrote them)."""
    key_json = _parse(key, "key")
    value_json = _parse(value, "value")
    key_row = _key_row(key_json)
    if value_json is None:
        return Tombstone(key_row)
    schema, payload = _split(value_json)
    if not isinstance(payload, dict):
        raise SourceError(f"a Debezium message value is not an object: {value_json!r:.200}")
    if "op" in payload:
        return _change(schema, payload, key_row, key_json)
    if "status" in payload and "id" in payload:
        return _marker(payload)
    if "ddl" in payload:
        ddl = payload["ddl"]
        return SchemaChange(payload.get("databaseName"), "" if ddl is None else str(ddl))
    raise SourceError(
        f"not a Debezium change event: a value without `op` ({sorted(payload)[:8]})",
        fix="check that the topics hold Debezium's JSON envelopes (the JsonConverter), "
        "not the ExtractNewRecordState transform's flattened rows or Avro",
    )


_SCHEMA_START = b'{"schema":'
_PAYLOAD_START = b',"payload":'
# Raw schema JSON → its parsed form, shared by every message with that schema: the derived
# decoders are then cached by the parsed object's identity instead of re-serialising it.
_parsed_schemas: dict[bytes, Any] = {}


def _parse(data: bytes | None, part: str) -> Any:
    if data is None:
        return None
    try:
        # JsonConverter writes {"schema":…,"payload":…} compactly, schema first: parse the
        # (large, repeated) schema once per distinct text, and only the payload per message.
        if data.startswith(_SCHEMA_START) and data.endswith(b"}"):
            cut = data.find(_PAYLOAD_START)
            if cut > 0:
                raw = bytes(data[len(_SCHEMA_START) : cut])
                schema = _parsed_schemas.get(raw)
                if schema is None:
                    schema = _loads(raw)
                    if len(_parsed_schemas) >= _CACHE_LIMIT:
                        _forget_schemas()
                    _parsed_schemas[raw] = schema
                    _shared_nodes.update(_dict_ids(schema))
                try:
                    return {
                        "schema": schema,
                        "payload": _loads(data[cut + len(_PAYLOAD_START) : -1]),
                    }
                except ValueError:
                    pass  # not the layout it looked like: parse it whole
        return _loads(data)
    except ValueError as exc:
        raise SourceError(
            f"a Kafka message {part} is not JSON: {exc}",
            fix="consume topics written with Kafka Connect's JsonConverter",
        ) from exc


def _split(message: Any) -> tuple[Mapping[str, Any] | None, Any]:
    """The schema (or None) and the payload of a converter record."""
    if isinstance(message, dict) and "payload" in message and "schema" in message:
        return message["schema"], message["payload"]
    return None, message


def _key_row(key_json: Any) -> Row | None:
    schema, payload = _split(key_json)
    if payload is None:
        return None
    if not isinstance(payload, dict):
        # A bare scalar key has no column name.
        return {"id": payload}
    if schema is None:
        return dict(payload)
    decoders = _struct_decoders(schema)
    return {name: decode(payload.get(name)) for name, decode in decoders}


def _number(value: Any, what: str) -> int | None:
    # Debezium's docs print some of these as strings ("ts_ms": "1580390884335").
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SourceError(f"a Debezium event's {what} is not a number: {value!r:.40}") from None


def _op(value: Any, connector: Any) -> Op:
    op = _OPS.get(str(value))
    if op is None and value == "i" and connector == "cassandra":
        op = Op.INSERT  # what Cassandra's connector writes (Record.Operation.INSERT)
    if op is None:
        raise SourceError(f"a Debezium event with an unknown op {value!r}")
    return op


def _change(
    schema: Mapping[str, Any] | None,
    payload: Mapping[str, Any],
    key_row: Row | None,
    key_json: Any,
) -> Change:
    source = payload.get("source") or {}
    if not isinstance(source, dict):
        raise SourceError(f"a Debezium event's source is not an object: {source!r:.120}")
    connector = source.get("connector")
    op = _op(payload["op"], connector)
    key_schema, _ = _split(key_json)
    if key_schema is not None:
        key_columns = tuple(str(f["field"]) for f in key_schema.get("fields") or ())
    else:
        key_columns = tuple(key_row) if key_row else ()
    columns: tuple[Column, ...] | None = None
    if connector == "mongodb":
        key_row, before, after = _mongo_rows(op, payload, key_row, source)
        columns, key_columns = _MONGO_COLUMNS, _MONGO_KEY
    elif connector == "cassandra":
        before, after, columns = _cassandra_rows(op, schema, payload, key_row, key_columns)
    else:
        row = _row_schema(schema) if schema is not None else None
        if row is not None:
            decoders, columns = row
            before = _decoded(decoders, payload.get("before"))
            after = _decoded(decoders, payload.get("after"))
        else:
            before, after = _image(payload.get("before")), _image(payload.get("after"))
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
        ts_ms=_number(payload.get("ts_ms"), "ts_ms"),
        transaction=_transaction(transaction) if transaction else None,
    )


def _transaction(transaction: Any) -> TransactionRef:
    if not isinstance(transaction, dict) or "id" not in transaction:
        raise SourceError(f"a Debezium event's transaction block has no id: {transaction!r:.120}")
    return TransactionRef(
        str(transaction["id"]),
        _number(transaction.get("total_order"), "transaction.total_order") or 0,
        _number(transaction.get("data_collection_order"), "transaction order") or 0,
    )


def _image(row: Any) -> Row | None:
    if row is None:
        return None
    if not isinstance(row, dict):
        raise SourceError(
            f"a Debezium event's row image is not an object: {row!r:.120}",
            fix="only MongoDB's connector writes row images as strings; check that the "
            "event's source names its connector",
        )
    return dict(row)


def _decoded(decoders: list[tuple[str, Decode]], row: Any) -> Row | None:
    image = _image(row)
    if image is None:
        return None
    return {name: decode(image.get(name)) for name, decode in decoders}


def _marker(payload: Mapping[str, Any]) -> TransactionMarker:
    collections = payload.get("data_collections") or ()
    return TransactionMarker(
        status=str(payload["status"]),
        id=str(payload["id"]),
        event_count=_number(payload.get("event_count"), "event_count"),
        data_collections={str(c["data_collection"]): int(c["event_count"]) for c in collections},
        ts_ms=_number(payload.get("ts_ms"), "ts_ms"),
    )


# -- MongoDB: documents to (_id, document) rows ---------------------------------------------

_MONGO_COLUMNS = (
    Column("_id", "text", nullable=False),
    Column("document", "jsonb", nullable=False),
)
_MONGO_KEY = ("_id",)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def _mongo_rows(
    op: Op, payload: Mapping[str, Any], key_row: Row | None, source: Mapping[str, Any]
) -> tuple[Row | None, Row | None, Row | None]:
    """The key, before and after rows of a MongoDB event."""
    if op is Op.TRUNCATE:
        return None, None, None
    key_id = _mongo_key_id(key_row)
    before = _mongo_row(payload.get("before"), "before")
    after = _mongo_row(payload.get("after"), "after")
    where = f"{source.get('db')}.{source.get('collection')} _id {key_id}"
    if after is None and op is Op.UPDATE:
        carried = next((f for f in ("updateDescription", "patch") if payload.get(f)), None)
        raise SourceError(
            f"a MongoDB update of {where} carries "
            + (f"only what changed ({carried})" if carried else "no document")
            + ", not the updated document, so it cannot be applied exactly",
            fix="set the connector's capture.mode=change_streams_update_full (or "
            "change_streams_update_full_with_pre_image) so that every update carries the "
            "whole document; with it, an update whose document was deleted before Debezium "
            "looked it up carries none either, and the delete that follows it is applied",
        )
    if after is None and op is not Op.DELETE:
        raise SourceError(f"a MongoDB {op.name.lower()} event of {where} without its document")
    ids = {row["_id"] for row in (before, after) if row is not None}
    if key_id is not None:
        ids.add(key_id)
    if len(ids) != 1:
        raise SourceError(
            f"a MongoDB event of {source.get('db')}.{source.get('collection')} names "
            + (f"different _ids in its key and document ({sorted(ids)})" if ids else "no _id")
        )
    return {"_id": ids.pop()}, before, after


def _mongo_key_id(key_row: Row | None) -> str | None:
    # The key's `id` is the _id as a string of extended JSON: "1004", "\"1234\"",
    # "{\"$oid\" : \"596e...\"}".
    if key_row is None:
        return None
    raw = key_row.get("id")
    if not isinstance(raw, str):
        raise SourceError(f"a MongoDB event key without a string `id`: {key_row!r:.120}")
    return _id_text(_extended_json(raw, "key id"))


def _mongo_row(value: Any, part: str) -> Row | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    document = _extended_json(text, part)
    if not isinstance(document, dict) or "_id" not in document:
        raise SourceError(f"a MongoDB event's {part} is not a document with an _id: {text:.120}")
    return {"_id": _id_text(document["_id"]), "document": document}


def _id_text(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("$oid"), str):
        return str(value["$oid"]).lower()
    # Key order is kept: MongoDB compares embedded documents field by field, in order.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _extended_json(text: str, part: str) -> Any:
    """MongoDB extended JSON (canonical, relaxed or the legacy strict mode) as relaxed JSON."""
    try:
        return json.loads(text, object_hook=_relaxed, parse_constant=_non_finite)
    except (ValueError, OverflowError) as exc:
        raise SourceError(f"a MongoDB event's {part} is not extended JSON: {exc}") from exc


def _non_finite(name: str) -> dict[str, str]:
    # Python's json reads NaN and Infinity, which jsonb cannot hold: canonical form instead.
    return {"$numberDouble": name}


def _relaxed(obj: dict[str, Any]) -> Any:
    # Called innermost first, so {"$date": {"$numberLong": ...}} sees the number already.
    if len(obj) == 1:
        ((name, value),) = obj.items()
        if name in ("$numberInt", "$numberLong") and isinstance(value, str):
            return int(value)
        if name == "$numberDouble" and isinstance(value, str):
            number = float(value)
            return number if math.isfinite(number) else obj
        if name == "$date":
            return _relaxed_date(value, obj)
    elif len(obj) == 2:
        if isinstance(obj.get("$binary"), str) and "$type" in obj:  # legacy strict mode
            return {"$binary": {"base64": obj["$binary"], "subType": obj["$type"]}}
        if isinstance(obj.get("$regex"), str) and "$options" in obj:  # legacy strict mode
            return {"$regularExpression": {"pattern": obj["$regex"], "options": obj["$options"]}}
    return obj


def _relaxed_date(value: Any, original: dict[str, Any]) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return original  # already an ISO-8601 string (relaxed), or not a date we know
    try:
        moment = _EPOCH_UTC + timedelta(milliseconds=value)
    except OverflowError:
        moment = None
    if moment is None or not 1970 <= moment.year <= 9999:
        return {"$date": {"$numberLong": str(value)}}
    return {"$date": f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"}


# -- Cassandra: cells to columns ------------------------------------------------------------

_RANGES = ("_range_start", "_range_end")  # a range tombstone's clustering bounds


def _cassandra_rows(
    op: Op,
    schema: Mapping[str, Any] | None,
    payload: Mapping[str, Any],
    key_row: Row | None,
    key_columns: tuple[str, ...],
) -> tuple[Row | None, Row | None, tuple[Column, ...] | None]:
    """The before and after rows and the columns of a Cassandra event (which has no before:
    Cassandra does not read before it writes)."""
    cells = payload.get("after")
    if cells is not None and not isinstance(cells, dict):
        raise SourceError(f"a Cassandra event's after is not an object: {cells!r:.120}")
    where = f"{payload['source'].get('keyspace')}.{payload['source'].get('table')}"
    if cells is not None and any(cells.get(name) is not None for name in _RANGES):
        raise SourceError(
            f"a Cassandra range delete on {where} removes every row between two clustering "
            "bounds: it names no single row, so it cannot be applied by key",
            fix="delete such rows one primary key at a time on the source, or re-copy the table",
        )
    compiled = _cassandra_schema(schema) if schema is not None else None
    columns = None
    if compiled is not None:
        decoders, typed = compiled
        columns = tuple(replace(c, nullable=c.name not in key_columns) for c in typed)
    else:
        decoders = [(name, _as_is) for name in cells or () if name not in _RANGES]
    row = None if cells is None else _cassandra_row(cells, decoders, where)
    if op is not Op.DELETE:
        return None, row, columns
    if not key_columns or key_row is None or any(key_row.get(c) is None for c in key_columns):
        raise SourceError(
            f"a Cassandra delete on {where} without its whole primary key ({key_row}) deletes "
            "a whole partition: it names no single row, so it cannot be applied by key",
            fix="delete such rows one primary key at a time on the source, or re-copy the table",
        )
    return row, None, columns


def _as_is(value: Any) -> Any:
    return value


def _cassandra_row(cells: Mapping[str, Any], decoders: list[tuple[str, Decode]], where: str) -> Row:
    row: Row = {}
    for name, decode in decoders:
        cell = cells.get(name)
        if cell is None:
            row[name] = UNCHANGED  # not written by this change: the row keeps its value
            continue
        if not isinstance(cell, dict) or "value" not in cell:
            raise SourceError(
                f"{where}.{name}: not a Cassandra cell ({{value, deletion_ts, set}}): {cell!r:.80}"
            )
        row[name] = decode(cell["value"]) if cell.get("set", True) else UNCHANGED
    return row


# -- schemas, compiled once per shape ------------------------------------------------------

_RowSchema = tuple[list[tuple[str, Decode]], tuple[Column, ...]]
_row_cache: dict[Any, _RowSchema | None] = {}
_struct_cache: dict[Any, list[tuple[str, Decode]]] = {}


def _row_node(envelope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema node of the envelope's row struct (``after``/``before``)."""
    return next(
        (f for f in envelope.get("fields") or () if f.get("field") in ("after", "before")),
        None,
    )


def _row_schema(envelope: Mapping[str, Any]) -> _RowSchema | None:
    """Decoders and target columns of the envelope's row struct."""
    node = _row_node(envelope)
    if node is None:
        return None
    cache_key = _node_key(node)
    if cache_key not in _row_cache:
        struct = field_type(node)
        decoders = [(name, decoder(ft, name)) for name, ft in struct.fields]
        columns = tuple(_column(name, ft) for name, ft in struct.fields)
        _remember(_row_cache, cache_key, (decoders, columns))
    return _row_cache[cache_key]


def _cassandra_schema(envelope: Mapping[str, Any]) -> _RowSchema | None:
    """Decoders and columns of a Cassandra row struct, whose fields are cells: structs of
    ``value`` (typed as the column), ``deletion_ts`` and ``set``."""
    node = _row_node(envelope)
    if node is None:
        return None
    cache_key = ("cassandra", _node_key(node))
    if cache_key not in _row_cache:
        decoders: list[tuple[str, Decode]] = []
        columns: list[Column] = []
        for name, cell in field_type(node).fields:
            if name in _RANGES:
                continue
            value = dict(cell.fields).get("value")
            if value is None:
                raise SourceError(f"column {name}: not a Cassandra cell schema: {cell.type}")
            decoders.append((name, decoder(value, name)))
            columns.append(_column(name, value))
        _remember(_row_cache, cache_key, (decoders, tuple(columns)))
    return _row_cache[cache_key]


def _struct_decoders(node: Mapping[str, Any]) -> list[tuple[str, Decode]]:
    cache_key = _node_key(node)
    found = _struct_cache.get(cache_key)
    if found is None:
        struct = field_type(node)
        found = [(name, decoder(ft, name)) for name, ft in struct.fields]
        _remember(_struct_cache, cache_key, found)
    return found


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()  # schemas change rarely: a full cache means churn, start over
    cache[key] = value


def _forget_schemas() -> None:
    # Entries are keyed by the identity of parsed schemas: drop them together.
    _parsed_schemas.clear()
    _shared_nodes.clear()
    _row_cache.clear()
    _struct_cache.clear()


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # integers beyond 64 bits, which orjson refuses


def _node_key(node: Mapping[str, Any]) -> Any:
    """A cache key for a schema node: its identity when it belongs to a shared parsed
    schema (kept alive by the cache, so the id is not reused), else its canonical text."""
    return id(node) if _shared(node) else json.dumps(node, sort_keys=True)


def _shared(node: Mapping[str, Any]) -> bool:
    return id(node) in _shared_nodes


def _dict_ids(value: Any) -> list[int]:
    found: list[int] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(id(item))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


_shared_nodes: set[int] = set()


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
    # Debezium sorts each change table by (commit LSN, change LSN); event_serial_no tells
    # apart the events of one change (a key update's delete 1 and create 2). The docs print
    # event_serial_no as a string ("1"), hence int().
    commit, change = _lsn(source.get("commit_lsn")), _lsn(source.get("change_lsn"))
    if commit is None or change is None:
        return None
    return (commit, change, int(source.get("event_serial_no") or 0))


def _mongodb(source: Mapping[str, Any]) -> tuple[int, ...] | None:
    if source.get("ts_ms") is None or source.get("ord") is None:
        return None
    # The cluster time is (seconds, ordinal); ts_ms holds its seconds times 1000.
    return (int(source["ts_ms"]) // 1000, int(source["ord"]))


# Cassandra has no entry: its events are ordered by their Kafka offset. Its `file` and `pos`
# name a place in one node's commit log, and every node runs its own agent writing to the
# same topics, so they do not compare across the events of one table. Its write timestamp
# (`ts_micro`; `ts_ms` in the docs' examples) is what Cassandra resolves conflicts with, but
# per cell, while an event carries only the cells its write touched: keeping the newest event
# per row by that timestamp (the staleness guard, invariant 2) would drop an older write to
# *other* columns, which Cassandra keeps, silently. The price of the offset order: two writes
# to one cell through different nodes may land in another order than Cassandra's
# last-write-wins, and each replica's agent sends the same write again (harmless: an upsert).
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
