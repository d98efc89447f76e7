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

A *versioned* fold (the staleness guard of a Kafka source, DESIGN invariant 2) also keeps, per
key, the version (order key) of the last event that touched it and how many events its final
state stands for. There a batch need not be in order across keys (partitions interleave, and a
rebalance can deliver a partition's events again): an event no newer than one already folded
for one of its keys, or than a truncate folded before it, is stale and left out, and a truncate
only drops the keys last touched at or below its own version.
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
Version = tuple[int, ...]
"""An event's order key (:meth:`~replicator.events.Position.order_key`)."""

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
    # Filled by a versioned fold only:
    versions: dict[Key, Version] = field(default_factory=dict)
    """Per upserted or deleted key, the version of the last event that touched it (a key
    vacated by a key-changing update: that update's)."""
    counts: dict[Key, list[int]] = field(default_factory=dict)
    """Per key, the events ``[inserted, updated, deleted]`` its final state stands for."""
    truncate_version: Version | None = None
    """The version of the newest truncate folded."""
    stale: int = 0
    """Events left out as older than an event or truncate folded before them."""


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


def fold_changes(
    events: Iterable[ChangeEvent], key: tuple[str, ...], *, versioned: bool = False
) -> FoldedTable:
    """Reduce changes to one table (in commit order) to upserts and deletes by key.

    ``versioned``: track each key's version and leave out stale events (see the module
    docstring); the events of one key must then arrive in order, except for repeats.
    """
    result = FoldedTable()
    stats = result.stats
    key_of = _key_getter(key)
    state: dict[Key, _Entry] = {}
    vacated: set[Key] = set()
    versions = result.versions
    counts = result.counts
    version: Version = ()
    for event in events:
        op = event.op
        if versioned:
            version = event.position.order_key()
            watermark = result.truncate_version
            if watermark is not None and version <= watermark:
                result.stale += 1
                continue
        if op is Op.TRUNCATE:
            if versioned:
                result.truncate_version = version
                # Keys touched later than the truncate (from another partition) stay.
                for k in [k for k, v in versions.items() if v <= version]:
                    del versions[k]
                    counts.pop(k, None)
                    state.pop(k, None)
                    vacated.discard(k)
            else:
                state.clear()
                vacated.clear()
            result.truncate = True
            stats.truncated += 1
        elif op is Op.INSERT or op is Op.READ:
            assert event.after is not None
            k = key_of(event.after)
            if versioned:
                if _seen_newer(versions, version, k):
                    result.stale += 1
                    continue
                versions[k] = version
                _count(counts, k, 0)
            state[k] = _Entry(event.after, None)
            stats.inserted += 1
        elif op is Op.UPDATE:
            assert event.after is not None
            new_key = key_of(event.after)
            old_key = key_of(event.before) if event.before else new_key
            if versioned:
                if _seen_newer(versions, version, old_key, new_key):
                    result.stale += 1
                    continue
                versions[old_key] = versions[new_key] = version
                if old_key != new_key:
                    moved = counts.pop(old_key, None)
                    if moved is not None:
                        total = counts.setdefault(new_key, [0, 0, 0])
                        for i in range(3):
                            total[i] += moved[i]
                _count(counts, new_key, 1)
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
            k = key_of(row)
            if versioned:
                if _seen_newer(versions, version, k):
                    result.stale += 1
                    continue
                versions[k] = version
                _count(counts, k, 2)
            state[k] = _Entry(None, None)
            stats.deleted += 1
    for k, entry in state.items():
        if entry.values is None:
            result.deletes.append(k)
        else:
            result.upserts.append(FoldedRow(k, entry.values, entry.origin))
    occupied = state.keys()
    result.deletes.extend(k for k in vacated if k not in occupied)
    return result


def _seen_newer(versions: dict[Key, Version], version: Version, *keys: Key) -> bool:
    """Whether one of ``keys`` was touched by an event at least as new as ``version``."""
    for k in keys:
        seen = versions.get(k)
        if seen is not None and seen >= version:
            return True
    return False


def _count(counts: dict[Key, list[int]], k: Key, op: int) -> None:
    entry = counts.get(k)
    if entry is None:
        entry = counts[k] = [0, 0, 0]
    entry[op] += 1
