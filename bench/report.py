"""Results of the PostgreSQL benchmark run: its phases and goals, their JSON and the terminal
table."""

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

RATIO_GOAL = 1.0
"""Goal from the issue: Replicator takes at most as long as native logical replication."""

MEMORY_GOAL_KB = 512 * 1024
"""Goal from the issue: Replicator's peak RSS stays under 512 MB."""


@dataclass
class Phase:
    """One timed phase, measured for both consumers."""

    key: str
    title: str
    rows: int = 0
    rows_meaning: str = ""
    native: Measurement = field(default_factory=Measurement)
    ours: Measurement = field(default_factory=Measurement)
    verified: bool | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Ours / native seconds; below 1.0 means Replicator was faster."""
        if self.native.seconds is None or self.ours.seconds is None or self.native.seconds <= 0:
            return None
        return self.ours.seconds / self.native.seconds

    def to_json(self) -> dict[str, Any]:
        """The phase as plain data, with the derived figures spelled out."""
        data = asdict(self)
        data["ratio_ours_over_native"] = self.ratio
        data["native"]["rows_per_second"] = self.native.rows_per_second(self.rows)
        data["ours"]["rows_per_second"] = self.ours.rows_per_second(self.rows)
        data["ratio_goal_met"] = None if self.ratio is None else self.ratio <= RATIO_GOAL
        return data


@dataclass
class Results(RunResults[Phase]):
    """Everything a run measured, plus where it stopped when it failed."""

    def peak_memory_kb(self, consumer: str) -> int | None:
        """The maximum peak RSS over all phases for ``ours`` or ``native``."""
        values = [
            getattr(phase, consumer).peak_memory_kb
            for phase in self.phases
            if getattr(phase, consumer).peak_memory_kb is not None
        ]
        return max(values) if values else None

    def goals(self) -> dict[str, Any]:
        """Whether the issue's goals are met; None where a phase has no ratio."""
        ratios = {phase.key: phase.ratio for phase in self.phases}
        ratio_met = {
            key: (None if ratio is None else ratio <= RATIO_GOAL) for key, ratio in ratios.items()
        }
        peak = self.peak_memory_kb("ours")
        memory_met = None if peak is None else peak < MEMORY_GOAL_KB
        measured = [met for met in ratio_met.values() if met is not None]
        all_measured = bool(ratio_met) and all(met is not None for met in ratio_met.values())
        return {
            "ratio_goal": RATIO_GOAL,
            "ratio_met": ratio_met,
            "memory_goal_mb": MEMORY_GOAL_KB // 1024,
            "memory_met": memory_met,
            "all_met": bool(self.ok and all_measured and all(measured) and memory_met is True),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole run as plain data."""
        data = super().to_json()
        data["peak_memory_kb"] = {
            "ours": self.peak_memory_kb("ours"),
            "native_workers": self.peak_memory_kb("native"),
        }
        data["goals"] = self.goals()
        return data


def render(results: Results) -> str:
    """The terminal summary: one row per phase, then the goals."""
    header = (
        "phase",
        "rows",
        "native s",
        "ours s",
        "ours/native",
        "native rows/s",
        "ours rows/s",
        "ours peak MB",
        "native peak MB",
        "verified",
    )
    rows: list[tuple[str, ...]] = [header]
    for phase in results.phases:
        ratio = phase.ratio
        rows.append(
            (
                phase.title,
                f"{phase.rows:,}",
                seconds_cell(phase.native),
                seconds_cell(phase.ours),
                "-" if ratio is None else f"{ratio:.2f}",
                rate_cell(phase.native.rows_per_second(phase.rows)),
                rate_cell(phase.ours.rows_per_second(phase.rows)),
                mb_cell(phase.ours.peak_memory_kb),
                mb_cell(phase.native.peak_memory_kb),
                verified_cell(phase.verified),
            )
        )
    lines = table(rows)

    lines.extend(
        cpu_lines(
            "CPU seconds used by both clusters and the consumer while each was timed:",
            [
                (phase.title, {"native": phase.native, "ours": phase.ours})
                for phase in results.phases
            ],
        )
    )

    applied_lines = []
    for phase in results.phases:
        native = phase.native.detail.get("applied_seconds")
        ours = phase.ours.detail.get("applied_seconds")
        if native is not None or ours is not None:
            applied_lines.append(
                f"{phase.title}: last source transaction applied in the target after"
                f" native {native if native is not None else '-'}s,"
                f" ours {ours if ours is not None else '-'}s"
            )
    if applied_lines:
        lines.append("")
        lines.append(
            "seconds above are until the source's slot confirmed the position; for reference:"
        )
        lines.extend(applied_lines)

    goals = results.goals()
    lines.append("")
    for phase in results.phases:
        met = goals["ratio_met"].get(phase.key)
        lines.append(f"goal ours/native <= {RATIO_GOAL:.1f} in {phase.title}: {verdict(met)}")
    peak = results.peak_memory_kb("ours")
    lines.append(
        f"goal Replicator peak memory < {MEMORY_GOAL_KB // 1024} MB: {verdict(goals['memory_met'])}"
        f" (peak VmHWM {mb_cell(peak)} MB)"
    )
    lines.append(
        "native peak MB is the apply/table-sync workers' VmHWM, which includes the shared"
        " buffers they touched."
    )
    lines.extend(
        closing_lines(
            goals["all_met"],
            results.warnings,
            results.errors,
            "WARNINGS (other work on the machine during a measurement):",
        )
    )
    return "\n".join(lines)
