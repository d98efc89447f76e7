"""Prometheus metrics: what ``GET /metrics`` serves.

The engine counts at each commit, never per event, so metrics cost next to nothing on the hot
path. Gauges that need a query (source lag in bytes, snapshot progress) are set by the
supervisor's status poller, on its own connections. Every name is listed in :data:`NAMES`,
which the dashboard and alert rules in ``deploy/`` are checked against.

Labels never hold a value from a row or a config secret: only pipeline and table names,
operations, states and error classes.
"""

from __future__ import annotations

from collections import Counter as Tally
from datetime import datetime
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from replicator.events import Op, TableId

# A _created series per counter and histogram would double their series for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Every state a pipeline reports; exactly one has the value 1 at a time.
STATES = (
    "starting",
    "snapshotting",
    "streaming",
    "paused",
    "retrying",
    "stopping",
    "stopped",
    "failed",
)

_OPS = {
    Op.INSERT: "insert",
    Op.UPDATE: "update",
    Op.DELETE: "delete",
    Op.TRUNCATE: "truncate",
    Op.READ: "read",
}

BUILD = Info("replicator_build", "The running Replicator's version.", registry=REGISTRY)
BUILD.info({"version": metadata.version("replicator")})

PIPELINE_STATE = Gauge(
    "replicator_pipeline_state",
    "1 for the state the pipeline is in, 0 for the others.",
    ["pipeline", "state"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "replicator_events_applied",
    "Change events committed to the target, by operation (truncates included).",
    ["pipeline", "op"],
    registry=REGISTRY,
)
ROWS = Counter(
    "replicator_rows_applied",
    "Row changes committed to the target, by table and operation.",
    ["pipeline", "table", "op"],
    registry=REGISTRY,
)
TRANSACTIONS = Counter(
    "replicator_transactions_applied",
    "Source transactions committed to the target.",
    ["pipeline"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "replicator_batch_apply_seconds",
    "Time to apply and commit one batch with its checkpoint (its count is the batch count).",
    ["pipeline"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
BATCH_EVENTS = Histogram(
    "replicator_batch_events",
    "Change events in one committed batch.",
    ["pipeline"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000, 100000),
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "replicator_lag_seconds",
    "End-to-end lag: from the source commit of the oldest change not yet in the target (or "
    "of the last one applied) to now; 0 when caught up.",
    ["pipeline"],
    registry=REGISTRY,
)
LAST_COMMIT = Gauge(
    "replicator_last_applied_commit_timestamp_seconds",
    "Source commit time (Unix seconds) of the last transaction committed to the target.",
    ["pipeline"],
    registry=REGISTRY,
)
SOURCE_LAG_BYTES = Gauge(
    "replicator_source_lag_bytes",
    "How far the confirmed position is behind the source's log end, in bytes.",
    ["pipeline"],
    registry=REGISTRY,
)
SOURCE_RETAINED_BYTES = Gauge(
    "replicator_source_retained_bytes",
    "Source log the pipeline holds back (a PostgreSQL slot's retained WAL), in bytes.",
    ["pipeline"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "replicator_consumer_lag_messages",
    "Kafka messages not yet applied, over the partitions of the subscribed topics.",
    ["pipeline"],
    registry=REGISTRY,
)
SNAPSHOT_COPIED = Gauge(
    "replicator_snapshot_rows_copied",
    "Rows of a table copied by its current or last snapshot.",
    ["pipeline", "table"],
    registry=REGISTRY,
)
SNAPSHOT_REMAINING = Gauge(
    "replicator_snapshot_rows_remaining",
    "Rows of a table still to copy (from the source's estimate); 0 once copied.",
    ["pipeline", "table"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "replicator_errors",
    "Errors by kind (the error's class): failures and recovered faults alike.",
    ["pipeline", "kind"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "replicator_retries",
    "Retried operations (reconnects, re-read snapshot chunks, re-sent batches).",
    ["pipeline", "operation"],
    registry=REGISTRY,
)
RETRY_ATTEMPT = Gauge(
    "replicator_retry_attempt",
    "Consecutive failed attempts of a pipeline retrying a transient fault; 0 once it works.",
    ["pipeline"],
    registry=REGISTRY,
)
RETRY_DELAY = Gauge(
    "replicator_retry_delay_seconds",
    "The delay before a retrying pipeline's next attempt; 0 once it works.",
    ["pipeline"],
    registry=REGISTRY,
)
CIRCUIT_OPEN = Gauge(
    "replicator_target_circuit_open",
    "1 while a target's circuit is open (pipelines wait; one probe at a time checks it).",
    ["target"],
    registry=REGISTRY,
)
TARGET_PROBES = Counter(
    "replicator_target_probes",
    "Probes of a target whose circuit is open, by result (ok or failed).",
    ["target", "result"],
    registry=REGISTRY,
)
DLQ_OPEN = Gauge(
    "replicator_dlq_open_entries",
    "Dead-letter entries still open (pending or waiting for replay); each holds its key.",
    ["pipeline"],
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "replicator_dead_lettered",
    "Events put in the dead-letter queue, by kind: rejected (by the target), invalid (a "
    "validation rule), held (behind an earlier entry of their key).",
    ["pipeline", "kind"],
    registry=REGISTRY,
)
DEGRADED = Gauge(
    "replicator_pipeline_degraded",
    "1 while errors and dead-lettered changes per minute reach degraded_errors_per_minute.",
    ["pipeline"],
    registry=REGISTRY,
)
STALE_EVENTS = Counter(
    "replicator_stale_events",
    "Events refused by the staleness guard as older than what the target row reflects.",
    ["pipeline"],
    registry=REGISTRY,
)
RELOADS = Counter(
    "replicator_config_reloads",
    "Configuration reloads, by result (applied or rejected).",
    ["result"],
    registry=REGISTRY,
)
# Both results exist from the start, so that the first rejection is an increase alerts see.
RELOADS.labels("applied")
RELOADS.labels("rejected")

# Every metric family this module defines, as Prometheus names them (counters end in _total).
NAMES = frozenset(
    {
        "replicator_build_info",
        "replicator_pipeline_state",
        "replicator_events_applied_total",
        "replicator_rows_applied_total",
        "replicator_transactions_applied_total",
        "replicator_batch_apply_seconds",
        "replicator_batch_events",
        "replicator_lag_seconds",
        "replicator_last_applied_commit_timestamp_seconds",
        "replicator_source_lag_bytes",
        "replicator_source_retained_bytes",
        "replicator_consumer_lag_messages",
        "replicator_snapshot_rows_copied",
        "replicator_snapshot_rows_remaining",
        "replicator_errors_total",
        "replicator_retries_total",
        "replicator_retry_attempt",
        "replicator_retry_delay_seconds",
        "replicator_target_circuit_open",
        "replicator_target_probes_total",
        "replicator_dlq_open_entries",
        "replicator_dead_lettered_total",
        "replicator_stale_events_total",
        "replicator_pipeline_degraded",
        "replicator_config_reloads_total",
    }
)

_PER_PIPELINE = (
    PIPELINE_STATE,
    EVENTS,
    ROWS,
    TRANSACTIONS,
    BATCH_SECONDS,
    BATCH_EVENTS,
    LAG_SECONDS,
    LAST_COMMIT,
    SOURCE_LAG_BYTES,
    SOURCE_RETAINED_BYTES,
    CONSUMER_LAG,
    SNAPSHOT_COPIED,
    SNAPSHOT_REMAINING,
    ERRORS,
    RETRIES,
    RETRY_ATTEMPT,
    RETRY_DELAY,
    DLQ_OPEN,
    DEAD_LETTERED,
    STALE_EVENTS,
    DEGRADED,
)


def render() -> bytes:
    """Every metric in Prometheus' text format."""
    return generate_latest(REGISTRY)


class PipelineMetrics:
    """One pipeline's metrics, with its label children resolved once."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self._transactions = TRANSACTIONS.labels(pipeline)
        self._batch_seconds = BATCH_SECONDS.labels(pipeline)
        self._batch_events = BATCH_EVENTS.labels(pipeline)
        self._lag = LAG_SECONDS.labels(pipeline)
        self._last_commit = LAST_COMMIT.labels(pipeline)
        self._events = {op: EVENTS.labels(pipeline, name) for op, name in _OPS.items()}
        self._tables: dict[TableId, str] = {}
        self._state: str | None = None

    def state(self, state: str) -> None:
        """Record the state the pipeline is in now."""
        if state == self._state:
            return
        self._state = state
        for name in STATES:
            PIPELINE_STATE.labels(self.pipeline, name).set(1 if name == state else 0)

    def committed(
        self,
        tally: Tally[tuple[TableId, Op]],
        transactions: int,
        seconds: float,
        events: int,
        commit_ts: datetime | None,
    ) -> None:
        """Count one committed batch: events per (table, op), its transactions and timing."""
        for (table, op), count in tally.items():
            self._events[op].inc(count)
            if op is not Op.TRUNCATE:
                ROWS.labels(self.pipeline, self._table(table), _OPS[op]).inc(count)
        if transactions:
            self._transactions.inc(transactions)
        self._batch_seconds.observe(seconds)
        self._batch_events.observe(events)
        if commit_ts is not None:
            self._last_commit.set(commit_ts.timestamp())

    def lag(self, seconds: float) -> None:
        """Set the end-to-end lag."""
        self._lag.set(seconds)

    def retrying(self, attempt: int, delay: float) -> None:
        """Record the pipeline's retry state (attempt 0: it works)."""
        RETRY_ATTEMPT.labels(self.pipeline).set(attempt)
        RETRY_DELAY.labels(self.pipeline).set(delay)

    def _table(self, table: TableId) -> str:
        name = self._tables.get(table)
        if name is None:
            name = self._tables[table] = str(table)
        return name

    def forget(self) -> None:
        """Drop every series of this pipeline (it was removed from the config)."""
        for metric in _PER_PIPELINE:
            for labels in list(metric._metrics):  # noqa: SLF001 - prometheus-client has no public listing
                if labels[0] == self.pipeline:
                    metric.remove(*labels)
