"""The pipelines of one ``replicator run``: start, stop, pause, resume, reload, and what each
is doing.

Each pipeline runs on a thread of its own with its own stop event, so a reload can stop one
and start another while the rest go on. Without the management API one failing pipeline stops
them all and the process exits non-zero (for systemd or Kubernetes to restart it); with the
API a failed pipeline stays failed, visible in ``/health/ready`` and ``/pipelines``, until an
operator restarts it (``POST /pipelines/NAME/restart`` or a reload), and the others go on.

A status poller measures, on connections of its own, what the pipeline cannot see from
inside: how far the source's log is ahead (bytes, Kafka messages), the WAL a slot retains,
snapshot progress.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicator.config import Config, PipelineConfig, load_config
from replicator.contracts import CheckpointStore, Source
from replicator.engine.pipeline import Pipeline
from replicator.engine.recovery import Backoff, Breakers, is_target_fault, is_transient
from replicator.engine.registry import (
    make_checkpoint_store,
    make_pipeline,
    make_sink,
    make_source,
)
from replicator.engine.status import table_progress
from replicator.errors import ConfigError, ReplicatorError
from replicator.observability import errorlog, tracing
from replicator.observability.logging import get_logger
from replicator.observability.metrics import (
    CONSUMER_LAG,
    DEGRADED,
    RELOADS,
    SNAPSHOT_COPIED,
    SNAPSHOT_REMAINING,
    SOURCE_LAG_BYTES,
    SOURCE_RETAINED_BYTES,
    PipelineMetrics,
)
from replicator.observability.redaction import configure_redaction, redact

POLL_INTERVAL = 5.0  # seconds between measurements of the source side
STOP_TIMEOUT = 60.0  # seconds a stopping pipeline gets to finish its batch
_READY_STATES = ("snapshotting", "streaming", "paused")
# A pipeline that streamed this long before failing starts its retry delays over.
_HEALTHY_AFTER = 60.0


class NoSuchPipeline(ReplicatorError):
    """An API or CLI request named a pipeline this instance does not run."""

    exit_code = 2


class Conflict(ReplicatorError):
    """The request does not fit the pipeline's state (e.g. pausing a failed pipeline)."""


@dataclass(frozen=True)
class RetryState:
    """Why a pipeline is waiting to retry, and when it will."""

    attempt: int
    delay: float
    error: str
    at: float  # monotonic time of the failure


class RetriesExhausted(ReplicatorError):
    """A pipeline kept failing transiently for longer than ``retry.give_up_after_s``."""


class Runner:
    """One pipeline's thread, and what operators see of it.

    A transient failure restarts the pipeline from its checkpoint after a backoff (see
    :mod:`replicator.engine.recovery`); any other failure ends the thread with ``error`` set.
    """

    def __init__(self, config: PipelineConfig, on_exit: Any, breakers: Breakers) -> None:
        self.config = config
        self.name = config.name
        self.stop = threading.Event()
        self.pipeline: Pipeline | None = None
        self.error: BaseException | None = None
        self.retry: RetryState | None = None  # set while waiting to retry
        self.side: dict[str, Any] = {}  # the poller's last measurements
        self.snapshot: list[dict[str, Any]] = []
        self._pause_early = False  # paused before the pipeline object existed
        self._on_exit = on_exit
        self._breaker = breakers.of(config)
        self._log = get_logger(pipeline=config.name)
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.name}")

    def start(self) -> None:
        """Start the pipeline's thread."""
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(self.config.retry)
        metrics = PipelineMetrics(self.name)
        try:
            while True:
                if not self._breaker.wait_closed(
                    self._probe_target, self.stop, self.config.retry.max_delay_s, backoff.expired
                ):
                    if self.stop.is_set():
                        return
                    raise self._exhausted(backoff, self.retry.error if self.retry else "")
                pipeline = make_pipeline(self.config, self.stop)
                if self.retry is not None:
                    pipeline.retrying = True
                    pipeline.metrics.state("retrying")
                if self._pause_early:
                    pipeline.pause()
                pipeline.on_working = lambda committed: self._working(committed, backoff, metrics)
                self.pipeline = pipeline
                try:
                    pipeline.run()
                    return
                except BaseException as exc:
                    if not is_transient(exc) or self.stop.is_set():
                        raise
                    self._failed_transiently(exc, backoff, metrics, pipeline)
                if self.stop.wait(self.retry.delay if self.retry is not None else 0):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported through the supervisor
            self.error = exc
            self.retry = None
            errorlog.record(self.name, exc)
            (self.pipeline.metrics if self.pipeline is not None else metrics).state("failed")
        finally:
            self._on_exit(self)

    def _working(self, committed: bool, backoff: Backoff, metrics: PipelineMetrics) -> None:
        """The pipeline streams again (its source and target answer), or committed again:
        only a commit proves the fault over, so only then do delays start from the first."""
        if not committed:
            if self.retry is not None:
                self._log.info("recovered", attempts=backoff.attempt)
            self._breaker.success()
            self.retry = None
            metrics.retrying(0, 0.0)
        else:
            backoff.succeeded()

    def _failed_transiently(
        self,
        error: BaseException,
        backoff: Backoff,
        metrics: PipelineMetrics,
        pipeline: Pipeline,
    ) -> None:
        since = pipeline.streaming_since
        if since is not None and time.monotonic() - since >= _HEALTHY_AFTER:
            backoff.succeeded()  # it streamed for a while (idle pipelines never commit)
        delay = backoff.failed()
        if delay is None:
            pipeline.report_state("failed", error=str(error))
            raise self._exhausted(backoff, redact(str(error))) from error
        if is_target_fault(error):
            self._breaker.failure(delay)
        message = redact(str(error))
        self.retry = RetryState(backoff.attempt, delay, message, time.monotonic())
        errorlog.record(self.name, error, retried="pipeline restart")
        metrics.retrying(backoff.attempt, delay)
        pipeline.metrics.state("retrying")
        self._log.warning(
            "transient failure: restarting from the checkpoint",
            attempt=backoff.attempt,
            retry_in_s=round(delay, 2),
            error=message,
        )

    @staticmethod
    def _exhausted(backoff: Backoff, error: str) -> RetriesExhausted:
        return RetriesExhausted(
            f"gave up after {backoff.failing_for:.0f} s of failing transiently: {error}",
            fix="fix the cause, then restart the pipeline (POST /pipelines/NAME/restart, "
            "a reload, or the process); raise retry.give_up_after_s (0: never give up) "
            "to wait longer",
        )

    def _probe_target(self) -> None:
        """Connect to the target and ask it something trivial; raise while it is down."""
        store = make_checkpoint_store(self.config)
        sink = make_sink(self.config, store)
        try:
            sink.probe()
        finally:
            sink.close()
            store.close()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    @property
    def state(self) -> str:
        """One of :data:`replicator.observability.metrics.STATES`."""
        if self.error is not None:
            return "failed"
        if self.retry is not None and self.alive:
            if self.stop.is_set():
                return "stopping"
            p = self.pipeline
            # Until the restarted pipeline is under way, it is retrying.
            if p is None or p.state in ("starting", "failed"):
                return "retrying"
        state = self.pipeline.state if self.pipeline is not None else "starting"
        if self.stop.is_set() and self.alive and state not in ("stopped", "failed"):
            return "stopping"
        return state

    def pause(self) -> None:
        """Pause at the next transaction boundary."""
        self._pause_early = True
        if self.pipeline is not None:
            self.pipeline.pause()

    def resume(self) -> None:
        """Undo a pause."""
        self._pause_early = False
        if self.pipeline is not None:
            self.pipeline.resume()

    @property
    def pause_requested(self) -> bool:
        """Whether a pause was asked for and not undone (it may not have taken effect yet)."""
        p = self.pipeline
        return p.pause_requested if p is not None else self._pause_early

    def halt(self, timeout: float) -> bool:
        """Stop the pipeline; whether it stopped within ``timeout`` seconds."""
        self.stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self.alive

    def warning(self) -> str | None:
        """Something an operator should look at although the pipeline works: it is
        degraded (errors over the threshold), or changes wait in its dead-letter queue."""
        found = []
        degraded = self.degraded()
        if degraded is not None:
            found.append(degraded)
        p = self.pipeline
        waiting = p.dead_letters_open if p is not None else 0
        if waiting >= self.config.dead_letter.warn_at:
            found.append(
                f"{waiting} change(s) in the dead-letter queue, their keys held: inspect with "
                f"replicator dlq list -c FILE -p {self.name}, then replay or discard"
            )
        return "; ".join(found) or None

    def degraded(self) -> str | None:
        """Why the pipeline is degraded (see ``degraded_errors_per_minute``), or None."""
        limit = self.config.degraded_errors_per_minute
        rate = errorlog.per_minute(self.name) if limit else 0.0
        DEGRADED.labels(self.name).set(1 if limit and rate >= limit else 0)
        if limit and rate >= limit:
            return (
                f"degraded: {rate:.0f} errors and dead-lettered changes in the last minute "
                f"(degraded_errors_per_minute: {limit:g})"
            )
        return None

    def readiness(self) -> tuple[bool, str | None]:
        """Whether the pipeline is connected and working, and if not, why."""
        state = self.state
        if state in _READY_STATES:
            return True, None
        if state == "failed":
            return False, f"failed: {redact(str(self.error))}"
        retry = self.retry
        if state == "retrying" and retry is not None:
            due = max(0.0, retry.at + retry.delay - time.monotonic())
            return False, (
                f"retrying (attempt {retry.attempt}, next in {due:.1f} s) after: {retry.error}"
            )
        if state == "starting":
            return False, "starting: connecting and checking the source and the target"
        return False, state

    def view(self) -> dict[str, Any]:
        """The pipeline as the API serves it."""
        p = self.pipeline
        errors = [e.as_dict() for e in errorlog.recent(self.name)]
        counters = p.counters if p is not None else None
        durable = p.durable_position if p is not None else None
        return {
            "name": self.name,
            "state": self.state,
            "source_type": self.config.source.type,
            "sink_type": self.config.sink.type,
            "position": str(durable) if durable is not None else None,
            "lag_seconds": round(p.lag_seconds(), 3) if p is not None else None,
            "source_lag_bytes": self.side.get("lag_bytes"),
            "retained_bytes": self.side.get("retained_wal_bytes"),
            "consumer_lag_messages": self.side.get("lag_messages"),
            "events_per_second": round(p.events_per_second(), 1) if p is not None else 0.0,
            "counters": {
                "transactions": counters.transactions if counters else 0,
                "events": counters.events if counters else 0,
                "inserted": counters.inserted if counters else 0,
                "updated": counters.updated if counters else 0,
                "deleted": counters.deleted if counters else 0,
                "truncated": counters.truncated if counters else 0,
            },
            "last_error": errors[-1] if errors else None,
            "errors": errors[-5:],
            "snapshot": self.snapshot,
            "started_at": _iso(p.started_at) if p is not None else None,
            "paused_at": _iso(p.paused_at) if p is not None else None,
            "pause_requested": self.pause_requested,
            "dead_letters_open": p.dead_letters_open if p is not None else 0,
            "degraded": self.degraded(),
            "retry": None
            if self.retry is None
            else {
                "attempt": self.retry.attempt,
                "delay_seconds": round(self.retry.delay, 3),
                "error": self.retry.error,
            },
        }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class ReloadResult:
    """What a reload changed, pipeline by pipeline."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape the API serves."""
        return {
            "added": self.added,
            "removed": self.removed,
            "restarted": self.restarted,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "notes": self.notes,
        }


class Supervisor:
    """Runs the configured pipelines; thread-safe for the API's requests."""

    def __init__(
        self, config: Config, path: Path, only: list[str] | None, *, isolate_failures: bool
    ) -> None:
        self.config = config
        self._path = path
        self._only = set(only) if only else None
        self._isolate = isolate_failures
        self._lock = threading.RLock()
        self._runners: dict[str, Runner] = {}
        self._breakers = Breakers()
        self.stopping = threading.Event()
        self._log = get_logger()
        self._probes: dict[str, _Probe] = {}
        self._retired: list[_Probe] = []  # closed by the poller, the only thread using them
        self._poller = threading.Thread(target=self._poll, name="status-poller", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every chosen pipeline and the status poller."""
        with self._lock:
            for p in self._chosen(self.config):
                self._start(p)
        self._poller.start()

    def _chosen(self, config: Config) -> list[PipelineConfig]:
        if self._only is None:
            return list(config.pipelines)
        return [p for p in config.pipelines if p.name in self._only]

    def _start(self, config: PipelineConfig) -> None:
        runner = Runner(config, self._exited, self._breakers)
        self._runners[config.name] = runner
        runner.start()

    def _exited(self, runner: Runner) -> None:
        if runner.error is not None and not self._isolate and not self.stopping.is_set():
            self._log.error("pipeline failed: stopping the others", pipeline=runner.name)
            self.shutdown_async()

    def shutdown_async(self) -> None:
        """Ask every pipeline to stop (they finish their batch and checkpoint)."""
        self.stopping.set()
        # No lock: a signal handler or a failing pipeline's thread calls this, and a reload
        # holding the lock may be waiting for that very thread.
        for runner in list(self._runners.values()):
            runner.stop.set()

    def running(self) -> bool:
        """Whether the process should keep going: some pipeline runs, or the API serves."""
        if self.stopping.is_set():
            return any(r.alive for r in self._runners.values())
        return self._isolate or any(r.alive for r in self._runners.values())

    def join(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """Wait up to ``timeout`` seconds for every pipeline's thread to end, then close the
        poller's connections; the names of the pipelines still running."""
        deadline = time.monotonic() + timeout
        stuck = []
        for runner in list(self._runners.values()):
            if not runner.halt(max(0.0, deadline - time.monotonic())):
                stuck.append(runner.name)
        self._poller.join(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
        for probe in [*self._probes.values(), *self._retired]:
            probe.close()
        return stuck

    def failures(self) -> list[tuple[str, BaseException]]:
        """Each failed pipeline with its error, in config order."""
        return [(r.name, r.error) for r in self._runners.values() if r.error is not None]

    # --- operator requests -------------------------------------------------------------------

    def runner(self, name: str) -> Runner:
        """The pipeline called ``name``, or NoSuchPipeline."""
        runner = self._runners.get(name)
        if runner is None:
            known = ", ".join(self._runners) or "none"
            raise NoSuchPipeline(f"no pipeline named {name!r} runs here (running: {known})")
        return runner

    def runners(self) -> list[Runner]:
        """Every pipeline, in config order.

        Without the lock, on purpose: a reload or restart holds it while pipelines finish
        their batches, and health probes must not wait for that (copying a dict's values is
        atomic in CPython)."""
        return list(self._runners.values())

    def pause(self, name: str) -> Runner:
        """Pause a pipeline at its next transaction boundary."""
        runner = self.runner(name)
        if runner.state in ("failed", "stopped", "stopping"):
            raise Conflict(
                f"pipeline {name} is {runner.state}; only a running pipeline can be paused",
                fix=f"restart it first: POST /pipelines/{name}/restart",
            )
        runner.pause()
        self._log.info("pause requested", pipeline=name)
        return runner

    def resume(self, name: str) -> Runner:
        """Resume a paused pipeline."""
        runner = self.runner(name)
        if runner.state in ("failed", "stopped"):
            raise Conflict(
                f"pipeline {name} is {runner.state}, not paused",
                fix=f"restart it from its checkpoint: POST /pipelines/{name}/restart",
            )
        runner.resume()
        self._log.info("resume requested", pipeline=name)
        return runner

    def restart(self, name: str) -> Runner:
        """Stop a pipeline (if it runs) and start it again from its checkpoint."""
        with self._lock:
            old = self.runner(name)
            if not old.halt(STOP_TIMEOUT):
                raise Conflict(
                    f"pipeline {name} did not stop within {STOP_TIMEOUT:.0f} s",
                    fix="retry when its batch is done, or restart the process",
                )
            self._drop_probe(name)
            self._start(old.config)
            self._log.info("pipeline restarted", pipeline=name)
            return self._runners[name]

    def reload(self) -> ReloadResult:
        """Re-read the config file; start added pipelines, stop removed ones, restart changed
        and failed ones. An invalid file raises ConfigError and changes nothing."""
        with self._lock:
            try:
                new = load_config(self._path)
            except ConfigError:
                RELOADS.labels("rejected").inc()
                raise
            result = ReloadResult()
            wanted = {p.name: p for p in self._chosen(new)}
            for name in [n for n in self._runners if n not in wanted]:
                runner = self._runners[name]
                if runner.halt(STOP_TIMEOUT):
                    del self._runners[name]
                    self._drop_probe(name)
                    runner_metrics = runner.pipeline.metrics if runner.pipeline else None
                    if runner_metrics is not None:
                        runner_metrics.forget()
                    errorlog.forget(name)
                    result.removed.append(name)
                else:
                    result.failed[name] = f"did not stop within {STOP_TIMEOUT:.0f} s"
            for name, p in wanted.items():
                current = self._runners.get(name)
                if current is None:
                    self._start(p)
                    result.added.append(name)
                elif current.config != p or current.error is not None:
                    if current.halt(STOP_TIMEOUT):
                        self._drop_probe(name)
                        self._start(p)
                        result.restarted.append(name)
                    else:
                        result.failed[name] = f"did not stop within {STOP_TIMEOUT:.0f} s"
                else:
                    result.unchanged.append(name)
            if new.api != self.config.api:
                result.notes.append("api settings take effect when the process restarts")
            if (new.logging.level, new.logging.format) != (
                self.config.logging.level,
                self.config.logging.format,
            ):
                result.notes.append("log level and format take effect when the process restarts")
            configure_redaction(new.logging.redact_columns)
            tracing.configure_tracing(new.observability)
            self.config = new
            RELOADS.labels("applied").inc()
            self._log.info("configuration reloaded", **{k: v for k, v in result.as_dict().items()})
            return result

    def ready(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Whether every pipeline is connected and not failed, with each one's reason."""
        report: dict[str, dict[str, Any]] = {}
        for runner in self.runners():
            ok, reason = runner.readiness()
            report[runner.name] = {
                "ready": ok,
                "state": runner.state,
                "reason": reason,
                "warning": runner.warning(),
            }
        ready = bool(report) and all(r["ready"] for r in report.values())
        return ready and not self.stopping.is_set(), report

    # --- the status poller -------------------------------------------------------------------

    def _drop_probe(self, name: str) -> None:
        probe = self._probes.pop(name, None)
        if probe is not None:
            probe.retire()
            self._retired.append(probe)

    def _poll(self) -> None:
        while not self.stopping.wait(POLL_INTERVAL):
            while self._retired:
                self._retired.pop().close()
            for runner in self.runners():
                runner.degraded()  # keeps its gauge current without the API asking
                if runner.pipeline is None or runner.state in ("failed", "stopped"):
                    continue
                found = self._probes.get(runner.name)
                if found is None or found.config is not runner.config:
                    found = self._probes[runner.name] = _Probe(runner.config)
                found.measure(runner)


class _Probe:
    """The poller's own connections for one pipeline."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._source: Source | None = None
        self._store: CheckpointStore | None = None
        self._retired = False
        self._warned = 0.0
        self._log = get_logger(pipeline=config.name)

    def measure(self, runner: Runner) -> None:
        """Measure the source side and snapshot progress; publish to the runner and metrics."""
        name = self.config.name
        try:
            if self._source is None:
                self._source = make_source(self.config)
                self._store = make_checkpoint_store(self.config)
            assert self._store is not None
            pipeline = runner.pipeline
            position = pipeline.durable_position if pipeline is not None else None
            side = self._source.status(position)
            tables = [table_progress(t) for t in self._store.snapshot_tables(name)]
        except Exception as exc:  # noqa: BLE001 - measuring must never stop a pipeline
            self.close()
            now = time.monotonic()
            if now - self._warned >= 60:
                self._warned = now
                self._log.warning("could not measure the source's lag", error=redact(str(exc)))
            return
        if self._retired:
            return
        runner.side = side
        runner.snapshot = tables
        for key, gauge in (
            ("lag_bytes", SOURCE_LAG_BYTES),
            ("retained_wal_bytes", SOURCE_RETAINED_BYTES),
            ("lag_messages", CONSUMER_LAG),
        ):
            if isinstance(side.get(key), int):
                gauge.labels(name).set(side[key])
        for table in tables:
            copied, estimate = table["rows_copied"], table["rows_estimated"]
            SNAPSHOT_COPIED.labels(name, table["table"]).set(copied)
            if table["state"] == "done":
                SNAPSHOT_REMAINING.labels(name, table["table"]).set(0)
            elif estimate is not None:
                SNAPSHOT_REMAINING.labels(name, table["table"]).set(max(0, estimate - copied))

    def retire(self) -> None:
        """The pipeline was stopped or replaced: publish nothing more (the poller closes it)."""
        self._retired = True

    def close(self) -> None:
        """Close the probe's connections (reopened on the next measurement)."""
        source, store = self._source, self._store
        self._source = self._store = None
        for closable in (source, store):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # noqa: BLE001, S110 - closing a probe is best effort
                    pass
