"""A pool of workers forked from a warm template, as users see it: through HTTP, signals,
exit codes and the process table."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from localdb.server import MariaDB
from tests.app_sources import versioned
from tests.integration.test_pid1 import PID_NAMESPACE, needs_unshare
from tests.support import Launcher, alive, wait_until

Start = Callable[..., Launcher]
APP = "server:\n  app: tests.apps:controllable\n  workers: {workers}\nprestart:\n  steps: []\n"


def workers_are(service: Launcher, count: int) -> bool:
    return len(service.workers()) == count


def pool(launcher: Start, workers: int = 2, **kw: object) -> Launcher:
    service = launcher(config=APP.format(workers=workers), **kw)
    service.wait_status(200, "/api/pid")
    wait_until(lambda: len(service.workers()) == workers, 20, what=f"{workers} workers")
    return service


class Poller(threading.Thread):
    """A client that asks every 20 ms on a fresh connection, as the bench does."""

    def __init__(self, service: Launcher, path: str = "/api/pid") -> None:
        super().__init__(daemon=True)
        self.service, self.path = service, path
        self.halt = threading.Event()
        self.seen: list[int | None] = []

    def run(self) -> None:
        while not self.halt.is_set():
            self.seen.append(self.service.status(self.path))
            time.sleep(0.02)

    def __enter__(self) -> Poller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(10)


def test_two_workers_serve_concurrently_as_children_of_the_launcher(launcher: Start) -> None:
    service = pool(launcher)
    pids = {service.get("/api/pid").text for _ in range(60)}
    assert len(pids) == 2, "requests are answered by both workers"
    assert {p.ppid() for p in service.workers()} == {service.pid}, "workers are the launcher's own children"


def test_killed_worker_is_invisible_to_clients(launcher: Start) -> None:
    service = pool(launcher)
    victim = service.workers()[0].pid
    with Poller(service) as poller:
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        service.wait_log("killed by signal 9")
        wait_until(lambda: len(service.workers()) == 2, 10, what="the replacement")
        time.sleep(0.5)
    failed = [s for s in poller.seen if s != 200]
    assert len(failed) <= 1, f"{len(failed)} of {len(poller.seen)} requests failed"  # one may be in flight on it


def test_the_only_worker_killed_is_back_within_a_fraction_of_a_second(launcher: Start) -> None:
    service = pool(launcher, workers=1)
    victim = service.server_pid()
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    service.wait_status(200, "/api/pid", timeout=10)
    assert time.monotonic() - killed < 2.0  # a fork from the template, not a cold import; bench/ times it


def test_killed_template_is_rebuilt_while_the_workers_serve(launcher: Start) -> None:
    service = pool(launcher)
    template = service.template_pid()
    with Poller(service) as poller:
        os.kill(template, signal.SIGKILL)
        service.wait_log("building a new one while the workers keep serving")
        service.wait_log("template 4 ready")
    assert set(poller.seen) == {200}, poller.seen
    victim = service.workers()[0].pid
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: len(service.workers()) == 2 and victim not in [p.pid for p in service.workers()],
        10,
        what="the replacement from the new template",
    )
    assert time.monotonic() - killed < 2.0
    wait_until(
        lambda: "forked from template 4" in service.log().split("template 4 ready")[1],
        5,
        what="the replacement forked from the new template",
    )


def test_sigttin_adds_a_worker_and_sigttou_removes_one(launcher: Start) -> None:
    service = pool(launcher)
    service.signal(signal.SIGTTIN)
    wait_until(lambda: len(service.workers()) == 3, 10, what="a third worker")
    for left in (2, 1):  # one signal at a time: the kernel merges a signal sent again while pending
        service.signal(signal.SIGTTOU)
        wait_until(functools.partial(workers_are, service, left), 20, what=f"{left} workers left")
    service.signal(signal.SIGTTOU)
    service.wait_log("one is the least")
    assert len(service.workers()) == 1, "never fewer than one"
    assert service.status("/api/pid") == 200


def test_sighup_under_load_serves_the_new_code_without_a_refused_request(launcher: Start, tmp_path: Path) -> None:
    (tmp_path / "versioned.py").write_text(versioned("one"))
    service = launcher(
        config="server:\n  app: versioned:app\n  workers: 2\nprestart:\n  steps: []\n",
        env={"PYTHONPATH": str(tmp_path)},
    )
    service.wait_status(200, "/")
    old = [p.pid for p in service.workers()]
    (tmp_path / "versioned.py").write_text(versioned("two"))
    with Poller(service, "/") as poller:
        service.signal(signal.SIGHUP)
        wait_until(lambda: not alive(old), 20, what="the old workers retired")
    assert set(poller.seen) == {200}
    assert {service.get("/").text for _ in range(20)} == {"two"}


def test_a_reload_whose_code_fails_to_load_keeps_the_workers(launcher: Start, tmp_path: Path) -> None:
    (tmp_path / "versioned.py").write_text(versioned("one"))
    service = launcher(
        config="server:\n  app: versioned:app\n  workers: 2\nprestart:\n  steps: []\n",
        env={"PYTHONPATH": str(tmp_path)},
    )
    service.wait_status(200, "/")
    (tmp_path / "versioned.py").write_text("raise ImportError('broken deploy')\n")
    service.signal(signal.SIGHUP)
    service.wait_log("reload failed")
    assert {service.get("/").text for _ in range(10)} == {"one"}


def test_db_loss_under_restart_at_two_workers_answers_503_then_all_come_back(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher(env={"LAUNCHER_SERVER_WORKERS": "2", "LAUNCHER_ON_DB_LOSS": "restart"})
    service.wait_status(200)
    old = [p.pid for p in service.workers()]
    mariadb.stop()
    wait_until(lambda: not alive(old), 20, what="the workers stopped")
    assert service.status("/api/health") == 503
    mariadb.start()
    service.wait_status(200, timeout=30)
    wait_until(lambda: len(service.workers()) == 2, 10, what="two workers again")


def test_db_outage_under_the_default_policy_keeps_no_db_routes_up(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher(env={"LAUNCHER_SERVER_WORKERS": "2"})
    service.wait_status(200)
    mariadb.stop()
    service.wait_log("database lost")
    with Poller(service, "/api/test") as poller:
        time.sleep(3)
    assert set(poller.seen) == {200}
    assert service.status("/api/health") == 503
    mariadb.start()
    service.wait_status(200, timeout=30)


def test_workers_that_served_through_an_outage_reconnect_before_any_client_asks(
    launcher: Start, mariadb: MariaDB
) -> None:
    service = launcher(env={"LAUNCHER_SERVER_WORKERS": "2", "LAUNCHER_ON_DB_LOSS": "keep"})
    service.wait_status(200)
    wait_until(lambda: len(service.workers()) == 2, 10, what="two workers")
    mariadb.stop()
    service.wait_log("database lost")
    mariadb.start()
    wait_until(lambda: service.log().count("database is up") == 2, 10, what="the launcher seeing the DB back")
    # No client has asked since: a connection idle for a second or more is a worker's pooled one
    # (the probe's lasts milliseconds).
    idle = "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app' AND time >= 1"
    wait_until(lambda: mariadb.execute(idle)[0][0] >= 2, 10, what="both workers' pools connected again")


def test_an_app_that_starts_a_thread_at_import_falls_back_to_cold_workers(launcher: Start) -> None:
    service = launcher(config="server:\n  app: tests.threaded_app:app\n  workers: 2\nprestart:\n  steps: []\n")
    service.wait_status(200, "/api/pid")
    service.wait_log("cannot fork safely (threads: poller-at-import); workers start cold instead")
    wait_until(lambda: len(service.workers()) == 2, 20, what="two cold workers")


def test_sigterm_at_two_workers_completes_requests_in_flight_and_leaves_nothing(launcher: Start) -> None:
    service = pool(launcher)
    stopped_cleanly(service)


@needs_unshare
def test_sigterm_at_two_workers_as_pid_1_leaves_nothing(launcher: Start) -> None:
    service = pool(launcher, prefix=PID_NAMESPACE)
    assert {service.get("/api/ppid").text for _ in range(20)} == {"1"}
    stopped_cleanly(service)


def stopped_cleanly(service: Launcher) -> None:
    descendants = [p.pid for p in service.children()]
    with concurrent.futures.ThreadPoolExecutor(4) as pool_:
        pending = [pool_.submit(httpx.get, service.url + "/api/slow/2", timeout=10) for _ in range(4)]
        time.sleep(0.5)
        service.signal(signal.SIGTERM)
        assert [f.result().status_code for f in pending] == [200] * 4
    assert service.wait_exit(20) == 0
    wait_until(lambda: not alive(descendants), 5, what="nothing left")
    assert not [
        p for p in psutil.process_iter(["name"]) if p.info["name"] in ("worker", "template") and p.pid in descendants
    ]


def test_pools_too_large_for_max_connections_are_warned_about_once(launcher: Start) -> None:
    service = launcher(env={"LAUNCHER_SERVER_WORKERS": "2", "API_DB_POOL_SIZE": "300"})
    service.wait_status(200)
    service.wait_log("more than the server's max_connections=500")
    assert service.log().count("max_connections=") == 1


def test_a_migration_runs_forked_from_the_ready_template_on_an_empty_database(
    launcher: Start, mariadb: MariaDB
) -> None:
    for table in ("users", "notes", "alembic_version"):
        mariadb.execute(f"DROP TABLE IF EXISTS app.{table}")
    mariadb.stop()
    service = launcher()
    service.wait_log("template 1 ready")
    mariadb.start()
    service.wait_status(200)
    assert "running prestart step 'migrate' (forked from the template)" in service.log()
    assert mariadb.execute("SELECT version_num FROM app.alembic_version") == [("0002",)]
    assert httpx.post(service.url + "/api/notes", json={"text": "migrated"}, timeout=5).status_code == 201
