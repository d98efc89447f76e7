"""The run's three servers: a source and a target PostgreSQL and one Kafka broker, made and
destroyed together, each in a temporary folder."""

from __future__ import annotations

import contextlib
from typing import Any

from tests.kafkabroker import KafkaBroker, kafka_version
from tests.localserver import pids_with_arg
from tests.pgcluster import PgCluster, SettingValue

_POSTGRES_SETTINGS = (
    "server_version",
    "fsync",
    "full_page_writes",
    "synchronous_commit",
    "wal_writer_delay",
    "shared_buffers",
    "max_wal_size",
    "logical_decoding_work_mem",
)

# The load writes with synchronous_commit = off, and a walsender sends only WAL that is
# flushed: the WAL writer's default 200 ms between flushes would be added to every lag
# sample of the live phase, for every consumer alike. 10 ms keeps it out of the figures.
_SOURCE_ONLY: dict[str, SettingValue] = {"wal_writer_delay": "10ms"}


class Servers:
    """``source`` and ``target`` PostgreSQL clusters and a Kafka ``broker``."""

    def __init__(self, source: PgCluster, target: PgCluster, broker: KafkaBroker) -> None:
        """Wrap running servers; use ``Servers.create``."""
        self.source = source
        self.target = target
        self.broker = broker
        self.secrets = [source.password, target.password]

    @classmethod
    def create(cls, durable: bool) -> Servers:
        """Start all three; ``durable``: fsync and full_page_writes on both clusters."""
        settings: dict[str, SettingValue] = {"fsync": durable, "full_page_writes": durable}
        made: list[PgCluster | KafkaBroker] = []
        try:
            source = PgCluster.create("bench-kafka-source", **settings, **_SOURCE_ONLY)
            made.append(source)
            target = PgCluster.create("bench-kafka-target", **settings)
            made.append(target)
            broker = KafkaBroker.create("bench-kafka")
        except BaseException:
            for server in made:
                with contextlib.suppress(Exception):
                    server.destroy()
            raise
        return cls(source, target, broker)

    def destroy(self) -> None:
        """Destroy all three (their folders too); errors are ignored."""
        for server in (self.source, self.target, self.broker):
            with contextlib.suppress(Exception):
                server.destroy()

    def checkpoint(self) -> None:
        """CHECKPOINT both clusters, so no consumer pays for another one's dirty buffers."""
        self.source.execute("CHECKPOINT")
        self.target.execute("CHECKPOINT")

    def postmaster_pid(self, cluster: PgCluster) -> int:
        """A cluster's postmaster (the root of its backends, walsenders and workers)."""
        return int((cluster.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def broker_pid(self) -> int | None:
        """The broker's JVM, found by its config file on the command line."""
        pids = pids_with_arg(str(self.broker.folder / "server.properties"))
        return pids[0] if pids else None

    def settings(self) -> dict[str, Any]:
        """The server settings that shape the results, for the results file."""
        return {
            "postgresql_source": {
                name: str(self.source.execute(f"SHOW {name}")[0][0]) for name in _POSTGRES_SETTINGS
            },
            "postgresql_target": {
                name: str(self.target.execute(f"SHOW {name}")[0][0]) for name in _POSTGRES_SETTINGS
            },
            "kafka": {
                "version": kafka_version(),
                "broker": "tests.kafkabroker.KafkaBroker defaults: one KRaft node, heap 512 MB,"
                " no fsync per message (Kafka's default: durability comes from the page cache"
                " and replication)",
            },
        }
