"""The engine's batching and acknowledgement order, with in-memory connectors.

The fakes implement the real Source/Sink/CheckpointStore contracts; they record what the engine
asked of them so the order of apply, commit and acknowledge can be checked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

import pytest

from replicator.config import PipelineConfig
from replicator.contracts import (
    Batch,
    Checkpoint,
    CheckpointStore,
    Problem,
    Sink,
    SinkCapabilities,
    SnapshotSession,
    Source,
    TableSnapshot,
)
from replicator.engine.pipeline import Pipeline
from replicator.errors import SchemaMismatchError, SourceConnectionError
from replicator.events import (
    ChangeEvent,
    Column,
    Heartbeat,
    Op,
    Position,
    StreamItem,
    TableId,
    TableSchema,
    TxCommit,
)
from replicator.sources.postgres.position import PgPosition

SCHEMA = TableSchema(TableId("public", "t"), (Column("id", "integer"),), ("id",))


def config(max_events: int = 100, max_age_ms: int = 60_000) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "unit",
            "source": {"type": "postgres", "dsn": "postgresql://u@h/db", "tables": ["public.*"]},
            "sink": {"type": "postgres", "dsn": "postgresql://u@h/wh"},
            "batch": {"max_events": max_events, "max_age_ms": max_age_ms},
        }
    )


def insert(tx: int, index: int, schema: TableSchema = SCHEMA) -> ChangeEvent:
    row = {"id": tx * 1000 + index}
    return ChangeEvent(Op.INSERT, schema, row, None, row, PgPosition(tx * 100, index), size=10)


def commit(tx: int) -> TxCommit:
    return TxCommit(PgPosition(tx * 100 + 10))


class FakeSource(Source):
    def __init__(self, items: list[StreamItem], stop: threading.Event | None = None) -> None:
        self.items = items
        self.acked: list[Position] = []
        self.log: list[str] = []
        self.stop = stop

    def preflight(self, checkpoint: Position | None) -> list[Problem]:
        return []

    def parse_position(self, data: dict[str, Any]) -> Position:
        return PgPosition.from_json(data)

    def prepare(
        self,
        checkpoint: Position | None,
        save: Callable[[Position], None],
        export_snapshot: bool = False,
    ) -> Position:
        return checkpoint or PgPosition(1)

    def sync_tables(
        self, captured: Collection[TableId] = ()
    ) -> tuple[list[TableId], list[TableId]]:
        return [SCHEMA.table], []

    def describe(self, tables: list[TableId]) -> dict[TableId, TableSchema]:
        return {SCHEMA.table: SCHEMA}

    def open_snapshot(self) -> SnapshotSession:
        raise AssertionError("no copy expected")

    def stream(self, start: Position) -> Iterator[StreamItem]:
        yield from self.items
        if self.stop is not None:
            self.stop.set()
            yield Heartbeat()

    def acknowledge(self, position: Position) -> None:
        self.acked.append(position)
        self.log.append(f"ack {position}")

    def close(self) -> None:
        self.log.append("close")

    def status(self, checkpoint: Position | None = None) -> dict[str, Any]:
        return {}

    def drop(self) -> list[str]:
        return []


class FakeSink(Sink):
    capabilities = SinkCapabilities(transactional_checkpoint=True)

    def __init__(self, log: list[str], mismatch: TableId | None = None) -> None:
        self.batches: list[Batch] = []
        self.committed: list[list[int]] = []
        self.open: list[int] = []
        self.log = log
        self.mismatch = mismatch
        self.rollbacks = 0

    def preflight(self) -> list[Problem]:
        return []

    def ensure_table(self, schema: TableSchema, replacing: bool = False) -> None:
        if schema.table == self.mismatch:
            raise SchemaMismatchError(f"{schema.table} changed")

    def apply(self, batch: Batch, pipeline: str) -> Position | None:
        self.batches.append(batch)
        self.open.extend(e.key["id"] for e in batch.events if e.key)
        if batch.commit is None:
            self.log.append(f"chunk {len(batch.events)}")
            return None
        self.committed.append(self.open)
        self.open = []
        self.log.append(f"commit {batch.commit.position}")
        return batch.commit.position

    def rollback(self) -> None:
        self.open = []
        self.rollbacks += 1

    def close(self) -> None:
        pass


class FakeStore(CheckpointStore):
    def __init__(self, copied: dict[TableId, Position] | None = None) -> None:
        self.saved: dict[str, Position] = {}
        self.copied = copied or {}

    def snapshot_tables(self, pipeline: str) -> list[TableSnapshot]:
        return [
            TableSnapshot(t, "done", None, 1, 1, p.to_json(), p.to_json(), None, None, None)
            for t, p in self.copied.items()
        ]

    def request_snapshot(self, pipeline: str, tables: list[TableId], *, resync: bool) -> None:
        raise AssertionError("no copy expected")

    def load(self, pipeline: str) -> Checkpoint | None:
        pos = self.saved.get(pipeline)
        return Checkpoint(pos.to_json()) if pos else None

    def save(self, pipeline: str, position: Position) -> None:
        self.saved[pipeline] = position

    def delete(self, pipeline: str) -> bool:
        return self.saved.pop(pipeline, None) is not None

    def report(self, pipeline: str, phase: str, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def run(
    items: list[StreamItem],
    cfg: PipelineConfig | None = None,
    store: FakeStore | None = None,
    **sink_args: Any,
):
    stop = threading.Event()
    source = FakeSource(items, stop)
    sink = FakeSink(source.log, **sink_args)
    store = store or FakeStore()
    store.saved["unit"] = PgPosition(1)  # an existing pipeline: nothing to copy at start
    pipeline = Pipeline(cfg or config(), source, sink, store, stop)
    return pipeline, source, sink


def test_changes_already_in_a_tables_copy_are_skipped():
    """Events committed before a table's snapshot position are in the copy: not applied."""
    items: list[StreamItem] = [
        insert(1, 1),
        commit(1),
        insert(2, 1),
        commit(2),
        insert(3, 1),
        commit(3),
        Heartbeat(),
    ]
    # Copied at 2/0 (position 200, index 0): transaction 2 committed at 200 is after it.
    store = FakeStore({SCHEMA.table: PgPosition(200)})
    pipeline, source, sink = run(items, store=store)
    pipeline.run()
    assert [i for batch in sink.committed for i in batch] == [2001, 3001]


def test_commits_only_at_transaction_boundaries_and_acks_after_commit():
    """Each commit ends a source transaction, and the source is acked only after it."""
    items: list[StreamItem] = [insert(1, 1), insert(1, 2), commit(1), Heartbeat(), insert(2, 1)]
    pipeline, source, sink = run(items)
    pipeline.run()
    assert sink.committed == [[1001, 1002]]
    assert source.log == ["commit 0/6E", "ack 0/6E", "close"]
    assert sink.rollbacks >= 1  # the unfinished second transaction was abandoned


def test_a_transaction_larger_than_a_batch_is_chunked_then_committed_once():
    """A huge transaction is applied in chunks inside one open target transaction."""
    items: list[StreamItem] = [insert(1, i) for i in range(1, 8)] + [commit(1), Heartbeat()]
    pipeline, source, sink = run(items, config(max_events=3))
    pipeline.run()
    assert [b.commit is None for b in sink.batches] == [True, True, False]
    assert sink.committed == [[1000 + i for i in range(1, 8)]]
    assert source.acked == [PgPosition(110)]


def test_complete_transactions_are_committed_before_a_partial_one_is_chunked():
    """When the size limit hits mid-transaction, the finished transactions commit first."""
    items: list[StreamItem] = [
        insert(1, 1),
        commit(1),
        insert(2, 1),
        insert(2, 2),
        insert(2, 3),
        commit(2),
        Heartbeat(),
    ]
    pipeline, source, sink = run(items, config(max_events=3))
    pipeline.run()
    assert sink.committed[0] == [1001]
    assert source.acked[0] == PgPosition(110)
    assert sink.committed[-1] == [2001, 2002, 2003]


def test_idle_heartbeat_position_is_checkpointed_before_it_is_acknowledged():
    """A caught-up pipeline commits the keepalive position, then acknowledges it."""
    items: list[StreamItem] = [insert(1, 1), commit(1), Heartbeat(), Heartbeat(PgPosition(500))]
    pipeline, source, sink = run(items)
    pipeline.run()
    assert source.log == ["commit 0/6E", "ack 0/6E", "commit 0/1F4", "ack 0/1F4", "close"]


def test_heartbeat_position_is_ignored_in_the_middle_of_a_transaction():
    """A keepalive position never becomes a checkpoint while a transaction is half read."""
    items: list[StreamItem] = [
        insert(1, 1),
        commit(1),
        Heartbeat(),
        insert(2, 1),
        Heartbeat(PgPosition(500)),
    ]
    pipeline, source, sink = run(items)
    pipeline.run()
    assert source.acked == [PgPosition(110)]


def test_schema_mismatch_commits_earlier_transactions_then_fails():
    """A table that no longer matches stops the pipeline after the work before it is kept."""
    other = TableSchema(TableId("public", "u"), (Column("id", "integer"),), ("id",))
    items: list[StreamItem] = [insert(1, 1), commit(1), insert(2, 1, other), commit(2)]
    pipeline, source, sink = run(items, mismatch=TableId("public", "u"))
    with pytest.raises(SchemaMismatchError):
        pipeline.run()
    assert sink.committed == [[1001]]
    assert source.acked == [PgPosition(110)]


def test_an_empty_transaction_before_a_huge_one_never_commits_a_partial_chunk():
    """A boundary with no events, then a chunked transaction: no commit lands mid-transaction."""
    items: list[StreamItem] = [commit(1)] + [insert(2, i) for i in range(1, 6)]
    pipeline, source, sink = run(items, config(max_events=2))
    pipeline.run()
    assert source.acked == [PgPosition(110)]
    assert sink.committed == [[]]  # only the empty transaction's position was committed
    assert sink.rollbacks >= 1  # the unfinished transaction's chunks were rolled back


class FailingSource(FakeSource):
    def stream(self, start: Position) -> Iterator[StreamItem]:
        yield from self.items
        raise SourceConnectionError("connection lost")


def test_complete_transactions_are_kept_when_the_source_fails():
    """A source failure still commits every transaction that was read completely."""
    items: list[StreamItem] = [insert(1, 1), commit(1), insert(2, 1)]
    source = FailingSource(items)
    sink = FakeSink(source.log)
    store = FakeStore()
    store.saved["unit"] = PgPosition(1)
    pipeline = Pipeline(config(), source, sink, store, threading.Event())
    with pytest.raises(SourceConnectionError):
        pipeline.run()
    assert sink.committed == [[1001]]
    assert source.acked == [PgPosition(110)]
