"""The real I/O shell, in process, with fake processes and a fake DB (gunicorn's test_arbiter
style): what it spawns, signals and returns when children exit and stop signals arrive."""
from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from launcher.supervisor.spawn import Spawned
from launcher.config import Config, DatabaseConfig, load
from launcher.supervisor.dbprobe import ProbeResult
from launcher.supervisor.logs import Log
from launcher.supervisor.machine import ExitStatus
from launcher.supervisor.shell import Effects, Supervisor
from launcher.supervisor.watchers import DbWatcher
from localdb.server import free_port

CONFIG = {"LAUNCHER_PROBE_INTERVAL": "100ms", "LAUNCHER_PROBE_TIMEOUT": "50ms",
          "LAUNCHER_PROBE_RETRY_INTERVAL": "50ms", "LAUNCHER_LIVENESS_INTERVAL": "1h",
          "LAUNCHER_RESTART_BACKOFF_INITIAL": "10ms", "LAUNCHER_RESTART_BACKOFF_MAX": "10ms",
          "LAUNCHER_SERVER_STOP_GRACE": "2s"}


@dataclass
class FakeChild:
    """A worker as the shell sees it: a ready pipe it writes once it serves."""

    pid: int
    ready_w: int
    released: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        self.released.set()
        try:
            os.write(self.ready_w, b"ready\n")
        except BrokenPipeError:
            pass  # the shell already forgot it
        os.close(self.ready_w)


@dataclass
class World:
    """Fake processes and DB behind the shell's Effects; exits arrive through a real SIGCHLD."""

    db_up: bool = True
    children: list[FakeChild] = field(default_factory=list)
    templates: list[int] = field(default_factory=list)
    steps: list[tuple[str, ...]] = field(default_factory=list)
    signals: list[tuple[int, signal.Signals]] = field(default_factory=list)
    warmed: list[str] = field(default_factory=list)
    exited: list[tuple[int, ExitStatus]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pids: Iterator[int] = field(default_factory=lambda: itertools.count(4_000_001))

    def effects(self) -> Effects:
        return Effects(spawn_template=self.spawn_template, fork_worker=self.fork_worker,
                       spawn_cold_worker=self.spawn_cold_worker, spawn_step=self.spawn_step, fork_step=self.fork_step,
                       send_signal=self.send_signal, reap=self.reap, kill_descendants=lambda: None,
                       probe=self.probe, warm=lambda address, path, timeout: self.warmed.append(address))

    def spawn_template(self, cfg: Config, listener: socket.socket, env: Mapping[str, str]) -> Spawned:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        pid = next(self.pids)
        self.templates.append(pid)
        theirs.send(b"warm")
        threading.Thread(target=self.template, args=(theirs,), daemon=True).start()
        return Spawned(pid, control=ours)

    def template(self, control: socket.socket) -> None:
        """Answers each fork request with the pid of a new fake worker."""
        while message := control.recv(256):
            _, name, pid = message.decode().split()
            control.send(f"forked {name} {pid}".encode())

    def new_child(self) -> tuple[FakeChild, int]:
        ready_r, ready_w = os.pipe()
        child = FakeChild(next(self.pids), ready_w)
        self.children.append(child)
        threading.Timer(0.02, child.serve).start()
        return child, ready_r

    def fork_worker(self, template: Spawned, name: str) -> Spawned:
        child, ready_r = self.new_child()
        assert template.control is not None
        template.control.send(f"fork {name} {child.pid}".encode())  # the fake template answers with it
        return Spawned(None, ready_r, private_address=f"worker-{name}")

    def spawn_cold_worker(self, cfg: Config, listener: socket.socket, env: Mapping[str, str], name: str) -> Spawned:
        child, ready_r = self.new_child()
        return Spawned(child.pid, ready_r)

    def spawn_step(self, command: Sequence[str], env: Mapping[str, str]) -> Spawned:
        pid = next(self.pids)
        self.steps.append(tuple(command))
        self.exit(pid, ExitStatus(code=0))
        return Spawned(pid)

    def fork_step(self, template: Spawned, name: str, module_argv: Sequence[str]) -> Spawned:
        return self.spawn_step(("python", "-m", *module_argv), {})

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        self.signals.append((pid, sig))
        known = pid in self.templates or any(c.pid == pid for c in self.children)
        if sig in (signal.SIGTERM, signal.SIGKILL) and known and (pid, sig) not in self.signals[:-1]:
            self.exit(pid, ExitStatus(signal=sig))

    def exit(self, pid: int, status: ExitStatus) -> None:
        with self.lock:
            self.exited.append((pid, status))
        os.kill(os.getpid(), signal.SIGCHLD)

    def reap(self) -> Iterator[tuple[int, ExitStatus]]:
        with self.lock:
            done, self.exited[:] = list(self.exited), []
        return iter(done)

    def probe(self, db: DatabaseConfig, timeout: float) -> ProbeResult:
        # not "refused", which the watcher would check by knocking on a real port
        return ProbeResult(ok=True) if self.db_up else ProbeResult(ok=False, reason="timeout", detail="fake")


def run_supervisor(world: World, script: Callable[[World], None], env: dict[str, str] | None = None) -> int:
    """Run the shell in this (main) thread while `script` acts on the world from another."""
    cfg = load(None, {**CONFIG, **(env or {})})
    listener = socket.create_server(("127.0.0.1", 0))
    supervisor = Supervisor(cfg, listener, {}, Log(level="error"), effects=world.effects())
    failure: list[BaseException] = []

    def act() -> None:
        try:
            script(world)
        except BaseException as err:  # reported by the test, after the shell stopped
            failure.append(err)
        finally:
            supervisor.loop.call_soon_threadsafe(lambda: supervisor.on_stop_signal(signal.SIGTERM))

    threading.Thread(target=act, daemon=True).start()
    try:
        code = supervisor.run()
    finally:
        listener.close()
    if failure:
        raise failure[0]
    return code


def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_a_worker_that_exits_0_is_replaced_and_stop_exits_0() -> None:
    world = World()

    def script(w: World) -> None:
        until(lambda: w.steps and w.children)
        first = w.children[0]
        until(first.released.is_set)
        w.exit(first.pid, ExitStatus(code=0))
        until(lambda: len(w.children) >= 2 and w.children[1].released.is_set())

    assert run_supervisor(world, script, {"LAUNCHER_SERVER_WORKERS": "1"}) == 0
    assert world.steps == [("python", "-m", "api.migrate")]
    assert (world.children[1].pid, signal.SIGTERM) in world.signals  # the replacement was stopped at exit
    assert (world.templates[0], signal.SIGTERM) in world.signals


def test_no_worker_starts_while_the_db_is_down() -> None:
    world = World(db_up=False)

    def script(w: World) -> None:
        until(lambda: w.templates)
        time.sleep(0.5)
        assert w.steps == [] and w.children == []

    assert run_supervisor(world, script) == 0


def test_two_workers_serve_and_one_lost_is_replaced_alone() -> None:
    world = World()
    before_stop: list[tuple[int, signal.Signals]] = []

    def script(w: World) -> None:
        until(lambda: len(w.children) == 2 and all(c.released.is_set() for c in w.children))
        w.exit(w.children[0].pid, ExitStatus(signal=9))
        until(lambda: len(w.children) == 3 and w.children[2].released.is_set())
        before_stop.extend(w.signals)

    assert run_supervisor(world, script, {"LAUNCHER_SERVER_WORKERS": "2"}) == 0
    assert not any(pid == world.children[1].pid for pid, _ in before_stop), "the other worker was left alone"


def test_workers_that_served_through_a_db_outage_are_warmed_when_it_returns() -> None:
    world = World()

    def script(w: World) -> None:
        until(lambda: len(w.children) == 2 and all(c.released.is_set() for c in w.children))
        w.db_up = False
        time.sleep(0.5)
        assert w.warmed == []
        w.db_up = True
        until(lambda: len(w.warmed) == 2)

    assert run_supervisor(world, script, {"LAUNCHER_SERVER_WORKERS": "2", "LAUNCHER_ON_DB_LOSS": "keep"}) == 0
    assert sorted(world.warmed) == ["worker-3", "worker-4"], "both workers (1 is the template, 2 the migration)"


def test_a_crash_loop_ends_with_exit_70() -> None:
    world = World()

    def script(w: World) -> None:
        for crash in range(3):
            until(lambda: len(w.children) > crash and w.children[crash].released.is_set())
            w.exit(w.children[crash].pid, ExitStatus(code=3))

    code = run_supervisor(world, script, {"LAUNCHER_RESTART_MAX_RESTARTS": "2"})
    assert code == 70


def probes_in(seconds: float, ok: bool, hurry: bool) -> int:
    """How many probes a DbWatcher makes in `seconds` with a 1 s retry interval."""
    calls: list[float] = []

    def check(db: DatabaseConfig, timeout: float) -> ProbeResult:
        calls.append(time.monotonic())
        return ProbeResult(ok=ok, reason="" if ok else "timeout")

    cfg = load(None, {"LAUNCHER_PROBE_RETRY_INTERVAL": "1s", "LAUNCHER_PROBE_INTERVAL": "2s"})
    watcher = DbWatcher(cfg, lambda result: None, check)
    watcher.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if hurry:
            watcher.hurry()
        time.sleep(0.005)
    watcher.stop()
    watcher.join(5)
    return len(calls)


def test_waiting_clients_hurry_the_probe_of_a_db_that_does_not_answer() -> None:
    assert probes_in(0.5, ok=False, hurry=False) == 1
    assert 8 <= probes_in(0.5, ok=False, hurry=True) <= 21  # every 25 ms at most


def test_a_db_that_answers_is_not_probed_faster_however_many_clients_come() -> None:
    assert probes_in(0.5, ok=True, hurry=True) == 1


def test_a_port_that_refuses_is_knocked_on_and_probed_the_moment_it_opens() -> None:
    port = free_port()
    logins: list[float] = []
    delivered: list[ProbeResult] = []

    def check(db: DatabaseConfig, timeout: float) -> ProbeResult:
        logins.append(time.monotonic())
        return ProbeResult(ok=False, reason="refused")

    cfg = load(None, {"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": str(port)})
    watcher = DbWatcher(cfg, delivered.append, check)
    watcher.start()
    try:
        time.sleep(0.5)
        assert len(logins) == 1, "while the port refuses, no login is tried"
        assert 3 <= len(delivered) <= 7, "yet the machine hears of a failed probe every retry_interval"
        with socket.create_server(("127.0.0.1", port)):
            opened = time.monotonic()
            until(lambda: len(logins) > 1, 2.0)
            assert logins[1] - opened < 0.1, "the login follows the knock that finds the port open"
    finally:
        watcher.stop()
        watcher.join(5)
