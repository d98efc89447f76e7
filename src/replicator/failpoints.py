"""Named failpoints: places in the engine where a fault test can make something go wrong
exactly there, and then prove that it did.

They are off unless ``replicator run`` starts with ``REPLICATOR_FAILPOINTS`` set (or a test
calls :func:`configure`), and cost one truth test each when off. The variable lists
``name=action`` pairs separated by ``;``::

    REPLICATOR_FAILPOINTS="pipeline.after_commit=kill@3;sink.before_commit=raise"

Actions: ``kill`` (SIGKILL the process: a crash with nothing flushed), ``raise`` (a transient
error, as a lost connection would raise), ``sleep:SECONDS`` (a stall). ``@N`` fires on the
N-th pass only (default: the first); ``@N+`` on the N-th and every later one.

When ``REPLICATOR_FAILPOINTS_LOG`` names a file, each firing appends ``name action pass``
to it and syncs it *before* acting, so a test can assert that its fault landed where it claims
even when the action is a kill.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

from replicator.errors import ConfigError, ReplicatorError

ENV = "REPLICATOR_FAILPOINTS"
LOG_ENV = "REPLICATOR_FAILPOINTS_LOG"

# Every failpoint the engine has, so a typo in a test's spec fails loudly.
POINTS = frozenset(
    {
        "pipeline.before_apply",  # a batch is read, nothing of it sent to the target yet
        "sink.before_commit",  # data and checkpoint written in the target, COMMIT not sent
        "pipeline.after_commit",  # committed with its checkpoint, the source not acknowledged
        "pipeline.after_acknowledge",  # the source acknowledged
        "checkpoint.before_rename",  # file store: new state written and synced, not renamed
    }
)


class FailpointError(ReplicatorError):
    """Raised by a failpoint set to ``raise``; transient, as a lost connection is."""

    transient = True


@dataclass
class _Point:
    action: str
    argument: float
    on_pass: int
    and_later: bool
    passes: int = 0


_points: dict[str, _Point] = {}
_lock = threading.Lock()


def configure(spec: str | None) -> None:
    """Arm the failpoints ``spec`` names (the ``REPLICATOR_FAILPOINTS`` syntax); None clears.

    A spec that does not parse raises ConfigError: a fault test must not pass because its
    fault was never armed."""
    points: dict[str, _Point] = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(";"))):
        name, _, rest = item.partition("=")
        name = name.strip()
        if name not in POINTS:
            raise ConfigError(
                f"{ENV}: unknown failpoint {name!r}", fix=f"use one of {', '.join(sorted(POINTS))}"
            )
        action, _, when = rest.strip().partition("@")
        verb, _, argument = action.partition(":")
        if verb not in ("kill", "raise", "sleep") or (verb == "sleep") != bool(argument):
            raise ConfigError(f"{ENV}: failpoint {name}: the action must be kill, raise or sleep:S")
        and_later = when.endswith("+")
        try:
            on_pass = int(when.rstrip("+") or 1)
            seconds = float(argument or 0)
        except ValueError:
            raise ConfigError(f"{ENV}: failpoint {name}: bad number in {rest!r}") from None
        points[name] = _Point(verb, seconds, on_pass, and_later)
    global _points
    _points = points


def fail(name: str) -> None:
    """Act on the failpoint ``name`` if a test armed it."""
    if not _points:
        return
    point = _points.get(name)
    if point is None:
        return
    with _lock:
        point.passes += 1
        passes = point.passes
    if passes < point.on_pass or (passes > point.on_pass and not point.and_later):
        return
    _record(name, point.action, passes)
    if point.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif point.action == "sleep":
        time.sleep(point.argument)
    else:
        raise FailpointError(f"failpoint {name} fired (pass {passes})")


def _record(name: str, action: str, passes: int) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{name} {action} {passes}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
