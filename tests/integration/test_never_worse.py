"""What gunicorn and `uvicorn --workers` never do to a healthy service, the launcher must not
do either (issue "Never worse", 7-12 and 17): kill the workers of a strict app for failing its
own liveness check, kill them on a signal a user sends by habit, end a serving pool for a
crash budget, or stop a serving set because the DB refuses a login or is out of connections."""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pymysql

from localdb.server import MariaDB
from tests.app_sources import module
from tests.integration.test_pool import Poller, pool
from tests.support import Launcher, alive, wait_until

Start = Callable[..., Launcher]

STRICT = module("""
    host = dict(scope["headers"]).get(b"host", b"")
    status = 200 if host == b"api.example.com" else 400  # Starlette's TrustedHostMiddleware answers the same
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"strict"})
""")


def test_a_strict_app_is_never_killed_by_liveness(launcher: Start, tmp_path: Path) -> None:
    (tmp_path / "strict.py").write_text(STRICT)
    service = launcher(
        config=f"server:\n  app: strict:app\n  app_dir: {tmp_path}\n  workers: 2\n",
        env={
            "LAUNCHER_LIVENESS_INTERVAL": "500ms",
            "LAUNCHER_LIVENESS_TIMEOUT": "400ms",
            "LAUNCHER_LIVENESS_FAILURES": "2",
        },
    )
    wait_until(lambda: service.status("/") == 400 and len(service.workers()) == 2, 20, what="two workers")
    workers = [p.pid for p in service.workers()]
    time.sleep(8)  # 16 liveness rounds
    assert [p.pid for p in service.workers()] == workers
    assert "did not answer" not in service.log()


def test_signals_users_send_by_habit_never_kill_a_worker(launcher: Start) -> None:
    service = pool(launcher)
    workers = [p.pid for p in service.workers()]
    with Poller(service) as poller:
        for sig in (signal.SIGUSR1, signal.SIGWINCH):
            service.signal(sig)
        service.wait_log("status: running; revision 1")
        service.wait_log("got SIGWINCH: ignored (a terminal was resized)")
        assert [p.pid for p in service.workers()] == workers
        service.signal(signal.SIGUSR2)  # gunicorn's binary upgrade: here a reload, without a gap
        wait_until(lambda: not alive(workers), 20, what="the old set retired")
        service.wait_log("reload done: revision 2")
    assert set(poller.seen) == {200}, "no worker died on a signal"
    assert "exited" not in service.log()


def replaced(service: Launcher, before: set[int]) -> bool:
    now = {p.pid for p in service.workers()}
    return len(now) == 2 and now != before


def test_a_spent_crash_budget_never_ends_a_pool_that_serves(launcher: Start) -> None:
    service = pool(launcher, env={"LAUNCHER_RESTART_MAX_RESTARTS": "2", "LAUNCHER_RESTART_BACKOFF_MAX": "200ms"})
    for _ in range(5):
        before = set(p.pid for p in service.workers())
        service.get("/api/exit/1")
        wait_until(
            functools.partial(replaced, service, before),
            20,
            what="the crashed worker replaced",
        )
    assert service.process is not None and service.process.poll() is None, "still running"
    assert "workers still serve, so the launcher goes on replacing them" in service.log()
    assert service.status("/api/pid") == 200


def fill_connections(mariadb: MariaDB, limit: int) -> list[pymysql.connections.Connection]:  # type: ignore[type-arg]
    """Another client holds every connection slot the server has left."""
    held = []
    while True:
        try:
            held.append(
                pymysql.connect(
                    host="127.0.0.1",
                    port=mariadb.port,
                    user=mariadb.user,
                    password=mariadb.password,
                    database=mariadb.database,
                    connect_timeout=2,
                )
            )
        except pymysql.MySQLError:
            return held
        if len(held) > limit:
            return held


def refused_logins(mariadb: MariaDB) -> int:
    return int(
        dict(mariadb.execute("SHOW GLOBAL STATUS LIKE 'Connection_errors_max_connections'"))[
            "Connection_errors_max_connections"
        ]
    )


def test_a_db_out_of_connections_keeps_the_serving_set_and_is_probed_with_backoff(
    launcher: Start, mariadb: MariaDB
) -> None:
    service = launcher(env={"LAUNCHER_ON_DB_LOSS": "restart", "LAUNCHER_SERVER_WORKERS": "2"})
    service.wait_status(200)
    workers = [p.pid for p in service.workers()]
    mariadb.execute("SET GLOBAL max_connections = 40")
    held = fill_connections(mariadb, 60)
    try:
        with Poller(service, "/api/") as poller:
            service.wait_log("database probe failed: too_many_connections")
            before = refused_logins(mariadb)
            time.sleep(10)
            logins = refused_logins(mariadb) - before
        failed = service.log().count("too_many_connections")
    finally:
        for conn in held:
            conn.close()
        mariadb.execute("SET GLOBAL max_connections = 500")
    assert set(poller.seen) == {200}, "a route without the DB answered all along"
    assert [p.pid for p in service.workers()] == workers, "nothing was stopped under on_db_loss=restart"
    assert "database lost" not in service.log()
    assert failed <= 2, "one line for the failure, not one per probe"
    assert logins <= 12, f"{logins} logins refused in 10 s: a busy server is probed with a backoff, not every 100 ms"
    service.wait_log("database answers again")


def test_a_db_that_refuses_the_login_keeps_the_serving_set(launcher: Start, mariadb: MariaDB) -> None:
    mariadb.execute("CREATE USER IF NOT EXISTS 'refused'@'%' IDENTIFIED BY 'right'")
    mariadb.execute("GRANT ALL ON app.* TO 'refused'@'%'")
    try:
        service = launcher(env={"MYSQL_USER": "refused", "MYSQL_PASSWORD": "right", "LAUNCHER_ON_DB_LOSS": "swap"})
        service.wait_status(200)
        workers = [p.pid for p in service.workers()]
        mariadb.execute("ALTER USER 'refused'@'%' IDENTIFIED BY 'rotated'")
        service.wait_log("database probe failed: access_denied")
        time.sleep(3)
        assert [p.pid for p in service.workers()] == workers, "no swap, no stop: its pools still work"
        assert service.status("/api/health") == 200
    finally:
        mariadb.execute("DROP USER IF EXISTS 'refused'@'%'")


def test_sigttin_stops_at_max_workers_and_a_resize_checks_the_connection_budget(launcher: Start) -> None:
    service = pool(launcher, workers=1, env={"LAUNCHER_SERVER_MAX_WORKERS": "2", "API_DB_POOL_SIZE": "300"})
    service.signal(signal.SIGTTIN)
    wait_until(lambda: len(service.workers()) == 2, 10, what="a second worker")
    service.signal(signal.SIGTTIN)
    service.wait_log("asked for more workers, but server.max_workers is 2")
    service.wait_log("2 workers x (API_DB_POOL_SIZE + API_DB_MAX_OVERFLOW) + 1 probe")
    assert len(service.workers()) == 2
