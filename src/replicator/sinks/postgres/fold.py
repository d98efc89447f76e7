"""Fold a batch of changes to one keyed table into its net effect.

Applying a batch set-based means one upsert and one delete per table, so all changes to a key
within the batch are first reduced to the key's final state. Three things make this subtle:

* **Key changes**: an UPDATE may move a row from key K1 to K2. K1 must then be deleted unless
  another row ends up at K1 (a swap), and K2 holds the moved row.
* **Unchanged TOAST values** (:data:`~replicator.events.UNCHANGED`): the new value is "whatever
  the target has". A later change in the batch may supply it; if not, it must be read from the
  row as it was when the batch started, wherever that row lived then (its *origin* key), even
  if the row moved or its old key was reused by another row within the batch.
* **TRUNCATE** makes every earlier change to the table irrelevant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from replicator.contracts import ApplyStats
from replicator.events import UNCHANGED, ChangeEvent, Op, Row

Key = tuple[Any, ...]

_NAN = object()  # PostgreSQL treats NaN as equal to NaN; Python's dict does not


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    return value


def _key_getter(key: tuple[str, ...]) -> Callable[[Row], Key]:
    """A fast ``row → key tuple`` function, hashable even for array or NaN key values."""
    if len(key) == 1:
        (name,) = key

        def single(row: Row) -> Key:
            value = row[name]
            kind = type(value)
            if kind is list or kind is float:
                return (_hashable(value),)
            return (value,)

        return single
    get = itemgetter(*key)

    def composite(row: Row) -> Key:
        values: Key = get(row)
        for value in values:
            if type(value) is list or type(value) is float:
                return tuple([_hashable(v) for v in values])
        return values

    return composite


@dataclass(slots=True)
class FoldedRow:
    """A row's final state: its values, and where to read UNCHANGED values from."""

    key: Key
    values: Row
    origin: Key | None  # the row's key when the batch started; None if it began in the batch

    @property
    def unchanged(self) -> tuple[str, ...]:
        """Names of columns whose value must be kept from the target row at ``origin``."""
        return tuple(name for name, value in self.values.items() if value is UNCHANGED)


@dataclass(slots=True)
class FoldedTable:
    """The net effect of a batch on one table."""

    truncate: bool = False
    upserts: list[FoldedRow] = field(default_factory=list)
    deletes: list[Key] = field(default_factory=list)
    stats: ApplyStats = field(default_factory=ApplyStats)


@dataclass(slots=True)
class _Entry:
    values: Row | None  # None: deleted
    origin: Key | None


def _merge(previous: Row, new: Row) -> Row:
    merged = dict(new)
    for name, value in new.items():
        if value is UNCHANGED:
            merged[name] = previous.get(name, UNCHANGED)
    return merged


def fold_changes(events: Iterable[ChangeEvent], key: tuple[str, ...]) -> FoldedTable:
    """Reduce changes to one table (in commit order) to upserts and deletes by key."""
    result = FoldedTable()
    stats = result.stats
    key_of = _key_getter(key)
    state: dict[Key, _Entry] = {}
    vacated: set[Key] = set()
    for event in events:
        op = event.op
        if op is Op.TRUNCATE:
            state.clear()
            vacated.clear()
            result.truncate = True
            stats.truncated += 1
        elif op is Op.INSERT or op is Op.READ:
            assert event.after is not None
            state[key_of(event.after)] = _Entry(event.after, None)
            stats.inserted += 1
        elif op is Op.UPDATE:
            assert event.after is not None
            new_key = key_of(event.after)
            old_key = key_of(event.before) if event.before else new_key
            previous = state.pop(old_key, None)
            if previous is None:
                # First change to this row in the batch: it lives at old_key in the target.
                entry = _Entry(event.after, old_key)
            elif previous.values is None:
                entry = _Entry(event.after, None)
            else:
                entry = _Entry(_merge(previous.values, event.after), previous.origin)
            if old_key != new_key:
                vacated.add(old_key)
            state[new_key] = entry
            stats.updated += 1
        elif op is Op.DELETE:
            row = event.key if event.key is not None else event.before
            assert row is not None
            state[key_of(row)] = _Entry(None, None)
            stats.deleted += 1
    for k, entry in state.items():
        if entry.values is None:
            result.deletes.append(k)
        else:
            result.upserts.append(FoldedRow(k, entry.values, entry.origin))
    occupied = state.keys()
    result.deletes.extend(k for k in vacated if k not in occupied)
    return result
