"""The versioned fold behind the staleness guard, against the dict model of test_fold."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.events import ChangeEvent
from replicator.sinks.postgres.fold import fold_changes
from replicator.sources.kafka.position import KafkaPosition
from tests.unit.test_fold import KEY, Rows, apply_folded, initial_rows, operations, run_source


def _numbered(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """The events with increasing Kafka order keys, as one partition delivers them."""
    return [
        dataclasses.replace(e, position=KafkaPosition(order=(1, 100 + i, i)))
        for i, e in enumerate(events)
    ]


def _start(initial: dict[int, int]) -> Rows:
    return {k: {"id": k, "v": v, "doc": f"doc{k}-{v}"} for k, v in initial.items()}


@settings(max_examples=300, deadline=None)
@given(initial_rows, operations)
def test_a_versioned_fold_of_an_ordered_stream_is_the_plain_fold(initial, ops):
    """In order, the versioned fold drops nothing and gives the plain fold's result."""
    events = _numbered(run_source(_start(initial), ops))
    plain = fold_changes(events, KEY)
    versioned = fold_changes(events, KEY, versioned=True)
    assert versioned.stale == 0
    assert (versioned.upserts, versioned.deletes, versioned.truncate) == (
        plain.upserts,
        plain.deletes,
        plain.truncate,
    )
    assert set(versioned.versions) == {r.key for r in plain.upserts} | set(plain.deletes)


@settings(max_examples=300, deadline=None)
@given(initial_rows, operations, st.data())
def test_events_delivered_again_within_a_batch_are_left_out(initial, ops, data):
    """A stretch of the stream delivered twice in one batch folds to the stream's final state,
    every repeated event counted as stale."""
    source = _start(initial)
    target = {k: dict(v) for k, v in source.items()}
    events = _numbered(run_source(source, ops))
    end = data.draw(st.integers(0, len(events)))
    begin = data.draw(st.integers(0, end))
    delivered = events[:end] + events[begin:]
    folded = fold_changes(delivered, KEY, versioned=True)
    assert folded.stale == end - begin
    assert apply_folded(target, folded) == source
    applied = folded.stats
    assert applied.inserted + applied.updated + applied.deleted + applied.truncated == len(events)
