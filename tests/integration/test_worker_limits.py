"""What the workers run and the bounds they keep (issue "Never worse", 15, 16 and 18): uvicorn's
knobs reach them, the backlog holds, the app's shutdown runs before a kill, uvloop and httptools
serve, and no client can hold a worker's memory, its descriptors or its patience."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import Launcher, wait_until

Start = Callable[..., Launcher]
APP = "server:\n  app: tests.apps:controllable\n  workers: {workers}\n{extra}prestart:\n  steps: []\n"


def serve(launcher: Start, workers: int = 1, extra: str = "", **kw: object) -> Launcher:
    service = launcher(config=APP.format(workers=workers, extra=extra), **kw)
    service.wait_status(200, "/api/pid")
    wait_until(lambda: len(service.workers()) == workers, 20, what=f"{workers} workers")
    return service


def raw(service: Launcher, data: bytes, read_for: float = 5.0) -> bytes:
    """Send bytes on one connection; what comes back before the server closes or `read_for` passes."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=read_for) as conn:
        conn.sendall(data)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def test_the_workers_run_uvloop_and_httptools(launcher: Start) -> None:
    service = serve(launcher)
    facts = service.get("/api/runtime").json()
    assert facts["loop"] == "uvloop.Loop" and facts["httptools"] is True


def test_uvicorns_proxy_knobs_reach_the_workers(launcher: Start) -> None:
    service = serve(launcher, extra="  root_path: /prefix\n  forwarded_allow_ips: '*'\n")
    facts = httpx.get(service.url + "/api/runtime", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=5).json()
    assert (facts["root_path"], facts["client"]) == ("/prefix", "203.0.113.7")


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
def test_the_configured_backlog_holds_once_workers_listen(launcher: Start) -> None:
    service = serve(launcher, workers=2, extra="  backlog: 64\n")
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{service.port}"], capture_output=True, text=True).stdout
    assert listing.split()[2] == "64", listing


def test_the_apps_shutdown_runs_before_the_kill(launcher: Start, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown"
    service = serve(launcher, env={"TEST_SHUTDOWN_MARKER": str(marker), "LAUNCHER_SERVER_STOP_GRACE": "3s"})
    worker = service.server_pid()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: service.status("/api/slow/30"))
        time.sleep(0.5)
        assert service.stop() == 0
        pending.result()
    assert marker.read_text().split() == [str(worker)], "uvicorn gave up on the request in time for the lifespan"


def test_a_request_head_that_does_not_come_is_answered_408(launcher: Start) -> None:
    service = serve(launcher, env={"LAUNCHER_SERVER_HEAD_TIMEOUT": "1s"})
    started = time.monotonic()
    answer = raw(service, b"GET /api/pid HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4
    idle = raw(service, b"")
    assert idle.startswith(b"HTTP/1.1 408"), "an idle connection that never sends is closed too"


def test_a_head_too_large_is_answered_431(launcher: Start) -> None:
    service = serve(launcher, env={"LAUNCHER_SERVER_MAX_HEAD_SIZE": "16k"})
    answer = raw(service, b"GET /api/pid HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    assert service.status("/api/pid") == 200


def test_a_body_too_large_is_refused_before_the_app_reads_it(launcher: Start) -> None:
    service = serve(launcher, env={"LAUNCHER_SERVER_MAX_BODY_SIZE": "1m"})
    head = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n"
    answer = raw(service, head + b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413")
    chunked = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = raw(service, chunked + b"".join(b"10000\r\n" + b"y" * 65536 + b"\r\n" for _ in range(20)))
    assert answer.startswith(b"HTTP/1.1 413")
    assert service.get("/api/read-bodies").text == "0", "the app never got to read either body"
    small = httpx.post(service.url + "/api/upload", content=b"z" * 1000, timeout=5)
    assert small.status_code == 200 and service.get("/api/read-bodies").text == "1"


def test_requests_past_limit_concurrency_get_a_503(launcher: Start) -> None:
    service = serve(launcher, env={"LAUNCHER_SERVER_LIMIT_CONCURRENCY": "2"})
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(lambda: service.status("/api/slow/2")) for _ in range(2)]
        time.sleep(0.5)
        refused = service.get("/api/pid")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert [s.result() for s in slow] == [200, 200]
    assert service.status("/api/pid") == 200


def hold_idle(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            pass
    return held


def test_fresh_clients_are_served_during_3000_idle_connections_at_1024_descriptors(launcher: Start) -> None:
    """The limit is the launcher's hard one too: nothing to raise. Idle connections make room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8000:
        pytest.skip("the test itself needs 8000 descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    service = serve(launcher, prefix=["prlimit", "--nofile=1024:1024", "--"], execs=True)
    held = hold_idle(service.port, 3000)
    try:
        answers = [service.status("/api/pid") for _ in range(40)]
        assert answers == [200] * 40, answers
        assert service.process is not None and service.process.poll() is None
    finally:
        for conn in held:
            conn.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(launcher: Start) -> None:
    service = serve(launcher, prefix=["prlimit", "--nofile=1024:4096", "--"], execs=True)
    service.wait_log("(4096 descriptors)")
    soft, _ = psutil.Process(service.server_pid()).rlimit(psutil.RLIMIT_NOFILE)
    assert soft == 4096


def test_a_worker_keeps_no_memory_from_a_body_attack(launcher: Start) -> None:
    service = serve(launcher)
    worker = psutil.Process(service.server_pid())
    before = worker.memory_info().rss
    head = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n"
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda _: raw(service, head + b"x" * 1_000_000, 3.0), range(20)))
    grown = (worker.memory_info().rss - before) / 2**20
    assert grown < 30, f"the worker grew by {grown:.0f} MB"
    assert json.loads(service.get("/api/runtime").text)["httptools"] is True
    assert os.path.exists(f"/proc/{worker.pid}")
