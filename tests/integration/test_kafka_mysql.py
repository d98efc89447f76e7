"""MariaDB → watcher → Kafka → syncer → PostgreSQL: the MySQL source through Kafka."""

from __future__ import annotations

from typing import Any

from replicator.config import PipelineConfig
from tests.support import RunningPipeline, connect, wait_for


def _rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    try:
        with connect(dsn) as conn:
            return sorted(conn.execute(query).fetchall())  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the table may not exist yet
        return []


def test_mysql_changes_reach_postgres_through_kafka(
    mysql_database, target_dsn, kafka_broker, kafka_topic_prefix, tmp_path
):
    """Rows copied by the snapshot and then inserted, updated (key change included) and
    deleted in MariaDB arrive in PostgreSQL through a watcher and a syncer, decimals,
    unsigned BIGINTs and times exact."""
    db = mysql_database
    db.execute(
        "CREATE TABLE items (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(40), price"
        " DECIMAL(12,3), seen DATETIME(6), flag TINYINT(1))"
    )
    db.execute(
        "INSERT INTO items VALUES (1, 'one', 1.500, '2024-01-02 03:04:05.678901', 1),"
        " (18446744073709551615, 'max', -0.001, NULL, 0)"
    )
    bootstrap = kafka_broker.bootstrap_servers
    prefix = kafka_topic_prefix
    watch = PipelineConfig.model_validate(
        {
            "name": "mysql-watch",
            "source": {"type": "mysql", "dsn": db.dsn, "tables": [f"{db.name}.*"]},
            "sink": {"type": "kafka", "bootstrap_servers": bootstrap, "topic_prefix": prefix},
            "checkpoint": {"dir": str(tmp_path / "state")},
            "batch": {"max_age_ms": 50},
        }
    )
    sync = PipelineConfig.model_validate(
        {
            "name": "mysql-sync",
            "source": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topics": f"^{prefix}\\..*",
                "group": f"{prefix}-sync",
            },
            "sink": {"type": "postgres", "dsn": target_dsn},
            "batch": {"max_age_ms": 50},
        }
    )
    watcher = RunningPipeline(watch)
    syncer = RunningPipeline(sync)
    query = f"SELECT id::text, name, price::text, seen::text, flag FROM {db.name}.items"
    wait_for(lambda: len(_rows(target_dsn, query)) == 2 or watcher.error or syncer.error, 60)
    db.execute("INSERT INTO items VALUES (3, 'three', 3.250, '1999-12-31 23:59:59', NULL)")
    db.execute("UPDATE items SET price = 9.999, id = 2 WHERE id = 1")
    db.execute("DELETE FROM items WHERE id = 18446744073709551615")
    expected = [
        ("2", "one", "9.999", "2024-01-02 03:04:05.678901", True),
        ("3", "three", "3.250", "1999-12-31 23:59:59", None),
    ]
    wait_for(
        lambda: _rows(target_dsn, query) == expected or watcher.error or syncer.error,
        60,
        "the changes",
    )
    watcher.stop()
    syncer.stop()
    assert _rows(target_dsn, query) == expected
