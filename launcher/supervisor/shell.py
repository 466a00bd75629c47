"""The I/O shell around the state machine: turns signals, probes, pipes, template messages
and timers into events, and carries out the actions the machine returns. It decides nothing.
"""
from __future__ import annotations

import os
import random
import signal
import socket
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

from launcher import signals
from launcher.config import Config, DatabaseConfig
from launcher.exitcodes import ExitCode
from launcher.supervisor import machine
from launcher.supervisor.budget import connection_warning
from launcher.supervisor.dbprobe import ProbeResult, probe
from launcher.supervisor.logs import Log
from launcher.supervisor.loop import Loop, Timer
from launcher.supervisor.machine import ExitStatus
from launcher.supervisor.reaper import install, reap_all
from launcher.supervisor.spawn import (Spawned, fork_step, fork_worker, forkable_step, kill_descendants,
                                       signal_group, spawn_cold_worker, spawn_step, spawn_template)
from launcher.supervisor.unavailable import Unavailable
from launcher.supervisor.watchers import DbWatcher, LivenessWatcher, warm

# At exit, how long the launcher keeps answering 503 to connections already queued.
EXIT_DRAIN = 1.0
# Exits of pids not yet claimed: a forked worker can die before the template says its pid.
UNCLAIMED_LIMIT = 64
MESSAGE_LIMIT = 256


@dataclass(frozen=True)
class Effects:
    """What the shell does to processes and asks of the DB, in one place, so that tests can
    drive the real shell with fakes (the style of gunicorn's test_arbiter.py)."""

    spawn_template: Callable[[Config, socket.socket, Mapping[str, str]], Spawned] = spawn_template
    fork_worker: Callable[[Spawned, str], Spawned] = fork_worker
    spawn_cold_worker: Callable[[Config, socket.socket, Mapping[str, str], str], Spawned] = spawn_cold_worker
    spawn_step: Callable[[Sequence[str], Mapping[str, str]], Spawned] = spawn_step
    fork_step: Callable[[Spawned, str, Sequence[str]], Spawned] = fork_step
    send_signal: Callable[[int, signal.Signals], None] = signal_group
    reap: Callable[[], Iterable[tuple[int, ExitStatus]]] = reap_all
    kill_descendants: Callable[[], None] = kill_descendants
    probe: Callable[[DatabaseConfig, float], ProbeResult] = probe
    warm: Callable[[str, str, float], None] = warm


class Supervisor:
    def __init__(self, cfg: Config, listener: socket.socket, env: Mapping[str, str], log: Log,
                 first: Spawned | None = None, effects: Effects = Effects()) -> None:
        self.cfg = cfg
        self.effects = effects
        self.first = first  # the template, spawned before the loop existed
        self.listener = listener
        self.env = env  # the children's environment
        self.log = log
        self.procs: dict[int, Spawned] = {}  # the machine's process ids -> what runs
        self.pids: dict[int, int] = {}  # OS pid -> the machine's process id
        self.unclaimed: dict[int, ExitStatus] = {}
        self.timer: Timer | None = None
        self.code: int | None = None  # set once the machine says Exit
        self.budget_checked = False
        self.loop = Loop()
        self.db_watcher = DbWatcher(cfg, lambda r: self.loop.call_soon_threadsafe(partial(self.on_probe, r)),
                                    effects.probe)
        self.state = machine.initial(self.loop.time(), cfg.server.workers, template_spawned=first is not None)
        self.unavailable = Unavailable(self.loop, listener, self.reason, log.warning,
                                       answered_one=lambda: self.db_watcher.hurry())

    def run(self) -> int:
        install(self.loop.add_signal_handler, self.on_stop_signal, self.on_reload_signal,
                self.on_forward_signal, self.on_resize_signal, self.on_sigchld)
        signals.release()
        watchers = (self.db_watcher, LivenessWatcher(self.cfg, self.liveness_targets, self.on_liveness))
        for watcher in watchers:
            watcher.start()
        if self.first is not None:
            self.adopt_template(1, self.first)
        self.feed(machine.Tick(self.loop.time()))
        try:
            self.loop.run(until=lambda: self.code is not None)
            return int(self.code or 0)
        finally:
            for watcher in watchers:
                watcher.stop()
            self.kill_leftovers()
            self.unavailable.drain(EXIT_DRAIN)
            self.unavailable.close()
            self.loop.close()

    def reason(self) -> str:
        return machine.UNAVAILABLE_REASON.get(machine.phase(self.state), "unavailable")

    # Events in --------------------------------------------------------------------

    def feed(self, event: machine.Event) -> None:
        if self.code is not None:
            return  # exiting: a late reap or probe must not switch off the final drain's 503s
        self.state, actions = machine.step(self.cfg, self.state, event)
        self.unavailable.set(machine.accepting(self.state))
        for action in actions:
            self.ACTIONS[type(action)](self, action)
        self.reschedule()

    def later(self, event: machine.Event) -> None:
        """Feed an event found while carrying out an action, after the step under way."""
        self.loop.call_soon_threadsafe(partial(self.feed, event))

    def now(self) -> float:
        return self.loop.time()

    def on_probe(self, result: ProbeResult) -> None:
        if result.ok and result.max_connections and not self.budget_checked:
            self.budget_checked = True
            warning = connection_warning(self.state.size, self.env, result.max_connections)
            if warning:
                self.log.warning("%s", warning)
        self.feed(machine.DbProbed(self.now(), result.ok, result.reason, result.detail))

    def on_stop_signal(self, sig: signal.Signals) -> None:
        self.feed(machine.StopRequested(self.now(), f"got {sig.name}"))

    def on_reload_signal(self) -> None:
        self.feed(machine.ReloadRequested(self.now()))

    def on_resize_signal(self, delta: int) -> None:
        self.feed(machine.Resize(self.now(), delta))

    def on_forward_signal(self, sig: signal.Signals) -> None:
        for worker in machine.serving(self.state):
            self.signal(worker.id, sig)

    def on_sigchld(self) -> None:
        for pid, status in self.effects.reap():
            proc = self.pids.pop(pid, None)
            if proc is None:
                self.remember_unclaimed(pid, status)
                continue
            self.exited(proc, pid, status)

    def exited(self, proc: int, pid: int, status: ExitStatus) -> None:
        spawned = self.procs.get(proc)
        while spawned is not None and spawned.control is not None and self.on_template_message(proc):
            pass  # a dead template's last words: the pids of workers it forked just before
        self.forget(proc)
        self.effects.send_signal(pid, signal.SIGKILL)  # whatever the leader left in its group
        self.feed(machine.ProcExited(self.now(), proc, status, random.random()))
        for orphan in [p for p, s in self.procs.items() if s.pid is None and s.parent == proc]:
            self.forget(orphan)  # its template died before it said the worker's pid: there is none
            self.feed(machine.ProcExited(self.now(), orphan, ExitStatus(code=ExitCode.OS_ERROR), random.random()))

    def remember_unclaimed(self, pid: int, status: ExitStatus) -> None:
        """An orphan, or a forked worker whose pid the template has not reported yet."""
        self.log.debug("reaped orphan %d (%s)", pid, status)
        self.unclaimed[pid] = status
        while len(self.unclaimed) > UNCLAIMED_LIMIT:
            del self.unclaimed[next(iter(self.unclaimed))]

    def on_template_message(self, proc: int) -> bool:
        """One message from a template; whether there may be more."""
        spawned = self.procs.get(proc)
        if spawned is None or spawned.control is None:
            return False
        try:
            message = spawned.control.recv(MESSAGE_LIMIT)
        except BlockingIOError:
            return False
        except OSError:
            message = b""
        if not message:
            self.close_channels(spawned)  # the template is ending; its exit comes through SIGCHLD
            return False
        kind, _, rest = message.decode(errors="replace").partition(" ")
        name, _, pid = rest.partition(" ")
        if kind == "forked" and name.isdigit() and pid.isdigit():
            self.claim(int(name), int(pid))
        elif kind in ("warm", "cold"):
            self.feed(machine.TemplateReady(self.now(), proc, kind == "warm", rest))
        else:
            self.log.warning("template %d said something unexpected: %r", proc, message[:80])
        return True

    def claim(self, proc: int, pid: int) -> None:
        spawned = self.procs.get(proc)
        if spawned is None:
            self.effects.send_signal(pid, signal.SIGKILL)  # retired before it was born
            return
        spawned.pid = pid
        self.pids[pid] = proc
        self.log.info("process %d forked from the template: pid %d", proc, pid)
        if pid in self.unclaimed:
            del self.pids[pid]
            self.exited(proc, pid, self.unclaimed.pop(pid))
        elif spawned.pending_signal is not None:
            self.effects.send_signal(pid, spawned.pending_signal)

    def on_ready(self, proc: int) -> None:
        spawned = self.procs.get(proc)
        if spawned is None or spawned.ready_fd is None:
            return
        data = os.read(spawned.ready_fd, 64)
        self.close_ready(spawned)
        if data:
            self.feed(machine.WorkerReady(self.now(), proc))

    def liveness_targets(self) -> list[tuple[int, str]]:
        """Called from the liveness thread: the serving workers (reads are atomic)."""
        state, procs = self.state, self.procs
        return [(w.id, procs[w.id].private_address) for w in machine.serving(state) if w.id in procs]

    def on_liveness(self, proc: int, ok: bool, why: str) -> None:
        """Called from the liveness thread; the machine drops a result for a worker no longer serving."""
        self.loop.call_soon_threadsafe(
            lambda: self.feed(machine.LivenessChecked(self.now(), proc, ok, why, random.random())))

    def reschedule(self) -> None:
        if self.timer:
            self.timer.cancel()
        wake = machine.next_wake(self.cfg, self.state)
        self.timer = None if wake is None else self.loop.call_at(wake, lambda: self.feed(machine.Tick(self.now())))

    # Actions out -------------------------------------------------------------------

    def start_template(self, action: machine.StartTemplate) -> None:
        try:
            spawned = self.effects.spawn_template(self.cfg, self.listener, self.env)
        except OSError as err:
            self.log.error("cannot start the template: %s", err)
            self.finish(ExitCode.OS_ERROR)
            return
        self.adopt_template(action.proc, spawned)

    def adopt_template(self, proc: int, spawned: Spawned) -> None:
        self.track(proc, spawned)
        assert spawned.control is not None
        self.loop.add_reader(spawned.control, partial(self.on_template_message, proc))
        self.log.info("started template %d (pid %s): loading %s", proc, spawned.pid, self.cfg.server.app)

    def start_worker(self, action: machine.StartWorker) -> None:
        name = str(action.proc)
        template = self.procs.get(action.template) if action.template is not None else None
        try:
            if template is not None:
                spawned = self.effects.fork_worker(template, name)
                spawned.parent = action.template
            else:
                spawned = self.effects.spawn_cold_worker(self.cfg, self.listener, self.env, name)
                self.log.info("started worker %d (pid %s) cold", action.proc, spawned.pid)
        except OSError as err:
            self.log.error("cannot start worker %d: %s", action.proc, err)
            self.later(machine.ProcExited(self.now(), action.proc, ExitStatus(code=ExitCode.OS_ERROR)))
            return
        self.track(action.proc, spawned)
        assert spawned.ready_fd is not None
        self.loop.add_reader(spawned.ready_fd, partial(self.on_ready, action.proc))

    def run_step(self, action: machine.RunStep) -> None:
        """`python -m ...` steps run forked from a ready template when there is one: they skip
        the interpreter's start and the app's imports. Any other step is spawned."""
        step = self.cfg.prestart.steps[action.index]
        template_id = machine.forkable_template(self.state)
        template = self.procs.get(template_id) if template_id is not None else None
        module_argv = forkable_step(step.command)
        try:
            if template is not None and module_argv is not None:
                spawned = self.effects.fork_step(template, str(action.proc), module_argv)
                spawned.parent = template_id
                how = "forked from the template"
            else:
                spawned = self.effects.spawn_step(step.command, self.env)
                how = f"pid {spawned.pid}"
        except OSError as err:
            self.log.error("cannot run prestart step %r (%s): %s", step.name, " ".join(step.command), err)
            self.finish(ExitCode.OS_ERROR)
            return
        self.track(action.proc, spawned)
        self.log.info("running prestart step %r (%s): %s", step.name, how, " ".join(step.command))

    def stop_proc(self, action: machine.StopProc) -> None:
        self.signal(action.proc, signal.SIGTERM)

    def kill_proc(self, action: machine.KillProc) -> None:
        self.signal(action.proc, signal.SIGKILL)

    def exit_with(self, action: machine.Exit) -> None:
        self.finish(action.code)

    def write_log(self, action: machine.Log) -> None:
        self.log.log(action.level, action.message)

    def warm(self, action: machine.Warm) -> None:
        for proc in action.procs:
            spawned = self.procs.get(proc)
            if spawned is not None and spawned.private_address:
                self.effects.warm(spawned.private_address, self.cfg.server.health_path, self.cfg.liveness.timeout)

    # Each method takes the action of its key's type, which a dict's type cannot say: Any.
    ACTIONS: dict[type, Callable[["Supervisor", Any], None]] = {
        machine.StartTemplate: start_template,
        machine.StartWorker: start_worker,
        machine.RunStep: run_step,
        machine.StopProc: stop_proc,
        machine.KillProc: kill_proc,
        machine.Exit: exit_with,
        machine.Log: write_log,
        machine.Warm: warm,
    }

    # Bookkeeping -------------------------------------------------------------------

    def track(self, proc: int, spawned: Spawned) -> None:
        self.procs[proc] = spawned
        if spawned.pid is not None:
            self.pids[spawned.pid] = proc

    def forget(self, proc: int) -> None:
        spawned = self.procs.pop(proc, None)
        if spawned is not None:
            self.close_channels(spawned)

    def close_ready(self, spawned: Spawned) -> None:
        if spawned.ready_fd is not None:
            self.loop.remove_reader(spawned.ready_fd)
            os.close(spawned.ready_fd)
            spawned.ready_fd = None

    def close_channels(self, spawned: Spawned) -> None:
        self.close_ready(spawned)
        if spawned.control is not None:
            self.loop.remove_reader(spawned.control)
            spawned.control.close()
            spawned.control = None

    def signal(self, proc: int, sig: signal.Signals) -> None:
        spawned = self.procs.get(proc)
        if spawned is None:
            return
        if spawned.pid is None:
            spawned.pending_signal = sig  # sent once the template says which pid it got
        else:
            self.effects.send_signal(spawned.pid, sig)

    def finish(self, code: int) -> None:
        if self.code is None:
            self.code = int(code)

    def kill_leftovers(self) -> None:
        """Nothing outlives the launcher: kill and reap any descendant still around."""
        for spawned in self.procs.values():
            if spawned.pid is not None:
                self.effects.send_signal(spawned.pid, signal.SIGKILL)
        self.effects.kill_descendants()
