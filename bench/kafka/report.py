"""Results of a Kafka benchmark run: the catch-up and live phases per consumer, the goal, the
terminal tables and the JSON file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.model import Measurement, RunResults
from bench.report_format import (
    closing_lines,
    mb_cell,
    rate_cell,
    seconds_cell,
    table,
    verdict,
    verified_cell,
)

EVENTS_PER_SECOND_GOAL = 50_000
"""Goal from the issue: events/s end to end through one watcher and one syncer."""

CONSUMERS: dict[str, tuple[str, str]] = {
    "native": ("native subscription", "PG -> PG"),
    "debezium": ("Debezium (Kafka Connect)", "PG -> Kafka"),
    "watcher": ("Replicator watcher alone", "PG -> Kafka"),
    "ours_watcher": ("Replicator watcher, with syncer", "PG -> Kafka"),
    "ours": ("Replicator watcher + syncer", "PG -> Kafka -> PG"),
}
"""Each consumer's key, its name in the tables, and the path its events take."""


@dataclass
class Phase:
    """One phase, measured for each consumer that ran in it (keys of ``CONSUMERS``)."""

    key: str
    title: str
    rows: int = 0
    rows_meaning: str = ""
    consumers: dict[str, Measurement] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def measurement(self, consumer: str) -> Measurement:
        """The consumer's measurement, made on first use."""
        return self.consumers.setdefault(consumer, Measurement())

    def to_json(self) -> dict[str, Any]:
        """The phase as plain data, with each consumer's rows per second."""
        data = asdict(self)
        for key, measurement in self.consumers.items():
            data["consumers"][key]["rows_per_second"] = measurement.rows_per_second(self.rows)
        return data


@dataclass
class Results(RunResults[Phase]):
    """Everything a run measured, plus where it stopped when it failed."""

    def _end_to_end(self) -> float | None:
        for phase in self.phases:
            if phase.key == "catchup" and "ours" in phase.consumers:
                return phase.consumers["ours"].rows_per_second(phase.rows)
        return None

    def goals(self) -> dict[str, Any]:
        """Whether Replicator reached the issue's events/s end to end in the catch-up."""
        rate = self._end_to_end()
        met = None if rate is None else rate >= EVENTS_PER_SECOND_GOAL
        return {
            "events_per_second_goal": EVENTS_PER_SECOND_GOAL,
            "events_per_second": rate,
            "met": met,
            "all_met": bool(self.ok and met is True),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole run as plain data."""
        data = super().to_json()
        data["goals"] = self.goals()
        return data


def _verified(measurement: Measurement) -> str:
    value = measurement.detail.get("verified")
    return verified_cell(value if isinstance(value, bool) else None)


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _catchup_lines(phase: Phase) -> list[str]:
    rows: list[tuple[str, ...]] = [
        (
            "consumer",
            "path",
            "seconds",
            "1st event s",
            "events/s",
            "steady events/s",
            "peak MB",
            "verified",
        )
    ]
    for key, (name, path) in CONSUMERS.items():
        m = phase.consumers.get(key)
        if m is None:
            continue
        rows.append(
            (
                name,
                path,
                seconds_cell(m),
                _seconds(m.detail.get("first_event_seconds")),
                rate_cell(m.rows_per_second(phase.rows)),
                rate_cell(m.detail.get("steady_events_per_second")),
                mb_cell(m.peak_memory_kb),
                _verified(m),
            )
        )
    lines = [f"{phase.title} ({phase.rows:,} events, each consumer alone):", *table(rows)]
    lines.append(
        "seconds: from starting the consumer (process start-up included) until the target"
        " held every row (native, ours) or the topic every event (watchers); 1st event: until"
        " the first row or event arrived; steady: between 10 % and 90 % of the events"
    )
    return lines


def _live_lines(phase: Phase) -> list[str]:
    rows: list[tuple[str, ...]] = [
        (
            "consumer",
            "rows",
            "rows/s",
            "lag p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "drain s",
            "verified",
        )
    ]
    for key in ("native", "ours"):
        m = phase.consumers.get(key)
        if m is None:
            continue
        lag = m.detail.get("lag", {})
        drain = m.detail.get("drain_seconds")
        if m.error:
            rows.append((CONSUMERS[key][0], "FAILED", *("-",) * 7))
            continue
        rows.append(
            (
                CONSUMERS[key][0],
                f"{m.detail.get('rows', 0):,}",
                rate_cell(m.detail.get("achieved_rows_per_second")),
                _ms(lag.get("p50_ms")),
                _ms(lag.get("p95_ms")),
                _ms(lag.get("p99_ms")),
                _ms(lag.get("max_ms")),
                "-" if drain is None else f"{drain:.2f}",
                _verified(m),
            )
        )
    return [
        f"{phase.title} (each consumer alone, caught up at the start):",
        *table(rows),
        "lag: now minus the insert time of the newest row in the target, sampled every"
        f" {phase.info.get('lag_interval_seconds', '-')} s while rows arrive; drain: from the"
        " last insert until the target held every row",
    ]


def _cpu_lines(phase: Phase) -> list[str]:
    lines = []
    for key, (name, _) in CONSUMERS.items():
        m = phase.consumers.get(key)
        by_process = None if m is None else m.detail.get("cpu_seconds_by_process")
        if m is None or not by_process:
            continue
        wall = m.detail.get("wall_seconds") or m.seconds
        cores = f" over {wall:.1f}s" if wall else ""
        lines.append(
            f"  {name}{cores}: "
            + ", ".join(f"{role} {seconds:.1f}" for role, seconds in by_process.items())
        )
    return ["CPU seconds by process:", *lines] if lines else []


def _process_lines(phase: Phase) -> list[str]:
    m = phase.consumers.get("ours")
    processes = None if m is None else m.detail.get("processes")
    if not processes:
        return []
    parts = []
    for name, process in processes.items():
        parts.append(
            f"{name} peak RSS {mb_cell(process.get('peak_rss_kb'))} MB"
            f" (RssAnon {mb_cell(process.get('peak_rss_anon_kb'))} MB),"
            f" CPU {process.get('cpu_seconds', '-')} s"
        )
    return ["Replicator processes: " + "; ".join(parts)]


def render(results: Results) -> str:
    """The terminal summary: the catch-up table, the live table, CPU, then the goal."""
    lines: list[str] = []
    for phase in results.phases:
        if lines:
            lines.append("")
        if phase.key == "catchup":
            lines.extend(_catchup_lines(phase))
        else:
            lines.extend(_live_lines(phase))
        lines.extend(_process_lines(phase))
        lines.extend(_cpu_lines(phase))
    goals = results.goals()
    lines.append("")
    rate = goals["events_per_second"]
    lines.append(
        f"goal Replicator end to end >= {EVENTS_PER_SECOND_GOAL:,} events/s in the catch-up:"
        f" {verdict(goals['met'])}" + ("" if rate is None else f" ({rate:,.0f} events/s)")
    )
    lines.extend(closing_lines(goals["all_met"], results.warnings, results.errors, "WARNINGS:"))
    return "\n".join(lines)
