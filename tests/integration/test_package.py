"""The launcher as a new user meets it: a wheel built from the repository, installed into a
fresh virtual environment outside the checkout, serving an ASGI app of its own
(issue "Install it for any ASGI app", 1 and 2)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localdb.server import MariaDB, free_port
from tests.app_sources import answering
from tests.support import ROOT, wait_until

TINY = answering('f"tiny {os.getpid()}".encode()', header="import os")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wheel built from a copy of what the package is made of, installed into a new venv."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "launcher", source / "launcher", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("launcher-*.whl")
    assert {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()} == {
        "launcher",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }, "only launcher/ ships"
    env = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    subprocess.run(
        [str(env / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"{wheel}[reload]"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    yield env


def launcher(
    venv: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "launcher"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **(env or {})},
    )


def test_the_console_script_is_there_with_help_and_version(venv: Path, tmp_path: Path) -> None:
    done = launcher(venv, "--help", cwd=tmp_path)
    assert done.returncode == 0 and "module:attr" in done.stdout
    assert launcher(venv, "--version", cwd=tmp_path).stdout.startswith("launcher ")
    site = next((venv / "lib").glob("python*/site-packages"))
    assert not [name for name in ("api", "bench", "localdb", "tests") if (site / name).exists()]


def test_config_with_no_file_shows_the_defaults_and_their_sources(venv: Path, tmp_path: Path) -> None:
    done = launcher(venv, "config", "tiny:app", "--workers", "2", cwd=tmp_path, env={"MYSQL_PASSWORD": "hunter2"})
    assert done.returncode == 0, done.stderr
    assert 'server.app = "tiny:app"  # from tiny:app' in done.stdout
    assert "server.workers = 2  # from --workers" in done.stdout
    assert 'database.password = "***"  # from MYSQL_PASSWORD' in done.stdout and "hunter2" not in done.stdout


def serve(venv: Path, app_dir: Path, args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[str]:
    (app_dir / "tiny.py").write_text(TINY)
    return subprocess.Popen(
        [str(venv / "bin" / "launcher"), "tiny:app", "--port", str(port), "--host", "127.0.0.1", *args],
        cwd=app_dir,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def answers(port: int) -> set[str]:
    found = set()
    for _ in range(30):
        try:
            found.add(httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text)
        except httpx.HTTPError:
            found.add("")
    return found


def test_it_serves_an_app_of_its_own_with_two_workers_behind_the_db_gate(
    venv: Path, tmp_path: Path, mariadb: MariaDB
) -> None:
    port = free_port()
    process = serve(venv, tmp_path, ["--workers", "2"], mariadb.env, port)
    try:
        wait_until(lambda: all(text.startswith("tiny") for text in answers(port)), 30, what="the tiny app")
        wait_until(lambda: len(answers(port)) == 2, 10, what="two workers answering")
    finally:
        code, out = stop(process)
    assert code == 0, out
    assert "database is up" in out


def test_with_the_gate_off_it_serves_with_no_mysql_at_all(venv: Path, tmp_path: Path) -> None:
    port = free_port()
    process = serve(venv, tmp_path, ["--no-db"], {"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": str(free_port())}, port)
    try:
        wait_until(
            lambda: answers(port) != {""} and all(t.startswith("tiny") for t in answers(port)),
            30,
            what="the tiny app without a DB",
        )
    finally:
        code, out = stop(process)
    assert code == 0, out
    assert "no DB gate" in out and "database probe" not in out
