"""A private channel nobody else can name, take or reach (issue "One place decides", 5): another
user who squats names and pokes at every unix socket gets nothing, and two launchers that are
each PID 1 in one network namespace never take each other's names."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.integration.test_pid1 import PID_NAMESPACE, needs_unshare
from tests.integration.test_pool import pool
from tests.support import Launcher, wait_until

Start = Callable[..., Launcher]

ATTACK = r"""
import socket, sys
launcher = int(sys.argv[1])
squatted = []
for n in range(1000):  # the names the launcher used to give its workers' private sockets
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(f"\0launcher.{launcher}.{n}")
        squatted.append(s)
    except OSError:
        s.close()
reached = 0
for line in open("/proc/net/unix").read().splitlines()[1:]:
    fields = line.split()
    if len(fields) < 8 or fields[5] != "01":  # listening sockets only
        continue
    name = fields[7]
    address = "\0" + name[1:] if name.startswith("@") else name
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(1)
            c.connect(address)
            c.sendall(b"GET /api/attacked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if c.recv(100).startswith(b"HTTP/1.1"):
                reached += 1
    except OSError:
        pass
print(len(squatted), reached, flush=True)
sys.stdin.readline()  # keep the names until the test is done
"""


def unix_names(pid: int) -> list[str]:
    """The addresses of every unix socket a process holds ('' for a socketpair's ends)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    names = []
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 7 and fields[6] in inodes:
            names.append(fields[7] if len(fields) > 7 else "")
    return names


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to become another uid")
def test_another_user_can_neither_squat_nor_reach_the_workers(launcher: Start) -> None:
    service = pool(launcher)
    for process in [psutil.Process(service.pid), *service.children()]:
        assert unix_names(process.pid) == [""] * len(unix_names(process.pid)), f"a named socket in {process}"
    attacker = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", ATTACK, str(service.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        squatted, reached = (int(word) for word in attacker.stdout.readline().split())
        assert squatted == 1000 and reached == 0
        victim = service.server_pid()
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(service.workers()) == 2 and victim not in [p.pid for p in service.workers()],
            10,
            what="the replacement",
        )
    finally:
        attacker.kill()
        attacker.wait()
    log = service.log()
    assert "before it was ready" not in log and "cannot be started" not in log, "every start worked the first time"
    assert "/api/attacked" not in log


def serving_two(service: Launcher) -> bool:
    return len(service.workers()) == 2 and service.status("/api/pid") == 200


@needs_unshare
def test_two_launchers_that_are_each_pid_1_in_one_network_namespace_start_every_worker(launcher: Start) -> None:
    first = pool(launcher, prefix=PID_NAMESPACE)
    second = pool(launcher, prefix=PID_NAMESPACE)
    for service in (first, second):
        os.kill(service.server_pid(), signal.SIGKILL)
    for service in (first, second):
        wait_until(functools.partial(serving_two, service), 10, what="2 workers")
        assert "before it was ready" not in service.log() and "cannot be started" not in service.log()
