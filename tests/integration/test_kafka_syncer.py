"""The Kafka source (syncer) applying real Debezium events, from Debezium's own connectors
and from its documentation, to a real PostgreSQL target through a real Kafka broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

from replicator.config import PipelineConfig
from replicator.errors import SchemaMismatchError, SourceError
from tests.fixtures.debezium.samples import doc_samples, message_bytes
from tests.support import RunningPipeline, connect, execute, wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"

# Columns of all_types that Debezium's default format cannot carry exactly, as the README
# lists: varbit loses its length; money and the network types arrive as text in other
# types' spellings (inet '::1/128' as '::1'); json is re-typed jsonb (no schema part tells
# json from jsonb); an interval's months are 30.4375 days in MicroDuration; char(n) arrives
# blank-padded and becomes text; timetz arrives normalised to UTC (the same instant).
LOSSY = {"c_varbit", "c_json", "c_interval", "c_money", "c_inet", "c_char", "c_timetz"}


def _produce_bytes(broker: Any, messages: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """Publish messages in order to partition 0 of their topics (created first)."""
    for topic in dict.fromkeys(t for t, _, _ in messages):
        broker.create_topic(topic)
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered)
    assert producer.flush(30) == 0 and not failures, failures


def _produce(broker: Any, messages: list[tuple[str, Any, Any]]) -> None:
    _produce_bytes(
        broker,
        [
            (
                topic,
                None if key is None else json.dumps(key).encode(),
                None if value is None else json.dumps(value).encode(),
            )
            for topic, key, value in messages
        ],
    )


def _syncer(name: str, bootstrap: str, prefix: str, target_dsn: str, **source: Any) -> Any:
    return PipelineConfig.model_validate(
        {
            "name": name,
            "source": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topics": f"^{prefix}\\..*",
                "group": f"{prefix}-group",
                **source,
            },
            "sink": {"type": "postgres", "dsn": target_dsn},
            "batch": {"max_age_ms": 50},
        }
    )


def _replay(dsn: str, header: dict[str, Any]) -> None:
    """Run the capture's SQL on the source: its final state is what the target must hold."""
    for step in header["sql"]:
        statements = [s for s in step["statements"] if "PUBLICATION" not in s]
        if step.get("transaction"):
            with connect(dsn) as conn, conn.transaction():
                for statement in statements:
                    conn.execute(statement)
        else:
            execute(dsn, *statements)


def _rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with connect(dsn) as conn:
        return sorted(conn.execute(query).fetchall(), key=repr)  # type: ignore[arg-type]


def _has_end_marker(dsn: str) -> bool:
    try:
        return bool(_rows(dsn, "SELECT 1 FROM public.capture_end"))
    except Exception:  # noqa: BLE001 - not created yet
        return False


@pytest.mark.parametrize("variant", ["schemas", "noschemas", "txmeta"])
def test_debezium_postgres_capture_applies_exactly(
    variant, source_dsn, target_dsn, kafka_broker, kafka_topic_prefix
):
    """The PostgreSQL connector's real events (snapshot, inserts, updates, a key change,
    deletes, a keyless table, TOAST, truncate, a transaction) leave the target equal to the
    source; a column added mid-stream stops the syncer with the ALTER to run, after which it
    goes on."""
    capture = json.loads((FIXTURES / f"postgres.{variant}.json").read_text())
    _replay(source_dsn, capture["header"])
    prefix = kafka_topic_prefix
    if variant == "noschemas":
        # Without schemas the target tables must exist: made as the source has them, except
        # the column added mid-stream.
        setup = capture["header"]["sql"][0]["statements"]
        execute(target_dsn, *(s for s in setup if "PUBLICATION" not in s))
    _produce(
        kafka_broker,
        [(f"{prefix}.{m['topic']}", m["key"], m["value"]) for m in capture["messages"]],
    )
    config = _syncer("pg-capture", kafka_broker.bootstrap_servers, prefix, target_dsn)
    first = RunningPipeline(config)
    error = first.wait_failed(60)
    assert isinstance(error, SchemaMismatchError), error
    assert "vip" in str(error) and "ADD COLUMN" in str(error)
    # As the source added it: its existing rows took the default, which no event repeats.
    execute(
        target_dsn, "ALTER TABLE public.customers ADD COLUMN vip boolean NOT NULL DEFAULT false"
    )
    second = RunningPipeline(config)
    tables = ("customers", "composite_key", "no_pk", "toasted", "truncated", "capture_end")

    def same() -> bool:
        # Topics are consumed side by side, in no order between them: wait for them all.
        for table in tables:
            query = f"SELECT t::text FROM public.{table} t"
            try:
                if not _has_end_marker(target_dsn) or _rows(source_dsn, query) != _rows(
                    target_dsn, query
                ):
                    return False
            except psycopg.errors.UndefinedTable:
                return False  # its topic's first event has not been applied yet
        return True

    _wait_applied(second, same, "the target to equal the source")
    second.stop()
    with connect(source_dsn) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'all_types'::regclass"
                " AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
        ]
    differing = []
    for column in columns:
        query = f"SELECT id, {column}::text FROM public.all_types"
        if _rows(source_dsn, query) != _rows(target_dsn, query):
            differing.append(column)
    assert set(differing) <= LOSSY, {
        c: (
            _rows(source_dsn, f"SELECT id, {c}::text FROM public.all_types"),
            _rows(target_dsn, f"SELECT id, {c}::text FROM public.all_types"),
        )
        for c in differing
        if c not in LOSSY
    }


def _apply_samples(
    connector: str,
    names: list[str],
    table: str,
    target_dsn: str,
    broker: Any,
    prefix: str,
    done: Any,
) -> dict[str, int]:
    """Produce documentation samples, in order, to one topic and run a syncer until
    ``done()``; return what it counted."""
    samples = {s["name"]: s for s in doc_samples(connector)}
    _produce_bytes(broker, [(f"{prefix}.{table}", *message_bytes(samples[name])) for name in names])
    name = f"{connector}-docs"
    running = RunningPipeline(_syncer(name, broker.bootstrap_servers, prefix, target_dsn))
    _wait_applied(running, done, f"the {connector} samples to be applied")
    running.stop()
    with connect(target_dsn) as conn:
        row = conn.execute(
            "SELECT rows_inserted, rows_updated, rows_deleted FROM _replicator.checkpoints"
            " WHERE pipeline = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return {"inserted": row[0], "updated": row[1], "deleted": row[2]}


def test_sql_server_documentation_events_apply(target_dsn, kafka_broker, kafka_topic_prefix):
    """Debezium's SQL Server examples (create, update, delete, tombstone) apply in order: the
    row is created, updated, then gone."""
    counts = _apply_samples(
        "sqlserver",
        ["create", "update", "delete", "tombstone"],
        "testDB.dbo.customers",
        target_dsn,
        kafka_broker,
        kafka_topic_prefix,
        lambda: _counted(target_dsn, "sqlserver-docs") >= 3,
    )
    assert counts == {"inserted": 1, "updated": 1, "deleted": 1}
    assert _rows(target_dsn, "SELECT * FROM dbo.customers") == []


def test_mongodb_documentation_events_apply(target_dsn, kafka_broker, kafka_topic_prefix):
    """Debezium's MongoDB create example becomes an (_id, document) row in the target."""
    _apply_samples(
        "mongodb",
        ["create"],
        "inventory.customers",
        target_dsn,
        kafka_broker,
        kafka_topic_prefix,
        lambda: _counted(target_dsn, "mongodb-docs") >= 1,
    )
    rows = _rows(target_dsn, "SELECT _id, document FROM inventory.customers")
    assert len(rows) == 1
    _id, document = rows[0]
    assert isinstance(_id, str) and _id and isinstance(document, dict) and document


def test_cassandra_documentation_events_apply(target_dsn, kafka_broker, kafka_topic_prefix):
    """Debezium's Cassandra examples (create, update, delete; schemaless, so into a table
    made beforehand) apply in order."""
    execute(
        target_dsn,
        "CREATE SCHEMA inventory",
        "CREATE TABLE inventory.customers (id int, registration_date timestamp(3),"
        " first_name text, last_name text, email text, PRIMARY KEY (id, registration_date))",
    )
    counts = _apply_samples(
        "cassandra",
        ["create", "update", "delete"],
        "inventory.customers",
        target_dsn,
        kafka_broker,
        kafka_topic_prefix,
        lambda: _counted(target_dsn, "cassandra-docs") >= 3,
    )
    assert counts == {"inserted": 1, "updated": 1, "deleted": 1}
    assert _rows(target_dsn, "SELECT * FROM inventory.customers") == []


def _counted(dsn: str, pipeline: str) -> int:
    try:
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT rows_inserted + rows_updated + rows_deleted FROM _replicator.checkpoints"
                " WHERE pipeline = %s",
                (pipeline,),
            ).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def test_schemaless_topic_without_target_table_is_a_clear_error(
    target_dsn, kafka_broker, kafka_topic_prefix
):
    """A schemaless event for a table the target lacks stops with the fix, applying nothing."""
    prefix = kafka_topic_prefix
    _produce(
        kafka_broker,
        [
            (
                f"{prefix}.public.ghost",
                {"id": 1},
                {"before": None, "after": {"id": 1}, "op": "c", "source": {}, "ts_ms": 1},
            )
        ],
    )
    config = _syncer("ghost", kafka_broker.bootstrap_servers, prefix, target_dsn)
    error = RunningPipeline(config).wait_failed(60)
    assert isinstance(error, SourceError) and "must exist" in str(error)
    assert "schemas" in (error.fix or "")


def _wait_applied(running: RunningPipeline, done: Any, what: str) -> None:
    """Wait for ``done()``, raising the pipeline's error if it fails first."""
    wait_for(lambda: running.error is not None or done(), 60, what)
    if running.error is not None:
        raise running.error


def _table_exists(dsn: str, table: str) -> bool:
    with connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return bool(row and row[0])
