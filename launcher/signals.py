"""Holding signals until the launcher's handlers exist.

Imported first by `python -m launcher`, before anything heavy: until the event loop's
handlers are installed (~0.4 s of imports), a SIGTERM would be discarded (PID 1 has no
default actions) or would kill the launcher and orphan its template. A blocked signal stays
pending and is handled once released. Every asynchronous signal is held, so this needs no
list of the ones the launcher handles (launcher/supervisor/signal_meanings.py has that).
"""

import signal

# Raised by the program's own fault, or never deliverable to a handler: not held.
_SYNCHRONOUS = {"SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT"}
HELD = frozenset(s for s in signal.valid_signals() if isinstance(s, signal.Signals) and s.name not in _SYNCHRONOUS)


def hold() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)


def release() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
