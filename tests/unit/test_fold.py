"""Batch folding against a dict model of the source and the target."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.events import UNCHANGED, ChangeEvent, Column, Op, TableId, TableSchema
from replicator.sinks.postgres.fold import FoldedTable, fold_changes
from replicator.sources.postgres.position import PgPosition

SCHEMA = TableSchema(
    table=TableId("public", "t"),
    columns=(Column("id", "integer"), Column("v", "integer"), Column("doc", "text")),
    key=("id",),
)
KEY = ("id",)

Rows = dict[int, dict[str, Any]]


def _event(op: Op, before: dict[str, Any] | None, after: dict[str, Any] | None) -> ChangeEvent:
    row = after if after is not None else before
    key = {"id": row["id"]} if row is not None else None
    return ChangeEvent(op, SCHEMA, key, before, after, PgPosition(1, 1))


def apply_folded(target: Rows, folded: FoldedTable) -> Rows:
    """Apply a fold the way the SQL does: TRUNCATE, upsert (origins read first), delete."""
    start = {} if folded.truncate else {k: dict(v) for k, v in target.items()}
    result = dict(start)
    for row in folded.upserts:
        values = dict(row.values)
        for name, value in row.values.items():
            if value is UNCHANGED:
                assert row.origin is not None, "unchanged value without an origin"
                values[name] = start[row.origin[0]][name]
        result[row.key[0]] = values
    for key in folded.deletes:
        result.pop(key[0], None)
    return result


# An operation: (kind, a, b, value). Keys and values are small so collisions are common.
operations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "update_doc", "move", "delete", "truncate"]),
        st.integers(0, 6),
        st.integers(0, 6),
        st.integers(0, 3),
    ),
    max_size=40,
)
initial_rows = st.dictionaries(st.integers(0, 6), st.integers(0, 3), max_size=5)


def run_source(source: Rows, ops: list[tuple[str, int, int, int]]) -> list[ChangeEvent]:
    """Play operations on the source model, emitting events as pgoutput would."""
    events = []
    for kind, a, b, value in ops:
        if kind == "insert" and a not in source:
            source[a] = {"id": a, "v": value, "doc": f"doc{a}-{value}"}
            events.append(_event(Op.INSERT, None, dict(source[a])))
        elif kind == "update" and a in source:
            # doc is TOASTed and not modified: pgoutput leaves it out.
            source[a]["v"] = value
            events.append(_event(Op.UPDATE, None, {"id": a, "v": value, "doc": UNCHANGED}))
        elif kind == "update_doc" and a in source:
            source[a]["doc"] = f"new{value}"
            events.append(_event(Op.UPDATE, None, dict(source[a])))
        elif kind == "move" and a in source and b not in source:
            row = source.pop(a)
            row["id"] = b
            source[b] = row
            after = {"id": b, "v": row["v"], "doc": UNCHANGED}
            events.append(_event(Op.UPDATE, {"id": a}, after))
        elif kind == "delete" and a in source:
            del source[a]
            events.append(_event(Op.DELETE, {"id": a}, None))
        elif kind == "truncate":
            source.clear()
            events.append(ChangeEvent(Op.TRUNCATE, SCHEMA, None, None, None, PgPosition(1, 1)))
    return events


@settings(max_examples=400, deadline=None)
@given(initial_rows, operations)
def test_fold_matches_the_source(initial: dict[int, int], ops: list[tuple[str, int, int, int]]):
    """Applying the folded batch turns the target into exactly the source's final state."""
    source: Rows = {k: {"id": k, "v": v, "doc": f"doc{k}-{v}"} for k, v in initial.items()}
    target = {k: dict(v) for k, v in source.items()}
    events = run_source(source, ops)
    folded = fold_changes(events, KEY)
    assert apply_folded(target, folded) == source


@settings(max_examples=200, deadline=None)
@given(initial_rows, operations)
def test_fold_never_upserts_and_deletes_one_key(
    initial: dict[int, int], ops: list[tuple[str, int, int, int]]
):
    """A key is either upserted or deleted, never both, so statement order cannot matter."""
    source: Rows = {k: {"id": k, "v": v, "doc": "d"} for k, v in initial.items()}
    folded = fold_changes(run_source(source, ops), KEY)
    upserted = [r.key for r in folded.upserts]
    assert len(upserted) == len(set(upserted))
    assert not set(upserted) & set(folded.deletes)


def test_swap_of_keys_reads_unchanged_values_from_the_original_rows():
    """Two rows swapping keys keep their own TOASTed values, read from where they started."""
    target: Rows = {1: {"id": 1, "v": 10, "doc": "one"}, 2: {"id": 2, "v": 20, "doc": "two"}}
    events = [
        _event(Op.UPDATE, {"id": 1}, {"id": 3, "v": 10, "doc": UNCHANGED}),
        _event(Op.UPDATE, {"id": 2}, {"id": 1, "v": 20, "doc": UNCHANGED}),
        _event(Op.UPDATE, {"id": 3}, {"id": 2, "v": 10, "doc": UNCHANGED}),
    ]
    folded = fold_changes(events, KEY)
    assert folded.deletes == [(3,)]  # the temporary key, harmless to delete if absent
    assert apply_folded(target, folded) == {
        1: {"id": 1, "v": 20, "doc": "two"},
        2: {"id": 2, "v": 10, "doc": "one"},
    }


def test_insert_then_delete_in_one_batch_deletes_the_key():
    """A row inserted and deleted within one batch ends up deleted (a replayed insert too)."""
    events = [
        _event(Op.INSERT, None, {"id": 5, "v": 1, "doc": "x"}),
        _event(Op.DELETE, {"id": 5}, None),
    ]
    folded = fold_changes(events, KEY)
    assert folded.upserts == [] and folded.deletes == [(5,)]


def test_unchanged_value_is_filled_from_an_earlier_change_in_the_batch():
    """An update that left a TOASTed column out takes the value the batch itself wrote."""
    events = [
        _event(Op.INSERT, None, {"id": 1, "v": 1, "doc": "big"}),
        _event(Op.UPDATE, None, {"id": 1, "v": 2, "doc": UNCHANGED}),
    ]
    folded = fold_changes(events, KEY)
    assert [r.values for r in folded.upserts] == [{"id": 1, "v": 2, "doc": "big"}]
    assert folded.upserts[0].unchanged == ()


def test_counts_follow_the_events_not_the_net_effect():
    """Stats count every source change, even those folded away."""
    events = [
        _event(Op.INSERT, None, {"id": 1, "v": 1, "doc": "a"}),
        _event(Op.UPDATE, None, {"id": 1, "v": 2, "doc": "a"}),
        _event(Op.DELETE, {"id": 1}, None),
    ]
    stats = fold_changes(events, KEY).stats
    assert (stats.inserted, stats.updated, stats.deleted) == (1, 1, 1)


def test_nan_keys_fold_together():
    """NaN float keys are one key, as PostgreSQL's equality says."""
    schema = TableSchema(TableId("public", "f"), (Column("k", "double precision"),), ("k",))
    events = [
        ChangeEvent(Op.INSERT, schema, None, None, {"k": float("nan")}, PgPosition(1, 1)),
        ChangeEvent(
            Op.DELETE, schema, {"k": float("nan")}, {"k": float("nan")}, None, PgPosition(1, 2)
        ),
    ]
    folded = fold_changes(events, ("k",))
    assert folded.upserts == [] and len(folded.deletes) == 1
