"""PID 1 duties, tested for real: `unshare --pid --fork --mount-proc` makes the launcher PID 1."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import psutil
import pytest

from tests.support import Launcher, wait_until

Start = Callable[..., Launcher]
TEST_APP = "server:\n  app: tests.apps:controllable\nprestart:\n  steps: []\n"
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*PID_NAMESPACE, "true"], capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="unshare --pid needs root or user namespaces")


def zombies_under(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


@needs_unshare
def test_launcher_is_pid_1_in_its_namespace(launcher: Start) -> None:
    service = launcher(config=TEST_APP, prefix=PID_NAMESPACE)
    service.wait_status(200, "/api/pid")
    assert service.get("/api/ppid").text == "1", "the server's parent, the launcher, is PID 1"


@needs_unshare
def test_orphaned_zombie_is_reaped_by_pid_1(launcher: Start) -> None:
    service = launcher(config=TEST_APP, prefix=PID_NAMESPACE, env={"LAUNCHER_LOG_LEVEL": "debug"})
    service.wait_status(200, "/api/pid")
    orphan = service.get("/api/orphan").text
    service.wait_log(f"reaped orphan {orphan} (exit code 0)", timeout=10)
    wait_until(lambda: not zombies_under(service.pid), 5, what="no zombie in the namespace")


def test_orphan_is_reaped_outside_a_namespace_too(launcher: Start) -> None:
    """As a child subreaper the launcher adopts orphans even when it is not PID 1."""
    service = launcher(config=TEST_APP, env={"LAUNCHER_LOG_LEVEL": "debug"})
    service.wait_status(200, "/api/pid")
    service.get("/api/orphan")
    service.wait_log("reaped orphan", timeout=10)
    wait_until(lambda: not zombies_under(service.pid), 5, what="no zombie left")


@needs_unshare
def test_sigterm_stops_pid_1_with_exit_0(launcher: Start) -> None:
    service = launcher(config=TEST_APP, prefix=PID_NAMESPACE)
    service.wait_status(200, "/api/pid")
    launcher_pid = service.pid
    descendants = psutil.Process(launcher_pid).children(recursive=True)
    service.signal(signal.SIGTERM)
    assert service.wait_exit(20) == 0
    assert not psutil.pid_exists(launcher_pid)
    assert [p for p in descendants if p.is_running()] == []


@needs_unshare
def test_sigint_stops_pid_1_with_exit_0(launcher: Start) -> None:
    service = launcher(config=TEST_APP, prefix=PID_NAMESPACE)
    service.wait_status(200, "/api/pid")
    service.signal(signal.SIGINT)
    assert service.wait_exit(20) == 0


@needs_unshare
def test_sigterm_right_after_start_is_not_lost_by_pid_1(launcher: Start) -> None:
    """PID 1 ignores a signal it has no handler for: one sent before the handlers exist must wait."""
    service = launcher(config=TEST_APP, prefix=PID_NAMESPACE)
    assert service.pid  # the launcher exists; it is still importing its modules, with no handler yet
    time.sleep(0.15)
    service.signal(signal.SIGTERM)
    assert service.wait_exit(20) == 0
    assert "got SIGTERM: stopping" in service.log()


def test_sigterm_right_after_start_exits_0_and_leaves_no_child(launcher: Start) -> None:
    service = launcher(config=TEST_APP)
    wait_until(lambda: service.children(), 10, what="the first child")
    children = [p.pid for p in service.children()]
    service.signal(signal.SIGTERM)
    assert service.wait_exit(20) == 0
    wait_until(lambda: not [p for p in children if psutil.pid_exists(p)], 5, what="no child left")
