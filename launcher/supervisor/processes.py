"""The shell's table of the processes the machine started: the machine's ids, their OS pids,
what each has said on its channel, and the two races between a forked process and its pid.

A forked worker's pid is not known when the machine starts it: the worker reports it itself,
over its channel. Meanwhile it may die (the reaper then holds a status nobody claims yet),
and the machine may ask to stop it (the signal waits for the pid). Both are kept here, and
nothing is matched on a pid alone: a pid is reused, so every status carries the process's
start time, and a claim matches only the same pid with the same start (or, where a start
could not be read, a status reaped after the process was asked for). Unclaimed statuses are
bounded in number and in age: an orphan's status is never claimed, and must not linger.

No I/O: the shell signals, reads and closes; this says what to do.
"""

from __future__ import annotations

import signal
import socket
from collections import OrderedDict
from dataclasses import dataclass, field

from launcher.supervisor.events import ExitStatus

UNCLAIMED_LIMIT = 64
UNCLAIMED_AGE = 60.0  # seconds: a forked process reports its pid within milliseconds


@dataclass
class Entry:
    proc: int
    asked_at: float  # when the shell started or asked for it
    role: str = "process"  # template, worker or step: for the log
    parent: int | None = None  # the template that forks it
    pid: int | None = None
    start: int = 0  # /proc/<pid>/stat's starttime; 0 when unknown
    channel: socket.socket | None = None  # its end of the process's private channel
    pending: signal.Signals | None = None  # asked for before the pid was known
    error: str = ""  # the last `failed` text it sent
    pings: dict[int, float] = field(default_factory=dict)  # outstanding pings and checks: n -> deadline


@dataclass(frozen=True)
class Unclaimed:
    status: ExitStatus
    start: int
    reaped_at: float


@dataclass(frozen=True)
class Claim:
    """What a pid report means: it already ended (`status`), or a signal waits for it."""

    status: ExitStatus | None = None
    signal: signal.Signals | None = None


class ProcessTable:
    def __init__(self, limit: int = UNCLAIMED_LIMIT, max_age: float = UNCLAIMED_AGE) -> None:
        self.entries: dict[int, Entry] = {}
        self.by_pid: dict[int, int] = {}
        self.unclaimed: OrderedDict[int, Unclaimed] = OrderedDict()
        self.limit = limit
        self.max_age = max_age

    def __contains__(self, proc: int) -> bool:
        return proc in self.entries

    def get(self, proc: int) -> Entry | None:
        return self.entries.get(proc)

    def add(
        self,
        proc: int,
        now: float,
        pid: int | None = None,
        start: int = 0,
        channel: socket.socket | None = None,
        role: str = "process",
        parent: int | None = None,
    ) -> Entry:
        entry = Entry(proc, now, role, parent, channel=channel)
        self.entries[proc] = entry
        if pid is not None:
            self._set_pid(entry, pid, start)
        return entry

    def claim(self, proc: int, pid: int, start: int) -> Claim | None:
        """A process said its pid; None when the table no longer knows it (its channel, the
        only way a pid arrives, is closed once it is forgotten)."""
        entry = self.entries.get(proc)
        if entry is None:
            return None
        if entry.pid is not None:
            return Claim()  # said twice: the first one counts
        self._set_pid(entry, pid, start)
        ended = self.unclaimed.get(pid)
        if ended is not None and self._same(entry, ended):
            del self.unclaimed[pid]
            return Claim(status=ended.status)
        pending, entry.pending = entry.pending, None
        return Claim(signal=pending)

    def reaped(self, pid: int, start: int, status: ExitStatus, now: float) -> int | None:
        """The machine's id of a reaped pid, or None: an orphan, or a forked process whose pid
        is not known yet (its status is kept for a claim)."""
        proc = self.by_pid.get(pid)
        if proc is not None and self._same_start(self.entries[proc].start, start):
            del self.by_pid[pid]
            return proc
        self.unclaimed[pid] = Unclaimed(status, start, now)
        self.unclaimed.move_to_end(pid)
        self.expire(now)
        return None

    def expire(self, now: float) -> None:
        while self.unclaimed and (
            len(self.unclaimed) > self.limit or now - next(iter(self.unclaimed.values())).reaped_at > self.max_age
        ):
            self.unclaimed.popitem(last=False)

    def signal(self, proc: int, sig: signal.Signals) -> int | None:
        """The pid to signal now, or None: not born yet (the signal waits, the strongest one
        kept), or unknown."""
        entry = self.entries.get(proc)
        if entry is None:
            return None
        if entry.pid is None:
            if entry.pending is None or sig == signal.SIGKILL:
                entry.pending = sig
            return None
        return entry.pid

    def forget(self, proc: int) -> Entry | None:
        entry = self.entries.pop(proc, None)
        if entry is not None and entry.pid is not None and self.by_pid.get(entry.pid) == proc:
            del self.by_pid[entry.pid]
        return entry

    def running(self) -> list[Entry]:
        return list(self.entries.values())

    def _set_pid(self, entry: Entry, pid: int, start: int) -> None:
        entry.pid, entry.start = pid, start
        self.by_pid[pid] = entry.proc

    def _same(self, entry: Entry, ended: Unclaimed) -> bool:
        if entry.start and ended.start:
            return entry.start == ended.start
        return ended.reaped_at >= entry.asked_at

    @staticmethod
    def _same_start(known: int, reaped: int) -> bool:
        return not known or not reaped or known == reaped
