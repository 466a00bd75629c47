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

CONFIG = {"LAUNCHER_PROBE_INTERVAL": "100ms", "LAUNCHER_PROBE_TIMEOUT": "50ms",
          "LAUNCHER_PROBE_RETRY_INTERVAL": "50ms", "LAUNCHER_LIVENESS_INTERVAL": "1h",
          "LAUNCHER_RESTART_BACKOFF_INITIAL": "10ms", "LAUNCHER_RESTART_BACKOFF_MAX": "10ms",
          "LAUNCHER_SERVER_STOP_GRACE": "2s"}


@dataclass
class FakeChild:
    """A server child as the shell sees it: a go pipe it waits on and a ready pipe it writes."""

    pid: int
    go_r: int
    ready_w: int
    released: threading.Event = field(default_factory=threading.Event)

    def serve_when_released(self) -> None:
        if os.read(self.go_r, 16):
            self.released.set()
            os.write(self.ready_w, b"ready\n")
        os.close(self.go_r)
        os.close(self.ready_w)


@dataclass
class World:
    """Fake processes and DB behind the shell's Effects; exits arrive through a real SIGCHLD."""

    db_up: bool = True
    children: list[FakeChild] = field(default_factory=list)
    steps: list[tuple[str, ...]] = field(default_factory=list)
    signals: list[tuple[int, signal.Signals]] = field(default_factory=list)
    exited: list[tuple[int, ExitStatus]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pids: Iterator[int] = field(default_factory=lambda: itertools.count(4_000_001))

    def effects(self) -> Effects:
        return Effects(spawn_server=self.spawn_server, spawn_step=self.spawn_step, send_signal=self.send_signal,
                       reap=self.reap, kill_descendants=lambda: None, probe=self.probe)

    def spawn_server(self, cfg: Config, listener: socket.socket, env: Mapping[str, str], name: str) -> Spawned:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        child = FakeChild(next(self.pids), go_r, ready_w)
        self.children.append(child)
        threading.Thread(target=child.serve_when_released, daemon=True).start()
        return Spawned(child.pid, ready_r, go_w, "")

    def spawn_step(self, command: Sequence[str], env: Mapping[str, str]) -> Spawned:
        pid = next(self.pids)
        self.steps.append(tuple(command))
        self.exit(pid, ExitStatus(code=0))
        return Spawned(pid)

    def send_signal(self, pid: int, sig: signal.Signals) -> None:
        self.signals.append((pid, sig))
        if sig in (signal.SIGTERM, signal.SIGKILL) and any(c.pid == pid for c in self.children):
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
        return ProbeResult(ok=True) if self.db_up else ProbeResult(ok=False, reason="refused", detail="fake")


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


def test_a_child_that_exits_0_is_replaced_and_stop_exits_0() -> None:
    world = World()

    def script(w: World) -> None:
        until(lambda: w.steps and w.children)
        first = w.children[0]
        until(first.released.is_set)
        w.exit(first.pid, ExitStatus(code=0))
        until(lambda: len(w.children) >= 2 and w.children[1].released.is_set())

    assert run_supervisor(world, script) == 0
    assert world.steps == [("python", "-m", "api.migrate")]
    assert (world.children[1].pid, signal.SIGTERM) in world.signals  # the replacement was stopped at exit


def test_no_child_is_released_while_the_db_is_down() -> None:
    world = World(db_up=False)

    def script(w: World) -> None:
        until(lambda: w.children)
        time.sleep(0.5)
        assert w.steps == []  # no prestart before the DB answers
        assert not w.children[0].released.is_set()  # parked, not released

    assert run_supervisor(world, script) == 0


def test_a_crash_loop_ends_with_exit_70() -> None:
    world = World()

    def script(w: World) -> None:
        for crash in range(3):
            until(lambda: len(w.children) > crash and w.children[crash].released.is_set())
            w.exit(w.children[crash].pid, ExitStatus(code=3))

    code = run_supervisor(world, script, {"LAUNCHER_RESTART_MAX_RESTARTS": "2"})
    assert code == 70


