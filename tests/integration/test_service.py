"""The service's own contract: the bodies its clients always got, request ids, and the admin
account its author planned as seed data (issue "Install it for any ASGI app", 4 and 5)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from argon2 import PasswordHasher

from localdb.server import MariaDB
from tests.support import ROOT, Launcher

Start = Callable[..., Launcher]


def test_the_original_routes_answer_exactly_what_the_service_always_did(launcher: Start) -> None:
    service = launcher()
    service.wait_status(200)
    assert service.get("/api/").json() == {"status": "ok", "message": "FastAPI is running"}
    assert service.get("/api/test").json() == {"status": "ok", "message": "API test endpoint"}
    schema = service.get("/openapi.json").json()
    assert (schema["info"]["title"], schema["info"]["version"]) == ("Hexsera API", "1.0.0")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-42.a:b_C", True),
        ("x" * 129, False),
        ("bad id with spaces", False),
        ("évil", False),
        ("", False),
    ],
)
def test_a_sane_request_id_is_kept_and_any_other_replaced(launcher: Start, given: str, kept: bool) -> None:
    service = launcher()
    service.wait_status(200)
    response = httpx.get(service.url + "/api/test", headers={b"X-Request-ID": given.encode("utf-8")}, timeout=5)
    echoed = response.headers["x-request-id"]
    assert (echoed == given) is kept
    assert 1 <= len(echoed) <= 128 and all(c.isalnum() or c in "-_.:" for c in echoed)


def test_the_request_id_is_in_the_apps_log_lines(launcher: Start) -> None:
    service = launcher()
    service.wait_status(200)
    created = httpx.post(
        service.url + "/api/notes", json={"text": "traced"}, headers={"X-Request-ID": "trace-7"}, timeout=5
    )
    assert created.headers["x-request-id"] == "trace-7"
    service.wait_log(f"[request trace-7] note {created.json()['id']} written")


def seed(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.seed", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def admins(mariadb: MariaDB, email: str) -> list[tuple[str, int]]:
    return [
        (h, a) for h, a in mariadb.execute(f"SELECT password_hash, is_admin FROM app.users WHERE email = '{email}'")
    ]


def test_the_seed_step_creates_the_admin_once_with_an_argon2_hash(
    launcher: Start, mariadb: MariaDB, tmp_path: Path
) -> None:
    secret = tmp_path / "admin-password"
    secret.write_text("correct horse battery staple\n")
    env = {"ADMIN_PASSWORD_FILE": str(secret), "ADMIN_EMAIL": "root@hexsera.example"}
    service = launcher(env=env)
    service.wait_status(200)
    service.stop()
    again = launcher(env=env)
    again.wait_status(200)
    ((stored, is_admin),) = admins(mariadb, "root@hexsera.example")
    assert is_admin == 1 and stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, "correct horse battery staple")
    assert "seed-admin: admin root@hexsera.example created" in service.log()
    assert "seed-admin: admin root@hexsera.example already there; nothing changed" in again.log()
    for log in (service.log(), again.log()):
        assert "correct horse" not in log
    for process in [psutil.Process(again.pid), *again.children()]:
        assert "correct horse" not in " ".join(process.cmdline())
    shown = subprocess.run(
        [sys.executable, "-m", "launcher", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    ).stdout
    assert "correct horse" not in shown


def test_no_admin_password_means_no_account_and_one_clear_line(mariadb: MariaDB) -> None:
    done = seed(mariadb.env, "--email", "nobody@hexsera.example")
    assert done.returncode == 0
    assert done.stdout.strip() == (
        "seed-admin: skipped: no ADMIN_PASSWORD or ADMIN_PASSWORD_FILE is set (no default password is ever used)"
    )
    assert admins(mariadb, "nobody@hexsera.example") == []


def test_a_missing_password_file_is_an_error_naming_the_path(mariadb: MariaDB, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = seed({**mariadb.env, "ADMIN_PASSWORD_FILE": str(missing)}, "--email", "a@b.example")
    assert done.returncode == 1
    assert f"seed-admin: cannot read ADMIN_PASSWORD_FILE={missing}: No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rotated_admin_password_replaces_the_hash(mariadb: MariaDB, launcher: Start) -> None:
    launcher().wait_status(200)  # the schema is migrated
    env = {**mariadb.env, "ADMIN_EMAIL": "rot@hexsera.example"}
    assert "created" in seed({**env, "ADMIN_PASSWORD": "one"}).stdout
    assert "password changed" in seed({**env, "ADMIN_PASSWORD": "two"}).stdout
    ((stored, _),) = admins(mariadb, "rot@hexsera.example")
    assert PasswordHasher().verify(stored, "two")
