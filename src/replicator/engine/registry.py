"""Connectors by name. Each connector module is imported only when a pipeline uses it."""

from __future__ import annotations

import threading

from replicator.config import FileCheckpointConfig, PipelineConfig
from replicator.contracts import CheckpointStore, Sink, Source
from replicator.dlq.store import DeadLetterStore
from replicator.engine.pipeline import Pipeline


def make_source(config: PipelineConfig) -> Source:
    """The source a pipeline's ``source.type`` names."""
    if config.source.type == "postgres":
        from replicator.sources.postgres.source import PostgresSource

        return PostgresSource(config)
    if config.source.type == "mysql":
        from replicator.sources.mysql.source import MysqlSource

        return MysqlSource(config)
    if config.source.type == "kafka":
        from replicator.sources.kafka.source import KafkaSource

        return KafkaSource(config)
    raise AssertionError(f"unknown source type {config.source.type}")  # config validation


def make_sink(config: PipelineConfig, store: CheckpointStore) -> Sink:
    """The sink a pipeline's ``sink.type`` names; ``store`` is the pipeline's checkpoint
    store, which a sink without a database of its own writes the checkpoint to."""
    if config.sink.type == "postgres":
        from replicator.sinks.postgres.sink import PostgresSink

        return PostgresSink(config)
    if config.sink.type == "kafka":
        from replicator.checkpoints.file import FileCheckpointStore
        from replicator.sinks.kafka.sink import KafkaSink

        assert isinstance(store, FileCheckpointStore)  # make_checkpoint_store's choice
        return KafkaSink(config, store)
    raise AssertionError(f"unknown sink type {config.sink.type}")


def make_checkpoint_store(config: PipelineConfig) -> CheckpointStore:
    """Where the pipeline's checkpoint lives: in the target when the sink is PostgreSQL, else
    in the configured checkpoint store (a state file by default)."""
    if config.sink.type == "postgres":
        from replicator.checkpoints.postgres import PostgresCheckpointStore

        return PostgresCheckpointStore(config.target_dsn.secret(), f"replicator:{config.name}"[:63])
    from replicator.checkpoints.file import FileCheckpointStore

    checkpoint = config.checkpoint or FileCheckpointConfig()
    return FileCheckpointStore(checkpoint.dir, config.name)


def make_dead_letter_store(config: PipelineConfig) -> DeadLetterStore:
    """The pipeline's dead-letter queue (see :class:`~replicator.config.DeadLetterConfig`)."""
    if config.dead_letter_store == "table":
        from replicator.dlq.table import TableDeadLetterStore

        return TableDeadLetterStore(config.target_dsn.secret(), f"replicator:{config.name}"[:63])
    if config.dead_letter_store == "kafka":
        from replicator.dlq.kafka import KafkaDeadLetterStore

        brokers = config.dead_letter_brokers
        assert brokers is not None  # the config's validation insists
        settings = {**config.dead_letter.kafka, "bootstrap.servers": brokers}
        return KafkaDeadLetterStore(
            config.dead_letter.topic or f"replicator.dlq.{config.name}", settings
        )
    from replicator.dlq.jsonl import JsonlDeadLetterStore

    path = config.dead_letter.path
    if path is None:
        folder = (config.checkpoint or FileCheckpointConfig()).dir
        path = f"{folder}/{config.name}.dlq.jsonl"
    return JsonlDeadLetterStore(path)


def make_pipeline(config: PipelineConfig, stop: threading.Event) -> Pipeline:
    """A ready-to-run pipeline with its source, sink and checkpoint store."""
    store = make_checkpoint_store(config)
    return Pipeline(
        config,
        make_source(config),
        make_sink(config, store),
        store,
        stop,
        dead_letters=make_dead_letter_store(config),
    )
