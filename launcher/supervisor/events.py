"""The machine's vocabulary: events in (facts the shell observed, each with the time it saw
them), actions out (what the shell must do). Plain frozen dataclasses: the machine is a
function of them, and the tests build them by hand.

Process ids (`proc`) are the machine's own numbers, given in the start actions; the shell
maps them to OS pids (processes.py), which the machine never sees.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from launcher.config import Config, PrestartStep


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit code, a signal, or `lost` when no status could be had
    (its template died before it forked it, or it ended before anyone learnt its pid)."""

    code: int = 0
    signal: int = 0
    lost: bool = False

    def __str__(self) -> str:
        if self.lost:
            return "ended before it reported its pid"
        if self.signal:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {self.signal} ({name})"
        return f"exit code {self.code}"

    @property
    def ok(self) -> bool:
        return not self.lost and not self.signal and self.code == 0


LOST = ExitStatus(lost=True)
SUMMARY_LIMIT = 300


def summary(error: str) -> str:
    """One log line from what a process reported: a traceback's exception and the innermost
    place it names, else the first lines joined. The whole text stays for reload mode's 503."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    places = [line for line in lines if line.startswith('File "')]
    if lines[0].startswith("Traceback") and len(lines) > 1:
        place = f" ({places[-1].split(',')[0][5:]}, {places[-1].split(',')[1].strip()})" if places else ""
        text = lines[-1] + place
    else:
        text = "; ".join(lines[:3])
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3] + "..."


# Probe failures that mean the server is gone or unreachable: only these drive on_db_loss.
# The others (access_denied, too_many_connections, tls, ...) come from a server that answers.
GONE = frozenset({"refused", "timeout", "lost", "dns", "network"})


# Events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DbProbed:
    now: float
    ok: bool
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Forked:
    """A forked worker said its pid: its template did fork it."""

    now: float
    proc: int


@dataclass(frozen=True)
class ProcExited:
    """`error`: the first lines of what the process reported before it died (a template's
    import error, a worker's startup failure)."""

    now: float
    proc: int
    status: ExitStatus
    rand: float = 0.5
    error: str = ""


@dataclass(frozen=True)
class SpawnFailed:
    """The shell could not start the process at all (EMFILE, EAGAIN at pids.max, ...)."""

    now: float
    proc: int
    detail: str
    rand: float = 0.5


@dataclass(frozen=True)
class TemplateReady:
    """The template imported the app. `warm`: it can fork workers; otherwise (threads at fork
    time) workers start cold, and `detail` says why. `digest`: of the app's source it loaded."""

    now: float
    proc: int
    warm: bool = True
    detail: str = ""
    digest: str = ""


@dataclass(frozen=True)
class WorkerReady:
    now: float
    proc: int


@dataclass(frozen=True)
class LivenessChecked:
    """`app`: the optional app-level check (liveness.app_path), not the event loop's answer."""

    now: float
    proc: int
    ok: bool
    reason: str = ""
    rand: float = 0.5
    app: bool = False


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class StopRequested:
    """`fast`: kill now (SIGQUIT), instead of draining in-flight requests first."""

    now: float
    why: str = "stop requested"
    fast: bool = False


@dataclass(frozen=True)
class ReloadRequested:
    """New code and configuration. `config`: as read again (None keeps the current one);
    `error`: why it could not be read. `only_if_changed`: skip it when neither the code nor
    the config differ from what serves (a request queued behind another)."""

    now: float
    why: str = "SIGHUP"
    config: Config | None = None
    error: str = ""
    only_if_changed: bool = False


@dataclass(frozen=True)
class Resize:
    """SIGTTIN (+1) or SIGTTOU (-1): one worker more or fewer, never fewer than one."""

    now: float
    delta: int


@dataclass(frozen=True)
class StatusRequested:
    """SIGUSR1: say in one log line what runs and why."""

    now: float


@dataclass(frozen=True)
class SignalIgnored:
    """A signal a user may send by habit that means nothing here (SIGWINCH from a terminal)."""

    now: float
    name: str
    why: str


Event = (
    DbProbed
    | Forked
    | ProcExited
    | SpawnFailed
    | TemplateReady
    | WorkerReady
    | LivenessChecked
    | Tick
    | StopRequested
    | ReloadRequested
    | Resize
    | StatusRequested
    | SignalIgnored
)


# Actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StartTemplate:
    """Spawn a template: it imports the app from the code on disk, then forks on request."""

    proc: int
    config: Config


@dataclass(frozen=True)
class StartWorker:
    """Fork a worker from `template`, or spawn it cold when `template` is None."""

    proc: int
    template: int | None
    config: Config


@dataclass(frozen=True)
class RunStep:
    """Run a prestart step: forked from `template` (a `python -m` step), or spawned."""

    proc: int
    step: PrestartStep
    template: int | None
    config: Config


@dataclass(frozen=True)
class StopProc:
    """SIGTERM to the process group: a worker drains its in-flight requests."""

    proc: int


@dataclass(frozen=True)
class KillProc:
    proc: int


@dataclass(frozen=True)
class Exit:
    code: int


@dataclass(frozen=True)
class Log:
    level: str
    message: str


@dataclass(frozen=True)
class Warm:
    """Ask each worker for the app's `path`, so that its DB pool reconnects before a
    client's request has to: the workers kept serving while the DB was away."""

    procs: tuple[int, ...]
    path: str


Action = StartTemplate | StartWorker | RunStep | StopProc | KillProc | Exit | Log | Warm
