"""What the Kafka sink and source share about talking to the brokers."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from replicator.contracts import Problem, Severity
from replicator.observability.redaction import redact

METADATA_TIMEOUT = 10.0


def cluster_topics(admin: AdminClient, bootstrap_servers: str) -> tuple[set[str], list[Problem]]:
    """The cluster's topic names, or the preflight problem saying the brokers do not answer."""
    try:
        metadata: Any = admin.list_topics(timeout=METADATA_TIMEOUT)
    except KafkaException as exc:
        return set(), [
            Problem(
                Severity.ERROR,
                f"cannot reach Kafka at {bootstrap_servers}: "
                f"{redact(str(exc.args[0] if exc.args else exc))}",
                "check bootstrap_servers and that the brokers listen there",
            )
        ]
    return set(metadata.topics), []
