"""The I/O shell around the state machine: turns signals, probes, pipes and timers
into events, and carries out the actions the machine returns. It decides nothing.
"""
from __future__ import annotations

import os
import random
import signal
import socket
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable, Mapping, Sequence

from launcher import signals
from launcher.supervisor import machine
from launcher.supervisor.spawn import Spawned, kill_descendants, signal_group, spawn_server, spawn_step
from launcher.config import Config, DatabaseConfig
from launcher.supervisor.dbprobe import ProbeResult, probe
from launcher.exitcodes import ExitCode
from launcher.supervisor.logs import Log
from launcher.supervisor.loop import Loop, Timer
from launcher.supervisor.machine import ExitStatus
from launcher.supervisor.reaper import install, reap_all
from launcher.supervisor.unavailable import Unavailable
from launcher.supervisor.watchers import DbWatcher, LivenessWatcher


# At exit, how long the launcher keeps answering 503 to connections already queued.
EXIT_DRAIN = 1.0


@dataclass(frozen=True)
class Effects:
    """What the shell does to processes and asks of the DB, in one place, so that tests can
    drive the real shell with fakes (the style of gunicorn's test_arbiter.py)."""

    spawn_server: Callable[[Config, socket.socket, Mapping[str, str], str], Spawned] = spawn_server
    spawn_step: Callable[[Sequence[str], Mapping[str, str]], Spawned] = spawn_step
    send_signal: Callable[[int, signal.Signals], None] = signal_group
    reap: Callable[[], Iterable[tuple[int, ExitStatus]]] = reap_all
    kill_descendants: Callable[[], None] = kill_descendants
    probe: Callable[[DatabaseConfig, float], ProbeResult] = probe


class Supervisor:
    def __init__(self, cfg: Config, listener: socket.socket, env: Mapping[str, str], log: Log,
                 first: Spawned | None = None, effects: Effects = Effects()) -> None:
        self.cfg = cfg
        self.effects = effects
        self.first = first  # child 1, spawned parked before the loop existed
        self.listener = listener
        self.env = env  # the children's environment
        self.log = log
        self.procs: dict[int, Spawned] = {}  # the machine's process ids -> what runs
        self.pids: dict[int, int] = {}  # OS pid -> the machine's process id
        self.timer: Timer | None = None
        self.code: int | None = None  # set once the machine says Exit
        self.loop = Loop()
        self.state = machine.initial(self.loop.time(), parked=first is not None)
        self.unavailable = Unavailable(self.loop, listener, self.reason, log.warning)

    def run(self) -> int:
        install(self.loop.add_signal_handler, self.on_stop_signal, self.on_reload_signal,
                self.on_forward_signal, self.on_sigchld)
        signals.release()
        watchers = (DbWatcher(self.cfg, lambda r: self.loop.call_soon_threadsafe(partial(self.on_probe, r)),
                              self.effects.probe),
                    LivenessWatcher(self.cfg, self.liveness_target, self.on_liveness))
        for watcher in watchers:
            watcher.start()
        if self.first is not None:
            self.adopt(1, self.first)
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
        return machine.UNAVAILABLE_REASON.get(machine.phase(self.state, self.loop.time()), "unavailable")

    # Events in --------------------------------------------------------------------

    def feed(self, event: machine.Event) -> None:
        if self.code is not None:
            return  # exiting: a late reap or probe must not switch off the final drain's 503s
        self.state, actions = machine.step(self.cfg, self.state, event)
        self.unavailable.set(machine.accepting(self.state))
        for action in actions:
            self.ACTIONS[type(action)](self, action)
        self.reschedule()

    def now(self) -> float:
        return self.loop.time()

    def on_probe(self, result: ProbeResult) -> None:
        self.feed(machine.DbProbed(self.now(), result.ok, result.reason, result.detail))

    def on_stop_signal(self, sig: signal.Signals) -> None:
        self.feed(machine.StopRequested(self.now(), f"got {sig.name}"))

    def on_reload_signal(self) -> None:
        self.feed(machine.ReloadRequested(self.now()))

    def on_forward_signal(self, sig: signal.Signals) -> None:
        serving = self.state.serving
        if serving and serving.id in self.procs:
            self.effects.send_signal(self.procs[serving.id].pid, sig)

    def on_sigchld(self) -> None:
        for pid, status in self.effects.reap():
            proc = self.pids.pop(pid, None)
            if proc is None:
                self.log.debug("reaped orphan %d (%s)", pid, status)
                continue
            self.forget(proc)
            self.effects.send_signal(pid, signal.SIGKILL)  # whatever the leader left in its group
            self.feed(machine.ProcExited(self.now(), proc, status, random.random()))

    def on_ready(self, proc: int) -> None:
        spawned = self.procs.get(proc)
        if spawned is None or spawned.ready_fd is None:
            return
        data = os.read(spawned.ready_fd, 64)
        self.close_pipes(spawned)
        if data:
            self.feed(machine.ChildReady(self.now(), proc))

    def liveness_target(self) -> tuple[int, str] | None:
        """Called from the liveness thread: the serving child, if any (reads are atomic)."""
        serving = self.state.serving
        spawned = self.procs.get(serving.id) if serving else None
        return None if serving is None or spawned is None else (serving.id, spawned.private_address)

    def on_liveness(self, proc: int, ok: bool, why: str) -> None:
        """Called from the liveness thread; the machine drops a result for a child no longer serving."""
        self.loop.call_soon_threadsafe(
            lambda: self.feed(machine.LivenessChecked(self.now(), proc, ok, why, random.random())))

    def reschedule(self) -> None:
        if self.timer:
            self.timer.cancel()
        wake = machine.next_wake(self.cfg, self.state)
        self.timer = None if wake is None else self.loop.call_at(wake, lambda: self.feed(machine.Tick(self.now())))

    # Actions out -------------------------------------------------------------------

    def start_child(self, action: machine.StartChild) -> None:
        try:
            spawned = self.effects.spawn_server(self.cfg, self.listener, self.env, str(action.proc))
        except OSError as err:
            self.log.error("cannot start the server child: %s", err)
            self.finish(ExitCode.OS_ERROR)
            return
        self.adopt(action.proc, spawned)

    def adopt(self, proc: int, spawned: Spawned) -> None:
        self.track(proc, spawned)
        assert spawned.ready_fd is not None
        self.loop.add_reader(spawned.ready_fd, partial(self.on_ready, proc))
        self.log.info("started child %d (pid %d): loading %s", proc, spawned.pid, self.cfg.server.app)

    def go(self, action: machine.Go) -> None:
        spawned = self.procs.get(action.proc)
        if spawned is not None and spawned.go_fd is not None:
            try:
                os.write(spawned.go_fd, b"go\n")
            except BrokenPipeError:
                pass  # it died while parked; its exit is on the way
            os.close(spawned.go_fd)
            spawned.go_fd = None

    def run_step(self, action: machine.RunStep) -> None:
        step = self.cfg.prestart.steps[action.index]
        try:
            spawned = self.effects.spawn_step(step.command, self.env)
        except OSError as err:
            self.log.error("cannot run prestart step %r (%s): %s", step.name, " ".join(step.command), err)
            self.finish(ExitCode.OS_ERROR)
            return
        self.track(action.proc, spawned)
        self.log.info("running prestart step %r (pid %d): %s", step.name, spawned.pid, " ".join(step.command))

    def stop_proc(self, action: machine.StopProc) -> None:
        self.signal(action.proc, signal.SIGTERM)

    def kill_proc(self, action: machine.KillProc) -> None:
        self.signal(action.proc, signal.SIGKILL)

    def exit_with(self, action: machine.Exit) -> None:
        self.finish(action.code)

    def write_log(self, action: machine.Log) -> None:
        self.log.log(action.level, action.message)

    ACTIONS: dict[type, Callable[["Supervisor", machine.Action], None]] = {
        machine.StartChild: start_child,
        machine.Go: go,
        machine.RunStep: run_step,
        machine.StopProc: stop_proc,
        machine.KillProc: kill_proc,
        machine.Exit: exit_with,
        machine.Log: write_log,
    }

    # Bookkeeping -------------------------------------------------------------------

    def track(self, proc: int, spawned: Spawned) -> None:
        self.procs[proc] = spawned
        self.pids[spawned.pid] = proc

    def forget(self, proc: int) -> None:
        spawned = self.procs.pop(proc, None)
        if spawned is not None:
            self.close_pipes(spawned)

    def close_pipes(self, spawned: Spawned) -> None:
        if spawned.ready_fd is not None:
            self.loop.remove_reader(spawned.ready_fd)
            os.close(spawned.ready_fd)
            spawned.ready_fd = None
        if spawned.go_fd is not None:
            os.close(spawned.go_fd)
            spawned.go_fd = None

    def signal(self, proc: int, sig: signal.Signals) -> None:
        spawned = self.procs.get(proc)
        if spawned is not None:
            self.effects.send_signal(spawned.pid, sig)

    def finish(self, code: int) -> None:
        if self.code is None:
            self.code = int(code)

    def kill_leftovers(self) -> None:
        """Nothing outlives the launcher: kill and reap any descendant still around."""
        for spawned in self.procs.values():
            self.effects.send_signal(spawned.pid, signal.SIGKILL)
        self.effects.kill_descendants()
