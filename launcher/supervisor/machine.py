"""The supervisor's decisions: a pure state machine over a pool of workers and their template.

No I/O, no clock and no randomness of its own: the shell passes `now` (monotonic seconds)
and a uniform random number with the events that need them, so every transition is a plain
function call in tests. `step()` returns the new state and the actions for the shell to
carry out; `next_wake()` says when to call it again.

Two halves, the shape of gunicorn's `manage_workers`: the handlers only record what
happened (a probe answered, a process exited, a worker is ready); one reconciler,
`_reconcile`, then compares what runs with what should run and emits the actions that
close the gap. So every rule about what to start lives in one place.

    template:  building --TemplateReady--> ready (forks workers)      dies -> rebuilt
    worker:    starting --WorkerReady--> serving --exit / liveness--> replaced alone
    generation: swap and reload start a complete new set; the old set is retired only
                once every new worker serves
    prestart steps run after the DB answers, before the first worker starts
    stop:      everything is retired (SIGTERM, then SIGKILL after stop_grace) -> Exit

State is grouped by concern (DB view, prestart, template, workers, restart budget, stopping);
"none" is always None for a single thing and () for a collection.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Callable

from launcher.config import Config, Policy
from launcher.exitcodes import ExitCode


class Phase(str, Enum):
    WAITING_DB = "waiting_db"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"


# What the launcher tells clients while it answers for missing workers.
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

# Under swap, the fresh set starts once the DB has answered this many probes in a row: the
# serving workers recover by themselves meanwhile, a flapping DB does not churn the pool, and
# the forks do not compete for the CPU with the first requests after the DB's return.
REFRESH_AFTER_ANSWERS = 2


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
class TemplateReady:
    """The template imported the app. `warm`: it can fork workers; otherwise (threads at
    fork time) workers start cold, and `detail` says why."""

    now: float
    proc: int
    warm: bool = True
    detail: str = ""


@dataclass(frozen=True)
class WorkerReady:
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


@dataclass(frozen=True)
class Resize:
    """SIGTTIN (+1) or SIGTTOU (-1): one worker more or fewer, never fewer than one."""

    now: float
    delta: int


Event = (DbProbed | ProcExited | TemplateReady | WorkerReady | LivenessChecked | Tick | StopRequested
         | ReloadRequested | Resize)


# Actions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StartTemplate:
    """Spawn a template: it imports the app from the code on disk, then forks on request."""

    proc: int


@dataclass(frozen=True)
class StartWorker:
    """Fork a worker from `template`, or spawn it cold when `template` is None."""

    proc: int
    template: int | None


@dataclass(frozen=True)
class RunStep:
    proc: int
    index: int


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
    """Ask each worker for the app's health route, so that its DB pool reconnects before a
    client's request has to: the workers kept serving while the DB was away."""

    procs: tuple[int, ...]


Action = StartTemplate | StartWorker | RunStep | StopProc | KillProc | Exit | Log | Warm


# State -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Db:
    """What the probes say of the database."""

    up: bool = False
    ever_up: bool = False
    answers: int = 0  # successful probes in a row
    failures: int = 0
    reason: str = ""
    repeats: int = 0
    logged_at: float = 0.0


@dataclass(frozen=True)
class Step:
    id: int
    index: int
    started: float
    deadline: float | None  # None once it was killed for its timeout


@dataclass(frozen=True)
class Prestart:
    running: Step | None = None
    done: int = 0  # steps done since the last reset (a DB loss resets it with after_db_loss)


@dataclass(frozen=True)
class Template:
    id: int
    code: int  # which deploy of the code it imports: SIGHUP asks for the next one
    started: float
    ready: bool = False


@dataclass(frozen=True)
class Worker:
    id: int
    generation: int
    code: int
    started: float
    deadline: float | None  # ready timeout while starting; None once serving
    serving: bool = False
    liveness_failures: int = 0


@dataclass(frozen=True)
class Retiring:
    id: int
    kill_at: float | None  # None once SIGKILL was sent


@dataclass(frozen=True)
class Budget:
    """The crash-loop budget and the restart backoff, for the whole launcher."""

    restarts: tuple[float, ...] = ()
    attempt: int = 0
    backoff_until: float | None = None


@dataclass(frozen=True)
class Stopping:
    code: int
    requested_at: float | None  # when a stop signal came; None when the launcher gave up itself


@dataclass(frozen=True)
class State:
    started_at: float
    size: int  # workers wanted
    db: Db = Db()
    prestart: Prestart = Prestart()
    code: int = 1  # the deploy of the code that should serve
    cold_code: int | None = None  # a deploy whose template had threads: its workers start cold
    template: Template | None = None  # the template of the serving code
    candidate: Template | None = None  # the template of the next code, building (SIGHUP)
    generation: int = 1  # the set of workers that should serve
    refresh_on_db_return: bool = False  # swap: a fresh set once the DB answers again
    workers: tuple[Worker, ...] = ()
    retiring: tuple[Retiring, ...] = ()
    budget: Budget = Budget()
    stopping: Stopping | None = None
    done: bool = False
    next_id: int = 1
    pending: tuple[Action, ...] = field(default=(), repr=False)  # actions of the step under way


def initial(now: float, size: int, template_spawned: bool = False) -> State:
    """`template_spawned`: the shell already spawned process 1 as the template, so its import
    overlaps the launcher's own start."""
    if template_spawned:
        return State(started_at=now, size=max(1, size), template=Template(1, 1, now), next_id=2)
    return State(started_at=now, size=max(1, size))


def cold(s: State) -> bool:
    return s.cold_code == s.code


def phase(s: State) -> Phase:
    if s.stopping is not None:
        return Phase.STOPPING
    if any(w.serving for w in s.workers):
        return Phase.RUNNING
    if s.workers or s.prestart.running:
        return Phase.STARTING
    if s.budget.backoff_until is not None:
        return Phase.BACKOFF
    return Phase.WAITING_DB


def accepting(s: State) -> bool:
    """Whether the launcher itself should answer on the shared socket: no worker will."""
    return not s.workers and not s.done


def forkable_template(s: State) -> int | None:
    """The template that can fork now: ready, warm, of the code that should serve."""
    t = s.template
    return t.id if t is not None and t.ready and t.code == s.code and not cold(s) else None


def serving(s: State) -> tuple[Worker, ...]:
    return tuple(w for w in s.workers if w.serving)


def backoff_delay(cfg: Config, attempt: int, rand: float) -> float:
    """No delay for the first restart after a healthy stretch (gunicorn too replaces a worker
    at once), then exponential from backoff_initial, capped, with +-jitter so that a fleet does
    not restart in lockstep."""
    if attempt == 0:
        return 0.0
    r = cfg.restart
    base = min(r.backoff_max, r.backoff_initial * 2 ** (attempt - 1))
    return base * (1 + r.jitter * (2 * rand - 1))


def next_wake(cfg: Config, s: State) -> float | None:
    times = [r.kill_at for r in s.retiring if r.kill_at is not None]
    times += [w.deadline for w in s.workers if w.deadline is not None]
    step = s.prestart.running
    if step and step.deadline is not None:
        times.append(step.deadline)
    if s.budget.backoff_until is not None:
        times.append(s.budget.backoff_until)
    if not s.db.ever_up and cfg.probe.startup_timeout and s.stopping is None:
        times.append(s.started_at + cfg.probe.startup_timeout)
    return min(times) if times else None


def step(cfg: Config, s: State, event: Event) -> tuple[State, list[Action]]:
    if s.done:
        return s, []
    s = replace(s, pending=())
    s = _HANDLERS[type(event)](cfg, s, event)
    s = _expire(cfg, s, event.now)
    s = _reconcile(cfg, s, event.now)
    return replace(s, pending=()), list(s.pending)


# Helpers -----------------------------------------------------------------------------

def _emit(s: State, *actions: Action) -> State:
    return replace(s, pending=s.pending + actions)


def _say(s: State, level: str, message: str) -> State:
    return _emit(s, Log(level, message))


def _new_id(s: State) -> tuple[State, int]:
    return replace(s, next_id=s.next_id + 1), s.next_id


def _retire(cfg: Config, s: State, proc: int, now: float, kill: bool = False) -> State:
    """Hand a process over to be stopped: SIGTERM and a deadline, or SIGKILL at once."""
    if kill:
        return _emit(replace(s, retiring=s.retiring + (Retiring(proc, None),)), KillProc(proc))
    return _emit(replace(s, retiring=s.retiring + (Retiring(proc, now + cfg.server.stop_grace),)), StopProc(proc))


def _retire_workers(cfg: Config, s: State, workers: tuple[Worker, ...], now: float) -> State:
    ids = {w.id for w in workers}
    s = replace(s, workers=tuple(w for w in s.workers if w.id not in ids))
    for worker in workers:
        s = _retire(cfg, s, worker.id, now)
    return s


def _begin_exit(cfg: Config, s: State, code: int, now: float, requested: bool = False) -> State:
    s = _retire_workers(cfg, s, s.workers, now)
    for proc in (s.template, s.candidate, s.prestart.running):
        if proc is not None:
            s = _retire(cfg, s, proc.id, now)
    return replace(s, stopping=Stopping(code, now if requested else None), template=None, candidate=None,
                   prestart=replace(s.prestart, running=None), budget=replace(s.budget, backoff_until=None))


def _crashed(cfg: Config, s: State, now: float, rand: float) -> State:
    """Count an unplanned end of a process; back off, or give up past the budget."""
    window = cfg.restart.window
    restarts = tuple(t for t in s.budget.restarts if now - t < window) + (now,)
    budget = replace(s.budget, restarts=restarts)
    if len(restarts) > cfg.restart.max_restarts:
        s = _say(replace(s, budget=budget), "error", f"processes ended {len(restarts)} times within {window:g}s "
                 f"(budget {cfg.restart.max_restarts}); giving up with exit 70")
        return _begin_exit(cfg, s, ExitCode.CRASH_LOOP, now)
    delay = backoff_delay(cfg, s.budget.attempt, rand)
    until = now + delay if delay else None
    if delay:
        s = _say(s, "info", f"restarting in {delay:.2f}s (attempt {s.budget.attempt + 1})")
    return replace(s, budget=replace(budget, attempt=s.budget.attempt + 1, backoff_until=until))


# Handlers: they record what happened -------------------------------------------------

def _on_db_probed(cfg: Config, s: State, e: DbProbed) -> State:
    db = s.db
    if e.ok:
        if not db.up:
            after = f" after {db.failures} failed probes" if db.failures else ""
            s = _say(s, "info", f"database is up{after}")
            if serving(s):
                s = _emit(s, Warm(tuple(w.id for w in serving(s))))
        s = replace(s, db=Db(up=True, ever_up=True, answers=db.answers + 1))
        if s.refresh_on_db_return and s.db.answers >= REFRESH_AFTER_ANSWERS:
            s = _say(replace(s, generation=s.generation + 1, refresh_on_db_return=False), "info",
                     "the database answers again: starting a fresh set of workers beside the current one")
        return s
    repeats = db.repeats + 1 if e.reason == db.reason else 1
    db = replace(db, answers=0, failures=db.failures + 1, reason=e.reason, repeats=repeats)
    if repeats == 1:
        s = _say(s, "warning", f"database probe failed: {e.reason}: {e.detail}")
        db = replace(db, logged_at=e.now)
    elif e.now - db.logged_at >= SUMMARY_EVERY:
        s = _say(s, "warning", f"database still failing: {e.reason} ({repeats} probes in a row)")
        db = replace(db, logged_at=e.now)
    s = replace(s, db=db)
    if db.up and db.failures >= cfg.probe.failures_before_down:
        return _db_lost(cfg, s, e.now)
    return s


def _db_lost(cfg: Config, s: State, now: float) -> State:
    s = replace(s, db=replace(s.db, up=False))
    if cfg.prestart.after_db_loss:
        if s.prestart.running is not None:  # it ran against the DB that went away: run it again later
            s = _retire(cfg, s, s.prestart.running.id, now)
        s = replace(s, prestart=Prestart())
    s = _say(s, "warning", f"database lost after {s.db.failures} failed probes; on_db_loss={cfg.on_db_loss.value}")
    return _ON_DB_LOSS[cfg.on_db_loss](cfg, s, now)


def _loss_restart(cfg: Config, s: State, now: float) -> State:
    return _retire_workers(cfg, s, s.workers, now)


def _loss_swap(cfg: Config, s: State, now: float) -> State:
    return replace(s, refresh_on_db_return=bool(s.workers))


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
    retiring = tuple(r for r in s.retiring if r.id != e.proc)
    if retiring != s.retiring:
        return _say(replace(s, retiring=retiring), "info", f"process {e.proc} stopped ({e.status})")
    if s.prestart.running and s.prestart.running.id == e.proc:
        return _step_ended(cfg, s, e)
    for template in (s.template, s.candidate):
        if template and template.id == e.proc:
            return _template_died(cfg, s, template, e)
    worker = next((w for w in s.workers if w.id == e.proc), None)
    if worker is None:
        return s
    s = replace(s, workers=tuple(w for w in s.workers if w.id != e.proc))
    if not worker.serving:
        s = _say(s, "error", f"worker {e.proc} exited before it was ready ({e.status})")
        return _crashed(cfg, s, e.now, e.rand)
    uptime = e.now - worker.started
    if uptime >= cfg.restart.reset_after:
        s = replace(s, budget=replace(s.budget, attempt=0))
    s = _say(s, "warning", f"worker {e.proc} exited ({e.status}) after {uptime:.1f}s; replacing it")
    return _crashed(cfg, s, e.now, e.rand)


def _template_died(cfg: Config, s: State, template: Template, e: ProcExited) -> State:
    """A template of new code that dies before it is ready is a failed reload: the workers
    of the code before it keep serving, and nothing counts against the budget. Any other
    template is rebuilt, and its end counts as a crash."""
    s = replace(s, template=None if s.template is template else s.template,
                candidate=None if s.candidate is template else s.candidate)
    if not template.ready and any(w.code < template.code for w in s.workers):
        return _say(replace(s, code=template.code - 1), "error",
                    f"reload failed: the new code's template exited before it was ready ({e.status}); "
                    "the current workers keep serving")
    when = "" if template.ready else " before it was ready"
    s = _say(s, "error", f"template {e.proc} exited{when} ({e.status}); building a new one while the workers "
                         "keep serving")
    return _crashed(cfg, s, e.now, e.rand)


def _step_ended(cfg: Config, s: State, e: ProcExited) -> State:
    step = s.prestart.running
    assert step is not None
    name = cfg.prestart.steps[step.index].name
    took = e.now - step.started
    if e.status.ok:
        s = _say(s, "info", f"prestart step {name!r} done in {took:.2f}s")
        return replace(s, prestart=Prestart(running=None, done=step.index + 1))
    delay = backoff_delay(cfg, s.budget.attempt + 1, e.rand)
    why = "timed out" if step.deadline is None else str(e.status)
    s = _say(s, "error", f"prestart step {name!r} failed ({why}) after {took:.2f}s; retrying in {delay:.2f}s")
    budget = replace(s.budget, attempt=s.budget.attempt + 1, backoff_until=e.now + delay)
    return replace(s, prestart=Prestart(), budget=budget)


def _on_template_ready(cfg: Config, s: State, e: TemplateReady) -> State:
    template = next((t for t in (s.template, s.candidate) if t and t.id == e.proc), None)
    if template is None:
        return s
    took = e.now - template.started
    if e.warm:
        s = _say(s, "info", f"template {e.proc} ready in {took:.2f}s: workers fork from it")
    else:
        s = _say(s, "warning", f"template {e.proc} cannot fork safely ({e.detail}); workers start cold instead")
    ready = replace(template, ready=True)
    if template is s.candidate:
        s = _say(s, "info", "reload: the new code is loaded; starting a new set of workers from it")
        if s.template is not None:
            s = _retire(cfg, s, s.template.id, e.now)
        s = replace(s, candidate=None)
    s = replace(s, template=ready)
    if not e.warm:
        s = _retire(cfg, replace(s, template=None, cold_code=ready.code), e.proc, e.now)
    if ready.code == s.code and any(w.generation == s.generation and w.code < s.code for w in s.workers):
        s = replace(s, generation=s.generation + 1)
    return s


def _on_worker_ready(cfg: Config, s: State, e: WorkerReady) -> State:
    worker = next((w for w in s.workers if w.id == e.proc and not w.serving), None)
    if worker is None:
        return s
    s = _say(s, "info", f"worker {e.proc} ready in {e.now - worker.started:.2f}s")
    ready = replace(worker, serving=True, started=e.now, deadline=None)
    return replace(s, workers=tuple(ready if w.id == e.proc else w for w in s.workers))


def _on_liveness(cfg: Config, s: State, e: LivenessChecked) -> State:
    worker = next((w for w in s.workers if w.id == e.proc and w.serving), None)
    if worker is None:
        return s
    failures = 0 if e.ok else worker.liveness_failures + 1
    s = replace(s, workers=tuple(replace(w, liveness_failures=failures) if w.id == e.proc else w for w in s.workers))
    if e.ok:
        return s
    s = _say(s, "warning", f"worker {e.proc} liveness check failed: {e.reason}")
    if failures < cfg.liveness.failures:
        return s
    s = _say(s, "error", f"worker {e.proc} failed {failures} liveness checks; killing it")
    s = _retire(cfg, replace(s, workers=tuple(w for w in s.workers if w.id != e.proc)), e.proc, e.now, kill=True)
    return _crashed(cfg, s, e.now, e.rand)


def _on_tick(cfg: Config, s: State, e: Tick) -> State:
    return s


def _on_stop(cfg: Config, s: State, e: StopRequested) -> State:
    if s.stopping is None:
        return _begin_exit(cfg, _say(s, "info", f"{e.why}: stopping"), ExitCode.OK, e.now, requested=True)
    if s.stopping.requested_at is None:
        return _say(replace(s, stopping=replace(s.stopping, requested_at=e.now)), "info", f"{e.why}: already stopping")
    if e.now - s.stopping.requested_at < ESCALATE_AFTER:
        return s
    s = _say(s, "warning", f"{e.why} again: killing what is left")
    for r in s.retiring:
        if r.kill_at is not None:
            s = _emit(s, KillProc(r.id))
    return replace(s, retiring=tuple(Retiring(r.id, None) for r in s.retiring))


def _on_reload(cfg: Config, s: State, e: ReloadRequested) -> State:
    if s.stopping is not None:
        return _say(s, "info", "reload requested while stopping: ignored")
    if s.candidate is not None:
        return _say(s, "info", "reload requested: one is already under way")
    s = _say(s, "info", "reload requested: loading the code on disk in a new template first")
    return replace(s, code=s.code + 1)


def _on_resize(cfg: Config, s: State, e: Resize) -> State:
    size = max(1, s.size + e.delta)
    if size == s.size:
        return _say(s, "info", "asked for fewer workers, but one is the least")
    return _say(replace(s, size=size), "info", f"workers: {s.size} -> {size}")


# Each handler takes the event of its key's type, which a dict's type cannot say: Any.
_HANDLERS: dict[type, Callable[[Config, State, Any], State]] = {
    DbProbed: _on_db_probed,
    ProcExited: _on_proc_exited,
    TemplateReady: _on_template_ready,
    WorkerReady: _on_worker_ready,
    LivenessChecked: _on_liveness,
    Tick: _on_tick,
    StopRequested: _on_stop,
    ReloadRequested: _on_reload,
    Resize: _on_resize,
}


# Time-driven transitions, checked after every event -----------------------------------

def _expire(cfg: Config, s: State, now: float) -> State:
    for r in s.retiring:
        if r.kill_at is not None and now >= r.kill_at:
            s = _say(s, "warning", f"process {r.id} still running {cfg.server.stop_grace:g}s after SIGTERM; killing it")
            s = _emit(s, KillProc(r.id))
            s = replace(s, retiring=tuple(Retiring(x.id, None) if x.id == r.id else x for x in s.retiring))
    step = s.prestart.running
    if step and step.deadline is not None and now >= step.deadline:
        s = _say(s, "error", f"prestart step {cfg.prestart.steps[step.index].name!r} timed out; killing it")
        s = _emit(replace(s, prestart=replace(s.prestart, running=replace(step, deadline=None))), KillProc(step.id))
    for late in [w.id for w in s.workers if w.deadline is not None and now >= w.deadline]:
        if all(w.id != late for w in s.workers):
            continue  # already retired: the kill of the one before it ended the budget
        s = _say(s, "error", f"worker {late} not ready after {cfg.server.ready_timeout:g}s; killing it")
        s = _retire(cfg, replace(s, workers=tuple(w for w in s.workers if w.id != late)), late, now, kill=True)
        s = _crashed(cfg, s, now, 0.5)
    if s.budget.backoff_until is not None and now >= s.budget.backoff_until:
        s = replace(s, budget=replace(s.budget, backoff_until=None))
    deadline = cfg.probe.startup_timeout
    if not s.db.ever_up and deadline and now - s.started_at >= deadline and s.stopping is None:
        s = _say(s, "error", f"database did not answer within startup_timeout={deadline:g}s; giving up with exit 69")
        s = _begin_exit(cfg, s, ExitCode.DB_UNAVAILABLE, now)
    return s


# The reconciler: what should run, given what runs ------------------------------------

def _reconcile(cfg: Config, s: State, now: float) -> State:
    if s.stopping is not None:
        return s if s.retiring else _emit(replace(s, done=True), Exit(s.stopping.code))
    s = _build_templates(s, now)
    s = _run_prestart(cfg, s, now)
    s = _start_workers(cfg, s, now)
    s = _retire_surplus(cfg, s, now)
    return _retire_old_generations(cfg, s, now)


def _build_templates(s: State, now: float) -> State:
    """A template for the serving code while there is none (it needs no DB, so it imports
    the app while the DB is still down); a candidate for the next code after SIGHUP."""
    if s.budget.backoff_until is not None:
        return s
    if s.template is None and s.candidate is None and not cold(s):
        s, proc = _new_id(s)
        return _emit(replace(s, template=Template(proc, s.code, now)), StartTemplate(proc))
    if s.template is not None and s.template.code < s.code and s.candidate is None:
        s, proc = _new_id(s)
        return _emit(replace(s, candidate=Template(proc, s.code, now)), StartTemplate(proc))
    return s


def _run_prestart(cfg: Config, s: State, now: float) -> State:
    steps = cfg.prestart.steps
    if not s.db.up or s.prestart.running or s.prestart.done >= len(steps) or s.budget.backoff_until is not None:
        return s
    s, proc = _new_id(s)
    index = s.prestart.done
    step = Step(proc, index, now, now + steps[index].timeout)
    return _emit(replace(s, prestart=replace(s.prestart, running=step)), RunStep(proc, index))


def may_start_workers(cfg: Config, s: State) -> bool:
    """Workers start after the prestart steps, on a DB that answers; under swap and keep a
    lost worker is also replaced while the DB is down, since the others serve without it."""
    if s.prestart.done < len(cfg.prestart.steps) or s.budget.backoff_until is not None:
        return False
    return s.db.up or (s.db.ever_up and cfg.on_db_loss in (Policy.SWAP, Policy.KEEP))


def _start_workers(cfg: Config, s: State, now: float) -> State:
    current = [w for w in s.workers if w.generation == s.generation]
    if len(current) >= s.size or not may_start_workers(cfg, s):
        return s
    if cold(s):
        source = None
    elif (source := forkable_template(s)) is None:
        return s  # the template is still importing the app: forking from it is faster than a cold start
    for _ in range(s.size - len(current)):
        s, proc = _new_id(s)
        worker = Worker(proc, s.generation, s.code, now, now + cfg.server.ready_timeout)
        s = _emit(replace(s, workers=s.workers + (worker,)), StartWorker(proc, source))
    return s


def _retire_surplus(cfg: Config, s: State, now: float) -> State:
    """After SIGTTOU: the newest of the current set go first, starting ones before serving ones."""
    current = sorted((w for w in s.workers if w.generation == s.generation), key=lambda w: (w.serving, -w.started, -w.id))
    surplus = len(current) - s.size
    return _retire_workers(cfg, s, tuple(current[:surplus]), now) if surplus > 0 else s


def _retire_old_generations(cfg: Config, s: State, now: float) -> State:
    """Once the whole current set serves, the sets before it go: a swap never leaves fewer
    workers serving than before it began."""
    old = tuple(w for w in s.workers if w.generation < s.generation)
    ready = sum(1 for w in s.workers if w.generation == s.generation and w.serving)
    if not old or ready < s.size:
        return s
    return _retire_workers(cfg, _say(s, "info", f"the new set of {ready} workers serves; retiring the old one"),
                           old, now)
