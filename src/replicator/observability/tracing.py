"""Optional OpenTelemetry tracing: one trace per batch the engine commits, off by default.

With ``observability.otlp_endpoint`` set, each committed batch is one trace::

    batch                   replicator.pipeline, replicator.events, replicator.transactions
    ├── read                from when the batch's oldest change was read to the batch's start
    ├── apply               the sink writes the data
    ├── checkpoint          the sink writes the checkpoint and commits
    └── acknowledge         the source is told the position is durable

exported over OTLP/HTTP (``<endpoint>/v1/traces``) by a background thread, so a slow or absent
collector never holds up a batch: spans it cannot take are dropped, never the data. Every log
line written inside a batch carries its ``trace_id`` and ``span_id``
(:mod:`replicator.observability.logging`).

Off, nothing of OpenTelemetry is imported and :func:`batch` and :func:`step` hand back one
shared no-op context manager: what the engine's hot path pays is a function call.

The exporter is process-wide, like the log configuration: sinks open their steps deep inside
``Sink.apply``, so they find the open batch through the context (a :class:`~contextvars.
ContextVar` and OpenTelemetry's own context), never through an argument. It is kept here
rather than in OpenTelemetry's global provider, which can be set only once: a config reload
replaces it. Exception messages reach spans only through :func:`redact`.
"""

from __future__ import annotations

import atexit
import threading
import time
import traceback
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from replicator.observability.redaction import redact

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from replicator.config import ObservabilityConfig

# Longest shutdown_tracing waits for the last spans to reach the collector: a collector that
# is down makes the exporter retry for its own timeout (10 s), and process exit must not wait.
SHUTDOWN_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class _Exporting:
    """The tracer provider in use and what it was made from."""

    endpoint: str
    service_name: str
    provider: TracerProvider
    tracer: Tracer


_lock = threading.Lock()  # configure_tracing and shutdown_tracing replace _exporting under it
_exporting: _Exporting | None = None
_exit_hook = False
# The innermost open batch in this context: steps outside a batch are not traced.
_open_batch: ContextVar[Span | None] = ContextVar("replicator_open_batch", default=None)


class _Off:
    """What batch() and step() return when there is nothing to trace."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_OFF = _Off()


def configure_tracing(config: ObservabilityConfig) -> None:
    """Export spans to ``config.otlp_endpoint``, or trace nothing when it is not set.

    Called again (a config reload), it keeps the exporter when nothing changed, and otherwise
    replaces it, flushing the old one in the background; without an endpoint it turns tracing
    off.
    """
    global _exporting, _exit_hook
    endpoint = config.otlp_endpoint
    with _lock:
        old = _exporting
        if endpoint is None:
            _exporting = None
        elif old is not None and (old.endpoint, old.service_name) == (
            endpoint,
            config.service_name,
        ):
            return
        else:
            _exporting = _start_exporting(endpoint, config.service_name)
            if not _exit_hook:
                atexit.register(shutdown_tracing)
                _exit_hook = True
    if old is not None:
        # Spans the old exporter still holds are sent without holding up the reload.
        threading.Thread(
            target=old.provider.shutdown, name="replicator-tracing-shutdown", daemon=True
        ).start()


def shutdown_tracing() -> None:
    """Send the spans not yet exported and stop exporting, waiting a few seconds at most."""
    global _exporting
    with _lock:
        old, _exporting = _exporting, None
    if old is None:
        return
    # TracerProvider.shutdown waits up to 30 s for the exporter thread, which retries a
    # collector that is down for 10 s: wait for it on a thread we may leave behind.
    thread = threading.Thread(
        target=old.provider.shutdown, name="replicator-tracing-shutdown", daemon=True
    )
    thread.start()
    thread.join(SHUTDOWN_TIMEOUT_S)


def batch(
    pipeline: str, *, read_started_ns: int | None, events: int, transactions: int
) -> AbstractContextManager[None]:
    """A span for one batch, current while the block runs; its steps nest under it.

    ``read_started_ns`` (``time.time_ns()`` when the batch's oldest change was read) adds a
    ``read`` span from then to the batch's start.
    """
    exporting = _exporting
    if exporting is None:
        return _OFF
    return _Batch(exporting.tracer, pipeline, read_started_ns, events, transactions)


def step(name: str) -> AbstractContextManager[None]:
    """A span for one step (``apply``, ``checkpoint``, ``acknowledge``) of the open batch."""
    exporting = _exporting
    if exporting is None or _open_batch.get() is None:
        return _OFF
    return _Step(exporting.tracer, name)


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id (32 hex digits) and span id (16), if a span is open."""
    if _exporting is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


# --- with tracing on ------------------------------------------------------------------------


def _start_exporting(endpoint: str, service_name: str) -> _Exporting:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # shutdown_on_exit=False: its exit hook could wait 30 s; ours waits SHUTDOWN_TIMEOUT_S.
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False
    )
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return _Exporting(endpoint, service_name, provider, provider.get_tracer("replicator"))


class _Span:
    """A span that is current while the block runs; an exception is recorded, redacted."""

    __slots__ = ("_tracer", "_span", "_token")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._span: Span | None = None
        self._token: Token[Context] | None = None

    def _open(self, span: Span) -> None:
        from opentelemetry import context, trace

        self._span = span
        self._token = context.attach(trace.set_span_in_context(span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry import context

        assert self._span is not None and self._token is not None
        context.detach(self._token)
        if exc is not None:
            _record_error(self._span, exc)
        self._span.end()


class _Batch(_Span):
    __slots__ = ("_pipeline", "_read_started_ns", "_events", "_transactions", "_batch_token")

    def __init__(
        self,
        tracer: Tracer,
        pipeline: str,
        read_started_ns: int | None,
        events: int,
        transactions: int,
    ) -> None:
        super().__init__(tracer)
        self._pipeline = pipeline
        self._read_started_ns = read_started_ns
        self._events = events
        self._transactions = transactions
        self._batch_token: Token[Span | None] | None = None

    def __enter__(self) -> None:
        from opentelemetry import context, trace

        started = time.time_ns()
        span = self._tracer.start_span(
            "batch",
            # A root: each batch is a trace of its own, whatever the caller has open.
            context=context.Context(),
            attributes={
                "replicator.pipeline": self._pipeline,
                "replicator.events": self._events,
                "replicator.transactions": self._transactions,
            },
            start_time=started,
            record_exception=False,
            set_status_on_exception=False,
        )
        if self._read_started_ns is not None:
            self._tracer.start_span(
                "read",
                context=trace.set_span_in_context(span),
                start_time=min(self._read_started_ns, started),
            ).end(end_time=started)
        self._open(span)
        self._batch_token = _open_batch.set(span)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._batch_token is not None
        _open_batch.reset(self._batch_token)
        super().__exit__(exc_type, exc, tb)


class _Step(_Span):
    __slots__ = ("_name",)

    def __init__(self, tracer: Tracer, name: str) -> None:
        super().__init__(tracer)
        self._name = name

    def __enter__(self) -> None:
        # The parent is the current span: the batch, or the step this one runs inside.
        self._open(
            self._tracer.start_span(
                self._name, record_exception=False, set_status_on_exception=False
            )
        )


def _record_error(span: Span, exc: BaseException) -> None:
    """Mark the span failed with the exception's event, its text redacted (the SDK's own
    recording would copy the message as is, DSNs and all)."""
    from opentelemetry.trace import Status, StatusCode

    kind = type(exc)
    message = redact(str(exc))
    span.add_event(
        "exception",
        {
            "exception.type": f"{kind.__module__}.{kind.__qualname__}",
            "exception.message": message,
            "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {message}"))


__all__ = [
    "SHUTDOWN_TIMEOUT_S",
    "batch",
    "configure_tracing",
    "current_ids",
    "shutdown_tracing",
    "step",
]
