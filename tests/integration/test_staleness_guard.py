"""The PostgreSQL sink behind a Kafka source: the staleness guard and per-partition offsets,
against a real target, driven with hand-made events (DESIGN invariants 1, 2 and 4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.checkpoints.postgres import PostgresCheckpointStore, ensure_tables, load_offsets
from replicator.config import PipelineConfig
from replicator.contracts import Batch
from replicator.errors import SinkError
from replicator.events import UNCHANGED, ChangeEvent, Column, Op, TableId, TableSchema, TxCommit
from replicator.sinks.postgres.sink import PostgresSink
from replicator.sinks.postgres.versions import version_table_name
from replicator.sources.kafka.position import KafkaPosition
from replicator.sources.postgres.position import PgPosition
from tests.support import connect, execute, table_rows

ITEMS = TableSchema(
    table=TableId("public", "items"),
    columns=(
        Column("id", "integer", nullable=False),
        Column("name", "text", nullable=False),
        Column("doc", "text"),
    ),
    key=("id",),
)
LOOSE = TableSchema(
    table=TableId("public", "loose"),
    columns=(Column("v", "integer"),),
    key=(),
)
PIPELINE = "syncer"

Offsets = dict[tuple[str, int], int]


def kafka_config(target_dsn: str) -> PipelineConfig:
    """A pipeline reading Kafka (never connected to here) into the test target."""
    return PipelineConfig.model_validate(
        {
            "name": PIPELINE,
            "source": {
                "type": "kafka",
                "bootstrap_servers": "127.0.0.1:1",
                "topics": ["t"],
                "group": "g",
            },
            "sink": {"type": "postgres", "dsn": target_dsn},
        }
    )


@pytest.fixture
def make_sink(target_dsn: str) -> Iterator[Any]:
    """Sinks of one Kafka pipeline on the test target (one per group member); closed after."""
    with psycopg.connect(target_dsn) as conn:
        ensure_tables(conn)
    sinks: list[PostgresSink] = []

    def make(config: PipelineConfig | None = None) -> PostgresSink:
        sink = PostgresSink(config or kafka_config(target_dsn))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def sink(make_sink: Any) -> PostgresSink:
    """One group member's sink, with the items table ensured."""
    s: PostgresSink = make_sink()
    s.ensure_table(ITEMS)
    return s


def at(lsn: int, offset: int = 0) -> KafkaPosition:
    """A streamed change's position: source LSN, then Kafka offset."""
    return KafkaPosition(order=(1, lsn, offset))


def row(id_: int, name: str, doc: Any = None) -> dict[str, Any]:
    return {"id": id_, "name": name, "doc": doc}


def insert(lsn: int, id_: int, name: str, doc: Any = None) -> ChangeEvent:
    return ChangeEvent(Op.INSERT, ITEMS, {"id": id_}, None, row(id_, name, doc), at(lsn))


def update(
    lsn: int, id_: int, name: str, doc: Any = None, *, old_id: int | None = None
) -> ChangeEvent:
    old = id_ if old_id is None else old_id
    before = {"id": old} if old_id is not None else None
    return ChangeEvent(Op.UPDATE, ITEMS, {"id": old}, before, row(id_, name, doc), at(lsn))


def delete(lsn: int, id_: int) -> ChangeEvent:
    return ChangeEvent(Op.DELETE, ITEMS, {"id": id_}, {"id": id_}, None, at(lsn))


def truncate(lsn: int, schema: TableSchema = ITEMS) -> ChangeEvent:
    return ChangeEvent(Op.TRUNCATE, schema, None, None, None, at(lsn))


def batch(events: list[ChangeEvent], offsets: Offsets | None = None) -> Batch:
    """A batch ending at a transaction boundary with these partition offsets."""
    commit = TxCommit(KafkaPosition(offsets=offsets if offsets is not None else {("t", 0): 1}))
    return Batch(events=events, commit=commit, transactions=1)


def items(target_dsn: str) -> list[str]:
    return table_rows(target_dsn, "items")


def versions(target_dsn: str, table: TableId = ITEMS.table) -> dict[int, str]:
    """The guard's stored version of each key."""
    name = version_table_name(table)
    with connect(target_dsn) as conn:
        rows = conn.execute(f"SELECT id, version::text FROM _replicator.{name}").fetchall()  # type: ignore[arg-type]
    return dict(rows)


def stored_offsets(target_dsn: str) -> Offsets:
    with connect(target_dsn) as conn:
        return load_offsets(conn, PIPELINE, [("t", p) for p in range(4)])


def counters(target_dsn: str) -> tuple[int, int, int]:
    with connect(target_dsn) as conn:
        found = conn.execute(
            "SELECT rows_inserted, rows_updated, rows_deleted FROM _replicator.checkpoints"
            " WHERE pipeline = %s",
            (PIPELINE,),
        ).fetchone()
    assert found is not None
    return found[0], found[1], found[2]


# --- rows ------------------------------------------------------------------------------------


def test_an_older_update_after_a_newer_one_is_refused(sink, target_dsn):
    """An update older than the row's last change is dropped and not counted as applied."""
    sink.apply(batch([insert(10, 1, "first"), update(20, 1, "newer")]), PIPELINE)
    sink.apply(batch([update(15, 1, "older")]), PIPELINE)
    assert items(target_dsn) == ["(1,newer,)"]
    assert versions(target_dsn) == {1: "{1,20,0}"}
    assert sink.stale_events == 1
    assert counters(target_dsn) == (1, 1, 0)


def test_an_older_insert_after_a_delete_is_refused(sink, target_dsn):
    """A delete leaves its version behind, so a late insert of the key does not resurrect it."""
    sink.apply(batch([insert(10, 1, "a"), insert(11, 2, "b")]), PIPELINE)
    sink.apply(batch([delete(20, 1)]), PIPELINE)
    sink.apply(batch([insert(15, 1, "late"), update(11, 2, "late"), delete(9, 2)]), PIPELINE)
    assert items(target_dsn) == ["(2,b,)"]
    assert versions(target_dsn) == {1: "{1,20,0}", 2: "{1,11,0}"}
    assert sink.stale_events == 3


def test_an_equal_version_is_refused_and_a_newer_one_applied(sink, target_dsn):
    """Only a strictly newer event changes a row: a repeat of the last one does not."""
    sink.apply(batch([insert(10, 1, "a")]), PIPELINE)
    sink.apply(batch([update(10, 1, "repeat")]), PIPELINE)
    sink.apply(batch([update(11, 1, "next")]), PIPELINE)
    assert items(target_dsn) == ["(1,next,)"]
    assert sink.stale_events == 1


def test_redelivering_a_range_of_batches_is_harmless(sink, target_dsn):
    """Applying batches again, alone or merged into one, leaves the target as it was."""
    batches = [
        [insert(10, 1, "a"), insert(11, 2, "b"), insert(12, 3, "c")],
        [update(20, 1, "a2"), delete(21, 2), update(22, 3, "c2", old_id=3)],
        [insert(30, 2, "b again"), update(31, 1, "a3"), delete(32, 3)],
    ]
    for events in batches:
        sink.apply(batch(events), PIPELINE)
    expected = items(target_dsn)
    stored = versions(target_dsn)
    assert expected == ["(1,a3,)", '(2,"b again",)']
    for events in batches[1:]:
        sink.apply(batch(events), PIPELINE)
    assert sink.stale_events == 6
    # Within one batch too: a rebalance can hand a consumer the same offsets again.
    sink.apply(batch([e for events in batches for e in events] + batches[2]), PIPELINE)
    assert sink.stale_events == 6 + 9 + 3
    assert items(target_dsn) == expected
    assert versions(target_dsn) == stored
    assert counters(target_dsn) == (4, 3, 2)


def test_a_zombie_consumers_late_batch_changes_nothing(make_sink, target_dsn):
    """A consumer that lost its partition neither regresses rows nor moves offsets back."""
    owner, zombie = make_sink(), make_sink()
    owner.ensure_table(ITEMS)
    zombie.ensure_table(ITEMS)
    zombie.apply(batch([insert(10, 1, "a"), insert(11, 2, "b")], {("t", 0): 2}), PIPELINE)
    # The partition moved: the new owner re-reads from offset 2 and goes on.
    owner.apply(
        batch([update(20, 1, "owner"), delete(21, 2), insert(22, 3, "c")], {("t", 0): 5}),
        PIPELINE,
    )
    # The zombie's last batch, read before it lost the partition, arrives after.
    zombie.apply(
        batch(
            [update(20, 1, "zombie"), insert(15, 2, "zombie"), delete(22, 3)],
            {("t", 0): 5, ("t", 1): 7},
        ),
        PIPELINE,
    )
    zombie.apply(batch([update(14, 1, "older")], {("t", 0): 3, ("t", 1): 8}), PIPELINE)
    assert items(target_dsn) == ["(1,owner,)", "(3,c,)"]
    assert stored_offsets(target_dsn) == {("t", 0): 5, ("t", 1): 8}
    assert zombie.stale_events == 4


def test_a_late_batch_waits_for_a_newer_uncommitted_one_and_is_then_refused(make_sink, target_dsn):
    """The guard compares under the key's row lock, not with a snapshot read before it."""
    owner, zombie = make_sink(), make_sink()
    owner.ensure_table(ITEMS)
    zombie.ensure_table(ITEMS)
    owner.apply(batch([insert(10, 1, "a")]), PIPELINE)
    # The owner's newer change is applied but not committed (a chunk of a large transaction).
    owner.apply(Batch(events=[update(30, 1, "owner")], commit=None), PIPELINE)
    failures: list[BaseException] = []

    def late() -> None:
        try:
            zombie.apply(batch([update(20, 1, "zombie")], {("t", 0): 1}), PIPELINE)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    thread = threading.Thread(target=late)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the late batch must wait for the key's lock"
    owner.apply(batch([], {("t", 0): 2}), PIPELINE)
    thread.join(10)
    assert not thread.is_alive() and not failures
    assert items(target_dsn) == ["(1,owner,)"]
    assert zombie.stale_events == 1


# --- truncates -------------------------------------------------------------------------------


def test_a_truncate_keeps_rows_changed_after_it_on_another_partition(sink, target_dsn):
    """A truncate deletes rows last changed before it (or never versioned), keeps newer ones,
    and refuses events at or below it from then on."""
    execute(target_dsn, "INSERT INTO items VALUES (100, 'before the pipeline', NULL)")
    sink.apply(batch([insert(10, 1, "p0 old"), insert(30, 2, "p1 new")]), PIPELINE)
    sink.apply(batch([truncate(20)]), PIPELINE)
    assert items(target_dsn) == ['(2,"p1 new",)']
    sink.apply(
        batch([insert(15, 3, "p1 late"), insert(25, 4, "p0 after"), delete(19, 2)]), PIPELINE
    )
    assert items(target_dsn) == ['(2,"p1 new",)', '(4,"p0 after",)']
    assert sink.stale_events == 2
    # An older truncate delivered late deletes nothing.
    sink.apply(batch([truncate(18)]), PIPELINE)
    assert items(target_dsn) == ['(2,"p1 new",)', '(4,"p0 after",)']
    assert sink.stale_events == 3
    # Version rows below the watermark are not needed any more.
    assert versions(target_dsn) == {2: "{1,30,0}", 4: "{1,25,0}"}


def test_a_truncate_inside_a_batch_is_ordered_against_the_batchs_other_events(sink, target_dsn):
    """Within a batch, events of another partition are kept or dropped by version, not by
    their place in the batch."""
    sink.apply(batch([insert(10, 1, "old")]), PIPELINE)
    sink.apply(
        batch(
            [insert(40, 2, "newer, read first"), truncate(35), insert(33, 3, "older, read after")]
        ),
        PIPELINE,
    )
    assert items(target_dsn) == ['(2,"newer, read first",)']
    assert sink.stale_events == 1


def test_a_truncate_with_nothing_newer_empties_the_table_and_its_versions(sink, target_dsn):
    """When no row changed after the truncate, the table and its versions are emptied."""
    sink.apply(batch([insert(10, 1, "a"), insert(11, 2, "b")]), PIPELINE)
    sink.apply(batch([truncate(20), insert(21, 3, "c")]), PIPELINE)
    assert items(target_dsn) == ["(3,c,)"]
    assert versions(target_dsn) == {3: "{1,21,0}"}


# --- key changes and TOAST -------------------------------------------------------------------


def test_key_changing_updates_vacate_the_old_key_at_their_version(sink, target_dsn):
    """A moved row's old key counts as deleted at the move's version; swaps still work."""
    sink.apply(batch([insert(10, 1, "a"), insert(11, 2, "b")]), PIPELINE)
    sink.apply(batch([update(20, 5, "a moved", old_id=1)]), PIPELINE)
    assert items(target_dsn) == ["(2,b,)", '(5,"a moved",)']
    assert versions(target_dsn)[1] == "{1,20,0}"
    # Late changes to either key are refused.
    sink.apply(batch([update(15, 1, "late"), insert(12, 5, "late")]), PIPELINE)
    assert items(target_dsn) == ["(2,b,)", '(5,"a moved",)']
    # A swap through a temporary key, in one batch.
    sink.apply(
        batch(
            [
                update(30, 9, "b", old_id=2),
                update(31, 2, "a moved", old_id=5),
                update(32, 5, "b", old_id=9),
            ]
        ),
        PIPELINE,
    )
    assert items(target_dsn) == ['(2,"a moved",)', "(5,b,)"]
    assert sink.stale_events == 2


def test_unchanged_values_survive_and_stale_updates_do_not_need_their_origin(sink, target_dsn):
    """TOASTed values left out of an update are kept, and a refused update that left them out
    neither fails for want of its row nor disturbs a fresh one's origin."""
    sink.apply(batch([insert(10, 1, "a", "big"), insert(11, 2, "b", "large")]), PIPELINE)
    sink.apply(batch([update(20, 1, "a2", UNCHANGED)]), PIPELINE)
    assert items(target_dsn) == ["(1,a2,big)", "(2,b,large)"]
    sink.apply(batch([delete(30, 1)]), PIPELINE)
    # Without the guard the first would fail: row 1 is gone, so its doc is unknown.
    sink.apply(
        batch(
            [
                update(25, 1, "late", UNCHANGED),
                update(11, 2, "repeat", UNCHANGED),
                update(40, 2, "b2", UNCHANGED),
            ]
        ),
        PIPELINE,
    )
    assert items(target_dsn) == ["(2,b2,large)"]
    # The repeat at 11 is folded into the fresh change at 40: counted with it, not as stale.
    assert sink.stale_events == 1


def test_an_update_of_a_row_missing_from_the_target_still_fails_loudly(sink, target_dsn):
    """A fresh update whose TOASTed values cannot be found is an error, guard or not."""
    with pytest.raises(SinkError, match="missing from the target"):
        sink.apply(batch([update(20, 7, "x", UNCHANGED)]), PIPELINE)
    assert items(target_dsn) == []
    assert versions(target_dsn) == {}


# --- tables without a key --------------------------------------------------------------------


def test_a_table_without_a_key_is_applied_unguarded(sink, target_dsn):
    """A keyless table's changes are applied as they arrive, and it gets no version table."""
    sink.ensure_table(LOOSE)
    v = {"v": 1}
    events = [
        ChangeEvent(Op.INSERT, LOOSE, None, None, v, at(10)),
        ChangeEvent(Op.INSERT, LOOSE, None, None, v, at(11)),
        ChangeEvent(Op.DELETE, LOOSE, None, v, None, at(12)),
        ChangeEvent(Op.INSERT, LOOSE, None, None, {"v": 2}, at(5)),
    ]
    sink.apply(batch(events), PIPELINE)
    assert table_rows(target_dsn, "loose") == ["(1)", "(2)"]
    with connect(target_dsn) as conn:
        registered = conn.execute(
            "SELECT table_name FROM _replicator.version_tables ORDER BY 1"
        ).fetchall()
        assert conn.execute(
            "SELECT to_regclass(%s)", (f"_replicator.{version_table_name(LOOSE.table)}",)
        ).fetchone() == (None,)
    assert registered == [("items",)]
    assert sink.stale_events == 0


# --- offsets ---------------------------------------------------------------------------------


def test_load_offsets_returns_what_was_committed(sink, target_dsn):
    """Each partition's offset is stored with the data and read back per partition."""
    sink.apply(batch([insert(10, 1, "a")], {("t", 0): 11, ("t", 1): 4}), PIPELINE)
    sink.apply(batch([insert(12, 2, "b")], {("t", 0): 13, ("t", 1): 4, ("u", 0): 1}), PIPELINE)
    store = PostgresCheckpointStore(target_dsn)
    try:
        assert store.load_offsets(PIPELINE, [("t", 0), ("t", 1), ("t", 2), ("u", 0)]) == {
            ("t", 0): 13,
            ("t", 1): 4,
            ("u", 0): 1,
        }
        assert store.load_offsets(PIPELINE, [("t", 1)]) == {("t", 1): 4}
        assert store.load_offsets("another", [("t", 0)]) == {}
        assert store.load_offsets(PIPELINE, []) == {}
        checkpoint = store.load(PIPELINE)
        assert checkpoint is not None
        assert checkpoint.position == {"offsets": [["t", 0, 13], ["t", 1, 4], ["u", 0, 1]]}
        assert store.delete(PIPELINE)
        assert store.load_offsets(PIPELINE, [("t", 0)]) == {}
    finally:
        store.close()


def test_a_rolled_back_batch_stores_nothing(sink, target_dsn):
    """A batch that fails, or is abandoned mid-transaction, leaves data, versions and offsets
    as they were."""
    sink.apply(batch([insert(10, 1, "a")], {("t", 0): 1}), PIPELINE)
    with pytest.raises(SinkError):
        # NULL into a NOT NULL column: the whole transaction goes.
        sink.apply(
            batch([update(5, 1, "stale"), insert(20, 2, "b"), insert(21, 3, None)], {("t", 0): 3}),
            PIPELINE,
        )
    sink.apply(Batch(events=[update(30, 1, "chunk"), insert(31, 4, "d")]), PIPELINE)
    sink.rollback()
    assert items(target_dsn) == ["(1,a,)"]
    assert versions(target_dsn) == {1: "{1,10,0}"}
    assert stored_offsets(target_dsn) == {("t", 0): 1}
    assert sink.stale_events == 0  # the refusal was rolled back with its batch
    # And the sink goes on normally afterwards.
    sink.apply(batch([update(30, 1, "after")], {("t", 0): 4}), PIPELINE)
    assert items(target_dsn) == ["(1,after,)"]
    assert stored_offsets(target_dsn) == {("t", 0): 4}


# --- DDL and other sources -------------------------------------------------------------------


def test_group_members_creating_one_table_do_not_collide(make_sink, target_dsn):
    """A second consumer waits for the first one's new table instead of failing on it."""
    first, second = make_sink(), make_sink()
    first.ensure_table(LOOSE)
    first.apply(Batch(events=[ChangeEvent(Op.INSERT, LOOSE, None, None, {"v": 1}, at(1))]), "x")
    first.ensure_table(ITEMS)  # inside first's open transaction: created, not yet committed
    failures: list[BaseException] = []

    def ensure() -> None:
        try:
            second.ensure_table(ITEMS)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    thread = threading.Thread(target=ensure)
    thread.start()
    time.sleep(0.5)
    first.apply(batch([insert(10, 1, "a")]), PIPELINE)
    thread.join(10)
    assert not thread.is_alive() and not failures
    second.apply(batch([update(11, 1, "b")]), PIPELINE)
    assert items(target_dsn) == ["(1,b,)"]


def test_other_sources_use_no_version_tables(make_sink, target_dsn):
    """A sink fed by a database source writes no versions, offsets or truncate marks."""
    config = PipelineConfig.model_validate(
        {
            "name": "pg",
            "source": {"type": "postgres", "dsn": target_dsn, "tables": ["public.*"]},
            "sink": {"type": "postgres", "dsn": target_dsn},
        }
    )
    pg_sink = make_sink(config)
    pg_sink.ensure_table(ITEMS)
    events = [
        ChangeEvent(Op.INSERT, ITEMS, {"id": 1}, None, row(1, "a"), PgPosition(100, 0)),
        ChangeEvent(Op.INSERT, ITEMS, {"id": 2}, None, row(2, "b"), PgPosition(100, 1)),
        ChangeEvent(Op.TRUNCATE, ITEMS, None, None, None, PgPosition(200, 0)),
        ChangeEvent(Op.INSERT, ITEMS, {"id": 3}, None, row(3, "c"), PgPosition(300, 0)),
        ChangeEvent(Op.UPDATE, ITEMS, {"id": 3}, None, row(3, "c2"), PgPosition(300, 1)),
    ]
    pg_sink.apply(Batch(events, TxCommit(PgPosition(400, 0)), 1), "pg")
    assert items(target_dsn) == ["(3,c2,)"]
    with connect(target_dsn) as conn:
        guard_tables = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE nspname = '_replicator' AND relname LIKE 'v\\_%'"
        ).fetchall()
        registered = conn.execute("SELECT count(*) FROM _replicator.version_tables").fetchone()
        offsets = conn.execute("SELECT count(*) FROM _replicator.kafka_offsets").fetchone()
    assert guard_tables == [] and registered == (0,) and offsets == (0,)
    assert pg_sink.stale_events == 0


def test_backfill_turns_the_guard_off_for_a_deliberate_reload(make_sink, target_dsn):
    """With backfill: true an older change is applied over a newer row, as a reload of
    history wants, and no version is consulted or written."""
    guarded = make_sink()
    guarded.ensure_table(ITEMS)
    guarded.apply(batch([insert(10, 1, "first"), update(20, 1, "newer")]), PIPELINE)
    config = kafka_config(target_dsn).model_copy(update={"backfill": True})
    backfill = make_sink(config)
    backfill.ensure_table(ITEMS)
    backfill.apply(batch([update(15, 1, "historical")], {("t", 0): 2}), PIPELINE)
    assert items(target_dsn) == ["(1,historical,)"]
    assert versions(target_dsn) == {1: "{1,20,0}"}  # untouched by the reload
    assert backfill.stale_events == 0


def test_the_guard_can_be_asked_for_with_any_source(make_sink, target_dsn):
    """staleness_guard: always keeps versions for a database source too: a change older
    than the row (e.g. a dead-letter entry replayed under policy skip) is refused, counted."""
    config = PipelineConfig.model_validate(
        {
            "name": "pg",
            "source": {"type": "postgres", "dsn": target_dsn, "tables": ["public.*"]},
            "sink": {"type": "postgres", "dsn": target_dsn, "staleness_guard": "always"},
        }
    )
    pg_sink = make_sink(config)
    pg_sink.ensure_table(ITEMS)
    newer = ChangeEvent(Op.INSERT, ITEMS, {"id": 1}, None, row(1, "newer"), PgPosition(300, 0))
    pg_sink.apply(Batch([newer], TxCommit(PgPosition(400, 0)), 1), "pg")
    older = ChangeEvent(Op.UPDATE, ITEMS, {"id": 1}, None, row(1, "older"), PgPosition(200, 0))
    pg_sink.apply(Batch([older], TxCommit(PgPosition(400, 0)), 1), "pg")
    assert items(target_dsn) == ["(1,newer,)"]
    assert pg_sink.stale_events == 1
