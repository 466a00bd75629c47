"""The real I/O shell, in process, with a fake world behind it (tests/unit/shell_world.py):
what it spawns, signals and tells the machine when processes start, die, die before saying
their pid, reuse pids, fail to spawn, and when a template dies in the middle of a fork."""

from __future__ import annotations

import errno
import signal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from launcher.supervisor import machine
from launcher.supervisor.events import ExitStatus
from tests.unit.shell_world import Harness


def workers(h: Harness) -> list[int]:
    return [f.pid for f in h.world.fakes if f.alive and f.kind == "worker"]


def templates(h: Harness) -> list[int]:
    return [f.pid for f in h.world.fakes if f.alive and f.kind == "template"]


def end(h: Harness, pid: int, status: ExitStatus) -> None:
    h.world.end(next(f for f in h.world.fakes if f.alive and f.pid == pid), status)


def test_workers_forked_from_the_template_serve_and_a_stop_exits_0() -> None:
    h = Harness({"LAUNCHER_SERVER_WORKERS": "2"})
    h.run(0.3)
    assert h.serving() == 2 and len(workers(h)) == 2
    assert h.stop() == 0
    assert not [f for f in h.world.fakes if f.alive] and not h.world.wrong_signals


def test_a_worker_that_exits_0_is_replaced() -> None:
    h = Harness()
    h.run(0.3)
    (first,) = workers(h)
    end(h, first, ExitStatus(code=0))
    h.run(0.3)
    assert h.serving() == 1 and workers(h) != [first] or h.world.fakes[-1].start != 0
    assert h.stop() == 0


def test_a_worker_that_dies_before_the_shell_reads_its_pid_is_still_replaced() -> None:
    h = Harness()
    h.run(0.3)
    (template,) = [f for f in h.world.fakes if f.kind == "template"]
    (worker,) = [f for f in h.world.fakes if f.kind == "worker"]
    h.world.end(worker, ExitStatus(signal=9))
    h.run(0.3)
    assert h.serving() == 1, "replaced, whichever the shell learnt first: the status or the pid"
    assert template.alive
    assert h.stop() == 0


def test_a_template_that_dies_before_forking_loses_no_worker() -> None:
    h = Harness()
    h.run(0.3)
    (worker,) = workers(h)
    (template,) = [f for f in h.world.fakes if f.kind == "template"]
    template.die_mid_fork = "before"
    end(h, worker, ExitStatus(code=1))
    h.run(0.5)
    assert h.serving() == 1, "the unborn worker counted as ended; a new template forked its replacement"
    assert h.stop() == 0 and not h.world.wrong_signals


def test_a_worker_forked_just_before_its_template_died_is_tracked() -> None:
    h = Harness()
    h.run(0.3)
    (worker,) = workers(h)
    (template,) = [f for f in h.world.fakes if f.kind == "template"]
    template.die_mid_fork = "after"
    end(h, worker, ExitStatus(code=1))
    h.run(0.5)
    orphan = [f for f in h.world.fakes if f.kind == "worker" and f.alive]
    assert orphan and h.serving() >= 1, "the worker said its own pid: the shell knows it"
    assert h.stop() == 0
    assert not [f for f in h.world.fakes if f.alive], "and stopped it at exit"


def test_a_spawn_that_fails_with_emfile_is_retried_not_an_exit() -> None:
    h = Harness({"LAUNCHER_SERVER_WORKERS": "2"})
    h.run(0.3)
    first = workers(h)[0]
    h.world.fail_next = errno.EMFILE
    end(h, first, ExitStatus(code=1))
    h.run(0.5)
    assert h.serving() == 2 and h.sup.code is None
    assert h.stop() == 0


def test_a_template_that_cannot_be_spawned_with_nothing_serving_ends_with_71() -> None:
    h = Harness({"LAUNCHER_RESTART_MAX_RESTARTS": "1", "LAUNCHER_RESTART_WINDOW": "500ms"})
    h.run(0.3)
    (worker,) = workers(h)
    (template,) = [f for f in h.world.fakes if f.kind == "template"]
    h.world.exhausted = True  # every spawn fails with EAGAIN, as at pids.max
    h.world.end(template, ExitStatus(signal=9))
    h.world.end(next(f for f in h.world.fakes if f.pid == worker), ExitStatus(signal=9))
    h.run(2.0)
    assert h.sup.code == 71


def test_a_stale_status_of_a_reused_pid_never_kills_a_new_worker() -> None:
    h = Harness({"LAUNCHER_SERVER_WORKERS": "3"})
    h.run(0.3)
    for _ in range(6):  # churn: pids come back from the pool with new start times
        end(h, workers(h)[0], ExitStatus(code=1))
        h.run(0.2)
    assert h.serving() == 3 and not h.world.wrong_signals
    assert h.stop() == 0


class ShellHistory(RuleBasedStateMachine):
    """Random histories of the world against the real shell."""

    @initialize(size=st.integers(1, 3))
    def begin(self, size: int) -> None:
        self.h = Harness({"LAUNCHER_SERVER_WORKERS": str(size), "LAUNCHER_RESTART_MAX_RESTARTS": "1000"})
        self.h.run(0.1)

    @rule(seconds=st.sampled_from([0.005, 0.02, 0.1]))
    def time_passes(self, seconds: float) -> None:
        self.h.run(seconds)

    @rule(
        pick=st.integers(0, 99), status=st.sampled_from([ExitStatus(code=0), ExitStatus(code=3), ExitStatus(signal=9)])
    )
    def a_process_dies(self, pick: int, status: ExitStatus) -> None:
        """`pick` chooses among whatever lives then: the draw cannot depend on the world's state."""
        alive = [f for f in self.h.world.fakes if f.alive]
        if alive:
            self.h.world.end(alive[pick % len(alive)], status)

    @rule(code=st.sampled_from([errno.EMFILE, errno.EAGAIN]))
    def the_next_spawn_fails(self, code: int) -> None:
        self.h.world.fail_next = code

    @rule(pick=st.integers(0, 99), when=st.sampled_from(["before", "after"]))
    def a_template_will_die_mid_fork(self, pick: int, when: str) -> None:
        alive = [f for f in self.h.world.fakes if f.alive and f.kind == "template"]
        if alive:
            alive[pick % len(alive)].die_mid_fork = when

    @rule(up=st.booleans())
    def the_db_answers(self, up: bool) -> None:
        self.h.world.db_up = up
        self.h.probe()

    @rule()
    def reload(self) -> None:
        self.h.sup.on_signal(signal.SIGHUP)

    @invariant()
    def only_retired_processes_are_signalled(self) -> None:
        if hasattr(self, "h"):
            assert not self.h.world.wrong_signals, self.h.world.wrong_signals

    @invariant()
    def the_shell_and_the_machine_agree_on_what_runs(self) -> None:
        if not hasattr(self, "h"):
            return
        known = {e.proc for e in self.h.sup.table.running()}
        o = self.h.sup.state.observed
        live = {t.id for t in o.templates} | {w.id for w in o.workers} | {r.id for r in o.retiring}
        live |= {o.step.id} if o.step is not None else set()
        assert known <= live, f"the shell tracks processes the machine forgot: {known - live}"

    def teardown(self) -> None:
        if not hasattr(self, "h"):
            return
        self.h.world.db_up = True
        for _ in range(40):  # the world behaves from now on: the pool comes back in full
            self.h.probe()
            self.h.run(0.05)
            if self.h.serving() == self.h.sup.state.desired.target.size:
                break
        assert self.h.serving() == self.h.sup.state.desired.target.size, self.h.sup.state.observed
        assert self.h.stop() == 0
        assert not [f for f in self.h.world.fakes if f.alive], "nothing left behind"
        assert machine.phase(self.h.sup.state) is machine.Phase.STOPPING


ShellHistory.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
test_random_histories_of_the_real_shell = ShellHistory.TestCase
