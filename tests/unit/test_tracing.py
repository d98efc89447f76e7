"""Tracing: the spans a batch exports over OTLP/HTTP, their links and timing, errors, trace ids
in log lines, and what tracing costs when it is off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from replicator.config import ObservabilityConfig
from replicator.errors import SinkError
from replicator.observability.logging import configure_logging, get_logger
from replicator.observability.redaction import MASK, register_secret
from replicator.observability.tracing import (
    batch,
    configure_tracing,
    current_ids,
    shutdown_tracing,
    step,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, SilentCollector

STEPS = ("apply", "checkpoint", "acknowledge")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def _tracing_off_after() -> Iterator[None]:
    """No test leaves tracing on for the next."""
    yield
    shutdown_tracing()


@pytest.fixture
def traced(receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    """Tracing on, exporting to ``receiver`` (shut down while it still listens)."""
    configure_tracing(
        ObservabilityConfig(otlp_endpoint=receiver.endpoint + "/", service_name="replicator-test")
    )
    yield receiver
    shutdown_tracing()


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Captured output, with the logging configuration restored after the test."""
    saved = structlog.get_config()
    otel = logging.getLogger("opentelemetry")
    handlers, propagate = list(otel.handlers), otel.propagate
    yield capsys
    structlog.configure(**saved)
    otel.handlers[:], otel.propagate = handlers, propagate


def _one_batch(read_started_ns: int | None = None) -> None:
    with batch("shop", read_started_ns=read_started_ns, events=3, transactions=2):
        for name in STEPS:
            with step(name):
                time.sleep(0.001)


def _by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def _log_lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_batch_exports_one_trace_with_read_and_steps(traced: OtlpReceiver) -> None:
    """A batch is one trace: a root span with the pipeline and counts, and read, apply,
    checkpoint and acknowledge as its children, sent to <endpoint>/v1/traces on shutdown."""
    read_started_ns = time.time_ns() - 50_000_000
    _one_batch(read_started_ns)
    shutdown_tracing()

    spans = _by_name(traced.spans)
    assert set(spans) == {"batch", "read", *STEPS}
    root = spans["batch"]
    assert root.parent_span_id is None
    assert root.attributes == {
        "replicator.pipeline": "shop",
        "replicator.events": 3,
        "replicator.transactions": 2,
    }
    for name in ("read", *STEPS):
        assert spans[name].trace_id == root.trace_id
        assert spans[name].parent_span_id == root.span_id
    assert {span.resource["service.name"] for span in spans.values()} == {"replicator-test"}
    assert {span.status for span in spans.values()} == {"UNSET"}
    assert len({span.span_id for span in spans.values()}) == 5


def test_span_times_follow_the_batch(traced: OtlpReceiver) -> None:
    """read runs from the oldest change's read to the batch's start; the steps follow it in
    order, inside the batch."""
    read_started_ns = time.time_ns() - 50_000_000
    _one_batch(read_started_ns)
    shutdown_tracing()

    spans = _by_name(traced.spans)
    root, read = spans["batch"], spans["read"]
    assert read.start_ns == read_started_ns
    assert read.end_ns == root.start_ns
    previous_end = read.end_ns
    for name in STEPS:
        assert previous_end <= spans[name].start_ns < spans[name].end_ns <= root.end_ns
        previous_end = spans[name].end_ns


def test_batch_without_read_start_has_no_read_span(traced: OtlpReceiver) -> None:
    """Without read_started_ns (nothing pending was read), no read span is recorded."""
    _one_batch(None)
    shutdown_tracing()

    assert sorted(span.name for span in traced.spans) == sorted(["batch", *STEPS])


def test_error_in_a_step_is_recorded_redacted_and_raised(traced: OtlpReceiver) -> None:
    """An exception in a step marks the step and its batch ERROR with an exception event,
    secrets masked, and still reaches the caller."""
    register_secret("s3cr3t-token")
    with pytest.raises(SinkError, match="s3cr3t-token"):
        with batch("shop", read_started_ns=None, events=1, transactions=1):
            with step("apply"):
                raise SinkError("connecting to postgresql://app:hunter2@db/shop: s3cr3t-token")
    shutdown_tracing()

    spans = _by_name(traced.spans)
    for span in (spans["apply"], spans["batch"]):
        assert span.status == "ERROR"
        assert span.status_message.startswith("SinkError: ")
        ((event, attributes),) = span.events
        assert event == "exception"
        assert attributes["exception.type"] == "replicator.errors.SinkError"
        assert attributes["exception.message"] == (
            f"connecting to postgresql://app:{MASK}@db/shop: {MASK}"
        )
        assert "raise SinkError" in attributes["exception.stacktrace"]
        text = json.dumps([span.status_message, attributes])
        assert "hunter2" not in text and "s3cr3t-token" not in text


def test_log_lines_in_a_batch_carry_its_trace_id(
    traced: OtlpReceiver, logs: pytest.CaptureFixture[str]
) -> None:
    """A log line written inside a batch carries the batch's trace_id and the current
    span's span_id; lines outside it carry neither."""
    # In the test, not a fixture: it binds the sys.stderr of the moment, which capsys
    # replaces between setup and call.
    configure_logging("info", "json")
    log = get_logger(pipeline="shop")
    log.info("before")
    with batch("shop", read_started_ns=None, events=1, transactions=1):
        log.info("in batch")
        with step("apply"):
            log.info("in apply")
    log.info("after")
    shutdown_tracing()

    lines = {line["event"]: line for line in _log_lines(logs.readouterr().err)}
    spans = _by_name(traced.spans)
    trace_id = spans["batch"].trace_id
    assert (lines["in batch"]["trace_id"], lines["in batch"]["span_id"]) == (
        trace_id,
        spans["batch"].span_id,
    )
    assert (lines["in apply"]["trace_id"], lines["in apply"]["span_id"]) == (
        trace_id,
        spans["apply"].span_id,
    )
    for outside in ("before", "after"):
        assert "trace_id" not in lines[outside] and "span_id" not in lines[outside]


def test_current_ids_are_the_open_span(traced: OtlpReceiver) -> None:
    """current_ids is the open span's (trace id, span id) in hex, and None outside a batch."""
    assert current_ids() is None
    with batch("shop", read_started_ns=None, events=1, transactions=1):
        ids = current_ids()
        assert ids is not None
        trace_id, span_id = ids
        assert len(trace_id) == 32 and len(span_id) == 16
        int(trace_id, 16), int(span_id, 16)
    assert current_ids() is None


def test_step_outside_a_batch_is_not_traced(traced: OtlpReceiver) -> None:
    """A step with no batch open (a snapshot writer, a chunk of a large transaction) sends
    nothing."""
    with step("apply"):
        assert current_ids() is None
    _one_batch(None)
    shutdown_tracing()

    assert sorted(span.name for span in traced.spans) == sorted(["batch", *STEPS])


def test_off_batch_and_step_are_shared_no_ops(logs: pytest.CaptureFixture[str]) -> None:
    """Without an endpoint, batch() and step() return one shared no-op, there are no ids,
    and log lines carry no trace_id."""
    configure_logging("info", "json")
    configure_tracing(ObservabilityConfig())
    first = batch("shop", read_started_ns=time.time_ns(), events=1, transactions=1)
    assert batch("other", read_started_ns=None, events=0, transactions=0) is first
    assert step("apply") is first
    with first:
        with step("apply"):
            assert current_ids() is None
            get_logger().info("untraced")
    (line,) = _log_lines(logs.readouterr().err)
    assert line["event"] == "untraced" and "trace_id" not in line


def test_off_imports_no_opentelemetry() -> None:
    """With tracing off, configuring it, running a batch and logging import no OpenTelemetry
    module."""
    script = """
import sys
from replicator.config import ObservabilityConfig
from replicator.observability.logging import configure_logging, get_logger
from replicator.observability.tracing import batch, configure_tracing, shutdown_tracing, step
configure_logging("info", "json")
configure_tracing(ObservabilityConfig())
with batch("shop", read_started_ns=1, events=1, transactions=1):
    with step("apply"):
        get_logger().info("untraced")
shutdown_tracing()
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_reconfigure_replaces_the_exporter(receiver: OtlpReceiver) -> None:
    """A reload with the same settings keeps exporting; one with a new service name sends
    later spans under it and still delivers the earlier ones; one without an endpoint turns
    tracing off."""
    configure_tracing(ObservabilityConfig(otlp_endpoint=receiver.endpoint, service_name="one"))
    _one_batch(None)
    configure_tracing(ObservabilityConfig(otlp_endpoint=receiver.endpoint, service_name="one"))
    _one_batch(None)
    configure_tracing(ObservabilityConfig(otlp_endpoint=receiver.endpoint, service_name="two"))
    _one_batch(None)
    configure_tracing(ObservabilityConfig())
    assert batch("shop", read_started_ns=None, events=0, transactions=0) is step("apply")

    def roots(spans: list[ReceivedSpan]) -> list[str]:
        return sorted(s.resource["service.name"] for s in spans if s.name == "batch")

    # The replaced exporters flush in the background.
    receiver.wait_for(lambda spans: len(roots(spans)) == 3)
    assert roots(receiver.spans) == ["one", "one", "two"]


def test_shutdown_is_bounded_when_the_collector_hangs() -> None:
    """A collector that takes connections and never answers holds shutdown for a few seconds
    at most, and spans never hold up a batch."""
    with SilentCollector() as collector:
        configure_tracing(ObservabilityConfig(otlp_endpoint=collector.endpoint))
        started = time.monotonic()
        for _ in range(3):
            _one_batch(time.time_ns())
        assert time.monotonic() - started < 5
        started = time.monotonic()
        shutdown_tracing()
        assert time.monotonic() - started < 15


def test_shutdown_is_bounded_when_nothing_listens(logs: pytest.CaptureFixture[str]) -> None:
    """A collector that is down (connection refused) holds shutdown for a few seconds at
    most, although the exporter would retry it for longer; the exporter's complaints are
    written as our own (JSON) log lines."""
    configure_logging("info", "json")
    with SilentCollector() as collector:
        endpoint = collector.endpoint
    configure_tracing(ObservabilityConfig(otlp_endpoint=endpoint))
    _one_batch(time.time_ns())
    started = time.monotonic()
    shutdown_tracing()
    assert time.monotonic() - started < 15

    err = logs.readouterr().err
    lines = _log_lines(err)
    assert len(lines) == len(err.splitlines())  # nothing but JSON lines
    assert any(
        line["logger"].startswith("opentelemetry.") and line["level"] in ("warning", "error")
        for line in lines
    ), lines
