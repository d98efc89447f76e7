"""The data both benchmarks record: one consumer's measurement, and a run's results with the
fields and JSON file they have in common."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar


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


class PhaseData(Protocol):
    """What a run's results need from a benchmark's phase."""

    def to_json(self) -> dict[str, Any]:
        """The phase as plain data."""


PhaseT = TypeVar("PhaseT", bound=PhaseData)


@dataclass
class RunResults(ABC, Generic[PhaseT]):
    """Everything a run measured, plus where it stopped when it failed.

    Each benchmark subclasses it with its own phases and goals: ``goals()`` must hold
    ``all_met``, and ``to_json`` adds the benchmark's figures after the common ones.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    source_rows: dict[str, int] = field(default_factory=dict)
    phases: list[PhaseT] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        """Every phase ran for the consumers measured and every comparison matched."""
        return not self.errors

    @abstractmethod
    def goals(self) -> dict[str, Any]:
        """Whether the benchmark's goals are met, with ``all_met`` for all of them."""

    def to_json(self) -> dict[str, Any]:
        """The fields every run has, as plain data (a subclass appends its own)."""
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
        }

    def write(self, path: Path) -> None:
        """Write the JSON results file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
