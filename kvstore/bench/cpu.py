"""What the servers spend: CPU time of every member process from /proc, and pinning them.

The suite's first figure of a scenario is CPU per request: the `utime + stime` of all member
processes (every thread of each: /proc/<pid>/stat sums the thread group) taken before and after
the load, divided by the requests the load generator counted. It is the figure the rest of a
shared machine moves least, and what a pod costs.

`--pin` puts every thread of every member on the server cores and the suite (with the load
generators it starts, which inherit its affinity) on the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def stat_ticks(stat: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/<pid>/stat (or a task's stat).
    The command name (field 2) is in parentheses and may hold spaces or ')': the fields that
    follow start after the last ')'."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_ticks(pid: int, proc: Path = PROC) -> int | None:
    """The process's CPU time so far (all its threads, the live and the exited), in ticks;
    None if it is gone."""
    try:
        return stat_ticks((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class CpuSample:
    """Each member's CPU ticks at one moment, by member name."""

    ticks: Mapping[str, int]


def sample(pids: Mapping[str, int], proc: Path = PROC) -> CpuSample:
    out = {}
    for name, pid in pids.items():
        ticks = process_ticks(pid, proc)
        if ticks is not None:
            out[name] = ticks
    return CpuSample(out)


@dataclass(frozen=True)
class CpuUse:
    """The CPU members spent between two samples, in seconds, by member."""

    seconds: Mapping[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def per_request_us(self, requests: int) -> float | None:
        """Microseconds of server CPU (all members) per request; None without requests."""
        return self.total / requests * 1e6 if requests > 0 else None


def used(before: CpuSample, after: CpuSample, hz: int | None = None) -> CpuUse:
    """What each member spent from `before` to `after`. A member only in `after` started in
    between: all its time counts. A member only in `before` has gone: its time since `before`
    is not known and counts as nothing (the suite does not stop members during a load)."""
    hz = hz or ticks_per_second()
    seconds = {}
    for name, ticks in after.ticks.items():
        spent = ticks - before.ticks.get(name, 0)
        seconds[name] = max(spent, 0) / hz
    return CpuUse(seconds)


# --- pinning -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pinning:
    """Which cores the servers run on, and which the load generators (and the suite) do."""

    servers: frozenset[int]
    load: frozenset[int]

    def describe(self) -> str:
        return f"servers on core(s) {_cores(self.servers)}, load on core(s) {_cores(self.load)}"


def _cores(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def split_cores(available: Iterable[int]) -> Pinning:
    """The first available core for the servers, the rest for the load (ValueError with one
    core: there is nothing to split)."""
    cores = sorted(available)
    if len(cores) < 2:
        raise ValueError(f"--pin needs at least 2 cores, this process may use {len(cores)}")
    return Pinning(frozenset(cores[:1]), frozenset(cores[1:]))


def thread_ids(pid: int, proc: Path = PROC) -> list[int]:
    """The ids of the process's threads (the process's own id if its task list is unreadable)."""
    try:
        return sorted(int(p.name) for p in (proc / str(pid) / "task").iterdir())
    except OSError:
        return [pid]


def pin(pid: int, cpus: frozenset[int]) -> int:
    """Put every thread of the process on `cpus` (threads it starts later inherit the affinity
    of the thread that starts them); how many threads were pinned (0: the process is gone)."""
    pinned = 0
    for tid in thread_ids(pid):
        try:
            os.sched_setaffinity(tid, cpus)
            pinned += 1
        except (ProcessLookupError, PermissionError):
            continue
    return pinned


def affinity(pid: int) -> list[int]:
    """The cores any thread of the process may run on ([] if it is gone)."""
    cores: set[int] = set()
    for tid in thread_ids(pid):
        try:
            cores |= os.sched_getaffinity(tid)
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(cores)
