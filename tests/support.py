"""Run the launcher as users do (a subprocess), and watch it from outside: HTTP, exit code, processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

from localdb.server import free_port

ROOT = Path(__file__).resolve().parent.parent

# Fast but not frantic: tests observe transitions in seconds, not minutes.
FAST = {
    "LAUNCHER_PROBE_INTERVAL": "500ms",
    "LAUNCHER_PROBE_TIMEOUT": "400ms",
    "LAUNCHER_LIVENESS_INTERVAL": "1s",
    "LAUNCHER_LIVENESS_TIMEOUT": "800ms",
    "LAUNCHER_RESTART_BACKOFF_MAX": "1s",
    "LAUNCHER_SERVER_STOP_GRACE": "5s",
    "LAUNCHER_SERVER_HOST": "127.0.0.1",
}


def flood(port: int, seconds: float, payload: bytes) -> int:
    """Connections that each send `payload` and go at once, for `seconds`; returns how many."""
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.sendall(payload)
        except OSError:
            pass
        count += 1
    return count


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")


@dataclass
class Launcher:
    """One `python -m launcher` process with its own port and log file."""

    env: Mapping[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    prefix: list[str] = field(default_factory=list)
    execs: bool = False  # the prefix execs the launcher (prlimit) rather than forking it (unshare)

    def start(self) -> Launcher:
        env = {**os.environ, **FAST, "LAUNCHER_SERVER_PORT": str(self.port), **self.env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "launcher", *self.args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The launcher's pid; under a `prefix` such as unshare, the prefix's child."""
        assert self.process is not None
        if not self.prefix or self.execs:
            return self.process.pid
        wrapper = psutil.Process(self.process.pid)
        return int(wait_until(lambda: [c.pid for c in wrapper.children()], 10, what="the launcher under the prefix")[0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 3.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def status(self, path: str = "/api/health") -> int | None:
        """The HTTP status a client sees, or None when the connection fails."""
        try:
            return self.get(path).status_code
        except httpx.HTTPError:
            return None

    def wait_status(self, code: int, path: str = "/api/health", timeout: float = 30.0) -> None:
        wait_until(lambda: self.status(path) == code, timeout, what=f"{path} -> {code}\n--- log:\n{self.log()}")

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.log(), timeout, what=f"log line {text!r}\n--- log:\n{self.log()}")

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def workers(self) -> list[psutil.Process]:
        """The uvicorn workers, oldest first (forked or cold, they call themselves `worker`)."""
        return sorted((p for p in self.children() if _name(p) == "worker"), key=lambda p: p.create_time())

    def server_pid(self) -> int:
        """The newest worker."""
        return int(wait_until(lambda: [p.pid for p in self.workers()][-1:], 30, what="a worker")[0])

    def template_pid(self) -> int:
        found = wait_until(lambda: [p.pid for p in self.children() if _name(p) == "template"], 30, what="the template")
        return int(found[0])

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher still running after {timeout:g}s\n--- log:\n{self.log()}") from None

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        descendants = self.children()
        self.signal(signal.SIGTERM)
        try:
            return self.wait_exit(20)
        finally:
            for p in descendants:
                _kill(p)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _kill(p: psutil.Process) -> None:
    try:
        p.kill()
    except psutil.Error:
        pass


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` that still exist as processes (zombies count: nobody reaped them)."""
    return [pid for pid in pids if psutil.pid_exists(pid)]
