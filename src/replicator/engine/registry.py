"""Connectors by name. Each connector module is imported only when a pipeline uses it."""

from __future__ import annotations

import threading

from replicator.config import PipelineConfig
from replicator.contracts import CheckpointStore, Sink, Source
from replicator.engine.pipeline import Pipeline


def make_source(config: PipelineConfig) -> Source:
    """The source a pipeline's ``source.type`` names."""
    if config.source.type == "postgres":
        from replicator.sources.postgres.source import PostgresSource

        return PostgresSource(config)
    if config.source.type == "mysql":
        from replicator.sources.mysql.source import MysqlSource

        return MysqlSource(config)
    raise AssertionError(f"unknown source type {config.source.type}")  # config validation


def make_sink(config: PipelineConfig) -> Sink:
    """The sink a pipeline's ``sink.type`` names."""
    if config.sink.type == "postgres":
        from replicator.sinks.postgres.sink import PostgresSink

        return PostgresSink(config)
    raise AssertionError(f"unknown sink type {config.sink.type}")


def make_checkpoint_store(config: PipelineConfig) -> CheckpointStore:
    """Where the pipeline's checkpoint lives: in the target when the sink is PostgreSQL."""
    if config.sink.type == "postgres":
        from replicator.checkpoints.postgres import PostgresCheckpointStore

        return PostgresCheckpointStore(config.sink.dsn.secret(), f"replicator:{config.name}"[:63])
    raise AssertionError(f"no checkpoint store for sink type {config.sink.type}")


def make_pipeline(config: PipelineConfig, stop: threading.Event) -> Pipeline:
    """A ready-to-run pipeline with its source, sink and checkpoint store."""
    return Pipeline(
        config, make_source(config), make_sink(config), make_checkpoint_store(config), stop
    )
