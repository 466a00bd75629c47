"""The I/O shell around the state machine: it turns signals, reaped statuses, channel
messages, probe results and timers into events, and carries out the actions the machine
returns. It decides nothing: every outcome, a failure to start a process included, becomes
an event, and only an `Exit` from the machine ends the launcher.
"""

from __future__ import annotations

import errno
import json
import random
import signal
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

from launcher import signals, wire
from launcher.config import PASSWORD_FILE_ENV, Config, ConfigError, DatabaseConfig, Source
from launcher.supervisor import machine
from launcher.supervisor.connections import connection_warning
from launcher.supervisor.dbprobe import ProbeResult, probe
from launcher.supervisor.dbwatch import DbWatcher, ProbeSettings
from launcher.supervisor.events import (
    LOST,
    Action,
    DbProbed,
    Event,
    Exit,
    ExitStatus,
    Forked,
    KillProc,
    Log,
    ProcExited,
    ReloadRequested,
    RunStep,
    SpawnFailed,
    StartTemplate,
    StartWorker,
    StopProc,
    TemplateReady,
    Tick,
    Warm,
    WorkerReady,
)
from launcher.supervisor.liveness import Liveness
from launcher.supervisor.logs import Log as Logger
from launcher.supervisor.loop import Loop, Timer
from launcher.supervisor.processes import ProcessTable
from launcher.supervisor.reaper import reap_all
from launcher.supervisor.signal_meanings import MEANINGS
from launcher.supervisor.spawn import (
    Spawned,
    child_environment,
    fork_step,
    fork_worker,
    kill_descendants,
    signal_group,
    spawn_cold_worker,
    spawn_step,
    spawn_template,
)
from launcher.supervisor.threads import Guarded
from launcher.supervisor.unavailable import Unavailable

# At exit, how long the launcher keeps answering 503 to connections already queued.
EXIT_DRAIN = 1.0
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Effects:
    """What the shell does to processes and asks of the DB and the disk, in one place, so
    that tests drive the real shell with fakes (the style of gunicorn's test_arbiter.py)."""

    spawn_template: Callable[[Config, socket.socket, Mapping[str, str]], Spawned] = spawn_template
    fork_worker: Callable[[socket.socket, str], Spawned] = fork_worker
    spawn_cold_worker: Callable[[Config, socket.socket, Mapping[str, str]], Spawned] = spawn_cold_worker
    spawn_step: Callable[[Sequence[str], Mapping[str, str]], Spawned] = spawn_step
    fork_step: Callable[[socket.socket, str, Sequence[str]], Spawned] = fork_step
    send_signal: Callable[[int, signal.Signals], None] = signal_group
    reap: Callable[[], Iterable[tuple[int, int, ExitStatus]]] = reap_all
    kill_descendants: Callable[[], None] = kill_descendants
    probe: Callable[[DatabaseConfig, float], ProbeResult] = probe
    load_config: Callable[[Source], Config] = Source.load


def describe(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{name}: {err.strerror or err}" if name else str(err)


class Supervisor:
    def __init__(
        self,
        source: Source,
        config: Config,
        listener: socket.socket,
        log: Logger,
        first: Spawned | None = None,
        effects: Effects = Effects(),
    ) -> None:
        self.source = source
        self.effects = effects
        self.first = first  # the template, spawned before the loop existed
        self.listener = listener
        self.log = log
        self.loop = Loop()
        self.table = ProcessTable()
        self.state = machine.initial(config, self.loop.time(), template_spawned=first is not None)
        self.code: int | None = None  # set once the machine says Exit
        self.timer: Timer | None = None
        self.max_connections = 0  # the DB's, once a probe read it
        self.budget_checked: tuple[int, int, int] = (0, 0, 0)
        self.db_watcher = DbWatcher(
            self.probe_settings,
            lambda r: self.loop.call_soon_threadsafe(partial(self.on_probe, r)),
            log.error,
            effects.probe,
            source.environ.get(PASSWORD_FILE_ENV, ""),
        )
        self.liveness = Liveness(
            self.loop, lambda: self.config.liveness, self.liveness_targets, self.send_to, self.feed
        )
        self.unavailable = Unavailable(self.loop, listener, self.page, log.warning, answered_one=self.db_watcher.hurry)
        self.threads: list[Guarded] = []

    @property
    def config(self) -> Config:
        return machine.config(self.state)

    def run(self) -> int:
        for sig in MEANINGS:
            self.loop.add_signal_handler(sig, partial(self.on_signal, sig))
        self.loop.add_signal_handler(signal.SIGCHLD, self.on_sigchld)
        signals.release()
        self.start_threads()
        self.liveness.start()
        if self.first is not None:  # the machine knows it as its first template
            self.adopt(self.state.observed.templates[0].id, self.first, "template")
        self.feed(Tick(self.now()))
        try:
            self.loop.run(until=lambda: self.code is not None)
            return int(self.code or 0)
        finally:
            for thread in self.threads:
                thread.stop()
            self.liveness.stop()
            self.kill_leftovers()
            self.unavailable.drain(EXIT_DRAIN)
            self.unavailable.close()
            self.loop.close()

    def start_threads(self) -> None:
        if self.config.database.gate:
            self.threads.append(self.db_watcher)
        if self.config.server.reload:
            from launcher.supervisor.sourcewatch import SourceWatcher  # watchfiles: only in reload mode

            self.threads.append(
                SourceWatcher(
                    self.config.server,
                    self.log.error,
                    lambda why: self.loop.call_soon_threadsafe(partial(self.request_reload, why)),
                )
            )
        for thread in self.threads:
            thread.start()

    def now(self) -> float:
        return self.loop.time()

    # Events in --------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        if self.code is not None:
            return  # exiting: a late reap or probe must not switch off the final drain's 503s
        self.state, actions = machine.step(self.state, event)
        self.unavailable.set(machine.accepting(self.state))
        for action in actions:
            self.perform(action)
        self.check_connections()
        self.reschedule()

    def later(self, event: Event) -> None:
        """Feed an event found while carrying out an action, after the step under way."""
        self.loop.call_soon_threadsafe(partial(self.feed, event))

    def reschedule(self) -> None:
        if self.timer:
            self.timer.cancel()
        wake = machine.next_wake(self.state)
        self.timer = None if wake is None else self.loop.call_at(wake, lambda: self.feed(Tick(self.now())))

    def on_signal(self, sig: signal.Signals) -> None:
        event = MEANINGS[sig].event(self.now(), sig)
        self.feed(self.with_config(event) if isinstance(event, ReloadRequested) else event)

    def request_reload(self, why: str) -> None:
        self.feed(self.with_config(ReloadRequested(self.now(), why)))

    def with_config(self, event: ReloadRequested) -> ReloadRequested:
        """A reload reads the config file, the environment it was given and the secrets again."""
        try:
            config = self.effects.load_config(self.source)
        except ConfigError as err:
            return replace(event, error=str(err).replace("\n", "; "))
        self.db_watcher.forget_password()
        return replace(event, config=config)

    def on_probe(self, result: ProbeResult) -> None:
        if result.ok and result.max_connections:
            self.max_connections = result.max_connections
        self.feed(DbProbed(self.now(), result.ok, result.reason, result.detail))

    def on_sigchld(self) -> None:
        for pid, start, status in self.effects.reap():
            proc = self.table.reaped(pid, start, status, self.now())
            if proc is None:
                self.log.debug("reaped orphan %d (%s)", pid, status)
            else:
                self.exited(proc, status)

    def exited(self, proc: int, status: ExitStatus) -> None:
        self.on_channel(proc)  # its last words: a traceback, a pid said just before it died
        entry = self.table.forget(proc)
        if entry is None:
            return
        self.close_channel(entry.channel)
        if entry.pid is not None:
            self.effects.send_signal(entry.pid, signal.SIGKILL)  # whatever the leader left in its group
        self.liveness.forget(proc)
        self.feed(ProcExited(self.now(), proc, status, random.random(), entry.error))

    def on_channel(self, proc: int) -> None:
        """Every message waiting on a process's channel; a close before it said its pid means
        it never started, or ended before anyone could know it."""
        while (entry := self.table.get(proc)) is not None and entry.channel is not None:
            try:
                message, fds, closed = wire.receive(entry.channel)
            except BlockingIOError:
                return
            except OSError:
                message, fds, closed = None, [], True
            for fd in fds:
                socket.close(fd)
            if closed:
                self.close_channel(entry.channel)
                entry.channel = None
                if entry.pid is None:
                    self.table.forget(proc)
                    self.liveness.forget(proc)
                    self.feed(ProcExited(self.now(), proc, LOST, random.random(), entry.error))
                return
            if message is not None:
                self.on_message(proc, message)

    def on_message(self, proc: int, message: wire.Message) -> None:
        entry = self.table.get(proc)
        if entry is None:
            return
        match message.kind:
            case "warm" | "cold":
                warm, words = message.kind == "warm", message.words
                self.feed(TemplateReady(self.now(), proc, warm, "" if warm else words[1], words[0]))
            case "failed":
                entry.error = message.words[0]
            case "pid":
                self.claim(proc, message.number(0), message.number(1))
            case "serving":
                self.feed(WorkerReady(self.now(), proc))
            case "pong" | "checked":
                self.liveness.answered(message)

    def claim(self, proc: int, pid: int, start: int) -> None:
        claim = self.table.claim(proc, pid, start)
        if claim is None:
            return
        if claim.status is not None:
            self.exited(proc, claim.status)
            return
        entry = self.table.get(proc)
        if entry is not None:
            self.log.info("%s %d forked from template %s: pid %d", entry.role, proc, entry.parent, pid)
        if claim.signal is not None:
            self.effects.send_signal(pid, claim.signal)
        self.feed(Forked(self.now(), proc))

    def liveness_targets(self) -> list[int]:
        return [
            w.id
            for w in machine.serving(self.state)
            if (entry := self.table.get(w.id)) is not None and entry.channel is not None
        ]

    def send_to(self, proc: int, data: bytes) -> bool:
        entry = self.table.get(proc)
        if entry is None or entry.channel is None:
            return False
        try:
            entry.channel.send(data)
        except OSError:
            return False
        return True

    # Actions out -------------------------------------------------------------------------

    def perform(self, action: Action) -> None:
        match action:
            case StartTemplate():
                self.spawn(
                    action.proc,
                    "template",
                    None,
                    lambda: self.effects.spawn_template(action.config, self.listener, self.environment(action.config)),
                )
            case StartWorker(template=None):
                self.spawn(
                    action.proc,
                    "worker",
                    None,
                    lambda: self.effects.spawn_cold_worker(
                        action.config, self.listener, self.environment(action.config)
                    ),
                )
            case StartWorker(template=int(template)):
                self.spawn(
                    action.proc,
                    "worker",
                    template,
                    lambda: self.effects.fork_worker(self.control(template), str(action.proc)),
                )
            case RunStep():
                self.run_step(action)
            case StopProc():
                self.signal(action.proc, signal.SIGTERM)
            case KillProc():
                self.signal(action.proc, signal.SIGKILL)
            case Exit():
                self.code = action.code
            case Log():
                self.log.log(action.level, action.message)
            case Warm():
                self.liveness.warm(action.procs, action.path)

    def spawn(self, proc: int, role: str, parent: int | None, start: Callable[[], Spawned]) -> None:
        try:
            spawned = start()
        except OSError as err:  # EMFILE, EAGAIN at pids.max, a template gone: the machine decides
            self.later(SpawnFailed(self.now(), proc, describe(err), random.random()))
            return
        self.adopt(proc, spawned, role, parent)

    def run_step(self, action: RunStep) -> None:
        """`python -m ...` steps run forked from a ready template when the machine names one:
        they skip the interpreter's start and the app's imports. Any other step is spawned."""
        argv = action.step.module_argv()
        if action.template is not None and argv is not None:
            template = action.template
            self.spawn(
                action.proc,
                "step",
                template,
                lambda: self.effects.fork_step(self.control(template), str(action.proc), argv),
            )
            how = "forked from the template"
        else:
            self.spawn(
                action.proc,
                "step",
                None,
                lambda: self.effects.spawn_step(action.step.command, self.environment(action.config)),
            )
            how = "spawned"
        self.log.info("running prestart step %r (%s): %s", action.step.name, how, " ".join(action.step.command))

    def control(self, template: int) -> socket.socket:
        entry = self.table.get(template)
        if entry is None or entry.channel is None:
            raise OSError(errno.ESRCH, f"template {template} is gone")
        return entry.channel

    def environment(self, config: Config) -> dict[str, str]:
        return child_environment(config, self.source.environ)

    def adopt(self, proc: int, spawned: Spawned, role: str, parent: int | None = None) -> None:
        self.table.add(proc, self.now(), spawned.pid, spawned.start, spawned.channel, role, parent)
        if spawned.channel is not None:
            self.loop.add_reader(spawned.channel, partial(self.on_channel, proc))
        if spawned.pid is not None:
            self.log.info("started %s %d (pid %d)", role, proc, spawned.pid)

    def signal(self, proc: int, sig: signal.Signals) -> None:
        pid = self.table.signal(proc, sig)
        if pid is not None:
            self.effects.send_signal(pid, sig)

    def close_channel(self, channel: socket.socket | None) -> None:
        if channel is not None:
            self.loop.remove_reader(channel)
            channel.close()

    # What the launcher itself says -------------------------------------------------------

    def page(self) -> tuple[str, bytes]:
        """The 503's body: the reason as JSON, or in reload mode the traceback of an app that
        does not import, as plain text (never outside reload mode: it may show the code)."""
        reason = machine.unavailable_reason(self.state)
        if self.config.server.reload and self.state.desired.await_change:
            return TEXT, reason.encode(errors="replace")
        return JSON, json.dumps({"status": "unavailable", "detail": reason}).encode()

    def probe_settings(self) -> ProbeSettings:
        """Read by the probe thread: the state is replaced whole, never changed in place."""
        cfg = self.config
        return ProbeSettings(cfg.database, cfg.probe.timeout, cfg.probe.interval, cfg.probe.retry_interval)

    def check_connections(self) -> None:
        """Whether the pools fit in max_connections: once known, and again on every resize,
        swap and reload."""
        target = self.state.desired.target
        now = (target.size, target.number, self.max_connections)
        if not self.max_connections or now == self.budget_checked:
            return
        self.budget_checked = now
        warning = connection_warning(target.size, self.source.environ, self.max_connections)
        if warning:
            self.log.warning("%s", warning)

    def kill_leftovers(self) -> None:
        """Nothing outlives the launcher: kill and reap any descendant still around."""
        for entry in self.table.running():
            if entry.pid is not None:
                self.effects.send_signal(entry.pid, signal.SIGKILL)
        self.effects.kill_descendants()
