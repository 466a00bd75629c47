"""`launcher healthcheck` asks where the launcher really listens, never through a proxy, and its
exit codes say what it found (issue "Never worse", 19)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from localdb.server import MariaDB, free_port
from tests.support import ROOT, Launcher

Start = Callable[..., Launcher]
APP = "server:\n  app: tests.apps:controllable\n  health_path: /api/pid\nprestart:\n  steps: []\n"


def healthcheck(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "health.yaml"
    config.write_text(APP)
    return subprocess.run(
        [sys.executable, "-m", "launcher", "--config", str(config), "healthcheck"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "LAUNCHER_RUNTIME_DIR": str(tmp_path / "run"), **env},
    )


def ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def serve(launcher: Start, tmp_path: Path, env: dict[str, str]) -> Launcher:
    service = launcher(config=APP, env={"LAUNCHER_RUNTIME_DIR": str(tmp_path / "run"), **env})
    service.wait_log("worker", timeout=30)
    return service


@pytest.mark.skipif(not ipv6(), reason="no IPv6 loopback here")
def test_an_ipv6_only_launcher_is_asked_on_its_loopback(launcher: Start, tmp_path: Path) -> None:
    service = serve(launcher, tmp_path, {"LAUNCHER_SERVER_HOST": "::"})
    service.wait_log("ready in")
    done = healthcheck(tmp_path, {"LAUNCHER_SERVER_HOST": "::", "LAUNCHER_SERVER_PORT": str(service.port)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"http://[::1]:{service.port}/api/pid: 200" in done.stdout


def test_a_launcher_on_port_0_is_found_where_it_bound(launcher: Start, tmp_path: Path) -> None:
    service = serve(launcher, tmp_path, {"LAUNCHER_SERVER_PORT": "0"})
    service.wait_log("ready in")
    done = healthcheck(tmp_path, {"LAUNCHER_SERVER_PORT": "0"})
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_proxy_in_the_environment_is_never_used(launcher: Start, tmp_path: Path) -> None:
    service = serve(launcher, tmp_path, {})
    service.wait_log("ready in")
    proxy = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"}
    done = healthcheck(tmp_path, {"LAUNCHER_SERVER_PORT": str(service.port), **proxy})
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_503_exits_75_and_nothing_listening_exits_69(launcher: Start, tmp_path: Path, mariadb: MariaDB) -> None:
    mariadb.stop()
    service = serve(launcher, tmp_path, {})
    service.wait_log("database probe failed")
    done = healthcheck(tmp_path, {"LAUNCHER_SERVER_PORT": str(service.port)})
    assert done.returncode == 75 and ": 503 " in done.stdout, done.stdout
    nobody = healthcheck(tmp_path, {"LAUNCHER_SERVER_PORT": str(free_port()), "LAUNCHER_RUNTIME_DIR": str(tmp_path)})
    assert nobody.returncode == 69 and "no answer" in nobody.stdout
