"""Riding out transient faults: which errors are worth a retry, how long to wait, and a
circuit breaker per target.

A pipeline that fails transiently (a server restarting, a connection cut, a full disk under
the checkpoint file, a deadlock) is restarted from its checkpoint, which the crash tests
prove exact: everything up to the checkpoint is in the target, and the source re-delivers
everything after it. The delay grows exponentially with jitter, capped, and starts over once
the pipeline commits again. Anything else (a constraint the data breaks, a missing
privilege, a schema mismatch, a bug) is not retried: it fails the pipeline with its message.

Pipelines that write to one target share its :class:`CircuitBreaker`. After
``retry.breaker_failures`` consecutive failures of the target the circuit opens: the
pipelines stop reconnecting on their own, and one probe at a time (a connection and a trivial
query) checks the target at the backoff's pace. The first probe that succeeds closes it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import tenacity
from psycopg.conninfo import conninfo_to_dict

from replicator.config import PipelineConfig, PostgresSinkConfig, RetryConfig
from replicator.errors import ReplicatorError, SinkError
from replicator.observability.metrics import CIRCUIT_OPEN, TARGET_PROBES


def is_transient(error: BaseException) -> bool:
    """Whether a retry may cure ``error`` (see :attr:`ReplicatorError.transient`)."""
    return isinstance(error, ReplicatorError) and error.transient


def is_target_fault(error: BaseException) -> bool:
    """Whether ``error`` came from the target (sink or the checkpoint store in it)."""
    return isinstance(error, SinkError)


class Backoff:
    """Exponential delays (tenacity's) with jitter, counted from the last success.

    The jitter comes from a generator of its own: the process-wide ``random`` is left alone
    (a library relying on its sequence, such as a test's Hypothesis, is not disturbed).
    """

    def __init__(self, retry: RetryConfig) -> None:
        self._wait = tenacity.wait_exponential(
            multiplier=retry.initial_delay_s, max=retry.max_delay_s
        )
        self._jitter = retry.initial_delay_s
        self._max = retry.max_delay_s
        self._random = random.Random()  # noqa: S311 - jitter, not secrets
        self._give_up = retry.give_up_after_s
        self.attempt = 0
        self._failing_since: float | None = None

    def failed(self) -> float | None:
        """Count a failure; the delay before the next attempt, or None to give up."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        elif self.expired():
            return None
        self.attempt += 1
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = self.attempt
        delay = self._wait(state) + self._random.uniform(0, self._jitter)
        return float(min(delay, self._max))

    def expired(self) -> bool:
        """Whether the failures have gone on for longer than ``give_up_after_s``."""
        return bool(self._give_up) and self.failing_for >= self._give_up

    def succeeded(self) -> None:
        """The operation worked: the next failure starts from the first delay again."""
        self.attempt = 0
        self._failing_since = None

    @property
    def failing_for(self) -> float:
        """Seconds since the first failure of the current run of them (0 when none)."""
        since = self._failing_since
        return time.monotonic() - since if since is not None else 0.0


def target_key(config: PipelineConfig) -> str:
    """Names the pipeline's target without secrets: ``postgres://host:port/db``,
    ``kafka://servers``."""
    sink = config.sink
    if isinstance(sink, PostgresSinkConfig):
        params = conninfo_to_dict(sink.dsn.secret())
        host = params.get("host") or params.get("hostaddr") or "localhost"
        port = params.get("port") or "5432"
        return f"postgres://{host}:{port}/{params.get('dbname') or ''}"
    return f"kafka://{sink.bootstrap_servers}"


class CircuitBreaker:
    """The shared view of one target's health; thread-safe."""

    def __init__(self, target: str, failures: int) -> None:
        self.target = target
        self._threshold = failures
        self._failures = 0
        self._lock = threading.Lock()
        self._probing = False
        self._next_probe = 0.0
        self._probe_delay = 0.0
        CIRCUIT_OPEN.labels(target).set(0)

    @property
    def open(self) -> bool:
        """Whether pipelines must wait for a probe before using the target."""
        return self._failures >= self._threshold

    def failure(self, delay: float) -> None:
        """The target failed a pipeline; ``delay`` is the pipeline's next backoff."""
        with self._lock:
            self._failures += 1
            if self.open:
                if self._failures == self._threshold:
                    self._next_probe = time.monotonic() + delay
                    self._probe_delay = delay
                CIRCUIT_OPEN.labels(self.target).set(1)

    def success(self) -> None:
        """The target worked for a pipeline: close the circuit."""
        with self._lock:
            self._failures = 0
            self._probe_delay = 0.0
        CIRCUIT_OPEN.labels(self.target).set(0)

    def wait_closed(
        self,
        probe: Callable[[], None],
        stop: threading.Event,
        max_delay: float,
        expired: Callable[[], bool],
    ) -> bool:
        """Return True once the circuit is closed (probing it when due); False when stopped
        or ``expired()`` says to stop waiting.

        ``probe`` raises when the target is still down. Only one waiting pipeline probes at
        a time; the others wait for its answer.
        """
        while self.open:
            if expired():
                return False
            with self._lock:
                due = not self._probing and time.monotonic() >= self._next_probe
                if due:
                    self._probing = True
            if not due:
                if stop.wait(0.2):
                    return False
                continue
            try:
                probe()
            except Exception:  # noqa: BLE001 - any failure means "still down"
                TARGET_PROBES.labels(self.target, "failed").inc()
                with self._lock:
                    self._probe_delay = min(max(self._probe_delay * 2, 0.5), max_delay)
                    self._next_probe = time.monotonic() + self._probe_delay
            else:
                TARGET_PROBES.labels(self.target, "ok").inc()
                self.success()
            finally:
                with self._lock:
                    self._probing = False
        return not stop.is_set()


class Breakers:
    """One circuit breaker per target, shared by the pipelines writing to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def of(self, config: PipelineConfig) -> CircuitBreaker:
        """The breaker of the pipeline's target."""
        key = target_key(config)
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = self._breakers[key] = CircuitBreaker(key, config.retry.breaker_failures)
            return breaker
