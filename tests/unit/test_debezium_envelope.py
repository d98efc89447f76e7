"""Debezium's envelope read into changes, markers and tombstones, over the messages Debezium's
own PostgreSQL and MySQL connectors wrote (tests/fixtures/debezium)."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from replicator.debezium.envelope import (
    Change,
    Message,
    SchemaChange,
    Tombstone,
    TransactionMarker,
    read_message,
    source_order,
)
from replicator.errors import SourceError
from replicator.events import Column, Op

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debezium"
ALL = [
    "postgres.schemas.json",
    "postgres.noschemas.json",
    "postgres.txmeta.json",
    "mysql.schemas.json",
    "mysql.noschemas.json",
]


def _bytes(part: Any) -> bytes | None:
    return None if part is None else json.dumps(part).encode()


@cache
def read(name: str) -> list[tuple[str, Message]]:
    """Every message of a fixture file, read as the Kafka source will read it."""
    raw = json.loads((FIXTURES / name).read_text())["messages"]
    return [(m["topic"], read_message(_bytes(m["key"]), _bytes(m["value"]))) for m in raw]


def changes(name: str, table: str) -> list[Change]:
    """The change events of one table's topic, in offset order."""
    return [m for t, m in read(name) if t.endswith(f".{table}") and isinstance(m, Change)]


@pytest.mark.parametrize("name", ALL)
def test_every_captured_message_is_read(name: str) -> None:
    """Change events, tombstones, transaction markers and DDL records are told apart."""
    kinds = Counter(type(m).__name__ for _, m in read(name))
    assert kinds["Change"] > 20 and kinds["Tombstone"] >= 2
    assert kinds["TransactionMarker"] == (28 if name == "postgres.txmeta.json" else 0)
    assert (kinds["SchemaChange"] > 0) == name.startswith("mysql.")


def test_a_postgres_change_carries_its_columns_key_and_position() -> None:
    """An insert streamed after the snapshot: typed values, target columns, the key, the LSN."""
    insert = [c for c in changes("postgres.schemas.json", "customers") if c.op is Op.INSERT][-1]
    assert insert.key == {"id": 4} and insert.key_columns == ("id",)
    assert insert.after == {"id": 4, "name": "Barbara", "email": None, "vip": False}
    assert insert.before is None
    assert insert.columns is not None
    assert insert.columns[:2] == (
        Column("id", "integer", nullable=False),
        Column("name", "text", nullable=False),
    )
    assert insert.order == (insert.source["lsn"],) and insert.source["table"] == "customers"
    assert insert.transaction is None


def test_a_key_change_is_a_delete_a_tombstone_and_a_create() -> None:
    """UPDATE of a primary key: delete of the old key (then its tombstone), create of the new."""
    messages = [m for t, m in read("postgres.schemas.json") if t.endswith(".customers")]
    ops = [m.op.value if isinstance(m, Change) else type(m).__name__ for m in messages]
    at = ops.index("d")
    assert ops[at : at + 3] == ["d", "Tombstone", "c"]
    deleted, tombstone, created = messages[at : at + 3]
    assert isinstance(deleted, Change) and isinstance(created, Change)
    assert deleted.key == {"id": 1} and created.key == {"id": 10}
    assert tombstone == Tombstone({"id": 1})
    assert deleted.order is not None and created.order is not None
    assert deleted.order <= created.order


@pytest.mark.parametrize("name", ["postgres.schemas.json", "mysql.schemas.json"])
def test_changes_to_one_key_are_in_source_order(name: str) -> None:
    """Per table topic, the streamed events' source positions never go backwards."""
    for table in ("all_types", "customers", "composite_key", "no_pk"):
        streamed = [c for c in changes(name, table) if c.op is not Op.READ]
        orders = [c.order for c in streamed]
        assert orders and None not in orders
        assert orders == sorted(orders), table  # type: ignore[type-var]


def test_truncate_has_no_key() -> None:
    """Debezium's truncate event names the table but no row."""
    (truncate,) = [c for c in changes("postgres.schemas.json", "truncated") if c.op is Op.TRUNCATE]
    assert truncate.key is None and truncate.before is None and truncate.after is None
    assert truncate.source["table"] == "truncated"


def test_transaction_metadata_links_events_to_their_end_marker() -> None:
    """Each END marker's per-table counts equal the events of its transaction, which
    PostgreSQL's connector names by txid alone (its ids differ from event to event)."""
    messages = read("postgres.txmeta.json")
    ends = [m for _, m in messages if isinstance(m, TransactionMarker) and m.status == "END"]
    begins = [m for _, m in messages if isinstance(m, TransactionMarker) and m.status == "BEGIN"]
    assert ends and {m.key for m in ends} == {m.key for m in begins}
    assert {m.id for m in ends} != {m.id for m in begins}  # the quirk the key is for
    for end in ends:
        members = [
            m
            for _, m in messages
            if isinstance(m, Change) and m.transaction and m.transaction.key == end.key
        ]
        tables = Counter(f"{m.source['schema']}.{m.source['table']}" for m in members)
        assert dict(tables) == dict(end.data_collections)
        assert end.event_count == len(members)
        assert sorted(m.transaction.total_order for m in members if m.transaction) == list(
            range(1, len(members) + 1)
        )


def test_mysql_positions_and_ddl_records() -> None:
    """MySQL changes are ordered by binlog file, offset and row; DDL records are kept apart."""
    insert = [c for c in changes("mysql.schemas.json", "customers") if c.op is Op.INSERT][0]
    number = int(insert.source["file"].rsplit(".", 1)[1])
    assert insert.order == (number, insert.source["pos"], insert.source["row"])
    ddl = [m for _, m in read("mysql.schemas.json") if isinstance(m, SchemaChange)]
    assert any("ALTER TABLE" in d.ddl.upper() for d in ddl)


def test_without_schemas_the_values_stay_as_json_gave_them() -> None:
    """schemas.enable=false: no target columns, and values in their JSON encoding."""
    row = next(c for c in changes("postgres.noschemas.json", "all_types") if c.after).after
    assert row is not None
    first = changes("postgres.noschemas.json", "all_types")[0]
    assert first.columns is None and first.key_columns == ("id",)
    assert set(row["c_numeric"]) == {"scale", "value"}  # VariableScaleDecimal, undecoded
    typed = changes("postgres.schemas.json", "all_types")[0].after
    assert typed is not None and typed["c_numeric"] == Decimal("12345678901234567890.123456789")


def test_source_orders_of_the_other_connectors() -> None:
    """SQL Server's LSN triple and MongoDB's cluster time order their events."""
    earlier = source_order(
        {
            "connector": "sqlserver",
            "commit_lsn": "00000027:00000758:0005",
            "change_lsn": "00000027:00000758:0003",
            "event_serial_no": 1,
        }
    )
    later = source_order(
        {
            "connector": "sqlserver",
            "commit_lsn": "00000028:00000001:0001",
            "change_lsn": "00000027:00000900:0001",
            "event_serial_no": 2,
        }
    )
    assert earlier is not None and later is not None and earlier < later
    assert source_order({"connector": "mongodb", "ts_ms": 1_700_000_001_000, "ord": 2}) == (
        1_700_000_001,
        2,
    )
    assert source_order({"connector": "cassandra"}) is None
    assert source_order({"connector": "sqlserver", "commit_lsn": "garbage"}) is None


def test_mongodb_documents_are_parsed_from_their_extended_json() -> None:
    """MongoDB's connector writes ``after`` as a string of extended JSON; it becomes an
    ``_id`` key column and a ``document`` column."""
    value = {
        "after": '{"_id": {"$oid": "5d5c7f5d0aa3c56ea4a4bdd3"}, "name": "Ada"}',
        "source": {"connector": "mongodb", "ts_ms": 1_000, "ord": 1, "collection": "c"},
        "op": "c",
        "ts_ms": 1_001,
    }
    key = json.dumps({"id": json.dumps({"$oid": "5d5c7f5d0aa3c56ea4a4bdd3"})}).encode()
    change = read_message(key, json.dumps(value).encode())
    assert isinstance(change, Change) and change.order == (1, 1)
    assert change.after == {
        "_id": "5d5c7f5d0aa3c56ea4a4bdd3",
        "document": {"_id": {"$oid": "5d5c7f5d0aa3c56ea4a4bdd3"}, "name": "Ada"},
    }


def test_what_is_not_a_debezium_event_gets_a_clear_error() -> None:
    """Flattened rows (ExtractNewRecordState), non-JSON values and unknown ops are refused."""
    with pytest.raises(SourceError, match="ExtractNewRecordState"):
        read_message(b'{"id": 1}', b'{"id": 1, "name": "flattened"}')
    with pytest.raises(SourceError, match="not JSON"):
        read_message(None, b"\x00\x00\x00\x00\x01avro")
    with pytest.raises(SourceError, match="unknown op"):
        read_message(None, b'{"op": "x", "source": {}}')
