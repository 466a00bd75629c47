"""The periodic checks that feed the state machine: DB probes and worker liveness.

Each runs in a daemon thread of its own: both block (PyMySQL, a socket read), each
is bounded by its timeout, a slow one never delays the other, and a thread still
inside a check never delays the launcher's exit. Liveness checks go to each worker's
private socket, so the answer comes from that very worker, never from a sibling
that shares the public socket.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from launcher.config import Config, DatabaseConfig
from launcher.supervisor.dbprobe import ProbeResult, probe
from launcher.supervisor.knock import Knock, Port, knocker

STATUS_LINE_LIMIT = 1024
# While the DB does not answer and clients are waiting on the launcher's 503, it is probed
# this often, not every retry_interval: their wait ends as soon as it answers.
HURRY_GAP = 0.025
# While nothing listens on the DB's port, it is knocked on this often (knock.py).
KNOCK_GAP = 0.02


class _Watcher(threading.Thread):
    """A daemon thread whose `run` waits on its stop flag between checks."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()


class DbWatcher(_Watcher):
    def __init__(self, cfg: Config, deliver: Callable[[ProbeResult], None],
                 check: Callable[[DatabaseConfig, float], ProbeResult] = probe) -> None:
        super().__init__("db-probe")
        self._cfg = cfg
        self._deliver = deliver
        self._check = check
        self._wake = threading.Event()

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def hurry(self) -> None:
        """A client waits for the DB: probe again soon if it did not answer (any thread)."""
        self._wake.set()

    def run(self) -> None:
        cfg = self._cfg.probe
        result = ProbeResult(ok=False)
        knock: Knock | None = None  # while the port refused the last probe
        while not self._halt.is_set():
            started = time.monotonic()
            previous_ok = result.ok
            if knock is None or knock() is not Port.REFUSED:
                result = self._check(self._cfg.database, cfg.timeout)
            # else the port still refuses, and a login would fail the same way: the same result
            if self._halt.is_set():
                return
            self._deliver(result)
            knock = None
            # A first failure after a success is confirmed at once, not a whole interval later:
            # detection of a lost DB then takes two probe timeouts, not two intervals. While the
            # DB does not answer, it is tried more often, so its return is noticed at once.
            if previous_ok and not result.ok:
                continue
            if result.reason == "refused":
                knock = knocker(self._cfg.database, KNOCK_GAP)
            if self._pause(started, cfg.interval if result.ok else cfg.retry_interval, result.ok, knock):
                knock = None

    def _pause(self, started: float, interval: float, ok: bool, knock: Knock | None) -> bool:
        """Until the next probe is due; a hurry brings it forward while the DB does not answer
        (a DB that answers is not probed faster, however many clients come). True when a
        knock found the port open: probe now."""
        due = started + interval
        while not self._halt.is_set():
            left = due - time.monotonic()
            if left <= 0:
                return False
            if self._wake.wait(min(left, KNOCK_GAP) if knock else left):
                self._wake.clear()
                if not ok:
                    due = min(due, started + HURRY_GAP)
            elif knock is not None and knock() is Port.OPEN:
                return True
        return False


class LivenessWatcher(_Watcher):
    """Every interval, checks each worker `targets()` names (its id and private address)."""

    def __init__(self, cfg: Config, targets: Callable[[], list[tuple[int, str]]],
                 deliver: Callable[[int, bool, str], None]) -> None:
        super().__init__("liveness")
        self._cfg = cfg.liveness
        self._targets = targets
        self._deliver = deliver

    def run(self) -> None:
        while not self._halt.wait(self._cfg.interval):
            for proc, address in self._targets():
                ok, why = check_liveness(address, self._cfg.path, self._cfg.timeout)
                if self._halt.is_set():
                    return
                self._deliver(proc, ok, why)


def warm(address: str, path: str, timeout: float) -> None:
    """GET `path` on a worker from a thread of its own, for the DB connect it costs the
    worker; its answer does not matter (a failure shows in the next probe or request)."""
    threading.Thread(target=check_liveness, args=(address, path, timeout), name="warm", daemon=True).start()


def check_liveness(address: str, path: str, timeout: float) -> tuple[bool, str]:
    """GET `path` over a worker's private unix socket; ok only for a 200 in time."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: launcher\r\nConnection: close\r\n\r\n".encode())
            status_line = _first_line(sock, deadline)
    except TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except OSError as err:
        return False, f"cannot connect ({err.strerror or err})"
    parts = status_line.split()
    if len(parts) >= 2 and parts[1] == b"200":
        return True, ""
    return False, f"answered {status_line.decode(errors='replace').strip() or 'nothing'}"


def _first_line(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < STATUS_LINE_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(STATUS_LINE_LIMIT)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]
