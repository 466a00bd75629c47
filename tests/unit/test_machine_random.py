"""Random event histories against the pool machine (Hypothesis stateful testing): the
invariants hold after every step, the machine never loses track of a process, and every
stop request ends in an exit with no process left."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from launcher.config import Config, Policy, PrestartConfig, PrestartStep
from launcher.supervisor import machine as m
from tests.unit.machine_invariants import check, live_ids

STARTS = (m.StartTemplate, m.StartWorker, m.RunStep)


class PoolHistory(RuleBasedStateMachine):
    """A model of the processes: what the machine started and has not seen exit yet."""

    @initialize(policy=st.sampled_from(list(Policy)), size=st.integers(1, 4), with_step=st.booleans(),
                after_db_loss=st.booleans(), max_restarts=st.integers(0, 6))
    def begin(self, policy: Policy, size: int, with_step: bool, after_db_loss: bool, max_restarts: int) -> None:
        base = Config()
        prestart = PrestartConfig(steps=(PrestartStep(name="migrate", command=("true",)),) if with_step else (),
                                  after_db_loss=after_db_loss)
        self.cfg = replace(base, on_db_loss=policy, prestart=prestart,
                           restart=replace(base.restart, max_restarts=max_restarts))
        self.now = 0.0
        self.s = m.initial(0.0, size)
        self.alive: set[int] = set()
        self.templates: set[int] = set()
        self.workers: set[int] = set()
        self.feed(m.Tick(0.0))

    def feed(self, event: m.Event) -> None:
        before = self.s
        self.s, actions = m.step(self.cfg, self.s, event)
        check(self.cfg, before, self.s, actions)
        for action in actions:
            if isinstance(action, STARTS):
                assert action.proc not in self.alive
                self.alive.add(action.proc)
            if isinstance(action, m.StartTemplate):
                self.templates.add(action.proc)
            if isinstance(action, m.StartWorker):
                self.workers.add(action.proc)

    @invariant()
    def the_machine_knows_every_live_process(self) -> None:
        if hasattr(self, "s"):
            assert set(live_ids(self.s)) == self.alive

    @rule(dt=st.sampled_from([0.01, 0.1, 0.5, 2.0, 11.0, 31.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.feed(m.Tick(self.now))

    @rule(ok=st.booleans(), reason=st.sampled_from(["refused", "timeout"]))
    def probe(self, ok: bool, reason: str) -> None:
        self.feed(m.DbProbed(self.now, ok, "" if ok else reason, ""))

    @precondition(lambda self: self.alive)
    @rule(data=st.data(), code=st.sampled_from([0, 1, 3, None]), rand=st.floats(0, 1))
    def a_process_ends(self, data: st.DataObject, code: int | None, rand: float) -> None:
        proc = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(proc)
        status = m.ExitStatus(code=code) if code is not None else m.ExitStatus(signal=9)
        self.feed(m.ProcExited(self.now, proc, status, rand))

    @precondition(lambda self: self.alive & self.templates)
    @rule(data=st.data(), warm=st.booleans())
    def a_template_is_ready(self, data: st.DataObject, warm: bool) -> None:
        proc = data.draw(st.sampled_from(sorted(self.alive & self.templates)))
        self.feed(m.TemplateReady(self.now, proc, warm, "" if warm else "threads: x"))

    @precondition(lambda self: self.alive & self.workers)
    @rule(data=st.data())
    def a_worker_is_ready(self, data: st.DataObject) -> None:
        self.feed(m.WorkerReady(self.now, data.draw(st.sampled_from(sorted(self.alive & self.workers)))))

    @precondition(lambda self: self.alive & self.workers)
    @rule(data=st.data(), ok=st.booleans())
    def liveness(self, data: st.DataObject, ok: bool) -> None:
        proc = data.draw(st.sampled_from(sorted(self.alive & self.workers)))
        self.feed(m.LivenessChecked(self.now, proc, ok, "" if ok else "no answer"))

    @rule()
    def reload(self) -> None:
        self.feed(m.ReloadRequested(self.now))

    @rule(delta=st.sampled_from([-1, 1]))
    def resize(self, delta: int) -> None:
        self.feed(m.Resize(self.now, delta))

    @rule()
    def stop(self) -> None:
        self.now += 0.01
        self.feed(m.StopRequested(self.now))

    def teardown(self) -> None:
        """Whatever happened, a stop request ends in Exit once the retired processes obey."""
        if not hasattr(self, "s"):
            return
        self.now += 2.0
        self.feed(m.StopRequested(self.now))
        for _ in range(10):
            if self.s.done:
                break
            for proc in sorted(self.alive):
                self.alive.discard(proc)
                self.feed(m.ProcExited(self.now, proc, m.ExitStatus(signal=15)))
            self.now += self.cfg.server.stop_grace + 1
            self.feed(m.Tick(self.now))
        assert self.s.done and not self.alive


PoolHistory.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_random_histories_keep_the_invariants = PoolHistory.TestCase
