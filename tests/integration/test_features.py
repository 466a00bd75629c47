"""Write path, prestart steps, swap and liveness, seen from outside."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from localdb.server import MariaDB
from tests.support import Launcher, alive, wait_until

Start = Callable[..., Launcher]
TEST_APP = "server:\n  app: tests.apps:controllable\n"


def test_note_written_is_read_back_and_its_table_came_from_alembic(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher()
    service.wait_status(200)
    created = httpx.post(service.url + "/api/notes", json={"text": "hello"}, timeout=5)
    assert created.status_code == 201
    note = created.json()
    assert service.get(f"/api/notes/{note['id']}").json() == {"id": note["id"], "text": "hello"}
    assert service.get("/api/notes/999999999").status_code == 404
    assert mariadb.execute("SELECT version_num FROM app.alembic_version") == [("0002",)]
    assert "prestart step 'migrate' done" in service.log()


def test_failing_prestart_step_is_retried_and_the_child_never_serves(launcher: Start) -> None:
    service = launcher(
        config=TEST_APP + "prestart:\n  steps:\n    - name: broken\n"
        "      command: [sh, -c, 'echo step-output; exit 4']\n"
    )
    service.wait_log("prestart step 'broken' failed (exit code 4)")
    wait_until(lambda: service.log().count("failed (exit code 4)") >= 2, 20, what="a retry")
    assert "step-output" in service.log(), "a step's output goes to the log"
    assert "started worker" not in service.log(), "no worker starts on a failed step"
    assert service.status("/api/pid") == 503


def test_prestart_step_past_its_timeout_is_killed(launcher: Start) -> None:
    service = launcher(
        config=TEST_APP + "prestart:\n  steps:\n    - name: slow\n      command: [sleep, '60']\n      timeout: 1s\n"
    )
    service.wait_log("prestart step 'slow' failed (timed out)")
    service.wait_log("failed (timed out)")


def test_swap_keeps_no_db_routes_up_through_a_db_outage(launcher: Start, mariadb: MariaDB) -> None:
    service = launcher(env={"LAUNCHER_ON_DB_LOSS": "swap"})
    service.wait_status(200)
    old = service.server_pid()
    mariadb.stop()
    service.wait_log("database lost")
    assert service.status("/api/test") == 200, "the old child keeps serving what needs no DB"
    assert service.status("/api/health") == 503
    mariadb.start()
    wait_until(lambda: not alive([old]), 30, what="the old child to be retired")
    service.wait_status(200)
    assert "stopped (killed by signal 15 (SIGTERM))" in service.log(), "retired gracefully"


def test_blocked_event_loop_fails_liveness_and_is_replaced(launcher: Start) -> None:
    service = launcher(config=TEST_APP + "prestart:\n  steps: []\n")
    service.wait_status(200, "/api/pid")
    child = service.server_pid()
    service.get("/api/block")
    service.wait_log("liveness checks in a row; replacing it", timeout=30)
    service.wait_status(200, "/api/pid", timeout=20)
    wait_until(lambda: not alive([child]), 10, what="the blocked child to be gone")


def test_migration_is_skipped_when_the_schema_is_at_head(launcher: Start, mariadb: MariaDB) -> None:
    first = launcher()
    first.wait_status(200)
    first.stop()
    again = launcher()
    again.wait_status(200)
    assert "schema at head (0002); nothing to do" in again.log()


def test_migration_runs_when_the_schema_is_behind(launcher: Start, mariadb: MariaDB) -> None:
    for table in ("users", "notes", "alembic_version"):
        mariadb.execute(f"DROP TABLE IF EXISTS app.{table}")
    service = launcher()
    service.wait_status(200)
    assert mariadb.execute("SELECT version_num FROM app.alembic_version") == [("0002",)]
    assert httpx.post(service.url + "/api/notes", json={"text": "after"}, timeout=5).status_code == 201
