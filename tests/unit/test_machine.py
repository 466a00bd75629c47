"""Every transition of the pool's state machine, with no process, socket or sleep."""
from __future__ import annotations

import signal
from dataclasses import replace
from typing import Any

import pytest

from launcher.config import Config, Policy, PrestartConfig, PrestartStep
from launcher.supervisor import machine as m
from tests.unit.machine_invariants import check

NO_STEPS = Config(prestart=PrestartConfig(steps=()))
MIGRATE = PrestartStep(name="migrate", command=("true",))
TEMPLATE = 1  # the first process of every run is the template


def cfg(**kw: Any) -> Config:
    return replace(NO_STEPS, **kw)


def steps(*items: PrestartStep, after_db_loss: bool = False) -> Config:
    return cfg(prestart=PrestartConfig(steps=items, after_db_loss=after_db_loss))


class Run:
    """Feed events to the machine and keep the actions, as the shell would; the invariants
    are checked after every step."""

    def __init__(self, config: Config = NO_STEPS, size: int = 1) -> None:
        self.cfg = config
        self.s = m.initial(0.0, size)
        self.actions: list[m.Action] = []

    def __call__(self, event: m.Event) -> list[m.Action]:
        before = self.s
        self.s, actions = m.step(self.cfg, self.s, event)
        check(self.cfg, before, self.s, actions)
        self.actions += actions
        return [a for a in actions if not isinstance(a, m.Log)]

    def logs(self) -> str:
        return "\n".join(a.message for a in self.actions if isinstance(a, m.Log))

    def up(self, now: float) -> list[m.Action]:
        return self(m.DbProbed(now, True))

    def down(self, now: float, reason: str = "refused") -> list[m.Action]:
        return self(m.DbProbed(now, False, reason, "detail"))

    def template_ready(self, now: float, proc: int = TEMPLATE, warm: bool = True) -> list[m.Action]:
        return self(m.TemplateReady(now, proc, warm, "" if warm else "threads: poller"))

    def serving(self, now: float = 0.0) -> list[int]:
        """Bring the machine to RUNNING and return the serving workers' ids."""
        self(m.Tick(now))
        started = started_workers(self.template_ready(now + 0.2) + self.up(now + 0.3))
        assert len(started) == self.s.size, self.actions
        for proc in started:
            self(m.WorkerReady(now + 0.4, proc))
        return started


def started_workers(actions: list[m.Action]) -> list[int]:
    return [a.proc for a in actions if isinstance(a, m.StartWorker)]


def exited(now: float, proc: int, code: int = 0) -> m.ProcExited:
    return m.ProcExited(now, proc, m.ExitStatus(code=code), rand=0.5)


def killed(now: float, proc: int, sig: int = signal.SIGTERM) -> m.ProcExited:
    return m.ProcExited(now, proc, m.ExitStatus(signal=sig))


def ids(s: m.State) -> list[int]:
    return [w.id for w in m.serving(s)]


# The template and the first workers ----------------------------------------------------

def test_the_template_is_built_at_once_even_while_the_db_is_down() -> None:
    run = Run()
    assert run.down(0.0) == [m.StartTemplate(TEMPLATE)], "it imports the app, which needs no DB"
    assert m.phase(run.s) is m.Phase.WAITING_DB
    assert m.accepting(run.s)


def test_no_worker_starts_before_the_db_answers() -> None:
    run = Run(size=2)
    run.down(0.0)
    assert run.template_ready(1.0) == []
    assert run.up(2.0) == [m.StartWorker(2, TEMPLATE), m.StartWorker(3, TEMPLATE)]
    assert not m.accepting(run.s), "the launcher stops accepting when the workers start"


def test_workers_wait_for_the_template_rather_than_start_cold() -> None:
    run = Run()
    run.up(0.0)
    assert run.up(0.5) == []
    assert run.template_ready(1.0) == [m.StartWorker(2, TEMPLATE)]


def test_the_shell_may_spawn_the_template_before_the_machine_exists() -> None:
    run = Run()
    run.s = m.initial(0.0, 1, template_spawned=True)
    assert run.up(0.1) == []
    assert run.template_ready(0.5) == [m.StartWorker(2, TEMPLATE)]


def test_a_template_with_threads_is_retired_and_workers_start_cold() -> None:
    run = Run(size=2)
    run.up(0.0)
    assert run.template_ready(1.0, warm=False) == [m.StopProc(TEMPLATE), m.StartWorker(2, None),
                                                   m.StartWorker(3, None)]
    assert "cannot fork safely (threads: poller); workers start cold" in run.logs()
    run(killed(1.5, TEMPLATE))
    assert run(exited(20.0, 2, 1)) == [m.StartWorker(4, None)], "the replacement starts cold too"


def test_worker_ready_means_running() -> None:
    run = Run(size=2)
    assert len(run.serving()) == 2
    assert m.phase(run.s) is m.Phase.RUNNING


def test_prestart_steps_run_in_order_before_the_first_worker() -> None:
    run = Run(steps(PrestartStep(name="a", command=("true",)), PrestartStep(name="b", command=("true",))))
    run(m.Tick(0.0))
    run.template_ready(0.0)
    assert run.up(0.1) == [m.RunStep(2, 0)]
    assert run(exited(1.0, 2)) == [m.RunStep(3, 1)]
    assert run(exited(2.0, 3)) == [m.StartWorker(4, TEMPLATE)]


def test_failed_prestart_step_is_retried_after_backoff_and_no_worker_starts() -> None:
    run = Run(steps(MIGRATE))
    run(m.Tick(0.0)), run.template_ready(0.1)
    run.up(0.2)
    assert run(exited(1.0, 2, code=1)) == []
    assert "prestart step 'migrate' failed (exit code 1)" in run.logs()
    wake = m.next_wake(run.cfg, run.s)
    assert wake is not None and wake > 1.0
    assert run(m.Tick(wake)) == [m.RunStep(3, 0)]


def test_prestart_step_past_its_timeout_is_killed_and_counts_as_failed() -> None:
    run = Run(steps(PrestartStep(name="migrate", command=("sleep", "99"), timeout=5.0)))
    run(m.Tick(0.0))
    run.up(0.1)
    assert run(m.Tick(5.1)) == [m.KillProc(2)]
    run(killed(5.2, 2, signal.SIGKILL))
    assert "failed (timed out)" in run.logs()


def _lose_db_and_return(run: Run) -> list[m.Action]:
    run(m.Tick(0.0)), run.template_ready(0.1), run.up(0.2)
    run(exited(0.5, 2))
    (worker,) = [w.id for w in run.s.workers]
    run(m.WorkerReady(1.0, worker))
    run.down(30.0), run.down(31.0)
    run(killed(31.5, worker))
    return run.up(40.0)


def test_prestart_is_not_run_again_after_a_db_loss_by_default() -> None:
    run = Run(replace(steps(MIGRATE), on_db_loss=Policy.RESTART))
    assert _lose_db_and_return(run) == [m.StartWorker(4, TEMPLATE)]


def test_prestart_runs_again_after_a_db_loss_when_configured() -> None:
    run = Run(replace(steps(MIGRATE, after_db_loss=True), on_db_loss=Policy.RESTART))
    assert _lose_db_and_return(run) == [m.RunStep(4, 0)]


# Workers that end -------------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 3])
def test_a_worker_that_exits_with_any_code_is_replaced_alone(code: int) -> None:
    run = Run(size=2)
    first, second = run.serving()
    assert run(exited(20.0, first, code)) == [m.StartWorker(second + 1, TEMPLATE)], "at once, from the template"
    assert ids(run.s) == [second], "the other worker serves on"
    assert not m.accepting(run.s)


def test_a_worker_killed_by_a_signal_is_replaced() -> None:
    run = Run()
    (worker,) = run.serving()
    assert run(killed(20.0, worker, signal.SIGKILL)) == [m.StartWorker(worker + 1, TEMPLATE)]
    assert "killed by signal 9 (SIGKILL)" in run.logs()


def test_the_first_replacement_is_immediate_then_the_backoff_grows_and_is_capped() -> None:
    c = cfg()
    delays = [m.backoff_delay(c, attempt, rand=0.5) for attempt in range(14)]
    assert delays[:5] == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8])
    assert max(delays) == pytest.approx(c.restart.backoff_max)


def test_backoff_jitter_stays_within_its_fraction() -> None:
    c = cfg()
    low, high = m.backoff_delay(c, 4, 0.0), m.backoff_delay(c, 4, 1.0)
    assert low == pytest.approx(0.8 * 0.8) and high == pytest.approx(0.8 * 1.2)


def test_a_quick_second_crash_backs_off_and_the_launcher_answers_meanwhile() -> None:
    run = Run()
    (worker,) = run.serving()
    (second,) = started_workers(run(exited(20.0, worker, 1)))
    run(m.WorkerReady(20.1, second))
    assert run(exited(21.0, second, 1)) == []
    assert m.phase(run.s) is m.Phase.BACKOFF and m.accepting(run.s)
    wake = m.next_wake(run.cfg, run.s)
    assert wake == pytest.approx(21.1)
    assert wake is not None and started_workers(run(m.Tick(wake))) == [second + 1]


def test_backoff_resets_after_a_worker_stayed_up_long_enough() -> None:
    run = Run()
    (worker,) = run.serving()
    now = 1.0
    for _ in range(3):
        run(exited(now, worker, 1))
        now = run.s.budget.backoff_until or now
        run(m.Tick(now))
        (worker,) = [w.id for w in run.s.workers]
        run(m.WorkerReady(now, worker))
        now += 0.5
    assert run.s.budget.attempt == 3
    run(exited(now + 11.0, worker, 1))
    assert run.s.budget.attempt == 1, "the delay restarted from nothing"


def test_crash_loop_of_the_whole_pool_past_the_budget_exits_70() -> None:
    run = Run(cfg(restart=replace(NO_STEPS.restart, max_restarts=2)), size=2)
    first, second = run.serving()
    run(exited(1.0, first, 1))
    run(exited(1.1, second, 1))
    actions = run(exited(1.2, run.s.workers[0].id, 1))
    assert m.StopProc(run.s.retiring[0].id) in actions
    assert "giving up with exit 70" in run.logs()
    for r in run.s.retiring:
        actions = run(killed(2.0, r.id))
    assert actions == [m.Exit(70)]


def test_restarts_outside_the_window_do_not_count() -> None:
    run = Run(cfg(restart=replace(NO_STEPS.restart, max_restarts=1, window=10.0)))
    (worker,) = run.serving()
    (second,) = started_workers(run(exited(1.0, worker, 1)))
    run(m.WorkerReady(1.1, second))
    assert started_workers(run(exited(30.0, second, 1))) == [second + 1]


def test_exit_before_ready_counts_as_a_crash_and_is_logged_as_such() -> None:
    run = Run()
    run(m.Tick(0.0)), run.template_ready(0.1)
    (worker,) = started_workers(run.up(0.2))
    run(exited(0.5, worker, 3))
    assert "worker 2 exited before it was ready (exit code 3)" in run.logs()
    assert len(run.s.budget.restarts) == 1


def test_worker_not_ready_in_time_is_killed_and_replaced() -> None:
    run = Run()
    run(m.Tick(0.0)), run.template_ready(0.1)
    (worker,) = started_workers(run.up(0.2))
    assert run(m.Tick(30.2)) == [m.KillProc(worker), m.StartWorker(worker + 1, TEMPLATE)]
    assert "not ready after 30s" in run.logs()


def test_workers_late_together_past_the_budget_are_each_stopped_once() -> None:
    run = Run(cfg(restart=replace(NO_STEPS.restart, max_restarts=1)), size=2)
    run(m.Tick(0.0)), run.template_ready(0.1)
    first, second = started_workers(run.up(0.2))
    (third,) = started_workers(run(exited(10.0, first, 1)))  # the one crash the budget allows
    stops = run(m.Tick(40.5))  # the second and the third are both late: the first kill ends the budget
    stopped = sorted(a.proc for a in stops if isinstance(a, (m.StopProc, m.KillProc)))
    assert stopped == sorted([TEMPLATE, second, third]), "each once: the template, and both late workers"
    assert "giving up with exit 70" in run.logs()


def test_liveness_failures_kill_the_worker_and_replace_it() -> None:
    run = Run()
    (worker,) = run.serving()
    assert run(m.LivenessChecked(5.0, worker, False, "no answer")) == []
    assert run(m.LivenessChecked(6.0, worker, False, "no answer")) == []
    assert run(m.LivenessChecked(7.0, worker, False, "no answer")) == [m.KillProc(worker),
                                                                       m.StartWorker(worker + 1, TEMPLATE)]


def test_one_good_liveness_check_resets_the_count() -> None:
    run = Run()
    (worker,) = run.serving()
    run(m.LivenessChecked(5.0, worker, False, "x")), run(m.LivenessChecked(6.0, worker, False, "x"))
    run(m.LivenessChecked(7.0, worker, True))
    assert run(m.LivenessChecked(8.0, worker, False, "x")) == []


# The template that ends -------------------------------------------------------------------

def test_a_dead_template_is_rebuilt_while_the_workers_serve() -> None:
    run = Run(size=2)
    workers = run.serving()
    assert run(killed(5.0, TEMPLATE, signal.SIGKILL)) == [m.StartTemplate(4)]
    assert ids(run.s) == workers
    assert run(exited(6.0, workers[0], 1)) == [], "the replacement waits for the new template"
    assert run.template_ready(6.5, proc=4) == [m.StartWorker(5, 4)]


# The DB that goes away ----------------------------------------------------------------------

def test_single_failed_probe_is_not_a_db_loss() -> None:
    run = Run()
    run.serving()
    assert run.down(5.0) == []
    assert m.phase(run.s) is m.Phase.RUNNING


def test_db_loss_under_restart_stops_every_worker_and_its_return_starts_a_full_set() -> None:
    run = Run(cfg(on_db_loss=Policy.RESTART), size=2)
    first, second = run.serving()
    run.down(5.0)
    assert run.down(6.0) == [m.StopProc(first), m.StopProc(second)]
    assert m.phase(run.s) is m.Phase.WAITING_DB and m.accepting(run.s)
    assert "database lost after 2 failed probes" in run.logs()
    run(killed(6.5, first)), run(killed(6.6, second))
    assert run(exited(7.0, 1, 1)) == [m.StartTemplate(4)], "a template crash is rebuilt; no worker while DB is down"
    run.template_ready(7.5, proc=4)
    assert run.up(9.0) == [m.StartWorker(5, 4), m.StartWorker(6, 4)]


def test_db_loss_under_swap_keeps_the_workers_and_its_return_swaps_in_a_full_set() -> None:
    run = Run(cfg(on_db_loss=Policy.SWAP), size=2)
    old = run.serving()
    run.down(5.0)
    assert run.down(6.0) == []
    assert m.phase(run.s) is m.Phase.RUNNING, "the old workers serve what needs no DB"
    assert run.up(9.0) == [m.Warm(tuple(old))], \
        "one answer could be a flap: the old workers reconnect meanwhile, before a client pays for it"
    new = started_workers(run.up(10.0))
    assert len(new) == 2
    assert run(m.WorkerReady(9.1, new[0])) == [], "the old set stays until the whole new set serves"
    assert run(m.WorkerReady(9.2, new[1])) == [m.StopProc(old[0]), m.StopProc(old[1])]
    assert ids(run.s) == new


def test_swap_new_worker_dying_before_ready_leaves_the_old_ones_serving() -> None:
    run = Run(cfg(on_db_loss=Policy.SWAP))
    (old,) = run.serving()
    run.down(5.0), run.down(6.0), run.up(9.0)
    (new,) = started_workers(run.up(10.0))
    assert started_workers(run(exited(10.5, new, 3))) == [new + 1], "the swap is tried again"
    assert ids(run.s) == [old]


def test_a_db_that_flaps_does_not_swap_the_workers() -> None:
    run = Run(cfg(on_db_loss=Policy.SWAP))
    run.serving()
    for now in (5.0, 10.0, 15.0):
        run.down(now), run.down(now + 1), run.up(now + 2)
        run.down(now + 3)
    assert started_workers(run.actions[4:]) == []


def test_under_swap_a_worker_lost_while_the_db_is_down_is_replaced() -> None:
    run = Run(cfg(on_db_loss=Policy.SWAP), size=2)
    first, second = run.serving()
    run.down(5.0), run.down(6.0)
    assert started_workers(run(exited(7.0, first, 1))) == [second + 1]


def test_db_loss_under_keep_leaves_the_workers_alone_and_its_return_warms_them() -> None:
    run = Run(cfg(on_db_loss=Policy.KEEP), size=2)
    workers = run.serving()
    run.down(5.0)
    assert run.down(6.0) == []
    assert run.up(9.0) == [m.Warm(tuple(workers))]
    assert run.up(10.0) == [], "a return warms them, not every answer"


def test_db_loss_under_exit_stops_the_workers_then_exits_69() -> None:
    run = Run(cfg(on_db_loss=Policy.EXIT))
    (worker,) = run.serving()
    run.down(5.0)
    assert run.down(6.0) == [m.StopProc(worker), m.StopProc(TEMPLATE)]
    run(killed(7.0, worker))
    assert run(killed(7.1, TEMPLATE)) == [m.Exit(69)]


# Reload and resize ---------------------------------------------------------------------------

def test_reload_loads_the_new_code_in_a_new_template_first_then_swaps_the_workers() -> None:
    run = Run(size=2)
    old = run.serving()
    assert run(m.ReloadRequested(3.0)) == [m.StartTemplate(4)]
    actions = run.template_ready(4.0, proc=4)
    assert m.StopProc(TEMPLATE) in actions, "the old template goes once the new one is ready"
    assert started_workers(actions) == [5, 6]
    run(m.WorkerReady(4.1, 5))
    assert run(m.WorkerReady(4.2, 6)) == [m.StopProc(old[0]), m.StopProc(old[1])]


def test_a_reload_whose_code_does_not_load_leaves_the_workers_serving() -> None:
    run = Run()
    (worker,) = run.serving()
    run(m.ReloadRequested(3.0))
    assert run(exited(4.0, 3, 1)) == []
    assert "reload failed" in run.logs()
    assert ids(run.s) == [worker] and run.s.budget.restarts == ()
    assert run(m.ReloadRequested(10.0)) == [m.StartTemplate(4)], "the next SIGHUP tries again"


def test_reload_while_stopping_is_ignored() -> None:
    run = Run()
    run.serving()
    run(m.StopRequested(1.0))
    assert run(m.ReloadRequested(1.5)) == []


def test_sigttin_adds_a_worker_and_sigttou_removes_one_but_never_the_last() -> None:
    run = Run(size=2)
    first, second = run.serving()
    (third,) = started_workers(run(m.Resize(5.0, +1)))
    run(m.WorkerReady(5.1, third))
    assert run(m.Resize(6.0, -1)) == [m.StopProc(third)], "the newest goes first"
    assert run(m.Resize(7.0, -1)) == [m.StopProc(second)]
    assert run(m.Resize(8.0, -1)) == []
    assert run.s.size == 1 and ids(run.s) == [first]


# Stopping ------------------------------------------------------------------------------------

def test_stop_while_waiting_for_the_db_retires_the_template_and_exits_0() -> None:
    run = Run()
    run.down(1.0)
    assert run(m.StopRequested(2.0)) == [m.StopProc(TEMPLATE)]
    assert run(killed(2.1, TEMPLATE)) == [m.Exit(0)]


def test_stop_while_running_drains_every_worker_then_exits_0() -> None:
    run = Run(size=2)
    first, second = run.serving()
    assert run(m.StopRequested(5.0)) == [m.StopProc(first), m.StopProc(second), m.StopProc(TEMPLATE)]
    assert m.phase(run.s) is m.Phase.STOPPING
    run(killed(6.0, first)), run(killed(6.0, TEMPLATE))
    assert run(killed(6.1, second)) == [m.Exit(0)]


def test_stop_during_backoff_starts_nothing_more() -> None:
    run = Run()
    (worker,) = run.serving()
    (second,) = started_workers(run(exited(5.0, worker, 1)))
    run(exited(5.01, second, 1))
    assert run(m.StopRequested(5.02)) == [m.StopProc(TEMPLATE)]
    assert run(killed(5.1, TEMPLATE)) == [m.Exit(0)]
    assert run(m.Tick(10.0)) == []


def test_a_worker_still_running_after_the_grace_period_is_killed() -> None:
    run = Run()
    (worker,) = run.serving()
    run(m.StopRequested(5.0))
    assert m.next_wake(run.cfg, run.s) == pytest.approx(15.0)
    assert run(m.Tick(15.0)) == [m.KillProc(worker), m.KillProc(TEMPLATE)]


def test_second_stop_signal_escalates_to_kill_at_once() -> None:
    run = Run()
    (worker,) = run.serving()
    run(m.StopRequested(5.0))
    assert run(m.StopRequested(7.0)) == [m.KillProc(worker), m.KillProc(TEMPLATE)]


def test_stop_signal_delivered_twice_at_once_still_drains() -> None:
    run = Run()
    run.serving()
    run(m.StopRequested(5.0))
    assert run(m.StopRequested(5.001)) == []


def test_startup_deadline_gives_up_with_69() -> None:
    run = Run(cfg(probe=replace(NO_STEPS.probe, startup_timeout=10.0)))
    run.down(1.0)
    assert m.next_wake(run.cfg, run.s) == 10.0
    assert run(m.Tick(10.0)) == [m.StopProc(TEMPLATE)]
    assert run(killed(10.1, TEMPLATE)) == [m.Exit(69)]
    assert "did not answer within startup_timeout=10s" in run.logs()


def test_after_the_startup_deadline_the_next_wake_is_the_kill_deadline_not_the_past() -> None:
    """A wake time already past would have the shell tick without end while the template stops."""
    run = Run(cfg(probe=replace(NO_STEPS.probe, startup_timeout=10.0)))
    run.down(1.0)
    run(m.Tick(10.0))
    assert m.next_wake(run.cfg, run.s) == 10.0 + run.cfg.server.stop_grace


def test_no_startup_deadline_means_waiting_forever() -> None:
    run = Run()
    run.down(0.0)
    assert run.down(86400.0) == []
    assert m.next_wake(run.cfg, run.s) is None


def test_repeated_identical_probe_failures_are_summarised() -> None:
    run = Run()
    for tick in range(0, 61 * 4):  # four probes a second for a minute
        run.down(tick / 4)
    lines = [line for line in run.logs().splitlines() if "database" in line]
    assert len(lines) == 3, lines  # the first failure, then one summary every 30 s
    assert "(121 probes in a row)" in lines[1]


def test_a_new_failure_reason_is_logged_at_once() -> None:
    run = Run()
    run.down(1.0, "refused"), run.down(2.0, "refused"), run.down(3.0, "access_denied")
    assert "access_denied" in run.logs()


def test_nothing_happens_after_exit() -> None:
    run = Run()
    run(m.StopRequested(1.0))
    assert run.up(2.0) == []
