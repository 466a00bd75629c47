"""The launcher's own 503 while no child serves: fast, honest, and hard to exhaust."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from localdb.server import MariaDB
from tests.support import Launcher, flood, wait_until

Start = Callable[..., Launcher]


def waiting_launcher(launcher: Start, mariadb: MariaDB) -> Launcher:
    mariadb.stop()
    service = launcher()
    service.wait_log("database probe failed")
    return service


def closed_without_answer(service: Launcher, payload: bytes) -> bool:
    """An oversized request head is dropped: the launcher closes instead of buffering it."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as conn:
        conn.sendall(payload)
        try:
            return conn.recv(65536) == b""
        except ConnectionResetError:
            return True


def test_503_comes_well_under_100ms(launcher: Start, mariadb: MariaDB) -> None:
    service = waiting_launcher(launcher, mariadb)
    with httpx.Client(base_url=service.url) as client:
        timings = []
        for _ in range(20):
            started = time.monotonic()
            assert client.get("/api/notes/1").status_code == 503
            timings.append(time.monotonic() - started)
    assert sorted(timings)[10] < 0.1


def test_post_with_a_body_gets_the_503_not_a_reset(launcher: Start, mariadb: MariaDB) -> None:
    service = waiting_launcher(launcher, mariadb)
    response = httpx.post(service.url + "/api/notes", json={"text": "x" * 50_000}, timeout=5)
    assert response.status_code == 503


def test_garbage_and_idle_connections_do_not_block_real_clients(launcher: Start, mariadb: MariaDB) -> None:
    service = waiting_launcher(launcher, mariadb)
    idle = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(50)]
    half = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(20)]
    for conn in half:
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    assert closed_without_answer(service, b"\x00\x01garbage" * 2000)
    try:
        assert service.get("/api/health").status_code == 503
    finally:
        for conn in idle + half:
            conn.close()


def test_idle_connections_are_closed_by_the_launcher(launcher: Start, mariadb: MariaDB) -> None:
    service = waiting_launcher(launcher, mariadb)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
        started = time.monotonic()
        assert conn.recv(1) == b""
        assert time.monotonic() - started < 5


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def flood_from_threads(port: int, seconds: float, payload: bytes, threads: int = 4) -> None:
    workers = [threading.Thread(target=flood, args=(port, seconds, payload)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


@pytest.mark.parametrize(
    "payload",
    [b"GET /" + b"a" * 9000, b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["half-sent heads", "complete requests"],
)
def test_a_connection_flood_does_not_grow_the_launcher(launcher: Start, mariadb: MariaDB, payload: bytes) -> None:
    service = waiting_launcher(launcher, mariadb)
    time.sleep(1.0)
    idle = rss_mb(service.pid)
    peak = [idle]

    def sample() -> None:
        while flooding.is_set():
            peak.append(rss_mb(service.pid))
            time.sleep(0.1)

    flooding = threading.Event()
    flooding.set()
    sampler = threading.Thread(target=sample)
    sampler.start()
    flood_from_threads(service.port, 5.0, payload)
    flooding.clear()
    sampler.join()
    assert max(peak) < idle + 30, f"idle {idle:.1f} MB, peak {max(peak):.1f} MB"
    wait_until(lambda: rss_mb(service.pid) < idle + 5, 10, what=f"RSS back near idle {idle:.1f} MB")
    assert service.get("/api/health").status_code == 503
