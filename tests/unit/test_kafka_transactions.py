"""Commit points of a syncer when Debezium's transaction metadata is on."""

from __future__ import annotations

import time

from replicator.debezium.envelope import TransactionMarker
from replicator.sources.kafka.transactions import TransactionTracker


def _end(tx: str, count: int) -> TransactionMarker:
    return TransactionMarker("END", tx, count, {}, None)


def _begin(tx: str) -> TransactionMarker:
    return TransactionMarker("BEGIN", tx, None, {}, None)


def test_a_transaction_is_open_until_its_end_and_all_its_changes_arrived() -> None:
    """Changes before END, or END before the changes, both wait for the full count."""
    tracker = TransactionTracker()
    tracker.marker(_begin("571:100"))
    tracker.change("571")
    assert not tracker.at_boundary()
    tracker.marker(_end("571:200", 2))
    assert not tracker.at_boundary()
    tracker.change("571")
    assert tracker.at_boundary()
    tracker.marker(_end("9", 1))
    assert not tracker.at_boundary()
    tracker.change("9")
    assert tracker.at_boundary()


def test_a_transaction_that_never_completes_here_is_given_up() -> None:
    """Changes another member owns never arrive: the hold ends after max_wait_s."""
    tracker = TransactionTracker(max_wait_s=0.05)
    tracker.change("tx")
    assert not tracker.at_boundary()
    time.sleep(0.1)
    assert tracker.at_boundary() and tracker.gave_up == 1
