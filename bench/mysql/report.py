"""Results of a MySQL benchmark run: phases measured for pg_chameleon and Replicator, the
goals, the terminal table and the JSON file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.model import Measurement, RunResults
from bench.report_format import (
    closing_lines,
    cpu_lines,
    mb_cell,
    rate_cell,
    seconds_cell,
    table,
    verdict,
    verified_cell,
)

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
class Results(RunResults[Phase]):
    """Everything a run measured, plus where it stopped when it failed."""

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
        data = super().to_json()
        data["goals"] = self.goals()
        return data


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
                seconds_cell(phase.chameleon),
                seconds_cell(phase.ours),
                rate_cell(phase.chameleon.rows_per_second(phase.rows)),
                rate_cell(phase.ours.rows_per_second(phase.rows)),
                "-" if speedup is None else f"{speedup:.2f}x",
                f">= {phase.goal:g}x",
                mb_cell(phase.chameleon.peak_memory_kb),
                mb_cell(phase.ours.peak_memory_kb),
                verified_cell(phase.verified),
            )
        )
    lines = table(rows)

    lines.extend(
        cpu_lines(
            "CPU seconds used by MariaDB, PostgreSQL and the consumer while each was timed:",
            [
                (phase.title, {"chameleon": phase.chameleon, "ours": phase.ours})
                for phase in results.phases
            ],
        )
    )

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
        lines.append(
            f"goal ours >= {phase.goal:g}x pg_chameleon's rows/s in {phase.title}:"
            f" {verdict(phase.goal_met)}"
        )
    lines.append(
        "peak MB: VmHWM summed over each consumer's processes (pg_chameleon's start_replica"
        " runs three: supervisor, reader, replay)"
    )
    lines.extend(
        closing_lines(results.goals()["all_met"], results.warnings, results.errors, "WARNINGS:")
    )
    return "\n".join(lines)
