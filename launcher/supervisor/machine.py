"""The supervisor's decisions: a pure state machine over generations of workers, the
templates they fork from and the prestart steps that run before them.

No I/O, no clock and no randomness of its own: events carry `now` and, where they need one,
a uniform random number, so every transition is a plain function call in tests. `step()`
returns the new state and the actions for the shell; `next_wake()` says when to call again.

The state has two halves. `Desired` is what should run: how many workers, which generation
(a set of workers of one revision of the code and config), the policy's wishes, a stop.
`Observed` is what runs and what happened: the DB's answers, templates, steps, workers,
processes being stopped, the restart budget. Handlers record facts into `Observed` or change
`Desired`; deadlines that pass are facts too (`_observe_time`); then one reconciler compares
the halves and emits every start and every stop.

    template:   building --TemplateReady--> ready (forks workers)          dies -> rebuilt
    worker:     forking --Forked--> starting --WorkerReady--> serving --exit / liveness--> replaced
    generation: a swap (DB back) or a reload (new code) starts a complete new set beside the
                serving one; the serving one goes once every new worker serves. A reload whose
                template, step or workers fail is rolled back: the serving set stays untouched.
    stop:       everything is retired (SIGTERM, SIGKILL after its grace) -> Exit
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from launcher.config import Config, Policy, restart_only_changes
from launcher.exitcodes import ExitCode
from launcher.supervisor.events import (
    GONE,
    Action,
    DbProbed,
    Event,
    Exit,
    ExitStatus,
    Forked,
    KillProc,
    LivenessChecked,
    Log,
    ProcExited,
    ReloadRequested,
    Resize,
    RunStep,
    SignalIgnored,
    SpawnFailed,
    StartTemplate,
    StartWorker,
    StatusRequested,
    StopProc,
    StopRequested,
    TemplateReady,
    Tick,
    Warm,
    WorkerReady,
    summary,
)


class Phase(StrEnum):
    WAITING_DB = "waiting_db"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"


# A stop signal repeated sooner than this is the same request delivered twice (a terminal
# or `timeout` signals the process and its group), not a demand to kill.
ESCALATE_AFTER = 1.0
# A run of identical probe failures is logged once, then summarised this often (seconds).
SUMMARY_EVERY = 30.0
# Under swap, the fresh set starts once the DB has answered this many probes in a row: the
# serving workers recover by themselves meanwhile, a flapping DB does not churn the pool, and
# the forks do not compete for the CPU with the first requests after the DB's return.
REFRESH_AFTER_ANSWERS = 2
# A template answers a fork request in ~10 ms; one that has not forked within this is stuck
# (frozen, or its loop is gone) and is rebuilt.
FORK_TIMEOUT = 5.0
# While no worker serves, the launcher answers clients itself, except during the first
# moments of a worker's start: a worker forked at once is ready in ~0.1 s, and a client
# queued meanwhile gets a 200 instead of a 503.
UNSERVED_GRACE = 1.0


# State: what should run ------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """A deploy of the code with its configuration: SIGHUP asks for the next one."""

    number: int
    config: Config = field(repr=False)
    only_if_changed: bool = False


@dataclass(frozen=True)
class Generation:
    """A set of `size` workers of one revision."""

    number: int
    revision: Revision
    size: int


@dataclass(frozen=True)
class Stop:
    code: int
    requested_at: float | None  # when a stop signal came; None when the launcher gave up itself
    fast: bool = False


@dataclass(frozen=True)
class Desired:
    target: Generation  # the set that should serve
    serving: Generation | None = None  # the last set that served in full; kept up until the target does
    refresh_on_db_return: bool = False  # swap: a fresh set once the DB answers again
    queued: ReloadRequested | None = None  # the latest reload asked for while one was under way
    await_change: bool = False  # reload mode: the code on disk does not import; wait for the next save
    stop: Stop | None = None


# State: what runs and what happened ---------------------------------------------------------


@dataclass(frozen=True)
class Db:
    """What the probes say of the database."""

    up: bool = False  # reachable: it answered, and has not been gone for failures_before_down probes
    ever_up: bool = False
    answers: int = 0  # successful probes in a row
    gone: int = 0  # failures in a row that mean the server is gone (GONE)
    reason: str = ""  # of the last failure
    repeats: int = 0
    logged_at: float = 0.0


@dataclass(frozen=True)
class Template:
    id: int
    revision: int
    started: float
    ready: bool = False
    warm: bool = True
    doomed: str = ""  # why it must go, once a fact says so


@dataclass(frozen=True)
class Worker:
    id: int
    generation: int
    revision: int
    template: int | None  # the template it is forked from; None when spawned cold
    started: float
    forked: bool = False  # its pid is known: the template did fork it
    serving: bool = False
    liveness_failures: int = 0
    app_failures: int = 0
    doomed: str = ""


@dataclass(frozen=True)
class Step:
    id: int
    revision: int
    index: int
    started: float
    doomed: str = ""


class Grace(StrEnum):
    """How a process is stopped: how long it has between SIGTERM and SIGKILL."""

    STOP = "stop_grace"  # drain in-flight requests
    SHORT = "short"  # a worker that failed liveness: its loop may still answer SIGTERM
    NONE = "kill"  # nothing to drain (not ready yet, stuck, fast stop)


@dataclass(frozen=True)
class Retiring:
    id: int
    kill_at: float
    killed: bool = False
    grace: float = 0.0  # seconds between SIGTERM and kill_at


@dataclass(frozen=True)
class Budget:
    """The crash-loop budget and the restart backoff, for the whole launcher."""

    failures: tuple[float, ...] = ()  # when processes failed, within `window`
    attempt: int = 0
    backoff_until: float | None = None
    healthy_since: float | None = None  # since when workers have served without a failure
    last_served: float | None = None  # when the last worker stopped serving (None: never served)
    spawn_failed: bool = False  # the last failure was a process that could not be started


@dataclass(frozen=True)
class Observed:
    clock: float
    db: Db = Db()
    templates: tuple[Template, ...] = ()
    workers: tuple[Worker, ...] = ()
    step: Step | None = None
    steps_done: tuple[int, int] = (0, 0)  # (revision, steps done for it)
    digests: tuple[tuple[int, str], ...] = ()  # (revision, digest of the app's source it loaded)
    cold: tuple[int, ...] = ()  # revisions whose template could not fork safely: workers start cold
    retiring: tuple[Retiring, ...] = ()
    budget: Budget = Budget()
    import_error: str = ""  # reload mode: why the code on disk does not import


@dataclass(frozen=True)
class State:
    desired: Desired
    observed: Observed
    started_at: float
    next_id: int = 1
    next_generation: int = 2
    next_revision: int = 2
    done: bool = False
    pending: tuple[Action, ...] = ()  # actions of the step under way


def initial(config: Config, now: float, template_spawned: bool = False) -> State:
    """`template_spawned`: the shell already spawned process 1 as the template, so its import
    overlaps the launcher's own start. Without the DB gate the DB counts as up from the start."""
    target = Generation(1, Revision(1, config), max(1, config.server.workers))
    db = Db() if config.database.gate else Db(up=True, ever_up=True)
    templates = (Template(1, 1, now),) if template_spawned else ()
    return State(Desired(target), Observed(now, db, templates), now, next_id=2 if template_spawned else 1)


# Queries: what the shell and the tests ask of a state --------------------------------------


def config(s: State) -> Config:
    """The configuration that governs now: the target revision's."""
    return s.desired.target.revision.config


def serving(s: State) -> tuple[Worker, ...]:
    return tuple(w for w in s.observed.workers if w.serving and not w.doomed)


def phase(s: State) -> Phase:
    o = s.observed
    if s.desired.stop is not None:
        return Phase.STOPPING
    if any(w.serving for w in o.workers):
        return Phase.RUNNING
    if o.workers or o.step is not None:
        return Phase.STARTING
    if o.budget.backoff_until is not None:
        return Phase.BACKOFF
    return Phase.STARTING if o.db.up else Phase.WAITING_DB


def accepting(s: State) -> bool:
    """Whether the launcher itself answers on the shared socket: no worker serves, and none is
    in the first moments of its start."""
    if s.done or serving(s):
        return False
    starting = [w.started for w in s.observed.workers if not w.doomed]
    return not starting or s.observed.clock - min(starting) >= UNSERVED_GRACE


def unavailable_reason(s: State) -> str:
    """What the launcher's 503 says: what is really going on."""
    o, d = s.observed, s.desired
    if d.stop is not None:
        return "shutting down"
    if d.await_change and o.import_error:
        return o.import_error
    if not o.db.up and o.db.reason and o.db.reason not in GONE:
        return f"waiting for database: it answers, but {o.db.reason.replace('_', ' ')}"
    if not o.db.up:
        return "waiting for database"
    if o.budget.backoff_until is not None:
        return "restarting"
    if any(t.revision == d.target.revision.number and not t.ready for t in o.templates):
        return "starting: importing the app"
    if o.step is not None:
        return f"starting: running prestart step {config(s).prestart.steps[o.step.index].name!r}"
    return "starting"


def forkable_template(s: State, revision: int) -> int | None:
    """A ready, warm template of `revision` that no fact condemned."""
    return next(
        (t.id for t in s.observed.templates if t.revision == revision and t.ready and t.warm and not t.doomed), None
    )


def backoff_delay(config: Config, attempt: int, rand: float) -> float:
    """No delay for the first restart after a healthy stretch (gunicorn too replaces a worker
    at once), then exponential from backoff_initial, capped, with +-jitter so that a fleet does
    not restart in lockstep."""
    if attempt == 0:
        return 0.0
    r = config.restart
    base = min(r.backoff_max, r.backoff_initial * 2.0 ** min(attempt - 1, 64))
    return float(base * (1 + r.jitter * (2 * rand - 1)))


def next_wake(s: State) -> float | None:
    cfg, o = config(s), s.observed
    times = [r.kill_at for r in o.retiring if not r.killed]
    for w in o.workers:
        if not w.doomed and not w.serving:
            times.append(w.started + cfg.server.ready_timeout)
            times += [] if w.forked else [w.started + FORK_TIMEOUT]
            times += [w.started + UNSERVED_GRACE] if w.started + UNSERVED_GRACE > o.clock else []
    times += [t.started + cfg.server.template_timeout for t in o.templates if not t.ready and not t.doomed]
    if o.step is not None and not o.step.doomed:
        times.append(o.step.started + cfg.prestart.steps[o.step.index].timeout)
    if o.budget.backoff_until is not None:
        times.append(o.budget.backoff_until)
    if not o.db.ever_up and cfg.probe.startup_timeout and s.desired.stop is None:
        times.append(s.started_at + cfg.probe.startup_timeout)
    return min(times) if times else None


def step(s: State, event: Event) -> tuple[State, list[Action]]:
    if s.done:
        return s, []
    s = replace(s, pending=(), observed=replace(s.observed, clock=max(s.observed.clock, event.now)))
    s = _note_service(s, event.now)  # the workers that serve now served until this moment
    s = _handle(s, event)
    s = _observe_time(s, event.now)
    s = _reconcile(s, event.now)
    s = _note_service(s, event.now)
    return replace(s, pending=()), list(s.pending)


def _handle(s: State, event: Event) -> State:
    match event:
        case DbProbed():
            return _on_db_probed(s, event)
        case Forked():
            return _update_worker(s, event.proc, lambda w: replace(w, forked=True))
        case ProcExited():
            return _on_exited(s, event)
        case SpawnFailed():
            return _on_spawn_failed(s, event)
        case TemplateReady():
            return _on_template_ready(s, event)
        case WorkerReady():
            return _on_worker_ready(s, event)
        case LivenessChecked():
            return _on_liveness(s, event)
        case Tick():
            return s
        case StopRequested():
            return _on_stop(s, event)
        case ReloadRequested():
            return _on_reload(s, event)
        case Resize():
            return _on_resize(s, event)
        case StatusRequested():
            return _say(s, "info", status_line(s))
        case SignalIgnored():
            return _say(s, "info", f"got {event.name}: ignored ({event.why})")


# Helpers ---------------------------------------------------------------------------------


def _emit(s: State, *actions: Action) -> State:
    return replace(s, pending=s.pending + actions)


def _say(s: State, level: str, message: str) -> State:
    return _emit(s, Log(level, message))


def _new_id(s: State) -> tuple[State, int]:
    return replace(s, next_id=s.next_id + 1), s.next_id


def _observe(s: State, **changes: Any) -> State:
    return replace(s, observed=replace(s.observed, **changes))


def _desire(s: State, **changes: Any) -> State:
    return replace(s, desired=replace(s.desired, **changes))


def _update_worker(s: State, proc: int, change: Callable[[Worker], Worker]) -> State:
    workers = tuple(change(w) if w.id == proc else w for w in s.observed.workers)
    return _observe(s, workers=workers)


def _find(items: tuple[Template, ...] | tuple[Worker, ...], proc: int) -> Template | Worker | None:
    return next((item for item in items if item.id == proc), None)


def digest_of(s: State, revision: int) -> str:
    return next((d for r, d in s.observed.digests if r == revision), "")


def _steps_complete(s: State, generation: Generation) -> bool:
    """The target's steps ran for its revision; a serving set's ran before it served."""
    if generation != s.desired.target:
        return True
    steps = generation.revision.config.prestart.steps
    revision, done = s.observed.steps_done
    return not steps or (revision == generation.revision.number and done >= len(steps))


def reloading(s: State) -> bool:
    """A new revision is coming up beside a serving set of the one before it."""
    d = s.desired
    return d.serving is not None and d.target.revision.number != d.serving.revision.number


def status_line(s: State) -> str:
    o, d = s.observed, s.desired
    workers = ", ".join(f"{w.id}{'' if w.serving else ' (starting)'}" for w in o.workers) or "none"
    db = "up" if o.db.up else f"down ({o.db.reason or 'not probed yet'})"
    return (
        f"status: {phase(s).value}; revision {d.target.revision.number}, generation {d.target.number}, "
        f"{d.target.size} workers wanted; workers: {workers}; templates: "
        f"{', '.join(str(t.id) for t in o.templates) or 'none'}; database {db}; "
        f"{len(o.budget.failures)} failures within the restart window"
    )


# Handlers: they record what happened ----------------------------------------------------


def _on_db_probed(s: State, e: DbProbed) -> State:
    db = s.observed.db
    if e.ok:
        return _db_answered(s)
    repeats = db.repeats + 1 if e.reason == db.reason else 1
    gone = db.gone + 1 if e.reason in GONE else 0
    db = replace(db, answers=0, gone=gone, reason=e.reason, repeats=repeats)
    loud = "warning" if e.reason in GONE else "error"
    if repeats == 1:
        s = _say(s, loud, f"database probe failed: {e.reason}: {e.detail}")
        db = replace(db, logged_at=e.now)
    elif e.now - db.logged_at >= SUMMARY_EVERY:
        s = _say(s, loud, f"database still failing: {e.reason} ({repeats} probes in a row)")
        db = replace(db, logged_at=e.now)
    s = _observe(s, db=db)
    if db.up and db.gone >= config(s).probe.failures_before_down:
        return _db_lost(s)
    return s


def _db_answered(s: State) -> State:
    db = s.observed.db
    if not db.up:
        after = f" after {db.repeats} failed probes" if db.repeats else ""
        s = _say(s, "info", f"database is up{after}")
        if serving(s):
            s = _emit(s, Warm(tuple(w.id for w in serving(s)), config(s).server.health_path))
    elif db.repeats:
        s = _say(s, "info", f"database answers again after {db.repeats} failed probes ({db.reason})")
    s = _observe(s, db=Db(up=True, ever_up=True, answers=db.answers + 1))
    if s.desired.refresh_on_db_return and s.observed.db.answers >= REFRESH_AFTER_ANSWERS:
        s = _desire(s, refresh_on_db_return=False)
        if not reloading(s) and s.desired.serving == s.desired.target:
            s = _new_generation(s, s.desired.target.revision, s.desired.target.size)
            s = _say(s, "info", "the database answers again: starting a fresh set of workers beside the current one")
    return s


def _db_lost(s: State) -> State:
    cfg = config(s)
    s = _observe(s, db=replace(s.observed.db, up=False))
    if cfg.prestart.after_db_loss:
        s = _observe(s, steps_done=(s.observed.steps_done[0], 0))
        if s.observed.step is not None:  # it ran against the DB that went away: run it again later
            s = _observe(s, step=replace(s.observed.step, doomed="the database went away while it ran"))
    s = _say(s, "warning", f"database lost after {s.observed.db.gone} failed probes; on_db_loss={cfg.on_db_loss.value}")
    match cfg.on_db_loss:
        case Policy.SWAP:
            return _desire(s, refresh_on_db_return=bool(s.observed.workers))
        case Policy.EXIT:
            s = _say(s, "error", "exiting with 69 so the orchestrator decides")
            return _desire(s, stop=Stop(ExitCode.DB_UNAVAILABLE, None))
        case Policy.RESTART | Policy.KEEP:
            return s  # restart: the reconciler stops the workers while the DB is lost


def _on_exited(s: State, e: ProcExited) -> State:
    o = s.observed
    if any(r.id == e.proc for r in o.retiring):
        s = _observe(s, retiring=tuple(r for r in o.retiring if r.id != e.proc))
        return _say(s, "info", f"process {e.proc} stopped ({e.status})")
    why = f"{e.status}{_error_lines(e.error)}"
    if o.step is not None and o.step.id == e.proc:
        return _step_ended(s, o.step, e.status, why, e.now, e.rand)
    template = _find(o.templates, e.proc)
    if isinstance(template, Template):
        s = _observe(s, templates=tuple(t for t in o.templates if t.id != e.proc))
        return _template_failed(
            s,
            template,
            f"exited{'' if template.ready else ' before it was ready'} ({why})",
            e.now,
            e.rand,
            import_error=e.error,
        )
    worker = _find(o.workers, e.proc)
    if not isinstance(worker, Worker):
        return s
    s = _observe(s, workers=tuple(w for w in o.workers if w.id != e.proc))
    if not worker.serving:
        return _worker_failed(s, worker, f"exited before it was ready ({why})", e.now, e.rand)
    s = _say(s, "warning", f"worker {e.proc} exited ({why}) after {e.now - worker.started:.1f}s; replacing it")
    return _crashed(s, worker.revision, e.now, e.rand)


def _error_lines(error: str) -> str:
    return f": {summary(error)}" if error else ""


def _on_spawn_failed(s: State, e: SpawnFailed) -> State:
    o = s.observed
    why = f"cannot be started: {e.detail}"
    if any(r.id == e.proc for r in o.retiring):  # stopped before the shell could say it never started
        return _observe(s, retiring=tuple(r for r in o.retiring if r.id != e.proc))
    s = _observe(s, budget=replace(o.budget, spawn_failed=True))
    if o.step is not None and o.step.id == e.proc:
        return _step_ended(s, o.step, ExitStatus(code=ExitCode.OS_ERROR), why, e.now, e.rand)
    template = _find(o.templates, e.proc)
    if isinstance(template, Template):
        s = _observe(s, templates=tuple(t for t in o.templates if t.id != e.proc))
        return _template_failed(s, template, why, e.now, e.rand)
    worker = _find(o.workers, e.proc)
    if isinstance(worker, Worker):
        s = _observe(s, workers=tuple(w for w in o.workers if w.id != e.proc))
        return _worker_failed(s, worker, why, e.now, e.rand)
    return s


def _step_ended(s: State, step: Step, status: ExitStatus, why: str, now: float, rand: float) -> State:
    name = config(s).prestart.steps[step.index].name
    s = _observe(s, step=None)
    if status.ok and not step.doomed:
        s = _say(s, "info", f"prestart step {name!r} done in {now - step.started:.2f}s")
        return _observe(s, steps_done=(step.revision, step.index + 1))
    return _failed(
        s,
        step.revision,
        f"prestart step {name!r} failed ({step.doomed or why}) after {now - step.started:.2f}s",
        now,
        rand,
    )


def _template_failed(s: State, template: Template, why: str, now: float, rand: float, import_error: str = "") -> State:
    message = f"template {template.id} {why}"
    if config(s).server.reload and not template.ready and import_error and not reloading(s):
        s = _say(s, "error", f"{message}; waiting for the next change to the source")
        return _desire(_observe(s, import_error=import_error), await_change=True)
    if template.ready and not reloading(s):
        message += "; building a new one while the workers keep serving"
    return _failed(s, template.revision, message, now, rand)


def _worker_failed(s: State, worker: Worker, why: str, now: float, rand: float) -> State:
    return _failed(
        s,
        worker.revision,
        f"worker {worker.id} {why}",
        now,
        rand,
        reload_failure=worker.generation == s.desired.target.number,
    )


def _failed(s: State, revision: int, why: str, now: float, rand: float, reload_failure: bool = True) -> State:
    """A process of `revision` failed. While a reload is under way and the serving set
    serves, a failure of the new revision's is a failed reload: rolled back, nothing counted.
    Anything else counts against the crash budget."""
    if reload_failure and reloading(s) and revision == s.desired.target.revision.number and serving(s):
        return _reload_failed(s, why, now, rand)
    s = _say(s, "error", why)
    return _crashed(s, revision, now, rand)


def _reload_failed(s: State, why: str, now: float, rand: float) -> State:
    serving_set = s.desired.serving
    assert serving_set is not None  # reloading(s) says so
    s = _say(
        s, "error", f"reload failed: {why}; the serving workers keep serving revision {serving_set.revision.number}"
    )
    s = _desire(s, target=serving_set)
    s = _observe(s, steps_done=(serving_set.revision.number, len(serving_set.revision.config.prestart.steps)))
    s = _back_off(s, now, rand)
    return _start_queued(s, now)


def _crashed(s: State, revision: int, now: float, rand: float) -> State:
    """Count an unplanned end of a process; back off, or give up once the budget is spent and
    no worker served within the window: taking serving capacity away gains nothing."""
    cfg, b = config(s), s.observed.budget
    failures = tuple(t for t in b.failures if now - t < cfg.restart.window) + (now,)
    if b.healthy_since is not None and now - b.healthy_since >= cfg.restart.reset_after:
        b = replace(b, attempt=0)
    b = replace(b, failures=failures, healthy_since=now if serving(s) else None)
    s = _observe(s, budget=b)
    spent = len(failures) > cfg.restart.max_restarts
    if spent and not cfg.server.reload and not _served_within(s, now, cfg.restart.window):
        return _give_up(s, len(failures))
    if len(failures) == cfg.restart.max_restarts + 1:
        why = "reload mode never gives up" if cfg.server.reload else "workers still serve, so the launcher goes on"
        s = _say(
            s,
            "warning",
            f"processes failed {len(failures)} times within {cfg.restart.window:g}s "
            f"(budget {cfg.restart.max_restarts}); {why} replacing them",
        )
    return _back_off(s, now, rand)


def _served_within(s: State, now: float, window: float) -> bool:
    last = s.observed.budget.last_served
    return bool(serving(s)) or (last is not None and now - last < window)


def _give_up(s: State, failures: int) -> State:
    cfg = config(s)
    code = ExitCode.OS_ERROR if s.observed.budget.spawn_failed else ExitCode.CRASH_LOOP
    s = _say(
        s,
        "error",
        f"processes failed {failures} times within {cfg.restart.window:g}s "
        f"(budget {cfg.restart.max_restarts}) and no worker served meanwhile; giving up with "
        f"exit {int(code)}",
    )
    return _desire(s, stop=Stop(code, None))


def _back_off(s: State, now: float, rand: float) -> State:
    b = s.observed.budget
    delay = backoff_delay(config(s), b.attempt, rand)
    if delay:
        s = _say(s, "info", f"restarting in {delay:.2f}s (attempt {b.attempt + 1})")
    return _observe(s, budget=replace(b, attempt=b.attempt + 1, backoff_until=now + delay if delay else None))


def _on_template_ready(s: State, e: TemplateReady) -> State:
    template = _find(s.observed.templates, e.proc)
    if not isinstance(template, Template) or template.ready:
        return s
    ready = replace(template, ready=True, warm=e.warm)
    s = _observe(s, templates=tuple(ready if t.id == e.proc else t for t in s.observed.templates), import_error="")
    if e.warm:
        s = _say(s, "info", f"template {e.proc} ready in {e.now - template.started:.2f}s: workers fork from it")
    else:
        s = _say(s, "warning", f"template {e.proc} cannot fork safely ({e.detail}); workers start cold instead")
        s = _observe(s, cold=s.observed.cold + (template.revision,))
    return _record_digest(s, ready, e.digest, e.now)


def _record_digest(s: State, template: Template, digest: str, now: float) -> State:
    """The first template of a revision says which code it is; a later one that loaded other
    code (a rebuild after a crash, with new code on disk) must not serve beside the old set:
    it becomes a new revision, rolled out as a reload would (steps included)."""
    known = digest_of(s, template.revision)
    if not digest or known == digest:
        return s
    if not known:
        s = _observe(s, digests=s.observed.digests + ((template.revision, digest),))
        return _skip_unchanged(s, template.revision)
    s = _say(
        s,
        "warning",
        f"template {template.id} loaded other code than the serving workers (the code on disk "
        "changed): rolling the whole set to it, as a reload would",
    )
    revision = Revision(s.next_revision, s.desired.target.revision.config)
    s = replace(s, next_revision=s.next_revision + 1)
    s = _new_generation(s, revision, s.desired.target.size)
    templates = tuple(replace(t, revision=revision.number) if t.id == template.id else t for t in s.observed.templates)
    return _observe(s, templates=templates, digests=s.observed.digests + ((revision.number, digest),))


def _skip_unchanged(s: State, revision: int) -> State:
    """A reload queued behind another is dropped once its template shows that neither the code
    nor the config differ from what serves."""
    d = s.desired
    if not (reloading(s) and d.target.revision.number == revision and d.target.revision.only_if_changed):
        return s
    assert d.serving is not None  # reloading(s) says so
    same_code = digest_of(s, revision) == digest_of(s, d.serving.revision.number)
    if not same_code or d.target.revision.config != d.serving.revision.config:
        return s
    s = _say(s, "info", "reload: neither the code nor the config changed since the last one; keeping the serving set")
    return _desire(s, target=d.serving)


def _on_worker_ready(s: State, e: WorkerReady) -> State:
    worker = _find(s.observed.workers, e.proc)
    if not isinstance(worker, Worker) or worker.serving or worker.doomed:
        return s
    s = _say(s, "info", f"worker {e.proc} ready in {e.now - worker.started:.2f}s")
    return _update_worker(s, e.proc, lambda w: replace(w, serving=True, forked=True, started=e.now))


def _on_liveness(s: State, e: LivenessChecked) -> State:
    worker = _find(s.observed.workers, e.proc)
    if not isinstance(worker, Worker) or not worker.serving or worker.doomed:
        return s
    cfg = config(s).liveness
    if e.app:
        failures = 0 if e.ok else worker.app_failures + 1
        s = _update_worker(s, e.proc, lambda w: replace(w, app_failures=failures))
        if e.ok:
            return s
        s = _say(s, "warning", f"worker {e.proc} app check {cfg.app_path} failed: {e.reason}")
        if not cfg.app_failures_kill or failures < cfg.failures:
            return s
        why = f"failed {failures} app checks in a row"
    else:
        failures = 0 if e.ok else worker.liveness_failures + 1
        s = _update_worker(s, e.proc, lambda w: replace(w, liveness_failures=failures))
        if e.ok:
            return s
        s = _say(s, "warning", f"worker {e.proc} event loop did not answer: {e.reason}")
        if failures < cfg.failures:
            return s
        why = f"its event loop did not answer {failures} liveness checks in a row"
    s = _update_worker(s, e.proc, lambda w: replace(w, doomed=why))
    s = _say(s, "error", f"worker {e.proc} {why}; replacing it")
    return _crashed(s, worker.revision, e.now, e.rand)


def _on_stop(s: State, e: StopRequested) -> State:
    stop = s.desired.stop
    if stop is None:
        s = _say(s, "info", f"{e.why}: {'stopping at once' if e.fast else 'stopping'}")
        return _desire(s, stop=Stop(ExitCode.OK, e.now, e.fast))
    if stop.requested_at is None:
        return _say(_desire(s, stop=replace(stop, requested_at=e.now)), "info", f"{e.why}: already stopping")
    if not e.fast and e.now - stop.requested_at < ESCALATE_AFTER:
        return s
    return _say(_desire(s, stop=replace(stop, fast=True)), "warning", f"{e.why} again: killing what is left")


def _on_reload(s: State, e: ReloadRequested) -> State:
    d = s.desired
    if d.stop is not None:
        return _say(s, "info", f"reload requested ({e.why}) while stopping: ignored")
    if e.error:
        return _say(
            s, "error", f"reload failed: invalid configuration, the serving workers and their config stay: {e.error}"
        )
    if reloading(s):
        return _say(_desire(s, queued=e), "info", f"reload requested ({e.why}): it starts once the one under way ends")
    current = config(s)
    new = e.config or current
    for change in restart_only_changes(current, new):
        s = _say(s, "warning", f"reload: {change} needs a restart; ignored until then")
    size = d.target.size if new.server.workers == current.server.workers else new.server.workers
    revision = Revision(s.next_revision, new, e.only_if_changed)
    s = replace(s, next_revision=s.next_revision + 1)
    s = _observe(s, budget=replace(s.observed.budget, attempt=0, backoff_until=None))
    s = _desire(s, await_change=False)
    s = _say(s, "info", f"reload requested ({e.why}): loading revision {revision.number} in a new template first")
    return _new_generation(s, revision, size)


def _start_queued(s: State, now: float) -> State:
    queued = s.desired.queued
    if queued is None:
        return s
    return _on_reload(_desire(s, queued=None), replace(queued, now=now, only_if_changed=True))


def _new_generation(s: State, revision: Revision, size: int) -> State:
    target = Generation(s.next_generation, revision, size)
    s = replace(s, next_generation=s.next_generation + 1)
    if revision.number != s.desired.target.revision.number:
        s = _observe(s, steps_done=(revision.number, 0))
    return _desire(s, target=target)


def _on_resize(s: State, e: Resize) -> State:
    target = s.desired.target
    ceiling = config(s).server.max_workers
    size = min(ceiling, max(1, target.size + e.delta))
    if size == target.size:
        limit = "one is the least" if e.delta < 0 else f"server.max_workers is {ceiling}"
        return _say(s, "warning", f"asked for {'fewer' if e.delta < 0 else 'more'} workers, but {limit}")
    s = _say(s, "info", f"workers: {target.size} -> {size}")
    resized = replace(target, size=size)
    serving_set = resized if s.desired.serving == target else s.desired.serving
    return _desire(s, target=resized, serving=serving_set)


# Time: deadlines that passed are facts too ------------------------------------------------


def _observe_time(s: State, now: float) -> State:
    cfg = config(s)
    for t in s.observed.templates:
        if not t.ready and not t.doomed and now >= t.started + cfg.server.template_timeout:
            s = _doom_template(s, t.id, f"not ready after {cfg.server.template_timeout:g}s")
            s = _failed(s, t.revision, f"template {t.id} not ready after {cfg.server.template_timeout:g}s", now, 0.5)
    for w in s.observed.workers:
        s = _observe_worker_time(s, w, now)
    step_ = s.observed.step
    if step_ is not None and not step_.doomed and now >= step_.started + cfg.prestart.steps[step_.index].timeout:
        s = _observe(s, step=replace(step_, doomed="timed out"))
        s = _failed(
            s,
            step_.revision,
            f"prestart step {cfg.prestart.steps[step_.index].name!r} failed (timed out) "
            f"after {now - step_.started:.2f}s; killing it",
            now,
            0.5,
        )
    b = s.observed.budget
    if b.backoff_until is not None and now >= b.backoff_until:
        s = _observe(s, budget=replace(b, backoff_until=None))
    if (
        not s.observed.db.ever_up
        and cfg.probe.startup_timeout
        and s.desired.stop is None
        and now - s.started_at >= cfg.probe.startup_timeout
    ):
        s = _say(
            s,
            "error",
            f"database did not answer within startup_timeout={cfg.probe.startup_timeout:g}s; giving up with exit 69",
        )
        s = _desire(s, stop=Stop(ExitCode.DB_UNAVAILABLE, None))
    return s


def _observe_worker_time(s: State, w: Worker, now: float) -> State:
    current = _find(s.observed.workers, w.id)
    if not isinstance(current, Worker) or current.doomed or current.serving:
        return s
    timeout = config(s).server.ready_timeout
    if not current.forked and current.template is not None and now >= current.started + FORK_TIMEOUT:
        s = _update_worker(s, w.id, lambda x: replace(x, doomed="its template did not fork it"))
        s = _doom_template(s, current.template, f"it did not fork worker {w.id} within {FORK_TIMEOUT:g}s")
        return _failed(
            s,
            current.revision,
            f"template {current.template} did not fork worker {w.id} within "
            f"{FORK_TIMEOUT:g}s: it is stuck; rebuilding it",
            now,
            0.5,
        )
    if now >= current.started + timeout:
        s = _update_worker(s, w.id, lambda x: replace(x, doomed=f"not ready after {timeout:g}s"))
        return _worker_failed(s, current, f"not ready after {timeout:g}s; killing it", now, 0.5)
    return s


def _doom_template(s: State, proc: int, why: str) -> State:
    return _observe(
        s, templates=tuple(replace(t, doomed=why) if t.id == proc and not t.doomed else t for t in s.observed.templates)
    )


# The reconciler: what should run, given what runs ------------------------------------------


def _reconcile(s: State, now: float) -> State:
    s = _settle(s)
    s = _retire_unwanted(s, now)
    s = _escalate(s, now)
    if s.desired.stop is not None:
        return _finish(s)
    if s.observed.budget.backoff_until is not None:
        return s
    s = _build_template(s, now)
    s = _run_step(s, now)
    return _start_workers(s, now)


def _settle(s: State) -> State:
    """Once the whole target set serves, it is the serving set; the sets before it go."""
    d = s.desired
    if d.stop is not None or d.serving == d.target:
        return s
    ready = sum(1 for w in s.observed.workers if w.generation == d.target.number and w.serving and not w.doomed)
    if ready < d.target.size:
        return s
    if d.serving is not None and d.serving.revision.number != d.target.revision.number:
        s = _say(
            s,
            "info",
            f"reload done: revision {d.target.revision.number} serves with {ready} workers; retiring the old set",
        )
    elif d.serving is not None:
        s = _say(s, "info", f"the new set of {ready} workers serves; retiring the old one")
    s = _desire(s, serving=d.target)
    return _start_queued(s, s.observed.clock)


def _retire_unwanted(s: State, now: float) -> State:
    once: dict[int, Grace] = {}
    for proc, grace in _unwanted(s):
        once.setdefault(proc, grace)
    for proc, grace in once.items():
        s = _retire(s, proc, grace, now)
    return s


def _unwanted(s: State) -> list[tuple[int, Grace]]:
    """Every running process that should not run, and how to stop it; a process listed for two
    reasons (say, a surplus of a generation the `restart` policy stops) is stopped once."""
    d, o = s.desired, s.observed
    if d.stop is not None:
        grace = Grace.NONE if d.stop.fast else Grace.STOP
        singles = [t.id for t in o.templates] + ([o.step.id] if o.step is not None else [])
        return [(proc, grace) for proc in singles + [w.id for w in o.workers]]
    found = [(t.id, _template_grace(t)) for t in o.templates if t.doomed]
    found += [(t.id, Grace.STOP) for t in o.templates if not t.doomed and not _template_wanted(s, t)]
    if o.step is not None and (o.step.doomed or o.step.revision != d.target.revision.number):
        found.append((o.step.id, Grace.NONE))
    return found + _unwanted_workers(s)


def _template_grace(t: Template) -> Grace:
    return Grace.NONE if not t.ready or "fork" in t.doomed else Grace.STOP


def _template_wanted(s: State, t: Template) -> bool:
    d = s.desired
    if t.ready and not t.warm:
        return False  # it cannot fork: its workers start cold
    wanted = {d.target.revision.number} | ({d.serving.revision.number} if d.serving else set())
    return t.revision in wanted


def _unwanted_workers(s: State) -> list[tuple[int, Grace]]:
    d, o = s.desired, s.observed
    sets = {d.target.number: d.target} | ({d.serving.number: d.serving} if d.serving else {})
    restart_off = config(s).on_db_loss is Policy.RESTART and not o.db.up
    found = []
    for w in o.workers:
        if w.doomed:
            found.append((w.id, Grace.SHORT if w.serving else Grace.NONE))
        elif w.generation not in sets or restart_off:
            found.append((w.id, Grace.STOP))
    for generation in sets.values():
        members = sorted(
            (w for w in o.workers if w.generation == generation.number and not w.doomed),
            key=lambda w: (w.serving, -w.started, -w.id),
        )  # the newest, starting ones go first
        found += [(w.id, Grace.STOP) for w in members[: max(0, len(members) - generation.size)]]
    return found


def _retire(s: State, proc: int, grace: Grace, now: float) -> State:
    """Hand a process over to be stopped: SIGTERM and a deadline, or SIGKILL at once."""
    o = s.observed
    s = _observe(
        s,
        templates=tuple(t for t in o.templates if t.id != proc),
        workers=tuple(w for w in o.workers if w.id != proc),
        step=None if o.step is not None and o.step.id == proc else o.step,
    )
    if grace is Grace.NONE:
        return _emit(_observe(s, retiring=s.observed.retiring + (Retiring(proc, now, killed=True),)), KillProc(proc))
    cfg = config(s)
    wait = cfg.server.stop_grace if grace is Grace.STOP else min(cfg.server.stop_grace, cfg.liveness.timeout)
    return _emit(_observe(s, retiring=s.observed.retiring + (Retiring(proc, now + wait, grace=wait),)), StopProc(proc))


def _escalate(s: State, now: float) -> State:
    """SIGKILL for what outlived its grace, or for everything once a stop is to be fast."""
    stop = s.desired.stop
    fast = stop is not None and stop.fast
    late = [r for r in s.observed.retiring if not r.killed and (fast or now >= r.kill_at)]
    for r in late:
        if not fast:
            s = _say(s, "warning", f"process {r.id} still running {r.grace:g}s after SIGTERM; killing it")
        s = _emit(s, KillProc(r.id))
    killed = {r.id for r in late}
    return _observe(s, retiring=tuple(replace(r, killed=True) if r.id in killed else r for r in s.observed.retiring))


def _finish(s: State) -> State:
    o = s.observed
    if o.templates or o.workers or o.step is not None or o.retiring:
        return s
    stop = s.desired.stop
    assert stop is not None  # only called while stopping
    return _emit(replace(s, done=True), Exit(stop.code))


def _build_template(s: State, now: float) -> State:
    """A template for the target revision while there is none (it needs no DB, so it imports
    the app while the DB is still down). The serving revision's template is never rebuilt
    while another revision comes up: the code on disk is the new one."""
    d, o = s.desired, s.observed
    revision = d.target.revision.number
    if d.await_change or revision in o.cold or any(t.revision == revision and not t.doomed for t in o.templates):
        return s
    s, proc = _new_id(s)
    return _emit(
        _observe(s, templates=s.observed.templates + (Template(proc, revision, now),)),
        StartTemplate(proc, d.target.revision.config),
    )


def _run_step(s: State, now: float) -> State:
    """The target revision's prestart steps, one by one, once the DB answers. A `python -m`
    step is forked from the revision's ready template (no interpreter start, no imports); on a
    first start it is spawned meanwhile if the template still imports, which overlaps the
    two; a reload waits for its template, so its steps run the code its workers will run."""
    d, o = s.desired, s.observed
    revision = d.target.revision
    steps = revision.config.prestart.steps
    rev, done = o.steps_done if o.steps_done[0] == revision.number else (revision.number, 0)
    if not o.db.up or o.step is not None or done >= len(steps) or d.await_change:
        return s
    template = None
    if steps[done].module_argv() and revision.number not in o.cold:
        template = forkable_template(s, revision.number)
        if template is None and reloading(s):
            return s  # a reload's steps run forked from its template: the very code its workers will run
    s, proc = _new_id(s)
    s = _observe(s, step=Step(proc, rev, done, now), steps_done=(rev, done))
    return _emit(s, RunStep(proc, steps[done], template, revision.config))


def _start_workers(s: State, now: float) -> State:
    d = s.desired
    for generation in [d.target] + ([d.serving] if d.serving is not None and d.serving != d.target else []):
        s = _start_missing(s, generation, now)
    return s


def _start_missing(s: State, generation: Generation, now: float) -> State:
    o = s.observed
    count = sum(1 for w in o.workers if w.generation == generation.number and not w.doomed)
    revision = generation.revision.number
    if count >= generation.size or not _db_allows(s, generation) or not _steps_complete(s, generation):
        return s
    cold = revision in o.cold
    template = None if cold else forkable_template(s, revision)
    if template is None and not cold:
        return s  # its template still imports the app: forking from it is faster than a cold start
    for _ in range(generation.size - count):
        s, proc = _new_id(s)
        worker = Worker(proc, generation.number, revision, template, now, forked=template is None)
        s = _emit(
            _observe(s, workers=s.observed.workers + (worker,)), StartWorker(proc, template, generation.revision.config)
        )
    return s


def _db_allows(s: State, generation: Generation) -> bool:
    """Workers start on a DB that answers; under swap and keep a lost worker of the serving
    set is also replaced while the DB is down, since the others serve without it."""
    db = s.observed.db
    if db.up:
        return True
    return db.ever_up and config(s).on_db_loss in (Policy.SWAP, Policy.KEEP) and generation == s.desired.serving


# Bookkeeping after each step: since when workers serve, and when one last did ---------------


def _note_service(s: State, now: float) -> State:
    b = s.observed.budget
    if not serving(s):
        return s if b.healthy_since is None else _observe(s, budget=replace(b, healthy_since=None))
    return _observe(
        s,
        budget=replace(
            b, healthy_since=now if b.healthy_since is None else b.healthy_since, last_served=now, spawn_failed=False
        ),
    )
