"""The terminal summary's building blocks both benchmarks share: cells, the table layout and
the closing lines (overall verdict, warnings, errors)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.model import Measurement


def seconds_cell(measurement: Measurement) -> str:
    """A phase's seconds, or why there are none."""
    if measurement.seconds is not None:
        return f"{measurement.seconds:.2f}"
    if measurement.skipped:
        return "skipped"
    if measurement.error:
        return "FAILED"
    return "-"


def rate_cell(value: float | None) -> str:
    """Rows per second, with thousands separators."""
    return "-" if value is None else f"{value:,.0f}"


def mb_cell(kb: int | None) -> str:
    """kB as whole MB."""
    return "-" if kb is None else f"{kb / 1024:.0f}"


def verified_cell(verified: bool | None) -> str:
    """Whether the targets matched the source after a phase; ``-`` when not checked."""
    return {True: "yes", False: "NO", None: "-"}[verified]


def verdict(met: bool | None) -> str:
    """A goal's verdict."""
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """``rows[0]`` is the header: the first column left-aligned, the others right-aligned."""
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


def cpu_lines(heading: str, phases: Sequence[tuple[str, dict[str, Measurement]]]) -> list[str]:
    """Under ``heading``, each phase's CPU seconds per consumer (``Harness.measure`` records
    them); nothing when no phase has any. ``phases``: title and measurement by consumer."""
    lines = []
    for title, measurements in phases:
        cpu = {label: m.detail.get("cpu_seconds") for label, m in measurements.items()}
        if any(seconds is not None for seconds in cpu.values()):
            lines.append(
                f"{title}: "
                + ", ".join(f"{label} {'-' if s is None else s}" for label, s in cpu.items())
            )
    return ["", heading, *lines] if lines else []


def closing_lines(
    all_met: bool, warnings: list[str], errors: list[str], warnings_heading: str
) -> list[str]:
    """The end of the summary: whether all goals are met, then any warnings and errors."""
    lines = [f"all goals met: {'yes' if all_met else 'NO'}"]
    if warnings:
        lines.append("")
        lines.append(warnings_heading)
        lines.extend(f"  {warning}" for warning in warnings)
    if errors:
        lines.append("")
        lines.append("BENCHMARK FAILED:")
        lines.extend(f"  {error}" for error in errors)
    return lines
