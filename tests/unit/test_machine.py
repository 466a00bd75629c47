"""Every transition of the state machine, with no process, socket or sleep."""
from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from launcher.supervisor import machine as m
from launcher.config import Config, Policy, PrestartConfig, PrestartStep

NO_STEPS = Config(prestart=PrestartConfig(steps=()))
MIGRATE = PrestartStep(name="migrate", command=("true",))


def cfg(**kw: object) -> Config:
    return replace(NO_STEPS, **kw)


def steps(*items: PrestartStep, after_db_loss: bool = False) -> Config:
    return cfg(prestart=PrestartConfig(steps=items, after_db_loss=after_db_loss))


class Run:
    """Feed events to the machine and keep the actions, as the shell would."""

    def __init__(self, config: Config = NO_STEPS) -> None:
        self.cfg = config
        self.s = m.initial(0.0)
        self.actions: list[m.Action] = []

    def __call__(self, event: m.Event) -> list[m.Action]:
        self.s, actions = m.step(self.cfg, self.s, event)
        self.actions += actions
        return [a for a in actions if not isinstance(a, m.Log)]

    def logs(self) -> str:
        return "\n".join(a.message for a in self.actions if isinstance(a, m.Log))

    def up(self, now: float) -> list[m.Action]:
        return self(m.DbProbed(now, True))

    def down(self, now: float, reason: str = "refused") -> list[m.Action]:
        return self(m.DbProbed(now, False, reason, "detail"))

    def serving(self, now: float = 0.0) -> int:
        """Bring the machine to RUNNING and return the serving child's id."""
        go = [a for a in self.up(now) if isinstance(a, m.Go)]
        assert len(go) == 1, self.actions
        self(m.ChildReady(now + 0.5, go[0].proc))
        return go[0].proc


def released(actions: list[m.Action]) -> int:
    """The child that an event's actions released to serve."""
    (go,) = [a for a in actions if isinstance(a, m.Go)]
    return go.proc


def exited(now: float, proc: int, code: int = 0) -> m.ProcExited:
    return m.ProcExited(now, proc, m.ExitStatus(code=code), rand=0.5)


def test_a_child_is_parked_while_the_db_is_down() -> None:
    run = Run()
    assert run.down(1.0) == [m.StartChild(1)], "it imports the app while the DB is down"
    assert m.phase(run.s, 1.0) is m.Phase.WAITING_DB
    assert m.accepting(run.s), "a parked child serves nobody: the launcher answers 503"


def test_parked_child_is_released_once_the_db_answers() -> None:
    run = Run()
    run.down(1.0)
    assert run.up(2.0) == [m.Go(1)]
    assert m.phase(run.s, 2.0) is m.Phase.STARTING
    assert not m.accepting(run.s), "the launcher stops accepting when a child starts"


def test_db_up_at_once_spawns_and_releases_a_child() -> None:
    assert Run().up(0.0) == [m.StartChild(1), m.Go(1)]


def test_child_ready_means_running() -> None:
    run = Run()
    run.serving()
    assert m.phase(run.s, 1.0) is m.Phase.RUNNING


def test_no_child_is_parked_while_one_serves() -> None:
    run = Run()
    run.serving()
    assert run.s.standby is None
    assert run.down(5.0) == []


def test_parked_child_dying_counts_as_a_crash_and_backs_off() -> None:
    run = Run()
    run.down(0.0)
    assert run(exited(1.0, 1, code=1)) == []
    assert "child 1 exited before it was ready (exit code 1)" in run.logs()
    wake = m.next_wake(run.cfg, run.s)
    assert wake is not None
    assert run(m.Tick(wake)) == [m.StartChild(2)]


def test_prestart_steps_run_in_order_while_the_child_is_parked() -> None:
    run = Run(steps(PrestartStep(name="a", command=("true",)), PrestartStep(name="b", command=("true",))))
    assert run.up(0.0) == [m.RunStep(1, 0), m.StartChild(2)]
    assert run(exited(1.0, 1)) == [m.RunStep(3, 1)]
    assert run(exited(2.0, 3)) == [m.Go(2)]


def test_failed_prestart_step_is_retried_after_backoff_and_the_child_waits() -> None:
    run = Run(steps(PrestartStep(name="migrate", command=("false",))))
    run.up(0.0)
    assert run(exited(1.0, 1, code=1)) == []
    assert "prestart step 'migrate' failed (exit code 1)" in run.logs()
    wake = m.next_wake(run.cfg, run.s)
    assert wake is not None and wake > 1.0
    assert run(m.Tick(wake)) == [m.RunStep(3, 0)]


def test_prestart_step_past_its_timeout_is_killed_and_counts_as_failed() -> None:
    run = Run(steps(PrestartStep(name="migrate", command=("sleep", "99"), timeout=5.0)))
    run.up(0.0)
    assert run(m.Tick(5.0)) == [m.KillProc(1)]
    run(m.ProcExited(5.1, 1, m.ExitStatus(signal=signal.SIGKILL)))
    assert "failed (timed out)" in run.logs()


def _lose_db_and_return(run: Run) -> list[m.Action]:
    run.up(0.0)
    run(exited(0.5, 1))
    child = run.s.starting.id if run.s.starting else 0
    run(m.ChildReady(1.0, child))
    run.down(30.0), run.down(31.0)
    run(m.ProcExited(31.5, child, m.ExitStatus(signal=15)))
    return run.up(40.0)


def test_prestart_is_not_run_again_after_a_db_loss_by_default() -> None:
    assert _lose_db_and_return(Run(steps(MIGRATE))) == [m.Go(3)]


def test_prestart_runs_again_after_a_db_loss_when_configured() -> None:
    assert _lose_db_and_return(Run(steps(MIGRATE, after_db_loss=True))) == [m.RunStep(4, 0)]


def test_prestart_is_not_run_again_after_a_crash() -> None:
    run = Run(steps(MIGRATE, after_db_loss=True))
    run.up(0.0)
    run(exited(0.5, 1))
    run(m.ChildReady(1.0, 2))
    run(exited(20.0, 2, code=1))
    assert run(m.Tick(21.0)) == [m.StartChild(3), m.Go(3)], "a crash with the DB up needs no migration"


@pytest.mark.parametrize("code", [0, 1, 3])
def test_child_exit_with_any_code_is_restarted(code: int) -> None:
    run = Run()
    child = run.serving()
    assert run(exited(20.0, child, code)) == []
    assert m.phase(run.s, 20.0) is m.Phase.BACKOFF
    assert m.accepting(run.s), "the launcher answers 503 during backoff"
    wake = m.next_wake(run.cfg, run.s)
    assert wake is not None
    assert run(m.Tick(wake)) == [m.StartChild(child + 1), m.Go(child + 1)]


def test_child_killed_by_a_signal_is_restarted() -> None:
    run = Run()
    child = run.serving()
    run(m.ProcExited(20.0, child, m.ExitStatus(signal=9)))
    assert "killed by signal 9 (SIGKILL)" in run.logs()
    assert run(m.Tick(25.0)) == [m.StartChild(child + 1), m.Go(child + 1)]


def test_backoff_grows_exponentially_and_is_capped() -> None:
    c = cfg()
    delays = [m.backoff_delay(c, attempt, rand=0.5) for attempt in range(12)]
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert max(delays) == pytest.approx(c.restart.backoff_max)


def test_backoff_jitter_stays_within_its_fraction() -> None:
    c = cfg()
    low, high = m.backoff_delay(c, 3, 0.0), m.backoff_delay(c, 3, 1.0)
    assert low == pytest.approx(0.8 * 0.8) and high == pytest.approx(0.8 * 1.2)


def test_backoff_resets_after_the_child_stayed_up_long_enough() -> None:
    run = Run()
    child = run.serving()
    for _ in range(4):  # quick crashes grow the attempt count
        run(exited(run.s.serving.started + 1.0 if run.s.serving else 0.0, child, 1))
        wake = m.next_wake(run.cfg, run.s)
        assert wake is not None
        child = released(run(m.Tick(wake)))
        run(m.ChildReady(wake + 0.1, child))
    assert run.s.attempt == 4
    assert run.s.serving is not None
    run(exited(run.s.serving.started + 11.0, child, 1))
    assert run.s.attempt == 1, "the delay restarted from backoff_initial"


def test_crash_loop_past_the_budget_exits_70() -> None:
    run = Run(cfg(restart=replace(NO_STEPS.restart, max_restarts=2)))
    child, now = run.serving(), 1.0
    for _ in range(2):
        run(exited(now, child, 1))
        child, now = released(run(m.Tick(now + 5))), now + 6
    assert run(exited(now, child, 1)) == [m.Exit(70)]
    assert "giving up with exit 70" in run.logs()


def test_restarts_outside_the_window_do_not_count() -> None:
    run = Run(cfg(restart=replace(NO_STEPS.restart, max_restarts=1, window=10.0)))
    child = run.serving()
    run(exited(1.0, child, 1))
    assert run(exited(30.0, released(run(m.Tick(2.0))), 1)) == []


def test_exit_before_ready_counts_as_a_crash_and_is_logged_as_such() -> None:
    run = Run()
    run(exited(0.5, released(run.up(0.0)), 3))
    assert "exited before it was ready (exit code 3)" in run.logs()
    assert len(run.s.restarts) == 1


def test_child_not_ready_in_time_is_killed_and_restarted() -> None:
    run = Run()
    child = released(run.up(0.0))
    assert run(m.Tick(30.0)) == [m.KillProc(child)]
    assert "not ready after 30s" in run.logs()


def test_single_failed_probe_is_not_a_db_loss() -> None:
    run = Run()
    run.serving()
    assert run.down(5.0) == []
    assert m.phase(run.s, 5.0) is m.Phase.RUNNING


def test_db_loss_stops_the_child_gracefully_under_restart_policy() -> None:
    run = Run()
    child = run.serving()
    run.down(5.0)
    assert run.down(6.0) == [m.StopProc(child), m.StartChild(child + 1)], "drain, and park the next child"
    assert m.phase(run.s, 6.0) is m.Phase.WAITING_DB
    assert m.accepting(run.s)
    assert "database lost after 2 failed probes" in run.logs()


def test_db_return_starts_a_fresh_child_after_restart_policy_stopped_it() -> None:
    run = Run()
    child = run.serving()
    run.down(5.0), run.down(6.0)
    run(m.ProcExited(6.5, child, m.ExitStatus(signal=15)))
    assert run.up(9.0) == [m.Go(child + 1)], "the parked child serves at once"


def test_db_loss_under_keep_policy_leaves_the_child_alone() -> None:
    run = Run(cfg(on_db_loss=Policy.KEEP))
    run.serving()
    run.down(5.0)
    assert run.down(6.0) == []
    assert run.up(9.0) == []
    assert m.phase(run.s, 9.0) is m.Phase.RUNNING


def test_db_loss_under_exit_policy_stops_the_child_then_exits_69() -> None:
    run = Run(cfg(on_db_loss=Policy.EXIT))
    child = run.serving()
    run.down(5.0)
    assert run.down(6.0) == [m.StopProc(child)]
    assert run(m.ProcExited(7.0, child, m.ExitStatus(signal=15))) == [m.Exit(69)]


def test_swap_keeps_the_old_child_until_the_new_one_is_ready() -> None:
    run = Run(cfg(on_db_loss=Policy.SWAP))
    old = run.serving()
    run.down(5.0)
    assert run.down(6.0) == [m.StartChild(old + 1)], "the replacement is parked during the outage"
    assert m.phase(run.s, 6.0) is m.Phase.RUNNING, "the old child keeps serving what it can"
    assert run.up(9.0) == [m.Go(old + 1)]
    assert not m.accepting(run.s)
    assert run(m.ChildReady(9.5, old + 1)) == [m.StopProc(old)]
    assert run.s.serving is not None and run.s.serving.id == old + 1


def test_swap_new_child_dying_before_ready_leaves_the_old_one_serving() -> None:
    run = Run(cfg(on_db_loss=Policy.SWAP))
    old = run.serving()
    run.down(5.0), run.down(6.0), run.up(9.0)
    assert run(exited(9.5, old + 1, 3)) == []
    assert run.s.serving is not None and run.s.serving.id == old
    wake = m.next_wake(run.cfg, run.s)
    assert wake is not None
    assert run(m.Tick(wake)) == [m.StartChild(old + 2), m.Go(old + 2)], "the swap is tried again"


def test_reload_starts_a_new_child_beside_the_old_one() -> None:
    run = Run()
    old = run.serving()
    assert run(m.ReloadRequested(3.0)) == [m.StartChild(old + 1), m.Go(old + 1)]
    assert run(m.ChildReady(3.5, old + 1)) == [m.StopProc(old)]


def test_reload_without_a_serving_child_does_nothing() -> None:
    run = Run()
    run.down(0.5)
    assert run(m.ReloadRequested(1.0)) == []
    assert "nothing to reload" in run.logs()


def test_stop_while_waiting_for_the_db_retires_the_parked_child_and_exits_0() -> None:
    run = Run()
    run.down(1.0)
    assert run(m.StopRequested(2.0)) == [m.StopProc(1)]
    assert run(m.ProcExited(2.1, 1, m.ExitStatus(signal=15))) == [m.Exit(0)]


def test_stop_while_running_drains_the_child_then_exits_0() -> None:
    run = Run()
    child = run.serving()
    assert run(m.StopRequested(5.0)) == [m.StopProc(child)]
    assert m.phase(run.s, 5.0) is m.Phase.STOPPING
    assert run(m.ProcExited(6.0, child, m.ExitStatus(signal=15))) == [m.Exit(0)]


def test_stop_during_backoff_exits_0_without_starting_a_child() -> None:
    run = Run()
    child = run.serving()
    run(exited(5.0, child, 1))
    assert run(m.StopRequested(5.01)) == [m.Exit(0)]
    assert run(m.Tick(10.0)) == []


def test_child_still_running_after_the_grace_period_is_killed() -> None:
    run = Run()
    child = run.serving()
    run(m.StopRequested(5.0))
    assert m.next_wake(run.cfg, run.s) == pytest.approx(15.0)
    assert run(m.Tick(15.0)) == [m.KillProc(child)]


def test_second_stop_signal_escalates_to_kill_at_once() -> None:
    run = Run()
    child = run.serving()
    run(m.StopRequested(5.0))
    assert run(m.StopRequested(7.0)) == [m.KillProc(child)]


def test_stop_signal_delivered_twice_at_once_still_drains() -> None:
    run = Run()
    run.serving()
    run(m.StopRequested(5.0))
    assert run(m.StopRequested(5.001)) == []


def test_startup_deadline_gives_up_with_69() -> None:
    run = Run(cfg(probe=replace(NO_STEPS.probe, startup_timeout=10.0)))
    run.down(1.0)
    assert m.next_wake(run.cfg, run.s) == 10.0
    assert run(m.Tick(10.0)) == [m.StopProc(1)]
    assert run(m.ProcExited(10.1, 1, m.ExitStatus(signal=15))) == [m.Exit(69)]
    assert "did not answer within startup_timeout=10s" in run.logs()


def test_after_the_startup_deadline_the_next_wake_is_the_kill_deadline_not_the_past() -> None:
    """A wake time already past would have the shell tick without end while the child stops."""
    run = Run(cfg(probe=replace(NO_STEPS.probe, startup_timeout=10.0)))
    run.down(1.0)
    run(m.Tick(10.0))
    assert m.next_wake(run.cfg, run.s) == 10.0 + run.cfg.server.stop_grace


def test_no_startup_deadline_means_waiting_forever() -> None:
    run = Run()
    assert run.down(86400.0) == [m.StartChild(1)]
    assert m.next_wake(run.cfg, run.s) is None


def test_liveness_failures_kill_the_child_and_restart_it() -> None:
    run = Run()
    child = run.serving()
    assert run(m.LivenessChecked(5.0, child, False, "no answer")) == []
    assert run(m.LivenessChecked(6.0, child, False, "no answer")) == []
    assert run(m.LivenessChecked(7.0, child, False, "no answer")) == [m.KillProc(child)]
    after = run(m.ProcExited(7.1, child, m.ExitStatus(signal=9))) + run(m.Tick(10.0))
    assert after == [m.StartChild(child + 1), m.Go(child + 1)]


def test_one_good_liveness_check_resets_the_count() -> None:
    run = Run()
    child = run.serving()
    run(m.LivenessChecked(5.0, child, False, "x")), run(m.LivenessChecked(6.0, child, False, "x"))
    run(m.LivenessChecked(7.0, child, True))
    assert run(m.LivenessChecked(8.0, child, False, "x")) == []


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
