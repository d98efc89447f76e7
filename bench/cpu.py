"""CPU accounting for a timed step: what the benchmark's own processes used, and what the
rest of the machine used at the same time (which makes a timing unreliable).

"Own" processes are the trees under this process (Replicator, pgbench, psql) and under the
two clusters' postmasters (every backend, walsender and logical replication worker). A process
that exited and was reaped is still counted: its time moves to its parent's ``cutime``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """Non-idle CPU time of the whole machine (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(value) for value in fields]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal


@dataclass(frozen=True)
class _Proc:
    ppid: int
    name: str
    ticks: int  # CPU of itself plus its reaped children


def _process_table() -> dict[int, _Proc]:
    """Every process now: parent, command name and CPU ticks."""
    table: dict[int, _Proc] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat_path.read_text().rsplit(")", 1)
            fields = tail.split()
        except (OSError, ValueError):
            continue
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        table[int(stat_path.parent.name)] = _Proc(
            ppid=int(fields[1]),
            name=head.split("(", 1)[-1],
            ticks=utime + stime + cutime + cstime,
        )
    return table


def _tree(table: dict[int, _Proc], roots: Iterable[int]) -> set[int]:
    """The pids of the process trees under ``roots``."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    seen: set[int] = set()
    pending = [root for root in roots if root in table]
    while pending:
        pid = pending.pop()
        if pid not in seen:
            seen.add(pid)
            pending.extend(children.get(pid, []))
    return seen


@dataclass(frozen=True)
class CpuSample:
    """A point in time: the machine's busy ticks and every process's ticks."""

    busy: int
    processes: dict[int, _Proc]


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds used between two samples, and the busiest other processes."""

    own_seconds: float
    foreign_seconds: float
    top_foreign: list[tuple[str, float]]


class CpuMeter:
    """Samples CPU use of the benchmark's process trees against the whole machine's."""

    def __init__(self, roots: Iterable[int]) -> None:
        """``roots``: pids whose process trees count as the benchmark's own."""
        self.roots = [os.getpid(), *roots]

    def sample(self) -> CpuSample:
        """Read the counters now."""
        return CpuSample(busy=_busy_ticks(), processes=_process_table())

    def since(self, start: CpuSample) -> CpuUsage:
        """CPU seconds used by our processes and by everything else since ``start``."""
        end = self.sample()
        own_pids = _tree(end.processes, self.roots) | _tree(start.processes, self.roots)
        own = 0
        foreign: dict[str, int] = {}
        for pid in end.processes.keys() | start.processes.keys():
            after = end.processes.get(pid)
            before = start.processes.get(pid)
            # A process that ended in between: its time went to its parent (cutime).
            delta = (after.ticks if after else 0) - (before.ticks if before and after else 0)
            if delta <= 0:
                continue
            if pid in own_pids:
                own += delta
            else:
                proc = after or before
                name = proc.name if proc is not None else "?"
                foreign[name] = foreign.get(name, 0) + delta
        busy = max(0, end.busy - start.busy)
        top = sorted(foreign.items(), key=lambda item: -item[1])[:3]
        return CpuUsage(
            own_seconds=own / _TICKS,
            foreign_seconds=max(0, busy - own) / _TICKS,
            top_foreign=[(name, ticks / _TICKS) for name, ticks in top],
        )
