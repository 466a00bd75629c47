"""The launcher as users run it: a subprocess, observed through HTTP, exit codes and the process table."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from localdb.server import MariaDB
from tests.support import Launcher, alive, wait_until

Start = Callable[..., Launcher]
TEST_APP = "server:\n  app: tests.apps:controllable\nprestart:\n  steps: []\n"


def test_db_up_at_start_serves_200_on_health(launcher: Start) -> None:
    service = launcher()
    service.wait_status(200)
    assert service.get("/api/health").json() == {"status": "ok", "db": "ok"}
    assert service.get("/api/").status_code == 200
    assert service.get("/api/test").status_code == 200


def test_launcher_answers_503_with_retry_after_while_waiting_for_the_db(launcher: Start, mariadb: MariaDB) -> None:
    mariadb.stop()
    service = launcher()
    service.wait_log("database probe failed: refused")
    response = service.get("/api/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"status": "unavailable", "detail": "waiting for database"}


def test_db_started_10s_late_serves_200_soon_after(launcher: Start, mariadb: MariaDB) -> None:
    mariadb.stop()
    service = launcher()
    time.sleep(10)
    assert service.status() == 503
    mariadb.start()
    started = time.monotonic()
    service.wait_status(200, timeout=20)
    assert time.monotonic() - started < 15


def test_db_stopped_under_restart_stops_the_workers_and_health_is_not_200(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher(env={"LAUNCHER_ON_DB_LOSS": "restart"})
    service.wait_status(200)
    child = service.server_pid()
    mariadb.stop()
    wait_until(lambda: not alive([child]), 20, what="the child to be stopped")
    assert service.status() == 503
    service.wait_log("database lost after 2 failed probes")


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_db_back_serves_200_again_with_no_manual_step(launcher: Start, mariadb: MariaDB, fault: str) -> None:
    service = launcher()
    service.wait_status(200)
    getattr(mariadb, fault)()
    service.wait_status(503, timeout=20)
    mariadb.start()
    service.wait_status(200, timeout=30)


def test_db_frozen_is_detected_then_recovered_after_sigcont(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher()
    service.wait_status(200)
    mariadb.pause()
    service.wait_log("database lost", timeout=20)
    service.wait_log("timeout")
    started = time.monotonic()
    assert service.status() == 503
    assert time.monotonic() - started < 3, "a frozen DB must not make requests hang"
    mariadb.resume()
    service.wait_status(200, timeout=30)


def test_api_health_turns_503_within_3s_when_the_db_freezes(launcher: Start, mariadb: MariaDB) -> None:
    """With on_db_loss=keep the app itself answers: its DB calls are bounded by timeouts."""
    service = launcher(env={"LAUNCHER_ON_DB_LOSS": "keep"})
    service.wait_status(200)
    mariadb.pause()
    started = time.monotonic()
    response = service.get("/api/health", timeout=10)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "db": "timeout"}
    assert time.monotonic() - started < 3


def test_child_killed_with_9_serves_200_again(launcher: Start) -> None:
    service = launcher()
    service.wait_status(200)
    child = service.server_pid()
    signal_pid(child, signal.SIGKILL)
    service.wait_log("killed by signal 9 (SIGKILL)")
    service.wait_status(200, timeout=20)
    assert service.server_pid() != child


@pytest.mark.parametrize("code", [0, 1])
def test_child_exit_is_restarted_whatever_its_code(launcher: Start, code: int) -> None:
    service = launcher(config=TEST_APP)
    service.wait_status(200, "/api/pid")
    first = service.get("/api/pid").text
    service.get(f"/api/exit/{code}")
    service.wait_log(f"exited (exit code {code})")
    wait_until(
        lambda: service.status("/api/pid") == 200 and service.get("/api/pid").text != first, 20, what="a new child"
    )


def test_crash_looping_app_ends_the_launcher_with_70(launcher: Start) -> None:
    service = launcher(
        config="server:\n  app: tests.apps:broken\nprestart:\n  steps: []\n",
        env={"LAUNCHER_RESTART_MAX_RESTARTS": "2", "LAUNCHER_RESTART_BACKOFF_INITIAL": "50ms"},
    )
    assert service.wait_exit(60) == 70
    assert "exited before it was ready (exit code 3: boom)" in service.log()
    assert "giving up with exit 70" in service.log()


def test_startup_deadline_ends_the_launcher_with_69(launcher: Start, mariadb: MariaDB) -> None:
    mariadb.stop()
    service = launcher(env={"LAUNCHER_PROBE_STARTUP_TIMEOUT": "2s"})
    assert service.wait_exit(20) == 69


def test_db_loss_under_exit_policy_ends_the_launcher_with_69(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher(env={"LAUNCHER_ON_DB_LOSS": "exit"})
    service.wait_status(200)
    mariadb.stop()
    assert service.wait_exit(30) == 69
    assert service.children() == []


def test_port_in_use_exits_71_at_once_naming_the_address(launcher: Start) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = launcher(port=port)
        assert service.wait_exit(10) == 71
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in service.log()


def test_bad_config_exits_78_without_a_traceback(launcher: Start) -> None:
    service = launcher(config="restart:\n  jitter: lots\n")
    assert service.wait_exit(10) == 78
    assert "restart.jitter = 'lots'" in service.log()
    assert "Traceback" not in service.log()


@pytest.mark.parametrize("moment", ["waiting", "running", "backoff"])
def test_sigterm_exits_0_and_leaves_no_process(launcher: Start, mariadb: MariaDB, moment: str) -> None:
    if moment == "waiting":
        mariadb.stop()
    env = {"LAUNCHER_RESTART_BACKOFF_INITIAL": "20s", "LAUNCHER_RESTART_BACKOFF_MAX": "20s"}
    service = launcher(config=TEST_APP, env=env)
    if moment == "waiting":
        service.wait_log("database probe failed")
    else:
        service.wait_status(200, "/api/pid")
    if moment == "backoff":  # the first replacement is immediate, the second one backs off
        service.get("/api/exit/1")
        service.wait_log("replacing it")
        service.wait_status(200, "/api/pid")
        service.get("/api/exit/1")
        service.wait_log("restarting in")
    descendants = [p.pid for p in service.children()]
    service.signal(signal.SIGTERM)
    assert service.wait_exit(20) == 0
    assert alive(descendants) == []


@contextmanager
def request_in_flight(service: Launcher, seconds: int) -> Iterator[concurrent.futures.Future[httpx.Response]]:
    """A request that takes `seconds` to answer, sent in the background and under way."""
    with httpx.Client(timeout=seconds + 10) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.get, f"{service.url}/api/slow/{seconds}")
        time.sleep(0.5)
        yield pending


def test_sigterm_lets_the_in_flight_request_complete(launcher: Start) -> None:
    service = launcher(config=TEST_APP)
    service.wait_status(200, "/api/pid")
    with request_in_flight(service, 2) as pending:
        service.signal(signal.SIGTERM)
        response = pending.result()
    assert (response.status_code, response.text) == (200, "slow done")
    assert service.wait_exit(20) == 0


def test_second_sigterm_kills_the_child_at_once(launcher: Start) -> None:
    service = launcher(config=TEST_APP)
    service.wait_status(200, "/api/pid")
    with request_in_flight(service, 20) as pending:
        service.signal(signal.SIGTERM)
        time.sleep(1.5)
        started = time.monotonic()
        service.signal(signal.SIGTERM)
        assert service.wait_exit(10) == 0
        assert time.monotonic() - started < 3
        with pytest.raises(httpx.HTTPError):
            pending.result()


def test_sighup_replaces_the_child_without_refusing_requests(launcher: Start) -> None:
    service = launcher(config=TEST_APP)
    service.wait_status(200, "/api/pid")
    first = service.get("/api/pid").text
    service.signal(signal.SIGHUP)
    statuses = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and alive([int(first)]):
        statuses.add(service.status("/api/pid"))
    assert statuses == {200}
    assert service.get("/api/pid").text != first
    assert "reload done: revision 2 serves" in service.log()


def test_frozen_child_fails_liveness_and_is_replaced(launcher: Start) -> None:
    service = launcher(config=TEST_APP)
    service.wait_status(200, "/api/pid")
    child = service.server_pid()
    signal_pid(child, signal.SIGSTOP)
    service.wait_log("liveness checks in a row; replacing it", timeout=30)
    service.wait_status(200, "/api/pid", timeout=20)
    wait_until(lambda: not alive([child]), 5, what="SIGKILL after the short grace: a frozen loop ignores SIGTERM")


def test_log_lines_show_up_at_once(launcher: Start) -> None:
    service = launcher()
    service.wait_log("listening on 127.0.0.1", timeout=5)


def test_password_never_appears_in_logs_or_argv(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher()
    service.wait_status(200)
    mariadb.stop()
    service.wait_log("database probe failed")
    for proc in service.children():
        assert mariadb.password not in " ".join(proc.cmdline())
    assert mariadb.password not in service.log()


def signal_pid(pid: int, sig: signal.Signals) -> None:
    os.kill(pid, sig)
