"""PID 1 duties: the only place the launcher waits for children.

Orphans (grandchildren whose parent died) are re-parented to PID 1, or to the launcher when
it is a child subreaper; reaping them all here keeps the process table clean. Each status
comes with the process's start time, read while it is still a zombie (waitid with WNOWAIT
leaves it one), so that a pid reused later is never mistaken for it (processes.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from launcher.supervisor.events import ExitStatus
from launcher.wire import start_time


def decode(status: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(signal=os.WTERMSIG(status))
    return ExitStatus(code=os.waitstatus_to_exitcode(status))


def reap_all() -> Iterator[tuple[int, int, ExitStatus]]:
    """(pid, start time, status) of every child that has ended since the last call, without blocking."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == 0:
            return
        start = start_time(info.si_pid)
        try:
            pid, status = os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if pid:
            yield pid, start, decode(status)
