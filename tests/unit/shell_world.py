"""A fake world behind the real shell (gunicorn's test_arbiter.py style): fake templates,
workers and steps that talk to the shell over real socketpairs in the real wire format, a
reaper that hands out their statuses, pids from a tiny pool so that they are reused, spawns
that fail, and templates that die in the middle of a fork. Everything runs in the shell's
own loop: the world is pumped by one of its timers, so a test is one thread."""

from __future__ import annotations

import errno
import itertools
import signal
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from launcher import wire
from launcher.config import Config, DatabaseConfig, Source, load
from launcher.supervisor import machine
from launcher.supervisor.dbprobe import ProbeResult
from launcher.supervisor.events import ExitStatus, Tick
from launcher.supervisor.logs import Log
from launcher.supervisor.shell import Effects, Supervisor
from launcher.supervisor.spawn import Spawned, fork_step, fork_worker

PUMP_EVERY = 0.002
FAST = {
    "LAUNCHER_PROBE_INTERVAL": "100ms",
    "LAUNCHER_PROBE_TIMEOUT": "50ms",
    "LAUNCHER_PROBE_RETRY_INTERVAL": "50ms",
    "LAUNCHER_LIVENESS_INTERVAL": "1h",
    "LAUNCHER_RESTART_BACKOFF_INITIAL": "10ms",
    "LAUNCHER_RESTART_BACKOFF_MAX": "20ms",
    "LAUNCHER_SERVER_STOP_GRACE": "200ms",
    "LAUNCHER_SERVER_READY_TIMEOUT": "2s",
    "LAUNCHER_SERVER_APP": "fake:app",
}


@dataclass
class Fake:
    pid: int
    start: int
    kind: str  # template | worker | step
    channel: socket.socket | None = None  # its end
    alive: bool = True
    reported: bool = False  # a worker said `serving`, a step ended
    die_mid_fork: str = ""  # a template: "" | "before" (dies instead of forking) | "after" (forks, then dies)


@dataclass
class World:
    db_up: bool = True
    fail_next: int = 0  # an errno the next spawn fails with
    exhausted: bool = False  # every spawn fails with EAGAIN, as at a cgroup's pids.max
    fakes: list[Fake] = field(default_factory=list)
    reaped: list[tuple[int, int, ExitStatus]] = field(default_factory=list)
    signals: list[tuple[int, signal.Signals]] = field(default_factory=list)
    wrong_signals: list[str] = field(default_factory=list)
    # Few enough pids that they are reused, enough for a swap at the largest size the tests
    # use (3 serving, 3 new, a template and a step): with fewer, the new set can never complete.
    free: list[int] = field(default_factory=lambda: list(range(4_000_001, 4_000_011)))
    cooling: list[tuple[int, int]] = field(default_factory=list)  # (pid, pumps left) before it is reused
    starts: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    supervisor: Supervisor | None = None

    def effects(self) -> Effects:
        return Effects(
            spawn_template=self.spawn_template,
            fork_worker=self.fork_worker,
            spawn_cold_worker=self.spawn_cold_worker,
            spawn_step=self.spawn_step,
            fork_step=self.fork_step,
            send_signal=self.send_signal,
            reap=self.reap,
            kill_descendants=self.kill_all,
            probe=self.probe,
            load_config=Source.load,
        )

    # Processes ---------------------------------------------------------------------------

    def new(self, kind: str, channel: socket.socket | None = None) -> Fake:
        if self.fail_next:
            code, self.fail_next = self.fail_next, 0
            if channel is not None:
                channel.close()
            raise OSError(code, "injected")
        if self.exhausted or not self.free:
            if channel is not None:
                channel.close()
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        fake = Fake(self.free.pop(0), next(self.starts), kind, channel)
        self.fakes.append(fake)
        return fake

    def spawn_template(self, cfg: Config, listener: socket.socket, env: Mapping[str, str]) -> Spawned:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fake = self.new("template", theirs)
        except OSError:
            ours.close()
            raise
        theirs.setblocking(False)
        ours.setblocking(False)
        theirs.send(wire.encode("warm", "v1"))
        return Spawned(fake.pid, ours, fake.start)

    def fork_worker(self, control: socket.socket, name: str) -> Spawned:
        self.check_fail()
        return fork_worker(control, name)

    def fork_step(self, control: socket.socket, name: str, argv: Sequence[str]) -> Spawned:
        self.check_fail()
        return fork_step(control, name, argv)

    def check_fail(self) -> None:
        if self.exhausted:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        if self.fail_next:
            code, self.fail_next = self.fail_next, 0
            raise OSError(code, "injected")

    def spawn_cold_worker(self, cfg: Config, listener: socket.socket, env: Mapping[str, str]) -> Spawned:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fake = self.new("worker", theirs)
        ours.setblocking(False)
        return Spawned(fake.pid, ours, fake.start)

    def spawn_step(self, command: Sequence[str], env: Mapping[str, str]) -> Spawned:
        fake = self.new("step")
        return Spawned(fake.pid, None, fake.start)

    def end(self, fake: Fake, status: ExitStatus) -> None:
        if not fake.alive:
            return
        fake.alive = False
        if fake.channel is not None:
            fake.channel.close()
        self.reaped.append((fake.pid, fake.start, status))
        self.cooling.append((fake.pid, 3))
        if self.supervisor is not None:
            self.supervisor.loop.call_soon_threadsafe(self.supervisor.on_sigchld)

    # The shell's side effects --------------------------------------------------------------

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        self.signals.append((pid, sig))
        target = next((f for f in self.fakes if f.alive and f.pid == pid), None)
        if target is None or sig not in (signal.SIGTERM, signal.SIGKILL):
            return
        if not self.may_be_stopped(target):
            self.wrong_signals.append(f"{sig.name} to {target}")
        self.end(target, ExitStatus(signal=sig))

    def may_be_stopped(self, fake: Fake) -> bool:
        """Only a process the machine retires, or one the shell cleans up as it exits."""
        sup = self.supervisor
        assert sup is not None
        proc = sup.table.by_pid.get(fake.pid)
        return sup.code is not None or proc is None or any(r.id == proc for r in sup.state.observed.retiring)

    def reap(self) -> Iterator[tuple[int, int, ExitStatus]]:
        done, self.reaped = self.reaped, []
        return iter(done)

    def kill_all(self) -> None:
        for fake in self.fakes:
            self.end(fake, ExitStatus(signal=signal.SIGKILL))

    def probe(self, db: DatabaseConfig, timeout: float) -> ProbeResult:
        return ProbeResult(ok=True) if self.db_up else ProbeResult(ok=False, reason="timeout", detail="fake")

    # What the fake processes do on their own ------------------------------------------------

    def pump(self) -> None:
        self.cooling = [(pid, left - 1) for pid, left in self.cooling]
        self.free += [pid for pid, left in self.cooling if left <= 0]
        self.cooling = [(pid, left) for pid, left in self.cooling if left > 0]
        for fake in list(self.fakes):
            if fake.alive and fake.kind == "template" and fake.channel is not None:
                self.serve_requests(fake)
            elif fake.alive and fake.kind == "worker" and not fake.reported and fake.channel is not None:
                fake.reported = True
                self.say(fake, wire.encode("serving"))
            elif fake.alive and fake.kind == "step":
                self.end(fake, ExitStatus())
        if self.supervisor is not None and self.supervisor.code is None:
            self.supervisor.loop.call_later(PUMP_EVERY, self.pump)

    def serve_requests(self, template: Fake) -> None:
        assert template.channel is not None
        while template.alive:
            try:
                message, fds, closed = wire.receive(template.channel, max_fds=1)
            except BlockingIOError:
                return
            if closed:
                self.end(template, ExitStatus())
                return
            if message is None or len(fds) != 1:
                continue
            channel = socket.socket(fileno=fds[0])
            if template.die_mid_fork == "before":
                channel.close()
                self.end(template, ExitStatus(signal=signal.SIGKILL))
                return
            try:
                child = self.new("worker" if message.kind == "fork" else "step", channel)
            except OSError:
                channel.close()  # the fork failed: the shell sees the channel close, no pid said
                continue
            self.say(child, wire.encode("pid", child.pid, child.start))
            if template.die_mid_fork == "after":
                self.end(template, ExitStatus(signal=signal.SIGKILL))
                return

    @staticmethod
    def say(fake: Fake, data: bytes) -> None:
        if fake.channel is not None:
            try:
                fake.channel.send(data)
            except OSError:
                pass


class Harness:
    """The real shell, with the world behind it, run in slices of its own loop."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.world = World()
        environ = {**FAST, **(env or {})}
        self.config = load(None, environ)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sup = Supervisor(  # a reload reads the same environment again, as the launcher's does
            Source(None, environ), self.config, self.listener, Log(level="error"), effects=self.world.effects()
        )
        self.world.supervisor = self.sup
        self.sup.loop.call_later(PUMP_EVERY, self.world.pump)
        self.sup.feed(Tick(self.sup.now()))
        self.probe()

    def probe(self) -> None:
        self.sup.on_probe(self.world.probe(self.config.database, 0.1))

    def run(self, seconds: float) -> None:
        self.sup.loop.run(until=lambda: self.sup.code is not None, deadline=self.sup.loop.time() + seconds)

    def serving(self) -> int:
        return len(machine.serving(self.sup.state))

    def stop(self) -> int | None:
        self.sup.on_signal(signal.SIGTERM)
        self.run(5.0)
        code = self.sup.code
        self.sup.kill_leftovers()
        self.sup.unavailable.close()
        self.sup.loop.close()
        self.listener.close()
        return code
