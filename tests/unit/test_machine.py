"""Every transition of the supervisor's state machine, with no process, socket or sleep.

Process ids come from the actions the machine returns; the tests assert on actions, phases
and what the launcher would answer, not on the state's insides."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from launcher.config import Config, PrestartConfig, PrestartStep, load
from launcher.exitcodes import ExitCode
from launcher.supervisor import events as ev
from launcher.supervisor import machine as m
from tests.unit.machine_invariants import check

MIGRATE = PrestartStep(name="migrate", command=("python", "-m", "api.migrate"))


def conf(steps: tuple[PrestartStep, ...] = (), after_db_loss: bool = False, **env: str) -> Config:
    """A config as the environment would give it: conf(server_workers="2") is LAUNCHER_SERVER_WORKERS=2."""
    base = load(None, {f"LAUNCHER_{key.upper()}": value for key, value in env.items()})
    return replace(base, prestart=PrestartConfig(steps=steps, after_db_loss=after_db_loss))


class Run:
    """Feed events to the machine and keep the actions, as the shell would; the invariants are
    checked after every step."""

    def __init__(self, config: Config | None = None, template_spawned: bool = True) -> None:
        self.s = m.initial(config or conf(), 0.0, template_spawned)
        self.actions: list[ev.Action] = []
        self.template = self.s.observed.templates[0].id if template_spawned else 0  # the one the shell spawned
        self.started: list[int] = []  # workers, in the order the machine started them

    def __call__(self, event: ev.Event) -> list[ev.Action]:
        before = self.s
        self.s, actions = m.step(self.s, event)
        check(before, self.s, actions)
        self.actions += actions
        self.started += workers_in(actions)
        return [a for a in actions if not isinstance(a, ev.Log)]

    def logs(self) -> str:
        return "\n".join(a.message for a in self.actions if isinstance(a, ev.Log))

    def up(self, now: float) -> list[ev.Action]:
        return self(ev.DbProbed(now, True))

    def down(self, now: float, reason: str = "refused") -> list[ev.Action]:
        return self(ev.DbProbed(now, False, reason, "detail"))

    def ready(self, now: float, proc: int, warm: bool = True, digest: str = "code-1") -> list[ev.Action]:
        return self(ev.TemplateReady(now, proc, warm, "" if warm else "threads: poller", digest))

    def serve(self, actions: list[ev.Action], now: float) -> list[int]:
        """Every worker those actions start forks and becomes ready; their ids."""
        started = workers_in(actions)
        for proc in started:
            self(ev.Forked(now, proc))
            self(ev.WorkerReady(now, proc))
        return started

    def fail_newest(self, now: float, code: int = 3, error: str = "") -> None:
        """The newest worker fails before it is ready; time moves past any backoff."""
        self(exited(now, self.started[-1], code, error))
        self(ev.Tick(max(now, self.s.observed.budget.backoff_until or now) + 0.01))

    def running(self, now: float = 0.0) -> list[int]:
        """From the production start (template spawned) to every worker serving."""
        self(ev.Tick(now))
        self.up(now + 0.1)
        started = self.serve(self.ready(now + 0.2, self.template), now + 0.3)
        assert len(started) == self.s.desired.target.size, self.logs()
        return started


def workers_in(actions: list[ev.Action]) -> list[int]:
    return [a.proc for a in actions if isinstance(a, ev.StartWorker)]


def templates_in(actions: list[ev.Action]) -> list[int]:
    return [a.proc for a in actions if isinstance(a, ev.StartTemplate)]


def steps_in(actions: list[ev.Action]) -> list[int]:
    return [a.proc for a in actions if isinstance(a, ev.RunStep)]


def stopped(actions: list[ev.Action]) -> set[int]:
    return {a.proc for a in actions if isinstance(a, (ev.StopProc, ev.KillProc))}


def exited(now: float, proc: int, code: int = 0, error: str = "") -> ev.ProcExited:
    return ev.ProcExited(now, proc, ev.ExitStatus(code=code), rand=0.5, error=error)


def killed(now: float, proc: int, sig: int = signal.SIGTERM) -> ev.ProcExited:
    return ev.ProcExited(now, proc, ev.ExitStatus(signal=sig))


def serving(run: Run) -> list[int]:
    return [w.id for w in m.serving(run.s)]


def budget(max_restarts: int, **env: str) -> Config:
    return conf((), False, restart_max_restarts=str(max_restarts), **env)


# The template and the first workers ----------------------------------------------------


def test_the_template_is_built_at_once_even_while_the_db_is_down() -> None:
    run = Run(template_spawned=False)
    assert templates_in(run.down(0.0)) != [], "it imports the app, which needs no DB"
    assert m.phase(run.s) is m.Phase.WAITING_DB
    assert m.accepting(run.s) and m.unavailable_reason(run.s) == "waiting for database"


def test_no_worker_starts_before_the_db_answers() -> None:
    run = Run(conf(server_workers="2"))
    run.down(0.0)
    assert run.ready(1.0, run.template) == []
    started = workers_in(run.up(2.0))
    assert len(started) == 2 and all(a.template == run.template for a in run.actions if isinstance(a, ev.StartWorker))


def test_workers_wait_for_the_template_rather_than_start_cold() -> None:
    run = Run()
    assert run.up(0.0) == []
    assert m.unavailable_reason(run.s) == "starting: importing the app"
    assert len(workers_in(run.ready(1.0, run.template))) == 1


def test_clients_queue_through_the_first_moments_of_a_start_then_get_a_503() -> None:
    run = Run()
    run.up(0.0)
    run.ready(1.0, run.template)
    assert not m.accepting(run.s), "a worker forked at once is ready in ~0.1 s: clients wait for it"
    wake = m.next_wake(run.s)
    assert wake is not None and wake <= 1.0 + m.UNSERVED_GRACE
    run(ev.Tick(1.0 + m.UNSERVED_GRACE))
    assert m.accepting(run.s) and m.unavailable_reason(run.s) == "starting"


def test_a_template_with_threads_is_retired_and_workers_start_cold() -> None:
    run = Run(conf(server_workers="2"))
    run.up(0.0)
    actions = run.ready(1.0, run.template, warm=False)
    assert stopped(actions) == {run.template}
    assert [a.template for a in actions if isinstance(a, ev.StartWorker)] == [None, None]
    assert "cannot fork safely (threads: poller); workers start cold" in run.logs()
    run(killed(1.5, run.template))
    first = workers_in(actions)[0]
    run(ev.WorkerReady(2.0, first))
    replacement = [a for a in run(exited(20.0, first, 1)) if isinstance(a, ev.StartWorker)]
    assert [a.template for a in replacement] == [None], "the replacement starts cold too"


def test_prestart_steps_run_in_order_before_the_first_worker() -> None:
    a, b = PrestartStep(name="a", command=("true",)), PrestartStep(name="b", command=("true",))
    run = Run(conf(steps=(a, b)))
    run.ready(0.0, run.template)
    (first,) = steps_in(run.up(0.1))
    (second,) = steps_in(run(exited(1.0, first)))
    assert len(workers_in(run(exited(2.0, second)))) == 1


def test_a_python_module_step_is_forked_from_the_ready_template() -> None:
    run = Run(conf(steps=(MIGRATE,)))
    run.ready(0.0, run.template)
    (action,) = [a for a in run.up(0.1) if isinstance(a, ev.RunStep)]
    assert action.template == run.template and action.step == MIGRATE


def test_on_a_first_start_a_step_runs_while_the_template_still_imports() -> None:
    run = Run(conf(steps=(MIGRATE,)))
    (action,) = [a for a in run.up(0.1) if isinstance(a, ev.RunStep)]
    assert action.template is None, "spawned at once: it overlaps the template's import"


def test_a_failed_prestart_step_is_retried_with_the_backoff_and_no_worker_starts() -> None:
    run = Run(conf(steps=(MIGRATE,)))
    run.ready(0.0, run.template)
    (step,) = steps_in(run.up(0.1))
    (again,) = steps_in(run(exited(1.0, step, code=1, error="boom")))
    assert "prestart step 'migrate' failed (exit code 1: boom)" in run.logs()
    assert run(exited(1.5, again, code=1)) == [], "the second failure in a row waits"
    wake = m.next_wake(run.s)
    assert wake is not None and wake == pytest.approx(1.6)
    assert len(steps_in(run(ev.Tick(wake)))) == 1 and run.s.observed.workers == ()


def test_prestart_step_past_its_timeout_is_killed_and_counts_as_failed() -> None:
    run = Run(conf(steps=(PrestartStep(name="migrate", command=("sleep", "99"), timeout=5.0),)))
    run.ready(0.0, run.template)
    (step,) = steps_in(run.up(0.1))
    assert stopped(run(ev.Tick(5.2))) == {step}
    assert "prestart step 'migrate' failed (timed out)" in run.logs()


def _lose_and_return(run: Run) -> list[ev.Action]:
    run.ready(0.0, run.template)
    (step,) = steps_in(run.up(0.1))
    (worker,) = run.serve(run(exited(0.5, step)), 0.6)
    run.down(30.0), run.down(31.0)
    run(killed(31.5, worker))
    return run.up(40.0)


def test_prestart_is_not_run_again_after_a_db_loss_by_default() -> None:
    run = Run(conf(steps=(MIGRATE,), on_db_loss="restart"))
    assert len(workers_in(_lose_and_return(run))) == 1


def test_prestart_runs_again_after_a_db_loss_when_configured() -> None:
    run = Run(conf(steps=(MIGRATE,), after_db_loss=True, on_db_loss="restart"))
    assert len(steps_in(_lose_and_return(run))) == 1


# Workers that end -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3])
def test_a_worker_that_exits_with_any_code_is_replaced_alone(code: int) -> None:
    run = Run(conf(server_workers="2"))
    first, second = run.running()
    actions = run(exited(20.0, first, code))
    assert [a.template for a in actions if isinstance(a, ev.StartWorker)] == [run.template], "at once, from it"
    assert serving(run) == [second] and not stopped(actions)
    assert not m.accepting(run.s)


def test_a_worker_killed_by_a_signal_is_replaced() -> None:
    run = Run()
    (worker,) = run.running()
    assert len(workers_in(run(killed(20.0, worker, signal.SIGKILL)))) == 1
    assert "killed by signal 9 (SIGKILL)" in run.logs()


def test_the_first_replacement_is_immediate_then_the_backoff_grows_and_is_capped() -> None:
    c = conf()
    delays = [m.backoff_delay(c, attempt, rand=0.5) for attempt in range(14)]
    assert delays[:5] == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8])
    assert max(delays) == pytest.approx(c.restart.backoff_max)


def test_backoff_jitter_stays_within_its_fraction() -> None:
    c = conf()
    low, high = m.backoff_delay(c, 4, 0.0), m.backoff_delay(c, 4, 1.0)
    assert low == pytest.approx(0.8 * 0.8) and high == pytest.approx(0.8 * 1.2)


def test_a_quick_second_crash_backs_off_and_the_launcher_answers_meanwhile() -> None:
    run = Run()
    (worker,) = run.running()
    (second,) = run.serve(run(exited(20.0, worker, 1)), 20.1)
    assert run(exited(21.0, second, 1)) == []
    assert m.phase(run.s) is m.Phase.BACKOFF and m.accepting(run.s)
    assert m.unavailable_reason(run.s) == "restarting"
    wake = m.next_wake(run.s)
    assert wake is not None and wake == pytest.approx(21.1)
    assert len(workers_in(run(ev.Tick(wake)))) == 1


@pytest.mark.parametrize("kind", ["exit", "liveness", "template"])
def test_any_kind_of_replacement_resets_the_backoff_after_healthy_service(kind: str) -> None:
    run = Run(conf(server_workers="2"))
    run.running()
    now = 1.0
    for _ in range(4):  # failures close together: the backoff grows
        run(exited(now, serving(run)[0], 1))
        now = max(now, run.s.observed.budget.backoff_until or now) + 0.01
        run(ev.Tick(now))
        run.serve([ev.StartWorker(run.started[-1], run.template, m.config(run.s))], now)
    assert m.backoff_delay(m.config(run.s), run.s.observed.budget.attempt, 0.5) > 0
    now += 11.0  # reset_after (10 s) of healthy service
    worker = serving(run)[0]
    if kind == "exit":
        actions = run(exited(now, worker, 1))
    elif kind == "liveness":
        for _ in range(3):
            actions = run(ev.LivenessChecked(now, worker, False, "no answer"))
    else:
        actions = run(killed(now, run.template, signal.SIGKILL))
    assert workers_in(actions) or templates_in(actions), "replaced at once"
    assert run.s.observed.budget.backoff_until is None


def test_a_crash_loop_with_nothing_serving_exits_70() -> None:
    run = Run(budget(2))
    run.up(0.0)
    run.ready(0.1, run.template)
    for attempt in range(3):
        run.fail_newest(1.0 + attempt, error="RuntimeError: boom")
    assert "giving up with exit 70" in run.logs()
    assert "exited before it was ready (exit code 3: RuntimeError: boom)" in run.logs()
    assert m.phase(run.s) is m.Phase.STOPPING
    assert run(killed(5.0, run.template)) == [ev.Exit(ExitCode.CRASH_LOOP)]


def test_a_spent_budget_never_ends_a_launcher_whose_workers_serve() -> None:
    run = Run(budget(2, server_workers="3"))
    run.running()
    now = 1.0
    for _ in range(12):  # one worker crashes over and over; the others serve
        run(exited(now, serving(run)[0], 1))
        now = (run.s.observed.budget.backoff_until or now) + 0.01
        run(ev.Tick(now))
        run.serve([ev.StartWorker(run.started[-1], run.template, m.config(run.s))], now)
    assert m.phase(run.s) is m.Phase.RUNNING and run.s.desired.stop is None
    assert "workers still serve, so the launcher goes on replacing them" in run.logs()


def test_the_budget_ends_the_launcher_only_once_no_worker_served_within_the_window() -> None:
    run = Run(budget(1, restart_window="60s"))
    (worker,) = run.running()
    run(exited(10.0, worker, 1))
    now = 10.0
    while run.s.desired.stop is None and now < 200:
        now = (run.s.observed.budget.backoff_until or now) + 0.01
        run.fail_newest(now)
    assert 70.0 <= now <= 110.0, "gave up once no worker had served for a window"
    assert run.s.desired.stop == m.Stop(ExitCode.CRASH_LOOP, None)


def test_a_worker_that_cannot_be_spawned_is_retried_while_the_others_serve() -> None:
    run = Run(budget(1, server_workers="2"))
    first, second = run.running()
    (replacement,) = workers_in(run(exited(1.0, first, 1)))
    run(ev.SpawnFailed(1.0, replacement, "[Errno 24] Too many open files"))
    for now in (1.5, 5.0, 40.0):
        for proc in workers_in(run(ev.Tick(now))):
            run(ev.SpawnFailed(now, proc, "[Errno 11] Resource temporarily unavailable"))
    assert serving(run) == [second] and run.s.desired.stop is None
    assert "worker" in run.logs() and "cannot be started: [Errno 24] Too many open files" in run.logs()


def test_a_template_that_cannot_be_spawned_with_nothing_serving_gives_up_with_71() -> None:
    run = Run(budget(1), template_spawned=False)
    now, started = 0.0, templates_in(run(ev.Tick(0.0)))
    while started and run.s.desired.stop is None:
        started = templates_in(run(ev.SpawnFailed(now, started[0], "[Errno 11] Resource temporarily unavailable")))
        now = (run.s.observed.budget.backoff_until or now) + 0.01
        started = started or templates_in(run(ev.Tick(now)))
    assert run.s.desired.stop == m.Stop(ExitCode.OS_ERROR, None)


# Templates --------------------------------------------------------------------------------


def test_a_killed_template_is_rebuilt_while_the_workers_serve() -> None:
    run = Run(conf(server_workers="2"))
    workers = run.running()
    actions = run(killed(5.0, run.template, signal.SIGKILL))
    assert len(templates_in(actions)) == 1 and not stopped(actions)
    assert serving(run) == workers
    assert "building a new one while the workers keep serving" in run.logs()


def test_the_first_template_past_its_deadline_is_a_failed_start_with_backoff() -> None:
    run = Run(conf(server_template_timeout="60s"))
    run.up(0.0)
    actions = run(ev.Tick(60.0))
    assert stopped(actions) == {run.template}
    assert "template 1 not ready after 60s" in run.logs()
    (template,) = templates_in(actions) or templates_in(run(ev.Tick(60.2)))
    assert template != run.template


def test_a_frozen_template_is_rebuilt_when_it_does_not_fork() -> None:
    run = Run()
    (worker,) = run.running()
    (replacement,) = workers_in(run(killed(10.0, worker, signal.SIGKILL)))
    actions = run(ev.Tick(10.0 + m.FORK_TIMEOUT))
    assert stopped(actions) == {replacement, run.template}, "the stuck template and the unborn worker"
    assert "did not fork worker" in run.logs()
    (template,) = templates_in(actions) or templates_in(run(ev.Tick(16.0)))
    assert len(workers_in(run.ready(17.0, template))) == 1


def test_while_no_worker_serves_past_the_grace_the_launcher_answers() -> None:
    run = Run()
    (worker,) = run.running()
    run(killed(10.0, worker, signal.SIGKILL))
    assert not m.accepting(run.s)
    run(ev.Tick(10.0 + m.UNSERVED_GRACE))
    assert m.accepting(run.s), "a worker that does not come cannot keep clients in the backlog"


def test_a_rebuilt_template_with_other_code_rolls_the_whole_set_with_its_steps() -> None:
    run = Run(conf(steps=(MIGRATE,), server_workers="2"))
    run(ev.Tick(0.0))
    run.ready(0.1, run.template, digest="v1")
    (step,) = steps_in(run.up(0.2))
    old = run.serve(run(exited(0.3, step)), 0.4)
    (template,) = templates_in(run(killed(5.0, run.template, signal.SIGKILL)))
    actions = run.ready(6.0, template, digest="v2")
    assert "loaded other code than the serving workers" in run.logs()
    assert workers_in(actions) == [] and len(steps_in(actions)) == 1, "steps first, never a mixed pool"
    (new_step,) = steps_in(actions)
    new = run.serve(run(exited(7.0, new_step)), 7.1)
    assert len(new) == 2 and stopped(run.actions[-12:]) >= set(old)


# Reloads ----------------------------------------------------------------------------------


def reload_to_ready(run: Run, now: float, config: Config | None = None) -> tuple[int, list[ev.Action]]:
    """SIGHUP; the candidate template comes up; its id and the actions of its readiness."""
    (candidate,) = templates_in(run(ev.ReloadRequested(now, config=config)))
    return candidate, run.ready(now + 1.0, candidate, digest=f"code-{now}")


def test_a_reload_brings_up_a_complete_new_set_then_retires_the_old_one() -> None:
    run = Run(conf(server_workers="2"))
    old = run.running()
    candidate, actions = reload_to_ready(run, 10.0)
    new = workers_in(actions)
    assert len(new) == 2 and not stopped(actions)
    run(ev.Forked(11.1, new[0])), run(ev.WorkerReady(11.2, new[0]))
    assert serving(run) == [*old, new[0]], "the old set serves until the whole new set does"
    run(ev.Forked(11.1, new[1]))
    assert stopped(run(ev.WorkerReady(11.3, new[1]))) == {*old, run.template}
    assert "reload done: revision 2 serves with 2 workers" in run.logs()


@pytest.mark.parametrize("how", ["template exits", "worker exits 3", "worker late", "step fails", "template late"])
def test_a_failed_reload_keeps_the_old_set_serving_untouched(how: str) -> None:
    run = Run(conf(steps=(MIGRATE,), server_workers="2", server_ready_timeout="30s"))
    run(ev.Tick(0.0))
    run.ready(0.1, run.template)
    (step,) = steps_in(run.up(0.2))
    old = run.serve(run(exited(0.3, step)), 0.4)
    (candidate,) = templates_in(run(ev.ReloadRequested(10.0)))
    if how == "template exits":
        actions = run(exited(10.5, candidate, 1, error="SyntaxError: invalid syntax (main.py, line 3)"))
    elif how == "template late":
        actions = run(ev.Tick(10.0 + m.config(run.s).server.template_timeout))
    else:
        (new_step,) = steps_in(run.ready(11.0, candidate, digest="v2"))
        if how == "step fails":
            actions = run(exited(11.5, new_step, 1, error="alembic: no such revision"))
        else:
            new = workers_in(run(exited(11.5, new_step)))
            run(ev.Forked(11.6, new[0]))
            if how == "worker exits 3":
                actions = run(exited(12.0, new[0], 3, error="RuntimeError: lifespan failed"))
            else:
                run(ev.Forked(11.6, new[1])), run(ev.WorkerReady(11.7, new[1]))
                actions = run(ev.Tick(11.5 + 30.0))
    assert "reload failed: " in run.logs()
    assert serving(run) == old and not stopped(actions) & set(old), "the serving set is untouched"
    assert run.s.desired.target == run.s.desired.serving
    assert run.s.observed.budget.failures == (), "a candidate's failure spends no crash budget"
    assert m.phase(run.s) is m.Phase.RUNNING


def test_the_reload_failure_says_why_with_the_first_lines_of_the_error() -> None:
    run = Run()
    run.running()
    (candidate,) = templates_in(run(ev.ReloadRequested(10.0)))
    run(exited(10.5, candidate, 1, error="ModuleNotFoundError: No module named 'nope'"))
    assert (
        f"reload failed: template {candidate} exited before it was ready (exit code 1: ModuleNotFoundError: "
        "No module named 'nope'); the serving workers keep serving revision 1" in run.logs()
    )


def test_a_later_reload_tries_again_after_a_failed_one() -> None:
    run = Run()
    run.running()
    (candidate,) = templates_in(run(ev.ReloadRequested(10.0)))
    run(exited(10.5, candidate, 1))
    (again,) = templates_in(run(ev.ReloadRequested(20.0)))
    assert len(workers_in(run.ready(21.0, again, digest="fixed"))) == 1


def test_while_a_new_template_imports_a_lost_worker_is_replaced_from_the_serving_template() -> None:
    run = Run()
    (worker,) = run.running()
    run(ev.ReloadRequested(10.0))
    actions = run(killed(11.0, worker, signal.SIGKILL))
    assert [a.template for a in actions if isinstance(a, ev.StartWorker)] == [run.template]


def test_a_reload_runs_the_steps_of_the_new_code_before_the_new_set() -> None:
    run = Run(conf(steps=(MIGRATE,)))
    run(ev.Tick(0.0)), run.ready(0.1, run.template)
    (step,) = steps_in(run.up(0.2))
    run.serve(run(exited(0.3, step)), 0.4)
    candidate, actions = reload_to_ready(run, 10.0)
    (new_step,) = [a for a in actions if isinstance(a, ev.RunStep)]
    assert new_step.template == candidate and workers_in(actions) == []
    assert len(workers_in(run(exited(11.5, new_step.proc)))) == 1


def test_a_reload_starts_the_new_set_with_the_config_read_again() -> None:
    run = Run()
    run.running()
    new = conf(server_workers="2", mysql_password="rotated")
    candidate, actions = reload_to_ready(run, 10.0, config=new)
    started = [a for a in actions if isinstance(a, ev.StartWorker)]
    assert len(started) == 2 and all(a.config is new for a in started)
    assert m.config(run.s) is new


def test_an_invalid_config_is_a_failed_reload_and_the_old_config_stays() -> None:
    run = Run()
    run.running()
    before = m.config(run.s)
    assert run(ev.ReloadRequested(10.0, error="probe.interval = 'soon' (in config.yaml): expected a duration")) == []
    assert "reload failed: invalid configuration" in run.logs() and m.config(run.s) is before


def test_what_a_reload_cannot_change_is_said_to_need_a_restart() -> None:
    run = Run()
    run.running()
    run(ev.ReloadRequested(10.0, config=conf(server_port="9000")))
    assert "reload: server.port (8000 -> 9000) needs a restart; ignored until then" in run.logs()


def test_a_reload_asked_for_during_another_runs_once_that_one_ends() -> None:
    run = Run()
    run.running()
    (first,) = templates_in(run(ev.ReloadRequested(10.0)))
    assert templates_in(run(ev.ReloadRequested(10.5, config=conf(server_workers="2")))) == []
    assert "it starts once the one under way ends" in run.logs()
    new = run.serve(run.ready(11.0, first, digest="v2"), 11.1)
    (second,) = [p for p in templates_in(run.actions) if p > first]
    assert len(workers_in(run.ready(12.0, second, digest="v2"))) == 2, "the config changed: the latest wins"
    assert new


def test_a_queued_reload_with_nothing_changed_is_dropped() -> None:
    run = Run()
    run.running()
    (first,) = templates_in(run(ev.ReloadRequested(10.0)))
    run(ev.ReloadRequested(10.5))
    run.serve(run.ready(11.0, first, digest="v2"), 11.1)
    (second,) = [p for p in templates_in(run.actions) if p > first]
    actions = run.ready(12.0, second, digest="v2")
    assert workers_in(actions) == [] and stopped(actions) == {second}
    assert "neither the code nor the config changed" in run.logs()


def test_reload_mode_waits_for_the_next_save_when_the_first_import_fails() -> None:
    run = Run(conf(server_reload="true"))
    run.up(0.0)
    trace = 'Traceback (most recent call last):\n  File "main.py", line 1\nSyntaxError: invalid syntax'
    actions = run(exited(1.0, run.template, 1, error=trace))
    assert templates_in(actions) == [] and m.next_wake(run.s) is None, "no retry until the code changes"
    assert m.accepting(run.s) and m.unavailable_reason(run.s) == trace
    (template,) = templates_in(run(ev.ReloadRequested(30.0, why="main.py changed")))
    run.serve(run.ready(31.0, template), 31.1)
    assert m.phase(run.s) is m.Phase.RUNNING


def test_reload_mode_never_gives_up() -> None:
    run = Run(conf(server_reload="true", restart_max_restarts="0"))
    run.up(0.0)
    now = 0.0
    for _ in range(5):
        for proc in workers_in(run.ready(now + 0.1, run.template) + run(ev.Tick(now + 0.1))):
            run(exited(now + 0.2, proc, 3))
        now = (run.s.observed.budget.backoff_until or now + 0.2) + 0.01
    assert run.s.desired.stop is None


# Liveness ----------------------------------------------------------------------------------


def test_a_worker_whose_loop_stops_answering_is_stopped_with_a_short_grace_and_replaced() -> None:
    run = Run(conf(server_workers="2"))
    first, second = run.running()
    for _ in range(2):
        assert run(ev.LivenessChecked(5.0, first, False, "no answer within 2s")) == []
    actions = run(ev.LivenessChecked(5.0, first, False, "no answer within 2s"))
    assert [type(a) for a in actions if not isinstance(a, ev.StartWorker)] == [ev.StopProc]
    assert len(workers_in(actions)) == 1 and serving(run) == [second]
    assert stopped(run(ev.Tick(5.0 + m.config(run.s).liveness.timeout))) == {first}, "SIGKILL after the grace"


def test_one_answered_check_resets_the_count() -> None:
    run = Run()
    (worker,) = run.running()
    for ok in (False, False, True, False, False):
        assert run(ev.LivenessChecked(5.0, worker, ok)) == []


def test_a_failing_app_check_is_logged_and_never_kills_by_default() -> None:
    run = Run(conf(liveness_app_path="/health"))
    (worker,) = run.running()
    for _ in range(10):
        assert run(ev.LivenessChecked(5.0, worker, False, "answered 400", app=True)) == []
    assert "app check /health failed: answered 400" in run.logs()


def test_a_failing_app_check_kills_when_asked_to() -> None:
    run = Run(conf(liveness_app_path="/health", liveness_app_failures_kill="true"))
    (worker,) = run.running()
    actions = [a for _ in range(3) for a in run(ev.LivenessChecked(5.0, worker, False, "answered 500", app=True))]
    assert stopped(actions) == {worker}


# The database ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["restart", "swap", "keep", "exit"])
@pytest.mark.parametrize("reason", ["access_denied", "too_many_connections", "unknown_database", "out_of_fds"])
def test_a_probe_failure_that_is_not_a_gone_server_keeps_the_serving_set(policy: str, reason: str) -> None:
    run = Run(conf(server_workers="2", on_db_loss=policy))
    workers = run.running()
    for t in range(10):
        assert run.down(10.0 + t, reason) == []
    assert serving(run) == workers and run.s.desired.stop is None
    assert f"database probe failed: {reason}" in run.logs()


def test_a_server_that_refuses_the_login_blocks_the_first_start_and_says_so() -> None:
    run = Run()
    run.ready(0.0, run.template)
    run.down(0.1, "access_denied")
    assert run.s.observed.workers == ()
    assert m.unavailable_reason(run.s) == "waiting for database: it answers, but access denied"


def test_a_gone_db_under_restart_stops_every_worker_and_starts_them_when_back() -> None:
    run = Run(conf(server_workers="2", on_db_loss="restart"))
    workers = run.running()
    run.down(10.0)
    assert stopped(run.down(10.5)) == set(workers)
    assert "database lost after 2 failed probes; on_db_loss=restart" in run.logs()
    for proc in workers:
        run(killed(11.0, proc))
    assert m.accepting(run.s) and m.unavailable_reason(run.s) == "waiting for database"
    assert len(workers_in(run.up(20.0))) == 2


def test_swap_keeps_the_workers_and_starts_a_fresh_set_once_the_db_answered_twice() -> None:
    run = Run(conf(server_workers="2"))
    old = run.running()
    run.down(10.0), run.down(10.5)
    assert serving(run) == old
    first_answer = run.up(20.0)
    assert [a for a in first_answer if isinstance(a, ev.Warm)] == [ev.Warm(tuple(old), "/")]
    assert workers_in(first_answer) == []
    new = run.serve(run.up(21.0), 21.1)
    assert len(new) == 2 and stopped(run.actions[-8:]) == set(old)


def test_keep_leaves_the_workers_alone_and_warms_them_on_return() -> None:
    run = Run(conf(on_db_loss="keep", server_health_path="/api/health"))
    (worker,) = run.running()
    run.down(10.0), run.down(10.5)
    assert ev.Warm((worker,), "/api/health") in run.up(20.0)
    assert workers_in(run.up(21.0)) == []


def test_db_loss_under_exit_ends_the_launcher_with_69() -> None:
    run = Run(conf(on_db_loss="exit"))
    (worker,) = run.running()
    run.down(10.0)
    assert stopped(run.down(10.5)) == {worker, run.template}
    run(killed(11.0, worker))
    assert run(killed(11.0, run.template)) == [ev.Exit(ExitCode.DB_UNAVAILABLE)]


def test_the_startup_deadline_ends_the_launcher_with_69() -> None:
    run = Run(conf(probe_startup_timeout="30s"))
    run.down(0.0)
    assert m.next_wake(run.s) == 30.0
    assert stopped(run(ev.Tick(30.0))) == {run.template}
    assert run(killed(30.1, run.template)) == [ev.Exit(ExitCode.DB_UNAVAILABLE)]


def test_without_the_db_gate_workers_start_with_no_probe() -> None:
    run = Run(conf(database_gate="false"))
    assert len(workers_in(run.ready(1.0, run.template))) == 1


# Stopping ----------------------------------------------------------------------------------


def test_a_stop_drains_every_worker_then_exits_0() -> None:
    run = Run(conf(server_workers="2"))
    workers = run.running()
    actions = run(ev.StopRequested(30.0, "got SIGTERM"))
    assert {a.proc for a in actions if isinstance(a, ev.StopProc)} == {*workers, run.template}
    assert m.unavailable_reason(run.s) == "shutting down" and m.accepting(run.s)
    for proc in [*workers, run.template]:
        actions = run(killed(31.0, proc))
    assert actions == [ev.Exit(ExitCode.OK)]


def test_a_worker_that_outlives_its_grace_is_killed() -> None:
    run = Run()
    (worker,) = run.running()
    run(ev.StopRequested(30.0))
    assert stopped(run(ev.Tick(40.0))) == {worker, run.template}
    assert "still running 10s after SIGTERM; killing it" in run.logs()


def test_a_second_stop_signal_within_a_second_is_the_same_request() -> None:
    run = Run()
    run.running()
    run(ev.StopRequested(30.0))
    assert run(ev.StopRequested(30.5)) == []
    assert len(run(ev.StopRequested(31.5))) == 2, "after a second it kills what is left"


def test_a_fast_stop_kills_at_once() -> None:
    run = Run()
    (worker,) = run.running()
    actions = run(ev.StopRequested(30.0, "got SIGQUIT", fast=True))
    assert actions == [ev.KillProc(run.template), ev.KillProc(worker)]


def test_nothing_starts_once_stopping() -> None:
    run = Run(conf(server_workers="2"))
    first, _ = run.running()
    run(ev.StopRequested(30.0))
    assert run(exited(30.1, first, 1)) == []
    assert run(ev.ReloadRequested(30.2)) == [] and "while stopping: ignored" in run.logs()
    assert run(ev.Resize(30.3, +1)) == []


# Resizing, status, signals that mean nothing here ------------------------------------------


def test_sigttin_adds_a_worker_up_to_max_workers_and_sigttou_never_goes_below_one() -> None:
    run = Run(conf(server_max_workers="3"))
    run.running()
    assert len(workers_in(run(ev.Resize(1.0, +1)))) == 1
    assert len(workers_in(run(ev.Resize(1.1, +1)))) == 1
    assert run(ev.Resize(1.2, +1)) == [] and "server.max_workers is 3" in run.logs()
    for _ in range(2):
        assert len(stopped(run(ev.Resize(2.0, -1)))) == 1
    assert run(ev.Resize(2.0, -1)) == [] and "one is the least" in run.logs()


def test_sigttou_retires_the_newest_worker_and_a_starting_one_first() -> None:
    run = Run(conf(server_workers="2"))
    first, second = run.running()
    (third,) = workers_in(run(ev.Resize(1.0, +1)))
    assert stopped(run(ev.Resize(1.1, -1))) == {third}
    assert stopped(run(ev.Resize(1.2, -1))) == {second}


def test_a_resize_while_the_db_is_lost_under_restart_stops_each_worker_once() -> None:
    run = Run(conf(server_workers="2", on_db_loss="restart"))
    workers = run.running()
    run.down(10.0)
    actions = run(ev.Resize(10.2, -1)) + run.down(10.5) + run(ev.Resize(10.6, -1))
    assert sorted(a.proc for a in actions if isinstance(a, ev.StopProc)) == sorted(workers)


def test_sigusr1_logs_one_status_line() -> None:
    run = Run()
    (worker,) = run.running()
    assert run(ev.StatusRequested(5.0)) == []
    assert f"status: running; revision 1, generation 1, 1 workers wanted; workers: {worker}" in run.logs()


def test_sigwinch_is_ignored_and_said_so() -> None:
    run = Run()
    run.running()
    assert run(ev.SignalIgnored(5.0, "SIGWINCH", "a terminal was resized")) == []
    assert "got SIGWINCH: ignored (a terminal was resized)" in run.logs()


def test_a_traceback_becomes_one_log_line_and_stays_whole_for_the_reload_page() -> None:
    trace = (
        'Traceback (most recent call last):\n  File "/srv/app/main.py", line 3, in <module>\n'
        "    import nope\nModuleNotFoundError: No module named 'nope'\n"
    )
    run = Run(conf(server_reload="true"))
    run.up(0.0)
    run(exited(1.0, run.template, 1, error=trace))
    (line,) = [a.message for a in run.actions if isinstance(a, ev.Log) and "exited" in a.message]
    assert "\n" not in line
    assert "ModuleNotFoundError: No module named 'nope' (\"/srv/app/main.py\", line 3)" in line
    assert m.unavailable_reason(run.s) == trace
