"""What each signal means to the launcher: one entry each, turned into the machine's event.

gunicorn's table where it fits; where it does not, the signal is harmless and the log says
what it did. No signal a user sends by habit kills a serving worker: none is forwarded.
Adding a signal is one entry here and, if it needs a new event, one handler in machine.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from launcher.supervisor.events import (
    Event,
    ReloadRequested,
    Resize,
    SignalIgnored,
    StatusRequested,
    StopRequested,
)


@dataclass(frozen=True)
class Meaning:
    summary: str  # what the README's signal table says
    event: Callable[[float, signal.Signals], Event]


def _stop(now: float, sig: signal.Signals) -> Event:
    return StopRequested(now, f"got {sig.name}")


def _reload(now: float, sig: signal.Signals) -> Event:
    return ReloadRequested(now, sig.name)


MEANINGS: dict[signal.Signals, Meaning] = {
    signal.SIGTERM: Meaning("stop: drain in-flight requests, stop the workers, exit 0", _stop),
    signal.SIGINT: Meaning("stop, as SIGTERM (Ctrl-C)", _stop),
    signal.SIGQUIT: Meaning(
        "fast stop: kill the workers at once, exit 0", lambda now, sig: StopRequested(now, f"got {sig.name}", fast=True)
    ),
    signal.SIGHUP: Meaning(
        "reload: read the config and secrets again, load the code on disk, run the prestart "
        "steps, swap the workers; the serving set stays if anything fails",
        _reload,
    ),
    signal.SIGUSR2: Meaning("reload, as SIGHUP (gunicorn's binary upgrade, which has no other meaning here)", _reload),
    signal.SIGUSR1: Meaning(
        "log one status line (gunicorn reopens its log files; the launcher writes to stderr and has none)",
        lambda now, sig: StatusRequested(now),
    ),
    signal.SIGTTIN: Meaning("one worker more, up to server.max_workers", lambda now, sig: Resize(now, +1)),
    signal.SIGTTOU: Meaning("one worker fewer, never fewer than one", lambda now, sig: Resize(now, -1)),
    signal.SIGWINCH: Meaning(
        "ignored and logged (a terminal sends it when resized; gunicorn's meaning, stop "
        "the workers, would take the service down)",
        lambda now, sig: SignalIgnored(now, sig.name, "a terminal was resized"),
    ),
}
