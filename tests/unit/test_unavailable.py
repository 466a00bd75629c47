"""The launcher's own 503 responder, in process on a real socket: floods, hold-and-churn above
the cap, a full descriptor table, bare line feeds, and greetings of other protocols."""

from __future__ import annotations

import gc
import json
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from launcher.supervisor import unavailable
from launcher.supervisor.loop import Loop
from launcher.supervisor.unavailable import Unavailable
from tests.support import ROOT, flood


def page(reason: str) -> Callable[[], tuple[str, bytes]]:
    """The body the shell gives: the reason as JSON."""
    return lambda: ("application/json", json.dumps({"status": "unavailable", "detail": reason}).encode())


class Responder:
    """A Loop and an Unavailable on a fresh listener, run by a thread of their own."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = self.listener.getsockname()[1]
        self.loop = Loop()
        self.warnings: list[str] = []
        self.unavailable = Unavailable(self.loop, self.listener, page("waiting for database"), self.warnings.append)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.unavailable.set(True)
        self.loop.run(until=self._stop.is_set)

    def start(self) -> Responder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.loop.call_soon_threadsafe(lambda: None)
        self._thread.join(5)
        self.unavailable.close()
        self.loop.close()
        self.listener.close()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the backlog is empty and every connection is closed, for a while."""
        quiet, deadline = 0, time.monotonic() + timeout
        while quiet < 5 and time.monotonic() < deadline:
            queued = select.select([self.listener], [], [], 0)[0]
            quiet = 0 if queued or self.unavailable.connections() else quiet + 1
            time.sleep(0.05)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def ask(self, request: bytes = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n") -> bytes:
        with self.connect() as conn:
            conn.sendall(request)
            return _read_all(conn)


def _read_all(conn: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest.fixture
def responder() -> Iterator[Responder]:
    item = Responder().start()
    yield item
    item.stop()


def test_a_request_gets_a_503_with_the_reason(responder: Responder) -> None:
    answer = responder.ask()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in head
    assert json.loads(body) == {"status": "unavailable", "detail": "waiting for database"}


def test_a_request_with_bare_line_feeds_gets_a_503(responder: Responder) -> None:
    assert responder.ask(b"GET /api/health HTTP/1.1\nHost: x\n\n").startswith(b"HTTP/1.1 503 ")


@pytest.mark.parametrize(
    "greeting",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x01\x02garbage" * 100,
    ],
)
def test_other_protocols_are_closed_at_once(responder: Responder, greeting: bytes) -> None:
    started = time.monotonic()
    assert responder.ask(greeting) == b""
    assert time.monotonic() - started < 1.0  # not after the 2 s read timeout


def test_a_flood_of_half_sent_heads_leaves_no_connection_or_timer_behind(responder: Responder) -> None:
    gc.disable()  # what the flood leaves must be freed by reference counting, not by the cyclic GC
    try:
        threads = [threading.Thread(target=flood, args=(responder.port, 2.0, b"GET /" + b"a" * 9000)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        responder.settle()
        clients = sum(type(o).__name__ == "_Client" for o in gc.get_objects())
    finally:
        gc.enable()
    assert responder.unavailable.connections() == 0
    assert clients == 0
    assert responder.loop.pending_timers() < 2 * 256
    assert responder.ask().startswith(b"HTTP/1.1 503 ")


class Churner(threading.Thread):
    """Holds `count` idle connections and reopens each the moment the server closes it."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.halt = threading.Event()
        self.reopened = 0

    def open(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            return None

    def run(self) -> None:
        held = [conn for conn in (self.open() for _ in range(self.count)) if conn]
        while not self.halt.is_set():
            closed, _, _ = select.select(held, [], [], 0.05)
            for conn in closed:
                held.remove(conn)
                conn.close()
                if (fresh := self.open()) is not None:
                    held.append(fresh)
                    self.reopened += 1
        for conn in held:
            conn.close()


def test_holding_and_churning_past_the_cap_never_shuts_a_client_out(responder: Responder) -> None:
    attacker = Churner(responder.port, responder.unavailable.cap + 100)
    attacker.start()
    try:
        time.sleep(1.0)
        timings, answers = [], []
        for _ in range(30):
            started = time.monotonic()
            answers.append(responder.ask()[:12])
            timings.append(time.monotonic() - started)
    finally:
        attacker.halt.set()
        attacker.join(10)
    assert answers == [b"HTTP/1.1 503"] * 30
    assert attacker.reopened > 0  # the cap was really reached and connections were evicted
    assert statistics.median(timings) < 0.1


def test_thousands_of_idle_connections_do_not_delay_a_client(responder: Responder) -> None:
    idle = [responder.connect() for _ in range(3000)]
    try:
        started = time.monotonic()
        assert responder.ask().startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < 1.0
    finally:
        for conn in idle:
            conn.close()


FULL_TABLE = r"""
import os, resource, socket, sys, threading, time
from launcher.supervisor.dbprobe import probe
from launcher.config import DatabaseConfig
from launcher.supervisor.loop import Loop
from launcher.supervisor.unavailable import Unavailable

listener = socket.create_server(("127.0.0.1", 0), backlog=512)
loop = Loop()
warnings = []
responder = Unavailable(loop, listener, lambda: ("application/json", b"{}"), warnings.append)
responder.set(True)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
hog = []
while True:
    try:
        hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break
print(listener.getsockname()[1], flush=True)
sys.stdin.readline()  # the test has queued its connections
cpu = time.process_time()
loop.run(until=lambda: False, deadline=loop.time() + 2.0)
spent = time.process_time() - cpu
result = probe(DatabaseConfig(port=1), 0.5)
for fd in hog[:50]:
    os.close(fd)
print(f"{spent:.3f} {len(warnings)} {result.reason}", flush=True)
loop.run(until=lambda: False, deadline=loop.time() + 2.0)
"""


def test_a_full_descriptor_table_neither_spins_nor_misreports_the_probe() -> None:
    helper = subprocess.Popen(
        [sys.executable, "-c", FULL_TABLE], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert helper.stdin and helper.stdout
    try:
        port = int(helper.stdout.readline())
        queued = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
        helper.stdin.write("go\n")
        helper.stdin.flush()
        spent, warned, reason = helper.stdout.readline().split()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\n\r\n")
            answer = _read_all(conn)
    finally:
        helper.kill()
        helper.wait()
    for conn in queued:
        conn.close()
    assert float(spent) < 0.5  # of the 2 s the loop ran: no spin on a listener that stays readable
    assert warned == "1"
    assert reason == "out_of_fds"
    assert answer.startswith(b"HTTP/1.1 503 ")  # once descriptors are free again, clients are answered


def test_the_cap_leaves_most_descriptors_free() -> None:
    assert 4 <= unavailable.connection_cap() <= unavailable.MAX_CONNECTIONS
