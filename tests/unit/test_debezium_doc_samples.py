"""The change events printed in Debezium's SQL Server, Cassandra and MongoDB documentation
(tests/fixtures/debezium/docs), read as the Kafka source reads them; every expected value is
written out by hand from the doc."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from replicator.debezium.envelope import (
    Change,
    Message,
    SchemaChange,
    Tombstone,
    TransactionMarker,
    TransactionRef,
    read_message,
    source_order,
)
from replicator.errors import SourceError
from replicator.events import UNCHANGED, Column, Op
from tests.fixtures.debezium.samples import (
    CONNECTORS,
    DOCS,
    doc_sample,
    doc_samples,
    message_bytes,
)

ALL = [(c, s["name"]) for c in CONNECTORS for s in doc_samples(c)]


def read(connector: str, name: str) -> Message:
    """A documentation sample, read from its Kafka message bytes."""
    return read_message(*message_bytes(doc_sample(connector, name)))


def change(connector: str, name: str) -> Change:
    """A documentation sample that is a change event."""
    message = read(connector, name)
    assert isinstance(message, Change)
    return message


def read_json(key: Any, value: Any) -> Message:
    """A hand-made message (key and value as parsed JSON), read from its bytes."""
    return read_message(
        None if key is None else json.dumps(key).encode(),
        None if value is None else json.dumps(value).encode(),
    )


# -- the fixture files ------------------------------------------------------------------------


KINDS = {
    ("sqlserver", "create"): Change,
    ("sqlserver", "create.noschema"): Change,
    ("sqlserver", "update"): Change,
    ("sqlserver", "update.noschema"): Change,
    ("sqlserver", "delete"): Change,
    ("sqlserver", "delete.noschema"): Change,
    ("sqlserver", "tombstone"): Tombstone,
    ("sqlserver", "transaction.begin"): TransactionMarker,
    ("sqlserver", "transaction.end"): TransactionMarker,
    ("sqlserver", "transaction.event"): Change,
    ("sqlserver", "schema_change"): SchemaChange,
    ("sqlserver", "schema_change.key_schema"): Tombstone,
    ("cassandra", "key"): Tombstone,
    ("cassandra", "create"): Change,
    ("cassandra", "update"): Change,
    ("cassandra", "delete"): Change,
    ("mongodb", "key"): Tombstone,
    ("mongodb", "key.integer"): Tombstone,
    ("mongodb", "key.float"): Tombstone,
    ("mongodb", "key.string"): Tombstone,
    ("mongodb", "key.document"): Tombstone,
    ("mongodb", "key.objectid"): Tombstone,
    ("mongodb", "key.binary"): Tombstone,
    ("mongodb", "create"): Change,
    ("mongodb", "create.noschema"): Change,
    ("mongodb", "update"): Change,
    ("mongodb", "delete"): Change,
    ("mongodb", "transaction.begin"): TransactionMarker,
    ("mongodb", "transaction.end"): TransactionMarker,
    ("mongodb", "transaction.event"): Change,
}


def test_every_sample_is_listed_here() -> None:
    """The fixture files hold exactly the samples these tests expect."""
    assert sorted(ALL) == sorted(KINDS)


@pytest.mark.parametrize(("connector", "name"), ALL)
def test_every_sample_is_read_as_its_kind(connector: str, name: str) -> None:
    """Each documentation sample decodes, to a change, tombstone, marker or schema change."""
    assert type(read(connector, name)) is KINDS[connector, name]


@pytest.mark.parametrize(("connector", "name"), ALL)
def test_every_sample_names_its_source(connector: str, name: str) -> None:
    """A sample says where in the doc it is from, its topic, and (when repaired) how."""
    sample = doc_sample(connector, name)
    assert sample["section"] and sample["topic"] and sample["verbatim"]
    assert set(sample) <= {"name", "section", "topic", "key", "value", "verbatim"} | {
        "repair",
        "notes",
    }
    if "repair" not in sample:
        # Valid JSON as printed: the verbatim text is the key or the value itself.
        assert json.loads(sample["verbatim"]) in (sample["key"], sample["value"])
    elif sample["repair"] == "callouts (`// <n>`) removed from line ends":
        text = re.sub(r"[ \t]*//[ \t]*<\d*>[ \t]*$", "", sample["verbatim"], flags=re.M)
        assert json.loads(text) in (sample["key"], sample["value"])


@pytest.mark.parametrize("connector", CONNECTORS)
def test_every_file_credits_its_source(connector: str) -> None:
    """Each file names the doc, repository, commit and licence the samples were copied from."""
    header = json.loads((DOCS / f"{connector}.json").read_text())["header"]
    assert header["source"] == f"documentation/modules/ROOT/pages/connectors/{connector}.adoc"
    assert header["repository"] == "https://github.com/debezium/debezium"
    assert re.fullmatch(r"[0-9a-f]{40}", header["commit"])
    assert header["licence"] == "Apache-2.0" and header["notes"]


# -- SQL Server -------------------------------------------------------------------------------


def lsn(high: int, middle: int, low: int) -> int:
    """A SQL Server LSN ``high:middle:low`` (hex parts of 8, 8 and 4 digits) as one number."""
    return (high << 48) | (middle << 16) | low


SQLSERVER_COLUMNS = (
    Column("id", "integer", nullable=False),
    Column("first_name", "text", nullable=False),
    Column("last_name", "text", nullable=False),
    Column("email", "text", nullable=False),
)
JOHN = {"id": 1005, "first_name": "john", "last_name": "doe", "email": "john.doe@example.org"}
JOHN_NOREPLY = {**JOHN, "email": "noreply@example.org"}


@pytest.mark.parametrize("name", ["create", "create.noschema"])
def test_sqlserver_create(name: str) -> None:
    """A SQL Server create: the new row, its key, and the (commit, change, serial) order."""
    created = change("sqlserver", name)
    assert created.op is Op.INSERT
    assert created.key == {"id": 1005} and created.key_columns == ("id",)
    assert created.before is None and created.after == JOHN
    assert created.columns == (None if name.endswith("noschema") else SQLSERVER_COLUMNS)
    assert created.order == (lsn(0x27, 0x758, 0x5), lsn(0x27, 0x758, 0x3), 1)
    assert created.ts_ms == 1559729471739 and created.transaction is None
    assert created.source["table"] == "customers"


@pytest.mark.parametrize("name", ["update", "update.noschema"])
def test_sqlserver_update(name: str) -> None:
    """A SQL Server update: both images, and event serial number 2 (its second CDC row)."""
    updated = change("sqlserver", name)
    assert updated.op is Op.UPDATE and updated.key == {"id": 1005}
    assert updated.before == JOHN and updated.after == JOHN_NOREPLY
    assert updated.columns == (None if name.endswith("noschema") else SQLSERVER_COLUMNS)
    assert updated.order == (lsn(0x27, 0xAC0, 0x7), lsn(0x27, 0xAC0, 0x2), 2)
    assert updated.ts_ms == 1559729998706


@pytest.mark.parametrize("name", ["delete", "delete.noschema"])
def test_sqlserver_delete(name: str) -> None:
    """A SQL Server delete: the old row only."""
    deleted = change("sqlserver", name)
    assert deleted.op is Op.DELETE and deleted.key == {"id": 1005}
    assert deleted.before == JOHN_NOREPLY and deleted.after is None
    assert deleted.columns == (None if name.endswith("noschema") else SQLSERVER_COLUMNS)
    assert deleted.order == (lsn(0x27, 0xDB0, 0x7), lsn(0x27, 0xDB0, 0x5), 1)
    assert deleted.ts_ms == 1559730450205


def test_sqlserver_events_are_in_lsn_order() -> None:
    """The doc's create, update and delete of one row are ordered by their LSNs."""
    orders = [change("sqlserver", n).order for n in ("create", "update", "delete")]
    assert orders == sorted(orders)  # type: ignore[type-var]


def test_sqlserver_tombstone_keeps_the_key() -> None:
    """The tombstone after a delete carries the row's key (the doc's key example) only."""
    assert read("sqlserver", "tombstone") == Tombstone({"id": 1004})


def test_sqlserver_transaction_markers() -> None:
    """BEGIN and END name one transaction by its commit LSN; END counts events per table."""
    begin = read("sqlserver", "transaction.begin")
    end = read("sqlserver", "transaction.end")
    assert begin == TransactionMarker("BEGIN", "00000025:00000d08:0025", None, {}, 1486500577125)
    assert end == TransactionMarker(
        "END",
        "00000025:00000d08:0025",
        2,
        {"testDB.dbo.testDB.tablea": 1, "testDB.dbo.testDB.tableb": 1},
        1486500577691,
    )
    assert begin.key == end.key == "00000025:00000d08:0025"


def test_sqlserver_event_in_a_transaction() -> None:
    """An enriched event links to its transaction; numbers printed as strings are read."""
    event = change("sqlserver", "transaction.event")
    assert event.op is Op.INSERT and event.key is None and event.key_columns == ()
    assert event.before is None and event.after == {"pk": "2", "aa": "1"}
    assert event.columns is None
    assert event.ts_ms == 1580390884335
    assert event.transaction == TransactionRef("00000025:00000d08:0025", 1, 1)
    assert event.transaction.key == "00000025:00000d08:0025"


def test_sqlserver_schema_change_has_no_ddl() -> None:
    """SQL Server's schema-change record names its database and carries no DDL text."""
    assert read("sqlserver", "schema_change") == SchemaChange("testDB", "")
    assert read("sqlserver", "schema_change.key_schema") == Tombstone({"databaseName": "inventory"})


def _sqlserver_field(field: str, kind: str, name: str | None = None, **parameters: str) -> Any:
    node: dict[str, Any] = {"type": kind, "optional": True, "field": field}
    if name is not None:
        node["name"] = name
    if parameters:
        node["parameters"] = parameters
    return node


def test_sqlserver_logical_types_decode() -> None:
    """SQL Server's temporal and decimal types (the doc's mapping tables) decode to values."""
    fields = [
        _sqlserver_field("id", "int32"),
        _sqlserver_field("c_datetime2_7", "int64", "io.debezium.time.NanoTimestamp"),
        _sqlserver_field("c_datetime2_6", "int64", "io.debezium.time.MicroTimestamp"),
        _sqlserver_field("c_datetime", "int64", "io.debezium.time.Timestamp"),
        _sqlserver_field("c_date", "int32", "io.debezium.time.Date"),
        _sqlserver_field("c_time_7", "int64", "io.debezium.time.NanoTime"),
        _sqlserver_field("c_datetimeoffset", "string", "io.debezium.time.ZonedTimestamp"),
        _sqlserver_field(
            "c_decimal",
            "bytes",
            "org.apache.kafka.connect.data.Decimal",
            scale="2",
            **{"connect.decimal.precision": "10"},
        ),
        _sqlserver_field(
            "c_money",
            "bytes",
            "org.apache.kafka.connect.data.Decimal",
            scale="4",
            **{"connect.decimal.precision": "19"},
        ),
        _sqlserver_field("c_bit", "boolean"),
        _sqlserver_field("c_tinyint", "int16"),
        _sqlserver_field("c_real", "float"),
        _sqlserver_field("c_xml", "string", "io.debezium.data.Xml"),
    ]
    created = doc_sample("sqlserver", "create")["value"]
    schema = copy.deepcopy(created["schema"])
    for node in schema["fields"][:2]:  # before and after
        node["fields"] = fields
    after = {
        "id": 1,
        # The doc's example: DATETIME2 "2018-06-20 15:13:16.945104" is 1529507596945104 µs;
        # DATETIME2(7) keeps one digit more, which PostgreSQL's microseconds cannot hold.
        "c_datetime2_7": 1529507596945104700,
        "c_datetime2_6": 1529507596945104,
        "c_datetime": 1529507596945,
        "c_date": 17702,
        "c_time_7": 54796945104700,
        "c_datetimeoffset": "2018-06-20T13:13:16.9451047Z",
        "c_decimal": "EtaH",  # 1234567, scale 2
        "c_money": "z8c=",  # -12345, scale 4
        "c_bit": True,
        "c_tinyint": 255,
        "c_real": 1.5,
        "c_xml": "<a>1</a>",
    }
    payload = {**created["payload"], "after": after}
    event = read_json({"id": 1}, {"schema": schema, "payload": payload})
    assert isinstance(event, Change)
    assert event.after == {
        "id": 1,
        "c_datetime2_7": datetime(2018, 6, 20, 15, 13, 16, 945104),
        "c_datetime2_6": datetime(2018, 6, 20, 15, 13, 16, 945104),
        "c_datetime": datetime(2018, 6, 20, 15, 13, 16, 945000),
        "c_date": date(2018, 6, 20),
        "c_time_7": time(15, 13, 16, 945104),
        "c_datetimeoffset": datetime(2018, 6, 20, 13, 13, 16, 945104, tzinfo=UTC),
        "c_decimal": Decimal("12345.67"),
        "c_money": Decimal("-1.2345"),
        "c_bit": True,
        "c_tinyint": 255,
        "c_real": 1.5,
        "c_xml": "<a>1</a>",
    }
    assert event.columns is not None
    assert [c.type_name for c in event.columns] == [
        "integer",
        "timestamp(6) without time zone",
        "timestamp(6) without time zone",
        "timestamp(3) without time zone",
        "date",
        "time(6) without time zone",
        "timestamp with time zone",
        "numeric(10,2)",
        "numeric(19,4)",
        "boolean",
        "smallint",
        "real",
        "xml",
    ]


# -- Cassandra --------------------------------------------------------------------------------

CASSANDRA_KEY = {"id": 1001, "registration_date": 1562202942545}


def test_cassandra_create() -> None:
    """A Cassandra insert: each cell's value becomes the column's value; no source order."""
    created = change("cassandra", "create")
    assert created.op is Op.INSERT
    assert created.key == CASSANDRA_KEY and created.key_columns == ("id", "registration_date")
    assert created.before is None
    assert created.after == {
        "id": 1001,
        "registration_date": 1562202942545,
        "first_name": "Anne",
        "last_name": "Kretchmar",
        "email": "annek@noanswer.org",
    }
    assert created.columns is None  # the doc prints no JsonConverter schema
    assert created.order is None and created.ts_ms == 1562202942832


def test_cassandra_update_leaves_unwritten_columns_unchanged() -> None:
    """A Cassandra update writes some columns: the others are UNCHANGED, never None."""
    updated = change("cassandra", "update")
    assert updated.op is Op.UPDATE and updated.key == CASSANDRA_KEY
    assert updated.before is None
    assert updated.after == {
        "id": 1001,
        "registration_date": 1562202942545,
        "first_name": UNCHANGED,
        "last_name": UNCHANGED,
        "email": "annek_new@noanswer.org",
    }
    assert updated.order is None


def test_cassandra_delete() -> None:
    """A Cassandra row delete carries the primary key cells: the old image is the key."""
    deleted = change("cassandra", "delete")
    assert deleted.op is Op.DELETE and deleted.key == CASSANDRA_KEY
    assert deleted.before == {
        "id": 1001,
        "registration_date": 1562202942545,
        "first_name": UNCHANGED,
        "last_name": UNCHANGED,
        "email": UNCHANGED,
    }
    assert deleted.after is None and deleted.order is None


def test_cassandra_key_alone_is_a_tombstone() -> None:
    """The doc's key payload with a null value is a tombstone for that row."""
    assert read("cassandra", "key") == Tombstone(CASSANDRA_KEY)


def test_cassandra_has_no_order_key() -> None:
    """Commit log file and position are one node's: Cassandra events get no source order."""
    for name in ("create", "update", "delete"):
        source = doc_sample("cassandra", name)["value"]["source"]
        assert source["file"] and source["pos"] and source_order(source) is None


def test_cassandra_op_i_is_an_insert() -> None:
    """The connector writes ``i`` for an insert (the doc's prose says so too); only Cassandra."""
    value = copy.deepcopy(doc_sample("cassandra", "create")["value"])
    value["op"] = "i"
    inserted = read_json(CASSANDRA_KEY, value)
    assert isinstance(inserted, Change) and inserted.op is Op.INSERT
    value["source"]["connector"] = "sqlserver"
    with pytest.raises(SourceError, match="unknown op 'i'"):
        read_json(CASSANDRA_KEY, value)


def test_cassandra_cells_set_to_null_and_not_set() -> None:
    """A cell written as null is None (the column was cleared); ``set: false`` is UNCHANGED."""
    value = copy.deepcopy(doc_sample("cassandra", "update")["value"])
    value["after"]["first_name"] = {"value": None, "deletion_ts": 1562202972545, "set": True}
    value["after"]["email"]["set"] = False
    updated = read_json(CASSANDRA_KEY, value)
    assert isinstance(updated, Change) and updated.after is not None
    assert updated.after["first_name"] is None
    assert updated.after["last_name"] is UNCHANGED and updated.after["email"] is UNCHANGED


def _cell(name: str, value: dict[str, Any]) -> dict[str, Any]:
    # As CassandraSchemaFactory.CellData.cellSchema builds it (debezium-connector-cassandra).
    return {
        "type": "struct",
        "fields": [
            {**value, "field": "value"},
            {"type": "int64", "optional": True, "field": "deletion_ts"},
            {"type": "boolean", "optional": False, "field": "set"},
        ],
        "optional": True,
        "name": f"cell_value_{name}",
        "version": 1,
        "field": name,
    }


def _range(name: str) -> dict[str, Any]:
    clustering = {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": f} for f in ("name", "value", "type")
        ],
        "optional": False,
        "name": "clustering_value",
    }
    return {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": "method"},
            {"type": "array", "items": clustering, "optional": False, "field": "values"},
        ],
        "optional": True,
        "name": name,
        "version": 1,
        "field": name,
    }


TIMESTAMP = {"type": "int64", "optional": False, "name": "io.debezium.time.Timestamp"}
CASSANDRA_KEY_SCHEMA = {
    "type": "struct",
    "fields": [
        {"type": "int64", "optional": False, "field": "id"},
        {**TIMESTAMP, "field": "registration_date"},
    ],
    "optional": False,
    "name": "cassandra-cluster-1.inventory.customers.Key",
}
CASSANDRA_SCHEMA = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "struct",
            "fields": [
                _cell("id", {"type": "int64", "optional": False}),
                _cell("registration_date", TIMESTAMP),
                _cell("first_name", {"type": "string", "optional": False}),
                _cell("last_name", {"type": "string", "optional": False}),
                _cell("email", {"type": "string", "optional": False}),
                _range("_range_start"),
                _range("_range_end"),
            ],
            "optional": False,
            "name": "after",
            "version": 1,
            "field": "after",
        },
        {"type": "struct", "fields": [], "optional": False, "name": "source", "field": "source"},
    ],
    "optional": False,
    "name": "cassandra-cluster-1.inventory.customers.Envelope",
}


def _cassandra_with_schema(name: str, **after: Any) -> Message:
    payload = copy.deepcopy(doc_sample("cassandra", name)["value"])
    payload["after"].update({"_range_start": None, "_range_end": None, **after})
    return read_json(
        {"schema": CASSANDRA_KEY_SCHEMA, "payload": CASSANDRA_KEY},
        {"schema": CASSANDRA_SCHEMA, "payload": payload},
    )


def test_cassandra_with_schema_types_columns_by_their_cell_value() -> None:
    """With schemas, a column's type is its cell's ``value`` type; range fields are no columns."""
    updated = _cassandra_with_schema("update")
    registered = datetime(2019, 7, 4, 1, 15, 42, 545000)
    assert isinstance(updated, Change)
    assert updated.key == {"id": 1001, "registration_date": registered}
    assert updated.after == {
        "id": 1001,
        "registration_date": registered,
        "first_name": UNCHANGED,
        "last_name": UNCHANGED,
        "email": "annek_new@noanswer.org",
    }
    assert updated.columns == (
        Column("id", "bigint", nullable=False),
        Column("registration_date", "timestamp(3) without time zone", nullable=False),
        Column("first_name", "text", nullable=True),
        Column("last_name", "text", nullable=True),
        Column("email", "text", nullable=True),
    )


def test_cassandra_range_and_partition_deletes_are_refused() -> None:
    """A delete that names no single row (a clustering range, a whole partition) is refused."""
    bounds = {"method": "INCLUSIVE", "values": []}
    with pytest.raises(SourceError, match="range delete"):
        _cassandra_with_schema("delete", _range_start=bounds)
    value = copy.deepcopy(doc_sample("cassandra", "delete")["value"])
    del value["after"]["registration_date"]
    with pytest.raises(SourceError, match="whole partition"):
        read_json({"id": 1001, "registration_date": None}, value)


# -- MongoDB ----------------------------------------------------------------------------------

MONGO_COLUMNS = (Column("_id", "text", nullable=False), Column("document", "jsonb", nullable=False))
ANNE = {"_id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}


@pytest.mark.parametrize("name", ["create", "create.noschema"])
def test_mongodb_create(name: str) -> None:
    """A MongoDB insert is a row of the document's ``_id`` and the document (relaxed JSON)."""
    created = change("mongodb", name)
    assert created.op is Op.INSERT
    assert created.key == {"_id": "1004"} and created.key_columns == ("_id",)
    assert created.before is None
    assert created.after == {"_id": "1004", "document": ANNE}
    assert created.columns == MONGO_COLUMNS
    assert created.order == (1558965508, 31) and created.ts_ms == 1558965515240


def test_mongodb_update_with_the_full_document() -> None:
    """A change-streams update with the full document (and pre-image) has both rows."""
    updated = change("mongodb", "update")
    assert updated.op is Op.UPDATE and updated.key == {"_id": "1004"}
    assert updated.before == {"_id": "1004", "document": {**ANNE, "first_name": "unknown"}}
    assert updated.after == {"_id": "1004", "document": {**ANNE, "first_name": "Anne Marie"}}
    assert updated.columns == MONGO_COLUMNS
    assert updated.order == (1558965508, 1) and updated.ts_ms == 1465491461815


def test_mongodb_delete() -> None:
    """A MongoDB delete with its pre-image: the old row, no new one."""
    deleted = change("mongodb", "delete")
    assert deleted.op is Op.DELETE and deleted.key == {"_id": "1004"}
    assert deleted.before == {"_id": "1004", "document": {**ANNE, "first_name": "Anne Marie"}}
    assert deleted.after is None
    assert deleted.order == (1558965508, 6) and deleted.ts_ms == 1465495462115


def test_mongodb_order_is_cluster_time_and_ordinal() -> None:
    """The three events share one cluster time and are ordered by their ordinals (as printed)."""
    orders = {n: change("mongodb", n).order for n in ("create", "update", "delete")}
    assert orders["update"] < orders["delete"] < orders["create"]  # type: ignore[operator]


ID_TEXTS = {
    "key.integer": "1234",
    "key.float": "12.34",
    "key.string": '"1234"',
    "key.document": '{"hi":"kafka","nums":[10.0,100.0,1000.0]}',
    "key.objectid": "596e275826f08b2730779e1f",
    "key.binary": '{"$binary":{"base64":"a2Fma2E=","subType":"00"}}',
}


@pytest.mark.parametrize("name", sorted(ID_TEXTS))
def test_mongodb_keys_of_every_id_type(name: str) -> None:
    """Each ``_id`` type of the doc's key table becomes one ``_id`` text: an ObjectId's hex,
    any other id's compact relaxed JSON."""
    key = doc_sample("mongodb", name)["key"]
    value = copy.deepcopy(doc_sample("mongodb", "delete")["value"])
    del value["before"]  # no pre-image: the key alone names the document
    deleted = read_json(key, value)
    assert isinstance(deleted, Change) and deleted.before is None
    assert deleted.key == {"_id": ID_TEXTS[name]}
    assert read("mongodb", name) == Tombstone(key)  # a tombstone keeps the key as written


def test_mongodb_key_and_document_give_the_same_id() -> None:
    """An ObjectId reads as the same ``_id`` from the key and from the document."""
    key = doc_sample("mongodb", "key.objectid")["key"]
    value = copy.deepcopy(doc_sample("mongodb", "create.noschema")["value"])
    value["after"] = '{"_id": {"$oid": "596E275826F08B2730779E1F"}, "name": "Ada"}'
    created = read_json(key, value)
    assert isinstance(created, Change)
    assert created.key == {"_id": "596e275826f08b2730779e1f"}
    assert created.after == {
        "_id": "596e275826f08b2730779e1f",
        "document": {"_id": {"$oid": "596E275826F08B2730779E1F"}, "name": "Ada"},
    }
    value["after"] = '{"_id": {"$oid": "5d5c7f5d0aa3c56ea4a4bdd3"}, "name": "Ada"}'
    with pytest.raises(SourceError, match="different _ids"):
        read_json(key, value)


def test_mongodb_documents_become_relaxed_json() -> None:
    """Numbers and dates become plain JSON; other BSON types keep their ``$`` wrappers."""
    value = copy.deepcopy(doc_sample("mongodb", "create.noschema")["value"])
    value["after"] = (
        '{"_id": {"$numberLong": "1004"}, "int": {"$numberInt": "7"},'
        ' "long": {"$numberLong": "9007199254740993"}, "double": {"$numberDouble": "1.5"},'
        ' "inf": {"$numberDouble": "-Infinity"}, "nan": NaN,'
        ' "decimal": {"$numberDecimal": "1.10"},'
        ' "at": {"$date": {"$numberLong": "1558965508000"}}, "legacy_at": {"$date": 1558965508000},'
        ' "iso_at": {"$date": "2019-05-27T13:58:28Z"}, "before_1970": {"$date": -1},'
        ' "binary": {"$binary": "a2Fma2E=", "$type": "00"},'
        ' "regex": {"$regex": "^a", "$options": "i"},'
        ' "nested": [{"n": {"$numberInt": "1"}}, {"$oid": "596e275826f08b2730779e1f"}]}'
    )
    created = read_json({"id": "1004"}, value)
    assert isinstance(created, Change) and created.after is not None
    assert created.after["document"] == {
        "_id": 1004,
        "int": 7,
        "long": 9007199254740993,
        "double": 1.5,
        "inf": {"$numberDouble": "-Infinity"},
        "nan": {"$numberDouble": "NaN"},
        "decimal": {"$numberDecimal": "1.10"},
        "at": {"$date": "2019-05-27T13:58:28.000Z"},
        "legacy_at": {"$date": "2019-05-27T13:58:28.000Z"},
        "iso_at": {"$date": "2019-05-27T13:58:28Z"},
        "before_1970": {"$date": {"$numberLong": "-1"}},
        "binary": {"$binary": {"base64": "a2Fma2E=", "subType": "00"}},
        "regex": {"$regularExpression": {"pattern": "^a", "options": "i"}},
        "nested": [{"n": 1}, {"$oid": "596e275826f08b2730779e1f"}],
    }


def test_mongodb_update_without_the_document_is_refused() -> None:
    """An update carrying only ``updateDescription`` cannot be applied exactly: the error
    names the setting that sends whole documents."""
    value = copy.deepcopy(doc_sample("mongodb", "update")["value"])
    del value["after"], value["before"]
    with pytest.raises(SourceError, match=r"only what changed \(updateDescription\)") as caught:
        read_json(doc_sample("mongodb", "update")["key"], value)
    assert caught.value.fix is not None
    assert "capture.mode=change_streams_update_full" in caught.value.fix


def test_mongodb_legacy_patch_update_is_refused() -> None:
    """The old oplog shape (``patch`` and ``filter``, no ``after``) is refused the same way."""
    value = {
        "op": "u",
        "ts_ms": 1465491461815,
        "patch": '{"$set": {"first_name": "Anne Marie"}}',
        "filter": '{"_id": {"$numberLong": "1004"}}',
        "source": doc_sample("mongodb", "update")["value"]["source"],
    }
    with pytest.raises(SourceError, match=r"only what changed \(patch\)") as caught:
        read_json({"id": "1004"}, value)
    assert caught.value.fix is not None and "change_streams_update_full" in caught.value.fix


def test_mongodb_transaction_markers_and_enriched_event() -> None:
    """MongoDB's transaction records and an event linked to its transaction."""
    begin = read("mongodb", "transaction.begin")
    end = read("mongodb", "transaction.end")
    assert begin == TransactionMarker("BEGIN", "1462833718356672513", None, {}, None)
    assert end == TransactionMarker(
        "END",
        "1462833718356672513",
        2,
        {"rs0.testDB.collectiona": 1, "rs0.testDB.collectionb": 1},
        None,
    )
    event = change("mongodb", "transaction.event")
    assert event.op is Op.INSERT and event.after == {"_id": "1004", "document": ANNE}
    assert event.transaction == TransactionRef("1462833718356672513", 1, 1)
    assert event.transaction.key == end.key
    assert event.ts_ms == 1580390884335 and event.order == (1558965508, 31)
