"""Which signals the launcher handles, and holding them until its handlers exist.

Imported first by `python -m launcher`, before anything heavy: until the event loop's
handlers are installed (~0.4 s of imports), a SIGTERM would be discarded (PID 1 has no
default actions) or would kill the launcher and orphan its template. A blocked signal
stays pending and is handled once released.
"""
import signal

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD = (signal.SIGHUP,)
FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
RESIZE = {signal.SIGTTIN: +1, signal.SIGTTOU: -1}  # one worker more or fewer (gunicorn's convention)
HANDLED = frozenset((*STOP, *RELOAD, *FORWARDED, *RESIZE, signal.SIGCHLD))


def hold() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def release() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
