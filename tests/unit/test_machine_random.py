"""Random event histories against the machine (Hypothesis stateful testing).

Safety: the invariants hold after every step, the machine never loses track of a process,
a failed reload never stops a serving worker, and every stop ends in Exit. Progress: from
wherever a history got to, once the DB answers and every process behaves, `size` workers of
the wanted set serve within bounded simulated time, unless the launcher had given up."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from launcher.config import Policy, PrestartConfig, PrestartStep, load
from launcher.supervisor import events as ev
from launcher.supervisor import machine as m
from tests.unit.machine_invariants import check, live_ids

STARTS = (ev.StartTemplate, ev.StartWorker, ev.RunStep)
REASONS = ["refused", "timeout", "lost", "access_denied", "too_many_connections", "protocol"]
DURATIONS = st.sampled_from(["100ms", "1s", "5s", "30s"])


class PoolHistory(RuleBasedStateMachine):
    """A model of the processes: what the machine started and has not seen exit yet."""

    @initialize(
        policy=st.sampled_from(list(Policy)),
        size=st.integers(1, 4),
        with_step=st.booleans(),
        after_db_loss=st.booleans(),
        max_restarts=st.integers(0, 6),
        reload_mode=st.booleans(),
        ready_timeout=DURATIONS,
        template_timeout=DURATIONS,
        stop_grace=DURATIONS,
        backoff_max=st.sampled_from(["1s", "5s", "30s"]),
        startup_timeout=st.sampled_from(["0", "20s"]),
    )
    def begin(
        self,
        policy: Policy,
        size: int,
        with_step: bool,
        after_db_loss: bool,
        max_restarts: int,
        reload_mode: bool,
        ready_timeout: str,
        template_timeout: str,
        stop_grace: str,
        backoff_max: str,
        startup_timeout: str,
    ) -> None:
        base = load(
            None,
            {
                "LAUNCHER_ON_DB_LOSS": policy.value,
                "LAUNCHER_SERVER_WORKERS": str(size),
                "LAUNCHER_RESTART_MAX_RESTARTS": str(max_restarts),
                "LAUNCHER_SERVER_RELOAD": str(reload_mode),
                "LAUNCHER_SERVER_READY_TIMEOUT": ready_timeout,
                "LAUNCHER_SERVER_TEMPLATE_TIMEOUT": template_timeout,
                "LAUNCHER_SERVER_STOP_GRACE": stop_grace,
                "LAUNCHER_RESTART_BACKOFF_MAX": backoff_max,
                "LAUNCHER_PROBE_STARTUP_TIMEOUT": startup_timeout,
            },
        )
        steps = (PrestartStep(name="migrate", command=("python", "-m", "api.migrate")),) if with_step else ()
        self.cfg = replace(base, prestart=PrestartConfig(steps=steps, after_db_loss=after_db_loss))
        self.now = 0.0
        self.s = m.initial(self.cfg, 0.0, template_spawned=True)  # production: the template is spawned first
        first = self.s.observed.templates[0].id
        self.alive: set[int] = {first}
        self.kinds: dict[int, type] = {first: ev.StartTemplate}
        self.ever: set[int] = {first}
        self.feed(ev.Tick(0.0))

    def feed(self, event: ev.Event) -> list[ev.Action]:
        before = self.s
        self.s, actions = m.step(self.s, event)
        check(before, self.s, actions)
        for action in actions:
            if isinstance(action, STARTS):
                assert action.proc not in self.ever, "a process id is never reused"
                self.alive.add(action.proc)
                self.ever.add(action.proc)
                self.kinds[action.proc] = type(action)
        if any(isinstance(a, ev.Log) and a.message.startswith("reload failed") for a in actions):
            stopped = {a.proc for a in actions if isinstance(a, (ev.StopProc, ev.KillProc))}
            assert not stopped & {w.id for w in m.serving(before)}, "a failed reload stopped a serving worker"
        return actions

    def of_kind(self, kind: type) -> list[int]:
        return sorted(p for p in self.alive if self.kinds[p] is kind)

    @invariant()
    def the_machine_knows_every_live_process(self) -> None:
        if hasattr(self, "s"):
            assert set(live_ids(self.s)) == self.alive

    @rule(dt=st.sampled_from([0.01, 0.1, 0.5, 2.0, 6.0, 11.0, 31.0, 61.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.feed(ev.Tick(self.now))

    @rule(ok=st.booleans(), reason=st.sampled_from(REASONS))
    def probe(self, ok: bool, reason: str) -> None:
        self.feed(ev.DbProbed(self.now, ok, "" if ok else reason, ""))

    @precondition(lambda self: self.alive)
    @rule(data=st.data(), code=st.sampled_from([0, 1, 3, None]), rand=st.floats(0, 1), error=st.sampled_from(["", "x"]))
    def a_process_ends(self, data: st.DataObject, code: int | None, rand: float, error: str) -> None:
        proc = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(proc)
        status = ev.ExitStatus(code=code) if code is not None else ev.ExitStatus(signal=9)
        self.feed(ev.ProcExited(self.now, proc, status, rand, error))

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def a_spawn_fails(self, data: st.DataObject) -> None:
        proc = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(proc)
        self.feed(ev.SpawnFailed(self.now, proc, "[Errno 24] Too many open files"))

    @rule(proc=st.integers(0, 400), code=st.sampled_from([0, 1]))
    def an_unknown_or_stale_process_reports(self, proc: int, code: int) -> None:
        """Ids the machine never gave or already forgot: every event about them is ignored."""
        if proc in self.alive:
            return
        for event in (
            ev.ProcExited(self.now, proc, ev.ExitStatus(code=code)),
            ev.WorkerReady(self.now, proc),
            ev.Forked(self.now, proc),
            ev.TemplateReady(self.now, proc, True, "", "stale"),
            ev.LivenessChecked(self.now, proc, False, "stale"),
            ev.SpawnFailed(self.now, proc, "stale"),
        ):
            self.feed(event)

    @precondition(lambda self: self.of_kind(ev.StartTemplate))
    @rule(data=st.data(), warm=st.booleans(), digest=st.sampled_from(["v1", "v2"]))
    def a_template_is_ready(self, data: st.DataObject, warm: bool, digest: str) -> None:
        proc = data.draw(st.sampled_from(self.of_kind(ev.StartTemplate)))
        self.feed(ev.TemplateReady(self.now, proc, warm, "" if warm else "threads: x", digest))

    @precondition(lambda self: self.of_kind(ev.StartWorker))
    @rule(data=st.data())
    def a_worker_forks_and_is_ready(self, data: st.DataObject) -> None:
        proc = data.draw(st.sampled_from(self.of_kind(ev.StartWorker)))
        self.feed(ev.Forked(self.now, proc))
        self.feed(ev.WorkerReady(self.now, proc))

    @precondition(lambda self: self.of_kind(ev.StartWorker))
    @rule(data=st.data(), ok=st.booleans(), app=st.booleans())
    def liveness(self, data: st.DataObject, ok: bool, app: bool) -> None:
        proc = data.draw(st.sampled_from(self.of_kind(ev.StartWorker)))
        self.feed(ev.LivenessChecked(self.now, proc, ok, "" if ok else "no answer", app=app))

    @rule(broken=st.booleans(), workers=st.integers(1, 3))
    def reload(self, broken: bool, workers: int) -> None:
        server = replace(self.cfg.server, workers=workers)
        event = ev.ReloadRequested(self.now, config=replace(self.cfg, server=server))
        self.feed(replace(event, config=None, error="bad") if broken else event)

    @rule(delta=st.sampled_from([-1, 1]))
    def resize(self, delta: int) -> None:
        self.feed(ev.Resize(self.now, delta))

    @rule()
    def status(self) -> None:
        self.feed(ev.StatusRequested(self.now))

    @rule(fast=st.booleans())
    def stop(self, fast: bool) -> None:
        self.now += 0.01
        self.feed(ev.StopRequested(self.now, fast=fast))

    def behave(self, actions: list[ev.Action]) -> None:
        """A good world: every start succeeds at once, every stop is obeyed."""
        todo = list(actions)
        while todo:
            action = todo.pop(0)
            match action:
                case ev.StartTemplate(proc=proc):
                    todo += self.feed(ev.TemplateReady(self.now, proc, True, "", "v1"))
                case ev.StartWorker(proc=proc):
                    todo += self.feed(ev.Forked(self.now, proc)) + self.feed(ev.WorkerReady(self.now, proc))
                case ev.RunStep(proc=proc) | ev.StopProc(proc=proc) | ev.KillProc(proc=proc):
                    if proc in self.alive:
                        self.alive.discard(proc)
                        todo += self.feed(ev.ProcExited(self.now, proc, ev.ExitStatus()))

    def teardown(self) -> None:
        if not hasattr(self, "s"):
            return
        self.progress()
        self.stops()

    def progress(self) -> None:
        """Once the DB answers and every process behaves, the wanted set serves in full within a
        bounded time: the longest backoff, a template's deadline and a stop's grace."""
        if self.s.desired.stop is not None:
            return
        for proc in sorted(self.alive):  # whatever was half-way: it behaves from now on
            self.behave(
                [ev.StartTemplate(proc, self.cfg)]
                if self.kinds[proc] is ev.StartTemplate
                else [ev.StartWorker(proc, None, self.cfg)]
                if self.kinds[proc] is ev.StartWorker
                else [ev.StopProc(proc)]
            )
        bound = (
            self.now
            + self.cfg.restart.backoff_max * 1.3
            + self.cfg.server.template_timeout
            + self.cfg.server.stop_grace
            + 2 * m.FORK_TIMEOUT
        )
        while self.now < bound and not self.in_full():
            if self.s.desired.await_change:
                self.behave(self.feed(ev.ReloadRequested(self.now, why="the code was fixed")))
            self.behave(self.feed(ev.DbProbed(self.now, True)))
            wake = m.next_wake(self.s)
            self.now = max(self.now + 0.01, min(wake or self.now + 1.0, self.now + 1.0))
            self.behave(self.feed(ev.Tick(self.now)))
        assert self.in_full() or self.s.desired.stop is not None, f"no progress by {self.now}: {self.s.observed}"

    def in_full(self) -> bool:
        target = self.s.desired.target
        return sum(1 for w in m.serving(self.s) if w.generation == target.number) == target.size

    def stops(self) -> None:
        """Whatever happened, a stop request ends in Exit once the retired processes obey."""
        self.now += 2.0
        self.feed(ev.StopRequested(self.now))
        for _ in range(10):
            if self.s.done:
                break
            for proc in sorted(self.alive):
                self.alive.discard(proc)
                self.feed(ev.ProcExited(self.now, proc, ev.ExitStatus(signal=15)))
            self.now += self.cfg.server.stop_grace + 1
            self.feed(ev.Tick(self.now))
        assert self.s.done and not self.alive


PoolHistory.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_random_histories_keep_the_invariants_and_make_progress = PoolHistory.TestCase
