"""What both benchmarks' command lines do around a run: the options they share, the run with
its failures recorded, the summary and JSON file, and the exit code."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.db import BenchError
from bench.harness import loadavg
from bench.model import RunResults

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where both benchmarks write their JSON results and consumers' logs by default."""

EXIT_GOALS_NOT_MET = 3
_BUSY_LOAD_AVERAGE = 0.5  # above this before the start, other work will skew the timings


def add_timeout_option(parser: argparse.ArgumentParser) -> None:
    """``--timeout``: the longest any one wait may take."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds any one wait may take before the run fails (default 900)",
    )


def add_output_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--output``: the JSON results file, by default ``name`` in ``RESULTS_DIR``."""
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / name,
        help=f"where to write the JSON results (default bench/results/{name})",
    )


def add_require_goals_option(parser: argparse.ArgumentParser) -> None:
    """``--require-goals``: a goal not met makes the exit code ``EXIT_GOALS_NOT_MET``."""
    parser.add_argument(
        "--require-goals",
        action="store_true",
        help=f"exit with code {EXIT_GOALS_NOT_MET} when a goal is not met",
    )


def now() -> str:
    """The current UTC time, to the second, in ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's options as plain data for the results file."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def warn_if_busy(say: Callable[[str], None]) -> None:
    """Say so when the machine is already busy before the run starts."""
    if loadavg() > _BUSY_LOAD_AVERAGE:
        say(
            f"warning: load average is {loadavg()} before the start; other work on this "
            "machine skews the timings"
        )


def run_recording_errors(
    run: Callable[[], None], errors: list[str], failures: tuple[type[Exception], ...]
) -> None:
    """Run ``run``; a ``BenchError``, one of ``failures`` or Ctrl-C ends it as an error."""
    try:
        run()
    except BenchError as exc:
        errors.append(str(exc))
    except failures as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        errors.append("interrupted")


def publish(summary: str, results: RunResults[Any], output: Path) -> None:
    """Print the summary, write the JSON results file and say where it is."""
    print()
    print(summary)
    results.write(output)
    print(f"\nresults: {output}")


def exit_code(results: RunResults[Any], require_goals: bool) -> int:
    """1 when the run failed; ``EXIT_GOALS_NOT_MET`` for a goal missed under ``require_goals``."""
    if not results.ok:
        return 1
    if require_goals and not results.goals()["all_met"]:
        return EXIT_GOALS_NOT_MET
    return 0
