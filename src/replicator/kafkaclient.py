"""What the Kafka sink and source share about talking to the brokers."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from replicator.contracts import Problem, Severity
from replicator.observability.redaction import redact

METADATA_TIMEOUT = 10.0


def kafka_error(exc: KafkaException) -> tuple[KafkaError | None, str]:
    """The KafkaError an exception carries (None when it carries none) and its redacted text."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error, redact(error.str())
    return None, redact(str(exc))


def cluster_topics(admin: AdminClient, bootstrap_servers: str) -> tuple[set[str], list[Problem]]:
    """The cluster's topic names, or the preflight problem saying the brokers do not answer."""
    try:
        metadata: Any = admin.list_topics(timeout=METADATA_TIMEOUT)
    except KafkaException as exc:
        return set(), [
            Problem(
                Severity.ERROR,
                f"cannot reach Kafka at {bootstrap_servers}: {kafka_error(exc)[1]}",
                "check bootstrap_servers and that the brokers listen there",
            )
        ]
    return set(metadata.topics), []
