"""Results of a MySQL benchmark run: phases measured for pg_chameleon and Replicator, the
goals, the terminal table and the JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Measurement

INITIAL_COPY_GOAL = 1.5
"""Goal from the issue: Replicator's initial copy at least 1.5× pg_chameleon's rate."""

STREAMING_GOAL = 5.0
"""Goal from the issue: Replicator streams (catches up) at least 5× pg_chameleon's rate."""


@dataclass
class Phase:
    """One timed phase, measured for both consumers; ``goal`` is the speedup asked for."""

    key: str
    title: str
    goal: float
    rows: int = 0
    rows_meaning: str = ""
    chameleon: Measurement = field(default_factory=Measurement)
    ours: Measurement = field(default_factory=Measurement)
    verified: bool | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """Ours rows/s over pg_chameleon's (= its seconds over ours; same rows for both)."""
        if self.chameleon.seconds is None or self.ours.seconds is None or self.ours.seconds <= 0:
            return None
        return self.chameleon.seconds / self.ours.seconds

    @property
    def goal_met(self) -> bool | None:
        """Whether the speedup reaches the goal; None when either side has no time."""
        speedup = self.speedup
        return None if speedup is None else speedup >= self.goal

    def to_json(self) -> dict[str, Any]:
        """The phase as plain data, with the derived figures spelled out."""
        data = asdict(self)
        data["chameleon"]["rows_per_second"] = self.chameleon.rows_per_second(self.rows)
        data["ours"]["rows_per_second"] = self.ours.rows_per_second(self.rows)
        data["speedup_ours_over_chameleon"] = self.speedup
        data["goal_met"] = self.goal_met
        return data


@dataclass
class Results:
    """Everything a run measured, plus where it stopped when it failed."""

    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    source_rows: dict[str, int] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        """Every phase ran for the consumers measured and every comparison matched."""
        return not self.errors

    def goals(self) -> dict[str, Any]:
        """Whether each phase's goal is met; None where a phase has no speedup."""
        met = {phase.key: phase.goal_met for phase in self.phases}
        return {
            "speedup_goals": {phase.key: phase.goal for phase in self.phases},
            "met": met,
            "all_met": bool(self.ok and met and all(value is True for value in met.values())),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole run as plain data."""
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "settings": self.settings,
            "environment": self.environment,
            "source_rows": self.source_rows,
            "phases": [phase.to_json() for phase in self.phases],
            "goals": self.goals(),
        }

    def write(self, path: Path) -> None:
        """Write the JSON results file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")


def _seconds(measurement: Measurement) -> str:
    if measurement.seconds is not None:
        return f"{measurement.seconds:.2f}"
    if measurement.skipped:
        return "skipped"
    if measurement.error:
        return "FAILED"
    return "-"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def render(results: Results) -> str:
    """The terminal summary: one row per phase, CPU, then the goals."""
    rows: list[tuple[str, ...]] = [
        (
            "phase",
            "rows",
            "chameleon s",
            "ours s",
            "chameleon rows/s",
            "ours rows/s",
            "speedup",
            "goal",
            "chameleon peak MB",
            "ours peak MB",
            "verified",
        )
    ]
    for phase in results.phases:
        speedup = phase.speedup
        rows.append(
            (
                phase.title,
                f"{phase.rows:,}",
                _seconds(phase.chameleon),
                _seconds(phase.ours),
                _rate(phase.chameleon.rows_per_second(phase.rows)),
                _rate(phase.ours.rows_per_second(phase.rows)),
                "-" if speedup is None else f"{speedup:.2f}x",
                f">= {phase.goal:g}x",
                _mb(phase.chameleon.peak_memory_kb),
                _mb(phase.ours.peak_memory_kb),
                {True: "yes", False: "NO", None: "-"}[phase.verified],
            )
        )
    lines = _table(rows)

    cpu_lines = []
    for phase in results.phases:
        chameleon = phase.chameleon.detail.get("cpu_seconds")
        ours = phase.ours.detail.get("cpu_seconds")
        if chameleon is not None or ours is not None:
            cpu_lines.append(
                f"{phase.title}: chameleon {'-' if chameleon is None else chameleon},"
                f" ours {'-' if ours is None else ours}"
            )
    if cpu_lines:
        lines.append("")
        lines.append(
            "CPU seconds used by MariaDB, PostgreSQL and the consumer while each was timed:"
        )
        lines.extend(cpu_lines)

    for phase in results.phases:
        read = phase.chameleon.detail.get("read_done_seconds")
        if read is not None and phase.chameleon.seconds is not None:
            lines.append("")
            lines.append(
                f"{phase.title}: pg_chameleon had read the binlog to the goal after {read:.2f}s;"
                f" replaying it took the remaining {phase.chameleon.seconds - read:.2f}s"
            )

    lines.append("")
    for phase in results.phases:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[phase.goal_met]
        lines.append(
            f"goal ours >= {phase.goal:g}x pg_chameleon's rows/s in {phase.title}: {verdict}"
        )
    lines.append(
        "peak MB: VmHWM summed over each consumer's processes (pg_chameleon's start_replica"
        " runs three: supervisor, reader, replay)"
    )
    lines.append(f"all goals met: {'yes' if results.goals()['all_met'] else 'NO'}")
    if results.warnings:
        lines.append("")
        lines.append("WARNINGS:")
        lines.extend(f"  {warning}" for warning in results.warnings)
    if results.errors:
        lines.append("")
        lines.append("BENCHMARK FAILED:")
        lines.extend(f"  {error}" for error in results.errors)
    return "\n".join(lines)
