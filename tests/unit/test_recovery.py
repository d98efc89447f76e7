"""Riding out faults: which errors are retried, the backoff's delays, the circuit breaker."""

from __future__ import annotations

import threading
import time

import pytest

from replicator.config import RetryConfig
from replicator.engine.recovery import Backoff, CircuitBreaker, is_target_fault, is_transient
from replicator.errors import (
    SchemaMismatchError,
    SinkConnectionError,
    SinkError,
    SourceConnectionError,
)
from replicator.pgsession import login_refused


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ('FATAL:  password authentication failed for user "w"', True),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "w"', True),
        ('FATAL:  database "wh" does not exist', True),
        ('FATAL:  role "w" is not permitted to log in', True),
        ("connection to server at 127.0.0.1, port 5432 failed: Connection refused", False),
        ("FATAL:  the database system is starting up", False),
        ("FATAL:  the database system is shutting down", False),
        ("server closed the connection unexpectedly", False),
        ("FATAL:  sorry, too many clients already", False),
    ],
)
def test_a_refused_login_is_permanent_an_outage_is_not(message: str, refused: bool):
    assert login_refused(message) is refused


def test_transient_and_target_faults_are_told_apart():
    assert is_transient(SourceConnectionError("lost")) and not is_target_fault(
        SourceConnectionError("lost")
    )
    assert is_transient(SinkConnectionError("lost")) and is_target_fault(SinkConnectionError("x"))
    refused = SinkConnectionError("password authentication failed")
    refused.transient = False
    assert not is_transient(refused)
    assert not is_transient(SchemaMismatchError("differs"))
    assert not is_transient(ValueError("a bug"))
    conflict = SinkError("deadlock detected")
    conflict.transient = conflict.conflict = True
    assert is_transient(conflict)


def test_delays_grow_exponentially_with_jitter_up_to_the_cap_and_start_over():
    backoff = Backoff(RetryConfig(initial_delay_s=1, max_delay_s=8))
    delays = [backoff.failed() for _ in range(7)]
    assert all(d is not None for d in delays)
    assert 1 <= delays[0] <= 2 and 2 <= delays[1] <= 3 and 4 <= delays[2] <= 5  # type: ignore[operator]
    assert delays[-1] == 8 and backoff.attempt == 7
    backoff.succeeded()
    assert backoff.attempt == 0 and backoff.failed() <= 2  # type: ignore[operator]


def test_retries_give_up_after_the_configured_time():
    backoff = Backoff(RetryConfig(initial_delay_s=0.1, max_delay_s=0.1, give_up_after_s=0.2))
    assert backoff.failed() is not None
    time.sleep(0.25)
    assert backoff.expired() and backoff.failed() is None
    assert Backoff(RetryConfig()).expired() is False  # 0: never


def test_the_circuit_opens_at_the_threshold_probes_one_at_a_time_and_closes():
    breaker = CircuitBreaker("postgres://h:5432/db", failures=2)
    stop = threading.Event()
    assert breaker.wait_closed(lambda: None, stop, 1, lambda: False)  # closed: no probe
    breaker.failure(0.05)
    assert not breaker.open
    breaker.failure(0.05)
    assert breaker.open
    probes: list[float] = []
    inside = threading.Lock()

    def probe() -> None:
        assert inside.acquire(blocking=False), "two probes at once"
        try:
            probes.append(time.monotonic())
            time.sleep(0.05)
            if len(probes) < 3:
                raise SinkConnectionError("still down")
        finally:
            inside.release()

    results: list[bool] = []
    waiters = [
        threading.Thread(
            target=lambda: results.append(breaker.wait_closed(probe, stop, 1, lambda: False))
        )
        for _ in range(3)
    ]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(10)
    assert results == [True, True, True] and not breaker.open
    assert len(probes) == 3  # one probe at a time, for all three waiting pipelines
    assert probes[2] - probes[1] > probes[1] - probes[0]  # probing slows down


def test_waiting_on_an_open_circuit_ends_on_stop_or_when_retries_expire():
    breaker = CircuitBreaker("kafka://b:9092", failures=1)
    breaker.failure(60)
    stop = threading.Event()
    assert not breaker.wait_closed(lambda: None, stop, 60, lambda: True)  # expired
    stop.set()
    assert not breaker.wait_closed(lambda: None, stop, 60, lambda: False)  # stopped
