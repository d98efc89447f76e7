"""Fixtures shared by the whole suite: real PostgreSQL, MariaDB and Kafka servers, started
on first use.

Every server fixture is lazy, so `pytest tests/unit` starts none. `source_cluster` and
`target_cluster` live for the session; each test that asks for `source_dsn` / `target_dsn`
gets a fresh empty database on them, dropped (with its replication slots) afterwards.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.kafkabroker import KafkaBroker
from tests.mariadb import MariaDbFactory, MariaDbServer, MysqlDatabase
from tests.mariadb import SettingValue as MariaDbSetting
from tests.pgcluster import ClusterFactory, PgCluster, SettingValue


@pytest.fixture(scope="session")
def pg_cluster_factory() -> Iterator[ClusterFactory]:
    """Make dedicated clusters with special settings; all are destroyed at session end.

    For tests that need e.g. `wal_level=replica`, or a server they may restart or kill
    without disturbing the shared clusters.
    """
    clusters: list[PgCluster] = []

    def create(name: str, /, **settings: SettingValue) -> PgCluster:
        cluster = PgCluster.create(name, **settings)
        clusters.append(cluster)
        return cluster

    yield create
    for cluster in clusters:
        cluster.destroy()


@pytest.fixture(scope="session")
def source_cluster() -> Iterator[PgCluster]:
    """The session's source server (`wal_level=logical`)."""
    cluster = PgCluster.create("source")
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def target_cluster() -> Iterator[PgCluster]:
    """The session's target server, separate from the source."""
    cluster = PgCluster.create("target")
    yield cluster
    cluster.destroy()


@pytest.fixture
def source_dsn(source_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a fresh, empty database on the source cluster, dropped after the test."""
    yield from _fresh_database(source_cluster, request)


@pytest.fixture
def target_dsn(target_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a fresh, empty database on the target cluster, dropped after the test."""
    yield from _fresh_database(target_cluster, request)


def _fresh_database(cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    # The test's name makes a leftover database easy to trace; the random suffix keeps
    # repeated and parametrized runs apart. PostgreSQL truncates names beyond 63 bytes.
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:45]
    name = f"t_{stem}_{secrets.token_hex(4)}"
    dsn = cluster.create_database(name)
    yield dsn
    # A test may leave the shared server stopped or crashed; the next test needs it up.
    cluster.start()
    cluster.drop_database(name)


# -- MariaDB -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mariadb_factory() -> Iterator[MariaDbFactory]:
    """Make dedicated MariaDB servers with special settings; all are destroyed at session end.

    For tests that need e.g. `log_bin=None`, or a server they may restart or kill without
    disturbing the shared one.
    """
    servers: list[MariaDbServer] = []

    def create(name: str, /, **settings: MariaDbSetting | None) -> MariaDbServer:
        server = MariaDbServer.create(name, **settings)
        servers.append(server)
        return server

    yield create
    for server in servers:
        server.destroy()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDbServer]:
    """The session's MariaDB server (ROW binary log with full images and metadata)."""
    server = MariaDbServer.create("mysql_source")
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def _mariadb_repl_password(mariadb_server: MariaDbServer) -> str:
    """Password of `repl`, allowed everything on the session's MariaDB server."""
    password = secrets.token_urlsafe(12)
    mariadb_server.create_user("repl", password)
    return password


@pytest.fixture
def mysql_database(
    mariadb_server: MariaDbServer, _mariadb_repl_password: str, request: pytest.FixtureRequest
) -> Iterator[MysqlDatabase]:
    """A fresh, empty database on the MariaDB server, with a DSN for `repl`; dropped after."""
    name = _fresh_database_name(request)
    mariadb_server.create_database(name)
    yield MysqlDatabase(
        name, mariadb_server, mariadb_server.dsn("repl", _mariadb_repl_password, name)
    )
    # A test may leave the shared server stopped or crashed; the next test needs it up.
    mariadb_server.start()
    mariadb_server.drop_database(name)


def _fresh_database_name(request: pytest.FixtureRequest) -> str:
    # As in _fresh_database; MariaDB allows 64 characters.
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:45]
    return f"t_{stem}_{secrets.token_hex(4)}"


# -- Kafka ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The session's Kafka broker (KRaft, one node); tests keep to topics of their own."""
    broker = KafkaBroker.create("events")
    yield broker
    broker.destroy()


@pytest.fixture
def kafka_topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic-name prefix no other test uses, for topics on the shared broker."""
    return _fresh_database_name(request)
