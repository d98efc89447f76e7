"""Dead-letter entries: the event kept as text and rebuilt for replay, stable entry keys, the
keys an event holds, the JSON Lines store's log, and validation rules."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from replicator.config import ValidationRule
from replicator.dlq.entry import (
    DISCARDED,
    HELD,
    REJECTED,
    dead_letter,
    event_keys,
    replay_event,
)
from replicator.dlq.jsonl import JsonlDeadLetterStore
from replicator.engine.validation import Validator
from replicator.errors import SinkError
from replicator.events import UNCHANGED, ChangeEvent, Column, Op, RawValue, TableId, TableSchema
from replicator.sinks.postgres.copy_format import format_value
from replicator.sources.postgres.position import PgPosition

ITEMS = TableSchema(
    TableId("public", "items"),
    (
        Column("id", "integer"),
        Column("price", "numeric"),
        Column("note", "text"),
        Column("blob", "bytea"),
        Column("at", "timestamptz"),
        Column("tags", "text[]"),
        Column("doc", "jsonb"),
        Column("big", "text"),
    ),
    ("id",),
)
LOOSE = TableSchema(TableId("public", "loose"), (Column("a", "integer"), Column("b", "text")), ())

ROW = {
    "id": 7,
    "price": Decimal("1.50"),
    "note": "tab\there\nnewline \\ slash",
    "blob": b"\x00\xff",
    "at": datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
    "tags": ["a", None, 'q"uote'],
    "doc": {"k": [1, 2]},
    "big": None,
}


def _event(op: Op, before=None, after=None, lsn: int = 100, index: int = 0, schema=ITEMS):
    key = {"id": (before or after)["id"]} if schema.key else None
    return ChangeEvent(op, schema, key, before, after, PgPosition(lsn, index))


def test_the_event_is_kept_as_text_and_replayed_with_exactly_those_values():
    event = _event(Op.UPDATE, before={"id": 7}, after={**ROW, "big": UNCHANGED})
    entry = dead_letter("p", event, REJECTED, "boom", sqlstate="23514")
    assert entry.key == {"id": "7"} and entry.event["after"]["price"] == "1.50"
    assert entry.event["after"]["big"] == {"unchanged": True}
    replayed = replay_event(entry)
    assert replayed.op is Op.UPDATE and replayed.schema.key == ("id",)
    assert replayed.position.order_key() == event.position.order_key()
    assert replayed.after is not None and replayed.after["big"] is UNCHANGED
    for column, value in ROW.items():
        if column == "big":
            continue
        assert replayed.after[column] == RawValue(format_value(value))  # type: ignore[arg-type]
        assert format_value(replayed.after[column]) == format_value(value)
    assert replayed.key == {"id": RawValue("7")}


def test_entry_keys_are_stable_and_tell_changes_apart():
    first = _event(Op.INSERT, after=ROW, lsn=100, index=0)
    again = _event(Op.INSERT, after=ROW, lsn=100, index=0)
    later = _event(Op.UPDATE, before={"id": 7}, after=ROW, lsn=100, index=1)
    keys = {dead_letter("p", e, REJECTED, "x").entry_key for e in (first, again, later)}
    assert len(keys) == 2
    replayed = replay_event(dead_letter("p", later, REJECTED, "x"))
    assert (
        dead_letter("p", replayed, HELD, "").entry_key
        == dead_letter("p", later, HELD, "").entry_key
    )


def test_a_key_change_holds_both_keys_and_a_keyless_row_is_held_by_its_image():
    moved = _event(Op.UPDATE, before={"id": 7}, after={**ROW, "id": 8})
    table = ITEMS.table
    assert event_keys(moved) == [(table, ("7",)), (table, ("8",))]
    loose = _event(Op.UPDATE, before={"a": 1, "b": "x"}, after={"a": 2, "b": "x"}, schema=LOOSE)
    assert event_keys(loose) == [(LOOSE.table, ("1", "x")), (LOOSE.table, ("2", "x"))]
    insert = _event(Op.INSERT, after={"a": 1, "b": "x"}, schema=LOOSE)
    delete = _event(Op.DELETE, before={"a": 1, "b": "x"}, schema=LOOSE)
    assert event_keys(insert) == event_keys(delete)


def test_the_jsonl_store_folds_repeats_records_discards_and_ignores_a_torn_tail(tmp_path: Path):
    store = JsonlDeadLetterStore(tmp_path / "dlq" / "p.jsonl")
    entry = dead_letter("p", _event(Op.INSERT, after=ROW), REJECTED, "first")
    store.add([entry])
    store.add([dead_letter("p", _event(Op.INSERT, after=ROW), REJECTED, "second")])  # again
    (found,) = store.open_entries("p")
    assert found.id == 1 and found.attempts == 2 and found.error == "second"
    assert store.mark("p", [1], DISCARDED, by="alice", note="junk") == [1]
    assert store.open_entries("p") == []
    gone = store.get("p", 1)
    assert gone is not None and gone.status == DISCARDED and gone.resolved_by == "alice"
    assert gone.note == "junk" and gone.resolved_at is not None
    assert store.mark("p", [1], DISCARDED, by="bob") == []  # only open entries change
    with store.path.open("ab") as out:
        out.write(b'{"torn": ')  # a crash mid-append
    assert store.counts("p") == {"discarded": 1}
    with store.path.open("ab") as out:
        out.write(b"\n{}\n")
    with pytest.raises(SinkError, match="is not JSON"):
        store.counts("p")


RULES = [
    ValidationRule(
        tables=["public.*"],
        required=["note"],
        max_length={"note": 5},
        ranges={"price": {"min": 0, "max": 10}},
        patterns={"note": "[a-z]+"},
    )
]


@pytest.mark.parametrize(
    ("after", "rule", "complaint"),
    [
        ({"id": 1, "note": None, "price": 1}, "note required", "is NULL but required"),
        ({"id": 1, "note": "abcdef", "price": 1}, "note max_length 5", "is 6 long"),
        ({"id": 1, "note": "abc", "price": Decimal("10.01")}, "price range [0, 10]", "outside"),
        ({"id": 1, "note": "abc", "price": "x"}, "price range [0, 10]", "is not a number"),
        ({"id": 1, "note": "ABC", "price": 1}, "note pattern '[a-z]+'", "does not match"),
    ],
)
def test_each_rule_names_itself_and_what_was_wrong(after, rule, complaint):
    found = Validator(RULES).problem(_event(Op.INSERT, after=after))
    assert found is not None
    assert found[0] == f"public.items.{rule}" and complaint in found[1]


def test_good_rows_deletes_unchanged_values_and_other_tables_pass():
    validator = Validator(RULES)
    assert validator.problem(_event(Op.INSERT, after={"id": 1, "note": "abc", "price": 3})) is None
    assert validator.problem(_event(Op.DELETE, before={"id": 1})) is None
    unchanged = {"id": 1, "note": UNCHANGED, "price": 3}
    assert validator.problem(_event(Op.UPDATE, before={"id": 1}, after=unchanged)) is None
    other = TableSchema(TableId("sales", "x"), (Column("id", "integer"),), ("id",))
    assert Validator(RULES).problem(_event(Op.INSERT, after={"id": 1}, schema=other)) is None
    assert not Validator([])
