"""The supervisor's decisions: a pure state machine fed with timestamped events.

No I/O, no clock and no randomness of its own: the shell passes `now` (monotonic
seconds) and a uniform random number with the events that need them, so every
transition is a plain function call in tests. `step()` returns the new state and
the actions for the shell to carry out; `next_wake()` says when to call it again.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable

from launcher.config import Config, Policy
from launcher.exitcodes import ExitCode


class Phase(str, Enum):
    WAITING_DB = "waiting_db"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"


# What the launcher tells clients while it answers for a missing child.
UNAVAILABLE_REASON = {
    Phase.WAITING_DB: "waiting for database",
    Phase.STARTING: "starting",
    Phase.BACKOFF: "restarting",
    Phase.STOPPING: "shutting down",
}

# A stop signal repeated sooner than this is the same request delivered twice (a
# terminal or `timeout` signals the process and its group), not a demand to kill.
ESCALATE_AFTER = 1.0

# A run of identical probe failures is logged once, then summarised this often (seconds).
SUMMARY_EVERY = 30.0


@dataclass(frozen=True)
class ExitStatus:
    code: int | None = None
    signal: int | None = None

    def __str__(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {self.signal} ({name})"
        return f"exit code {self.code}"

    @property
    def ok(self) -> bool:
        return self.code == 0


# Events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DbProbed:
    now: float
    ok: bool
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ProcExited:
    now: float
    proc: int
    status: ExitStatus
    rand: float = 0.5


@dataclass(frozen=True)
class ChildReady:
    now: float
    proc: int


@dataclass(frozen=True)
class LivenessChecked:
    now: float
    proc: int
    ok: bool
    reason: str = ""
    rand: float = 0.5


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class StopRequested:
    now: float
    why: str = "stop requested"


@dataclass(frozen=True)
class ReloadRequested:
    now: float


Event = DbProbed | ProcExited | ChildReady | LivenessChecked | Tick | StopRequested | ReloadRequested


# Actions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StartChild:
    """Spawn a parked child: it imports the app, then waits for Go before it serves."""

    proc: int


@dataclass(frozen=True)
class Go:
    """Release a parked child: it starts serving (uvicorn startup) at once."""

    proc: int


@dataclass(frozen=True)
class RunStep:
    proc: int
    index: int


@dataclass(frozen=True)
class StopProc:
    """SIGTERM to the process group: the server drains in-flight requests."""

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


Action = StartChild | Go | RunStep | StopProc | KillProc | Exit | Log


# State -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    id: int
    started: float
    deadline: float | None = None  # when to give up on it (ready timeout, step timeout)
    index: int = 0  # the prestart step it runs


@dataclass(frozen=True)
class State:
    started_at: float
    db_up: bool = False
    db_ever_up: bool = False
    db_failures: int = 0
    failure_reason: str = ""
    failure_repeats: int = 0
    failure_logged_at: float = 0.0
    step: Proc | None = None
    next_step: int = 0
    standby: Proc | None = None  # parked child, app imported, waiting for Go
    starting: Proc | None = None
    serving: Proc | None = None
    retiring: tuple[tuple[int, float | None], ...] = ()  # (proc, kill_at); None once killed
    replace_child: bool = False
    backoff_until: float = 0.0
    attempt: int = 0
    restarts: tuple[float, ...] = ()
    liveness_failures: int = 0
    exit_code: int | None = None
    stop_requested_at: float | None = None
    done: bool = False
    next_id: int = 1
    pending: tuple[Action, ...] = field(default=(), repr=False)  # actions of the step under way


def initial(now: float, parked: bool = False) -> State:
    """`parked`: the shell already spawned child 1, so its import overlaps the launcher's start."""
    return State(started_at=now, standby=Proc(1, now), next_id=2) if parked else State(started_at=now)


def phase(s: State, now: float) -> Phase:
    if s.exit_code is not None:
        return Phase.STOPPING
    if s.serving:
        return Phase.RUNNING
    if s.starting or s.step:
        return Phase.STARTING
    if now < s.backoff_until:
        return Phase.BACKOFF
    return Phase.WAITING_DB


def accepting(s: State) -> bool:
    """Whether the launcher itself should answer on the shared socket (no child will)."""
    return s.serving is None and s.starting is None and not s.done


def backoff_delay(cfg: Config, attempt: int, rand: float) -> float:
    """Exponential, capped, with +-jitter so a fleet does not restart in lockstep."""
    r = cfg.restart
    base = min(r.backoff_max, r.backoff_initial * 2**attempt)
    return base * (1 + r.jitter * (2 * rand - 1))


def next_wake(cfg: Config, s: State) -> float | None:
    times = [kill_at for _, kill_at in s.retiring if kill_at is not None]
    times += [p.deadline for p in (s.step, s.starting) if p and p.deadline is not None]
    if s.backoff_until:
        times.append(s.backoff_until)
    if not s.db_ever_up and cfg.probe.startup_timeout and s.exit_code is None:
        times.append(s.started_at + cfg.probe.startup_timeout)
    return min(times) if times else None


def step(cfg: Config, s: State, event: Event) -> tuple[State, list[Action]]:
    if s.done:
        return s, []
    s = replace(s, pending=())
    s = _HANDLERS[type(event)](cfg, s, event)
    s = _expire(cfg, s, event.now)
    s = _advance(cfg, s, event.now)
    return replace(s, pending=()), list(s.pending)


# Helpers -----------------------------------------------------------------------------

def _emit(s: State, *actions: Action) -> State:
    return replace(s, pending=s.pending + actions)


def _say(s: State, level: str, message: str) -> State:
    return _emit(s, Log(level, message))


def _retire(cfg: Config, s: State, proc: Proc | None, now: float, kill: bool = False) -> State:
    """Hand a process over to be stopped: SIGTERM and a deadline, or SIGKILL at once."""
    if proc is None:
        return s
    if kill:
        return _emit(replace(s, retiring=s.retiring + ((proc.id, None),)), KillProc(proc.id))
    entry = (proc.id, now + cfg.server.stop_grace)
    return _emit(replace(s, retiring=s.retiring + (entry,)), StopProc(proc.id))


def _begin_exit(cfg: Config, s: State, code: int, now: float) -> State:
    for proc in (s.serving, s.starting, s.step, s.standby):
        s = _retire(cfg, s, proc, now)
    return replace(s, exit_code=code, serving=None, starting=None, step=None, standby=None, backoff_until=0.0)


def _crashed(cfg: Config, s: State, now: float, rand: float) -> State:
    """Count an unplanned end of the child; back off, or give up past the budget."""
    window = cfg.restart.window
    restarts = tuple(t for t in s.restarts if now - t < window) + (now,)
    s = replace(s, restarts=restarts, liveness_failures=0)
    if len(restarts) > cfg.restart.max_restarts:
        s = _say(s, "error", f"child ended {len(restarts)} times within {window:g}s "
                             f"(budget {cfg.restart.max_restarts}); giving up with exit 70")
        return _begin_exit(cfg, s, ExitCode.CRASH_LOOP, now)
    delay = backoff_delay(cfg, s.attempt, rand)
    s = _say(s, "info", f"restarting the child in {delay:.2f}s (attempt {s.attempt + 1})")
    return replace(s, backoff_until=now + delay, attempt=s.attempt + 1)


# Handlers ----------------------------------------------------------------------------

def _on_db_probed(cfg: Config, s: State, e: DbProbed) -> State:
    if e.ok:
        if not s.db_up:
            after = f" after {s.db_failures} failed probes" if s.db_failures else ""
            s = _say(s, "info", f"database is up{after}")
        return replace(s, db_up=True, db_ever_up=True, db_failures=0, failure_reason="", failure_repeats=0)
    repeats = s.failure_repeats + 1 if e.reason == s.failure_reason else 1
    s = replace(s, db_failures=s.db_failures + 1, failure_reason=e.reason, failure_repeats=repeats)
    if repeats == 1:
        s = replace(_say(s, "warning", f"database probe failed: {e.reason}: {e.detail}"), failure_logged_at=e.now)
    elif e.now - s.failure_logged_at >= SUMMARY_EVERY:
        s = _say(s, "warning", f"database still failing: {e.reason} ({repeats} probes in a row)")
        s = replace(s, failure_logged_at=e.now)
    if s.db_up and s.db_failures >= cfg.probe.failures_before_down:
        return _db_lost(cfg, s, e.now)
    return s


def _db_lost(cfg: Config, s: State, now: float) -> State:
    s = replace(s, db_up=False, next_step=0 if cfg.prestart.after_db_loss else s.next_step)
    s = _say(s, "warning", f"database lost after {s.db_failures} failed probes; on_db_loss={cfg.on_db_loss.value}")
    return _ON_DB_LOSS[cfg.on_db_loss](cfg, s, now)


def _loss_restart(cfg: Config, s: State, now: float) -> State:
    s = _retire(cfg, _retire(cfg, s, s.serving, now), s.starting, now)
    return replace(s, serving=None, starting=None)


def _loss_swap(cfg: Config, s: State, now: float) -> State:
    return replace(s, replace_child=s.serving is not None)


def _loss_keep(cfg: Config, s: State, now: float) -> State:
    return s


def _loss_exit(cfg: Config, s: State, now: float) -> State:
    return _begin_exit(cfg, _say(s, "error", "exiting with 69 so the orchestrator decides"), ExitCode.DB_UNAVAILABLE, now)


_ON_DB_LOSS: dict[Policy, Callable[[Config, State, float], State]] = {
    Policy.RESTART: _loss_restart,
    Policy.SWAP: _loss_swap,
    Policy.KEEP: _loss_keep,
    Policy.EXIT: _loss_exit,
}


def _on_proc_exited(cfg: Config, s: State, e: ProcExited) -> State:
    retiring = tuple(r for r in s.retiring if r[0] != e.proc)
    if retiring != s.retiring:
        return _say(replace(s, retiring=retiring), "info", f"child {e.proc} stopped ({e.status})")
    if s.step and s.step.id == e.proc:
        return _step_ended(cfg, s, e)
    for field_name in ("starting", "standby"):
        proc = getattr(s, field_name)
        if proc and proc.id == e.proc:
            s = _say(replace(s, **{field_name: None}), "error", f"child {e.proc} exited before it was ready ({e.status})")
            return _crashed(cfg, s, e.now, e.rand)
    if s.serving and s.serving.id == e.proc:
        uptime = e.now - s.serving.started
        attempt = 0 if uptime >= cfg.restart.reset_after else s.attempt
        s = replace(s, serving=None, attempt=attempt)
        s = _say(s, "warning", f"child {e.proc} exited ({e.status}) after {uptime:.1f}s")
        return _crashed(cfg, s, e.now, e.rand)
    return s


def _step_ended(cfg: Config, s: State, e: ProcExited) -> State:
    assert s.step is not None
    name = cfg.prestart.steps[s.step.index].name
    took = e.now - s.step.started
    if e.status.ok:
        s = _say(s, "info", f"prestart step {name!r} done in {took:.2f}s")
        return replace(s, step=None, next_step=s.step.index + 1)
    delay = backoff_delay(cfg, s.attempt, e.rand)
    why = "timed out" if s.step.deadline is None else str(e.status)
    s = _say(s, "error", f"prestart step {name!r} failed ({why}) after {took:.2f}s; retrying in {delay:.2f}s")
    return replace(s, step=None, next_step=0, backoff_until=e.now + delay, attempt=s.attempt + 1)


def _on_child_ready(cfg: Config, s: State, e: ChildReady) -> State:
    if not (s.starting and s.starting.id == e.proc):
        return s
    old = s.serving
    took = e.now - s.starting.started
    s = _say(s, "info", f"child {e.proc} ready in {took:.2f}s")
    serving = replace(s.starting, started=e.now, deadline=None)
    s = replace(s, serving=serving, starting=None, replace_child=False, liveness_failures=0)
    return _retire(cfg, s, old, e.now)


def _on_liveness(cfg: Config, s: State, e: LivenessChecked) -> State:
    if not (s.serving and s.serving.id == e.proc):
        return s
    if e.ok:
        return replace(s, liveness_failures=0)
    failures = s.liveness_failures + 1
    s = _say(replace(s, liveness_failures=failures), "warning", f"child {e.proc} liveness check failed: {e.reason}")
    if failures < cfg.liveness.failures:
        return s
    s = _say(s, "error", f"child {e.proc} failed {failures} liveness checks; killing it")
    s = replace(_retire(cfg, s, s.serving, e.now, kill=True), serving=None)
    return _crashed(cfg, s, e.now, e.rand)


def _on_tick(cfg: Config, s: State, e: Tick) -> State:
    return s


def _on_stop(cfg: Config, s: State, e: StopRequested) -> State:
    if s.stop_requested_at is None:
        s = replace(s, stop_requested_at=e.now)
        if s.exit_code is None:
            return _begin_exit(cfg, _say(s, "info", f"{e.why}: stopping"), ExitCode.OK, e.now)
        return _say(s, "info", f"{e.why}: already stopping")
    if e.now - s.stop_requested_at < ESCALATE_AFTER:
        return s
    s = _say(s, "warning", f"{e.why} again: killing what is left")
    for proc, kill_at in s.retiring:
        if kill_at is not None:
            s = _emit(s, KillProc(proc))
    return replace(s, retiring=tuple((proc, None) for proc, _ in s.retiring))


def _on_reload(cfg: Config, s: State, e: ReloadRequested) -> State:
    if s.exit_code is not None or s.serving is None:
        return _say(s, "info", "reload requested, but no child is serving: nothing to reload")
    return _say(replace(s, replace_child=True), "info", "reload requested: starting a new child beside the current one")


_HANDLERS: dict[type, Callable[[Config, State, Event], State]] = {
    DbProbed: _on_db_probed,
    ProcExited: _on_proc_exited,
    ChildReady: _on_child_ready,
    LivenessChecked: _on_liveness,
    Tick: _on_tick,
    StopRequested: _on_stop,
    ReloadRequested: _on_reload,
}


# Time-driven transitions, checked after every event -----------------------------------

def _expire(cfg: Config, s: State, now: float) -> State:
    for proc, kill_at in s.retiring:
        if kill_at is not None and now >= kill_at:
            s = _say(s, "warning", f"child {proc} still running {cfg.server.stop_grace:g}s after SIGTERM; killing it")
            s = _emit(s, KillProc(proc))
            s = replace(s, retiring=tuple((p, None if p == proc else k) for p, k in s.retiring))
    if s.step and s.step.deadline is not None and now >= s.step.deadline:
        s = _say(s, "error", f"prestart step {cfg.prestart.steps[s.step.index].name!r} timed out; killing it")
        s = _emit(replace(s, step=replace(s.step, deadline=None)), KillProc(s.step.id))
    if s.starting and s.starting.deadline is not None and now >= s.starting.deadline:
        s = _say(s, "error", f"child {s.starting.id} not ready after {cfg.server.ready_timeout:g}s; killing it")
        s = replace(_retire(cfg, s, s.starting, now, kill=True), starting=None)
        s = _crashed(cfg, s, now, 0.5)
    if s.backoff_until and now >= s.backoff_until:
        s = replace(s, backoff_until=0.0)
    deadline = cfg.probe.startup_timeout
    if not s.db_ever_up and deadline and now - s.started_at >= deadline and s.exit_code is None:
        s = _say(s, "error", f"database did not answer within startup_timeout={deadline:g}s; giving up with exit 69")
        s = _begin_exit(cfg, s, ExitCode.DB_UNAVAILABLE, now)
    return s


def _advance(cfg: Config, s: State, now: float) -> State:
    """Start whatever should run next, given what runs now."""
    if s.exit_code is not None:
        if s.retiring:
            return s
        return _emit(replace(s, done=True), Exit(s.exit_code))
    return _keep_standby(cfg, _start_next(cfg, s, now), now)


def _start_next(cfg: Config, s: State, now: float) -> State:
    blocked = s.step or s.starting or s.backoff_until or not s.db_up
    if blocked or (s.serving and not s.replace_child):
        return s
    steps = cfg.prestart.steps
    if s.next_step < len(steps):
        step_proc = Proc(s.next_id, now, now + steps[s.next_step].timeout, s.next_step)
        return _emit(replace(s, step=step_proc, next_id=s.next_id + 1), RunStep(step_proc.id, step_proc.index))
    if s.standby is None:
        s = _spawn_standby(s, now)
    assert s.standby is not None
    child = replace(s.standby, started=now, deadline=now + cfg.server.ready_timeout)
    return _emit(replace(s, starting=child, standby=None), Go(child.id))


def _keep_standby(cfg: Config, s: State, now: float) -> State:
    """Park a child whenever one will be needed: it imports the app while the DB is still
    down or a migration runs, so that serving starts at once when the time comes."""
    needed = s.serving is None or s.replace_child
    if s.standby or s.starting or s.backoff_until or not needed:
        return s
    return _spawn_standby(s, now)


def _spawn_standby(s: State, now: float) -> State:
    return _emit(replace(s, standby=Proc(s.next_id, now), next_id=s.next_id + 1), StartChild(s.next_id))
