"""Structured logging: human-readable console lines or JSON lines, secrets always masked; a
line written inside a traced batch carries its ``trace_id`` and ``span_id``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from replicator.observability.redaction import redact
from replicator.observability.tracing import current_ids


def _redact_event(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, BaseException):
            event[key] = redact(str(value))
    return event


def _add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # Inside a traced batch: the line links to its span (a no-op check when tracing is off).
    ids = current_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


class _StructlogHandler(logging.Handler):
    """Hands a standard-library record to structlog, so it is written like our own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = record.levelname.lower()
            if method not in ("debug", "info", "warning", "error", "critical"):
                method = "warning"
            log = getattr(get_logger(logger=record.name), method)
            if record.exc_info:
                log(record.getMessage(), exc_info=record.exc_info)
            else:
                log(record.getMessage())
        except Exception:
            self.handleError(record)


def _route_standard_logging(name: str, level: int) -> None:
    # OpenTelemetry's exporter reports a collector that is down through the standard logging
    # module, which would print bare text lines among the JSON ones.
    stdlib_logger = logging.getLogger(name)
    for handler in [h for h in stdlib_logger.handlers if isinstance(h, _StructlogHandler)]:
        stdlib_logger.removeHandler(handler)
    stdlib_logger.addHandler(_StructlogHandler(max(level, logging.WARNING)))
    stdlib_logger.propagate = False


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Route structlog to stderr at ``level`` in ``fmt`` (``console`` or ``json``)."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_ids,
            # Tracebacks are rendered as plain text, never with frame locals (they can hold DSNs).
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging("opentelemetry", threshold)


def get_logger(**context: Any) -> Any:
    """A logger bound to ``context`` (pipeline, table, position...)."""
    return structlog.get_logger("replicator").bind(**context)
