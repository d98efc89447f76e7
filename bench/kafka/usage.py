"""CPU seconds per process of a run: each server, each consumer and the harness itself.

``bench.cpu.CpuMeter`` tells the benchmark's own processes from the rest of the machine; this
splits the own part by role (source PostgreSQL, target PostgreSQL, Kafka broker, watcher,
syncer, Kafka Connect, the harness), which is what says where the two cores went.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Proc:
    ppid: int
    own: int  # user + system ticks of the process itself (all its threads)
    reaped: int  # ticks of its children that ended and were waited for


ProcessTable = dict[int, _Proc]


def process_table() -> ProcessTable:
    """Every process now, with its parent and CPU ticks."""
    table: ProcessTable = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        table[int(stat_path.parent.name)] = _Proc(int(fields[1]), utime + stime, cutime + cstime)
    return table


def _tree(table: ProcessTable, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found: set[int] = set()
    pending = [root] if root in table else []
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, []))
    return found


def _ticks(table: ProcessTable, pids: set[int], with_reaped: bool) -> int:
    return sum(table[pid].own + (table[pid].reaped if with_reaped else 0) for pid in pids)


@dataclass(frozen=True)
class Role:
    """A process to account for: ``tree`` counts its descendants too (a postmaster's
    backends), otherwise only the process itself (the harness, whose children have roles of
    their own)."""

    pid: int
    tree: bool = True


def cpu_by_role(
    before: ProcessTable, after: ProcessTable, roles: Mapping[str, Role]
) -> dict[str, float]:
    """CPU seconds each role used between two process tables.

    A process that started in between counts from zero; one that ended in between (and was
    waited for) moved its time into its parent's reaped ticks, which a tree role counts.
    """
    used: dict[str, float] = {}
    for name, role in roles.items():
        pids = _tree(after, role.pid) if role.tree else ({role.pid} & after.keys())
        if not pids:
            continue
        end = _ticks(after, pids, role.tree)
        start = _ticks(before, pids & before.keys(), role.tree)
        used[name] = round(max(0, end - start) / _TICKS, 2)
    return used


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds a process used so far (all threads and its reaped children), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(value) for value in fields[11:15]) / _TICKS
