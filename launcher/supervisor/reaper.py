"""PID 1 duties: the only waitpid(-1) of the program, and signal plumbing.

Orphans (grandchildren whose parent died) are re-parented to PID 1, or to us when we
are a child subreaper; reaping them all here keeps the process table clean. Statuses
of processes we started go back to the caller; the rest are reaped silently.
"""
from __future__ import annotations

import os
import signal
from functools import partial
from typing import Callable, Iterator

from launcher import signals
from launcher.supervisor.machine import ExitStatus


def decode(status: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(signal=os.WTERMSIG(status))
    return ExitStatus(code=os.waitstatus_to_exitcode(status))


def reap_all() -> Iterator[tuple[int, ExitStatus]]:
    """Every child that has ended since the last call, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, decode(status)


def install(loop_add: Callable[[int, Callable[[], None]], None],
            on_stop: Callable[[signal.Signals], None],
            on_reload: Callable[[], None],
            on_forward: Callable[[signal.Signals], None],
            on_resize: Callable[[int], None],
            on_child: Callable[[], None]) -> None:
    """Route each signal to its handler; handlers run in the loop, never in signal context."""
    for sig in signals.STOP:
        loop_add(sig, partial(on_stop, sig))
    for sig in signals.RELOAD:
        loop_add(sig, on_reload)
    for sig in signals.FORWARDED:
        loop_add(sig, partial(on_forward, sig))
    for sig, delta in signals.RESIZE.items():
        loop_add(sig, partial(on_resize, delta))
    loop_add(signal.SIGCHLD, on_child)
