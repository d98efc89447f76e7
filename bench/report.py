"""Results of a benchmark run: the data model, the terminal table and the JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RATIO_GOAL = 1.0
"""Goal from the issue: Replicator takes at most as long as native logical replication."""

MEMORY_GOAL_KB = 512 * 1024
"""Goal from the issue: Replicator's peak RSS stays under 512 MB."""


@dataclass
class Measurement:
    """One consumer's result in one phase."""

    seconds: float | None = None
    error: str | None = None
    skipped: str | None = None
    peak_memory_kb: int | None = None
    peak_rss_anon_kb: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def rows_per_second(self, rows: int) -> float | None:
        """Throughput for ``rows`` rows (or row changes), when the phase finished."""
        if self.seconds is None or self.seconds <= 0:
            return None
        return rows / self.seconds


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
        """Every phase ran for both consumers and every comparison matched."""
        return not self.errors

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
            "peak_memory_kb": {
                "ours": self.peak_memory_kb("ours"),
                "native_workers": self.peak_memory_kb("native"),
            },
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
                _seconds(phase.native),
                _seconds(phase.ours),
                "-" if ratio is None else f"{ratio:.2f}",
                _rate(phase.native.rows_per_second(phase.rows)),
                _rate(phase.ours.rows_per_second(phase.rows)),
                _mb(phase.ours.peak_memory_kb),
                _mb(phase.native.peak_memory_kb),
                {True: "yes", False: "NO", None: "-"}[phase.verified],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))

    cpu_lines = []
    for phase in results.phases:
        native = phase.native.detail.get("cpu_seconds")
        ours = phase.ours.detail.get("cpu_seconds")
        if native is not None or ours is not None:
            cpu_lines.append(
                f"{phase.title}: native {native if native is not None else '-'},"
                f" ours {ours if ours is not None else '-'}"
            )
    if cpu_lines:
        lines.append("")
        lines.append("CPU seconds used by both clusters and the consumer while each was timed:")
        lines.extend(cpu_lines)

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
        verdict = {True: "met", False: "NOT met", None: "not measured"}[met]
        lines.append(f"goal ours/native <= {RATIO_GOAL:.1f} in {phase.title}: {verdict}")
    peak = results.peak_memory_kb("ours")
    memory_verdict = {True: "met", False: "NOT met", None: "not measured"}[goals["memory_met"]]
    lines.append(
        f"goal Replicator peak memory < {MEMORY_GOAL_KB // 1024} MB: {memory_verdict}"
        f" (peak VmHWM {_mb(peak)} MB)"
    )
    lines.append(
        "native peak MB is the apply/table-sync workers' VmHWM, which includes the shared"
        " buffers they touched."
    )
    lines.append(f"all goals met: {'yes' if goals['all_met'] else 'NO'}")
    if results.warnings:
        lines.append("")
        lines.append("WARNINGS (other work on the machine during a measurement):")
        lines.extend(f"  {warning}" for warning in results.warnings)
    if results.errors:
        lines.append("")
        lines.append("BENCHMARK FAILED:")
        lines.extend(f"  {error}" for error in results.errors)
    return "\n".join(lines)
